"""Multicast groups: frames to a group address that enter one of the group's source
ports are replicated to the group's receivers (bpf_src/xdpfwd_mcast.c).

The ingress program looks a frame up by (source port, group address) in the
`mcast_sources` hash; the value names the group's slot in `mcast_groups`, a map of
maps holding one devmap per group with exactly the group's receivers (a broadcast
walks every slot of its devmap per frame). Any change of receivers builds a new
devmap and swaps it into the slot in one update, so frames never see a group half
changed, other groups are not touched, and nothing is compiled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from xdpfwd.errors import BpfError, InputError, XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import MULTICAST_EMPTIED, McastGroup, McastReceiver
from xdpfwd.state.dataplane import Dataplane, Multicast, devmap_members
from xdpfwd.state.pins import PinDir
from xdpfwd.state.ports import known, map_write


def upgrade_hint(pins: PinDir) -> str:
    """How to rebuild pins made before multicast groups."""
    return (
        f"{pins.rebuild_hint()} rebuilds them with multicast support (forwarding stops "
        "for a moment)"
    )


def parse_group(text: str) -> maps.McastAddr:
    """Raises InputError unless text is an IPv4, IPv6 or MAC multicast address."""
    try:
        return maps.McastAddr.parse(text)
    except ValueError as e:
        raise InputError(f"group {e}") from None


def require(dp: Dataplane) -> Multicast:
    """The multicast maps; raises XdpfwdError for pins made before multicast groups."""
    if dp.mcast is None:
        raise XdpfwdError(
            f"the pins in {dp.pins.path} predate multicast groups; {upgrade_hint(dp.pins)}"
        )
    return dp.mcast


@dataclass(frozen=True)
class GroupPorts:
    """A multicast group's ports, running or desired."""

    sources: frozenset[int]
    receivers: frozenset[int]
    exclude_ingress: bool = False


@dataclass(frozen=True)
class GroupState:
    """A group as the maps hold it."""

    addr: maps.McastAddr
    slot: int
    exclude_ingress: bool
    sources: frozenset[int]
    receivers: frozenset[int]
    devmap_id: int | None
    size: int  # slots of its devmap
    entries: dict[int, maps.McastSource]  # source port -> its entry


def read_groups(dp: Dataplane) -> dict[maps.McastAddr, GroupState]:
    """Every group, read from the maps (empty for pins made before multicast)."""
    m = dp.mcast
    if m is None:
        return {}
    by_group: dict[maps.McastAddr, dict[int, maps.McastSource]] = {}
    for (port, addr), entry in m.sources.items().items():
        by_group.setdefault(addr, {})[port] = entry
    groups = {}
    for addr, entries in by_group.items():
        first = min(entries.values(), key=lambda e: e.slot)
        devmap_id = m.groups.devmap_id(first.slot)
        receivers, size = devmap_members(devmap_id)
        groups[addr] = GroupState(
            addr,
            first.slot,
            first.exclude_ingress,
            frozenset(entries),
            frozenset(receivers),
            devmap_id,
            size,
            entries,
        )
    return groups


def copies_of(source: int, receivers: frozenset[int], exclude_ingress: bool) -> int:
    """Copies a frame from source makes: one per receiver, not back to itself with
    exclude_ingress."""
    return len(receivers) - (1 if exclude_ingress and source in receivers else 0)


def check_limits(addr: maps.McastAddr, sources: frozenset[int], receivers: frozenset[int]):
    """Raises XdpfwdError for a group beyond the per-group limits."""
    for what, ports in (("receivers", receivers), ("sources", sources)):
        if len(ports) > maps.MCAST_MAX_MEMBERS:
            raise XdpfwdError(
                f"multicast group {addr.text} would have {len(ports)} {what}; a group has "
                f"at most {maps.MCAST_MAX_MEMBERS}"
            )


def set_group(
    dp: Dataplane,
    addr: maps.McastAddr,
    *,
    sources: frozenset[int],
    receivers: frozenset[int],
    exclude_ingress: bool,
    undo,
    resources: ExitStack,
    later: list[Callable[[], None]],
    current: GroupState | None,
) -> None:
    """Make group addr, now current (None: no such group), exactly this: no sources
    or no receivers mean no group. Each step records its reversal on undo; fds that
    undo needs are held on resources; forgetting counters waits for later (after
    the commit). Receivers change by a new devmap swapped into the group's slot.

    Raises XdpfwdError (a limit, pins without multicast), BpfError.
    """
    m = require(dp)
    was = current.sources if current is not None else frozenset()
    if not sources or not receivers:
        if current is not None:
            _remove(m, current, undo, resources, later)
            _mark_sources(m, was, undo)
        return
    _mark_sources(m, sources, undo, joining=True)  # before their entries are written
    check_limits(addr, sources, receivers)
    if current is None:
        slot = _free_slot(m)
        m.stats.reset(slot)  # a slot's counters start from zero with its group
    else:
        slot = current.slot
    old_receivers = current.receivers if current else frozenset()
    # A group shrinking says so to its sources first, one growing after its devmap:
    # a frame meanwhile expects no copy the devmap does not make.
    shrinking = len(receivers) < len(old_receivers)
    if shrinking:
        _write_sources(m, addr, slot, sources, receivers, exclude_ingress, current, undo)
    if current is None or receivers != old_receivers or current.size != len(receivers):
        if m.copies is not None:
            # Rows stay while the group lives, a former receiver's too: its copies
            # still count against the copies its frames were expected to make.
            rows = set(m.copies.pairs())
            for receiver in sorted(receivers - old_receivers):
                if (slot, receiver) not in rows:
                    map_write(m.copies.reset, slot, receiver)
                    undo.callback(m.copies.forget, slot, receiver)
        _swap_devmap(dp, m, slot, sorted(receivers), undo, resources)
    if not shrinking:
        _write_sources(m, addr, slot, sources, receivers, exclude_ingress, current, undo)
    _mark_sources(m, was - sources, undo)


