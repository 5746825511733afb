"""The configuration last asked for, by device name, kept in the pins: what `follow`,
`prune` and `apply` bring the running state back to when devices come and go.

Every command that changes what is wanted (add, del, broadcast, multicast, apply) records it
inside its change, so it is undone with the change. The record also keeps the
bucket layout of each balanced entry and the ifindex each name was last bound to.
Pins set up by an older xdpfwd have no record until the next `apply`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Protocol

from xdpfwd.errors import BpfError, InputError, PrereqError
from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import Iface
from xdpfwd.state import buckets, config
from xdpfwd.state.config import BalancedConf, Config, EntryConf, GroupConf, McastConf, PortConf
from xdpfwd.state.dataplane import Dataplane
from xdpfwd.state.pins import PinDir

log = logging.getLogger(__name__)

VERSION = 1


class Change(Protocol):
    """What recording needs of a transaction.Change (not imported: releasing ports
    after a change reads the record)."""

    dp: Dataplane
    undo: ExitStack
    resources: ExitStack
    links: dict[int, netdev.Link]


@dataclass(frozen=True)
class Intent:
    config: Config = field(default_factory=Config)
    layouts: dict[str, buckets.Layout] = field(default_factory=dict)  # balanced ingress ->
    bound: dict[str, int] = field(default_factory=dict)  # name -> ifindex last bound

    def group_of(self, name: str) -> str | None:
        """The broadcast group port name is recorded in, if any."""
        return next((g.name for g in self.config.groups if name in g.members), None)

    def balanced(self, name: str) -> BalancedConf | None:
        return next((e for e in self.config.balanced if e.ingress == name), None)

    def layout(self, entry: BalancedConf) -> buckets.Layout:
        """The entry's recorded layout, or a fresh one if none fits its ports."""
        layout = self.layouts.get(entry.ingress)
        if layout is None or set(buckets.counts(layout)) - set(entry.ports):
            return buckets.fresh(entry.weight_map())
        return layout

    def recorded_layouts(self) -> dict[str, tuple[dict[str, int], buckets.Layout]]:
        """Balanced ingress -> (weights, layout), as buckets.choose() takes them."""
        return {e.ingress: (e.weight_map(), self.layout(e)) for e in self.config.balanced}

    def multicast(self, group: str) -> McastConf | None:
        """The recorded multicast group of address group (as xdpfwd writes it)."""
        return next((g for g in self.config.multicast if g.group == group), None)

    def name_of(self, ifindex: int) -> str | None:
        return next((name for name, bound in self.bound.items() if bound == ifindex), None)

    def gone(self, names: Iterable[str], links: dict[int, netdev.Link]) -> list[str]:
        """Those of names whose device is gone: no device has the name, nor the ifindex
        it was last bound to (a device renamed since is not gone)."""
        here = {link.ifname for link in links.values()}
        here |= {name for name, ifindex in self.bound.items() if ifindex in links}
        return [name for name in dict.fromkeys(names) if name not in here]

    def knows(self, name: str) -> bool:
        return name in self.bound or name in _names(self.config)

    def gone_egress(self, ingress: str, links: dict[int, netdev.Link]) -> str | None:
        """The egress of ingress's recorded entry, when its device is gone (the kernel
        took the entry with it)."""
        entry = next((e for e in self.config.forward if e.ingress == ingress), None)
        return entry.egress if entry is not None and self.gone((entry.egress,), links) else None

    def dropping_while_waiting(self, links: dict[int, netdev.Link]) -> set[str]:
        """The ingress ports of recorded entries whose egress device is gone, asked to
        drop what misses: they stay attached while their entry waits, since detached
        they would hand what they were told to drop to this host's stack."""
        return {
            entry.ingress
            for entry in self.config.forward
            if self.config.ports.get(entry.ingress, PortConf()).on_miss == "drop"
            and self.gone_egress(entry.ingress, links)
            and not self.gone((entry.ingress,), links)
        }


def reused(
    recorded: Intent | None, ports: Iterable[int], links: dict[int, netdev.Link], prog_id: int
) -> dict[int, str]:
    """Ports whose ifindex another device has now -> the name recorded for it: the
    device does not run the pin dir's program and has another name than the one the
    record bound to that ifindex (the kernel gave a deleted device's ifindex to a new
    one, or one moved in from another namespace kept its own). A port renamed in
    place keeps the program; without a record nothing can be told."""
    found = {}
    for port in ports:
        link = links.get(port)
        name = recorded.name_of(port) if recorded is not None else None
        if link is not None and link.xdp_prog_id != prog_id and name not in (None, link.ifname):
            found[port] = name
    return found


