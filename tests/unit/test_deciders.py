"""The pure deciders, table by table: given the links and state they decide on as
arguments, they need no root, no netlink and no BPF."""

from dataclasses import replace

import pytest

from xdpfwd.errors import AttachError, InputError
from xdpfwd.kernel import netdev, offloads
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import DEFAULT_EGRESS, EgressSpec, Iface
from xdpfwd.ops.applying import (
    NOTHING_RUNNING,
    Running,
    RunningBalanced,
    RunningEntry,
    plan,
    resolve_config,
)
from xdpfwd.options import spread_values
from xdpfwd.state import buckets, config
from xdpfwd.state.entries import check_spec, rewrite_of
from xdpfwd.state.health import (
    entry_problems,
    forwarding_loop,
    port_state,
    problems,
    sender_problems,
)
from xdpfwd.state.multicast import GroupPorts, copies_of
from xdpfwd.state.pins import PinDir
from xdpfwd.state.ports import plan_attach

OURS = 40
PINS = PinDir("/sys/fs/bpf/xdpfwd")


def link(ifindex, name, *, prog=0, mode=None, mtu=1500, kind="veth", loopback=False):
    return netdev.Link(ifindex, name, kind, True, loopback, mtu, prog, mode)


ETH1 = link(2, "eth1")
ETH2 = link(3, "eth2")
ETH3 = link(4, "eth3")
LINKS = {lk.ifindex: lk for lk in (ETH1, ETH2, ETH3)}


# --- ports.plan_attach -------------------------------------------------------------


@pytest.mark.parametrize(
    "current, mode, force, expect",
    [
        (ETH1, "auto", False, ("attach", 0)),
        (link(2, "eth1", prog=OURS, mode="native"), "auto", False, ("keep", 0)),
        (link(2, "eth1", prog=OURS, mode="native"), "native", False, ("keep", 0)),
        (link(2, "eth1", prog=OURS, mode="native"), "generic", False, ("switch", 0)),
        (link(2, "eth1", prog=99, mode="native"), "auto", False, AttachError),
        (link(2, "eth1", prog=99, mode="native"), "auto", True, ("attach", 99)),
    ],
    ids=[
        "free port",
        "ours already",
        "ours in the mode asked",
        "ours in another mode",
        "foreign, refused",
        "foreign, forced",
    ],
)
def test_plan_attach(current, mode, force, expect):
    if isinstance(expect, type):
        with pytest.raises(expect):
            plan_attach(PINS, current, OURS, mode, force)
        return
    got = plan_attach(PINS, current, OURS, mode, force)
    what = "keep" if got.keep else "switch" if got.switch else "attach"
    assert (what, got.foreign_prog_id) == expect


# --- entries.check_spec ------------------------------------------------------------


def test_a_source_address_from_a_device_without_one_is_refused():
    tun = netdev.Link(9, "tun0", "tun", True, False, 1500, 0, None, None)
    with pytest.raises(InputError, match="tun0 has no MAC address"):
        rewrite_of(EgressSpec(src_mac="egress"), tun)
    spec = EgressSpec(dst_mac="02:00:5e:00:53:01")
    assert rewrite_of(spec, tun) == maps.Rewrite(None, "02:00:5e:00:53:01")


