"""Broadcast groups: flood domains of member ports, one devmap per group.

A frame entering a member leaves on every member of its group (with
--exclude-ingress, on every other member): the ingress program finds the group's
devmap through the `groups` map of maps and calls bpf_redirect_map() with
BPF_F_BROADCAST. Groups are pinned as group/<name>, so adding a member is map
updates only. A port forwards (`add`) or is a member of one group, never both.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import GROUP_NAME, GroupInfo, PairRow
from xdpfwd.state.dataplane import Dataplane, hold_program
from xdpfwd.state.ports import known, map_write
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
    for name in dp.group_names():
        members = sorted(dp.open_group(name).members())
        exclude = excludes_ingress(dp, members)
        rows = [
            PairRow(known(i, links), known(e, links), dp.pairs.read(i, e) or maps.EgressStats())
            for i, e in sorted(pairs)
            if i in members and e in members
        ]
        infos.append(
            GroupInfo(name, dp.layout.table, exclude, [known(m, links) for m in members], rows)
        )
    return infos


def create(c: Change, group: str) -> None:
    directory = c.dp.pins.pin(maps.PIN_GROUP_DIR)
    if not os.path.isdir(directory):
        os.mkdir(directory)
        c.undo.callback(os.rmdir, directory)
    path = c.dp.group_path(group)
    try:
        layout = c.dp.layout
        maps.create_pinned_group(path, group, layout.table, layout.value_size)
    except OSError as e:
        raise XdpfwdError(f"creating broadcast group {group} failed: {e.strerror}") from e
    c.undo.callback(os.unlink, path)


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
    """Take port out of the group. Its settings (whether its ingress program floods)
    are the caller's: a port moving to another group keeps flooding."""
    entry = group_map.members()[port]
    prog_fd = hold_program(resources, entry.egress_prog_id)
    group_map.remove(port)
    undo.callback(group_map.add, port, prog_fd)
    dp.groups.delete(port)
    undo.callback(dp.groups.set, port, group_map.fd)


def forget_pairs(dp: Dataplane, ports: set[int]) -> None:
    """Drop the pair counters of ports that left their groups."""
    if dp.pairs is not None:
        for ingress, egress in dp.pairs.pairs():
            if ingress in ports or egress in ports:
                dp.pairs.forget(ingress, egress)
