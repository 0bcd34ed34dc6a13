"""SIGINT and SIGTERM as exceptions, so a port's cleanup runs when it is stopped.

Python turns SIGINT into `KeyboardInterrupt`, but SIGTERM (what `kill`, `timeout` and job
schedulers send) ends the process at once, without `finally` blocks. While a port runs,
`signals_as_exceptions` makes SIGTERM raise `Terminated` instead; `deferred_signals` holds both
signals back for the few system calls that must not be split (moving a finished port in).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """The process received SIGTERM. A BaseException, like KeyboardInterrupt, so that
    `except Exception` blocks do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` and SIGINT `KeyboardInterrupt` in the main
    thread; the previous handlers come back afterwards. Outside the main thread (where Python
    cannot install handlers) this does nothing."""
    if not _in_main_thread():
        yield
        return
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
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
