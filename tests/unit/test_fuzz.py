"""Property tests: whatever the arguments or the configuration file, xdpfwd answers
with a result or one error line and a documented exit code, never a traceback."""

import json
import os
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xdpfwd.cli import cli
from xdpfwd.kernel import netns
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import EgressSpec
from xdpfwd.state import config
from xdpfwd.state.config import ConfigError

from ..strategies import CONFIG_DOCS
from .commands import COMMANDS
from .fake_ops import FakeOps

OPTIONS = sorted(
    {opt for _, c in COMMANDS for p in c.params for opt in p.opts}
    | {opt for p in cli.params for opt in p.opts}
)
CHOICES = sorted(
    {choice for _, c in COMMANDS for p in c.params for choice in getattr(p.type, "choices", ())}
)
WORDS = sorted({w for path, _ in COMMANDS for w in path})
# No "/" in free text: an --output path must stay inside the test's directory.
TEXT = st.text(string.ascii_letters + string.digits + "-_.:@ \t\x00é", max_size=12)
TOKENS = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(OPTIONS),
    st.sampled_from(CHOICES),
    st.sampled_from(["eth1", "eth2", "eth3", "17", "good.yaml", "bad.yaml", "out.json"]),
    st.integers(-5, 70000).map(str),
    TEXT,
)

GOOD = "version: 1\nforward:\n  - {from: eth1, to: eth2}\n"
BAD = "version: 1\nforward:\n  - {from: eth1, to: eth1}\n"


def invoke(args: list[str]):
    with tempfile.TemporaryDirectory() as scratch:
        cwd = os.getcwd()
        os.chdir(scratch)  # where relative --output and FILE arguments land
        try:
            Path("good.yaml").write_text(GOOD)
            Path("bad.yaml").write_text(BAD)
            return CliRunner().invoke(cli, args, obj=FakeOps(), env={}, catch_exceptions=False)
        finally:
            os.chdir(cwd)


def verbosity(args: list[str]) -> int:
    """How many times -v is given before anything that could take it as a value."""
    return sum(a.count("v") for a in args if a.startswith("-") and set(a[1:]) == {"v"}) + sum(
        a == "--verbose" for a in args
    )


def netns_values(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--netns"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=7))
def test_any_arguments_give_a_result_or_one_error_line(args):
    # Entering a namespace that happens to exist would move this test process.
    assume(not any(n and "/" not in n and netns.exists(n) for n in netns_values(args)))
    result = invoke(args)
    assert result.exit_code in (0, 1, 2), (args, result.stderr)
    if verbosity(args) < 2:  # -vv prints the traceback of an error on purpose
        assert "Traceback" not in result.stdout + result.stderr
    if result.exit_code != 0:
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), (args, result.stderr)
        assert not lines[-1].startswith("error: unexpected "), (args, result.stderr)  # a bug


# --- configuration files --------------------------------------------------------------


def parse_or_refuse(text: str):
    try:
        return config.parse(text, "f.yaml")
    except ConfigError as e:
        assert str(e).startswith("f.yaml:"), str(e)
        assert "\n" not in str(e)
        return None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_with_a_reason(text):
    parse_or_refuse(text)


@settings(max_examples=500, deadline=None)
@given(CONFIG_DOCS, st.booleans())
def test_any_document_parses_or_is_refused_with_its_line(doc, as_json):
    text = json.dumps(doc, indent=1) if as_json else yaml.safe_dump(doc)
    parsed = parse_or_refuse(text)
    if parsed is not None:  # what parsed dumps and parses back the same
        assert config.to_dict(config.parse(config.dump(parsed), "g.yaml")) == config.to_dict(parsed)


NAMES = st.sampled_from([f"eth{i}" for i in range(1, 9)])
UNICAST_MACS = st.sampled_from(["02:00:00:00:00:01", "0a:1b:2c:3d:4e:5f"])
MACS = st.one_of(UNICAST_MACS, st.just("ff:ff:ff:ff:ff:ff"))
SPECS = st.one_of(
    st.just(EgressSpec()),
    st.just(EgressSpec(program="none")),
    st.builds(EgressSpec, src_mac=st.one_of(st.just("egress"), UNICAST_MACS), dst_mac=MACS),
    st.builds(EgressSpec, dst_mac=MACS),
)


