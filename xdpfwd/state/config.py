"""Declarative configuration: the YAML (or JSON) file `save` writes and `apply` reads.

    version: 1
    table: devmap-hash              # optional: devmap-hash or devmap
    value: devmap-val               # optional: devmap-val or ifindex
    ports:                          # optional: per-port attach mode and on-miss verdict
      eth1: {mode: native, on_miss: drop}
    forward:                        # forwarding entries, one direction each
      - from: eth1
        to: eth2
        egress: built-in            # built-in (default), none, {src_mac: egress,
                                    # dst_mac: MAC}, or {program: FILE.c, function: NAME}
      - from: eth5                  # balanced: flows spread over two or more ports
        to: [eth6, eth7, eth8]
        hash: symmetric             # optional: symmetric (default), l4, l3 or l2
        weights: [2, 1, 1]          # optional: one per port, 1 each by default
    groups:                         # broadcast groups
      - name: default
        exclude_ingress: true
        members: [eth3, eth4]
    multicast:                      # multicast groups
      - group: 239.1.1.1            # IPv4, IPv6 or MAC multicast address
        from: [eth1]                # optional: the sources (default: the receivers)
        to: [eth2, eth3]            # the receivers
        exclude_ingress: false

The file is parsed into nodes that keep their line, so every error says where it is.
Scalars are taken as written: YAML 1.1 would read some MAC addresses as numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from xdpfwd.errors import InputError
from xdpfwd.kernel import files
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import GROUP_NAME, MODE_WORDS, MODES, EgressSpec
from xdpfwd.state import buckets

# yaml is imported where a configuration is read or written (parse, dump): the
# commands that never read the recorded one (stats, its watch) skip its 10 ms.
if TYPE_CHECKING:
    import yaml

VERSION = 1
TABLES = tuple(maps.TABLE_TYPES)
VALUES = tuple(maps.VALUE_FORMATS)


class ConfigError(InputError):
    """An unusable configuration file (exit 2): `FILE:LINE: reason`."""


@dataclass(frozen=True)
class PortConf:
    mode: str = "auto"
    on_miss: str = "pass"
    line: int = 0


@dataclass(frozen=True)
class EntryConf:
    ingress: str
    egress: str
    spec: EgressSpec
    line: int = 0


@dataclass(frozen=True)
class BalancedConf:
    """A balanced entry: flows entering ingress spread over ports by weight."""

    ingress: str
    ports: tuple[str, ...]
    weights: tuple[int, ...]
    hash: str = "symmetric"
    spec: EgressSpec = EgressSpec()
    line: int = 0

    def weight_map(self) -> dict[str, int]:
        return dict(zip(self.ports, self.weights, strict=True))


@dataclass(frozen=True)
class GroupConf:
    name: str
    exclude_ingress: bool
    members: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class McastConf:
    group: str  # the address as xdpfwd writes it
    receivers: tuple[str, ...]
    sources: tuple[str, ...]
    exclude_ingress: bool = False
    line: int = 0


@dataclass(frozen=True)
class Config:
    table: str | None = None
    value: str | None = None
    ports: dict[str, PortConf] = field(default_factory=dict)
    forward: tuple[EntryConf, ...] = ()
    groups: tuple[GroupConf, ...] = ()
    balanced: tuple[BalancedConf, ...] = ()  # in the file's forward list, to: [...]
    multicast: tuple[McastConf, ...] = ()


class _Reader:
    """Walks composed YAML nodes; every error names the file and the line."""

    def __init__(self, nodes, path: str, check_files: bool = True):
        self.nodes = nodes  # the yaml.nodes module
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.check_files = check_files

    def fail(self, node_or_line, reason: str):
        line = node_or_line if isinstance(node_or_line, int) else node_or_line.start_mark.line + 1
        raise ConfigError(f"{self.path}:{line}: {reason}")

    def mapping(self, node, what: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, self.nodes.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        found: dict[str, yaml.Node] = {}
        for key, value in node.value:
            name = self.text(key, f"a key of {what}")
            if name not in allowed:
                self.fail(key, f"unknown key {name!r} in {what} (known: {', '.join(allowed)})")
            if name in found:
                self.fail(key, f"{name!r} appears twice in {what}")
            found[name] = value
        return found

    def sequence(self, node, what: str) -> list[yaml.Node]:
        if not isinstance(node, self.nodes.SequenceNode):
            self.fail(node, f"{what} must be a list")
        return list(node.value)

    def is_null(self, node) -> bool:
        return isinstance(node, self.nodes.ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def text(self, node, what: str) -> str:
        if not isinstance(node, self.nodes.ScalarNode) or node.value == "":
            self.fail(node, f"{what} must be a non-empty value")
        return node.value

    def choice(self, node, what: str, choices: tuple[str, ...]) -> str:
        value = self.text(node, what)
        if value not in choices:
            self.fail(node, f"{what} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def typed(self, node, what: str, tag: str, expected: str) -> str:
        """A scalar YAML reads as type tag (int, bool): 2 or true as written, not "2",
        "true" or !!float 2, which say their author meant another type."""
        value = self.text(node, what)
        if node.tag != "tag:yaml.org,2002:" + tag:
            kind = (
                "quoted" if node.style in ("'", '"') else "read as " + node.tag.rsplit(":", 1)[-1]
            )
            self.fail(node, f"{what} must be {expected}, not {value!r} ({kind})")
        return value

    def boolean(self, node, what: str) -> bool:
        return self.typed(node, what, "bool", "true or false").lower() in ("true", "yes", "on")


STDIN = "-"


def label(path: str) -> str:
    """How messages name the file at path: - is standard input."""
    return "<stdin>" if path == STDIN else path


def load(path: str) -> Config:
    """Read and check a configuration file: a regular file of at most
    files.MAX_INPUT_BYTES of UTF-8 text, or standard input for -. Raises
    ConfigError."""
    what = "configuration file"
    try:
        data = files.read_stdin(what) if path == STDIN else files.read_bounded(path, what)
        text = files.decode_text(data, label(path))
    except InputError as e:
        raise ConfigError(str(e)) from None
    return parse(text, label(path))


def parse(text: str, path: str = "<config>", check_files: bool = True) -> Config:
    """Without check_files, egress program files need not exist (a recorded
    configuration outlives them)."""
    import yaml

    r = _Reader(yaml.nodes, path, check_files)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        opened = ""
        if e.context and e.context_mark and e.context_mark.line + 1 != line:
            opened = f" ({e.context} on line {e.context_mark.line + 1})"
        raise ConfigError(
            f"{path}:{line}: not valid YAML or JSON: {e.problem or e}{opened}"
        ) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise ConfigError(
            f"{path}:{line}: not valid YAML or JSON: character U+{code:04X} is not allowed"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML or JSON: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be an xdpfwd configuration") from None
    if root is None:
        raise ConfigError(f"{path}:1: the file is empty")
    top = r.mapping(
        root, "the file", ("version", "table", "value", "ports", "forward", "groups", "multicast")
    )
    if "version" not in top:
        r.fail(root, f"no version (this xdpfwd reads version: {VERSION})")
    if r.typed(top["version"], "version", "int", str(VERSION)) != str(VERSION):
        r.fail(top["version"], f"version must be {VERSION}")
    table = r.choice(top["table"], "table", TABLES) if "table" in top else None
    value = r.choice(top["value"], "value", VALUES) if "value" in top else None
    ports = _ports(r, top["ports"]) if "ports" in top else {}
    entries = (
        [_entry(r, n) for n in r.sequence(top["forward"], "forward")] if "forward" in top else []
    )
    forward = tuple(e for e in entries if isinstance(e, EntryConf))
    groups = (
        tuple(_group(r, n) for n in r.sequence(top["groups"], "groups")) if "groups" in top else ()
    )
    balanced = tuple(e for e in entries if isinstance(e, BalancedConf))
    multicast = (
        tuple(_mcast(r, n) for n in r.sequence(top["multicast"], "multicast"))
        if "multicast" in top
        else ()
    )
    config = Config(table, value, ports, forward, groups, balanced, multicast)
    _check_roles(r, config)
    _check_multicast(r, config)
    return config


def _mode(r: _Reader, node) -> str:
    word = r.choice(node, "mode", (*MODES, *MODE_WORDS))
    return MODE_WORDS.get(word, word)


def _ports(r: _Reader, node) -> dict[str, PortConf]:
    ports = {}
    if not isinstance(node, r.nodes.MappingNode):
        r.fail(node, "ports must be a mapping of interface names")
    for key, value in node.value:
        name = r.text(key, "an interface name")
        if name in ports:
            r.fail(key, f"port {name} appears twice")
        fields_ = r.mapping(value, f"port {name}", ("mode", "on_miss"))
        ports[name] = PortConf(
            _mode(r, fields_["mode"]) if "mode" in fields_ else "auto",
            r.choice(fields_["on_miss"], "on_miss", ("pass", "drop"))
            if "on_miss" in fields_
            else "pass",
            key.start_mark.line + 1,
        )
    return ports


def _entry(r: _Reader, node) -> EntryConf | BalancedConf:
    fields_ = r.mapping(node, "a forward entry", ("from", "to", "egress", "hash", "weights"))
    for key in ("from", "to"):
        if key not in fields_:
            r.fail(node, f"a forward entry needs {key!r}")
    if isinstance(fields_["to"], r.nodes.SequenceNode):
        return _balanced(r, node, fields_)
    for key in ("hash", "weights"):
        if key in fields_:
            r.fail(fields_[key], f"{key} is for balanced entries (to: a list of ports)")
    ingress, egress = r.text(fields_["from"], "from"), r.text(fields_["to"], "to")
    if ingress == egress:
        r.fail(node, f"{ingress} forwards to itself")
    spec = _egress(r, fields_["egress"]) if "egress" in fields_ else EgressSpec()
    return EntryConf(ingress, egress, spec, node.start_mark.line + 1)


def _balanced(r: _Reader, node, fields_: dict) -> BalancedConf:
    ingress = r.text(fields_["from"], "from")
    ports = tuple(r.text(p, "a port") for p in r.sequence(fields_["to"], "to"))
    weights: tuple[int, ...] = (1,) * len(ports)
    if "weights" in fields_:
        items = r.sequence(fields_["weights"], "weights")
        texts = [r.typed(w, "a weight", "int", "a whole number") for w in items]
        # ASCII digits only (int() refuses some that isdigit() takes), and few: the
        # bound check below names the range, int() would refuse a 5000-digit one.
        if not all(t.isascii() and t.isdigit() for t in texts):
            r.fail(fields_["weights"], "weights are whole numbers")
        weights = tuple(int(t) if len(t) <= 9 else buckets.MAX_WEIGHT + 1 for t in texts)
    hash_mode = "symmetric"
    if "hash" in fields_:
        hash_mode = r.choice(fields_["hash"], "hash", tuple(maps.HASH_MODES))
    reason = buckets.problem(ingress, ports, weights)
    if reason:
        r.fail(node, reason)
    spec = _egress(r, fields_["egress"]) if "egress" in fields_ else EgressSpec()
    return BalancedConf(ingress, ports, weights, hash_mode, spec, node.start_mark.line + 1)


def _egress(r: _Reader, node) -> EgressSpec:
    if isinstance(node, r.nodes.ScalarNode):
        kind = r.text(node, "egress")
        if kind not in ("built-in", "none"):
            r.fail(
                node,
                f"egress must be built-in, none, or a mapping with src_mac/dst_mac "
                f"or program (and function), not {kind!r}",
            )
        return EgressSpec(program=kind)
    fields_ = r.mapping(node, "egress", ("src_mac", "dst_mac", "program", "function"))
    if "program" in fields_:
        if "src_mac" in fields_ or "dst_mac" in fields_:
            r.fail(node, "an egress program replaces the rewrite: rewrite in the program")
        program = r.text(fields_["program"], "program")
        path = os.path.normpath(os.path.join(r.base, program))
        if r.check_files and not os.path.isfile(path):
            r.fail(fields_["program"], f"no egress program file {path}")
        given = fields_.get("function")
        # null as well as absent: files saved by earlier versions wrote function: null.
        function = None if given is None or r.is_null(given) else r.text(given, "function")
        if function is not None and not function.isidentifier():
            r.fail(fields_["function"], f"{function!r} is not a C function name")
        return EgressSpec(program="user", user_file=path, user_func=function)
    if "function" in fields_:
        r.fail(node, "function needs program")
    if not fields_:
        r.fail(node, "egress needs src_mac, dst_mac or program")
    macs = {}
    for key in ("src_mac", "dst_mac"):
        if key in fields_:
            mac = r.text(fields_[key], key)
            if not (mac == "egress" and key == "src_mac"):
                try:
                    maps.rewrite_mac_bytes(mac, source=key == "src_mac")
                except ValueError as e:
                    r.fail(fields_[key], str(e))
            macs[key] = mac
    return EgressSpec(src_mac=macs.get("src_mac"), dst_mac=macs.get("dst_mac"))


def _group(r: _Reader, node) -> GroupConf:
    fields_ = r.mapping(node, "a group", ("name", "exclude_ingress", "members"))
    if "name" not in fields_ or "members" not in fields_:
        r.fail(node, "a group needs a name and members")
    name = r.text(fields_["name"], "name")
    if not GROUP_NAME.match(name):
        r.fail(fields_["name"], f"group name {name!r}: lowercase letters, digits, - or _")
    members = tuple(r.text(m, "a member") for m in r.sequence(fields_["members"], "members"))
    if not members:
        r.fail(fields_["members"], f"group {name} has no members")
    if len(set(members)) != len(members):
        r.fail(fields_["members"], f"group {name} lists a member twice")
    if len(members) > maps.GROUP_MAX_MEMBERS:
        r.fail(fields_["members"], f"a group has at most {maps.GROUP_MAX_MEMBERS} members")
    exclude = (
        r.boolean(fields_["exclude_ingress"], "exclude_ingress")
        if "exclude_ingress" in fields_
        else False
    )
    return GroupConf(name, exclude, members, node.start_mark.line + 1)


def _mcast(r: _Reader, node) -> McastConf:
    fields_ = r.mapping(node, "a multicast group", ("group", "to", "from", "exclude_ingress"))
    if "group" not in fields_ or "to" not in fields_:
        r.fail(node, "a multicast group needs a group address and receivers (to)")
    try:
        group = maps.McastAddr.parse(r.text(fields_["group"], "group")).text
    except ValueError as e:
        r.fail(fields_["group"], f"group {e}")
    ports = {}
    for key in ("to", "from"):
        if key in fields_:
            ports[key] = tuple(
                r.text(p, "an interface name") for p in r.sequence(fields_[key], key)
            )
            if not ports[key]:
                r.fail(fields_[key], f"multicast group {group}: {key} lists no interface")
            if len(set(ports[key])) != len(ports[key]):
                r.fail(fields_[key], f"multicast group {group}: {key} lists a port twice")
            if len(ports[key]) > maps.MCAST_MAX_MEMBERS:
                role = "receivers" if key == "to" else "sources"
                r.fail(
                    fields_[key],
                    f"multicast group {group}: {len(ports[key])} {role}; a group has at most "
                    f"{maps.MCAST_MAX_MEMBERS}",
                )
    exclude = (
        r.boolean(fields_["exclude_ingress"], "exclude_ingress")
        if "exclude_ingress" in fields_
        else False
    )
    sources = ports.get("from", ports["to"])
    return McastConf(group, ports["to"], sources, exclude, node.start_mark.line + 1)


def _check_multicast(r: _Reader, config: Config) -> None:
    if len(config.multicast) > maps.MCAST_MAX_GROUPS:  # before the work of making them
        extra = config.multicast[maps.MCAST_MAX_GROUPS]
        r.fail(extra.line, f"one multicast group too many: xdpfwd holds {maps.MCAST_MAX_GROUPS}")
    seen: dict[str, int] = {}
    for group in config.multicast:
        if group.group in seen:
            r.fail(
                group.line,
                f"multicast group {group.group} appears twice (line {seen[group.group]})",
            )
        seen[group.group] = group.line


def _check_roles(r: _Reader, config: Config) -> None:
    """A port forwards with one entry or floods in one group, never both."""
    forwarding: dict[str, int] = {}
    for entry in sorted((*config.forward, *config.balanced), key=lambda e: e.line):
        if entry.ingress in forwarding:
            r.fail(
                entry.line, f"{entry.ingress} already forwards (line {forwarding[entry.ingress]})"
            )
        forwarding[entry.ingress] = entry.line
    seen_groups: dict[str, int] = {}
    member_of: dict[str, str] = {}
    for group in config.groups:
        if group.name in seen_groups:
            r.fail(group.line, f"group {group.name} appears twice")
        seen_groups[group.name] = group.line
        for member in group.members:
            if member in forwarding:
                r.fail(
                    group.line,
                    f"{member} forwards (line {forwarding[member]}) and floods: "
                    "a port does one or the other",
                )
            if member in member_of:
                r.fail(group.line, f"{member} is already in group {member_of[member]}")
            member_of[member] = group.name


def entered(wanted: Config) -> set[str]:
    """The names that run xdpfwd's program in wanted for a role: where frames enter
    to be forwarded, flooded or copied."""
    names = {e.ingress for e in (*wanted.forward, *wanted.balanced)}
    names |= {m for g in wanted.groups for m in g.members}
    return names | {s for g in wanted.multicast for s in g.sources}


def renamed(wanted: Config, names: dict[str, str]) -> Config:
    """wanted with the port names of names (old -> new) replaced."""

    def n(name: str) -> str:
        return names.get(name, name)

    return replace(
        wanted,
        ports={n(name): conf for name, conf in wanted.ports.items()},
        forward=tuple(replace(e, ingress=n(e.ingress), egress=n(e.egress)) for e in wanted.forward),
        groups=tuple(replace(g, members=tuple(map(n, g.members))) for g in wanted.groups),
        balanced=tuple(
            replace(e, ingress=n(e.ingress), ports=tuple(map(n, e.ports))) for e in wanted.balanced
        ),
        multicast=tuple(
            replace(g, receivers=tuple(map(n, g.receivers)), sources=tuple(map(n, g.sources)))
            for g in wanted.multicast
        ),
    )


def to_dict(config: Config) -> dict:
    """The document form `save` writes (defaults left out)."""
    doc: dict = {"version": VERSION}
    if config.table:
        doc["table"] = config.table
    if config.value:
        doc["value"] = config.value
    ports = {name: _port_dict(p) for name, p in config.ports.items()}
    # A port on the defaults needs no line where another role names it; an egress
    # that runs xdpfwd (for its on-miss verdict) is named by its line alone.
    for name in ports.keys() - entered(config):
        ports[name] = ports[name] or {"on_miss": config.ports[name].on_miss}
    if any(ports.values()):
        doc["ports"] = {name: settings for name, settings in ports.items() if settings}
    if config.forward or config.balanced:
        doc["forward"] = [_entry_dict(e) for e in config.forward]
        doc["forward"] += [_balanced_dict(e) for e in config.balanced]
    if config.groups:
        doc["groups"] = [
            {"name": g.name, "exclude_ingress": g.exclude_ingress, "members": list(g.members)}
            for g in config.groups
        ]
    if config.multicast:
        doc["multicast"] = [_mcast_dict(g) for g in config.multicast]
    return doc


def _port_dict(port: PortConf) -> dict:
    defaults = PortConf()
    return {
        k: getattr(port, k) for k in ("mode", "on_miss") if getattr(port, k) != getattr(defaults, k)
    }


def _balanced_dict(entry: BalancedConf) -> dict:
    d: dict = {"from": entry.ingress, "to": list(entry.ports)}
    if entry.hash != "symmetric":
        d["hash"] = entry.hash
    if set(entry.weights) != {1}:
        d["weights"] = list(entry.weights)
    _egress_dict(d, entry.spec)
    return d


def _mcast_dict(group: McastConf) -> dict:
    d: dict = {"group": group.group}
    if group.sources != group.receivers:
        d["from"] = list(group.sources)
    d["to"] = list(group.receivers)
    d["exclude_ingress"] = group.exclude_ingress
    return d


def _entry_dict(entry: EntryConf) -> dict:
    d: dict = {"from": entry.ingress, "to": entry.egress}
    _egress_dict(d, entry.spec)
    return d


def _egress_dict(d: dict, spec: EgressSpec) -> None:
    if spec.program == "none":
        d["egress"] = "none"
    elif spec.program == "user":
        d["egress"] = {"program": spec.user_file}
        if spec.user_func is not None:  # (without it, the file's only function)
            d["egress"]["function"] = spec.user_func
    elif spec.rewrites:
        d["egress"] = {k: v for k, v in (("src_mac", spec.src_mac), ("dst_mac", spec.dst_mac)) if v}


def dump(config: Config, fmt: str = "yaml") -> str:
    doc = to_dict(config)
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    import yaml

    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
    return "# xdpfwd configuration: `xdpfwd apply FILE` restores it\n" + body