@pytest.mark.parametrize(
    "spec, bidirectional, error",
    [
        (EgressSpec(), True, None),
        (EgressSpec(program="none"), True, None),
        (EgressSpec(src_mac="egress", dst_mac="02:00:5e:00:53:01"), False, None),
        (EgressSpec(program="user", user_file="f.c", src_mac="egress"), False, "replaces"),
        (EgressSpec(program="none", dst_mac="02:00:5e:00:53:01"), False, "no program"),
        (EgressSpec(dst_mac="02:00:5e:00:53:01"), True, "per entry"),
        (EgressSpec(dst_mac="02:00:5e:00:53"), False, "--dst-mac"),
        (EgressSpec(dst_mac="egress"), False, "only --src-mac"),
        (EgressSpec(src_mac="01:00:5e:00:00:01"), False, "--src-mac: .* must be unicast"),
        (EgressSpec(src_mac="00:00:00:00:00:00"), False, "--src-mac: .* null address"),
        (EgressSpec(dst_mac="00:00:00:00:00:00"), False, "--dst-mac: .* null address"),
        (EgressSpec(dst_mac="01:00:5e:00:00:01"), False, None),
        (EgressSpec(dst_mac="+1:+2:+3:+4:+5:+6"), False, "--dst-mac: .* is not a MAC"),
        (EgressSpec(src_mac="0x:00:00:00:00:00"), False, "--src-mac: .* is not a MAC"),
        (EgressSpec(src_mac=""), False, "--src-mac: '' is not a MAC"),
    ],
    ids=[
        "default both ways",
        "none both ways",
        "rewrite",
        "user program and rewrite",
        "rewrite without a program",
        "rewrite both ways",
        "short MAC",
        "dst-mac egress",
        "group source address",
        "zero source address",
        "zero destination address",
        "group destination address",
        "signed bytes",
        "0x byte",
        "empty",
    ],
)
def test_check_spec(spec, bidirectional, error):
    if error is None:
        check_spec(spec, bidirectional)
    else:
        with pytest.raises(InputError, match=error):
            check_spec(spec, bidirectional)


# --- health.entry_problems ---------------------------------------------------------


@pytest.mark.parametrize(
    "ingress, egress, features, problems",
    [
        (link(2, "eth1", mode="native"), ETH2, {3: netdev.XDP_ACT_NDO_XMIT}, []),
        (link(2, "eth1", mode="native"), None, None, ["is gone"]),
        (link(2, "eth1", mode="native"), ETH2, {3: 0}, ["cannot take frames"]),
        (link(2, "eth1", mode="generic"), ETH2, {3: 0}, []),
        (link(2, "eth1", mode="native", mtu=9000), ETH2, None, ["MTU 1500"]),
        (link(2, "eth1", mode="native"), link(3, "eth2", kind=None), {3: 0}, ["cannot take"]),
    ],
    ids=["fine", "egress gone", "veth peer without GRO", "generic", "smaller MTU", "driver"],
)
def test_entry_problems(ingress, egress, features, problems):
    found = entry_problems(ingress, egress, features)
    assert len(found) == len(problems)
    for problem, expected in zip(found, problems, strict=True):
        assert expected in problem.text and problem.fix


@pytest.mark.parametrize("floods, fix", [(False, "dev b mtu 9000"), (True, "dev a mtu 1500")])
def test_an_mtu_fix_lowers_a_flooding_ingress_past_what_a_group_can_flood(floods, fix):
    ingress, egress = link(2, "a", mode="native", mtu=9000), link(3, "b")
    (problem,) = entry_problems(ingress, egress, {3: netdev.XDP_ACT_NDO_XMIT}, None, floods)
    assert problem.kind == "mtu" and problem.fix.endswith(f"ip link set {fix}")


def test_entry_problems_name_the_fix_by_kind():
    veth = entry_problems(link(2, "a", mode="native"), link(3, "b"), {3: 0})
    other = entry_problems(link(2, "a", mode="native"), link(3, "b", kind=None), {3: 0})
    assert "GRO" in veth[0].fix and "--mode generic" in other[0].fix


HOSTNS = offloads.Namespace(name="hostns")


def peer(port, name="h0", namespace=HOSTNS):
    return offloads.Peer(port, name, namespace, sock=None)


@pytest.mark.parametrize("peer_mtu, found", [(9000, 0), (1500, 1), (None, 0)])
def test_a_veth_peer_with_a_smaller_mtu_drops_the_longer_frames(peer_mtu, found):
    egress_peer = offloads.Peer(3, "h0", HOSTNS, sock=None, mtu=peer_mtu)
    ingress = link(2, "a", mode="native", mtu=9000)
    egress = link(3, "b", mtu=9000)
    problems = entry_problems(ingress, egress, {3: netdev.XDP_ACT_NDO_XMIT}, egress_peer)
    assert len(problems) == found
    if found:
        assert problems[0].kind == "mtu" and "b's veth peer h0 has MTU 1500" in problems[0].text
        assert problems[0].fix.endswith("ip link set dev h0 mtu 9000")


