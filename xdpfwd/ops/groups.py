"""`xdpfwd broadcast`: ports join and leave flood domains (see state/groups.py)."""

from __future__ import annotations

from dataclasses import replace

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev, prereqs
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import BroadcastDelResult, BroadcastResult, Iface
from xdpfwd.state import balance, entries, health, intent
from xdpfwd.state.changes import change, editing
from xdpfwd.state.dataplane import Dataplane, reading
from xdpfwd.state.groups import (
    DEFAULT_GROUP,
    add_members,
    check_group_name,
    create,
    excludes_ingress,
    forget_pairs,
    group_ids,
    group_of,
    remove_members,
)
from xdpfwd.state.pins import PinDir
from xdpfwd.state.ports import check_forwardable, iface, known, link_of, map_write, release_idle
from xdpfwd.state.transaction import Change


def _managed_ports(pins: PinDir, group: str, links: dict[int, netdev.Link]) -> list[Iface]:
    """Every port xdpfwd manages that is not in another group (for a bare `broadcast`)."""
    with reading(pins) as dp:
        if dp is None:
            return []
        ids = group_ids(dp)
        return [
            iface(links[port])
            for port in sorted(dp.ports.ifindexes())
            if port in links and group_of(dp, port, ids) in (None, group)
        ]


def broadcast(
    pins: PinDir,
    members: list[Iface] | None,
    *,
    group: str = DEFAULT_GROUP,
    exclude_ingress: bool | None = None,
    table: str | None = None,
    value: str | None = None,
    mode: str = "auto",
    force: bool = False,
) -> BroadcastResult:
    """Make members (every managed port, when None) members of group's flood domain.

    Creates the group if needed. exclude_ingress None keeps the group's setting
    (off for a new group). Without members, ports that forward are turned into
    members (their entries removed); a named port that forwards is refused.
    Raises InputError, XdpfwdError (a forwarding port, another group's member, a
    full group), AttachError, BpfError or PrereqError; on any error nothing changes.
    """
    prereqs.require_privileges("broadcast")
    check_group_name(group)
    links = netdev.links()
    convert = members is None
    if convert:
        members = _managed_ports(pins, group, links)
        if not members:
            raise InputError("xdpfwd manages no ports yet: name the interfaces to flood between")
    joining = [link_of(m, links).ifindex for m in dict.fromkeys(members)]
    for port in joining:
        check_forwardable(links[port])
    with change(
        pins,
        table=table,
        value=value,
        attach=dict.fromkeys(joining, mode),
        force=force,
        known=links,
    ) as c:
        dp = c.dp
        ids = group_ids(dp)
        recorded = intent.current(dp, c.links) or intent.Intent()
        for port in joining:
            _check_may_join(dp, c.links[port], group, ids, convert, c.links)
            _check_no_waiting_entry(dp, recorded, c.links[port], convert, c.links)
        created = group not in dp.group_names()
        current = set() if created else set(dp.open_group(group).members())
        if exclude_ingress is None:
            exclude_ingress = excludes_ingress(dp, current)
        flooding = health.flood_graph(current | set(joining), exclude_ingress)
        path_warnings = health.refuse_paths(dp, c.links, flooding, force)
        if created:
            create(c, group)
        flags = maps.PORT_BROADCAST | (maps.PORT_EXCLUDE_INGRESS if exclude_ingress else 0)
        attachments = [_attach_member(c, plan, flags, mode) for plan in c.plans]
        add_members(c, group, [plan.link.ifindex for plan in c.plans])
        for member in current - set(joining):
            _set_flags(c, member, flags)  # the group's flag changes in place
        converted = [
            known(port, c.links)
            for port in joining
            if entries.remove(c, port) or balance.remove(c, port) is not None
        ]
        _record_members(c, group, joining, exclude_ingress, mode)
        result = BroadcastResult(
            group=group,
            created=created,
            members=[known(port, c.links) for port in joining],
            converted=converted,
            attachments=attachments,
            exclude_ingress=exclude_ingress,
            table=dp.layout.table,
            compiled=c.compiled,
        )
    everyone = joining + sorted(current - set(joining))
    pairs = [(a, b) for a in everyone for b in everyone if a != b]
    warnings = (
        *path_warnings,
        *c.notes,
        *health.warnings_for(pairs, c.links),
        *health.flood_warnings(everyone, c.links, dp.frags),
    )
    return replace(result, warnings=warnings)


def _check_may_join(
    dp: Dataplane,
    link: netdev.Link,
    group: str,
    ids: dict[int, str],
    convert: bool,
    links: dict[int, netdev.Link],
) -> None:
    other = group_of(dp, link.ifindex, ids)
    if other not in (None, group):
        raise XdpfwdError(
            f"{link.ifname} is a member of broadcast group {other}; a port floods in one group "
            f"(`{dp.pins.command(f'broadcast del {link.ifname}')}` first)"
        )
    entry = dp.fwd.get(link.ifindex)
    if entry is not None and not convert:
        egress = known(entry.egress_ifindex, links).label
        raise XdpfwdError(
            f"{link.ifname} forwards to {egress} (`xdpfwd add`); a port forwards or floods, "
            f"not both: `{dp.pins.command(f'del {link.ifname}')}` first"
        )
    if balance.hash_of(dp, link.ifindex) and not convert:
        raise XdpfwdError(
            f"{link.ifname} has a balanced entry (`xdpfwd add`); a port forwards or floods, "
            f"not both: `{dp.pins.command(f'del {link.ifname}')}` first"
        )


