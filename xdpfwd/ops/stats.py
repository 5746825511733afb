"""`xdpfwd stats`: counters read once, watched live, or zeroed."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack

from xdpfwd import interrupts
from xdpfwd.errors import XdpfwdError
from xdpfwd.kernel import prereqs
from xdpfwd.model.counters import Snapshot, WatchFrame, add_losses, rates
from xdpfwd.state import tracing
from xdpfwd.state.counters import snapshot, zero
from xdpfwd.state.dataplane import reading, writing
from xdpfwd.state.pins import PinDir


def read(pins: PinDir) -> Snapshot | None:
    """The counters since they began, or None when nothing is set up."""
    with reading(pins) as dp:
        return snapshot(dp) if dp is not None else None


def _read_while_watching(pins: PinDir) -> Snapshot:
    """Like read(), but a watch outlives state: a `down` meanwhile, or pins removed by
    hand, leave an empty snapshot rather than an error."""
    try:
        with reading(pins) as dp:
            if dp is not None:
                return snapshot(dp)
    except (XdpfwdError, OSError):
        pass
    return Snapshot(time.monotonic(), time.time(), {}, {}, {}, False)


def next_tick(tick: float, read_at: float, interval: float) -> float:
    """When to read next: on the grid of intervals from the first read, unless the
    last read (at read_at) came more than an interval late, as when a change held
    the lock: then an interval after it, rather than a burst of reads to catch up."""
    return (read_at if read_at - tick > interval else tick) + interval


def watch(pins: PinDir, interval: float, count: int | None = None) -> Iterator[WatchFrame]:
    """A frame every interval seconds (count of them, or until interrupted).

    Loss accounting is attached first if it is not yet (a pin dir made by an older
    xdpfwd), and stays: every watcher reads the same counts.
    Raises XdpfwdError when nothing is set up, PrereqError or BpfError when loss
    accounting cannot be attached.
    """
    with writing(pins) as dp:
        if dp is None:
            raise XdpfwdError(f"nothing to watch: no xdpfwd state in {pins.path}")
        if not tracing.is_attached(pins):
            # Only a pin dir made by an earlier xdpfwd lacks it: attaching is the only
            # part of a watch that needs a capability.
            prereqs.require_privileges("stats --watch")
            with ExitStack() as partial:
                # Its programs count for this namespace's devices: the one check_netns()
                # found the directory's (when writing() opened it).
                pins.record_netns(partial)
                tracing.ensure_attached(pins, partial)
                partial.pop_all()
    before = _read_while_watching(pins)
    losses: dict[str, int] = {}
    copies = 0
    tick = before.taken
    for _ in itertools.count() if count is None else range(count):
        tick = next_tick(tick, before.taken, interval)
        time.sleep(max(0.0, tick - time.monotonic()))
        interrupts.check()
        after = _read_while_watching(pins)
        step = rates(before, after)
        losses = add_losses(losses, step.losses)
        copies += step.flood_copies_lost
        yield WatchFrame(after, step, losses, copies)
        before = after


def clear(pins: PinDir) -> bool:
    """Zero every counter under pins; False when nothing is set up there."""
    with writing(pins) as dp:
        if dp is None:
            return False
        zero(dp)
    return True
