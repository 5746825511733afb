"""`save` and `apply`: the running configuration as a file, and a file made the running
configuration: a plan of steps from the difference, run in one change that is undone
as a whole if a step fails or the command is interrupted. `prune` (and `follow`, on
every link event) runs the same plan against the configuration last asked for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from xdpfwd import interrupts
from xdpfwd.errors import AttachError, BpfError, DeviceGone, InputError, XdpfwdError
from xdpfwd.kernel import netdev, prereqs
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import EgressSpec, PruneResult
from xdpfwd.model.reports import ApplyResult, SaveResult
from xdpfwd.state import balance, buckets, entries, groups, health, intent, multicast
from xdpfwd.state.changes import change, editing
from xdpfwd.state.config import (
    BalancedConf,
    Config,
    ConfigError,
    EntryConf,
    GroupConf,
    McastConf,
    PortConf,
)
from xdpfwd.state.config import dump as dump_config
from xdpfwd.state.config import label as config_label
from xdpfwd.state.config import load as load_config
from xdpfwd.state.dataplane import BrokenState, Dataplane, Layout, planned_layout, reading
from xdpfwd.state.pins import PinDir
from xdpfwd.state.ports import (
    forget_gone,
    is_orphan,
    map_write,
    plan_attach,
    release,
    teardown,
)
from xdpfwd.state.transaction import Change, tidy

log = logging.getLogger(__name__)


# --- save ----------------------------------------------------------------------------


def save(pins: PinDir, fmt: str = "yaml") -> SaveResult:
    """The running configuration, as the file `apply` restores it from."""
    with reading(pins) as dp:
        if dp is None:
            return SaveResult(dump_config(Config(), fmt), [])
        config, warnings = running_config(dp, netdev.links())
    return SaveResult(dump_config(config, fmt), warnings)


def running_config(dp: Dataplane, links: dict[int, netdev.Link]) -> tuple[Config, list[str]]:
    """What is set up, in the file's terms; and what could not be said in them."""
    warnings: list[str] = []
    ports: dict[str, PortConf] = {}
    forward: list[EntryConf] = []
    balanced: list[BalancedConf] = []
    recorded = intent.current(dp, links) or intent.Intent()
    reused = intent.reused(recorded, dp.ports.ifindexes(), links, dp.prog_id)
    said_below = _roles(recorded.config)  # _recorded_but_gone names their gone devices
    for port in sorted(dp.ports.ifindexes()):
        link = links.get(port)
        if link is None and recorded.name_of(port) in said_below:
            continue
        if link is None or port in reused:
            prune = dp.pins.command("prune")
            whose = f"{reused[port]}'s device" if port in reused else "its device"
            warnings.append(f"ifindex {port} left out: {whose} is gone (`{prune}`)")
            continue
        settings = dp.ports.get(port) or maps.PortSettings()
        mode = link.xdp_mode if link.xdp_prog_id == dp.prog_id else "auto"
        if recorded.knows(link.ifname):  # as asked (a file that does not name it: auto)
            mode = recorded.config.ports.get(link.ifname, PortConf()).mode
        ports[link.ifname] = PortConf(mode, settings.on_miss_name)
        entry = dp.fwd.get(port)
        if entry is None and balance.hash_of(dp, port):
            balanced.append(_running_balanced_conf(dp, link, links, recorded, warnings))
        if entry is None:
            continue
        egress = links.get(entry.egress_ifindex)
        if egress is None:
            warnings.append(f"entry of {link.ifname} left out: its egress device is gone")
            continue
        spec = entries.spec_of(dp, port, entry, egress)
        if spec is None:
            warnings.append(
                f"{link.ifname} -> {egress.ifname}: the source of its egress program "
                "is not recorded; saved without it"
            )
            spec = EgressSpec(program="none")
        forward.append(EntryConf(link.ifname, egress.ifname, spec))
    group_list = [
        GroupConf(
            g.name,
            g.exclude_ingress,
            tuple(m.ifname for m in g.members if m.ifname and m.ifindex not in reused),
        )
        for g in groups.group_infos(dp, links)
    ]
    for port in dp.unpinned_members():
        if port in links:
            warnings.append(
                f"{links[port].ifname} left out of broadcast groups: it floods through a group "
                f"that no pin holds (`{dp.pins.command('prune')}` restores it)"
            )
    mcast = []
    for g in multicast.group_infos(dp, links):
        receivers = tuple(r.port.ifname for r in g.receivers if r.port.ifname)
        sources = tuple(s.ifname for s in g.sources if s.ifname)
        unrecorded = recorded.multicast(g.group) is None  # a recorded one's: below, by name
        if unrecorded and (not receivers or not sources):
            gone = "receiver" if not receivers else "source"
            warnings.append(
                f"multicast group {g.group} left out: the device of every {gone} is gone"
            )
        elif unrecorded and (len(receivers) < len(g.receivers) or len(sources) < len(g.sources)):
            warnings.append(f"multicast group {g.group}: ports whose device is gone left out")
        if receivers and sources:
            mcast.append(McastConf(g.group, receivers, sources, g.exclude_ingress))
    warnings += _recorded_but_gone(recorded, forward, balanced, group_list, mcast, links)
    # A port whose entry was left out (its egress is gone) has no role in the file.
    roles = {e.ingress for e in (*forward, *balanced)} | {m for g in group_list for m in g.members}
    roles |= {name for g in mcast for name in g.sources}
    roles |= {e.egress for e in forward} | {p for e in balanced for p in e.ports}
    layout = dp.layout
    config = Config(
        layout.table,
        layout.value_format,
        {name: conf for name, conf in ports.items() if name in roles},
        tuple(forward),
        tuple(group_list),
        tuple(balanced),
        tuple(mcast),
    )
    return config, warnings + _forced(dp, links)


# A file cannot name a device that is gone (apply would refuse it).
_ONLY_RECORDED = (
    " (the recorded configuration keeps it, and prune brings it back with its device; "
    "an apply of this file would forget it: save again once it is back)"
)


