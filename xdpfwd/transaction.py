"""The frame of every change to a pin directory: privileges, bpffs, the lock, the
attach plan, pins created (compiling once), and undo of all of it on any error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from . import dataplane, netdev, ports, prereqs
from .dataplane import Dataplane, Layout
from .pins import PinDir


@dataclass
class Change:
    dp: Dataplane
    layout: Layout
    compiled: bool  # this change compiled and pinned the programs
    plans: list[ports.AttachPlan]
    undo: ExitStack  # unwound if the change fails
    resources: ExitStack  # closed when the change ends, either way
    after_commit: list[Callable[[], None]] = field(default_factory=list)


@contextmanager
def change(
    pins: PinDir,
    table: str | None,
    value: str | None,
    attach: list[netdev.Link],
    mode: str,
    force: bool,
    check_layout: Callable[[Layout], None] = lambda layout: None,
) -> Iterator[Change]:
    """Hold the pin directory's lock and open its dataplane, creating what is missing.

    Nothing changes before every check passed: foreign programs on the ports to
    attach, the table's type and value format (check_layout may refuse more). If
    the body raises, everything done since is undone; when it returns, the change
    is committed and after_commit runs.
    """
    prereqs.require_privileges()
    pins.ensure_bpffs()
    with pins.locked(create=True) as created, ExitStack() as undo_setup:
        if created:
            undo_setup.callback(pins.remove_if_empty)
        ours = ports.pinned_prog_id(pins)
        plans = [ports.plan_attach(link, ours, mode, force) for link in attach]
        layout = dataplane.planned_layout(pins, table, value)
        ports.check_table_bounds(layout.table, attach)
        check_layout(layout)
        compiled = dataplane.ensure_pinned(pins, layout, undo_setup)
        with Dataplane.open(pins) as dp, ExitStack() as resources, ExitStack() as undo:
            done = Change(dp, layout, compiled, plans, undo, resources)
            yield done
            undo.pop_all()
            undo_setup.pop_all()
            for step in done.after_commit:
                step()