@st.composite
def configs(draw):
    ports = draw(st.lists(NAMES, unique=True, min_size=2, max_size=8))
    split = draw(st.integers(0, len(ports)))
    forwarding, flooding = ports[:split], ports[split:]
    balancing = draw(st.lists(st.sampled_from(forwarding), unique=True)) if forwarding else []
    forward = tuple(
        config.EntryConf(p, draw(NAMES.filter(lambda n, p=p: n != p)), draw(SPECS))
        for p in forwarding
        if p not in balancing
    )
    balanced = []
    for p in balancing:
        egress = draw(st.lists(NAMES.filter(lambda n, p=p: n != p), unique=True, min_size=2))
        weights = draw(st.lists(st.integers(1, 9), min_size=len(egress), max_size=len(egress)))
        hash_mode = draw(st.sampled_from(list(maps.HASH_MODES)))
        spec = draw(SPECS)
        balanced.append(config.BalancedConf(p, tuple(egress), tuple(weights), hash_mode, spec))
    groups = ()
    if flooding:
        groups = (
            config.GroupConf(
                draw(st.sampled_from(["default", "cams", "g-2"])),
                draw(st.booleans()),
                tuple(flooding),
            ),
        )
    modes = st.builds(
        config.PortConf, st.sampled_from(config.MODES), st.sampled_from(["pass", "drop"])
    )
    addresses = st.lists(st.sampled_from(GROUPS), unique=True, max_size=3)
    multicast = tuple(_mcast_conf(draw, address, ports) for address in draw(addresses))
    return config.Config(
        draw(st.sampled_from([None, *config.TABLES])),
        draw(st.sampled_from([None, *config.VALUES])),
        draw(st.dictionaries(st.sampled_from(ports), modes)),
        forward,
        groups,
        tuple(balanced),
        multicast,
    )


GROUPS = ["239.1.1.1", "239.129.1.1", "ff3e::1:1", "01:00:5e:00:00:fb"]


def _mcast_conf(draw, address: str, ports: list[str]) -> config.McastConf:
    receivers = tuple(draw(st.lists(st.sampled_from(ports), unique=True, min_size=1)))
    bus = draw(st.booleans())
    sources = (
        receivers if bus else tuple(draw(st.lists(st.sampled_from(ports), unique=True, min_size=1)))
    )
    return config.McastConf(address, receivers, sources, draw(st.booleans()))


@settings(max_examples=200, deadline=None)
@given(configs(), st.sampled_from(["yaml", "json"]))
def test_saved_configurations_read_back_the_same(wanted, fmt):
    text = config.dump(wanted, fmt)
    assert config.to_dict(config.parse(text, "saved")) == config.to_dict(wanted)


@pytest.mark.parametrize("function", ["f", None], ids=["named", "the file's only one"])
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_user_program_is_saved_by_absolute_path(tmp_path, function, fmt):
    program = tmp_path / "prog.c"
    program.write_text("int f(struct xdp_md *ctx) { return XDP_PASS; }\n")
    spec = EgressSpec(program="user", user_file=str(program), user_func=function)
    wanted = config.Config(forward=(config.EntryConf("eth1", "eth2", spec),))
    elsewhere = tmp_path / "sub" / "x.yaml"
    os.makedirs(elsewhere.parent)
    text = config.dump(wanted, fmt)
    assert ("function" in text) == (function is not None)
    parsed = config.parse(text, str(elsewhere))
    assert parsed.forward[0].spec == wanted.forward[0].spec