def _recorded_but_gone(
    recorded: intent.Intent, forward, balanced, groups, mcast, links
) -> list[str]:
    """Warnings for what the recorded configuration has and the running state lacks
    because a device is gone (a container restarting): the kernel took the entries
    to it, so a file saved now would not have them, which no other line says. A
    device renamed since is not gone: the file has it under its new name."""
    saved = {e.ingress for e in (*forward, *balanced)} | {m for g in groups for m in g.members}
    wanted = recorded.config
    warnings = []
    for entry in (*wanted.forward, *wanted.balanced):
        names = (entry.ingress, entry.egress) if isinstance(entry, EntryConf) else (entry.ingress,)
        gone = recorded.gone(names, links)
        if entry.ingress not in saved and gone:
            warnings.append(
                f"the entry of {entry.ingress} left out: the device of {gone[0]} is gone"
                + _ONLY_RECORDED
            )
    for group in wanted.groups:
        for member in recorded.gone(group.members, links):
            if member not in saved:
                warnings.append(
                    f"{member} left out of group {group.name}: its device is gone" + _ONLY_RECORDED
                )
    saved_mcast = {g.group: {*g.receivers, *g.sources} for g in mcast}
    for group in wanted.multicast:
        members = recorded.gone((*group.receivers, *group.sources), links)
        gone = [n for n in members if n not in saved_mcast.get(group.group, ())]
        if not gone:
            continue
        devices = ", ".join(gone)
        if group.group in saved_mcast:
            text = f"{devices} left out of multicast group {group.group}: device gone"
        elif len(gone) == 1:
            text = f"multicast group {group.group} left out: the device of {devices} is gone"
        else:
            text = f"multicast group {group.group} left out: the devices of {devices} are gone"
        warnings.append(text + _ONLY_RECORDED)
    return warnings


def _roles(wanted: Config) -> set[str]:
    """The ports _recorded_but_gone() speaks of when their device is gone."""
    names = {e.ingress for e in wanted.forward} | {e.egress for e in wanted.forward}
    names |= {e.ingress for e in wanted.balanced} | {m for g in wanted.groups for m in g.members}
    return names | {name for g in wanted.multicast for name in (*g.receivers, *g.sources)}


def _forced(dp: Dataplane, links: dict[int, netdev.Link]) -> list[str]:
    """What runs that apply refuses without --force, as its file would: a loop or a
    shared bulk made with --force (or before xdpfwd refused it)."""
    forced = health.forced_paths(dp, links)
    found = (
        *health.refuse_loop(forced.loop, links, True, ""),
        *(health.shared_bulk_text(s, links, "sends") for s in forced.shared),
    )
    return [f"{text}: `apply` of this file needs --force" for text in found]


def _running_balanced_conf(
    dp: Dataplane,
    link: netdev.Link,
    links: dict[int, netdev.Link],
    recorded: intent.Intent,
    warnings: list[str],
) -> BalancedConf:
    """A balanced entry in the file's terms: its ports and weights as recorded (with
    those that are down or gone), its hash and egress program as running."""
    mode = balance.hash_of(dp, link.ifindex)
    table = balance.table(dp, link.ifindex)
    conf = recorded.balanced(link.ifname)
    if conf is None:
        counts = buckets.counts(e.egress_ifindex for e in table if e is not None)
        names = tuple(links[i].ifname if i in links else str(i) for i in counts)
        warnings.append(f"{link.ifname}: no recorded weights; saved with its bucket counts")
        conf = BalancedConf(link.ifname, names, tuple(counts.values()), mode)
    first = next((e for e in table if e is not None and e.egress_ifindex in links), None)
    spec = conf.spec
    if first is not None:
        running = balance.spec_of(dp, link.ifindex, first, links[first.egress_ifindex])
        if running is None:
            warnings.append(
                f"{link.ifname}: the source of its egress program is not recorded; saved without it"
            )
        spec = running or EgressSpec(program="none")
    return replace(conf, hash=mode, spec=spec)


# --- apply ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    text: str
    run: Callable[[Change], None] = lambda c: None
    removes: bool = False  # takes away what the configuration does not have


@dataclass
class Desired:
    """The file, resolved against this namespace's devices."""

    config: Config
    path: str
    links: dict[str, netdev.Link] = field(default_factory=dict)
    ports: dict[int, PortConf] = field(default_factory=dict)
    flags: dict[int, int] = field(default_factory=dict)
    entries: dict[int, EntryConf] = field(default_factory=dict)
    users: dict[int, tuple[str, str]] = field(default_factory=dict)  # ingress -> text, func
    balanced: dict[int, BalancedConf] = field(default_factory=dict)
    layouts: dict[int, buckets.Layout] = field(default_factory=dict)  # balanced ingress ->
    notes: list[str] = field(default_factory=list)  # what apply warns about
    multicast: dict[str, multicast.GroupPorts] = field(default_factory=dict)  # by group address

    def spec_of(self, ingress: int) -> EgressSpec:
        entry = self.entries.get(ingress) or self.balanced[ingress]
        return entry.spec

    def layout_of(self, ingress: int) -> buckets.Layout:
        entry = self.balanced[ingress]
        return self.layouts.get(ingress) or buckets.fresh(entry.weight_map())


def resolve_config(config: Config, path: str, links: dict[int, netdev.Link]) -> Desired:
    """The file against these links; raises ConfigError naming the file's line."""
    d = Desired(config, path)
    by_name = {link.ifname: link for link in links.values()}

    def link(name: str, line: int) -> netdev.Link:
        found = by_name.get(name)
        if found is None:
            raise ConfigError(f"{path}:{line}: no such interface: {name}")
        if found.loopback:
            raise ConfigError(f"{path}:{line}: {name} is a loopback device")
        d.links[name] = found
        return found

    def user_program(ingress: int, entry: EntryConf | BalancedConf) -> None:
        if entry.spec.program == "user":
            try:
                d.users[ingress] = entries.read_user_program(entry.spec)
            except InputError as e:
                raise ConfigError(f"{path}:{entry.line}: {e}") from None

    for entry in config.forward:
        ingress = link(entry.ingress, entry.line)
        link(entry.egress, entry.line)
        d.entries[ingress.ifindex] = entry
        d.ports[ingress.ifindex] = config.ports.get(entry.ingress, PortConf())
        user_program(ingress.ifindex, entry)
    for entry in config.balanced:
        ingress = link(entry.ingress, entry.line)
        d.balanced[ingress.ifindex] = entry
        d.ports[ingress.ifindex] = config.ports.get(entry.ingress, PortConf())
        # A balanced entry's port that does not exist (yet) counts as down.
        for name in entry.ports:
            if name in by_name:
                link(name, entry.line)
            else:
                d.notes.append(f"{path}:{entry.line}: {name} does not exist: taken as down")
        user_program(ingress.ifindex, entry)
    for group in config.groups:
        flags = maps.PORT_BROADCAST | (maps.PORT_EXCLUDE_INGRESS if group.exclude_ingress else 0)
        for name in group.members:
            port = link(name, group.line).ifindex
            d.ports[port] = config.ports.get(name, PortConf())
            d.flags[port] = flags
    for g in config.multicast:
        sources = frozenset(link(name, g.line).ifindex for name in g.sources)
        receivers = frozenset(link(name, g.line).ifindex for name in g.receivers)
        d.multicast[g.group] = multicast.GroupPorts(sources, receivers, g.exclude_ingress)
        for name in g.sources:
            d.ports.setdefault(d.links[name].ifindex, config.ports.get(name, PortConf()))
    egresses = {e.egress for e in config.forward} | {p for e in config.balanced for p in e.ports}
    for name, port_conf in config.ports.items():
        port = link(name, port_conf.line).ifindex
        if port in d.ports:
            continue
        if name in egresses:
            # It runs xdpfwd for its on-miss verdict, as add and del keep such a port.
            d.ports[port] = port_conf
        else:
            # xdpfwd runs only where frames enter to be forwarded, or leave by an entry:
            # attached, it would be detached again as the change ends.
            d.notes.append(
                f"{path}:{port_conf.line}: {name} has settings but no role (an entry, a "
                "group, a multicast source, an entry's egress): left alone"
            )
    return d