def _mark_sources(m: Multicast, ports: frozenset[int], undo, joining: bool = False) -> None:
    """Mark each of ports (below STATS_SLOTS) as a source (joining), or by whether it
    is a source of a group now: the ingress program reads the frames of marked ports
    only for groups."""
    if m.ports is None:
        return  # pins made before the marks: their program reads every frame
    sources = set() if joining else m.source_ports()
    for port in sorted(p for p in ports if p < maps.STATS_SLOTS):
        was, now = m.ports.is_source(port), joining or port in sources
        if was != now:
            map_write(m.ports.mark, port, now)
            undo.callback(m.ports.mark, port, was)


def _write_sources(
    m: Multicast,
    addr: maps.McastAddr,
    slot: int,
    sources: frozenset[int],
    receivers: frozenset[int],
    exclude_ingress: bool,
    current: GroupState | None,
    undo,
) -> None:
    """The group's source entries, exactly sources (each with its copies per frame)."""
    flags = maps.MCAST_EXCLUDE_INGRESS if exclude_ingress else 0
    entries = current.entries if current else {}
    for source in sorted(sources):
        entry = maps.McastSource(slot, flags, copies_of(source, receivers, exclude_ingress))
        previous = entries.get(source)
        if entry != previous:
            _write_source(m, source, addr, entry)
            if previous is None:
                undo.callback(m.sources.remove, source, addr)
            else:
                undo.callback(m.sources.set, source, addr, previous)
    for source in sorted(set(entries) - sources):
        m.sources.remove(source, addr)
        undo.callback(m.sources.set, source, addr, entries[source])


def _write_source(m: Multicast, source: int, addr: maps.McastAddr, entry) -> None:
    try:
        m.sources.set(source, addr, entry)
    except OSError as e:
        raise XdpfwdError(
            f"cannot add a source of multicast group {addr.text}: {e.strerror} (at most "
            f"{maps.MCAST_MAX_SOURCES} (source port, group) pairs in all)"
        ) from e


def _free_slot(m: Multicast) -> int:
    """A slot no group uses (no source points to it; a devmap left there by a process
    that died half-way is replaced), preferably one whose counter rows are gone: the
    rows of a group removed in this change are forgotten only after it commits."""
    used = {entry.slot for entry in m.sources.items().values()}
    rows = m.copies.pairs() if m.copies is not None else []
    dirty = {slot for slot, _ in rows}
    free = [slot for slot in range(maps.MCAST_MAX_GROUPS) if slot not in used]
    if not free:
        raise XdpfwdError(f"xdpfwd holds at most {maps.MCAST_MAX_GROUPS} multicast groups")
    slot = next((s for s in free if s not in dirty), free[0])
    for pair in rows:
        if pair[0] == slot:
            m.copies.forget(*pair)
    return slot


def _hold(resources: ExitStack, map_id: int | None) -> int | None:
    """An fd on map map_id for as long as the change lasts (a devmap lives only while
    something holds it: undo may need to put it back)."""
    if map_id is None:
        return None
    fd = sc.map_fd_by_id(map_id)
    resources.callback(os.close, fd)
    return fd


def _swap_devmap(
    dp: Dataplane, m: Multicast, slot: int, receivers: list[int], undo, resources: ExitStack
) -> None:
    """Put a new devmap holding exactly receivers into slot, in one update."""
    layout = dp.layout
    try:
        devmap = maps.create_sized_devmap(
            layout.table, layout.value_size, receivers, m.prog_fd, f"xdpfwd_m{slot}"
        )
    except OSError as e:
        raise BpfError(f"creating a multicast group's devmap failed: {e.strerror}") from e
    resources.callback(devmap.close)
    old_fd = _hold(resources, m.groups.devmap_id(slot))
    map_write(m.groups.set, slot, devmap.fd)
    if old_fd is None:
        undo.callback(m.groups.clear, slot)
    else:
        undo.callback(m.groups.set, slot, old_fd)


