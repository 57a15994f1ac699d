"""Interrupts: SIGINT and SIGTERM stop a command cleanly, with exit status 128 + the signal number.

Commands run under `terminate_as_interrupt`: both signals raise `Interrupted` (a KeyboardInterrupt)
where the program is, and the atomic writers remove their temporaries on the way out. A training loop
cannot be stopped at an arbitrary point without losing work or landing the exception in a finaliser
(a progress bar's, a file's), where it can be swallowed. It uses `deferred` instead: the signal is
only recorded, the loop finishes its step, writes a checkpoint and then raises. A second signal
stops at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_code` is 128 + its number, `str()` says what was kept."""

    def __init__(self, signum: int, message: str | None = None):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")

    def __str__(self) -> str:
        return str(self.args[0])


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handlers(handler):
    if not _main_thread():  # only the main thread may install handlers; leave others' as they are
        yield
        return
    old = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _raise(signum, frame):
    raise Interrupted(signum)


@contextmanager
def terminate_as_interrupt():
    """SIGINT and SIGTERM raise `Interrupted` (SIGTERM would otherwise kill without any cleanup)."""
    with _handlers(_raise):
        yield


class StopRequest:
    """The first signal received inside `deferred()`; `signum` is None while none came."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        if self.signum is not None:  # a second signal: the user insists
            raise Interrupted(signum, f"interrupted again by {signal.Signals(signum).name}; stopped at once")
        self.signum = int(signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def deferred():
    """Record SIGINT/SIGTERM instead of raising, so the caller stops at a point of its choosing."""
    stop = StopRequest()
    with _handlers(stop):
        yield stop
