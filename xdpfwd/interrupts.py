"""SIGINT and SIGTERM as KeyboardInterrupt, so that operations roll back.

Python drops an exception raised while a finalizer runs (pyroute2's asyncio loops
have them), so the handler also records the interrupt; long loops call check() at
safe points to raise it again.
"""

from __future__ import annotations

import os
import signal

_pending = False


def _handler(main_pid: int):
    def handler(signum, frame):
        global _pending
        if os.getpid() != main_pid:
            # A forked copy of this process (a helper of some library) must not run
            # this process's rollback.
            os._exit(128 + signum)
        _pending = True
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