DEFAULTS = {"tx": True, "tso": True, "gso": True, "gro": False}
TX_OFF = {"tx": False, "tso": False, "gso": True, "gro": False}
SEGMENTS_OFF = {"tx": True, "tso": False, "gso": False, "gro": False}


@pytest.mark.parametrize(
    "mode, features, change, fix",
    [
        ("native", DEFAULTS, {"tx": False}, "ip netns exec hostns ethtool -K h0 tx off"),
        ("native", TX_OFF, None, None),
        ("native", SEGMENTS_OFF, {"tx": False}, "ip netns exec hostns ethtool -K h0 tx off"),
        (
            "generic",
            DEFAULTS,
            {"tso": False, "gso": False},
            "ip netns exec hostns ethtool -K h0 tso off gso off",
        ),
        ("generic", TX_OFF, None, None),  # measured: 4 MB of TCP get through
        ("generic", SEGMENTS_OFF, None, None),
    ],
    ids=[
        "native, kernel defaults",
        "native, tx off",
        "native, only segmentation off",
        "generic, kernel defaults",
        "generic, tx off (gso stays)",
        "generic, segmentation off",
    ],
)
def test_sender_problems(mode, features, change, fix):
    port = link(2, "eth1", mode=mode)
    found = sender_problems(port, peer(2), features)
    if change is None:
        assert found == []
        return
    (problem,) = found
    assert dict(problem.peer_change) == change and problem.ifindex == 2
    assert problem.fix.endswith(fix) and "eth1's veth peer h0 (namespace hostns)" in problem.text


def test_sender_problems_only_for_veths_with_a_known_peer():
    assert sender_problems(link(2, "eth1", mode="native", kind=None), peer(2), DEFAULTS) == []
    assert sender_problems(link(2, "eth1", mode="native"), None, DEFAULTS) == []


def test_problems_of_pairs_are_reported_once_each_with_the_exact_fix():
    links = {2: link(2, "a", mode="native"), 3: link(3, "b", mode="native")}
    pairs = [(2, 3), (3, 2)]
    peers = {2: peer(2, "ha", offloads.Namespace(pid=77)), 3: peer(3, "hb")}
    found = problems(pairs, links, {2: 0, 3: 0}, peers, {2: DEFAULTS, 3: TX_OFF})
    fixes = [p.fix for p in found]
    assert fixes == [
        "nsenter -t 77 -n ethtool -K ha tx off",
        "ip netns exec hostns ethtool -K hb gro on",
        "nsenter -t 77 -n ethtool -K ha gro on",
    ]


# --- apply.plan --------------------------------------------------------------------


def desired(text: str):
    parsed = config.parse("version: 1\n" + text, "f.yaml")
    return resolve_config(parsed, "f.yaml", LINKS)


NATIVE = {2: "native", 3: "native"}
PASS = maps.PortSettings()
FLOOD = maps.PortSettings(flags=maps.PORT_BROADCAST)
FORWARDING = Running(
    attached=NATIVE,
    settings={2: PASS, 3: PASS},
    entries={2: RunningEntry(3, EgressSpec()), 3: RunningEntry(2, EgressSpec())},
    members={},
)
GROUPED = Running(NATIVE, {2: FLOOD, 3: FLOOD}, {}, {2: "default", 3: "default"})
BOTH_WAYS = "forward: [{from: eth1, to: eth2}, {from: eth2, to: eth1}]"