@pytest.mark.parametrize("null", ["null", "~", ""])
def test_a_null_function_is_the_files_only_one(tmp_path, null):
    # (as earlier versions saved it, and kept it in the recorded configuration)
    program = tmp_path / "prog.c"
    program.write_text("int f(struct xdp_md *ctx) { return XDP_PASS; }\n")
    egress = f"{{program: {program}, function: {null}}}"
    text = f"version: 1\nforward:\n  - {{from: a, to: b, egress: {egress}}}\n"
    assert config.parse(text, "f.yaml").forward[0].spec.user_func is None
    entry = {"from": "a", "to": "b", "egress": {"program": str(program), "function": None}}
    as_json = json.dumps({"version": 1, "forward": [entry]})
    assert config.parse(as_json, "f.json").forward[0].spec.user_func is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("version: 1\nversion: 1\n", "2: 'version' appears twice"),
        (
            "version: 1\nforward:\n  - {from: a, to: b}\n  - {from: a, to: c}\n",
            "4: a already forwards (line 3)",
        ),
        ("version: 1\ngroups:\n  - {name: g, members: [a, a]}\n", "3: group g lists a member"),
        ("version: 1\ngroups:\n  - {name: Bad!, members: [a]}\n", "3: group name 'Bad!'"),
        (
            "version: 1\nforward:\n  - {from: a, to: b, egress: {function: f}}\n",
            "3: function needs program",
        ),
        (
            "version: 1\nforward:\n  - {from: a, to: b, egress: {src_mac: 'ff:ff:ff:ff:ff:ff'}}\n",
            "3: ff:ff:ff:ff:ff:ff is a group address; a source address must be unicast",
        ),
        ("version: 1\nports:\n  a: {on_miss: maybe}\n", "3: on_miss must be one of pass, drop"),
        (
            "version: 1\nforward:\n  - {from: a, to: b, egress: fancy}\n",
            "3: egress must be built-in, none, or a mapping with src_mac/dst_mac or program",
        ),
        ("[1, 2]\n", "1: the file must be a mapping"),
        ("", "1: the file is empty"),
        ("forward: []\n", "1: no version"),
        ("version: 1\nforward: \x07\n", "2: not valid YAML or JSON: character U+0007"),
        ("[" * 5000, " nested too deeply"),
        ("version: 1\nforward:\n  - {from: a, to: [b]}\n", "3: a balanced entry needs two"),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c], weights: [1]}\n",
            "3: 1 weights for 2 egress ports",
        ),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c], hash: l7}\n",
            "3: hash must be one of symmetric, l4, l3, l2",
        ),
        ("version: 1\nforward:\n  - {from: a, to: b, hash: l4}\n", "3: hash is for balanced"),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c], weights: [x, 1]}\n",
            "3: a weight must be a whole number, not 'x' (read as str)",
        ),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c], weights: [!!float 2, 1]}\n",
            "3: a weight must be a whole number, not '2' (read as float)",
        ),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c], weights: [0x10, 1]}\n",
            "3: weights are whole numbers",
        ),
        ('version: "1"\n', "1: version must be 1, not '1' (quoted)"),
        (
            "version: 1\ngroups:\n  - {name: g, members: [a, b], exclude_ingress: 'yes'}\n",
            "3: exclude_ingress must be true or false, not 'yes' (quoted)",
        ),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c], weights: [1, " + "9" * 5000 + "]}\n",
            "3: weights are whole numbers from 1 to 255",
        ),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c], weights: [1, \u00b2]}\n",
            "3: a weight must be a whole number",
        ),
        (
            "version: 1\nforward:\n  - {from: a, to: [b, c]}\n  - {from: a, to: d}\n",
            "4: a already forwards (line 3)",
        ),
        (
            "version: 1\nmulticast:\n  - {group: 10.0.0.1, to: [a]}\n",
            "3: group 10.0.0.1 is not a multicast address",
        ),
        ("version: 1\nmulticast:\n  - {group: 239.1.1.1}\n", "3: a multicast group needs"),
        (
            "version: 1\nmulticast:\n  - {group: 239.1.1.1, to: [a, a]}\n",
            "3: multicast group 239.1.1.1: to lists a port twice",
        ),
        (
            "version: 1\nmulticast:\n  - {group: 'ff3e::1:1', to: [a]}\n"
            "  - {group: 'FF3E:0::1:1', to: [b]}\n",
            "4: multicast group ff3e::1:1 appears twice (line 3)",
        ),
        (
            "version: 1\nmulticast:\n  - {group: 239.1.1.1, to: [a], from: ["
            + ", ".join(f"s{i}" for i in range(65))
            + "]}\n",
            "3: multicast group 239.1.1.1: 65 sources; a group has at most 64",
        ),
        (
            "version: 1\nmulticast:\n"
            + "".join(f"  - {{group: 239.1.{i >> 8}.{i & 255}, to: [a]}}\n" for i in range(1025)),
            "1027: one multicast group too many: xdpfwd holds 1024",
        ),
    ],
    ids=[
        "twice",
        "forwards-twice",
        "member-twice",
        "group-name",
        "function-alone",
        "group-source-mac",
        "on-miss",
        "egress-word",
        "not-mapping",
        "empty",
        "no-version",
        "control-character",
        "deep",
        "balanced-one-port",
        "balanced-weights",
        "balanced-hash",
        "hash-on-single",
        "weights-not-numbers",
        "weights-tagged-float",
        "weights-hexadecimal",
        "version-quoted",
        "boolean-quoted",
        "weights-huge",
        "weights-superscript",
        "balanced-then-single",
        "multicast-unicast-group",
        "multicast-no-receivers",
        "multicast-port-twice",
        "multicast-group-twice",
        "multicast-too-many-sources",
        "multicast-too-many-groups",
    ],
)
def test_refusals_name_the_line(text, reason):
    with pytest.raises(ConfigError) as refused:
        config.parse(text, "f.yaml")
    assert str(refused.value).startswith(f"f.yaml:{reason}"), str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_renamed_port_is_renamed_in_every_role():
    text = """version: 1
ports: {pa: {on_miss: drop}}
forward:
  - {from: pa, to: pb}
  - {from: pc, to: [pa, pb]}
groups:
  - {name: g, exclude_ingress: true, members: [pd, pe]}
multicast:
  - {group: 239.1.1.1, from: [pa], to: [pb, pa]}
"""
    renamed = config.renamed(config.parse(text, "f.yaml"), {"pa": "qx", "pd": "qd"})
    again = text.replace("pa", "qx").replace("pd", "qd")
    assert config.to_dict(renamed) == config.to_dict(config.parse(again, "f.yaml"))