def _remove(
    m: Multicast, group: GroupState, undo, resources: ExitStack, later: list[Callable[[], None]]
) -> None:
    """Remove the group: its sources first (frames then take their usual path), then
    its devmap; its counters are forgotten after the commit."""
    for source, entry in sorted(group.entries.items()):
        m.sources.remove(source, group.addr)
        undo.callback(m.sources.set, source, group.addr, entry)
    old_fd = _hold(resources, group.devmap_id)
    if old_fd is not None:
        m.groups.clear(group.slot)
        undo.callback(m.groups.set, group.slot, old_fd)
    if m.copies is not None:
        rows = [pair for pair in m.copies.pairs() if pair[0] == group.slot]
        later.extend(lambda p=pair: m.copies.forget(*p) for pair in rows)


# --- reading -------------------------------------------------------------------------


def group_infos(dp: Dataplane, links: dict[int, netdev.Link]) -> list[McastGroup]:
    """Every group with its counters, in address order (IPv4, IPv6, MAC)."""
    m = dp.mcast
    if m is None:
        return []
    infos = []
    rows = m.copies.pairs() if m.copies is not None else []
    for addr, g in sorted(read_groups(dp).items(), key=lambda item: _order(item[0])):
        stats = m.stats.read(g.slot)
        copied = {}
        for slot, port in rows:
            if slot == g.slot:
                copied[port] = m.copies.read(slot, port) or (0, 0)
        receivers = [
            McastReceiver(known(port, links), *copied.get(port, (0, 0)))
            if m.copies is not None
            else McastReceiver(known(port, links))
            for port in sorted(g.receivers)
        ]
        left = [McastReceiver(known(port, links), *copied[port]) for port in sorted(copied)]
        left = [r for r in left if r.port.ifindex not in g.receivers]
        infos.append(
            McastGroup(
                addr.text,
                addr.kind_name,
                g.exclude_ingress,
                [known(port, links) for port in sorted(g.sources)],
                receivers,
                stats.in_packets,
                stats.in_bytes,
                stats.copies_expected,
                sum(c[0] for c in copied.values()) if m.copies is not None else None,
                [r for r in left if r.port.ifname is not None],
                [r for r in left if r.port.ifname is None],
            )
        )
    return infos


def _order(addr: maps.McastAddr) -> tuple:
    return ({maps.MCAST_IPV4: 0, maps.MCAST_IPV6: 1}.get(addr.kind, 2), addr.raw)


def sources_of(dp: Dataplane) -> dict[int, list[str]]:
    """Source port -> the groups it is a source of."""
    found: dict[int, list[str]] = {}
    for addr, g in sorted(read_groups(dp).items(), key=lambda item: _order(item[0])):
        for port in g.sources:
            found.setdefault(port, []).append(addr.text)
    return found


def targets_of(dp: Dataplane) -> dict[int, set[int]]:
    """Source port -> every receiver its multicast frames go to."""
    found: dict[int, set[int]] = {}
    for g in read_groups(dp).values():
        for port in g.sources:
            others = g.receivers - ({port} if g.exclude_ingress else set())
            found.setdefault(port, set()).update(others)
    return found


def zero(dp: Dataplane) -> None:
    """Zero every group's counters."""
    m = dp.mcast
    if m is None:
        return
    for g in read_groups(dp).values():
        m.stats.reset(g.slot)
    if m.copies is not None:
        for slot, receiver in m.copies.pairs():
            m.copies.reset(slot, receiver)


# --- tidying -------------------------------------------------------------------------


def tidy(dp: Dataplane, links: dict[int, netdev.Link], undo) -> list[str]:
    """Take deleted devices out of every group (the kernel already emptied their devmap
    entries), resize what that left oversized, drop groups left without sources, and
    forget counters no group uses. A group whose receivers' devices are all gone
    stays as it is: its frames are dropped (each counts its copies lost) rather than
    let out the source's other way (a feed going out of an uplink), until prune gives
    it receivers made again or `multicast del` ends it. Returns the groups removed,
    as `multicast ADDRESS`."""
    m = dp.mcast
    if m is None:
        return []
    removed = []
    later: list[Callable[[], None]] = []
    with ExitStack() as resources:
        groups = read_groups(dp)
        for addr, g in groups.items():
            sources = frozenset(p for p in g.sources if p in links)
            receivers = frozenset(p for p in g.receivers if p in links)
            if (sources, receivers, len(receivers)) == (g.sources, g.receivers, g.size):
                continue
            if sources and not receivers:
                continue
            set_group(
                dp,
                addr,
                sources=sources,
                receivers=receivers,
                exclude_ingress=g.exclude_ingress,
                undo=undo,
                resources=resources,
                later=later,
                current=g,
            )
            if not sources or not receivers:
                removed.append(MULTICAST_EMPTIED + addr.text)
        in_use = {g.slot for g in groups.values()}
        if m.copies is not None:
            for pair in m.copies.pairs():
                if pair[0] not in in_use:
                    later.append(lambda p=pair: m.copies.forget(*p))
    for step in later:
        step()
    return removed
