"""`xdpfwd follow`: keep the running state right while devices come and go.

It listens to the namespace's link events (netlink) and, shortly after each burst,
runs the facade's prune, which brings the running state back to the configuration
last asked for (see reconcile() in ops/applying.py): it binds devices re-created under
a known name and moves the buckets of balanced entries off egress ports that went
down or away, and back. Everything it needs is in the pins and the kernel, read
anew each time, so it survives `down`, `apply` and restarts of itself; when the
kernel drops events (a netlink overrun), the next run reads a full dump anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from xdpfwd import interrupts
from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev, netns
from xdpfwd.model import PruneResult, emptied_group
from xdpfwd.state.pins import PinDir

log = logging.getLogger(__name__)

SETTLE = 0.05  # seconds to let a burst of events (a device created: several) arrive
RESYNC = 30.0  # seconds between runs without events, in case something was missed
RETRY = 1.0  # seconds before trying again after a failed run
NAME_CHECK = 1.0  # seconds between looks at the name of the namespace it follows


@dataclass(frozen=True)
class FollowLine:
    """One thing follow did or saw, for its log."""

    text: str
    level: str = "action"  # action, warning or error


def run(
    ops,
    pins: PinDir,
    *,
    events: netdev.LinkEvents | None = None,
    settle: float = SETTLE,
    resync: float = RESYNC,
) -> Iterator[FollowLine]:
    """Lines of what was done, until interrupted. ops is the facade (its prune runs
    once at start and after every burst of link events). Raises OSError when the
    netlink socket cannot be opened."""
    source = events or netdev.LinkEvents()
    # Deleting a namespace's name sends no link event, and this process, inside it,
    # would keep it alive with its devices and their forwarding: looked at each second.
    named = netns.current_name()
    try:
        yield FollowLine(f"following link events for {pins.path}", "start")
        skipped: tuple[str, ...] = ()
        failed, retry = "", RETRY  # the last run's error, said once; the wait after it
        due = 0.0  # a run at once
        while True:
            interrupts.check()
            interrupts.next_change()  # what fails from here is not the last run's change
            if named is not None and not netns.still_named(named):
                raise InputError(
                    f"network namespace {named} was deleted: follow ends, where it would "
                    "keep it alive, with its devices"
                )
            wait = max(0.0, due - time.monotonic())
            try:
                batch = source.wait(wait if named is None else min(wait, NAME_CHECK))
            except netdev.Overrun:
                yield FollowLine("netlink overrun: resynchronising from a full dump", "warning")
                batch = []
                due = 0.0
            if batch:
                _log_events(batch)
                time.sleep(settle)
                more = _drain(source)
                if more is None:
                    yield FollowLine("netlink overrun: resynchronising", "warning")
                else:
                    _log_events(more)
            elif time.monotonic() < due:
                continue
            # A directory another namespace's, gone or out of sight stays so: it ends
            # the follow (exit status 2 or 5) rather than fail every run.
            ops.check_pin_dir(pins)
            try:
                result = ops.prune(pins)
            except (XdpfwdError, OSError) as e:
                if str(e) != failed:
                    yield FollowLine(str(e), "error")
                    failed, retry = str(e), RETRY
                due = time.monotonic() + retry
                retry = min(retry * 2, resync)  # the same error again: wait longer
                continue
            if failed:
                yield FollowLine("the last error is resolved")
                failed = ""
            due = time.monotonic() + resync
            yield from _lines(result)
            yield from (FollowLine(text, "warning") for text in result.warnings)
            if result.skipped != skipped:
                yield from (FollowLine(text, "warning") for text in result.skipped)
                skipped = result.skipped
    finally:
        source.close()


def _drain(source: netdev.LinkEvents) -> list[netdev.LinkEvent] | None:
    """What else is queued now; None after an overrun."""
    try:
        return source.wait(0)
    except netdev.Overrun:
        return None


def _log_events(batch: list[netdev.LinkEvent]) -> None:
    for event in batch:
        link = event.link
        what = "deleted" if event.deleted else f"{'up' if link.live else 'down'}"
        log.info("link %s (%d): %s", link.ifname, link.ifindex, what)


def _lines(result: PruneResult) -> Iterator[FollowLine]:
    for text in result.steps:
        yield FollowLine(text)
    for ifindex in result.gone:
        yield FollowLine(f"forgot ifindex {ifindex}: its device is gone")
    for name in result.emptied:
        yield FollowLine(f"removed {emptied_group(name)}: no member left")
    for port in result.detached:
        yield FollowLine(f"detached from {port.label}")