def bind_gone(recorded: Intent | None, port: Iface, links: dict[int, netdev.Link]) -> Iface:
    """port, named on the command line after its device was deleted (ifindex 0), with
    the ifindex its name was last bound to, if no device has that ifindex now (0 if
    one has). Raises InputError when the recorded configuration never knew the name."""
    if port.ifindex or port.ifname is None:
        return port
    if recorded is None or not recorded.knows(port.ifname):
        raise InputError(f"no such interface: {port.ifname}")
    ifindex = recorded.bound.get(port.ifname, 0)
    return Iface(0 if ifindex in links else ifindex, port.ifname)


def to_text(intent: Intent) -> str:
    layouts = {}
    for entry in intent.config.balanced:
        if entry.ingress in intent.layouts:
            layouts[entry.ingress] = buckets.encode(intent.layouts[entry.ingress], entry.ports)
    doc = {
        "version": VERSION,
        "config": config.to_dict(intent.config),
        "layouts": layouts,
        "bound": intent.bound,
    }
    return json.dumps(doc, separators=(",", ":"))


def from_text(text: str) -> Intent:
    """Raises ValueError (config.ConfigError included) for a record this xdpfwd
    cannot read."""
    doc = json.loads(text)
    if doc.get("version") != VERSION:
        raise ValueError(f"recorded configuration version {doc.get('version')!r}")
    wanted = config.parse(json.dumps(doc["config"]), "recorded configuration", check_files=False)
    layouts = {}
    for entry in wanted.balanced:
        layout = buckets.decode(doc.get("layouts", {}).get(entry.ingress, ""), entry.ports)
        if layout is not None:
            layouts[entry.ingress] = layout
    bound = {str(k): int(v) for k, v in doc.get("bound", {}).items()}
    return Intent(wanted, layouts, bound)


def _open(pins: PinDir) -> maps.IntentStore | None:
    try:
        return maps.IntentStore(pins.pin(maps.PIN_INTENT))
    except FileNotFoundError:
        return None


def load(pins: PinDir) -> Intent | None:
    """The recorded configuration; None when there is none (or it is unreadable,
    which is logged). Call with the pin directory locked."""
    store = _open(pins)
    if store is None:
        return None
    try:
        raw = store.read()
    finally:
        store.close()
    if raw is None:
        return Intent()
    try:
        return from_text(raw.decode())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        log.warning("the recorded configuration in %s is unreadable (%s); ignored", pins.path, e)
        return None


def dropping_while_waiting(pins: PinDir, links: dict[int, netdev.Link]) -> set[int]:
    """Intent.dropping_while_waiting() of the record, by ifindex (a device renamed
    since by the one its name was last bound to)."""
    recorded = load(pins)
    if recorded is None:
        return set()
    return _ifindexes(recorded, recorded.dropping_while_waiting(links), links)


def balanced_ports(pins: PinDir, links: dict[int, netdev.Link]) -> set[int]:
    """The ports of the recorded balanced entries, by ifindex: one that is down holds
    no bucket, and stays a port of its entry."""
    recorded = load(pins)
    if recorded is None:
        return set()
    names = {name for entry in recorded.config.balanced for name in entry.ports}
    return _ifindexes(recorded, names, links)


def current(dp: Dataplane, links: dict[int, netdev.Link]) -> Intent | None:
    """The record, with the names of devices renamed since (following_renames)."""
    recorded = load(dp.pins)
    return following_renames(recorded, dp, links)[0] if recorded is not None else None


def following_renames(
    recorded: Intent, dp: Dataplane, links: dict[int, netdev.Link]
) -> tuple[Intent, dict[str, str]]:
    """The record with the names of devices renamed since, and those renames (old ->
    new). A recorded name was renamed when the device its name was last bound to has
    another name now and is the same device still: it runs the pin dir's program, or
    an entry, bucket or multicast group sends to it (the kernel takes those out when a
    device goes, so no other device can have come by them). That device, not one
    made under the old name since, is the port. Its new name must be one the record
    does not know, or one renamed away in the same go (two names swapped)."""
    known = _names(recorded.config)
    renamed = {
        old: links[ifindex].ifname
        for old, ifindex in recorded.bound.items()
        if old in known and ifindex in links and links[ifindex].ifname != old
    }
    if not renamed:  # (the common case: no map is read for proof)
        return recorded, {}
    held = _held(dp, links)
    renames = {old: new for old, new in renamed.items() if recorded.bound[old] in held}
    new_names = list(renames.values())
    renames = {
        old: new
        for old, new in renames.items()
        if (new not in known or new in renames) and new_names.count(new) == 1
    }
    if not renames:
        return recorded, {}
    layouts = {
        renames.get(ingress, ingress): tuple(renames.get(n, n) if n else None for n in layout)
        for ingress, layout in recorded.layouts.items()
    }
    bound = {renames.get(name, name): ifindex for name, ifindex in recorded.bound.items()}
    return Intent(config.renamed(recorded.config, renames), layouts, bound), renames


