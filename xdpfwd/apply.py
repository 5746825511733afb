"""`save` and `apply`: the running configuration as a file, and a file made the running
configuration: a plan of steps from the difference, run in one change that is undone
as a whole if a step fails or the command is interrupted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from . import doctor, entries, groups, interrupts, netdev, prereqs
from .bpf import maps, source
from .config import Config, ConfigError, EntryConf, GroupConf, PortConf
from .config import dump as dump_config
from .config import load as load_config
from .dataplane import Dataplane, Layout, reading
from .errors import XdpfwdError
from .model import EgressSpec
from .pins import PinDir
from .ports import XDPFWD_PROG_NAME, attach, map_write, prog_name, release, teardown
from .transaction import Change, change

log = logging.getLogger(__name__)
_VERDICT_NAMES = {v: k for k, v in maps.ON_MISS_VERDICTS.items()}


@dataclass(frozen=True)
class SaveResult:
    text: str
    warnings: list[str]


@dataclass(frozen=True)
class ApplyResult:
    steps: list[str]
    dry_run: bool
    warnings: tuple[str, ...] = ()


# --- save ----------------------------------------------------------------------------


def save(pins: PinDir, fmt: str = "yaml") -> SaveResult:
    """The running configuration, as the file `apply` restores it from."""
    prereqs.require_privileges()
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
        ports[link.ifname] = PortConf(mode, _VERDICT_NAMES.get(settings.on_miss, "pass"))
        entry = dp.fwd.get(port)
        if entry is None:
            continue
        egress = links.get(entry.egress_ifindex)
        if egress is None:
            warnings.append(f"entry of {link.ifname} left out: its egress device is gone")
            continue
        spec = entries.spec_of(dp, port, entry, egress)
        if spec is None:
            warnings.append(f"{link.ifname} -> {egress.ifname}: the source of its egress program "
                            "is not recorded; saved without it")  # fmt: skip
            spec = EgressSpec(program="none")
        forward.append(EntryConf(link.ifname, egress.ifname, spec))
    group_list = [
        GroupConf(g.name, g.exclude_ingress, tuple(m.ifname for m in g.members if m.ifname))
        for g in groups.group_infos(dp, links)
    ]
    layout = dp.layout
    return Config(layout.table, layout.value_format, ports, tuple(forward), tuple(group_list)), \
        warnings  # fmt: skip


# --- apply ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    text: str
    run: Callable[[Change], None] = lambda c: None


@dataclass
class _Desired:
    """The file, resolved against this namespace's devices."""

    config: Config
    path: str
    links: dict[str, netdev.Link] = field(default_factory=dict)
    ports: dict[int, PortConf] = field(default_factory=dict)
    flags: dict[int, int] = field(default_factory=dict)
    entries: dict[int, EntryConf] = field(default_factory=dict)
    users: dict[int, tuple[str, str]] = field(default_factory=dict)  # ingress -> text, func

    def by_index(self) -> dict[int, netdev.Link]:
        return {link.ifindex: link for link in self.links.values()}

    def link(self, name: str, line: int) -> netdev.Link:
        found = self.links.get(name) or netdev.link_by_name(name)
        if found is None:
            raise ConfigError(f"{self.path}:{line}: no such interface: {name}")
        if found.loopback:
            raise ConfigError(f"{self.path}:{line}: {name} is a loopback device")
        self.links[name] = found
        return found


def _resolve(config: Config, path: str) -> _Desired:
    d = _Desired(config, path)
    for entry in config.forward:
        ingress = d.link(entry.ingress, entry.line)
        d.link(entry.egress, entry.line)
        d.entries[ingress.ifindex] = entry
        d.ports[ingress.ifindex] = config.ports.get(entry.ingress, PortConf())
        if entry.spec.program == "user":
            d.users[ingress.ifindex] = _user_program(entry, path)
    for group in config.groups:
        flags = maps.PORT_BROADCAST | (maps.PORT_EXCLUDE_INGRESS if group.exclude_ingress else 0)
        for name in group.members:
            port = d.link(name, group.line).ifindex
            d.ports[port] = config.ports.get(name, PortConf())
            d.flags[port] = flags
    for name, port_conf in config.ports.items():
        d.ports.setdefault(d.link(name, port_conf.line).ifindex, port_conf)
    return d


