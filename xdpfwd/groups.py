"""Broadcast groups: flood domains of member ports, one devmap per group.

A frame entering a member leaves on every member of its group (with
--exclude-ingress, on every other member): the ingress program finds the group's
devmap through the `groups` map of maps and calls bpf_redirect_map() with
BPF_F_BROADCAST. Groups are pinned as group/<name>, so adding a member is map
updates only. A port forwards (`add`) or is a member of one group, never both.
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack
from dataclasses import replace

from . import doctor, entries, netdev, prereqs
from .bpf import maps
from .bpf import syscall as sc
from .dataplane import Dataplane, reading
from .errors import InputError, XdpfwdError
from .model import BroadcastDelResult, BroadcastResult, GroupInfo, Iface, PairRow
from .pins import PinDir
from .ports import attach, fresh_link, iface, known, map_write, release_idle
from .transaction import Change, Undo, change

DEFAULT_GROUP = "default"
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def check_group_name(name: str) -> None:
    if not _GROUP_NAME.match(name):
        raise InputError(
            f"group name {name!r}: 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )


def _group_ids(dp: Dataplane) -> dict[int, str]:
    """Map id of each group's devmap -> the group's name."""
    ids = {}
    for name in dp.group_names():
        fd = sc.obj_get(dp.group_path(name))
        try:
            ids[sc.map_info(fd).id] = name
        finally:
            os.close(fd)
    return ids


def group_of(dp: Dataplane, port: int, ids: dict[int, str] | None = None) -> str | None:
    """The name of the group port is a member of, if any."""
    map_id = dp.groups.group_id(port)
    if map_id is None:
        return None
    return (ids if ids is not None else _group_ids(dp)).get(map_id, f"map {map_id}")


def _excludes_ingress(dp: Dataplane, members) -> bool:
    """A group's --exclude-ingress, which its members' settings carry."""
    settings = [dp.ports.get(m) for m in members]
    return any(s is not None and s.exclude_ingress for s in settings)


def group_infos(dp: Dataplane, links: dict[int, netdev.Link]) -> list[GroupInfo]:
    infos = []
    pairs = dp.pairs.pairs() if dp.pairs is not None else []
    for name in dp.group_names():
        members = sorted(dp.open_group(name).members())
        exclude = _excludes_ingress(dp, members)
        rows = [
            PairRow(known(i, links), known(e, links), dp.pairs.read(i, e) or maps.EgressStats())
            for i, e in sorted(pairs)
            if i in members and e in members
        ]
        infos.append(
            GroupInfo(name, dp.layout.table, exclude, [known(m, links) for m in members], rows)
        )
    return infos


def _managed_ports(pins: PinDir, group: str) -> list[netdev.Link]:
    """Every port xdpfwd manages that is not in another group (for a bare `broadcast`)."""
    with reading(pins) as dp:
        if dp is None:
            return []
        ids = _group_ids(dp)
        links = netdev.links()
        return [
            links[port]
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
    check_group_name(group)
    convert = members is None
    if convert:
        prereqs.require_privileges()
        links = _managed_ports(pins, group)
        if not links:
            raise InputError("xdpfwd manages no ports yet: name the interfaces to flood between")
    else:
        links = [fresh_link(m) for m in dict.fromkeys(members)]
    for link in links:
        if link.loopback:
            raise InputError(f"{link.ifname} is a loopback device; XDP cannot forward there")
    with change(pins, table, value, dict.fromkeys(links, mode), force) as c:
        dp = c.dp
        ids = _group_ids(dp)
        for link in links:
            _check_may_join(dp, link, group, ids, convert)
        created = group not in dp.group_names()
        if created:
            create(c, group)
        group_map = dp.open_group(group)
        current = set(group_map.members())
        if exclude_ingress is None:
            exclude_ingress = _excludes_ingress(dp, current)
        flags = maps.PORT_BROADCAST | (maps.PORT_EXCLUDE_INGRESS if exclude_ingress else 0)
        attachments = [_join(c, plan, group_map, flags, mode) for plan in c.plans]
        for member in current - {link.ifindex for link in links}:
            _set_flags(c, member, flags)  # the group's flag changes in place
        converted = [iface(link) for link in links if entries.remove(c, link.ifindex)]
        result = BroadcastResult(
            group=group,
            created=created,
            members=[iface(link) for link in links],
            converted=converted,
            attachments=attachments,
            exclude_ingress=exclude_ingress,
            table=c.layout.table,
            compiled=c.compiled,
        )
    everyone = [link.ifindex for link in links] + sorted(current)
    pairs = [(a, b) for a in everyone for b in everyone if a != b]
    return replace(result, warnings=doctor.warnings_for(pairs))


def _check_may_join(
    dp: Dataplane, link: netdev.Link, group: str, ids: dict[int, str], convert: bool
) -> None:
    other = group_of(dp, link.ifindex, ids)
    if other not in (None, group):
        raise XdpfwdError(
            f"{link.ifname} is a member of broadcast group {other}; a port floods in one group "
            f"(`xdpfwd broadcast del {link.ifname}` first)"
        )
    entry = dp.fwd.get(link.ifindex)
    if entry is not None and not convert:
        raise XdpfwdError(
            f"{link.ifname} forwards with `xdpfwd add` (ifindex {entry.egress_ifindex}); a port "
            f"forwards or floods, not both: `xdpfwd del {link.ifname}` first"
        )


def create(c: Change, group: str) -> None:
    directory = c.dp.pins.pin(maps.PIN_GROUP_DIR)
    if not os.path.isdir(directory):
        os.mkdir(directory)
        c.undo.callback(os.rmdir, directory)
    path = c.dp.group_path(group)
    try:
        maps.create_pinned_group(path, group, c.layout.table, c.layout.value_size)
    except OSError as e:
        raise XdpfwdError(f"creating broadcast group {group} failed: {e.strerror}") from e
    c.undo.callback(os.unlink, path)


def _join(c: Change, plan, group_map: maps.GroupMap, flags: int, mode: str):
    dp, port = c.dp, plan.link.ifindex
    previous = dp.ports.get(port)
    on_miss = previous.on_miss if previous else maps.XDP_PASS
    attachment = attach(dp, plan, mode, maps.PortSettings(on_miss, flags), c.undo)
    add_member(dp, group_map, port, c.undo)
    return attachment


def add_member(dp: Dataplane, group_map: maps.GroupMap, port: int, undo: ExitStack) -> None:
    """Put port into the group's devmap and point it at the group (the settings that
    make its ingress program flood are the caller's)."""
    if port not in group_map.members():
        try:
            group_map.add(port, dp.group_prog_fd)
        except OSError as e:
            raise XdpfwdError(
                f"broadcast group is full ({maps.GROUP_MAX_MEMBERS} members): {e.strerror}"
            ) from e
        undo.callback(group_map.remove, port)
    map_id = dp.groups.group_id(port)
    if map_id != group_map.info.id:
        map_write(dp.groups.set, port, group_map.fd)
        if map_id is None:
            undo.callback(dp.groups.delete, port)
        else:
            undo.callback(_point_back, dp, port, map_id)