def _held(dp: Dataplane, links: dict[int, netdev.Link]) -> set[int]:
    """The devices here that are the pin dir's ports or that it sends to."""
    held = {p for p, link in links.items() if link.xdp_prog_id == dp.prog_id}
    for port in dp.ports.ifindexes():
        entry = dp.fwd.get(port)
        held |= {entry.egress_ifindex} if entry else set()
        if dp.balance is not None and dp.balance.get(port) is not None:
            held |= {e.egress_ifindex for e in dp.buckets.table(port) if e is not None}
    if dp.mcast is not None:
        try:
            held |= dp.mcast.receivers()
        except PrereqError:  # (without CAP_SYS_ADMIN: what only they show is not followed)
            pass
    return held & set(links)


def _ifindexes(recorded: Intent, names: Iterable[str], links: dict[int, netdev.Link]) -> set[int]:
    """The devices of names: by name, or by the ifindex a name was last bound to (a
    device renamed since)."""
    by_name = {link.ifname: ifindex for ifindex, link in links.items()}
    found = {by_name.get(name, recorded.bound.get(name)) for name in names}
    return found & set(links)


def store(c: Change, intent: Intent, create: bool = False) -> None:
    """Record intent within the change (undone with it). Without create, pins that
    have no record yet keep having none. Raises BpfError."""
    pins = c.dp.pins
    handle = _open(pins)
    try:
        if handle is None:
            if not create:
                return
            maps.create_pinned_intent(pins.pin(maps.PIN_INTENT))
            c.undo.callback(os.unlink, pins.pin(maps.PIN_INTENT))
            handle = maps.IntentStore(pins.pin(maps.PIN_INTENT))
        c.resources.callback(handle.close)
        previous = handle.read()
        handle.write(to_text(intent).encode())
    except OSError as e:
        raise BpfError(f"recording the configuration in {pins.path} failed: {e.strerror}") from e
    if previous is not None:
        c.undo.callback(handle.write, previous)


def update(c: Change, edit: Callable[[Intent], Intent]) -> None:
    """Record edit(the recorded configuration) within the change, with the names the
    change's links now have bound; nothing when there is no record."""
    current = load(c.dp.pins)
    if current is not None:
        current, _ = following_renames(current, c.dp, c.links)
        store(c, bind(edit(current), c.links))


def bind(intent: Intent, links: dict[int, netdev.Link]) -> Intent:
    """The record with the ifindex of every name it has that a device now has."""
    names = _names(intent.config)
    bound = {name: ifindex for name, ifindex in intent.bound.items() if name in names}
    bound.update({link.ifname: link.ifindex for link in links.values() if link.ifname in names})
    # A device has one name: an older one bound to it (renamed to another recorded
    # name, which binds it now) is gone.
    stale = {n for n, i in bound.items() if i in links and bound.get(links[i].ifname) == i}
    stale -= {links[i].ifname for i in links}
    return replace(intent, bound={n: i for n, i in bound.items() if n not in stale})


def _names(wanted: Config) -> set[str]:
    names = {e.ingress for e in wanted.forward} | {e.egress for e in wanted.forward}
    for entry in wanted.balanced:
        names |= {entry.ingress, *entry.ports}
    names |= {m for g in wanted.groups for m in g.members} | set(wanted.ports)
    for group in wanted.multicast:
        names |= {*group.receivers, *group.sources}
    return names


def _sources(wanted: Config) -> set[str]:
    return {name for group in wanted.multicast for name in group.sources}


# --- edits: what each command asks for ---------------------------------------------------


def _without_roles(wanted: Config, names: Iterable[str]) -> Config:
    """wanted with names forwarding nowhere and in no broadcast group (an emptied
    group goes), and without their port settings (a port without a role is not
    attached), unless a name stays a multicast source: that role is independent."""
    names = set(names)
    groups = []
    for group in wanted.groups:
        members = tuple(m for m in group.members if m not in names)
        if members:
            groups.append(replace(group, members=members))
    return replace(
        wanted,
        forward=tuple(e for e in wanted.forward if e.ingress not in names),
        balanced=tuple(e for e in wanted.balanced if e.ingress not in names),
        groups=tuple(groups),
        ports={
            name: conf
            for name, conf in wanted.ports.items()
            if name not in names or name in _sources(wanted)
        },
    )


