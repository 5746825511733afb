"""Ports that run xdpfwd's ingress program: whether one may be attached, attaching
it (also in place of another tool's program, with --force), and letting go of ports
that no longer need it. Every change registers its undo."""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace

from xdpfwd import interrupts
from xdpfwd.errors import AttachError, BpfError, InputError, XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.kernel import netns as namespaces
from xdpfwd.kernel.bpf import loader, maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import Attachment, Iface
from xdpfwd.state import intent
from xdpfwd.state.dataplane import Dataplane, devmap_members
from xdpfwd.state.pins import PinDir


def iface(link: netdev.Link) -> Iface:
    return Iface(link.ifindex, link.ifname)


def known(ifindex: int, links: dict[int, netdev.Link] | netdev.Names) -> Iface:
    """The interface with ifindex, named if it still exists."""
    link = links.get(ifindex)
    return Iface(ifindex, link.ifname if link else None)


def link_of(port: Iface, links: dict[int, netdev.Link]) -> netdev.Link:
    """The port's link in links (read from the kernel just before); raises InputError
    if it is gone."""
    link = links.get(port.ifindex)
    if link is None:
        raise InputError(f"no such interface: {port.label}")
    return link


def check_forwardable(link: netdev.Link) -> None:
    """Raises InputError for a device XDP cannot forward on."""
    if link.loopback:
        raise InputError(f"{link.ifname} is a loopback device; XDP cannot forward there")


def map_write(fn, *args) -> None:
    """A map update whose failure is a BpfError."""
    try:
        fn(*args)
    except OSError as e:
        raise BpfError(f"updating a pinned map failed: {e.strerror}") from e


XDPFWD_PROG_NAME = loader.XDP_INGRESS_FUNC
log = logging.getLogger(__name__)


def prog_name(prog_id: int) -> str:
    try:
        fd = sc.prog_fd_by_id(prog_id)
    except OSError:
        return "?"
    try:
        return sc.prog_info(fd).name or "?"
    finally:
        os.close(fd)


def check_table_bounds(table: str, ports: list[netdev.Link]) -> None:
    for link in ports:
        if table == "devmap" and link.ifindex >= maps.FWD_MAX_ENTRIES:
            raise InputError(
                f"{link.ifname} has ifindex {link.ifindex}, beyond what a devmap table holds "
                f"({maps.FWD_MAX_ENTRIES}); use --table devmap-hash"
            )


@dataclass(frozen=True)
class AttachPlan:
    link: netdev.Link
    keep: bool  # xdpfwd's program is already attached
    foreign_prog_id: int  # a program to replace (only with --force)
    switch: bool = False  # xdpfwd's program, to re-attach in another mode


def plan_attach(
    pins: PinDir, link: netdev.Link, ours: int | None, mode: str, force: bool
) -> AttachPlan:
    """Decide, before anything changes, how pins' program gets onto link: kept,
    re-attached in the mode asked for, attached, or put in place of another's.

    Raises AttachError for another program (another pin dir's too) without force.
    """
    if link.xdp_prog_id and link.xdp_prog_id == ours:
        if mode != "auto" and mode != link.xdp_mode:
            return AttachPlan(link, keep=False, foreign_prog_id=0, switch=True)
        return AttachPlan(link, keep=True, foreign_prog_id=0)
    if link.xdp_prog_id and not force:
        name = prog_name(link.xdp_prog_id)
        if name == XDPFWD_PROG_NAME:  # not a stranger's: say where it comes from
            holder = pins.holder(link.xdp_prog_id)
            whose = f"--pin-dir {holder.path}" if holder else "a pin dir removed by hand"
            raise AttachError(
                f"{link.ifname} already runs the xdpfwd program of {whose} (id "
                f"{link.xdp_prog_id}); use --force to replace it"
            )
        raise AttachError(
            f"{link.ifname} already has XDP program {name!r} (id {link.xdp_prog_id}) that "
            "xdpfwd did not attach; use --force to replace it"
        )
    return AttachPlan(link, keep=False, foreign_prog_id=link.xdp_prog_id)


