"""SIGINT and SIGTERM as exceptions, so a port's cleanup runs when it is stopped.

SIGTERM (what `kill`, `timeout` and job schedulers send) ends a Python process at once, without
`finally` blocks, and typer turns Python's `KeyboardInterrupt` into a silent exit. While the CLI
and a port run, `signals_as_exceptions` makes both signals raise `Interrupted`, so cleanup runs
and the CLI can say what happened; `deferred_signals` holds them back for the few system calls
that must not be split (moving a finished port in).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The process received SIGINT or SIGTERM. A BaseException, like KeyboardInterrupt, so that
    `except Exception` blocks do not swallow it."""

    def __init__(self, signum: int) -> None:
        what = "interrupted by" if signum == signal.SIGINT else "terminated by"
        super().__init__(f"{what} {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` in the main thread; the previous
    handlers come back afterwards. Outside the main thread (where Python cannot install
    handlers) this does nothing."""
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back within the block; one that arrived is handled right after it.
    (SIGKILL cannot be held back; `hf2kh.output` stays consistent under it by its ordering.)"""
    if not hasattr(signal, "pthread_sigmask") or not _in_main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