def _with_port(wanted: Config, before: Config, name: str, mode: str, on_miss: str) -> Config:
    """wanted with name's port settings: mode (auto keeps the one before), on_miss."""
    old = before.ports.get(name, PortConf())
    ports = {**wanted.ports, name: PortConf(mode if mode != "auto" else old.mode, on_miss)}
    return replace(wanted, ports=ports)


def with_entries(
    intent: Intent, entries: list[EntryConf], mode: str, on_miss: dict[str, str]
) -> Intent:
    """`add`: each entry's ingress forwards to its egress, and nothing else."""
    wanted = _without_roles(intent.config, [e.ingress for e in entries])
    wanted = replace(wanted, forward=(*wanted.forward, *entries))
    for entry in entries:
        wanted = _with_port(wanted, intent.config, entry.ingress, mode, on_miss[entry.ingress])
    layouts = {k: v for k, v in intent.layouts.items() if k not in on_miss}
    return replace(intent, config=wanted, layouts=layouts)


def with_balanced(
    intent: Intent, entry: BalancedConf, layout: buckets.Layout, mode: str, on_miss: str
) -> Intent:
    """`add` with several egress ports: ingress balances over them, and nothing else."""
    wanted = _without_roles(intent.config, [entry.ingress])
    wanted = replace(wanted, balanced=(*wanted.balanced, entry))
    wanted = _with_port(wanted, intent.config, entry.ingress, mode, on_miss)
    return replace(intent, config=wanted, layouts={**intent.layouts, entry.ingress: layout})


def without_entry(intent: Intent, ingress: str) -> Intent:
    """`del`: ingress forwards nowhere."""
    layouts = {k: v for k, v in intent.layouts.items() if k != ingress}
    return replace(intent, config=_without_roles(intent.config, [ingress]), layouts=layouts)


def with_members(
    intent: Intent,
    group: str,
    members: list[str],
    exclude_ingress: bool,
    mode: str,
    on_miss: dict[str, str],
) -> Intent:
    """`broadcast`: members flood in group (and do nothing else)."""
    wanted = _without_roles(intent.config, members)
    groups = list(wanted.groups)
    index = next((i for i, g in enumerate(groups) if g.name == group), None)
    if index is None:
        groups.append(GroupConf(group, exclude_ingress, tuple(members)))
    else:
        old = groups[index]
        joined = (*old.members, *(m for m in members if m not in old.members))
        groups[index] = replace(old, exclude_ingress=exclude_ingress, members=joined)
    wanted = replace(wanted, groups=tuple(groups))
    for name in members:
        wanted = _with_port(wanted, intent.config, name, mode, on_miss[name])
    layouts = {k: v for k, v in intent.layouts.items() if k not in members}
    return replace(intent, config=wanted, layouts=layouts)


def without_members(intent: Intent, members: list[str]) -> Intent:
    """`broadcast del`: members leave their groups."""
    return replace(intent, config=_without_roles(intent.config, members))


def with_multicast(intent: Intent, group: McastConf, mode: str, on_miss: dict[str, str]) -> Intent:
    """`multicast add`: group's receivers and sources join it (recorded ones that
    do not run, their device gone, stay); on_miss holds the settings of each source."""
    wanted = intent.config
    old = intent.multicast(group.group)
    if old is not None:
        group = replace(
            group,
            receivers=tuple(dict.fromkeys((*old.receivers, *group.receivers))),
            sources=tuple(dict.fromkeys((*old.sources, *group.sources))),
        )
    group = replace(group, line=0)
    groups = [group if g.group == group.group else g for g in wanted.multicast]
    wanted = replace(wanted, multicast=tuple(groups if old is not None else [*groups, group]))
    for name in group.sources:
        if name in on_miss:
            wanted = _with_port(wanted, intent.config, name, mode, on_miss[name])
    return replace(intent, config=wanted)


def without_multicast(
    intent: Intent,
    group: str,
    receivers: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
) -> Intent:
    """`multicast del`: receivers and sources leave group; with neither given, or
    left without one or the other, the group goes. A source left without a role
    loses its port settings."""
    wanted = intent.config
    old = intent.multicast(group)
    if old is None:
        return intent
    whole = receivers is None and sources is None
    receivers, sources = set(receivers or ()), set(sources or ())
    kept = [g for g in wanted.multicast if g.group != group]
    if not whole:
        left = replace(
            old,
            receivers=tuple(n for n in old.receivers if n not in receivers),
            sources=tuple(n for n in old.sources if n not in sources),
        )
        if left.receivers and left.sources:
            kept = [left if g.group == group else g for g in wanted.multicast]
    wanted = replace(wanted, multicast=tuple(kept))
    idle = set(old.sources) - config.entered(wanted)
    ports = {name: conf for name, conf in wanted.ports.items() if name not in idle}
    return replace(intent, config=replace(wanted, ports=ports))