def attach(
    dp: Dataplane, plan: AttachPlan, mode: str, settings: maps.PortSettings, undo
) -> Attachment:
    """Give the port its settings and xdpfwd's program (unless it runs it already)."""
    link = plan.link
    previous = dp.ports.get(link.ifindex)
    # The undo first: a write to a map and its slot copy may fail half-way.
    if previous is None:
        undo.callback(dp.ports.delete, link.ifindex)
    else:
        undo.callback(dp.ports.set, link.ifindex, previous)
    map_write(dp.ports.set, link.ifindex, settings)
    if previous is None:
        # A port new to xdpfwd starts from zero (an array slot may hold old counts).
        map_write(dp.stats.reset, link.ifindex)
        dp.forget_events(link.ifindex)
        undo.callback(dp.stats.delete, link.ifindex)
        if dp.mcast is not None:  # its multicast frames, part of its redirects
            map_write(dp.mcast.port_stats.reset, link.ifindex)
            undo.callback(dp.mcast.port_stats.delete, link.ifindex)
    if plan.keep:
        return Attachment(iface(link), link.xdp_mode or "?", changed=False)
    try:
        used = _attach(dp, plan, mode, undo)
    except AttachError as e:
        hint = single_buffer_hint(dp, link)
        text = f"{e}; {hint}" if hint and mode == "native" else str(e)
        raise AttachError(text, port=link.ifname) from e
    group = dp.groups.group_id(link.ifindex)
    if group is not None:  # a member in another mode now: copies counted or not
        now = replace(link, xdp_mode=used.mode)
        counted = copies_counted(now, len(devmap_members(group)[0]))
        map_write(dp.ports.set, link.ifindex, replace(dp.ports.get(link.ifindex), members=counted))
    fallback = None
    if used.refused is not None:
        hint = single_buffer_hint(dp, link)
        fallback = used.refused + (f"; {hint}" if hint else "")
    return Attachment(iface(link), used.mode, changed=True, fallback=fallback)


def single_buffer_hint(dp: Dataplane, link: netdev.Link) -> str | None:
    """What to do when a pin dir made before multi-buffer programs meets a port whose
    MTU they cannot attach natively at; None when that is not the case."""
    if dp.frags or link.mtu <= netdev.SINGLE_BUFFER_MTU or not sc.frags_supported():
        return None
    return (
        f"the programs in {dp.pins.path} were loaded without multi-buffer support "
        f"(an older xdpfwd), which native XDP needs above MTU {netdev.SINGLE_BUFFER_MTU}: "
        f"rebuild them: {dp.pins.rebuild_hint()}"
    )


def _attach(dp: Dataplane, plan: AttachPlan, mode: str, undo) -> netdev.Attached:
    link = plan.link
    if plan.switch:
        # Native and generic cannot overlap: a short gap while the mode changes.
        netdev.detach_xdp(link, expected_fd=dp.prog_fd)
        undo.callback(netdev.attach_xdp, link, dp.prog_fd, link.xdp_mode)
        used = netdev.attach_xdp(link, dp.prog_fd, mode)
        undo.callback(_detach_ours, link.ifindex, dp.prog_fd)
        return used
    if plan.foreign_prog_id:
        return _replace_foreign(dp, plan, mode, undo)
    used = netdev.attach_xdp(link, dp.prog_fd, mode)
    undo.callback(_detach_ours, link.ifindex, dp.prog_fd)
    return used


def _replace_foreign(
    dp: Dataplane, plan: AttachPlan, mode: str, undo: ExitStack
) -> netdev.Attached:
    """Put our program in place of a foreign one; undo puts the foreign one back."""
    link = plan.link
    if link.xdp_mode not in netdev.MODE_FLAGS:
        raise AttachError(f"{link.ifname} has an offloaded XDP program; xdpfwd cannot replace it")
    try:
        old_fd = sc.prog_fd_by_id(plan.foreign_prog_id)
    except OSError as e:
        raise AttachError(f"cannot open the program on {link.ifname}: {e.strerror}") from e
    undo.callback(os.close, old_fd)
    if mode in ("auto", link.xdp_mode):
        # Same mode: the kernel swaps the two programs atomically.
        used = netdev.attach_xdp(link, dp.prog_fd, link.xdp_mode, replace_fd=old_fd)
        undo.callback(netdev.attach_xdp, link, old_fd, used.mode, dp.prog_fd)
        return used
    netdev.detach_xdp(link, expected_fd=old_fd)
    undo.callback(netdev.attach_xdp, link, old_fd, link.xdp_mode)
    used = netdev.attach_xdp(link, dp.prog_fd, mode)
    undo.callback(_detach_ours, link.ifindex, dp.prog_fd)
    return used


def _detach_ours(ifindex: int, prog_fd: int) -> None:
    link = netdev.link(ifindex)
    if link is not None:
        netdev.detach_xdp(link, expected_fd=prog_fd)


