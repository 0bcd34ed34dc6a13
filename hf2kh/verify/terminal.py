"""Keep TensorFlow's and absl's native log lines off the user's terminal.

TensorFlow (imported by keras_hub's tokenizers and by the tensorflow backend) writes lines such as
`cudart_stub.cc:31] Could not find cuda drivers` straight to file descriptor 2 while it loads,
before `TF_CPP_MIN_LOG_LEVEL` or absl's own settings are read. `silence_native_logs` therefore
points fd 2 at /dev/null for the duration of the first `import tensorflow`, whoever triggers it;
Python's own `sys.stderr` (hf2kh's `error:` line) is untouched outside that import.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from contextlib import contextmanager

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "ABSL_MIN_LOG_LEVEL": "3"}


def quiet_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child process, with TensorFlow's logging turned down (kept where set)."""
    return {**QUIET_ENV, **env}


@contextmanager
def native_stderr_silenced():
    """Point file descriptor 2 at /dev/null (native writes only; Python's sys.stderr object is
    flushed first and writes to the same fd afterwards as before)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietTensorflowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` like the other finders do, and runs its module code with fd 2 silenced."""

    _busy = False

    def find_spec(self, fullname, path, target=None):
        # Every lookup of a not yet imported tensorflow comes here, including availability
        # checks (`importlib.util.find_spec`, which transformers makes) that do not import it.
        if fullname != "tensorflow" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            with native_stderr_silenced():
                original(module)

        loader.exec_module = exec_module
        return spec


def silence_native_logs() -> None:
    """Call before anything imports tensorflow (the CLI's entry point does)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(f, _QuietTensorflowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorflowImport())