@pytest.mark.parametrize(
    "running, text, steps",
    [
        (NOTHING_RUNNING, "", []),
        (
            NOTHING_RUNNING,
            "forward: [{from: eth1, to: eth2}]",
            ["attach to eth1 (auto)", "forward eth1 -> eth2 (no egress program)"],
        ),
        (FORWARDING, BOTH_WAYS, []),
        (
            FORWARDING,
            "forward: [{from: eth1, to: eth2}]",
            ["remove entry eth2 -> eth1", "detach from eth2"],
        ),
        (
            FORWARDING,
            "ports: {eth1: {mode: generic}}\n" + BOTH_WAYS,
            ["re-attach eth1 in generic mode"],
        ),
        (FORWARDING, "ports: {eth1: {on_miss: drop}}\n" + BOTH_WAYS, ["set eth1 on-miss drop"]),
        (
            FORWARDING,
            "groups: [{name: default, members: [eth1, eth2]}]",
            [
                "remove entry eth1 -> eth2",
                "remove entry eth2 -> eth1",
                "set eth1 flooding",
                "set eth2 flooding",
                "create group default",
                "add eth1 to group default",
                "add eth2 to group default",
            ],
        ),
        (
            GROUPED,
            "groups: [{name: lab2, members: [eth1, eth2]}]",
            [
                "take eth1 out of group default",
                "take eth2 out of group default",
                "create group lab2",
                "add eth1 to group lab2",
                "add eth2 to group lab2",
                "remove group default",
            ],
        ),
        (
            GROUPED,
            BOTH_WAYS,
            [
                "take eth1 out of group default",
                "take eth2 out of group default",
                "set eth1 not flooding",
                "set eth2 not flooding",
                "remove group default",
                "forward eth1 -> eth2 (no egress program)",
                "forward eth2 -> eth1 (no egress program)",
            ],
        ),
    ],
    ids=[
        "nothing to nothing",
        "first entry",
        "same again",
        "one direction less",
        "mode switch",
        "on-miss",
        "entries to a group",
        "group to group",
        "group to entries",
    ],
)
def test_apply_plan(running, text, steps):
    assert [step.text for step in plan(running, desired(text), LINKS)] == steps


def test_apply_plan_rewrites_an_entry_whose_egress_program_differs():
    rewrite = EgressSpec(dst_mac="02:00:5e:00:53:01")
    running = Running(NATIVE, {2: PASS}, {2: RunningEntry(3, rewrite)}, {})
    steps = plan(running, desired("forward: [{from: eth1, to: eth2}]"), LINKS)
    assert [s.text for s in steps] == ["forward eth1 -> eth2 (no egress program)"]


def test_apply_plan_takes_none_and_built_in_for_the_same_entry():
    running = Running(NATIVE, {2: PASS}, {2: RunningEntry(3, EgressSpec())}, {})
    text = "forward: [{from: eth1, to: eth2, egress: none}]"
    assert plan(running, desired(text), LINKS) == []


def test_resolve_config_names_the_line_of_an_unknown_interface():
    with pytest.raises(config.ConfigError, match=r"f.yaml:3: no such interface: eth9"):
        desired("forward:\n  - {from: eth1, to: eth9}")


# --- apply.plan: multicast groups ----------------------------------------------------

FEED = "multicast: [{group: 239.1.1.1, from: [eth1], to: [eth2, eth3]}]"
FEEDING = Running(
    attached={2: "native"},
    settings={2: PASS},
    entries={},
    members={},
    multicast={"239.1.1.1": GroupPorts(frozenset({2}), frozenset({3, 4}))},
)


