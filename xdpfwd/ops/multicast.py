"""`xdpfwd multicast add/del/list`: groups that replicate frames by their destination
address from source ports to receivers (see state/multicast.py)."""

from __future__ import annotations

from dataclasses import replace

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev, prereqs
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import Iface, McastDelResult, McastListing, McastResult
from xdpfwd.state import health, intent, multicast
from xdpfwd.state.changes import change, editing
from xdpfwd.state.dataplane import reading
from xdpfwd.state.pins import PinDir
from xdpfwd.state.ports import check_forwardable, known, link_of, release_idle


def multicast_add(
    pins: PinDir,
    group: str,
    receivers: list[Iface],
    sources: list[Iface] | None = None,
    *,
    exclude_ingress: bool | None = None,
    table: str | None = None,
    mode: str = "auto",
    force: bool = False,
) -> McastResult:
    """Frames to group entering a source are copied to every receiver.

    Creates the group, or adds ports to it. Sources run xdpfwd's program, receivers
    need not. Without sources, a new group is a many-to-many bus (its receivers are
    its sources), and receivers added to a bus join it as sources too; receivers
    added to another group only receive. A new group needs receivers.
    exclude_ingress None keeps the group's setting (off for a new group).

    Raises InputError, XdpfwdError (a limit, pins without multicast),
    AttachError, BpfError or PrereqError; on any error nothing changes.
    """
    addr = multicast.parse_group(group)
    prereqs.require_privileges("multicast add")
    links = netdev.links()
    to_ports = _ifindexes(receivers, links)
    if not to_ports and not sources:
        raise InputError("name receivers (--to) or sources (--from)")
    if sources is not None:
        from_ports = _ifindexes(sources, links)
    else:
        from_ports = to_ports if _is_bus(_group_now(pins, addr)) else []
    with change(
        pins, table=table, value=None, attach=dict.fromkeys(from_ports, mode), force=force
    ) as c:
        multicast.require(c.dp)
        current = multicast.read_groups(c.dp).get(addr)
        if current is None and not to_ports:
            raise XdpfwdError(f"no multicast group {addr.text} yet: name its receivers (--to)")
        if sources is None and bool(from_ports) != _is_bus(current):
            raise XdpfwdError(f"multicast group {addr.text} changed meanwhile; try again")
        if exclude_ingress is None:
            exclude_ingress = current.exclude_ingress if current else False
        all_sources = frozenset(from_ports) | (current.sources if current else frozenset())
        all_receivers = frozenset(to_ports) | (current.receivers if current else frozenset())
        to_be = multicast.GroupPorts(all_sources, all_receivers, exclude_ingress)
        now = None
        if current is not None:
            now = multicast.GroupPorts(current.sources, current.receivers, current.exclude_ingress)
        path_warnings = health.refuse_multicast_paths(c.dp, c.links, addr.text, to_be, now, force)
        attachments = [
            c.attach(plan, mode, c.dp.ports.get(plan.link.ifindex) or maps.PortSettings())
            for plan in c.plans
        ]
        multicast.set_group(
            c.dp,
            addr,
            sources=all_sources,
            receivers=all_receivers,
            exclude_ingress=exclude_ingress,
            undo=c.undo,
            resources=c.resources,
            later=c.after_commit,
            current=current,
        )
        result = McastResult(
            group=addr.text,
            created=current is None,
            exclude_ingress=exclude_ingress,
            sources=[known(p, c.links) for p in sorted(all_sources)],
            receivers=[known(p, c.links) for p in sorted(all_receivers)],
            attachments=attachments,
            compiled=c.compiled,
        )
    pairs = [(s, r) for s in all_sources for r in all_receivers if s != r or not exclude_ingress]
    warnings = (
        *path_warnings,
        *c.notes,
        *health.warnings_for(sorted(pairs), c.links),
        # Multi-buffer frames to the group cannot be copied: dropped, counted too big.
        *health.flood_warnings(sorted(all_sources), c.links, c.dp.frags),
    )
    return replace(result, warnings=warnings)


def _group_now(pins: PinDir, addr) -> multicast.GroupState | None:
    with reading(pins) as dp:
        return multicast.read_groups(dp).get(addr) if dp is not None else None


def _is_bus(group: multicast.GroupState | None) -> bool:
    """Whether receivers added to group become sources too: a new group, or a bus."""
    return group is None or group.sources == group.receivers


def _ifindexes(ports: list[Iface], links: dict[int, netdev.Link]) -> list[int]:
    found = []
    for port in dict.fromkeys(ports):
        link = link_of(port, links)
        check_forwardable(link)
        found.append(link.ifindex)
    return found


def multicast_del(
    pins: PinDir,
    group: str,
    receivers: list[Iface] | None = None,
    sources: list[Iface] | None = None,
) -> McastDelResult:
    """Take receivers and sources out of group; with neither, remove the group.

    A group left without sources or receivers is removed; ports that need xdpfwd no
    more are detached. Raises InputError, XdpfwdError (no such group, not a member).
    """
    addr = multicast.parse_group(group)
    prereqs.require_privileges("multicast del")
    no_group = XdpfwdError(
        f"no multicast group {addr.text}; see `{pins.command('multicast list')}`"
    )
    with editing(pins) as c:
        if c is None or c.dp.mcast is None:
            raise no_group
        current = multicast.read_groups(c.dp).get(addr)
        if current is None:
            raise no_group
        whole = not receivers and not sources
        recorded = intent.load(pins)
        receivers = [intent.bind_gone(recorded, p, c.links) for p in receivers or []]
        sources = [intent.bind_gone(recorded, p, c.links) for p in sources or []]
        out_to = _members(current.receivers, receivers, "a receiver", addr)
        out_from = _members(current.sources, sources, "a source", addr)
        keep_to = frozenset() if whole else current.receivers - out_to
        keep_from = frozenset() if whole else current.sources - out_from
        multicast.set_group(
            c.dp,
            addr,
            sources=keep_from,
            receivers=keep_to,
            exclude_ingress=current.exclude_ingress,
            undo=c.undo,
            resources=c.resources,
            later=c.after_commit,
            current=current,
        )
        detached = release_idle(c.dp, c.undo, c.links)
        removed = not keep_to or not keep_from
        return McastDelResult(
            group=addr.text,
            removed=removed,
            sources=[known(p, c.links) for p in sorted(current.sources if whole else out_from)],
            receivers=[known(p, c.links) for p in sorted(current.receivers if whole else out_to)],
            detached=detached,
        )


def _members(have: frozenset[int], named: list[Iface] | None, role: str, addr) -> frozenset:
    for port in named or []:
        if port.ifindex not in have:
            raise XdpfwdError(f"{port.label} is not {role} of multicast group {addr.text}")
    return frozenset(p.ifindex for p in named or [])


def multicast_list(pins: PinDir) -> McastListing:
    """Every multicast group with its sources, receivers and counters."""
    prereqs.require_privileges("multicast list")
    with reading(pins) as dp:
        if dp is None:
            return McastListing(pins.path, True, [])
        return McastListing(
            pins.path, dp.mcast is not None, multicast.group_infos(dp, netdev.links())
        )