def _user_program(entry: EntryConf, path: str) -> tuple[str, str]:
    text = Path(entry.spec.user_file).read_text()
    func = entry.spec.user_func or source.user_function(text)
    if func is None:
        raise ConfigError(f"{path}:{entry.line}: {entry.spec.user_file} has no single "
                          "`int NAME(struct xdp_md *ctx)`: give its function")  # fmt: skip
    return text, func


def apply(pins: PinDir, path: str, dry_run: bool = False, force: bool = False) -> ApplyResult:
    """Make the running configuration what the file says: create what is missing,
    change what differs, remove what the file does not have.

    Raises ConfigError (the file: nothing changed), XdpfwdError, AttachError,
    BpfError, PrereqError; on any error or interrupt, the old state stays.
    """
    desired = _resolve(load_config(path), path)
    prereqs.require_privileges()
    _repair(pins)
    if dry_run:
        with reading(pins) as dp:
            return ApplyResult([s.text for s in _plan(dp, desired)], dry_run=True)
    by_index = desired.by_index()
    attach_modes = {by_index[port]: conf.mode for port, conf in desired.ports.items()}
    with change(pins, desired.config.table, desired.config.value, attach_modes, force,
                _layout_check(desired), switch=True, replaceable=_is_orphan) as c:  # fmt: skip
        steps = _plan(c.dp, desired)
        for step in steps:
            interrupts.check()  # between steps, an interrupt undoes those done
            log.info("%s", step.text)
            step.run(c)
    pairs = [(i, desired.links[e.egress].ifindex) for i, e in desired.entries.items()]
    return ApplyResult([s.text for s in steps], dry_run=False,
                       warnings=doctor.warnings_for(pairs))  # fmt: skip


def _is_orphan(link: netdev.Link) -> bool:
    """An xdpfwd program no pins here know (removed by hand): apply may replace it."""
    return prog_name(link.xdp_prog_id) == XDPFWD_PROG_NAME


def _layout_check(desired: _Desired):
    def check(layout: Layout) -> None:
        if not layout.has_egress:
            for entry in desired.config.forward:
                if entry.spec.program == "user" or entry.spec.rewrites:
                    raise ConfigError(f"{desired.path}:{entry.line}: egress programs need "
                                      "bpf_devmap_val entries (value: devmap-val)")  # fmt: skip

    return check


def _repair(pins: PinDir) -> None:
    """Pins removed by hand leave state that cannot be opened: start it afresh."""
    try:
        with reading(pins):
            return
    except XdpfwdError as e:
        log.warning("%s; rebuilding it from the file", e)
    with pins.locked(create=False):
        teardown(pins)


def _plan(dp: Dataplane | None, d: _Desired) -> list[Step]:
    """The steps from the running state to the desired one, in an order that keeps
    each port in one role at a time."""
    links = netdev.links()
    names = {port: link.ifname for port, link in links.items()}
    if dp is None:
        current_ports, current_entries, members, group_names = set(), {}, {}, set()
    else:
        current_ports = {p for p in dp.ports.ifindexes() if p in links}
        current_entries = {p: e for p in current_ports if (e := dp.fwd.get(p))}
        group_names = set(dp.group_names())
        members = {port: name for name in group_names for port in dp.open_group(name).members()}
    wanted_member = {d.links[m].ifindex: g.name for g in d.config.groups for m in g.members}
    changed = [i for i, entry in d.entries.items() if _entry_differs(dp, i, entry, d)]
    compiled: dict[int, int] = {}  # ingress -> user program fd, filled by the compile steps
    steps: list[Step] = []
    # Programs first: a file that does not compile changes nothing.
    for ingress in changed:
        if d.entries[ingress].spec.program == "user":
            text = f"compile {d.entries[ingress].spec.user_file}:{d.users[ingress][1]}"
            steps.append(Step(text, partial(_compile, d=d, ingress=ingress, into=compiled)))
    for ingress, entry in current_entries.items():
        if ingress not in d.entries:
            egress = names.get(entry.egress_ifindex, entry.egress_ifindex)
            text = f"remove entry {names[ingress]} -> {egress}"
            steps.append(Step(text, partial(_remove_entry, ingress=ingress)))
    for port, group in members.items():
        if wanted_member.get(port) != group:
            text = f"take {names.get(port, port)} out of group {group}"
            steps.append(Step(text, partial(_leave, group=group, port=port)))
    for port in current_ports - set(d.ports):
        steps.append(Step(f"detach from {names[port]}", partial(_release, port=port)))
    for port, conf in d.ports.items():
        steps += _port_steps(dp, d, links[port], conf)
    for group in d.config.groups:
        if group.name not in group_names:
            steps.append(Step(f"create group {group.name}", partial(_create, group=group.name)))
        for member in group.members:
            port = d.links[member].ifindex
            if members.get(port) != group.name:
                text = f"add {member} to group {group.name}"
                steps.append(Step(text, partial(_join, group=group.name, port=port)))
    for name in sorted(group_names - {g.name for g in d.config.groups}):
        steps.append(Step(f"remove group {name}"))  # emptied above, unpinned at commit
    for ingress in changed:
        entry = d.entries[ingress]
        text = f"forward {entry.ingress} -> {entry.egress} ({_describe(entry)})"
        steps.append(Step(text, partial(_write, d=d, ingress=ingress, compiled=compiled)))
    return steps


