"""Broadcast groups: flood domains of member ports, one devmap per group.

A frame entering a member leaves on every member of its group (with
--exclude-ingress, on every other member): the ingress program finds the group's
devmap through the `groups` map of maps and calls bpf_redirect_map() with
BPF_F_BROADCAST. Groups are pinned as group/<name>; a change of members swaps in a
devmap sized to them. A port forwards (`add`) or is a member of one group, never
both.
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import replace

from xdpfwd.errors import BpfError, InputError, XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import GROUP_NAME, GroupInfo, PairRow
from xdpfwd.model.counters import pair_retirement
from xdpfwd.state.dataplane import Dataplane
from xdpfwd.state.ports import copies_counted, known, map_write
from xdpfwd.state.transaction import Change

DEFAULT_GROUP = "default"


def check_group_name(name: str) -> None:
    if not GROUP_NAME.match(name):
        raise InputError(
            f"group name {name!r}: 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )


def group_ids(dp: Dataplane) -> dict[int, str]:
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
    return (ids if ids is not None else group_ids(dp)).get(map_id, f"map {map_id}")


def excludes_ingress(dp: Dataplane, members) -> bool:
    """A group's --exclude-ingress, which its members' settings carry."""
    settings = [dp.ports.get(m) for m in members]
    return any(s is not None and s.exclude_ingress for s in settings)


def group_infos(dp: Dataplane, links: dict[int, netdev.Link]) -> list[GroupInfo]:
    infos = []
    pairs = dp.pairs.pairs() if dp.pairs is not None else []
    # A pair whose driver dropped every copy so far has transmit drops and no count.
    if dp.tx_events is not None:
        pairs = list(dict.fromkeys([*pairs, *dp.tx_events.pairs()]))
    # The kernel took members whose device was deleted out of their devmap; the map of
    # groups still points them at it, and their pairs count on until prune.
    gone = [p for p in dp.ports.ifindexes() if links.get(p) is None]
    for name in dp.group_names():
        devmap = dp.open_group(name)
        members = sorted(devmap.members())
        exclude = excludes_ingress(dp, members)
        counted = {*members, *(p for p in gone if dp.groups.group_id(p) == devmap.info.id)}
        rows = [
            PairRow(known(i, links), known(e, links), _pair_counts(dp, i, e))
            for i, e in sorted(pairs)
            if i in counted and e in counted
        ]
        infos.append(
            GroupInfo(name, dp.layout.table, exclude, [known(m, links) for m in members], rows)
        )
    return infos


def _pair_counts(dp: Dataplane, ingress: int, egress: int) -> maps.EgressStats:
    counted = dp.pairs.read(ingress, egress) if dp.pairs is not None else None
    return counted or maps.EgressStats()


def forget_unpinned(c: Change, port: int) -> None:
    """Take port out of the map of groups, where it points at a devmap that no pin
    holds (Dataplane.unpinned_members): nothing else names that devmap, so it would
    flood through it for ever."""
    devmap = sc.map_fd_by_id(c.dp.groups.group_id(port))  # held: the undo puts it back
    c.resources.callback(os.close, devmap)
    c.dp.groups.delete(port)
    c.undo.callback(c.dp.groups.set, port, devmap)


def create(c: Change, group: str) -> None:
    """Pin an empty devmap for group; add_members() fills it."""
    foreign = c.dp.foreign_at(group)
    if foreign is not None:
        raise InputError(
            f"{foreign} holds something xdpfwd did not make: group {group} cannot be made "
            "there; choose another group name"
        )
    directory = c.dp.pins.pin(maps.PIN_GROUP_DIR)
    if not os.path.isdir(directory):
        os.mkdir(directory)
        c.undo.callback(os.rmdir, directory)
    path = c.dp.group_path(group)
    devmap = _sized_devmap(c, group, [])
    try:
        sc.obj_pin(devmap.fd, path)
    except OSError as e:
        raise XdpfwdError(f"creating broadcast group {group} failed: {e.strerror}") from e
    c.undo.callback(os.unlink, path)


def add_members(c: Change, group: str, ports: list[int]) -> None:
    """Put ports into the group's devmap, all in one swap, and point each at the group
    (the settings that make their ingress programs flood are the caller's)."""
    devmap = c.dp.open_group(group)
    members = list(devmap.members())
    joining = [port for port in dict.fromkeys(ports) if port not in members]
    if len(members) + len(joining) > maps.GROUP_MAX_MEMBERS:
        raise XdpfwdError(f"broadcast group {group} is full ({maps.GROUP_MAX_MEMBERS} members)")
    if joining:
        _resize(c, group, members + joining)  # points every member at the new devmap
        return
    for port in ports:
        if c.dp.groups.group_id(port) != devmap.info.id:
            _point(c, port, devmap.fd)


def remove_members(c: Change, group: str, ports: list[int]) -> None:
    """Take ports out of the group, in one swap. Their settings (whether their ingress
    programs flood) are the caller's: a port moving to another group keeps flooding.
    A group left without members is unpinned when the change commits."""
    if group in c.dp.group_names():
        leaving = set(ports)
        staying = [m for m in c.dp.open_group(group).members() if m not in leaving]
        _resize(c, group, staying)
        if not staying:
            c.emptied.add(group)  # the command's doing, not deleted devices'

    # else group_of() named an unpinned devmap ("map ID"): only the pointers go.
    for port in ports:
        map_id = c.dp.groups.group_id(port)
        if map_id is not None:
            c.undo.callback(_point_back, c.dp, port, map_id)  # first: see _point()
            c.dp.groups.delete(port)


def _sized_devmap(c: Change, group: str, members: list[int]) -> maps.GroupMap:
    layout = c.dp.layout
    # No egress program: the tracepoint counts each pair's copies (xdpfwd_trace.c),
    # but in pin dirs made before (they have no slots) the pinned tracepoint program
    # does not, and the members keep the counting egress program.
    prog_fd = 0 if c.dp.fwd.slots is not None else c.dp.group_prog_fd
    try:
        devmap = maps.create_sized_devmap(
            layout.table, layout.value_size, members, prog_fd, _object_name(group)
        )
    except OSError as e:
        raise BpfError(f"creating broadcast group {group}'s devmap failed: {e.strerror}") from e
    c.resources.callback(devmap.close)
    return devmap


def _object_name(group: str) -> str:
    """The devmap's kernel object name: `xg_` and the group's name, where the kernel
    takes letters, digits, '_' and '.' only (group names may hold '-')."""
    return "xg_" + group.replace("-", "_")


def _resize(c: Change, group: str, members: list[int]) -> None:
    """Swap in a devmap holding exactly members, sized to them (a broadcast walks
    every slot of its devmap for each frame), and point each member at it. The old
    devmap floods the members still pointing at it meanwhile: each frame goes to
    one group or the other, whole."""
    path = c.dp.group_path(group)
    foreign = c.dp.foreign_at(group)
    if foreign is not None:
        raise InputError(
            f"{foreign} holds something xdpfwd did not make: group {group} cannot change"
        )
    old = c.dp.open_group(group)
    devmap = _sized_devmap(c, group, members)
    _replace_pin(path, devmap.fd)
    c.undo.callback(_replace_pin, path, old.fd)
    # (c.links has the modes of the ports this change attached: no netlink read.)
    counts = {port: copies_counted(c.links.get(port), len(members)) for port in members}
    shrinks = len(members) < len(old.members())
    # Each member's count and its devmap change one after the other, the smaller first:
    # a frame flooded between them makes more copies than counted, never fewer (which
    # would be said lost). Growing, that is an RCU grace period: the kernel returns
    # from an update of a map of maps only once the programs that could hold the old
    # devmap are done (synchronize_rcu, 5-16 ms here), frames flooding the new one.
    for port in members:
        if shrinks:
            _count_members(c, port, counts[port])
        _point(c, port, devmap.fd)
        if not shrinks:
            _count_members(c, port, counts[port])


def _count_members(c: Change, port: int, members: int) -> None:
    """Tell a member how many its group has (0 in generic mode: copies_counted): its
    program counts the copies each of its floods should make."""
    previous = c.dp.ports.get(port)
    if previous is not None and previous.members != members:
        c.undo.callback(c.dp.ports.set, port, previous)  # first: see _point()
        map_write(c.dp.ports.set, port, replace(previous, members=members))


def _point(c: Change, port: int, group_fd: int) -> None:
    map_id = c.dp.groups.group_id(port)
    # The undo first: the write to the map and its slot copy may fail half-way.
    if map_id is None:
        c.undo.callback(c.dp.groups.delete, port)
    else:
        c.undo.callback(_point_back, c.dp, port, map_id)
    map_write(c.dp.groups.set, port, group_fd)


def _replace_pin(path: str, fd: int) -> None:
    """Pin fd at path in place of what is pinned there, in one rename."""
    head, name = os.path.split(path)
    swap = os.path.join(head, f"_{name}")  # not a group name: those start otherwise
    with suppress(FileNotFoundError):
        os.unlink(swap)  # left by a crash between its pin and its rename
    try:
        sc.obj_pin(fd, swap)
        os.rename(swap, path)
    except OSError as e:
        with suppress(FileNotFoundError):
            os.unlink(swap)
        raise BpfError(f"replacing {path} failed: {e.strerror}") from e


def _point_back(dp: Dataplane, port: int, map_id: int) -> None:
    fd = sc.map_fd_by_id(map_id)
    try:
        dp.groups.set(port, fd)
    finally:
        os.close(fd)


def forget_pairs(c: Change, ports: set[int]) -> None:
    """Drop the pair counters of ports that left their groups, keeping what each had
    counted up to then in the retired counts (a reading taken when the change began
    would miss the copies of the time it took, under traffic)."""
    dp = c.dp
    if dp.pairs is None:
        return
    for ingress, egress in dp.pairs.pairs():
        if ingress in ports or egress in ports:
            last = dp.pairs.read(ingress, egress)
            dp.pairs.forget(ingress, egress)
            c.retired_pairs.add((ingress, egress))
            if last is not None and dp.retired is not None:
                for port, counts in pair_retirement(ingress, egress, last):
                    dp.retired.set_port(port, dp.retired.port(port).plus(counts))
