"""xdpfwd touches only what is its own: pin directories it marked, pins it knows by name
and kind, lab devices it recorded; it needs the capabilities it documents, reads input
with a bound, and every failure is one line with a documented exit code."""

import json
import os
import random
import struct
import subprocess
import time

import pytest

from xdpfwd.kernel import netns
from xdpfwd.kernel.bpf import maps, netns_link
from xdpfwd.kernel.bpf import syscall as sc

from .conftest import RUN_ID
from .net import (
    XDPFWD,
    UdpSink,
    assert_fails,
    attach_foreign,
    namespaces,
    send_udp,
    sh,
    snapshot,
    xdpfwd_cmd,
)

BOTH = ("setpriv", "--bounding-set=-all,+net_admin,+sys_admin", "--inh-caps=-all")
BPF_ONLY = ("setpriv", "--bounding-set=-all,+net_admin,+bpf,+perfmon", "--inh-caps=-all")
SYS_ONLY = ("setpriv", "--bounding-set=-all,+sys_admin", "--inh-caps=-all")


def pin_foreign_map(path: str, name: str = "st") -> None:
    """Another tool's pin: a small array map."""
    fd = sc.map_create(sc.MAP_TYPE_ARRAY, 4, 4, 1, name)
    try:
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)


def pinned(directory: str) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


# --- pin directories ---------------------------------------------------------------------

EVERY_COMMAND = [
    ["add", "p1", "p2"],
    ["del", "p1"],
    ["broadcast", "p1", "p2"],
    ["broadcast", "del", "p1"],
    ["multicast", "add", "239.1.1.1", "--to", "p1", "p2"],
    ["multicast", "del", "239.1.1.1"],
    ["multicast", "list"],
    ["list"],
    ["stats"],
    ["stats", "--clear"],
    ["save"],
    ["prune"],
    ["down"],
    ["apply", "CONFIG"],
]


@pytest.fixture
def config(topo):
    return topo.config_file({"forward": [{"from": "p1", "to": "p2"}]})


@pytest.mark.parametrize("args", EVERY_COMMAND, ids=" ".join)
def test_a_directory_with_another_tools_pins_is_refused_by_every_command(
    topo, pin_dir, config, args
):
    os.mkdir(pin_dir)
    pin_foreign_map(os.path.join(pin_dir, "state"))
    args = [config if a == "CONFIG" else a for a in args]
    assert_fails(topo.xdpfwd(pin_dir, *args), 2, "is not xdpfwd's", "state")
    assert pinned(pin_dir) == ["state"] and topo.xdp("p1") is None


def test_follow_refuses_another_tools_directory_at_once(topo, pin_dir):
    os.mkdir(pin_dir)
    pin_foreign_map(os.path.join(pin_dir, "state"))
    # (It used to retry the refusal for ever, and exit 0 when stopped.)
    assert_fails(topo.xdpfwd(pin_dir, "follow"), 2, "is not xdpfwd's", "state")
    assert pinned(pin_dir) == ["state"]


def test_a_pin_named_like_xdpfwds_but_of_another_kind_is_foreign(topo, pin_dir):
    os.mkdir(pin_dir)
    pin_foreign_map(os.path.join(pin_dir, maps.PIN_PROG_INGRESS))  # a map, not a program
    assert_fails(topo.xdpfwd(pin_dir, "down"), 2, "is not xdpfwd's", maps.PIN_PROG_INGRESS)
    assert pinned(pin_dir) == [maps.PIN_PROG_INGRESS]


def test_a_map_made_in_the_shape_of_xdpfwds_marker_is_foreign(topo, pin_dir):
    # It was taken for the marker by its shape and name: down unpinned it.
    os.mkdir(pin_dir)
    pin_foreign_map(os.path.join(pin_dir, maps.PIN_OWNER), name=maps.OWNER_NAME)
    assert_fails(topo.xdpfwd(pin_dir, "down"), 2, "is not xdpfwd's", maps.PIN_OWNER)
    assert pinned(pin_dir) == [maps.PIN_OWNER]


# down removes what is xdpfwd's and keeps the rest, saying so.
@pytest.mark.parametrize("args", [a for a in EVERY_COMMAND if a != ["down"]], ids=" ".join)
def test_a_foreign_map_in_place_of_one_of_xdpfwds_is_refused_by_every_command(
    topo, pin_dir, config, args
):
    topo.ok(pin_dir, "add", "p1", "p2")
    os.unlink(os.path.join(pin_dir, maps.PIN_PORTS))
    # Shaped as xdpfwd's ports map, so that nothing but its name tells it apart.
    fd = sc.map_create(sc.MAP_TYPE_HASH, 4, 8, maps.MAX_PORTS, "notxdpfwd")
    try:
        sc.obj_pin(fd, os.path.join(pin_dir, maps.PIN_PORTS))
        args = [config if a == "CONFIG" else a for a in args]
        before = pinned(pin_dir)
        refused = topo.xdpfwd(pin_dir, *args)
        assert_fails(refused, 2, f"{maps.PIN_PORTS} is pinned under a name of xdpfwd's")
        assert pinned(pin_dir) == before
        assert sc.map_keys(fd, 4) == []  # nothing written into it
        topo.static_arp()
        with UdpSink(topo.host(2)) as sink:  # what runs is left as it was: p1 forwards
            send_udp(topo.host(1), topo.host(2).ip, 5)
            assert sink.count(5) == 5
    finally:
        os.close(fd)