def _point_back(dp: Dataplane, port: int, map_id: int) -> None:
    fd = sc.map_fd_by_id(map_id)
    try:
        dp.groups.set(port, fd)
    finally:
        os.close(fd)


def remove_member(
    dp: Dataplane, group_map: maps.GroupMap, port: int, undo: ExitStack, resources: ExitStack
) -> None:
    """Take port out of the group, and stop its ingress program flooding."""
    entry = group_map.members()[port]
    # The group's program lives while something holds it: keep an fd for undo.
    prog_fd = sc.prog_fd_by_id(entry.egress_prog_id) if entry.egress_prog_id else 0
    if prog_fd:
        resources.callback(os.close, prog_fd)
    group_map.remove(port)
    undo.callback(group_map.add, port, prog_fd)
    dp.groups.delete(port)
    undo.callback(dp.groups.set, port, group_map.fd)
    settings = dp.ports.get(port)
    if settings is not None and settings.broadcast:
        dp.ports.set(port, maps.PortSettings(settings.on_miss))
        undo.callback(dp.ports.set, port, settings)


def forget_pairs(dp: Dataplane, ports: set[int]) -> None:
    """Drop the pair counters of ports that left their groups."""
    if dp.pairs is not None:
        for ingress, egress in dp.pairs.pairs():
            if ingress in ports or egress in ports:
                dp.pairs.forget(ingress, egress)


def _set_flags(c: Change, port: int, flags: int) -> None:
    previous = c.dp.ports.get(port) or maps.PortSettings()
    if previous.flags != flags:
        map_write(c.dp.ports.set, port, maps.PortSettings(previous.on_miss, flags))
        c.undo.callback(c.dp.ports.set, port, previous)


def broadcast_del(
    pins: PinDir, members: list[Iface], group: str | None = None
) -> BroadcastDelResult:
    """Take members out of their broadcast group (which must be group, if given).

    An emptied group is removed; ports that need xdpfwd no more are detached.
    Raises InputError (bad group name), XdpfwdError (unknown group, not a member).
    """
    if group is not None:
        check_group_name(group)
    prereqs.require_privileges()
    with pins.locked(create=False):
        dp = Dataplane.open(pins)
        if dp is None:
            raise XdpfwdError(f"no broadcast groups in {pins.path}")
        with dp:
            ids = _group_ids(dp)
            if group is not None and group not in dp.group_names():
                raise XdpfwdError(f"no broadcast group {group}; see `xdpfwd list`")
            groups = {}
            for member in dict.fromkeys(members):
                name = group_of(dp, member.ifindex, ids)
                if name is None or (group is not None and name != group):
                    where = f"group {group}" if group else "a broadcast group"
                    raise XdpfwdError(f"{member.label} is not a member of {where}")
                groups[member] = name
            return _leave(dp, groups)


def _leave(dp: Dataplane, groups: dict[Iface, str]) -> BroadcastDelResult:
    with ExitStack() as resources, Undo() as undo:
        for member, name in groups.items():
            remove_member(dp, dp.open_group(name), member.ifindex, undo, resources)
        detached = release_idle(dp, undo)
        undo.commit()
    emptied = dp.remove_empty_groups()
    forget_pairs(dp, {m.ifindex for m in groups})
    return BroadcastDelResult(list(groups), sorted(set(groups.values())), emptied, detached)