@dataclass(frozen=True)
class RunningEntry:
    egress: int
    spec: EgressSpec | None  # None: a user program whose source is not recorded
    user: maps.UserProg | None = None  # where a user program came from


@dataclass(frozen=True)
class RunningBalanced:
    hash: str
    table: tuple[int | None, ...]  # egress ifindex of each bucket
    spec: EgressSpec | None  # of its buckets (None: unknown, or no bucket has a port)
    user: maps.UserProg | None = None


@dataclass(frozen=True)
class Running:
    """What is set up, as the planner needs it (read from the dataplane once)."""

    attached: dict[int, str]  # port running this pin dir's program -> its mode
    settings: dict[int, maps.PortSettings]
    entries: dict[int, RunningEntry]
    members: dict[int, str]  # port -> its group
    has_egress: bool = True
    balanced: dict[int, RunningBalanced] = field(default_factory=dict)
    multicast: dict[str, multicast.GroupPorts] = field(default_factory=dict)  # by group address

    @property
    def groups(self) -> set[str]:
        return set(self.members.values())


NOTHING_RUNNING = Running({}, {}, {}, {})


def running_state(dp: Dataplane | None, links: dict[int, netdev.Link]) -> Running:
    if dp is None:
        return NOTHING_RUNNING
    ports = [p for p in dp.ports.ifindexes() if p in links]
    attached = {p: links[p].xdp_mode for p in ports if links[p].xdp_prog_id == dp.prog_id}
    found = {}
    for port in ports:
        entry = dp.fwd.get(port)
        if entry is None:
            continue
        egress = links.get(entry.egress_ifindex)
        spec = entries.spec_of(dp, port, entry, egress) if egress else None
        user = dp.user_progs.get(entry.egress_prog_id) if dp.layout.has_egress else None
        found[port] = RunningEntry(entry.egress_ifindex, spec, user)
    # A member floods when the map of groups points it at its group's devmap (a change
    # killed half way may have left it in the devmap only): the others are no members.
    ids = {name: map_id for map_id, name in groups.group_ids(dp).items()}
    members = {
        port: name
        for name in dp.group_names()
        for port in dp.open_group(name).members()
        if dp.groups.group_id(port) == ids[name]
    }
    settings = {p: s for p in ports if (s := dp.ports.get(p)) is not None}
    balanced = {
        port: _running_balanced(dp, port, mode, links)
        for port, mode in balance.balanced_ports(dp, ports).items()
    }
    mcast = {
        addr.text: multicast.GroupPorts(g.sources, g.receivers, g.exclude_ingress)
        for addr, g in multicast.read_groups(dp).items()
    }
    return Running(attached, settings, found, members, dp.layout.has_egress, balanced, mcast)


def _running_balanced(
    dp: Dataplane, port: int, mode: str, links: dict[int, netdev.Link]
) -> RunningBalanced:
    table = balance.table(dp, port)
    first = next((e for e in table if e is not None and e.egress_ifindex in links), None)
    spec = user = None
    if first is not None:
        spec = balance.spec_of(dp, port, first, links[first.egress_ifindex])
        if dp.layout.has_egress:
            user = dp.user_progs.get(first.egress_prog_id)
    ifindexes = tuple(e.egress_ifindex if e is not None else None for e in table)
    return RunningBalanced(mode, ifindexes, spec, user)


def apply(pins: PinDir, path: str, dry_run: bool = False, force: bool = False) -> ApplyResult:
    """Make the running configuration what the file says: create what is missing,
    change what differs, remove what the file does not have.

    Raises ConfigError (the file: nothing changed), XdpfwdError, AttachError,
    BpfError, PrereqError; on any error or interrupt, the old state stays.
    """
    prereqs.require_privileges("apply")
    config = load_config(path)
    path = config_label(path)
    pins.check_netns()  # before the file's names are read as this namespace's devices
    links = netdev.links()
    desired = resolve_config(config, path, links)
    # The file is the whole state: a loop or shared bulk anywhere in it is apply's doing.
    graph = _desired_graph(desired)
    hops = health.find_loop(graph, links, desired.multicast.values())
    shared = health.shared_bulks(graph, desired.multicast)
    try:
        path_warnings = (
            *health.refuse_loop(hops, links, force, "apply it"),
            *health.refuse_shared_bulk(shared, links, force, "apply it"),
        )
    except XdpfwdError as e:  # the file's own doing: refused at its line, as a bad file
        line = _sender_line(desired, hops[0][0]) if hops else _group_line(config, shared[0][2])
        raise ConfigError(f"{path}:{line}: {e}") from None
    if dry_run:
        _check_refusals(pins, config, desired, links, force)
        steps = _dry_run(pins, desired)
        warnings = (*desired.notes, *path_warnings)
        return ApplyResult([s.text for s in steps], dry_run=True, warnings=warnings)
    _repair(pins)
    replans = 0
    while True:
        try:
            c, desired, steps = _apply_once(pins, config, desired, force)
            break
        except DeviceGone as e:  # undone: again, with the devices there are now
            replans += 1
            if replans > REPLANS:
                raise
            log.info("%s; planning again", e)
            desired = resolve_config(config, path, netdev.links())
    warnings = (
        *desired.notes,
        *path_warnings,
        *c.notes,
        *(att.warning for att in c.attachments if att.warning),
        *_problems(c, desired, set(c.links)),
    )
    for ingress, (text, func) in desired.users.items():
        shown = Path(desired.spec_of(ingress).user_file or "").name
        warnings += tuple(entries.verdict_warnings(text, shown, func))
    return ApplyResult([s.text for s in steps], dry_run=False, warnings=warnings)