@pytest.mark.parametrize(
    "running, text, steps",
    [
        (
            NOTHING_RUNNING,
            FEED,
            ["attach to eth1 (auto)", "create multicast group 239.1.1.1 (from eth1 to eth2, eth3)"],
        ),
        (FEEDING, FEED, []),
        (
            FEEDING,
            "multicast: [{group: 239.1.1.1, from: [eth1], to: [eth3]}]",
            ["change multicast group 239.1.1.1 (from eth1 to eth3)"],
        ),
        (
            FEEDING,
            "multicast: [{group: 239.1.1.1, from: [eth1], to: [eth2, eth3], exclude_ingress: on}]",
            ["change multicast group 239.1.1.1 (from eth1 to eth2, eth3, exclude ingress)"],
        ),
        (FEEDING, "", ["remove multicast group 239.1.1.1", "detach from eth1"]),
        (
            FEEDING,
            "multicast: [{group: 239.1.1.1, to: [eth1, eth2]}]",
            [
                "attach to eth2 (auto)",
                "change multicast group 239.1.1.1 (from eth1, eth2 to eth1, eth2)",
            ],
        ),
        (
            FORWARDING,
            BOTH_WAYS + "\n" + FEED,
            ["create multicast group 239.1.1.1 (from eth1 to eth2, eth3)"],
        ),
        (
            NOTHING_RUNNING,
            "multicast: [{group: 'ff3e::1:1', to: [eth1, eth2], exclude_ingress: true}]",
            [
                "attach to eth1 (auto)",
                "attach to eth2 (auto)",
                "create multicast group ff3e::1:1 (from eth1, eth2 to eth1, eth2, exclude ingress)",
            ],
        ),
    ],
    ids=[
        "new feed",
        "same again",
        "one receiver less",
        "flag",
        "feed gone",
        "feed to bus",
        "source that forwards",
        "ipv6 bus",
    ],
)
def test_apply_plan_multicast(running, text, steps):
    assert [step.text for step in plan(running, desired(text), LINKS)] == steps


def test_resolve_config_names_the_line_of_an_unknown_receiver():
    with pytest.raises(config.ConfigError, match=r"f.yaml:3: no such interface: eth9"):
        desired("multicast:\n  - {group: 239.1.1.1,\n     to: [eth9]}")


# --- multicast deciders ----------------------------------------------------------------


@pytest.mark.parametrize(
    "source, receivers, exclude, copies",
    [
        (2, {3, 4}, False, 2),
        (2, {3, 4}, True, 2),
        (2, {2, 3, 4}, True, 2),
        (2, {2, 3, 4}, False, 3),
        (2, {2}, True, 0),
    ],
    ids=["feed", "feed-exclude", "bus-exclude", "bus-include", "bus-of-one"],
)
def test_copies_of_a_frame(source, receivers, exclude, copies):
    assert copies_of(source, frozenset(receivers), exclude) == copies


@pytest.mark.parametrize(
    "args, spread",
    [
        (["g", "--to", "b", "c"], ["g", "--to", "b", "--to", "c"]),
        (
            ["g", "--from", "a", "--to", "b", "c", "--exclude-ingress"],
            ["g", "--from", "a", "--to", "b", "--to", "c", "--exclude-ingress"],
        ),
        (["g", "--to=b", "c"], ["g", "--to", "b", "--to", "c"]),
        (["g", "--to", "b", "--to", "c"], ["g", "--to", "b", "--to", "c"]),
        (["g", "--mode", "native", "--to", "b"], ["g", "--mode", "native", "--to", "b"]),
        (["g", "--to", "b", "--", "c"], ["g", "--to", "b", "--", "c"]),
    ],
    ids=["several", "both", "equals", "repeated", "other-option", "double-dash"],
)
def test_list_options_take_every_value(args, spread):
    assert spread_values(args, ("--to", "--from")) == spread


# --- health.forwarding_loop --------------------------------------------------------


def veth(ifindex, name, peer, netnsid=None):
    return netdev.Link(ifindex, name, "veth", True, False, 1500, 0, None, None, peer, netnsid)