def release_idle(dp: Dataplane, undo, links: dict[int, netdev.Link]) -> list[Iface]:
    """Detach from ports that need xdpfwd no more, and forget their state.

    A port needs it while it has an entry (single or balanced), is a broadcast
    member, is a multicast source, or is the egress of an entry (so its on-miss
    verdict keeps applying to what enters it; a balanced entry's port that is down
    too, though its buckets went to the others); or while the recorded entry it is
    the ingress of waits for its egress device, if it drops what misses.
    """
    ports = dp.ports.ifindexes()
    entries = {port: dp.fwd.get(port) for port in ports}
    targets = {entry.egress_ifindex for entry in entries.values() if entry}
    balanced = _balanced_targets(dp, ports)
    for egress in balanced.values():
        targets |= egress
    sources = dp.mcast.source_ports() if dp.mcast is not None else set()
    waiting = None  # read from the record only for a port that drops what misses
    recorded_targets = None  # and only when a balanced entry could have had it
    released = []
    for port in ports:
        if entries[port] is not None or port in targets or dp.groups.group_id(port) is not None:
            continue
        if port in balanced:
            continue
        if port in sources:
            continue
        if balanced:
            if recorded_targets is None:
                recorded_targets = intent.balanced_ports(dp.pins, links)
            if port in recorded_targets:
                continue
        if (dp.ports.get(port) or maps.PortSettings()).on_miss == maps.XDP_DROP:
            if waiting is None:
                waiting = intent.dropping_while_waiting(dp.pins, links)
            if port in waiting:
                continue
        if release(dp, port, links, undo):
            released.append(known(port, links))
    return released


def _balanced_targets(dp: Dataplane, ports: list[int]) -> dict[int, set[int]]:
    """Ports with a balanced entry -> the egress ports its buckets point at."""
    if dp.balance is None:
        return {}
    return {
        port: {e.egress_ifindex for e in dp.buckets.table(port) if e is not None}
        for port in ports
        if dp.balance.get(port) is not None
    }


def release(dp: Dataplane, port: int, links: dict[int, netdev.Link], undo) -> bool:
    """Detach xdpfwd's program from port and forget its settings and counters;
    whether it was detached (a port that runs another program now is left alone,
    said in a warning; a gone one has nothing to detach)."""
    link = links.get(port)
    if link is None:  # gone here; maybe moved elsewhere, with the program
        _detach_moved(dp)
    detached = link is not None and link.xdp_prog_id == dp.prog_id
    if detached:
        netdev.detach_xdp(link, expected_fd=dp.prog_fd)
        undo.callback(netdev.attach_xdp, link, dp.prog_fd, link.xdp_mode)
    elif link is not None and link.xdp_prog_id:
        log.warning(
            "%s runs another XDP program (id %d) now: left alone, its xdpfwd state forgotten",
            link.ifname,
            link.xdp_prog_id,
        )
    settings = dp.ports.get(port)
    dp.ports.delete(port)
    if settings is not None:
        undo.callback(dp.ports.set, port, settings)
    dp.stats.delete(port)
    dp.forget_entry_base(port)
    if dp.mcast is not None:
        dp.mcast.port_stats.delete(port)
    dp.forget_events(port)
    return detached


def forget_gone(dp: Dataplane, links: dict[int, netdev.Link]) -> list[int]:
    """Forget the state of ports whose device no longer exists; return their ifindexes.

    The kernel already dropped the devmap entries that pointed to them; what stays
    keyed by their ifindex (their own entry, settings, counters, membership) goes.
    A device re-created under the same name has a new ifindex: it is not re-bound.
    A device moved to another namespace took the program along: it is detached there.
    """
    gone = [port for port in dp.ports.ifindexes() if port not in links]
    if gone:
        _detach_moved(dp)
    left = {dp.groups.group_id(port) for port in gone} - {None}
    for port in gone:
        entry = dp.fwd.get(port)
        dp.fwd.delete(port)
        dp.groups.delete(port)
        dp.ports.delete(port)
        dp.stats.delete(port)
        dp.forget_entry_base(port)
        if dp.balance is not None and dp.balance.get(port) is not None:
            dp.balance.clear(port)
            for bucket in range(maps.BUCKETS):
                dp.buckets.remove(port, bucket)
        if dp.mcast is not None:
            dp.mcast.port_stats.delete(port)
        dp.forget_events(port)
        if dp.layout.has_egress:
            dp.egress_stats.delete(port)
            dp.forget_invalid(port)
            if entry is not None:
                dp.rewrites.forget(port, entry.egress_ifindex)
            for ingress, egress in dp.pairs.pairs():
                if port in (ingress, egress):
                    dp.pairs.forget(ingress, egress)
    for group in left:  # the kernel took the gone out of its devmap: fewer copies now
        members = devmap_members(group)[0]
        for member in members:
            settings = dp.ports.get(member)
            if settings is not None:
                counted = copies_counted(links.get(member), len(members))
                dp.ports.set(member, replace(settings, members=counted))
    return gone


def copies_counted(link: netdev.Link | None, members: int) -> int:
    """What a member's settings say of its group's members: their number, for its
    program to count the copies each flood should make; 0 in generic mode, where no
    tracepoint sees the copies made (all would seem lost)."""
    return members if link is not None and link.xdp_mode == "native" else 0