def _apply_once(
    pins: PinDir, config: Config, desired: Desired, force: bool
) -> tuple[Change, Desired, list[Step]]:
    """One change to the file's state: the change done, the file resolved against
    the devices under the lock (one deleted meanwhile refused at its line, or taken
    as down), and the steps."""
    with change(
        pins,
        table=config.table,
        value=config.value,
        attach={port: conf.mode for port, conf in desired.ports.items()},
        force=force,
        check_layout=_layout_check(desired),
        replaceable=partial(is_orphan, pins),
        repairing=True,  # its plan pins a group again, or takes its members out
    ) as c:
        desired = resolve_config(config, desired.path, c.links)
        if desired.balanced:
            balance.check_supported(c.dp)
        recorded = intent.current(c.dp, c.links)
        layouts = _choose_layouts(desired, recorded)
        steps = plan(running_state(c.dp, c.links), desired, c.links)
        steps += _unpinned_steps(c.dp, c.links, desired)
        for step in steps:
            interrupts.check()  # between steps, an interrupt undoes those done
            log.info("%s", step.text)
            step.run(c)
        bound = recorded.bound if recorded else {}
        record = intent.Intent(config, layouts, bound)
        intent.store(c, intent.bind(record, c.links), create=True)
    return c, desired, steps


def _sender_line(d: Desired, port: int) -> int:
    """The line of the file's entry, balanced entry, broadcast group or multicast
    group (as its source) that sends what enters port."""
    if port in d.entries:
        return d.entries[port].line
    if port in d.balanced:
        return d.balanced[port].line
    name = next(name for name, link in d.links.items() if link.ifindex == port)
    senders = [g for g in d.config.groups if name in g.members]
    senders += [g for g in d.config.multicast if name in g.sources]
    return senders[0].line


def _group_line(config: Config, address: str) -> int:
    return next(g.line for g in config.multicast if g.group == address)


def _problems(c: Change, d: Desired, ports: set[int]) -> tuple[str, ...]:
    """As warnings, the problems of d's paths that pass one of ports (a veth peer that
    cannot take redirected frames, MTUs, what a group cannot flood)."""
    if not ports:
        return ()  # prune with no device bound anew: no peer to read, no netlink dump
    pairs = {(i, e) for i, egress in _desired_graph(d).items() for e in egress}
    for g in d.multicast.values():
        pairs |= {(s, r) for s in g.sources for r in g.receivers if s != r or not g.exclude_ingress}
    flooding = [d.links[m].ifindex for g in d.config.groups for m in g.members if m in d.links]
    flooding += [s for g in d.multicast.values() for s in sorted(g.sources)]
    return (
        *health.warnings_for(sorted({p for p in pairs if ports & set(p)}), c.links),
        *health.flood_warnings([m for m in flooding if m in ports], c.links, c.dp.frags),
    )


def _unpinned_steps(dp: Dataplane, links: dict[int, netdev.Link], d: Desired) -> list[Step]:
    """Take ports that flood through a group whose pin is gone out of it, unless d makes
    them members of a group (the plan pins that one, or adds them to it)."""
    wanted = {d.links[m].ifindex for g in d.config.groups for m in g.members if m in d.links}
    return [
        Step(
            f"take {links[port].ifname} out of a broadcast group whose pin is gone",
            partial(groups.forget_unpinned, port=port),
        )
        for port in dp.unpinned_members()
        if port in links and port not in wanted
    ]


def _desired_graph(d: Desired) -> dict[int, set[int]]:
    """Where each port of the file sends what enters it (see health.forwarding_graph)."""
    index = {name: link.ifindex for name, link in d.links.items()}
    return health.configured_graph(d.entries.values(), d.balanced.values(), d.config.groups, index)


def _dry_run(pins: PinDir, desired: Desired) -> list[Step]:
    """The plan, changing nothing (not even broken pins, which apply would rebuild)."""
    broken = _broken(pins)
    if broken is not None:
        links = netdev.links()
        _choose_layouts(desired, None)  # the rebuild forgets the recorded ones
        rebuild = Step(f"rebuild the pinned state in {pins.path}, which is broken")
        return [rebuild, *plan(NOTHING_RUNNING, desired, links)]
    with reading(pins) as dp:
        links = netdev.links()
        _choose_layouts(desired, intent.current(dp, links) if dp is not None else None)
        unpinned = _unpinned_steps(dp, links, desired) if dp is not None else []
        return plan(running_state(dp, links), desired, links) + unpinned


def _check_refusals(
    pins: PinDir, config: Config, desired: Desired, links: dict[int, netdev.Link], force: bool
) -> None:
    """Raise what apply would refuse before changing anything, for --dry-run: a table
    of another type than the one pinned, a port another program runs on (another pin
    dir's too) without force."""
    if pins.exists() and _broken(pins) is None:  # (a broken dir is rebuilt whole)
        planned_layout(pins, config.table, config.value)
    ours = pins.prog_id()
    for port, conf in desired.ports.items():
        link = links[port]
        replaceable = force or (link.xdp_prog_id != ours and is_orphan(pins, link))
        plan_attach(pins, link, ours, conf.mode, replaceable)


def _choose_layouts(d: Desired, recorded: intent.Intent | None) -> dict[str, buckets.Layout]:
    """The bucket layouts of the file's balanced entries (kept, shared or moved as
    little as possible: buckets.choose), into d; returned by ingress name."""
    wanted = {entry.ingress: entry.weight_map() for entry in d.balanced.values()}
    chosen = buckets.choose(wanted, recorded.recorded_layouts() if recorded else {})
    d.layouts = {port: chosen[entry.ingress] for port, entry in d.balanced.items()}
    return chosen


# --- prune and follow: back to the recorded configuration --------------------------


REPLANS = 3  # passes planned again when devices keep going away during them