@pytest.mark.parametrize(
    "entries, links, cycle",
    [
        ({2: 3}, {2: veth(2, "a", 3), 3: veth(3, "b", 2)}, [2]),
        ({2: 3, 3: 2}, {2: veth(2, "a", 3), 3: veth(3, "b", 2)}, [2]),
        ({2: 3}, {2: veth(2, "a", 9), 3: veth(3, "b", 9)}, []),
        ({2: 3}, {2: veth(2, "a", 5, netnsid=0), 3: veth(3, "b", 2, netnsid=0)}, []),
        (
            {2: 3, 4: 5},
            {2: veth(2, "a", 9), 3: veth(3, "b", 4), 4: veth(4, "c", 3), 5: veth(5, "d", 2)},
            [2, 4],
        ),
        (
            {2: 3, 4: 5},
            {2: veth(2, "a", 9), 3: veth(3, "b", 4), 4: veth(4, "c", 3), 5: veth(5, "d", 8)},
            [],
        ),
        ({2: 3}, {2: link(2, "a"), 3: link(3, "b")}, []),
        # Balanced entries: some flows take each of their ports.
        ({2: {5, 3}}, {2: veth(2, "a", 3), 3: veth(3, "b", 2), 5: link(5, "c")}, [2]),
        (
            {2: 3, 4: {6, 5}},
            {
                2: veth(2, "a", 9),
                3: veth(3, "b", 4),
                4: veth(4, "c", 3),
                5: veth(5, "d", 2),
                6: link(6, "e"),
            },
            [2, 4],
        ),
        ({2: {5, 6}}, {2: veth(2, "a", 3), 3: veth(3, "b", 2), 5: link(5, "c")}, []),
    ],
    ids=[
        "the two ends of a veth pair",
        "both ways on one pair",
        "peers elsewhere",
        "peers in other namespaces",
        "a chain that closes",
        "a chain that ends",
        "not veths",
        "a balanced entry's port closes it",
        "a chain through a balanced entry",
        "balanced, no port closes it",
    ],
)
def test_forwarding_loop(entries, links, cycle):
    assert forwarding_loop(entries, links) == cycle


# --- health.port_state ---------------------------------------------------------


@pytest.mark.parametrize(
    "link_, egress, attached, has_entry, group, settings, flooding, state",
    [
        (ETH1, Iface(3, "eth2"), True, True, None, PASS, False, "ok"),
        (None, None, False, False, None, PASS, False, "device gone"),
        (ETH1, Iface(3, None), True, True, None, PASS, False, "device gone"),
        (ETH1, None, False, False, "g", FLOOD, True, "program not attached"),
        (ETH1, None, True, False, None, PASS, False, "no entry"),
        (ETH1, None, True, False, "g", FLOOD, True, "ok"),
        (ETH1, None, True, False, "g", PASS, True, "misses: not flooding"),
        (ETH1, None, True, False, "g", FLOOD, False, "misses: not flooding"),
        (replace(ETH1, up=False), Iface(3, "eth2"), True, True, None, PASS, False, "down"),
        (
            replace(ETH1, operstate="LOWERLAYERDOWN"),
            None,
            True,
            False,
            None,
            PASS,
            False,
            "no entry",
        ),
    ],
    ids=[
        "forwarding",
        "device gone",
        "egress gone",
        "detached",
        "idle egress port",
        "flooding member",
        "member whose settings do not flood",
        "member its group map does not point at",
        "down",
        "no carrier, which reaches netlink with a lag",
    ],
)
def test_port_state(link_, egress, attached, has_entry, group, settings, flooding, state):
    assert port_state(link_, egress, attached, has_entry, group, settings, flooding) == state


def test_port_state_of_an_entry_whose_egress_cannot_send():
    state = port_state(ETH1, Iface(3, "eth2"), True, True, None, PASS, False, egress_down=True)
    assert state == "egress down"
    # Its own state comes first: a port that is down receives nothing to forward.
    down = replace(ETH1, up=False)
    assert (
        port_state(down, Iface(3, "eth2"), True, True, None, PASS, False, egress_down=True)
        == "down"
    )


# --- buckets: the layouts of balanced entries ----------------------------------------