@pytest.mark.parametrize("args", [["down"], ["list"], ["add", "p1", "p2"]], ids=" ".join)
def test_the_bpffs_root_a_pinned_map_and_overlong_paths_are_refused(topo, pin_dir, args):
    root = os.path.dirname(pin_dir)
    pin_foreign_map(os.path.join(root, "state"))
    before = pinned(root)
    for path, needle in (
        (root, "is a mount point"),
        (os.path.join(root, "state"), "is not a directory"),
        (os.path.join(root, "state", "x"), "part of the path is not a directory"),
        (os.path.join(root, "a" * 300), "too long"),
        (os.path.join(root, "missing", "xdpfwd"), "its parent directory"),
    ):
        assert_fails(topo.xdpfwd(path, *args), 2, needle)
    # A new directory off bpffs: as refused as an existing one.
    off_bpffs = os.path.join(os.path.dirname(root), "xdpfwd")
    assert_fails(topo.xdpfwd(off_bpffs, *args), 2, "is not on a BPF filesystem")
    assert pinned(root) == before and topo.xdp("p1") is None


def test_a_pin_dir_of_an_earlier_version_is_adopted_then_removed_whole(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    topo.ok(pin_dir, "broadcast", "p3", "p4", "--group", "g")
    topo.ok(pin_dir, "stats", "--watch", "--count", "1", "--interval", "0.2")
    os.unlink(os.path.join(pin_dir, maps.PIN_OWNER))  # as versions without the marker left it
    assert len(topo.list_json(pin_dir)["groups"]) == 1  # read as xdpfwd's
    topo.ok(pin_dir, "broadcast", "del", "p4")  # a change marks it
    assert maps.PIN_OWNER in pinned(pin_dir)
    os.unlink(os.path.join(pin_dir, maps.PIN_OWNER))
    down = topo.ok(pin_dir, "down")
    assert f"removed {pin_dir}" in down.stdout
    assert not os.path.exists(pin_dir) and topo.xdp("p1") is None and topo.xdp("p3") is None


def test_down_and_apply_keep_what_xdpfwd_did_not_make(topo, pin_dir, config):
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    topo.ok(pin_dir, "add", "p1", "p2")  # a marked directory: xdpfwd's from now on
    intruder = os.path.join(pin_dir, "intruder")
    pin_foreign_map(intruder)
    # apply repairs a directory that lost a pin: only xdpfwd's pins are removed for it.
    os.unlink(os.path.join(pin_dir, maps.PIN_PORTS))
    topo.ok(pin_dir, "apply", config)
    assert os.path.exists(intruder) and topo.list_json(pin_dir)["entries"][0]["state"] == "ok"
    down = topo.ok(pin_dir, "down")
    assert "kept" in down.stderr and "intruder" in down.stderr
    assert pinned(pin_dir) == ["intruder", maps.PIN_OWNER]
    assert topo.xdp("p1") is None and topo.xdp("p2") is None
    # Still xdpfwd's: it can be used again, and emptied for good once the intruder goes.
    topo.ok(pin_dir, "add", "p1", "p2")
    os.unlink(intruder)
    topo.ok(pin_dir, "down")
    assert not os.path.exists(pin_dir)


def test_what_another_tool_put_among_the_groups_is_no_group_and_stays(topo, pin_dir):
    topo.ok(pin_dir, "broadcast", "p1", "p2")
    groups = os.path.join(pin_dir, maps.PIN_GROUP_DIR)
    fd = sc.map_create(sc.MAP_TYPE_DEVMAP_HASH, 4, 8, 4, "zy")  # a group's kind of map
    try:
        sc.obj_pin(fd, os.path.join(groups, "zy"))
    finally:
        os.close(fd)
    pin_foreign_map(os.path.join(groups, "zz"))
    os.mkdir(os.path.join(groups, "sub"))
    for command in (["prune"], ["broadcast", "del", "p2"]):
        topo.ok(pin_dir, *command)  # each change tidies away the groups emptied
    before = snapshot(topo, pin_dir)
    refused = topo.xdpfwd(pin_dir, "broadcast", "p2", "--group", "zz")
    assert_fails(refused, 2, f"{groups}/zz holds something xdpfwd did not make")
    assert snapshot(topo, pin_dir) == before
    topo.ok(pin_dir, "broadcast", "p2")
    listed = topo.list_json(pin_dir)
    assert [g["name"] for g in listed["groups"]] == ["default"], listed["groups"]
    assert "zz" not in topo.ok(pin_dir, "save").stdout
    assert pinned(groups) == ["default", "sub", "zy", "zz"]
    down = topo.ok(pin_dir, "down")
    assert "group/sub, group/zy, group/zz" in down.stderr, down.stderr
    assert pinned(groups) == ["sub", "zy", "zz"]
    os.rmdir(os.path.join(groups, "sub"))
    for name in ("zy", "zz"):
        os.unlink(os.path.join(groups, name))
    topo.ok(pin_dir, "down")


def test_another_tools_pin_where_groups_go_stops_only_those_groups(make_topo, pin_dir):
    topo = make_topo(3)
    groups = os.path.join(pin_dir, maps.PIN_GROUP_DIR)
    # In place of the groups' directory: no group, and no group can be made.
    topo.ok(pin_dir, "add", "p3", "p2")
    pin_foreign_map(groups)
    before = snapshot(topo, pin_dir)
    refused = topo.xdpfwd(pin_dir, "broadcast", "p1", "p2")
    assert_fails(refused, 2, f"{groups} holds something xdpfwd did not make")
    assert snapshot(topo, pin_dir) == before
    assert topo.list_json(pin_dir)["groups"] == []
    topo.ok(pin_dir, "del", "p3")
    os.unlink(groups)
    # At the swap pin a change of members renames over the group's: the group stays.
    topo.ok(pin_dir, "broadcast", "p1", "p2", "--group", "cams")
    swap = os.path.join(groups, "_cams")
    pin_foreign_map(swap)
    for args in (["broadcast", "p3", "--group", "cams"], ["broadcast", "del", "p2"]):
        refused = topo.xdpfwd(pin_dir, *args)
        assert_fails(refused, 2, f"{swap} holds something xdpfwd did not make: group cams")
    assert pinned(groups) == ["_cams", "cams"]
    os.unlink(swap)
    # At a recorded group's name, while its devices were gone: prune restores the rest.
    topo.ok(pin_dir, "add", "p3", "p2")
    for port in ("p1", "p2"):
        sh("ip", "-n", topo.fwd, "link", "del", port)
    topo.ok(pin_dir, "prune")  # the group, emptied, is unpinned
    pin_foreign_map(os.path.join(groups, "cams"))
    for h in topo.hosts[:2]:
        topo.plug(h)
    pruned = topo.ok(pin_dir, "prune")
    assert "forward p3 -> p2" in pruned.stdout, pruned.stdout
    assert f"group cams left out: {groups}/cams holds what xdpfwd did not make" in pruned.stderr
    assert topo.list_json(pin_dir)["groups"] == [] and pinned(groups) == ["cams"]
    os.unlink(os.path.join(groups, "cams"))


@pytest.mark.parametrize("how", ["del", "apply"])
def test_a_port_whose_program_another_tool_replaced_is_forgotten_not_detached(
    make_topo, pin_dir, how
):
    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "add", "p2", "p3")
    foreign = attach_foreign(topo, "p1")
    if how == "del":
        done = topo.ok(pin_dir, "del", "p1")
    else:
        config = topo.config_file({"forward": [{"from": "p2", "to": "p3"}]})
        done = topo.ok(pin_dir, "apply", config)
        assert "forget p1" in done.stdout, done.stdout
    assert "detach" not in done.stdout, done.stdout
    assert f"p1 runs another XDP program (id {foreign}) now: left alone" in done.stderr
    assert topo.xdp("p1")["prog"]["id"] == foreign
    assert [row["ingress"]["ifname"] for row in topo.list_json(pin_dir)["entries"]] == ["p2"]