def _detach_moved(dp: Dataplane) -> None:
    """Detach the program from ports that left this namespace with it, in the
    namespaces xdpfwd can look into: there it would go on forwarding through maps
    keyed by this namespace's ifindexes, charging whatever device has its ifindex
    here, and it is no port of this directory's any more."""
    for there in netdev.links_elsewhere():
        for name in _detach_in(there, dp.prog_id, dp.prog_fd):
            log.warning("detached from %s (moved there with the program)", name)


def _detach_in(there: netdev.Elsewhere, prog_id: int, prog_fd: int) -> list[str]:
    """Detach prog_id from the links of another namespace running it: "NAME in NS"."""
    detached = []
    for link in there.links.values():
        if link.xdp_prog_id == prog_id:
            with namespaces.entered_path(there.path):
                netdev.detach_xdp(link, expected_fd=prog_fd)
            detached.append(f"{link.ifname} in {there.label}")
    return detached


def is_orphan(pins: PinDir, link: netdev.Link) -> bool:
    """Whether link runs an xdpfwd ingress program that no other pin directory in
    sight holds (its pins were removed by hand): apply, prune and follow may replace it,
    where another pin dir's would be taken from a forwarder that still runs."""
    return prog_name(link.xdp_prog_id) == XDPFWD_PROG_NAME and pins.holder(link.xdp_prog_id) is None


def orphans(pins: PinDir, links: dict[int, netdev.Link], ours: set[int]) -> dict[int, int]:
    """Ports running an xdpfwd ingress program that is not pins' own (ours) and that
    no other pin directory in sight holds: ifindex -> program id."""
    held: dict[int, bool] = {}  # one walk of the bpffs per program, not per port
    for link in links.values():
        if link.xdp_prog_id and link.xdp_prog_id not in ours and link.xdp_prog_id not in held:
            held[link.xdp_prog_id] = not is_orphan(pins, link)
    return {
        link.ifindex: link.xdp_prog_id
        for link in links.values()
        if link.xdp_prog_id in held and not held[link.xdp_prog_id]
    }


@dataclass(frozen=True)
class Teardown:
    detached: list[Iface]  # the ports here it left
    elsewhere: list[str]  # ports moved to another namespace with the program: "NAME in NS"
    left: tuple[str, ...]  # what the directory holds that xdpfwd did not make (kept)
    still_loaded: list[int]  # its programs something still holds: a device out of sight


def teardown(pins: PinDir) -> Teardown:
    """Detach this pin directory's program everywhere and remove its pins (xdpfwd's,
    by name and kind: see PinDir.remove_owned). Everywhere: here, and on ports moved
    to a named namespace or the initial one, which take the program with them. Call
    with the pin directory locked, after checking it is xdpfwd's. Raises AttachError,
    XdpfwdError.

    An interrupt waits until it is done: half a teardown helps nobody."""
    with interrupts.held():
        detached, elsewhere, programs = _detach_everywhere(pins)
        try:
            left = pins.remove_owned()
        except OSError as e:
            raise XdpfwdError(f"removing the pins in {pins.path} failed: {e.strerror}") from e
        interrupts.mark_committed()
    return Teardown(detached, elsewhere, left, [p for p in sorted(programs) if _held(p)])


def _held(prog_id: int, wait: float = 0.5) -> bool:
    """Whether something still holds the program a while after its pin went (bpffs
    lets go of it after an RCU grace period); False where this process may not look."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.close(sc.prog_fd_by_id(prog_id))
        except OSError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.02)


def _detach_everywhere(pins: PinDir) -> tuple[list[Iface], list[str], set[int]]:
    """Detach the directory's programs (the pinned one, and any found by its maps)
    here and in the namespaces xdpfwd can look into; return the ports here, those
    elsewhere ("NAME in NS") and the programs' ids."""
    detached: list[Iface] = []
    elsewhere: list[str] = []
    links = netdev.links()
    pinned = pins.prog_id()
    programs = pins.running_prog_ids(links) | {pinned} - {None}
    others = list(netdev.links_elsewhere()) if programs else []
    for prog_id in programs:
        # By its pin where it has one: opening by id takes CAP_SYS_ADMIN.
        prog_fd = pins.open_prog() if prog_id == pinned else sc.prog_fd_by_id(prog_id)
        try:
            for link in links.values():
                if link.xdp_prog_id == prog_id:
                    netdev.detach_xdp(link, expected_fd=prog_fd)
                    detached.append(iface(link))
            for there in others:
                elsewhere += _detach_in(there, prog_id, prog_fd)
        finally:
            os.close(prog_fd)
    return detached, elsewhere, programs