def reconcile(pins: PinDir) -> PruneResult:
    """Bring the running state back to the configuration last asked for (`apply`,
    `add`, `del`, `broadcast`), as devices come and go: bind devices re-created under
    a name it has, move the buckets of balanced entries off egress ports that are
    down or gone (and back when they return), and forget what deleted devices left.
    What `prune` does once and `follow` on every link event; it takes nothing away
    that the configuration lacks, and leaves ports running another tool's program.

    A port whose attach fails (a device made again that takes no native XDP) is
    left out with a warning, and the rest is restored without it: one port must not
    hold up the others' repair, such as buckets moved off an egress that went down.

    A device deleted while a pass runs, after it read the links, makes the kernel refuse
    the devmap writes that name it (EINVAL: devmap.c finds no device by that ifindex),
    the undo's too: the pass is undone and planned again from the links as they are.

    Raises XdpfwdError, AttachError, BpfError; on any error the old state stays.
    """
    prereqs.require_privileges("prune")
    refused: dict[str, str] = {}  # port -> why its attach failed
    replans = 0
    while True:
        try:
            return _reconcile(pins, refused)
        except AttachError as e:  # undone: again, without that port
            if e.port is None or e.port in refused:
                raise
            refused[e.port] = str(e)
        except DeviceGone as e:
            replans += 1
            what = f"{', '.join(e.gone)} went away during the pass"
            if replans > REPLANS:
                raise XdpfwdError(f"{what}: undone; the next pass restores the rest") from e
            log.info("%s: undone, planning again", what)


def _reconcile(pins: PinDir, refused: dict[str, str]) -> PruneResult:
    with editing(pins, repairing=True) as c:
        if c is None:
            return PruneResult([], [], [])
        recorded = intent.load(pins)
        renamed: list[Step] = []
        if recorded is not None:
            recorded, renames = intent.following_renames(recorded, c.dp, c.links)
            if renames:
                intent.store(c, recorded)
            renamed = [
                Step(f"{old} is {new} now: recorded as {new}") for old, new in renames.items()
            ]
        reused = intent.reused(recorded, c.dp.ports.ifindexes(), c.links, c.dp.prog_id)
        # What the deleted device left under an ifindex that another device has now.
        gone = forget_gone(c.dp, {i: link for i, link in c.links.items() if i not in reused})
        steps: list[Step] = []
        skipped = [f"{why}: {port} left out" for port, why in refused.items()]
        warnings: tuple[str, ...] = ()
        if recorded is not None:
            desired = _recorded(c, recorded, skipped, set(refused))
            steps = [
                step
                for step in plan(running_state(c.dp, c.links), desired, c.links)
                if not step.removes
            ] + _unpinned_steps(c.dp, c.links, desired)
            steps = renamed + steps
            for step in steps:
                interrupts.check()
                log.debug("%s", step.text)  # (-vv: prune and follow print each step done)
                step.run(c)
            rebound = intent.bind(recorded, c.links)
            if rebound.bound != recorded.bound:
                intent.store(c, rebound)
            # A device made again comes with the kernel's defaults (a veth peer without
            # GRO, say): what add or apply would warn about, said once, when bound.
            made_again = {i for n, i in rebound.bound.items() if recorded.bound.get(n) != i}
            fallbacks = tuple(att.warning for att in c.attachments if att.warning)
            warnings = fallbacks + _problems(c, desired, made_again)
        also_gone, emptied, detached = tidy(c.dp, c.undo, c.links)
    return PruneResult(
        gone + also_gone,
        emptied,
        detached,
        tuple(s.text for s in steps),
        tuple(skipped),
        warnings,
    )


def _recorded(c: Change, recorded: intent.Intent, skipped: list[str], refused: set[str]) -> Desired:
    """The recorded configuration, against the devices there are now: what names a
    device that is gone is left out (a balanced entry's port counts as down), and so
    is a port that runs another tool's XDP program or refused the attach (refused),
    an entry whose egress program's source cannot be read, or whose rewrite goes to
    a device without a MAC address (a balanced entry's such port counts as down), and
    a group where another tool pinned something, noted in skipped."""
    by_name = {link.ifname: link for link in c.links.values()}
    usable: dict[str, bool] = {}

    def ok(name: str) -> bool:
        if name not in usable:
            link = by_name.get(name)
            usable[name] = link is not None and name not in refused
            if link is not None and link.xdp_prog_id and link.xdp_prog_id != c.dp.prog_id:
                if not is_orphan(c.dp.pins, link):
                    usable[name] = False
                    skipped.append(
                        f"{name} runs another XDP program (id {link.xdp_prog_id}): left alone"
                    )
        return usable[name]

    def readable(entry) -> bool:
        if entry.spec.program != "user":
            return True
        try:
            entries.read_user_program(entry.spec)
        except InputError as e:
            skipped.append(f"{entry.ingress}: {e}")
            return False
        return True

    def rewritable(ingress: str, egress: tuple[str, ...], spec, balanced: bool) -> bool:
        bare = [n for n in egress if n in by_name and not entries.takes_rewrite(spec, by_name[n])]
        if bare:  # re-created as a device without a MAC address (a tun)
            what = "taken as down" if balanced else "left out"
            skipped.append(
                f"{ingress}: {', '.join(bare)} has no MAC address for its rewrite: {what}"
            )
            return balanced  # its buckets go to the other ports (balance.wanted_table)
        return True

    def pinnable(group: str) -> bool:  # another tool's pin stops only this group
        foreign = c.dp.foreign_at(group)
        if foreign is not None:
            skipped.append(f"group {group} left out: {foreign} holds what xdpfwd did not make")
        return foreign is None

    wanted = recorded.config
    forward = tuple(
        e
        for e in wanted.forward
        if ok(e.ingress)
        and e.egress in by_name
        and readable(e)
        and rewritable(e.ingress, (e.egress,), e.spec, balanced=False)
    )
    balanced = tuple(
        e
        for e in wanted.balanced
        if ok(e.ingress) and readable(e) and rewritable(e.ingress, e.ports, e.spec, balanced=True)
    )
    groups = tuple(
        replace(g, members=members)
        for g in wanted.groups
        if (members := tuple(m for m in g.members if ok(m))) and pinnable(g.name)
    )
    # A port whose every role went with its device's entries (the ingress of an entry
    # whose egress is gone) is not attached: it would be idle, detached by the same
    # prune, and under follow each attach and detach is an event for the next prune.
    # Unless it drops what misses: then it waits attached, dropping (as tidy keeps it).
    forward, balanced, groups = _without_new_loops(c, forward, balanced, groups, skipped)
    mcast = _recorded_multicast(c, recorded, ok, (forward, balanced, groups), skipped)
    has_role = _named_ports(forward, balanced, groups) | {s for g in mcast for s in g.sources}
    sources = c.dp.mcast.source_ports() if c.dp.mcast is not None else set()
    has_role |= {link.ifname for link in c.links.values() if link.ifindex in sources}
    config = replace(
        wanted,
        forward=forward,
        balanced=balanced,
        groups=groups,
        ports={name: conf for name, conf in wanted.ports.items() if ok(name) and name in has_role},
        multicast=mcast,
    )
    d = resolve_config(config, "the recorded configuration", c.links)
    d.layouts = {port: recorded.layout(entry) for port, entry in d.balanced.items()}
    for name in sorted(recorded.dropping_while_waiting(c.links) - has_role):
        if ok(name):
            d.ports[by_name[name].ifindex] = wanted.ports[name]
    for port, conf in d.ports.items():
        link = c.links[port]
        orphan = link.xdp_prog_id not in (0, c.dp.prog_id) and is_orphan(c.dp.pins, link)
        try:
            c.plans.append(plan_attach(c.dp.pins, link, c.dp.prog_id, conf.mode, orphan))
        except AttachError as e:  # another program came meanwhile
            skipped.append(str(e))
    return d