def _check_no_waiting_entry(
    dp: Dataplane,
    recorded: intent.Intent,
    link: netdev.Link,
    convert: bool,
    links: dict[int, netdev.Link],
) -> None:
    """Refuse, as _check_may_join() a running entry, a port whose recorded entry
    waits for its egress device: joining would forget it."""
    egress = recorded.gone_egress(link.ifname, links)
    if egress is not None and not convert:
        raise XdpfwdError(
            f"{link.ifname} forwards to {egress} (`xdpfwd add`; the entry waits for {egress}'s "
            "device, as the recorded configuration keeps it); a port forwards or floods, not "
            f"both: `{dp.pins.command(f'del {link.ifname}')}` first"
        )


def _record_members(c: Change, group: str, ports: list[int], exclude: bool, mode: str) -> None:
    """What broadcast asked for, in the recorded configuration."""
    names = [c.links[port].ifname for port in ports]
    verdicts = {c.links[port].ifname: c.dp.ports.get(port).on_miss_name for port in ports}
    intent.update(c, lambda r: intent.with_members(r, group, names, exclude, mode, verdicts))


def _attach_member(c: Change, plan, flags: int, mode: str):
    """Attach a joining port with settings that make it flood (its group's devmap
    is add_members()'s)."""
    previous = c.dp.ports.get(plan.link.ifindex)
    on_miss = previous.on_miss if previous else maps.XDP_PASS
    return c.attach(plan, mode, maps.PortSettings(on_miss, flags))


def _set_flags(c: Change, port: int, flags: int) -> None:
    previous = c.dp.ports.get(port) or maps.PortSettings()
    if previous.flags != flags:
        c.undo.callback(c.dp.ports.set, port, previous)  # first: see ports.attach()
        map_write(c.dp.ports.set, port, maps.PortSettings(previous.on_miss, flags))


def broadcast_del(
    pins: PinDir, members: list[Iface], group: str | None = None
) -> BroadcastDelResult:
    """Take members out of their broadcast group (which must be group, if given).

    An emptied group is removed; ports that need xdpfwd no more are detached.
    Raises InputError (bad group name), XdpfwdError (unknown group, not a member).
    """
    prereqs.require_privileges("broadcast del")
    if group is not None:
        check_group_name(group)
    with editing(pins) as c:
        if c is None:
            raise XdpfwdError(f"no broadcast groups in {pins.path}")
        ids = group_ids(c.dp)
        recorded = intent.current(c.dp, c.links)
        members = [intent.bind_gone(recorded, m, c.links) for m in members]
        known_groups = {g.name for g in recorded.config.groups} if recorded else set()
        if group is not None and group not in {*c.dp.group_names(), *known_groups}:
            raise XdpfwdError(f"no broadcast group {group}; see `{pins.command('list')}`")
        groups, forgotten = {}, []
        for member in dict.fromkeys(members):
            name = group_of(c.dp, member.ifindex, ids)
            if name is None and recorded is not None:
                # A membership only recorded (its device was made again): forgotten.
                name = recorded.group_of(member.ifname or "")
                if name is not None and group in (None, name):
                    forgotten.append(member)
                    continue
            if name is None or (group is not None and name != group):
                where = f"group {group}" if group else "a broadcast group"
                raise XdpfwdError(f"{member.label} is not a member of {where}")
            groups[member] = name
        names = [m.ifname for m in forgotten if m.ifname]
        if names:
            intent.update(c, lambda r: intent.without_members(r, names))
        return replace(_leave(c, groups), forgotten=forgotten)


def _leave(c: Change, groups: dict[Iface, str]) -> BroadcastDelResult:
    dp = c.dp
    leaving: dict[str, list[int]] = {}
    for member, name in groups.items():
        leaving.setdefault(name, []).append(member.ifindex)
    for name, ports in leaving.items():
        remove_members(c, name, ports)
    for member in groups:
        settings = dp.ports.get(member.ifindex)
        if settings is not None and settings.flags:
            _set_flags(c, member.ifindex, 0)  # it floods no more
    detached = release_idle(dp, c.undo, c.links)
    c.after_commit.append(lambda: forget_pairs(c, {m.ifindex for m in groups}))
    recorded = intent.current(dp, c.links)
    names = [m.ifname or (recorded.name_of(m.ifindex) if recorded else None) for m in groups]
    intent.update(c, lambda r: intent.without_members(r, [n for n in names if n]))
    emptied = [name for name in set(groups.values()) if not dp.open_group(name).members()]
    return BroadcastDelResult(list(groups), sorted(set(groups.values())), sorted(emptied), detached)
