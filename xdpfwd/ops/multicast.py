"""`xdpfwd multicast add/del/list`: groups that replicate frames by their destination
address from source ports to receivers (see state/multicast.py)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev, prereqs
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import Iface, McastDelResult, McastListing, McastResult, McastWaiting
from xdpfwd.state import counters, health, intent, multicast
from xdpfwd.state.changes import change, editing
from xdpfwd.state.config import McastConf
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
        pins,
        table=table,
        value=None,
        attach=dict.fromkeys(from_ports, mode),
        force=force,
        sends_to=to_ports,
        known=links,
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
        _record(c, addr, all_receivers, all_sources, from_ports, exclude_ingress, mode)
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


def _record(c, addr, receivers, sources, named_sources, exclude_ingress: bool, mode: str) -> None:
    """The group as it now runs, in the recorded configuration (which keeps the
    members whose device is gone): prune and follow put a device made again back."""

    def names(ports) -> tuple[str, ...]:
        return tuple(c.links[p].ifname for p in sorted(ports) if p in c.links)

    settings = {p: c.dp.ports.get(p) or maps.PortSettings() for p in named_sources}
    on_miss = {c.links[p].ifname: s.on_miss_name for p, s in settings.items() if p in c.links}
    conf = McastConf(addr.text, names(receivers), names(sources), exclude_ingress)
    intent.update(c, lambda r: intent.with_multicast(r, conf, mode, on_miss))


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
    more are detached. What only the recorded configuration has (a group or member
    whose device is gone, which prune would restore) is forgotten. Raises
    InputError, XdpfwdError (no such group, not a member).
    """
    addr = multicast.parse_group(group)
    prereqs.require_privileges("multicast del")
    no_group = XdpfwdError(
        f"no multicast group {addr.text}; see `{pins.command('multicast list')}`"
    )
    with editing(pins) as c:
        if c is None:
            raise no_group
        recorded = intent.current(c.dp, c.links)
        kept = recorded.multicast(addr.text) if recorded is not None else None
        current = multicast.read_groups(c.dp).get(addr) if c.dp.mcast is not None else None
        if current is None and kept is None:
            raise no_group
        running_to = current.receivers if current else frozenset()
        running_from = current.sources if current else frozenset()
        whole = not receivers and not sources
        recorded_to = kept.receivers if kept else ()
        recorded_from = kept.sources if kept else ()
        if whole:
            out_to = _everyone(running_to, recorded_to, c.links, recorded)
            out_from = _everyone(running_from, recorded_from, c.links, recorded)
        else:
            named_to = [intent.bind_gone(recorded, p, c.links) for p in receivers or []]
            named_from = [intent.bind_gone(recorded, p, c.links) for p in sources or []]
            out_to = _members(running_to, recorded_to, named_to, c, recorded, "a receiver", addr)
            out_from = _members(
                running_from, recorded_from, named_from, c, recorded, "a source", addr
            )
        keep_to = running_to - {p.ifindex for p in out_to}
        keep_from = running_from - {p.ifindex for p in out_from}
        detached: list[Iface] = []
        if current is not None:
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
        to_names = [p.ifname for p in out_to if p.ifname]
        from_names = [p.ifname for p in out_from if p.ifname]
        edit = partial(intent.without_multicast, group=addr.text)
        if not whole:
            edit = partial(edit, receivers=to_names, sources=from_names)
        intent.update(c, edit)
        left = edit(recorded).multicast(addr.text) if recorded is not None else None
        # A member whose device is gone leaves at the end of the change (tidy).
        runs = bool(keep_to & c.links.keys()) and bool(keep_from & c.links.keys())
        kept = left is not None and not runs
        return McastDelResult(
            group=addr.text,
            removed=not runs,
            sources=out_from,
            receivers=out_to,
            detached=detached,
            recorded_only=current is None,
            kept=kept,
            waiting=recorded.gone((*left.receivers, *left.sources), c.links) if kept else [],
        )


def _members(
    running: frozenset[int], members: tuple[str, ...], named: list[Iface], c, recorded, role, addr
) -> list[Iface]:
    """The named ports, each a member that runs or one the record has by name (members;
    its device is gone). Raises XdpfwdError for one that is neither."""
    found = []
    for port in named:
        if port.ifindex in running:
            found.append(port if port.ifname else _named(port.ifindex, c.links, recorded))
        elif port.ifname in members:
            found.append(port)
        else:
            raise XdpfwdError(f"{port.label} is not {role} of multicast group {addr.text}")
    return found


def _everyone(running: frozenset[int], members: tuple[str, ...], links, recorded) -> list[Iface]:
    """Every member: those that run, and those only the record has (members)."""
    ports = [_named(p, links, recorded) for p in sorted(running)]
    names = {p.ifname for p in ports}
    return ports + [Iface(0, name) for name in members if name not in names]


def _named(ifindex: int, links, recorded: intent.Intent | None) -> Iface:
    """A member that runs, by its device's name, or the name the record bound to its
    ifindex when its device is gone."""
    port = known(ifindex, links)
    if port.ifname is None and recorded is not None:
        return Iface(ifindex, recorded.name_of(ifindex))
    return port


def multicast_list(pins: PinDir) -> McastListing:
    """Every multicast group with its sources, receivers and counters, and the groups
    the recorded configuration has that do not run."""
    prereqs.require_privileges("multicast list")
    with reading(pins) as dp:
        if dp is None:
            return McastListing(pins.path, True, [])
        links = netdev.links()
        supported = dp.mcast is not None
        # As stats reads them: copies a receiver's driver dropped are lost, not sent.
        groups = list(counters.snapshot(dp, links).multicast.values())
        recorded = intent.current(dp, links)
    # A group whose receivers' devices are all gone runs, dropping its frames: it
    # waits for them too.
    running = {g.group for g in groups if g.receivers}
    waiting = [
        McastWaiting(
            g.group,
            list(g.receivers),
            list(g.sources),
            recorded.gone((*g.receivers, *g.sources), links),
        )
        for g in (recorded.config.multicast if recorded is not None else ())
        if g.group not in running
    ]
    return McastListing(pins.path, supported, groups, waiting)
