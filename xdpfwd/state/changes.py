"""The changes commands make: transaction.change() and editing(), which also keep
what the change ended had counted (counters.retire), so that no sum of counters
goes down because a pair or a port went."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from xdpfwd.errors import XdpfwdError
from xdpfwd.state import counters, transaction
from xdpfwd.state.pins import PinDir
from xdpfwd.state.transaction import Change

log = logging.getLogger(__name__)


@contextmanager
def change(pins: PinDir, **kwargs) -> Iterator[Change]:
    """transaction.change(pins, **kwargs), keeping the counts of what it ends."""
    with transaction.change(pins, **kwargs) as c:
        _keep_counts(c)
        yield c


@contextmanager
def editing(pins: PinDir, repairing: bool = False) -> Iterator[Change | None]:
    """transaction.editing(pins, repairing), keeping the counts of what it ends."""
    with transaction.editing(pins, repairing) as c:
        if c is not None:
            _keep_counts(c)
        yield c


def _keep_counts(c: Change) -> None:
    """Read the counters as c begins; once it is done, keep those of what it ended.
    The change does not depend on them: one that cannot be read is logged."""
    try:
        before = counters.snapshot(c.dp, c.links)
    except (OSError, XdpfwdError) as e:
        log.info("counters not read before the change: %s", e)
        return
    c.on_finish.append(lambda: counters.retire(c.dp, before, c.links, c.retired_pairs))