def _recorded_multicast(
    c: Change, recorded: intent.Intent, ok: Callable[[str], bool], restored, skipped: list[str]
) -> tuple[McastConf, ...]:
    """The recorded multicast groups, each with its receivers that are here, its
    sources that are usable (ok) and its ports that run (prune takes none away); one
    left without sources is left out, and one without receivers too, unless it runs
    (as tidy keeps it: dropping its frames). A group that would do what
    `multicast add` refuses with the restored entries and groups (go round a loop
    through devices made again and wired otherwise, share a bulk with a source's
    other frames) is left as it runs, said in skipped."""
    index = {link.ifname: link.ifindex for link in c.links.values()}
    graph = health.forwarding_graph(c.dp) | health.configured_graph(*restored, index)
    running = multicast.read_groups(c.dp) if c.dp.mcast is not None else {}
    found = []

    def running_names(ports: frozenset[int]) -> list[str]:
        # Not a device that got the ifindex of a deleted member since.
        names = [c.links[p].ifname for p in sorted(ports) if p in c.links]
        return [n for n in names if recorded.name_of(index[n]) in (None, n)]

    for wanted in recorded.config.multicast:
        now = running.get(multicast.parse_group(wanted.group))
        receivers = [n for n in wanted.receivers if n in index]
        sources = [n for n in wanted.sources if ok(n)]
        if now is not None:
            receivers += running_names(now.receivers)
            sources += running_names(now.sources)
        group = replace(
            wanted,
            receivers=tuple(dict.fromkeys(receivers)),
            sources=tuple(dict.fromkeys(sources)),
        )
        if not group.sources or (not group.receivers and now is None):
            continue
        if not group.receivers:
            found.append(group)  # as it runs, receivers gone: see multicast.tidy
            continue
        ports = multicast.GroupPorts(
            frozenset(index[n] for n in group.sources),
            frozenset(index[n] for n in group.receivers),
            group.exclude_ingress,
        )
        refused = _new_multicast_paths(graph, group.group, ports, now, c.links)
        if refused:
            skipped.append(f"multicast group {group.group} not restored: {refused}")
            if now is None:
                continue
            as_runs = (running_names(now.receivers), running_names(now.sources))
            group = replace(group, receivers=tuple(as_runs[0]), sources=tuple(as_runs[1]))
        if group.sources and (group.receivers or now is not None):
            found.append(group)
    return tuple(found)


def _new_multicast_paths(graph, address: str, group, now, links) -> str | None:
    """What multicast group address as group would do that `multicast add` refuses
    and it does not do as it runs (now): go round a forwarding loop, or send a
    source's copies and other frames out of one port (graph sending the rest)."""
    hops = health.multicast_loop(graph, group, links)
    if hops and (now is None or not health.multicast_loop(graph, now, links)):
        return health.refuse_loop(hops, links, True, "")[0]
    shared = health.new_shared_bulks(graph, address, group, now)
    return health.shared_bulk_text(shared[0], links, "would send") if shared else None


def _without_new_loops(c: Change, forward, balanced, groups, skipped: list[str]):
    """forward, balanced and groups (of the recorded configuration, their devices all
    here) less each hop that does not run and would close a forwarding loop: devices
    made again may be wired otherwise (a veth pair between two ports of the
    configuration). Each left out is said in skipped; the rest is restored. A loop
    that runs already (made with --force) leaves nothing out."""
    index = {link.ifname: link.ifindex for link in c.links.values()}
    name = {i: n for n, i in index.items()}
    running = health.forwarding_graph(c.dp)
    own_frames = list(multicast.read_groups(c.dp).values())  # prune leaves them as they run

    def graph() -> dict[int, set[int]]:
        return health.configured_graph(forward, balanced, groups, index)

    new_hops = sorted((p, e) for p, to in graph().items() for e in to - running.get(p, set()))
    for port, egress in new_hops:
        wanted = graph()
        if egress not in wanted.get(port, set()):
            continue  # left out with an earlier hop
        hops = health.find_loop(wanted | {port: {egress}}, c.links, own_frames, through=[port])
        if not hops:
            continue
        (loop,) = health.refuse_loop(hops, c.links, True, "")
        skipped.append(f"{name[port]} -> {name[egress]} not restored: {loop}")
        if any(e.ingress == name[port] for e in forward):
            forward = tuple(e for e in forward if e.ingress != name[port])
        elif any(e.ingress == name[port] for e in balanced):
            balanced = tuple(
                _without_port(e, name[egress]) if e.ingress == name[port] else e for e in balanced
            )
        else:  # a group's hop: its member made again leaves it, one that floods now stays
            gone = name[port] if port not in running else name[egress]
            groups = tuple(
                replace(g, members=tuple(m for m in g.members if m != gone)) for g in groups
            )
    balanced = tuple(e for e in balanced if e.ports)
    return forward, balanced, tuple(g for g in groups if g.members)


def _without_port(entry: BalancedConf, port: str) -> BalancedConf:
    kept = [(p, w) for p, w in zip(entry.ports, entry.weights, strict=True) if p != port]
    return replace(entry, ports=tuple(p for p, _ in kept), weights=tuple(w for _, w in kept))


