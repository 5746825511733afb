"""The frame of every change to a pin directory: bpffs, the lock, the directory made
(or checked to be) xdpfwd's, the links as they are under it, the attach plan, pins
created (compiling once), and undo of all of it on any error."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

from xdpfwd import interrupts
from xdpfwd.errors import BpfError, DeviceGone, PrereqError, XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.model import MULTICAST_EMPTIED, Attachment, emptied_group
from xdpfwd.state import dataplane, multicast, ports, tracing
from xdpfwd.state.dataplane import Dataplane, Layout
from xdpfwd.state.pins import PinDir

log = logging.getLogger(__name__)


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


class _NoUndo:
    """For steps whose reversal nobody wants (tidying after a commit)."""

    def callback(self, *args, **kwargs) -> None:
        pass


NO_UNDO = _NoUndo()


@dataclass
class Change:
    dp: Dataplane
    compiled: bool  # this change compiled and pinned the programs
    plans: list[ports.AttachPlan]
    undo: Undo  # unwound if the change fails
    resources: ExitStack  # closed when the change ends, either way
    links: dict[int, netdev.Link]  # read once under the lock; attach() keeps it current
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)  # made by attach()
    notes: list[str] = field(default_factory=list)  # warnings for the user
    emptied: set[str] = field(default_factory=set)  # groups the command itself emptied
    on_finish: list[Callable[[], None]] = field(default_factory=list)  # after the tidy
    # Pairs whose last counts were kept as they were forgotten (groups.forget_pairs).
    retired_pairs: set[tuple[int, int]] = field(default_factory=set)

    def attach(self, plan: ports.AttachPlan, mode: str, settings) -> Attachment:
        """ports.attach() within this change, and the links updated to match."""
        done = ports.attach(self.dp, plan, mode, settings, self.undo)
        self.attachments.append(done)
        if done.changed:
            link = replace(plan.link, xdp_prog_id=self.dp.prog_id, xdp_mode=done.mode)
            self.links[link.ifindex] = link
        return done

    def plan_of(self, ifindex: int) -> ports.AttachPlan:
        return next(plan for plan in self.plans if plan.link.ifindex == ifindex)


@contextmanager
def change(
    pins: PinDir,
    *,
    table: str | None,
    value: str | None,
    attach: dict[int, str],
    force: bool,
    sends_to: Iterable[int] = (),
    known: Mapping[int, netdev.Link] | None = None,
    check_layout: Callable[[Layout], None] = lambda layout: None,
    replaceable: Callable[[netdev.Link], bool] = lambda link: False,
    repairing: bool = False,
) -> Iterator[Change]:
    """Hold the pin directory's lock and open its dataplane, creating what is missing.

    attach maps the ifindexes of the ports that are to run xdpfwd to their mode;
    sends_to has the ports the change is to send to; known, the links the caller
    found them in (to name one that went away since). Nothing changes before every
    check passed: all of them are still there (refused as gone otherwise), foreign
    programs on the ports to run xdpfwd (replaced with force, or when replaceable says
    so), the table's type and value format (check_layout may refuse more); a port
    running xdpfwd in another mode than the one asked for is re-attached in it; ports
    flooding through a group whose pin is gone, unless repairing (see refuse_unpinned).
    If the body raises, everything done since is undone; when it returns, the change
    is committed and after_commit runs.
    """
    pins.ensure_bpffs()
    pins.check_owned()  # before creating anything: someone else's directory is refused
    with pins.locked(create=True) as created, Undo() as undo_setup:
        if created:
            undo_setup.callback(pins.remove_if_empty)
        pins.check_netns()  # its ifindexes are another namespace's devices
        if pins.claim():
            undo_setup.callback(pins.unmark)
        # Links as they are now, under the lock: another writer or a repair may have
        # attached or detached since the caller looked them up.
        links = netdev.links()
        pins.record_netns(undo_setup)  # this namespace, as check_netns() found
        ours = pins.prog_id()
        plans = []
        for port in sends_to:
            _link(links, port, known)
        for port, mode in attach.items():
            link = _link(links, port, known)
            # (replaceable() may look through other pin dirs: only for another's program)
            replace_foreign = force or (link.xdp_prog_id not in (0, ours) and replaceable(link))
            plans.append(ports.plan_attach(pins, link, ours, mode, replace_foreign))
        layout = dataplane.planned_layout(pins, table, value)
        ports.check_table_bounds(layout.table, [plan.link for plan in plans])
        check_layout(layout)
        with _said_when_devices_go(links):
            compiled = dataplane.ensure_pinned(pins, layout, undo_setup)
            accounting = _ensure_accounting(pins, undo_setup)
            with Dataplane.open(pins) as dp, ExitStack() as resources, Undo() as undo:
                if not repairing:
                    refuse_unpinned(dp, links)
                done = Change(dp, compiled, plans, undo, resources, links)
                done.notes += accounting
                yield done
                undo.commit()
                undo_setup.commit()
                _finish(done)


def _ensure_accounting(pins: PinDir, undo: Undo) -> list[str]:
    """Loss accounting attached (undone with the change); a warning instead when it
    cannot be: forwarding does not depend on it."""
    with ExitStack() as partial:
        try:
            tracing.ensure_attached(pins, partial)
        except (PrereqError, BpfError) as e:
            return [f"loss accounting is off (transmit failures are not counted): {e}"]
        undo.push(partial.pop_all())
    return []


@contextmanager
def editing(pins: PinDir, repairing: bool = False) -> Iterator[Change | None]:
    """A change to what is set up already (None when nothing is): the exclusive lock,
    the links read once, undo of every step if one fails; refused as by change()."""
    with dataplane.writing(pins) as dp:
        if dp is None:
            yield None
            return
        links = netdev.links()
        if not repairing:
            refuse_unpinned(dp, links)
        with _said_when_devices_go(links), ExitStack() as resources, Undo() as undo:
            pins.record_netns(undo)  # this namespace, as writing() found
            done = Change(dp, False, [], undo, resources, links)
            yield done
            undo.commit()
            _finish(done)


def refuse_unpinned(dp: Dataplane, links: dict[int, netdev.Link]) -> None:
    """Raise XdpfwdError when ports flood through a group whose pin is gone: a change
    would take them for ports of no group, and checks (loops, shared bulks) would miss
    where they flood. prune (and apply) pin the group again."""
    # A deleted member is out of its devmap already: the change's tidy forgets it.
    unpinned = [links[port].ifname for port in dp.unpinned_members() if port in links]
    if unpinned:
        verb = "floods" if len(unpinned) == 1 else "flood"
        raise XdpfwdError(
            f"pinned state in {dp.pins.path} is incomplete: {', '.join(unpinned)} {verb} "
            f"through a broadcast group whose pin is gone; `{dp.pins.command('prune')}` "
            "pins it again"
        )


def _finish(c: Change) -> None:
    for step in c.after_commit:
        step()
    # Every successful write also clears out what deleted devices left behind.
    _, emptied, _ = tidy(c.dp, NO_UNDO, c.links)
    for name in sorted(set(emptied) - c.emptied):
        left = "sources or receivers" if name.startswith(MULTICAST_EMPTIED) else "members"
        log.warning("removed %s: its %s are gone", emptied_group(name), left)
    for step in c.on_finish:
        step()


def _link(
    links: dict[int, netdev.Link], ifindex: int, known: Mapping[int, netdev.Link] | None
) -> netdev.Link:
    link = links.get(ifindex)
    if link is None:
        name = known[ifindex].ifname if known and ifindex in known else f"ifindex {ifindex}"
        raise DeviceGone(f"no such interface: {name} (it went away meanwhile)", [name])
    return link


@contextmanager
def _said_when_devices_go(links: dict[int, netdev.Link]) -> Iterator[None]:
    """A change that failed because a device of links went away while it ran, told
    as such (DeviceGone), once undone: the kernel refused a write naming it (EINVAL:
    devmap.c finds no device by that ifindex; ENODEV), and so may the undo's."""
    committed_before = interrupts.committed
    try:
        yield
    except (XdpfwdError, OSError) as e:
        if isinstance(e, DeviceGone) or interrupts.committed > committed_before:
            raise  # (committed by now: what failed came after the change was made)
        gone = went_away(e, links)
        if not gone:
            raise
        raise DeviceGone(f"{', '.join(gone)} went away during the change: undone", gone) from e


def went_away(e: BaseException, seen: dict[int, netdev.Link]) -> list[str]:
    """The devices of seen that are gone now, if e (or what it was raised from or while
    handling: an undo's write fails too) is the kernel refusing a write for want of a
    device (EINVAL, ENODEV); else none."""
    chain: list[BaseException] = []
    cause: BaseException | None = e
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if not any(isinstance(x, OSError) and x.errno in (errno.EINVAL, errno.ENODEV) for x in chain):
        return []
    now = netdev.links()
    return [dev.ifname for ifindex, dev in sorted(seen.items()) if ifindex not in now]


def tidy(
    dp: Dataplane, undo: Undo | _NoUndo, links: dict[int, netdev.Link]
) -> tuple[list[int], list[str], list]:
    """Forget gone devices, unpin emptied groups, detach ports that need xdpfwd no
    more. Returns (gone ifindexes, emptied groups, detached ports)."""
    gone = ports.forget_gone(dp, links)
    emptied = dp.remove_empty_groups() + multicast.tidy(dp, links, undo)
    detached = ports.release_idle(dp, undo, links)
    return gone, emptied, detached
