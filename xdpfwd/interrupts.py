"""SIGINT and SIGTERM as KeyboardInterrupt, so that operations roll back.

Python drops an exception raised while a finalizer runs (pyroute2's asyncio loops
have them), so the handler also records the interrupt; long loops call check() at
safe points to raise it again. A change in progress holds interrupts (held()) so
that each step is recorded with its reversal before the interrupt unwinds it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

_pending = False
_holding = False
_deferred = False  # one arrived while held: the held step went on to its end
committed = False  # a change was committed: an interrupt now no longer undoes it


def _handler(main_pid: int):
    def handler(signum, frame):
        global _pending, _deferred
        if os.getpid() != main_pid:
            # A forked copy of this process (a helper of some library) must not run
            # this process's rollback.
            os._exit(128 + signum)
        _pending = True
        if _holding:
            _deferred = True
        else:
            raise KeyboardInterrupt

    return handler


def install() -> None:
    handler = _handler(os.getpid())
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived, even one that was swallowed."""
    if _pending:
        raise KeyboardInterrupt


@contextmanager
def held() -> Iterator[None]:
    """Let the block run to its end before an interrupt takes effect; the interrupt
    stays pending for the next check(). Hold no waits (a lock, a sleep): they could
    not be interrupted."""
    global _holding
    outer, _holding = _holding, True
    try:
        yield
    finally:
        _holding = outer


def deferred() -> bool:
    """Whether an interrupt arrived while a step was held (and so did not stop it)."""
    return _deferred


def mark_committed() -> None:
    global committed
    committed = True


def next_change() -> None:
    """A process that makes one change after another (follow): an error is about the
    change under way, not one committed before it."""
    global committed
    committed = False