@pytest.mark.parametrize(
    "weights, shares",
    [
        ({"a": 1, "b": 1, "c": 1}, {"a": 86, "b": 85, "c": 85}),
        ({"a": 2, "b": 1, "c": 1}, {"a": 128, "b": 64, "c": 64}),
        ({"b": 1, "a": 3}, {"a": 192, "b": 64}),
        ({f"p{i}": 1 for i in range(7)}, {f"p{i}": 37 if i < 4 else 36 for i in range(7)}),
        ({"a": 255, "b": 1}, {"a": 255, "b": 1}),
    ],
    ids=["even", "2:1:1", "3:1", "seven", "uneven"],
)
def test_bucket_quotas(weights, shares):
    assert buckets.quotas(weights) == shares


def test_a_fresh_layout_depends_only_on_the_ports_and_weights():
    one = buckets.fresh({"eth2": 1, "eth3": 1, "eth4": 1})
    assert one == buckets.fresh({"eth4": 1, "eth2": 1, "eth3": 1})
    assert dict(buckets.counts(one)) == {"eth2": 86, "eth3": 85, "eth4": 85}


def _moves(before, after) -> int:
    return sum(buckets.moves(before, after).values())


@pytest.mark.parametrize(
    "before, after, fewest",
    [
        ({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1, "d": 1}, 64),
        ({"a": 1, "b": 1, "c": 1, "d": 1}, {"a": 1, "b": 1, "c": 1}, 64),
        ({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "d": 1}, 85),
        ({"a": 1, "b": 1}, {"a": 3, "b": 1}, 64),
        ({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}, 0),
    ],
    ids=["a port more", "a port less", "a port swapped", "weights", "same"],
)
def test_rehome_moves_the_fewest_buckets(before, after, fewest):
    old = buckets.fresh(before)
    new = buckets.rehome(old, after)
    assert dict(buckets.counts(new)) == buckets.quotas(after)
    assert _moves(old, new) == fewest


@pytest.mark.parametrize(
    "weights, up",
    [
        ({"a": 1, "b": 1, "c": 1}, {"a", "c"}),
        ({"a": 2, "b": 1, "c": 1}, {"b", "c"}),
        ({"a": 1, "b": 1, "c": 1, "d": 1}, {"d"}),
    ],
    ids=["one down", "the heaviest down", "three down"],
)
def test_live_layout_moves_only_the_buckets_of_ports_that_are_down(weights, up):
    layout = buckets.fresh(weights)
    now = buckets.live(layout, weights, up)
    for home, there in zip(layout, now, strict=True):
        assert there in up
        if home in up:
            assert there == home  # no flow moves between live ports
    shares = buckets.quotas({p: w for p, w in weights.items() if p in up})
    for port, n in buckets.counts(now).items():
        assert abs(n - shares[port]) <= 1, (port, n, shares)
    assert buckets.live(layout, weights, set(weights)) == layout  # and all come back


def test_live_layout_without_a_live_port_has_no_ports():
    layout = buckets.fresh({"a": 1, "b": 1})
    assert set(buckets.live(layout, {"a": 1, "b": 1}, set())) == {None}