def test_apply_dry_run_leaves_broken_pins_alone(topo, pin_dir, config):
    topo.ok(pin_dir, "add", "p1", "p2")
    os.unlink(os.path.join(pin_dir, maps.PIN_PORTS))
    before = pinned(pin_dir)
    dry = topo.ok(pin_dir, "apply", config, "--dry-run")
    assert dry.stdout.startswith(f"would do:\n  rebuild the pinned state in {pin_dir}")
    assert pinned(pin_dir) == before and topo.xdp("p1") is not None


# --- the lab -----------------------------------------------------------------------------


def test_lab_down_leaves_devices_and_namespaces_it_did_not_make(scratch_ns):
    prefix = f"o{RUN_ID}e"
    namesake = f"{prefix}7"  # a namespace called like a port of lab `prefix`
    sh("ip", "-n", scratch_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    sh("ip", "netns", "add", namesake)
    try:
        for name in ("eth", prefix):
            result = subprocess.run(
                xdpfwd_cmd(scratch_ns, "lab", "down", "--name", name),
                capture_output=True,
                text=True,
            )
            assert_fails(result, 1, f"no lab named {name}", "left alone")
        links = json.loads(sh("ip", "-n", scratch_ns, "-j", "link").stdout)
        assert {"eth0", "eth1"} <= {link["ifname"] for link in links}
        assert namesake in namespaces()
        # A real lab of that name goes, and only it: the namesake stays.
        for command in ("up", "down"):
            lab = xdpfwd_cmd(scratch_ns, "lab", command, "--name", prefix)
            assert subprocess.run(lab, capture_output=True).returncode == 0, command
        assert namesake in namespaces() and f"{prefix}1" not in namespaces()
    finally:
        sh("ip", "netns", "del", namesake, check=False)
        for i in (1, 2):
            sh("ip", "netns", "del", f"{prefix}{i}", check=False)


# --- capabilities ------------------------------------------------------------------------


def test_the_documented_capabilities_are_enough(topo, pin_dir, config):
    # As root with only CAP_NET_ADMIN and CAP_SYS_ADMIN (a systemd unit's bounding set),
    # on a fresh pin directory and on an existing one.
    for args in (
        ["add", "p1", "p2"],
        ["add", "p2", "p1", "--on-miss", "drop"],
        ["list"],
        ["stats", "--watch", "--count", "1", "--interval", "0.2"],
        ["save"],
        ["del", "p2"],
        ["del", "p1"],
        ["broadcast", "p1", "p2", "--group", "g"],
        ["broadcast", "del", "p2"],
        ["apply", config],
        ["prune"],
        ["down"],
        ["apply", config],
    ):
        result = topo.xdpfwd(pin_dir, *args, inner=BOTH)
        assert result.returncode == 0, (args, result.stderr)
    assert [r["state"] for r in topo.list_json(pin_dir)["entries"]] == ["ok"]
    topo.ok(pin_dir, "down")


@pytest.mark.parametrize(
    "setpriv, args, missing",
    [
        (BPF_ONLY, ["add", "p1", "p2"], "lacks CAP_SYS_ADMIN"),
        (BPF_ONLY, ["del", "p1"], "lacks CAP_SYS_ADMIN"),
        (SYS_ONLY, ["down"], "xdpfwd down needs CAP_NET_ADMIN"),
        (SYS_ONLY, ["apply", "CONFIG"], "lacks CAP_NET_ADMIN"),
    ],
    ids=["add-with-cap-bpf", "del-with-cap-bpf", "down", "apply"],
)
def test_missing_capabilities_are_named_before_anything_changes(
    topo, pin_dir, config, setpriv, args, missing
):
    topo.ok(pin_dir, "add", "p1", "p2")
    before = snapshot(topo, pin_dir)
    args = [config if a == "CONFIG" else a for a in args]
    assert_fails(topo.xdpfwd(pin_dir, *args, inner=setpriv), 5, missing, "root")
    assert snapshot(topo, pin_dir) == before


def test_multicast_needs_the_documented_capabilities(topo, pin_dir):
    for args in (
        ["multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2"],
        ["multicast", "list"],
        ["list"],
        ["save"],
        ["multicast", "del", "239.1.1.1"],
    ):
        result = topo.xdpfwd(pin_dir, *args, inner=BOTH)
        assert result.returncode == 0, (args, result.stderr)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    before = snapshot(topo, pin_dir)
    add = ["multicast", "add", "239.1.1.1", "--to", "p1"]
    assert_fails(topo.xdpfwd(pin_dir, *add, inner=BPF_ONLY), 5, "lacks CAP_SYS_ADMIN")
    # A group's receivers are in a devmap the kernel opens by id only for CAP_SYS_ADMIN.
    none = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
    for args in (["multicast", "list"], ["list"], ["stats", "--json"], ["save"]):
        assert_fails(topo.xdpfwd(pin_dir, *args, inner=none), 5, "CAP_SYS_ADMIN")
    assert snapshot(topo, pin_dir) == before


def test_reading_needs_no_capability(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2")
    none = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
    watch = ["stats", "--watch", "--count", "1", "--interval", "0.2"]
    for args in (["list"], ["stats"], ["save"], ["stats", "--clear"], watch):
        result = topo.xdpfwd(pin_dir, *args, inner=none)
        assert result.returncode == 0, (args, result.stderr)


def test_watching_needs_a_capability_only_to_attach_loss_accounting(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2")
    links = [n for n in pinned(pin_dir) if n.startswith(maps.PIN_TRACE_LINK_PREFIX)]
    assert len(links) == 3
    for name in links:  # as a pin directory of an earlier version: not attached
        os.unlink(os.path.join(pin_dir, name))
    watch = ["stats", "--watch", "--count", "1", "--interval", "0.2"]
    assert_fails(topo.xdpfwd(pin_dir, *watch, inner=BPF_ONLY), 5, "lacks CAP_SYS_ADMIN", "root")
    result = topo.xdpfwd(pin_dir, *watch, inner=SYS_ONLY)
    assert result.returncode == 0, result.stderr
    assert sorted(n for n in pinned(pin_dir) if n in links) == sorted(links)


# --- bounded input and one-line errors ---------------------------------------------------


def big_file(tmp_path) -> str:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.write(b"version: 1\n" + b"#" * (5 << 20))
    return str(path)


def fifo(tmp_path) -> str:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize(
    "make, args, needle",
    [
        (lambda d: "/dev/zero", ["apply", "FILE"], "a character device, not a regular file"),
        (fifo, ["apply", "FILE"], "a FIFO, not a regular file"),
        (big_file, ["apply", "FILE"], "is larger than 4 MiB"),
        (lambda d: "/dev/zero", ["add", "p1", "p2", "--egress-prog", "FILE"], "character"),
        (fifo, ["add", "p1", "p2", "--egress-prog", "FILE:f"], "a FIFO"),
    ],
    ids=["apply-dev-zero", "apply-fifo", "apply-5-MiB", "egress-dev-zero", "egress-fifo"],
)
def test_input_is_read_with_a_bound_and_never_waits(topo, pin_dir, tmp_path, make, args, needle):
    path = make(tmp_path)
    args = [a.replace("FILE", path) for a in args]
    start = time.monotonic()
    assert_fails(topo.xdpfwd(pin_dir, *args), 2, needle)
    assert time.monotonic() - start < 10
    assert not os.path.exists(pin_dir)


def test_what_used_to_be_unexpected_is_one_line(topo, pin_dir, tmp_path):
    bad_text = tmp_path / "bad.c"
    bad_text.write_bytes(b"int f(struct xdp_md *ctx) { return XDP_PASS; } // \xff\n")
    good = tmp_path / "good.c"
    good.write_text("int f(struct xdp_md *ctx) { return XDP_PASS; }\n")
    mem = topo.config_file(
        {"forward": [{"from": "p1", "to": "p2", "egress": {"program": "/proc/self/mem"}}]}
    )
    stale = f"/run/netns/o{RUN_ID}stale"
    open(stale, "w").close()  # an entry no namespace is bound to
    root = os.path.dirname(pin_dir)
    pin_foreign_map(os.path.join(root, "state"))
    try:
        for args, code, needle in (
            (["add", "p1", "p2", "--egress-prog", str(bad_text)], 2, "not UTF-8 text"),
            (["add", "p1", "p2", "--egress-prog", f"{good}:h"], 2, "has no function h"),
            (["apply", mem], 2, "Input/output error"),
            (["--pin-dir", os.path.join(root, "state"), "list"], 2, "not a directory"),
            (["--pin-dir", os.path.join(root, "p" * 300), "list"], 2, "too long"),
            (["--netns", os.path.basename(stale), "list"], 2, "not a network namespace"),
            (["del", "4294967296"], 2, "ifindexes run from 1 to"),
            (["del", "0"], 2, "ifindexes run from 1 to"),
            (["del", "lo"], 2, "loopback"),
            (["save", "-o", str(tmp_path / "no" / "dir" / "x.yaml")], 2, "does not exist"),
            (["stats", "--json", "-o", str(tmp_path / "no" / "x.json")], 2, "does not exist"),
        ):
            line = assert_fails(topo.xdpfwd(pin_dir, *args), code, needle)
            assert "unexpected" not in line
    finally:
        os.unlink(stale)
    # None of them created the pin directory: every check came before any change.
    assert not os.path.exists(pin_dir)


def test_a_record_cut_inside_a_character_is_saved_without_its_path(topo, pin_dir, tmp_path):
    program = tmp_path / "p.c"
    program.write_text("int p(struct xdp_md *ctx) { return XDP_PASS; }\n")
    topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", str(program))
    prog_id = topo.list_json(pin_dir)["entries"][0]["egress_prog"]["id"]
    # What versions that truncated paths wrote for a long path of 2-byte characters.
    record = maps.UserProgTable(os.path.join(pin_dir, maps.PIN_USER_PROGS))
    try:
        cut = ("/" + "é" * 200).encode()[:256]
        raw = cut + b"p".ljust(64, b"\0") + bytes(32)
        sc.map_update(record.fd, prog_id.to_bytes(4, "little"), raw)
    finally:
        record.close()
    saved = topo.ok(pin_dir, "save")
    assert "not recorded; saved without it" in saved.stderr
    assert topo.ok(pin_dir, "list").returncode == 0


# --- interrupts --------------------------------------------------------------------------


def _catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(line for line in f if line.startswith("SigCgt:"))
    except (FileNotFoundError, StopIteration):
        return True  # gone already: stop waiting
    return bool(int(line.split()[1], 16) >> 14 & 1)


def test_down_interrupted_by_sigterm_exits_130_or_finishes(topo, pin_dir):
    outcomes = set()
    rng = random.Random(12)
    for _ in range(12):
        if not os.path.isdir(pin_dir):
            topo.ok(pin_dir, "add", "p1", "p2", "-b")
        proc = topo.start(pin_dir, "down")
        while not _catches_sigterm(proc.pid):
            time.sleep(0.001)
        time.sleep(rng.random() * 0.5)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        # Never killed by the signal (-15, "143" in a shell): 130, or 0 when it was over.
        assert proc.returncode in (0, 130), (proc.returncode, err)
        assert len(err.strip().splitlines()) <= 1, err
        outcomes.add(proc.returncode)
        # Whole or not at all: pins and attachment go together.
        assert os.path.isdir(pin_dir) == (topo.xdp("p1") is not None), err
    assert 130 in outcomes


def test_a_reader_without_access_to_the_pins_is_told_so(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2")
    nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    for args in (["list"], ["save"], ["stats"], ["stats", "--watch", "--count", "1"]):
        assert_fails(topo.xdpfwd(pin_dir, *args, inner=nobody), 5, f"no access to {pin_dir}")


# --- network namespaces ------------------------------------------------------------------


def run_in(ns: str, pin_dir: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        xdpfwd_cmd(ns, "--pin-dir", pin_dir, *args), capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("args", [*EVERY_COMMAND, ["follow"], ["doctor"]], ids=" ".join)
def test_a_pin_dir_refuses_commands_from_another_network_namespace(
    topo, scratch_ns, pin_dir, config, args
):
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    assert maps.PIN_NETNS in pinned(pin_dir)
    # Ports of the same names in another namespace: likely the same ifindexes too,
    # which the pin dir's entries would mean there.
    for port in ("p1", "p2"):
        sh("ip", "-n", scratch_ns, "link", "add", port, "type", "veth", "peer", "name", f"q{port}")

    def state():
        listed = topo.list_json(pin_dir)
        del listed["time"]
        return pinned(pin_dir), listed

    before = state()
    args = [config if a == "CONFIG" else a for a in args]
    assert_fails(
        run_in(scratch_ns, pin_dir, *args),
        2,
        f"serves the ports of network namespace {topo.fwd}",
        f"nsenter --net=/run/netns/{topo.fwd} xdpfwd --pin-dir {pin_dir}",
    )
    assert state() == before
    assert topo.ping(1, topo.host(2).ip) == 3


def forward_in_new_namespace(name: str, pin_dir: str) -> None:
    sh("ip", "netns", "add", name)
    for a, b in (("a1", "b1"), ("a2", "b2")):
        sh("ip", "-n", name, "link", "add", a, "type", "veth", "peer", "name", b)
        for dev in (a, b):
            sh("ip", "-n", name, "link", "set", dev, "up")
    result = run_in(name, pin_dir, "add", "a1", "a2")
    assert result.returncode == 0, result.stderr


def test_the_pins_of_a_namespace_that_is_gone_are_only_removed(scratch_ns, pin_dir):
    gone = f"xt{RUN_ID}gone"
    try:
        forward_in_new_namespace(gone, pin_dir)
    finally:
        sh("ip", "netns", "del", gone)
    assert_fails(
        run_in(scratch_ns, pin_dir, "list"), 2, "that is gone", f"--pin-dir {pin_dir} down"
    )
    result = run_in(scratch_ns, pin_dir, "down")
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(pin_dir)


def linked_inode(pin_dir: str) -> int | None:
    pin = netns_link.read(os.path.join(pin_dir, maps.PIN_NETNS))
    return pin.inode if pin.kind == "link" else None


HOLD_BY_SOCKET = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
home = os.open("/proc/self/ns/net", os.O_RDONLY)
target = os.open(sys.argv[1], os.O_RDONLY)
assert libc.setns(target, 0x40000000) == 0
held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
assert libc.setns(home, 0x40000000) == 0
os.close(target)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_namespace_held_only_by_a_socket_is_not_gone(scratch_ns, pin_dir):
    # No name, no process and no fd of it: only a socket made there keeps it, which
    # no search of /run/netns, /proc or mounts finds.
    name = f"xt{RUN_ID}sk"
    forward_in_new_namespace(name, pin_dir)
    holder = subprocess.Popen(
        ["python3", "-c", HOLD_BY_SOCKET, f"/run/netns/{name}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        sh("ip", "netns", "del", name)
        before = pinned(pin_dir)
        assert_fails(run_in(scratch_ns, pin_dir, "down"), 2, "serves the ports of the network")
        assert pinned(pin_dir) == before  # its program still runs there, on a1
    finally:
        holder.communicate("", timeout=10)
        sh("ip", "netns", "del", name, check=False)
    deadline = time.monotonic() + 10  # the kernel frees a namespace in the background
    while "that is gone" not in run_in(scratch_ns, pin_dir, "list").stderr:
        assert time.monotonic() < deadline, "the namespace was not freed"
        time.sleep(0.1)
    result = run_in(scratch_ns, pin_dir, "down")
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(pin_dir)


def test_a_new_namespace_is_not_taken_for_a_gone_one(pin_dir):
    # The kernel gives a new namespace the inode of one just gone: the link tells them
    # apart, where the inode cannot.
    first, second = f"xt{RUN_ID}n1", f"xt{RUN_ID}n2"
    try:
        forward_in_new_namespace(first, pin_dir)
        sh("ip", "netns", "del", first)
        deadline = time.monotonic() + 10
        while linked_inode(pin_dir) != 0:
            assert time.monotonic() < deadline, "the namespace was not freed"
            time.sleep(0.1)
        sh("ip", "netns", "add", second)
        assert_fails(run_in(second, pin_dir, "list"), 2, "that is gone")
        assert_fails(run_in(second, pin_dir, "add", "lo", "lo"), 2, "that is gone")
    finally:
        for name in (first, second):
            sh("ip", "netns", "del", name, check=False)


def as_an_earlier_version_left_it(pin_dir: str, record) -> None:
    """Without loss accounting and the namespace link: with record (inode, cookie) in
    the map the last version before the link pinned instead, or with none."""
    for name in pinned(pin_dir):
        if name == maps.PIN_NETNS or name.startswith(("link_tp_", "prog_tp_")):
            os.unlink(os.path.join(pin_dir, name))
    if record is not None:
        fd = sc.map_create(sc.MAP_TYPE_ARRAY, 4, 16, 1, "xdpfwd_netns")
        try:
            sc.map_update(fd, bytes(4), struct.pack("=QQ", *record))
            sc.obj_pin(fd, os.path.join(pin_dir, maps.PIN_NETNS))
        finally:
            os.close(fd)


def doctor_check(topo, pin_dir: str, check_id: str) -> dict:
    checks = json.loads(topo.ok(pin_dir, "doctor", "--no-compile", "--json").stdout)["checks"]
    return next(c for c in checks if c["id"] == check_id)


def identity_of(ns: str) -> tuple[int, int]:
    with netns.entered(ns):
        return netns.current_inode(), netns.current_cookie()


@pytest.mark.parametrize("record", ["earlier map", "none"])
def test_an_earlier_pin_dir_serves_only_where_its_program_runs(topo, pin_dir, scratch_ns, record):
    topo.ok(pin_dir, "add", "p1", "p2")
    as_an_earlier_version_left_it(pin_dir, identity_of(topo.fwd) if record != "none" else None)
    watch = ("stats", "--watch", "--count", "1", "--interval", "0.2")
    before = pinned(pin_dir)
    for args in (["list"], ["save"], watch, ["add", "p2", "p1"]):
        # Its ifindexes are topo's devices; its tracepoint programs would count here.
        assert_fails(run_in(scratch_ns, pin_dir, *args), 2, "tied to no network namespace")
    assert_fails(
        run_in(scratch_ns, pin_dir, "down"), 2, f"still runs on p1 in network namespace {topo.fwd}"
    )
    assert pinned(pin_dir) == before and topo.xdp("p1") is not None
    assert doctor_check(topo, pin_dir, "namespace")["status"] == "warn"
    topo.ok(pin_dir, *watch)  # where its program runs: tied to it, and accounted
    assert doctor_check(topo, pin_dir, "namespace")["status"] == "pass"
    assert linked_inode(pin_dir) == os.stat(f"/run/netns/{topo.fwd}").st_ino
    assert "link_tp_xdp_devmap_xmit" in pinned(pin_dir)
    assert_fails(run_in(scratch_ns, pin_dir, "list"), 2, "serves the ports")
    topo.ok(pin_dir, "down")
    assert not os.path.exists(pin_dir)


@pytest.mark.parametrize("removed", [("netns", "prog_ingress"), ("netns", "prog_ingress", "ports")])
def test_a_pin_dir_whose_link_and_program_pin_were_removed_serves_where_it_runs(
    topo, pin_dir, scratch_ns, config, removed
):
    topo.ok(pin_dir, "add", "p1", "p2")
    for name in removed:
        os.unlink(os.path.join(pin_dir, name))
    # Its configuration is recorded: whose it is cannot be told, not even "nobody's yet".
    sh("ip", "-n", scratch_ns, "link", "add", "p1", "type", "veth", "peer", "name", "p2")
    assert_fails(run_in(scratch_ns, pin_dir, "apply", config), 2, "tied to no network namespace")
    assert maps.PIN_NETNS not in pinned(pin_dir)
    # Where the program runs (it uses the maps pinned here): this namespace's. down
    # finds it without its pin, and detaches it.
    result = topo.ok(pin_dir, "down")
    assert "detached from p1" in result.stdout and topo.xdp("p1") is None


def pin_user_sk_lookup_link(ns: str, path: str) -> None:
    """Another tool's sk_lookup program, attached to namespace ns and pinned at path."""
    code = sc.insn(0xB7, imm=1) + sc.insn(0x95)
    prog = sc.prog_load(sc.PROG_TYPE_SK_LOOKUP, code, "usersteer", sc.ATTACH_SK_LOOKUP)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        link = sc.link_create(prog, target, sc.ATTACH_SK_LOOKUP)
        sc.obj_pin(link, path)
        os.close(link)
    finally:
        os.close(target)
        os.close(prog)


@pytest.mark.parametrize("intruder", ["link", "map", "directory"])
def test_a_foreign_object_in_place_of_the_namespace_link_is_refused_and_kept(
    topo, pin_dir, scratch_ns, intruder
):
    topo.ok(pin_dir, "add", "p1", "p2")
    path = os.path.join(pin_dir, maps.PIN_NETNS)
    os.unlink(path)
    if intruder == "link":
        pin_user_sk_lookup_link(topo.fwd, path)
    elif intruder == "map":
        pin_foreign_map(path)
    else:
        os.mkdir(path)
    for args in (["list"], ["add", "p2", "p1"], ["down"]):
        assert_fails(topo.xdpfwd(pin_dir, *args), 2, "is not xdpfwd's namespace link")
    for args in (["list"], ["prune"], ["down"]):  # nor can it hide another namespace
        assert_fails(run_in(scratch_ns, pin_dir, *args), 2, "is not xdpfwd's namespace link")
    # Still there, still theirs; nothing detached.
    assert os.path.isdir(path) if intruder == "directory" else sc.pinned_kind(path)[0] == intruder
    assert topo.xdp("p1") is not None
    os.rmdir(path) if intruder == "directory" else os.unlink(path)
    topo.ok(pin_dir, "down")


def test_a_reader_without_cap_sys_admin_is_refused_another_namespaces_dir(
    topo, pin_dir, scratch_ns
):
    # It may read the pins (CAP_DAC_OVERRIDE) but not open the link's program by id.
    topo.ok(pin_dir, "add", "p1", "p2")
    reader = (
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+dac_override",
        "--ambient-caps=-all,+dac_override",
    )
    for args in (["list"], ["save"], ["stats"]):
        result = subprocess.run(
            xdpfwd_cmd(scratch_ns, "--pin-dir", pin_dir, *args, inner=reader),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_fails(result, 2, "serves the ports of network namespace")


def test_a_namespace_link_detached_by_hand_does_not_let_down_orphan_the_program(
    topo, pin_dir, scratch_ns
):
    topo.ok(pin_dir, "add", "p1", "p2")
    link = json.loads(
        sh("bpftool", "-j", "link", "show", "pinned", os.path.join(pin_dir, maps.PIN_NETNS)).stdout
    )
    sh("bpftool", "link", "detach", "id", str(link["id"]))
    assert linked_inode(pin_dir) == 0  # it reads as gone, though topo's namespace lives
    assert_fails(
        run_in(scratch_ns, pin_dir, "down"),
        2,
        f"still runs on p1 in network namespace {topo.fwd}",
        f"nsenter --net=/run/netns/{topo.fwd} xdpfwd --pin-dir {pin_dir} down",
    )
    assert topo.xdp("p1") is not None and os.path.exists(pin_dir)
    # Where the program runs, the directory is still this namespace's: a change ties
    # it again (prune, which follow runs, too).
    assert topo.list_json(pin_dir)["entries"]
    topo.ok(pin_dir, "prune")
    assert linked_inode(pin_dir) == os.stat(f"/run/netns/{topo.fwd}").st_ino
    assert_fails(run_in(scratch_ns, pin_dir, "list"), 2, "serves the ports")
    topo.ok(pin_dir, "down")
    assert topo.xdp("p1") is None and not os.path.exists(pin_dir)


def test_a_bpffs_mounted_by_hand_under_ip_netns_exec_is_refused(scratch_ns):
    # The mount ends with the shell, the pins with it, where the program would stay.
    pin_dir = f"/sys/fs/bpf/xt{RUN_ID}hand"
    sh("ip", "-n", scratch_ns, "link", "add", "a1", "type", "veth", "peer", "name", "b1")

    def run_after_mounting(*args: str) -> subprocess.CompletedProcess:
        script = f"mount -t bpf bpf /sys/fs/bpf && {XDPFWD} --pin-dir {pin_dir} {' '.join(args)}"
        return subprocess.run(
            ["ip", "netns", "exec", scratch_ns, "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert_fails(
        run_after_mounting("add", "a1", "b1", "--force"),
        5,
        "was mounted in this process's own mount namespace",
    )
    xdp = json.loads(sh("ip", "-n", scratch_ns, "-j", "link", "show", "a1").stdout)[0].get("xdp")
    assert xdp is None
    # Nor does a reader there call the state it cannot see empty (save: an empty backup).
    assert_fails(run_after_mounting("save"), 5, "cannot be seen")


def test_a_command_left_running_by_its_ip_netns_exec_shell_mounts_no_bpffs(scratch_ns, tmp_path):
    # Its parent gone, it has pid 1 (or a subreaper) for a parent, in another mount
    # namespace: the mount would still end with the command.
    pin_dir, out = f"/sys/fs/bpf/xt{RUN_ID}bg", tmp_path / "out"
    sh("ip", "-n", scratch_ns, "link", "add", "a1", "type", "veth", "peer", "name", "b1")
    for dev in ("a1", "b1"):
        sh("ip", "-n", scratch_ns, "link", "set", dev, "up")
    command = (
        f"(sleep 0.5; {XDPFWD} --pin-dir {pin_dir} add a1 a1 --force; echo rc=$?) > {out} 2>&1"
    )
    sh("ip", "netns", "exec", scratch_ns, "sh", "-c", f"{command} & exit 0")
    deadline = time.monotonic() + 60
    while "rc=" not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < deadline, "the command did not finish"
        time.sleep(0.1)
    assert "rc=5" in out.read_text() and "ip netns exec" in out.read_text()
    xdp = json.loads(sh("ip", "-n", scratch_ns, "-j", "link", "show", "a1").stdout)[0].get("xdp")
    assert xdp is None and not os.path.exists(pin_dir)


def test_a_lab_that_would_vanish_with_ip_netns_exec_is_not_made(scratch_ns):
    # Its host namespaces would be bind mounts in the command's own mount namespace:
    # gone with it, veths and all, leaving names under /run/netns that no lab owns.
    prefix = f"xt{RUN_ID}v"
    lab_up = [XDPFWD, "lab", "up", "--ports", "2", "--name", prefix]
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", scratch_ns, *lab_up],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_fails(result, 5, "as under `ip netns exec`", f"`xdpfwd --netns {scratch_ns} ...`")
        assert prefix not in sh("ip", "-n", scratch_ns, "link").stdout
    finally:
        made = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        for name in made:
            sh("ip", "netns", "del", name, check=False)
    assert not made


def test_the_ip_netns_exec_hint_for_a_netns_dir_gives_its_base_and_netns_once(scratch_ns):
    base = f"/sys/fs/bpf/xt{RUN_ID}hint"
    for pin_dir in (f"{base}@{scratch_ns}", base):
        result = subprocess.run(
            ["ip", "netns", "exec", scratch_ns, XDPFWD, "--pin-dir", pin_dir, "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_fails(result, 5, f"use `xdpfwd --pin-dir {base} --netns {scratch_ns} ...` instead")


@pytest.mark.parametrize("through_shell", [False, True], ids=["direct", "through-a-shell"])
def test_a_bpffs_that_would_vanish_with_ip_netns_exec_is_not_mounted(scratch_ns, through_shell):
    # ip netns exec gives the command a mount namespace of its own, with a fresh /sys:
    # a bpffs mounted there would go with the command, its pins too.
    pin_dir = f"/sys/fs/bpf/xt{RUN_ID}exec"
    for a, b in (("a1", "b1"), ("a2", "b2")):
        sh("ip", "-n", scratch_ns, "link", "add", a, "type", "veth", "peer", "name", b)
    for dev in ("a1", "a2", "b1", "b2"):
        sh("ip", "-n", scratch_ns, "link", "set", dev, "up")

    def run(*args):
        command = [XDPFWD, "--pin-dir", pin_dir, *args]
        if through_shell:  # the parent shares the command's mount namespace
            command = ["sh", "-c", " ".join(command)]
        return subprocess.run(
            ["ip", "netns", "exec", scratch_ns, *command],
            capture_output=True,
            text=True,
            timeout=60,
        )

    from_outside = f"`xdpfwd --pin-dir {pin_dir} --netns {scratch_ns} ...`"
    assert_fails(run("add", "a1", "a2"), 5, "ip netns exec", from_outside)
    xdp = json.loads(sh("ip", "-n", scratch_ns, "-j", "link", "show", "a1").stdout)[0].get("xdp")
    assert xdp is None and not os.path.exists(pin_dir)
    # State set up where it lasts is out of sight there: no reader may call it empty.
    result = subprocess.run(
        xdpfwd_cmd(scratch_ns, "--pin-dir", pin_dir, "add", "a1", "a2"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    try:
        for args in (["list"], ["save"], ["down"], ["prune"], ["stats"], ["follow"], ["doctor"]):
            assert_fails(run(*args), 5, "cannot be seen", from_outside)
        assert pinned(pin_dir) and json.loads(
            sh("ip", "-n", scratch_ns, "-j", "link", "show", "a1").stdout
        )[0].get("xdp")
    finally:
        run_in(scratch_ns, pin_dir, "down")
