"""The frame of every change to a pin directory: privileges, bpffs, the lock, the
attach plan, pins created (compiling once), and undo of all of it on any error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from . import dataplane, interrupts, netdev, ports, prereqs
from .dataplane import Dataplane, Layout
from .pins import PinDir


class Undo(ExitStack):
    """Steps that reverse a change in progress. While it is open, an interrupt waits
    for commit() (or an interrupts.check() between steps), so that no step is done
    without its reversal recorded; the interrupt then unwinds all of them."""

    def __enter__(self) -> Undo:
        self._held = interrupts.held()
        self._held.__enter__()
        return super().__enter__()

    def __exit__(self, *exc) -> bool:
        try:
            return super().__exit__(*exc)
        finally:
            self._held.__exit__(None, None, None)

    def commit(self) -> None:
        """Keep the change, unless an interrupt came first: then raise to undo it."""
        interrupts.check()
        self.pop_all()
        interrupts.mark_committed()


@dataclass
class Change:
    dp: Dataplane
    layout: Layout
    compiled: bool  # this change compiled and pinned the programs
    plans: list[ports.AttachPlan]
    undo: Undo  # unwound if the change fails
    resources: ExitStack  # closed when the change ends, either way
    after_commit: list[Callable[[], None]] = field(default_factory=list)


@contextmanager
def change(
    pins: PinDir,
    table: str | None,
    value: str | None,
    attach: dict[netdev.Link, str],
    force: bool,
    check_layout: Callable[[Layout], None] = lambda layout: None,
    switch: bool = False,
    replaceable: Callable[[netdev.Link], bool] = lambda link: False,
) -> Iterator[Change]:
    """Hold the pin directory's lock and open its dataplane, creating what is missing.

    attach maps the ports that are to run xdpfwd to their mode. Nothing changes
    before every check passed: foreign programs on those ports (replaced with
    force, or when replaceable says so), their mode (switched when switch says
    so), the table's type and value format (check_layout may refuse more). If the
    body raises, everything done since is undone; when it returns, the change is
    committed and after_commit runs.
    """
    prereqs.require_privileges()
    pins.ensure_bpffs()
    with pins.locked(create=True) as created, Undo() as undo_setup:
        if created:
            undo_setup.callback(pins.remove_if_empty)
        ours = ports.pinned_prog_id(pins)
        # Links as they are now, under the lock: another writer or a repair may have
        # attached or detached since the caller looked them up.
        now = {link: ports.fresh_link(ports.iface(link)) for link in attach}
        plans = [
            ports.plan_attach(now[link], ours, mode, force or replaceable(now[link]), switch)
            for link, mode in attach.items()
        ]
        layout = dataplane.planned_layout(pins, table, value)
        ports.check_table_bounds(layout.table, list(attach))
        check_layout(layout)
        compiled = dataplane.ensure_pinned(pins, layout, undo_setup)
        with Dataplane.open(pins) as dp, ExitStack() as resources, Undo() as undo:
            done = Change(dp, layout, compiled, plans, undo, resources)
            yield done
            undo.commit()
            undo_setup.commit()
            for step in done.after_commit:
                step()
            # Every successful write also clears out what deleted devices left behind.
            tidy(dp, ExitStack())


def tidy(dp: Dataplane, undo: ExitStack) -> tuple[list[int], list[str], list]:
    """Forget gone devices, unpin emptied groups, detach ports that need xdpfwd no
    more. Returns (gone ifindexes, emptied groups, detached ports)."""
    gone = ports.forget_gone(dp, netdev.links())
    emptied = dp.remove_empty_groups()
    detached = ports.release_idle(dp, undo)
    return gone, emptied, detached
