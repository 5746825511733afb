"""`save` and `apply`: the running configuration as a file, and a file made the running
configuration: a plan of steps from the difference, run in one change that is undone
as a whole if a step fails or the command is interrupted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from xdpfwd import interrupts
from xdpfwd.errors import BpfError, InputError
from xdpfwd.kernel import netdev, prereqs
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import EgressSpec
from xdpfwd.model.reports import ApplyResult, SaveResult
from xdpfwd.state import entries, groups, health, multicast
from xdpfwd.state.config import Config, ConfigError, EntryConf, GroupConf, McastConf, PortConf
from xdpfwd.state.config import dump as dump_config
from xdpfwd.state.config import load as load_config
from xdpfwd.state.dataplane import BrokenState, Dataplane, Layout, reading
from xdpfwd.state.pins import PinDir
from xdpfwd.state.ports import XDPFWD_PROG_NAME, map_write, prog_name, release, teardown
from xdpfwd.state.transaction import Change, change

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
    for port in sorted(dp.ports.ifindexes()):
        link = links.get(port)
        if link is None:
            warnings.append(f"ifindex {port} left out: its device is gone (`xdpfwd prune`)")
            continue
        settings = dp.ports.get(port) or maps.PortSettings()
        mode = link.xdp_mode if link.xdp_prog_id == dp.prog_id else "auto"
        ports[link.ifname] = PortConf(mode, settings.on_miss_name)
        entry = dp.fwd.get(port)
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
        GroupConf(g.name, g.exclude_ingress, tuple(m.ifname for m in g.members if m.ifname))
        for g in groups.group_infos(dp, links)
    ]
    mcast = []
    for g in multicast.group_infos(dp, links):
        receivers = tuple(r.port.ifname for r in g.receivers if r.port.ifname)
        sources = tuple(s.ifname for s in g.sources if s.ifname)
        if len(receivers) < len(g.receivers) or len(sources) < len(g.sources):
            warnings.append(f"multicast group {g.group}: ports whose device is gone left out")
        if receivers and sources:
            mcast.append(McastConf(g.group, receivers, sources, g.exclude_ingress))
    layout = dp.layout
    config = Config(
        layout.table,
        layout.value_format,
        ports,
        tuple(forward),
        tuple(group_list),
        tuple(mcast),
    )
    return config, warnings


# --- apply ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    text: str
    run: Callable[[Change], None] = lambda c: None


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
    multicast: dict[str, RunningGroup] = field(default_factory=dict)  # by group address

    def by_index(self) -> dict[int, netdev.Link]:
        return {link.ifindex: link for link in self.links.values()}


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

    for entry in config.forward:
        ingress = link(entry.ingress, entry.line)
        link(entry.egress, entry.line)
        d.entries[ingress.ifindex] = entry
        d.ports[ingress.ifindex] = config.ports.get(entry.ingress, PortConf())
        if entry.spec.program == "user":
            try:
                d.users[ingress.ifindex] = entries.read_user_program(entry.spec)
            except InputError as e:
                raise ConfigError(f"{path}:{entry.line}: {e}") from None
    for group in config.groups:
        flags = maps.PORT_BROADCAST | (maps.PORT_EXCLUDE_INGRESS if group.exclude_ingress else 0)
        for name in group.members:
            port = link(name, group.line).ifindex
            d.ports[port] = config.ports.get(name, PortConf())
            d.flags[port] = flags
    for g in config.multicast:
        sources = frozenset(link(name, g.line).ifindex for name in g.sources)
        receivers = frozenset(link(name, g.line).ifindex for name in g.receivers)
        d.multicast[g.group] = RunningGroup(sources, receivers, g.exclude_ingress)
        for name in g.sources:
            d.ports.setdefault(d.links[name].ifindex, config.ports.get(name, PortConf()))
    for name, port_conf in config.ports.items():
        d.ports.setdefault(link(name, port_conf.line).ifindex, port_conf)
    return d


@dataclass(frozen=True)
class RunningEntry:
    egress: int
    spec: EgressSpec | None  # None: a user program whose source is not recorded
    user: maps.UserProg | None = None  # where a user program came from


@dataclass(frozen=True)
class RunningGroup:
    """A multicast group, running or desired."""

    sources: frozenset[int]
    receivers: frozenset[int]
    exclude_ingress: bool = False


@dataclass(frozen=True)
class Running:
    """What is set up, as the planner needs it (read from the dataplane once)."""

    attached: dict[int, str]  # port running this pin dir's program -> its mode
    settings: dict[int, maps.PortSettings]
    entries: dict[int, RunningEntry]
    members: dict[int, str]  # port -> its group
    has_egress: bool = True
    multicast: dict[str, RunningGroup] = field(default_factory=dict)  # by group address

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
    members = {port: name for name in dp.group_names() for port in dp.open_group(name).members()}
    settings = {p: s for p in ports if (s := dp.ports.get(p)) is not None}
    mcast = {
        addr.text: RunningGroup(g.sources, g.receivers, g.exclude_ingress)
        for addr, g in multicast.read_groups(dp).items()
    }
    return Running(attached, settings, found, members, dp.layout.has_egress, mcast)


def apply(pins: PinDir, path: str, dry_run: bool = False, force: bool = False) -> ApplyResult:
    """Make the running configuration what the file says: create what is missing,
    change what differs, remove what the file does not have.

    Raises ConfigError (the file: nothing changed), XdpfwdError, AttachError,
    BpfError, PrereqError; on any error or interrupt, the old state stays.
    """
    prereqs.require_privileges("apply")
    config = load_config(path)
    desired = resolve_config(config, path, netdev.links())
    if dry_run:
        return ApplyResult([s.text for s in _dry_run(pins, desired)], dry_run=True)
    _repair(pins)
    with change(
        pins,
        table=config.table,
        value=config.value,
        attach={port: conf.mode for port, conf in desired.ports.items()},
        force=force,
        check_layout=_layout_check(desired),
        replaceable=_is_orphan,
    ) as c:
        steps = plan(running_state(c.dp, c.links), desired, c.links)
        for step in steps:
            interrupts.check()  # between steps, an interrupt undoes those done
            log.info("%s", step.text)
            step.run(c)
    pairs = [(i, desired.links[e.egress].ifindex) for i, e in desired.entries.items()]
    for g in desired.multicast.values():
        pairs += [(s, r) for s in g.sources for r in g.receivers if s != r or not g.exclude_ingress]
    members = [desired.links[m].ifindex for g in config.groups for m in g.members]
    members += [s for g in desired.multicast.values() for s in sorted(g.sources)]
    warnings = (
        *c.notes,
        *(att.warning for att in c.attachments if att.warning),
        *health.warnings_for(sorted(set(pairs)), c.links),
        *health.flood_warnings(members, c.links, c.dp.frags),
    )
    for ingress, (text, func) in desired.users.items():
        shown = Path(desired.entries[ingress].spec.user_file or "").name
        warnings += tuple(entries.verdict_warnings(text, shown, func))
    return ApplyResult([s.text for s in steps], dry_run=False, warnings=warnings)


def _dry_run(pins: PinDir, desired: Desired) -> list[Step]:
    """The plan, changing nothing (not even broken pins, which apply would rebuild)."""
    broken = _broken(pins)
    if broken is not None:
        links = netdev.links()
        rebuild = Step(f"rebuild the pinned state in {pins.path}, which is broken")
        return [rebuild, *plan(NOTHING_RUNNING, desired, links)]
    with reading(pins) as dp:
        links = netdev.links()
        return plan(running_state(dp, links), desired, links)


def _is_orphan(link: netdev.Link) -> bool:
    """An xdpfwd program no pins here know (removed by hand): apply may replace it."""
    return prog_name(link.xdp_prog_id) == XDPFWD_PROG_NAME


def _layout_check(desired: Desired):
    def check(layout: Layout) -> None:
        if not layout.has_egress:
            for entry in desired.config.forward:
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
        teardown(pins)


def plan(running: Running, d: Desired, links: dict[int, netdev.Link]) -> list[Step]:
    """The steps from the running state to the desired one, in an order that keeps
    each port in one role at a time. Pure: what it decides on are its arguments."""
    names = {port: link.ifname for port, link in links.items()}
    wanted_member = {d.links[m].ifindex: g.name for g in d.config.groups for m in g.members}
    changed = [i for i, entry in d.entries.items() if _entry_differs(running, i, entry, d)]
    compiled: dict[int, int] = {}  # ingress -> user program fd, filled by the compile steps
    steps: list[Step] = []
    # Programs first: a file that does not compile changes nothing.
    for ingress in changed:
        if d.entries[ingress].spec.program == "user":
            text = f"compile {d.entries[ingress].spec.user_file}:{d.users[ingress][1]}"
            steps.append(Step(text, partial(_compile, d=d, ingress=ingress, into=compiled)))
    for ingress, entry in running.entries.items():
        if ingress not in d.entries:
            egress = names.get(entry.egress, entry.egress)
            text = f"remove entry {names[ingress]} -> {egress}"
            steps.append(Step(text, partial(_remove_entry, ingress=ingress)))
    for port, group in running.members.items():
        if wanted_member.get(port) != group:
            text = f"take {names.get(port, port)} out of group {group}"
            steps.append(Step(text, partial(_leave, group=group, port=port)))
    for group in sorted(set(running.multicast) - set(d.multicast)):
        text = f"remove multicast group {group}"
        steps.append(Step(text, partial(_set_mcast, group=group, want=None)))
    for port in sorted(set(running.settings) - set(d.ports)):
        steps.append(Step(f"detach from {names[port]}", partial(_release, port=port)))
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
        steps.append(Step(f"remove group {name}"))  # emptied above, unpinned at commit
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
    return steps


def _compile(c: Change, d: Desired, ingress: int, into: dict[int, int]) -> None:
    into[ingress] = entries.prog_fd(c, d.entries[ingress].spec, d.users[ingress])


def _remove_entry(c: Change, ingress: int) -> None:
    entries.remove(c, ingress)


def _release(c: Change, port: int) -> None:
    release(c.dp, port, c.links, c.undo)


def _create(c: Change, group: str) -> None:
    groups.create(c, group)


def _join(c: Change, group: str, port: int) -> None:
    groups.add_member(c.dp, c.dp.open_group(group), port, c.undo)


def _leave(c: Change, group: str, port: int) -> None:
    groups.remove_member(c.dp, c.dp.open_group(group), port, c.undo, c.resources)
    c.after_commit.append(lambda: groups.forget_pairs(c.dp, {port}))


def _describe_mcast(group: RunningGroup, names: dict[int, str]) -> str:
    text = f"from {', '.join(sorted(names[p] for p in group.sources))}"
    text += f" to {', '.join(sorted(names[p] for p in group.receivers))}"
    return text + (", exclude ingress" if group.exclude_ingress else "")


def _set_mcast(c: Change, group: str, want: RunningGroup | None) -> None:
    addr = multicast.parse_group(group)
    want = want or RunningGroup(frozenset(), frozenset())
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
    map_write(c.dp.ports.set, port, settings)
    if previous is not None:
        c.undo.callback(c.dp.ports.set, port, previous)


def _describe(entry: EntryConf) -> str:
    spec = entry.spec
    if spec.program == "user":
        return f"egress program {Path(spec.user_file).name}"
    if spec.rewrites:
        return "MAC rewrite"
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