def _compile(c: Change, d: _Desired, ingress: int, into: dict[int, int]) -> None:
    into[ingress] = entries.prog_fd(c, d.entries[ingress].spec, d.users[ingress])


def _remove_entry(c: Change, ingress: int) -> None:
    entries.remove(c, ingress)


def _release(c: Change, port: int) -> None:
    release(c.dp, port, netdev.links(), c.undo)


def _create(c: Change, group: str) -> None:
    groups.create(c, group)


def _join(c: Change, group: str, port: int) -> None:
    groups.add_member(c.dp, c.dp.open_group(group), port, c.undo)


def _leave(c: Change, group: str, port: int) -> None:
    groups.remove_member(c.dp, c.dp.open_group(group), port, c.undo, c.resources)
    c.after_commit.append(lambda: groups.forget_pairs(c.dp, {port}))


def _port_steps(dp, d: _Desired, link: netdev.Link, conf: PortConf) -> list[Step]:
    port = link.ifindex
    settings = maps.PortSettings(maps.ON_MISS_VERDICTS[conf.on_miss], d.flags.get(port, 0))
    attached = dp is not None and link.xdp_prog_id == dp.prog_id
    switch = attached and conf.mode != "auto" and conf.mode != link.xdp_mode
    if not attached or switch:
        if switch:
            text = f"re-attach {link.ifname} in {conf.mode} mode"
        else:
            text = f"attach to {link.ifname} ({conf.mode})"
        return [Step(text, partial(_attach, port=port, mode=conf.mode, settings=settings))]
    current = dp.ports.get(port)
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
    attach(c.dp, _plan_of(c, port), mode, settings, c.undo)


def _plan_of(c: Change, port: int):
    return next(plan for plan in c.plans if plan.link.ifindex == port)


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
    return "no egress program" if spec.program == "none" else "built-in egress program"


def _entry_differs(dp: Dataplane | None, ingress: int, entry: EntryConf, d: _Desired) -> bool:
    if dp is None:
        return True
    current = dp.fwd.get(ingress)
    egress = d.links[entry.egress]
    if current is None or current.egress_ifindex != egress.ifindex:
        return True
    if not dp.layout.has_egress:
        return False  # plain ifindex entries: the egress is all there is
    spec = entry.spec
    if spec.program == "user":
        origin = dp.user_progs.get(current.egress_prog_id)
        text, func = d.users[ingress]
        want = (spec.user_file, func, entries.source_digest(text))
        return origin is None or (origin.path, origin.function, origin.digest) != want
    have = entries.spec_of(dp, ingress, current, egress)
    if have is None:
        return True
    return (have.program, entries.rewrite_of(have, egress)) != (
        spec.program,
        entries.rewrite_of(spec, egress),
    )


def _write(c: Change, d: _Desired, ingress: int, compiled: dict[int, int]) -> None:
    entry = d.entries[ingress]
    egress = d.links[entry.egress]
    spec = entry.spec
    if not c.dp.layout.has_egress or spec.program == "none":
        prog_fd = 0
    elif spec.program == "user":
        prog_fd = compiled[ingress]
    else:
        prog_fd = entries.prog_fd(c, spec, None)
    entries.write(c, ingress, egress.ifindex, prog_fd, entries.rewrite_of(spec, egress))