def _named_ports(forward, balanced, groups) -> set[str]:
    """The ports these entries and groups name, in any role."""
    names = {name for e in forward for name in (e.ingress, e.egress)}
    names |= {name for e in balanced for name in (e.ingress, *e.ports)}
    return names | {name for g in groups for name in g.members}


def _layout_check(desired: Desired):
    def check(layout: Layout) -> None:
        if not layout.has_egress:
            for entry in (*desired.config.forward, *desired.config.balanced):
                if entry.spec.program == "user" or entry.spec.rewrites:
                    raise ConfigError(
                        f"{desired.path}:{entry.line}: egress programs need "
                        "bpf_devmap_val entries (value: devmap-val)"
                    )

    return check


def _broken(pins: PinDir) -> str | None:
    """Why the pinned state cannot be opened (pins removed by hand), or None."""
    try:
        with reading(pins):
            return None
    except (BrokenState, BpfError) as e:
        return str(e)


def _repair(pins: PinDir) -> None:
    """Pins removed by hand leave state that cannot be opened: start it afresh (only
    ever xdpfwd's own pins go: see PinDir.remove_owned)."""
    reason = _broken(pins)
    if reason is None:
        return
    log.warning("%s; rebuilding it from the file", reason)
    with pins.locked(create=False):
        pins.check_owned()
        pins.check_netns()
        teardown(pins)


def plan(running: Running, d: Desired, links: dict[int, netdev.Link]) -> list[Step]:
    """The steps from the running state to the desired one, in an order that keeps
    each port in one role at a time. Pure: what it decides on are its arguments."""
    names = {port: link.ifname for port, link in links.items()}
    wanted_member = {d.links[m].ifindex: g.name for g in d.config.groups for m in g.members}
    changed = [i for i, entry in d.entries.items() if _entry_differs(running, i, entry, d)]
    balancing = {
        i: text for i in d.balanced if (text := _balanced_change(running, i, d, links)) is not None
    }
    compiled: dict[int, int] = {}  # ingress -> user program fd, filled by the compile steps
    steps: list[Step] = []
    # Programs first: a file that does not compile changes nothing.
    for ingress in [*changed, *balancing]:
        if d.spec_of(ingress).program == "user":
            text = f"compile {d.spec_of(ingress).user_file}:{d.users[ingress][1]}"
            steps.append(Step(text, partial(_compile, d=d, ingress=ingress, into=compiled)))
    for ingress, entry in running.entries.items():
        if ingress not in d.entries and ingress not in d.balanced:
            egress = names.get(entry.egress, entry.egress)
            text = f"remove entry {names[ingress]} -> {egress}"
            steps.append(Step(text, partial(_remove_entry, ingress=ingress), removes=True))
    for ingress in running.balanced:
        if ingress not in d.entries and ingress not in d.balanced:
            text = f"remove balanced entry of {names[ingress]}"
            steps.append(Step(text, partial(_remove_balanced, ingress=ingress), removes=True))
    for port, group in running.members.items():
        if wanted_member.get(port) != group:
            text = f"take {names.get(port, port)} out of group {group}"
            steps.append(Step(text, partial(_leave, group=group, port=port), removes=True))
    for group in sorted(set(running.multicast) - set(d.multicast)):
        text = f"remove multicast group {group}"
        steps.append(Step(text, partial(_set_mcast, group=group, want=None), removes=True))
    for port in sorted(set(running.settings) - set(d.ports)):
        # (one whose program someone replaced or detached has only its state forgotten)
        verb = "detach from" if port in running.attached else "forget"
        step = Step(f"{verb} {names[port]}", partial(_release, port=port), removes=True)
        steps.append(step)
    for port, conf in d.ports.items():
        steps += _port_steps(running, d, links[port], conf)
    for group in d.config.groups:
        if group.name not in running.groups:
            steps.append(Step(f"create group {group.name}", partial(_create, group=group.name)))
        for member in group.members:
            port = d.links[member].ifindex
            if running.members.get(port) != group.name:
                text = f"add {member} to group {group.name}"
                steps.append(Step(text, partial(_join, group=group.name, port=port)))
    for name in sorted(running.groups - {g.name for g in d.config.groups}):
        # Emptied above, unpinned at commit.
        steps.append(Step(f"remove group {name}", removes=True))
    for group, want in d.multicast.items():
        have = running.multicast.get(group)
        if have != want:
            verb = "create" if have is None else "change"
            text = f"{verb} multicast group {group} ({_describe_mcast(want, names)})"
            steps.append(Step(text, partial(_set_mcast, group=group, want=want)))
    for ingress in changed:
        entry = d.entries[ingress]
        text = f"forward {entry.ingress} -> {entry.egress} ({_describe(entry)})"
        steps.append(Step(text, partial(_write, d=d, ingress=ingress, compiled=compiled)))
    for ingress, text in balancing.items():
        run = partial(_write_balanced, d=d, ingress=ingress, compiled=compiled)
        steps.append(Step(text, run))
    return steps


def _compile(c: Change, d: Desired, ingress: int, into: dict[int, int]) -> None:
    if ingress in d.balanced:
        into[ingress] = balance.prog_fd(c, d.spec_of(ingress), d.users[ingress])
    else:
        into[ingress] = entries.prog_fd(c, d.spec_of(ingress), d.users[ingress])


def _remove_balanced(c: Change, ingress: int) -> None:
    balance.remove(c, ingress)


def _remove_entry(c: Change, ingress: int) -> None:
    entries.remove(c, ingress)


def _release(c: Change, port: int) -> None:
    release(c.dp, port, c.links, c.undo)


def _create(c: Change, group: str) -> None:
    # A group whose members were all deleted is still pinned, empty: it runs no
    # member, so the plan creates it, and its pin is the one to fill.
    if group not in c.dp.group_names():
        groups.create(c, group)


def _join(c: Change, group: str, port: int) -> None:
    groups.add_members(c, group, [port])


def _leave(c: Change, group: str, port: int) -> None:
    groups.remove_members(c, group, [port])
    c.after_commit.append(lambda: groups.forget_pairs(c, {port}))


def _describe_mcast(group: multicast.GroupPorts, names: dict[int, str]) -> str:
    text = f"from {', '.join(sorted(names[p] for p in group.sources))}"
    text += f" to {', '.join(sorted(names[p] for p in group.receivers))}"
    return text + (", exclude ingress" if group.exclude_ingress else "")