def test_choose_keeps_shares_or_moves_least():
    abc, ab = {"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1}
    old = buckets.fresh(ab)
    chosen = buckets.choose({"p1": abc, "p2": abc, "p3": ab}, {"p1": (ab, old), "p3": (ab, old)})
    assert chosen["p3"] == old  # unchanged: kept
    assert chosen["p1"] == buckets.rehome(old, abc)  # changed: fewest moves
    assert chosen["p2"] == chosen["p1"]  # new, the same ports: the same layout


def test_layout_text_round_trip():
    ports = ("eth2", "eth3")
    layout = buckets.live(buckets.fresh({"eth2": 1, "eth3": 1}), {"eth2": 1, "eth3": 1}, {"eth2"})
    assert buckets.decode(buckets.encode(layout, ports), ports) == layout
    assert buckets.decode("0" * 10, ports) is None
    assert buckets.decode("7" * 256, ports) is None


@pytest.mark.parametrize(
    "ports, weights, reason",
    [
        (("b", "c"), (1, 1), None),
        (("b",), (1,), "two or more"),
        (("b", "b"), (1, 1), "twice"),
        (("a", "b"), (1, 1), "its own egress"),
        (("b", "c"), (1,), "1 weights for 2"),
        (("b", "c"), (0, 1), "from 1 to 255"),
        (tuple(f"p{i}" for i in range(32)), (255,) + (1,) * 31, "no bucket"),
        (tuple(f"p{i}" for i in range(33)), (1,) * 33, "at most 32"),
    ],
    ids=["fine", "one port", "twice", "itself", "count", "zero", "starved", "too many"],
)
def test_balanced_entry_problems(ports, weights, reason):
    found = buckets.problem("a", ports, weights)
    assert (found is None) if reason is None else (reason in found)


# --- apply.plan with balanced entries --------------------------------------------------

BALANCED = "forward: [{from: eth1, to: [eth2, eth3]}]"
HALVES = buckets.fresh({"eth2": 1, "eth3": 1})


def running_balanced(layout=HALVES, hash_="symmetric", spec=DEFAULT_EGRESS):
    table = tuple({"eth2": 3, "eth3": 4}.get(p) for p in layout)
    return Running(
        {2: "native"},
        {2: PASS},
        {},
        {},
        balanced={2: RunningBalanced(hash_, table, spec)},
    )


def down(lk):
    return replace(lk, up=False, operstate="DOWN")


@pytest.mark.parametrize(
    "running, text, links, steps",
    [
        (
            NOTHING_RUNNING,
            BALANCED,
            LINKS,
            ["attach to eth1 (auto)", "balance eth1 over eth2, eth3 (symmetric, 128/128)"],
        ),
        (running_balanced(), BALANCED, LINKS, []),
        (
            running_balanced(),
            BALANCED,
            {**LINKS, 4: down(ETH3)},
            ["eth1: 128 buckets from eth3 (down) to eth2 (128)"],
        ),
        (
            running_balanced(tuple(p if p == "eth2" else None for p in HALVES)),
            BALANCED,
            LINKS,
            ["eth1: 128 buckets from no port to eth3 (128)"],
        ),
        (
            running_balanced(hash_="l4"),
            BALANCED,
            LINKS,
            ["eth1: hash symmetric"],
        ),
        (
            Running(NATIVE, {2: PASS}, {2: RunningEntry(3, EgressSpec())}, {}),
            BALANCED,
            LINKS,
            ["balance eth1 over eth2, eth3 (symmetric, 128/128)"],
        ),
        (
            running_balanced(),
            "forward: [{from: eth1, to: eth2}]",
            LINKS,
            ["forward eth1 -> eth2 (no egress program)"],
        ),
        (running_balanced(), "", LINKS, ["remove balanced entry of eth1", "detach from eth1"]),
    ],
    ids=[
        "new",
        "same",
        "a port down",
        "buckets the kernel dropped",
        "hash",
        "single to balanced, no gap",
        "balanced to single, no gap",
        "removed",
    ],
)
def test_apply_plan_of_balanced_entries(running, text, links, steps):
    assert [step.text for step in plan(running, desired(text), links)] == steps


def test_a_device_gone_during_a_change_is_found_through_the_undo(monkeypatch):
    """A change's devmap write for a device deleted after it read the links fails with
    EINVAL, and so do the undo's writes back to it: the bare OSError they end with
    still names the device, so the change says so (and prune and apply plan again)."""
    from xdpfwd.errors import BpfError
    from xdpfwd.state.transaction import went_away

    seen = {1: link(1, "p1"), 2: link(2, "p2"), 3: link(3, "p3")}
    monkeypatch.setattr(netdev, "links", lambda: {1: seen[1], 3: seen[3]})
    try:
        try:
            raise BpfError("updating a pinned map failed") from OSError(22, "map update")
        except BpfError:
            raise OSError(22, "map update: Invalid argument")  # noqa: B904 (the undo's)
    except OSError as e:
        assert went_away(e, seen) == ["p2"]
    assert went_away(BpfError("creating a devmap failed"), seen) == []
    assert went_away(OSError(1, "map update"), seen) == []