def _set_mcast(c: Change, group: str, want: multicast.GroupPorts | None) -> None:
    addr = multicast.parse_group(group)
    want = want or multicast.GroupPorts(frozenset(), frozenset())
    multicast.set_group(
        c.dp,
        addr,
        sources=want.sources,
        receivers=want.receivers,
        exclude_ingress=want.exclude_ingress,
        undo=c.undo,
        resources=c.resources,
        later=c.after_commit,
        current=multicast.read_groups(c.dp).get(addr),
    )


def _port_steps(running: Running, d: Desired, link: netdev.Link, conf: PortConf) -> list[Step]:
    port = link.ifindex
    settings = maps.PortSettings(maps.ON_MISS_VERDICTS[conf.on_miss], d.flags.get(port, 0))
    attached = port in running.attached
    switch = attached and conf.mode != "auto" and conf.mode != running.attached[port]
    if not attached or switch:
        if switch:
            text = f"re-attach {link.ifname} in {conf.mode} mode"
        else:
            text = f"attach to {link.ifname} ({conf.mode})"
        return [Step(text, partial(_attach, port=port, mode=conf.mode, settings=settings))]
    current = running.settings.get(port)
    if current == settings:
        return []
    what = []
    if current is None or current.on_miss != settings.on_miss:
        what.append(f"on-miss {conf.on_miss}")
    if current is None or current.flags != settings.flags:
        if not settings.broadcast:
            what.append("not flooding")
        else:
            what.append("flooding" + (" (exclude ingress)" if settings.exclude_ingress else ""))
    text = f"set {link.ifname} {', '.join(what)}"
    return [Step(text, partial(_set_settings, port=port, settings=settings))]


def _attach(c: Change, port: int, mode: str, settings: maps.PortSettings) -> None:
    c.attach(c.plan_of(port), mode, settings)


def _set_settings(c: Change, port: int, settings: maps.PortSettings) -> None:
    previous = c.dp.ports.get(port)
    if previous is not None:  # the undo first: a mirrored write may fail half-way
        c.undo.callback(c.dp.ports.set, port, previous)
    map_write(c.dp.ports.set, port, settings)


def _describe(entry: EntryConf | BalancedConf) -> str:
    spec = entry.spec
    if spec.program == "user":
        return f"egress program {Path(spec.user_file).name}"
    if spec.rewrites:
        return "MAC rewrite"
    if isinstance(entry, BalancedConf) and spec.program != "none":
        return "built-in egress program, counting per port"
    return "no egress program"


def _entry_differs(running: Running, ingress: int, entry: EntryConf, d: Desired) -> bool:
    current = running.entries.get(ingress)
    egress = d.links[entry.egress]
    if current is None or current.egress != egress.ifindex:
        return True
    if not running.has_egress:
        return False  # plain ifindex entries: the egress is all there is
    spec = entry.spec
    if spec.program == "user":
        origin = current.user
        text, func = d.users[ingress]
        want = (spec.user_file, func, entries.source_digest(text))
        return origin is None or (origin.path, origin.function, origin.digest) != want
    have = current.spec
    if have is None:
        return True
    return (have.kind, entries.rewrite_of(have, egress)) != (
        spec.kind,
        entries.rewrite_of(spec, egress),
    )


def _write(c: Change, d: Desired, ingress: int, compiled: dict[int, int]) -> None:
    entry = d.entries[ingress]
    egress = d.links[entry.egress]
    spec = entry.spec
    if not c.dp.layout.has_egress or spec.kind == "plain":
        prog_fd = 0
    elif spec.program == "user":
        prog_fd = compiled[ingress]
    else:
        prog_fd = entries.prog_fd(c, spec, None)
    entries.write(c, ingress, egress.ifindex, prog_fd, entries.rewrite_of(spec, egress))
    balance.remove(c, ingress)  # a balanced entry the port had: the single one won


def _balanced_change(
    running: Running, ingress: int, d: Desired, links: dict[int, netdev.Link]
) -> str | None:
    """What writing the balanced entry of ingress changes, as one line; None if
    nothing."""
    entry = d.balanced[ingress]
    by_name = {link.ifname: link for link in links.values()}
    layout = d.layout_of(ingress)
    want, now = balance.wanted_table(entry, layout, by_name)
    shares = "/".join(str(buckets.counts(now).get(p, 0)) for p in entry.ports)
    current = running.balanced.get(ingress)
    if current is None:
        return f"balance {entry.ingress} over {', '.join(entry.ports)} ({entry.hash}, {shares})"
    what = []
    if current.hash != entry.hash:
        what.append(f"hash {entry.hash}")
    if any(want) and _balanced_spec_differs(running, current, ingress, d, by_name):
        what.append(f"egress: {_describe(entry)}")
    if list(current.table) != want:
        names = {link.ifindex: link.ifname for link in links.values()}
        why = {p: balance.port_state(by_name.get(p)) for p in entry.ports}
        why = {p: state for p, state in why.items() if state != balance.PORT_UP}
        # A bucket the kernel dropped (its device went) was its home port's.
        before = tuple(
            names.get(i, str(i)) if i else (home if home in why else None)
            for i, home in zip(current.table, layout, strict=True)
        )
        what.append(buckets.describe_moves(before, now, why) or "buckets rewritten")
    return f"{entry.ingress}: {'; '.join(what)}" if what else None


def _balanced_spec_differs(
    running: Running,
    current: RunningBalanced,
    ingress: int,
    d: Desired,
    by_name: dict[str, netdev.Link],
) -> bool:
    if not running.has_egress:
        return False
    spec = d.balanced[ingress].spec
    if spec.program == "user":
        text, func = d.users[ingress]
        origin = current.user
        want = (spec.user_file, func, entries.source_digest(text))
        return origin is None or (origin.path, origin.function, origin.digest) != want
    if current.spec is None:
        return True
    ports = d.balanced[ingress].ports
    have = (current.spec.program, list(balance.rewrites(current.spec, ports, by_name).values()))
    return have != (spec.program, list(balance.rewrites(spec, ports, by_name).values()))


def _write_balanced(c: Change, d: Desired, ingress: int, compiled: dict[int, int]) -> None:
    entry = d.balanced[ingress]
    if ingress in compiled:
        prog_fd = compiled[ingress]
    else:
        prog_fd = balance.prog_fd(c, entry.spec, None)
    by_name = {link.ifname: link for link in c.links.values()}
    now, _ = balance.wanted_table(entry, d.layout_of(ingress), by_name)
    rewrites = balance.rewrites(entry.spec, entry.ports, by_name)
    balance.write(c, ingress, entry.hash, now, prog_fd, rewrites)
