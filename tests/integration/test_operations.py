"""Operating xdpfwd: doctor, --netns, concurrent writers, device churn, external
interference, and save/apply (including an interrupted apply)."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xdpfwd.kernel import netns
from xdpfwd.ops import applying
from xdpfwd.state import config
from xdpfwd.state.pins import PinDir

from ..strategies import CONFIG_DOCS
from .conftest import RUN_ID
from .net import XDPFWD, UdpSink, assert_fails, in_netns, run_fix, send_udp, sh, snapshot


def rows(topo, pin_dir) -> dict:
    return {
        (r["ingress"]["ifname"] or r["ingress"]["ifindex"]): r
        for r in topo.list_json(pin_dir)["entries"]
    }


def doctor(topo, pin_dir) -> tuple[int, dict]:
    result = topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile")
    return result.returncode, {c["check"]: c for c in json.loads(result.stdout)["checks"]}


# --- doctor and warnings ---------------------------------------------------------------


def test_doctor_passes_on_a_healthy_setup_and_names_what_breaks(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    code, checks = doctor(topo, pin_dir)
    assert code == 0
    for name in (
        "privileges",
        "bpffs",
        "BCC",
        "DEVMAP",
        "DEVMAP_HASH",
        "egress programs",
        "broadcast",
        "pins",
        "port p1",
        "port p2",
    ):
        assert checks[name]["status"] == "pass", checks[name]
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "xdp", "off")
    code, checks = doctor(topo, pin_dir)
    assert code == 1
    assert checks["port p1"]["status"] == "fail"
    run_fix(topo, pin_dir, checks["port p1"]["fix"], "prune")
    assert doctor(topo, pin_dir)[0] == 0


def test_add_and_doctor_flag_a_veth_peer_that_cannot_take_redirected_frames(make_topo, pin_dir):
    topo = make_topo(2, gro=False)
    result = topo.ok(pin_dir, "add", "p1", "p2")
    assert "warning: p2 cannot take frames redirected to it" in result.stderr
    result = topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile")
    checks = json.loads(result.stdout)["checks"]
    problem = [c for c in checks if "cannot take frames" in c["detail"]]
    assert result.returncode == 1 and problem[0]["check"] == "port p2"
    assert problem[0]["fix"] == f"ip netns exec {topo.host(2).ns} ethtool -K h0 gro on"


def test_fixes_for_devices_of_a_netns_namespace_run_there(topo, pin_dir):
    """With --netns, a fix for a device of that namespace is run inside it: the user's
    shell is where xdpfwd was started, where a device of that name may be another."""
    sh("ip", "-n", topo.fwd, "link", "add", "sa", "mtu", "1400", "type", "veth", "peer", "sb")
    sh("ip", "-n", topo.fwd, "link", "set", "sa", "up")
    sh("ip", "-n", topo.fwd, "link", "set", "sb", "up")
    here = ["--pin-dir", pin_dir, "--netns", topo.fwd]
    result = subprocess.run(
        [XDPFWD, *here, "add", "p1", "sa"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    inside = f"ip netns exec {topo.fwd}"
    assert f"{inside} ethtool -K sb gro on" in result.stderr  # sa's peer takes no redirects
    assert f"{inside} ip link set dev sa mtu 1500" in result.stderr
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "down")
    result = subprocess.run(
        [XDPFWD, *here, "doctor", "--json", "--no-compile"], capture_output=True, text=True
    )
    fixes = [c["fix"] for c in json.loads(result.stdout)["checks"] if c["check"] == "port p1"]
    assert f"{inside} ip link set dev p1 up" in fixes
    subprocess.run([XDPFWD, *here, "down"], capture_output=True, check=True, timeout=60)


def test_netns_of_a_deleted_namespace_says_where_its_pins_stay(pin_dir):
    name = f"xn{RUN_ID}"
    sh("ip", "netns", "add", name)
    try:
        for a, b in (("a1", "b1"), ("a2", "b2")):
            sh("ip", "-n", name, "link", "add", a, "type", "veth", "peer", b)
            sh("ip", "-n", name, "link", "set", a, "up")
        here = [XDPFWD, "--pin-dir", pin_dir, "--netns", name]
        subprocess.run([*here, "add", "a1", "a2"], capture_output=True, check=True, timeout=60)
    finally:
        sh("ip", "netns", "del", name, check=False)
    line = assert_fails(
        subprocess.run([*here, "list"], capture_output=True, text=True, timeout=60),
        2,
        f"no such network namespace: {name}",
        f"stay in {pin_dir}@{name}",
    )
    hint = line.split("`")[1]
    assert hint == f"xdpfwd --pin-dir {pin_dir}@{name} down"
    down = subprocess.run([XDPFWD, *hint.split()[1:]], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not os.path.exists(f"{pin_dir}@{name}")


def test_follow_ends_when_the_name_of_its_namespace_is_deleted(pin_dir):
    name = f"xf{RUN_ID}"
    sh("ip", "netns", "add", name)
    here = [XDPFWD, "--pin-dir", pin_dir, "--netns", name]
    try:
        for a, b in (("a1", "b1"), ("a2", "b2")):
            sh("ip", "-n", name, "link", "add", a, "type", "veth", "peer", b)
            sh("ip", "-n", name, "link", "set", a, "up")
        subprocess.run([*here, "add", "a1", "a2", "-b"], capture_output=True, check=True)
        follow = subprocess.Popen(
            [*here, "follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert "following link events" in follow.stdout.readline()
    finally:
        sh("ip", "netns", "del", name, check=False)
    try:
        _, err = follow.communicate(timeout=10)
    finally:
        follow.kill()
    assert follow.returncode == 2, err
    ended = f"network namespace {name} was deleted: follow ends, where it would keep it alive"
    assert err == f"error: {ended}, with its devices\n"
    # Nothing holds the namespace now: its pins can go.
    down = subprocess.run(
        [XDPFWD, "--pin-dir", f"{pin_dir}@{name}", "down"], capture_output=True, text=True
    )
    assert down.returncode == 0, down.stderr


def test_the_fix_for_a_peer_in_the_initial_namespace_enters_it_by_a_lasting_path(topo, pin_dir):
    """pid 1's namespace file (or, where that is closed, the first other one there), not
    that of whichever process shows the namespace first, often a short-lived worker."""
    if os.stat("/proc/self/ns/net").st_ino != netns.INIT_NET_INODE:
        pytest.skip("the tests run outside the initial network namespace")
    port, peer = f"xi{RUN_ID}", f"xo{RUN_ID}"  # the peer stays in this, the initial one
    sh("ip", "link", "add", peer, "type", "veth", "peer", "name", port)
    try:
        sh("ip", "link", "set", port, "netns", topo.fwd)
        sh("ip", "-n", topo.fwd, "link", "set", port, "up")
        sh("ip", "link", "set", peer, "up")
        result = topo.ok(pin_dir, "add", "p1", port)
        assert f"warning: {port} cannot take frames redirected to it" in result.stderr
        fix = f"nsenter --net={netns.initial_path()} ethtool -K {peer} gro on"
        assert fix in result.stderr and "nsenter -t" not in result.stderr

        def doctor_fixes():
            doctor = topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile")
            return [c["fix"] for c in json.loads(doctor.stdout)["checks"]]

        assert fix in doctor_fixes()
        sh(*fix.split())  # and it works
        assert fix not in doctor_fixes()
    finally:
        sh("ip", "link", "del", peer, check=False)


# --- namespaces --------------------------------------------------------------------------


def test_netns_keeps_namespaces_apart(make_topo, pin_dir):
    blue, red = make_topo(2), make_topo(2)

    def xdpfwd(ns, *args):
        return subprocess.run(
            [XDPFWD, "--pin-dir", pin_dir, "--netns", ns.fwd, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert xdpfwd(blue.fwd and blue, "add", "p1", "p2", "-b").returncode == 0
    assert xdpfwd(red, "add", "p2", "p1").returncode == 0
    assert os.path.isdir(f"{pin_dir}@{blue.fwd}") and os.path.isdir(f"{pin_dir}@{red.fwd}")
    assert blue.ping(1, blue.host(2).ip) == 3
    blue_rows = json.loads(xdpfwd(blue, "list", "--json").stdout)["entries"]
    red_rows = json.loads(xdpfwd(red, "list", "--json").stdout)["entries"]
    assert {r["ingress"]["ifname"] for r in blue_rows} == {"p1", "p2"}
    assert {r["ingress"]["ifname"] for r in red_rows} == {"p2"}
    assert xdpfwd(blue, "down").returncode == 0
    assert red.xdp("p2") is not None and blue.xdp("p1") is None
    assert json.loads(xdpfwd(red, "list", "--json").stdout)["entries"] == red_rows


# --- concurrency -------------------------------------------------------------------------


def test_parallel_adds_all_land(make_topo, pin_dir):
    topo = make_topo(8)
    pairs = [(f"p{i}", f"p{i % 8 + 1}") for i in range(1, 9)]
    procs = [topo.start(pin_dir, "add", a, b) for a, b in pairs]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    listing = topo.list_json(pin_dir)
    assert {(r["ingress"]["ifname"], r["egress"]["ifname"]) for r in listing["entries"]} == set(
        pairs
    )
    assert len({topo.xdp(a)["prog"]["id"] for a, _ in pairs}) == 1  # one program, compiled once


def test_watch_copes_with_down_meanwhile(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    watch = topo.start(pin_dir, "stats", "--watch", "--json", "--count", "8", "--interval", "0.25")
    assert watch.stdout.readline()
    topo.ok(pin_dir, "down")
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["ports"] == []


# --- device churn and external interference ---------------------------------------------


class Sender(threading.Thread):
    def __init__(self, src, dst_ip, port):
        super().__init__()
        self.args, self.stopped = (src, dst_ip), threading.Event()
        self.port = port

    def run(self):
        while not self.stopped.is_set():
            send_udp(*self.args, 16, port=self.port)
            time.sleep(0.01)


@pytest.mark.parametrize(
    "setup, victim",
    [([["add", "p1", "p2"], ["add", "p3", "p4"]], "p4"), ([["broadcast", "p1", "p2", "p3"]], "p3")],
    ids=["entry", "group"],
)
def test_a_device_deleted_while_prune_runs_gets_the_pass_planned_again(
    make_topo, pin_dir, monkeypatch, setup, victim
):
    topo = make_topo(4)
    for args in setup:
        topo.ok(pin_dir, *args)
    read = applying.running_state

    def deleted_after_the_links_were_read(dp, links):
        if victim in {link.ifname for link in links.values()}:
            sh("ip", "-n", topo.fwd, "link", "del", victim)
        # The kernel took what named it from the devmaps: the plan writes it back.
        return read(dp, links)

    monkeypatch.setattr(applying, "running_state", deleted_after_the_links_were_read)
    with in_netns(topo.fwd):
        applying.reconcile(PinDir.parse(pin_dir))
    monkeypatch.undo()
    assert topo.ok(pin_dir, "prune").stdout == "nothing to prune\n"
    states = {row["ingress"]["ifname"]: row["state"] for row in topo.list_json(pin_dir)["entries"]}
    assert victim not in states and None not in states, states
    assert all(state == "ok" for state in states.values()), states
    assert topo.udp_arrives(1, 2, 20) == 20


def test_a_device_deleted_while_apply_runs_gets_the_change_planned_again(
    make_topo, pin_dir, monkeypatch
):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p3", "p2")
    path = topo.config_file({"forward": [{"from": "p1", "to": ["p2", "p4"]}]})
    read = applying.running_state

    def deleted_after_the_links_were_read(dp, links):
        if "p4" in {link.ifname for link in links.values()}:
            sh("ip", "-n", topo.fwd, "link", "del", "p4")
        return read(dp, links)  # the plan writes buckets to p4: the kernel refuses

    monkeypatch.setattr(applying, "running_state", deleted_after_the_links_were_read)
    with in_netns(topo.fwd):
        result = applying.apply(PinDir.parse(pin_dir), path)
    monkeypatch.undo()
    assert "p4 does not exist: taken as down" in " ".join(result.warnings)
    (row,) = topo.list_json(pin_dir)["entries"]
    ports = {p["name"]: p["buckets"] for p in row["balance"]["ports"]}
    assert row["ingress"]["ifname"] == "p1" and ports == {"p2": 256, "p4": 0}
    assert topo.udp_arrives(1, 2, 20) == 20


def test_a_port_deleted_mid_traffic_leaves_the_others_forwarding(make_topo, pin_dir):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    topo.ok(pin_dir, "add", "p3", "p2")
    gone = topo.list_json(pin_dir)["entries"][0]["ingress"]["ifindex"]
    sink = UdpSink(h2, port=9500)
    sender = Sender(h3, h2.ip, 9500)
    sender.start()
    try:
        time.sleep(0.3)
        sh("ip", "-n", topo.fwd, "link", "del", "p1")
        sink.count(10**6, timeout=0.3)  # drain what came before
        time.sleep(0.3)
        assert sink.count(10, timeout=2) >= 10  # p3 -> p2 still forwards
    finally:
        sender.stopped.set()
        sender.join()
        sink.close()
    by_port = rows(topo, pin_dir)
    assert by_port[gone]["state"] == "device gone"
    assert by_port["p2"]["state"] == "egress gone"  # the kernel purged p2 -> p1
    pruned = topo.ok(pin_dir, "prune").stdout
    assert f"forgot ifindex {gone}" in pruned
    assert gone not in rows(topo, pin_dir)
    # A new device under the old name is not bound silently; apply binds it.
    topo.plug(h1)
    sh("ip", "-n", h2.ns, "neigh", "del", h1.ip, "dev", "h0")  # h1 has a new MAC
    assert topo.xdp("p1") is None
    assert topo.ping(2, h1.ip, count=2) == 0  # p2 -> p1 went with the old p1
    config = topo.config_file({"forward": [{"from": "p1", "to": "p2"}, {"from": "p2", "to": "p1"}]})
    topo.ok(pin_dir, "apply", config)
    assert rows(topo, pin_dir)["p1"]["state"] == "ok"
    sh("ip", "-n", h2.ns, "neigh", "flush", "dev", "h0")  # the failed lookup of h1, above
    assert topo.ping(2, h1.ip) == 3


def test_a_new_device_given_a_deleted_ports_ifindex_is_not_taken_for_it(make_topo, pin_dir):
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    reused = rows(topo, pin_dir)["p2"]["ingress"]["ifindex"]
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    sh(
        "ip",
        "-n",
        topo.fwd,
        "link",
        "add",
        "yq",
        "index",
        str(reused),
        "type",
        "veth",
        "peer",
        "yqp",
    )
    check = doctor(topo, pin_dir)[1]["port yq"]
    assert check["detail"] == f"ifindex {reused} was p2's, whose device is gone; yq has it now"
    saved = topo.ok(pin_dir, "save")
    assert f"ifindex {reused} left out: p2's device is gone" in saved.stderr
    assert "yq" not in saved.stdout
    run_fix(topo, pin_dir, check["fix"], "prune")
    assert reused not in rows(topo, pin_dir) and "yq" not in rows(topo, pin_dir)
    assert topo.xdp("yq") is None and topo.xdp("p1") is None  # p1 -> p2 went with p2
    assert doctor(topo, pin_dir)[0] == 0


def test_del_names_a_deleted_ingress_before_and_after_prune(make_topo, pin_dir):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "add", "p3", "p2")
    gone = rows(topo, pin_dir)["p1"]["ingress"]["ifindex"]
    sh("ip", "-n", topo.fwd, "link", "del", "p1")
    # Before prune the entry still runs, under the ifindex p1 last had.
    assert "removed p1 -> p2" in topo.ok(pin_dir, "del", "p1").stdout
    assert gone not in rows(topo, pin_dir)
    # After prune only the recorded configuration has p3's entry.
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    topo.ok(pin_dir, "prune")
    assert "forgot p3 -> p2" in topo.ok(pin_dir, "del", "p3").stdout
    topo.plug(h1)
    topo.plug(h3)
    assert topo.ok(pin_dir, "prune").stdout.strip() == "nothing to prune"
    assert topo.xdp("p1") is None and topo.xdp("p3") is None
    assert_fails(topo.xdpfwd(pin_dir, "del", "p1"), 1, "p1 has no xdpfwd entry")
    assert_fails(topo.xdpfwd(pin_dir, "del", "pzz"), 2, "no such interface: pzz")


def test_a_port_that_refuses_the_attach_holds_up_no_other_repair(make_topo, pin_dir):
    topo = make_topo(4)
    h1, h2, h3, h4 = topo.hosts
    topo.ok(pin_dir, "add", "p1", "p2", "--mode", "native")
    topo.ok(pin_dir, "add", "p3", "p4")
    # p1 comes back as a bridge (no native XDP), p4 as a veth that needs p3's entry.
    sh("ip", "-n", topo.fwd, "link", "del", "p1")
    sh("ip", "-n", topo.fwd, "link", "add", "p1", "type", "bridge")
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "up")
    sh("ip", "-n", topo.fwd, "link", "del", "p4")
    topo.plug(h4)
    result = topo.ok(pin_dir, "prune")
    assert "forward p3 -> p4" in result.stdout
    assert "native mode" in result.stderr and "p1 left out" in result.stderr, result.stderr
    assert topo.xdp("p1") is None
    sh("ip", "-n", h3.ns, "neigh", "replace", h4.ip, "lladdr", h4.mac, "dev", h3.dev)
    with UdpSink(h4) as sink:
        send_udp(h3, h4.ip, 10)
        assert sink.count(10) == 10


def test_an_entry_whose_egress_is_gone_settles_with_one_prune(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2")
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    assert "detached from p1" in topo.ok(pin_dir, "prune").stdout
    assert topo.ok(pin_dir, "prune").stdout.strip() == "nothing to prune"
    assert topo.xdp("p1") is None
    # follow prunes after each link event: an attach and a detach per prune would feed
    # it events for ever.
    follow = topo.start(pin_dir, "follow")
    time.sleep(1)
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "down")
    time.sleep(1.5)
    follow.send_signal(signal.SIGINT)
    out, err = follow.communicate(timeout=10)
    assert follow.returncode == 0, err
    assert "attach" not in out, out


def test_program_detached_by_hand_is_reported_and_repaired(topo, pin_dir):
    config = topo.config_file({"forward": [{"from": "p1", "to": "p2"}, {"from": "p2", "to": "p1"}]})
    topo.ok(pin_dir, "apply", config)
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "xdp", "off")
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "down")
    assert rows(topo, pin_dir)["p1"]["state"] == "program not attached"
    check = doctor(topo, pin_dir)[1]["port p1"]
    assert check["detail"] == "xdpfwd's program is not attached; the link is down"
    run_fix(topo, pin_dir, check["fix"], "prune")  # prune attaches what the record has
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "up")
    assert rows(topo, pin_dir)["p1"]["state"] == "ok"
    assert topo.ping(1, topo.host(2).ip) == 3
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "xdp", "off")
    result = topo.ok(pin_dir, "apply", config)
    assert "attach to p1" in result.stdout
    assert rows(topo, pin_dir)["p1"]["state"] == "ok"
    assert topo.ping(1, topo.host(2).ip) == 3


def test_pins_removed_by_hand_are_reported_and_rebuilt(topo, pin_dir):
    config = topo.config_file({"forward": [{"from": "p1", "to": "p2"}, {"from": "p2", "to": "p1"}]})
    topo.ok(pin_dir, "apply", config)
    sh("rm", "-rf", pin_dir)
    assert topo.list_json(pin_dir)["entries"] == []
    code, checks = doctor(topo, pin_dir)
    assert "of no pin dir" in checks["port p1"]["detail"]
    topo.ok(pin_dir, "apply", config)
    assert {r["state"] for r in rows(topo, pin_dir).values()} == {"ok"}
    assert topo.ping(1, topo.host(2).ip) == 3
    # A pin removed from a working setup: list says so in one line, apply repairs.
    os.unlink(os.path.join(pin_dir, "ports"))
    line = assert_fails(topo.xdpfwd(pin_dir, "list"), 1, "incomplete")
    assert f"`xdpfwd --pin-dir {pin_dir} down`" in line  # not the default dir's
    topo.ok(pin_dir, "apply", config)
    assert topo.ping(2, topo.host(1).ip) == 3
    # With the program's pin removed, its ports are still the dir's own: doctor fails
    # the pins, and calls no port an orphan.
    os.unlink(os.path.join(pin_dir, "prog_ingress"))
    code, checks = doctor(topo, pin_dir)
    assert code == 1 and "incomplete" in checks["pins"]["detail"]
    assert "port p1" not in checks and "port p2" not in checks, checks
    # (as after a first change killed half way): add says so, as list does; it failed
    # on every try with "File exists", pinning what was there already
    before = sorted(os.listdir(pin_dir))
    line = assert_fails(topo.xdpfwd(pin_dir, "add", "p1", "p2", "--force"), 1, "incomplete")
    assert "missing prog_ingress" in line and sorted(os.listdir(pin_dir)) == before
    topo.ok(pin_dir, "apply", config)
    assert topo.ping(1, topo.host(2).ip) == 3


# --- save and apply ----------------------------------------------------------------------


def test_save_then_apply_reproduces_the_setup_and_twice_changes_nothing(
    make_topo, pin_dir, tmp_path
):
    topo = make_topo(5)
    topo.ok(pin_dir, "add", "p1", "p2", "--on-miss", "drop")
    topo.ok(pin_dir, "add", "p2", "p1", "--src-mac", "egress", "--dst-mac", topo.host(1).mac)
    topo.ok(pin_dir, "broadcast", "p3", "p4", "p5", "--exclude-ingress", "--group", "hub")
    saved = tmp_path / "saved.yaml"
    topo.ok(pin_dir, "save", "--output", str(saved))
    before = topo.list_json(pin_dir)
    topo.ok(pin_dir, "down")
    dry = topo.ok(pin_dir, "apply", str(saved), "--dry-run")
    assert "forward p2 -> p1 (MAC rewrite)" in dry.stdout and not os.path.exists(pin_dir)
    topo.ok(pin_dir, "apply", str(saved))
    after = topo.list_json(pin_dir)
    strip = lambda listing: [  # noqa: E731
        {k: v for k, v in r.items() if k not in ("counters", "egress_counters", "egress_prog")}
        for r in listing["entries"]
    ]
    assert strip(after) == strip(before)
    assert after["groups"][0]["members"] == before["groups"][0]["members"]
    assert topo.ok(pin_dir, "apply", str(saved)).stdout == "nothing to change\n"
    assert topo.ping(3, topo.host(4).ip) == 3
    # A file named *.json is written as JSON; - reads standard input.
    as_json = tmp_path / "saved.json"
    topo.ok(pin_dir, "save", "-o", str(as_json))
    piped = topo.xdpfwd(pin_dir, "apply", "-", stdin=as_json.read_text())
    assert json.loads(as_json.read_text())["groups"] and piped.stdout == "nothing to change\n"
    # Ports added in the default mode (auto) are saved so, though they run native XDP.
    assert not [p for p in json.loads(as_json.read_text())["ports"].values() if "mode" in p]
    bad = topo.xdpfwd(pin_dir, "apply", "-", stdin="version: 1\nforward: 3\n")
    assert_fails(bad, 2, "<stdin>:2: ")


def test_save_says_what_it_leaves_out_while_a_device_is_gone(make_topo, pin_dir):
    topo = make_topo(5)
    topo.ok(pin_dir, "add", "p3", "p2")
    topo.ok(pin_dir, "broadcast", "p4", "p5", "--group", "g")
    sh("ip", "-n", topo.fwd, "link", "del", "p2")  # a container restarting, say
    topo.ok(pin_dir, "prune")
    saved = topo.ok(pin_dir, "save")
    assert "p3" not in yaml.safe_load(saved.stdout).get("ports", {})
    assert "the entry of p3 left out: the device of p2 is gone" in saved.stderr, saved.stderr
    sh("ip", "-n", topo.fwd, "link", "del", "p4")
    saved = topo.ok(pin_dir, "save")
    assert "p4 left out of group g: its device is gone" in saved.stderr, saved.stderr
    assert "ifindex" not in saved.stderr  # said once, by name, not also by its ifindex


def test_list_shows_what_the_record_keeps_while_its_devices_are_gone(make_topo, pin_dir):
    topo = make_topo(7)
    h1, h2, h3, h4, h5, h6, h7 = topo.hosts
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "broadcast", "p3", "p4", "p5", "--group", "g")
    topo.ok(pin_dir, "add", "p6", "p2", "p7")
    for port in ("p1", "p4", "p6"):  # containers restarting, say; follow would prune
        sh("ip", "-n", topo.fwd, "link", "del", port)
    topo.ok(pin_dir, "prune")
    assert "p1" not in rows(topo, pin_dir)
    assert topo.list_json(pin_dir)["waiting"] == [
        {"ingress": "p1", "egress": ["p2"], "group": None, "gone": ["p1"]},
        {"ingress": "p6", "egress": ["p2", "p7"], "group": None, "gone": ["p6"]},
        {"ingress": None, "egress": ["p4"], "group": "g", "gone": ["p4"]},
    ]
    text = topo.ok(pin_dir, "list").stdout
    assert "p1 -> p2: recorded, does not run (the device of p1 is gone)" in text, text
    assert "p6 -> p2, p7: recorded" in text
    assert "group g member p4: recorded, does not run (the device of p4 is gone)" in text
    for h in (h1, h4, h6):
        topo.plug(h)
    topo.ok(pin_dir, "prune")
    assert topo.list_json(pin_dir)["waiting"] == []
    assert "recorded, does not run" not in topo.ok(pin_dir, "list").stdout
    topo.static_arp()
    with UdpSink(h2) as sink:  # what list said would come back did
        send_udp(h1, h2.ip, 10)
        assert sink.count(10) == 10


def test_the_record_follows_a_renamed_port(make_topo, pin_dir, tmp_path):
    topo = make_topo(6)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "broadcast", "p3", "p4", "--group", "g")
    topo.ok(pin_dir, "add", "p5", "p2", "p6")  # balanced
    for old, new in (("p1", "q1"), ("p3", "q3"), ("p6", "q6")):
        sh("ip", "-n", topo.fwd, "link", "set", old, "name", new)
    listed = topo.list_json(pin_dir)
    assert listed["waiting"] == [], listed["waiting"]  # it said the entry did not run
    assert {r["ingress"]["ifname"]: r["state"] for r in listed["entries"]} == {
        "q1": "ok",
        "q3": "ok",
        "p4": "ok",
        "p5": "ok",
    }
    (p5,) = [r for r in listed["entries"] if r["ingress"]["ifname"] == "p5"]
    ports = {p["name"]: (p["state"], p["buckets"]) for p in p5["balance"]["ports"]}
    assert ports == {"p2": ("up", 128), "q6": ("up", 128)}  # q6 was "gone"
    saved = tmp_path / "saved.yaml"
    topo.ok(pin_dir, "save", "--output", str(saved))
    assert "to: [p2, q6]" in saved.read_text() and "weights" not in saved.read_text()
    # prune records the new names, and moves no bucket (it drained q6)
    assert topo.ok(pin_dir, "prune").stdout.splitlines() == [
        "p1 is q1 now: recorded as q1",
        "p3 is q3 now: recorded as q3",
        "p6 is q6 now: recorded as q6",
    ]
    assert topo.ok(pin_dir, "prune").stdout == "nothing to prune\n"
    assert topo.ok(pin_dir, "apply", "--dry-run", str(saved)).stdout == "nothing to change\n"
    with UdpSink(topo.host(2)) as sink:  # and it does run
        send_udp(topo.host(1), topo.host(2).ip, 10)
        assert sink.count(10) == 10
    sh("ip", "-n", topo.fwd, "link", "set", "q1", "name", "p1")  # and back
    assert topo.ok(pin_dir, "prune").stdout == "q1 is p1 now: recorded as p1\n"
    # Before prune records it, the old name is no port any more: del of it is refused.
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "name", "q1")
    assert_fails(topo.xdpfwd(pin_dir, "del", "p1"), 2, "no such interface: p1")
    assert "q1" in {r["ingress"]["ifname"] for r in topo.list_json(pin_dir)["entries"]}


def test_a_port_renamed_to_a_name_the_record_has_is_that_port(make_topo, pin_dir):
    topo = make_topo(3)
    link = ("ip", "-n", topo.fwd, "link")
    sh(*link, "add", "x1", "type", "veth", "peer", "name", "y1")
    sh(*link, "set", "x1", "up")
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "add", "x1", "p3")
    sh(*link, "del", "x1")
    topo.ok(pin_dir, "prune")  # x1 -> p3 waits for x1
    sh(*link, "set", "p1", "name", "x1")  # as if x1 came back: its entry is restored
    assert "forward x1 -> p3" in topo.ok(pin_dir, "prune").stdout
    assert topo.udp_arrives(1, 3, 10) == 10  # host 1 sits behind the device named x1 now
    text = topo.ok(pin_dir, "list").stdout
    # p1 is gone: its name was bound to this device, which is x1 now (not "see prune")
    assert "p1 -> p2: recorded, does not run (the device of p1 is gone)" in text, text
    assert topo.ok(pin_dir, "prune").stdout == "nothing to prune\n"


def test_a_port_with_settings_and_no_role_is_left_alone_and_saved_without_one(make_topo, pin_dir):
    topo = make_topo(3)
    config = topo.config_file(
        {"ports": {"p3": {"on_miss": "drop"}}, "forward": [{"from": "p1", "to": "p2"}]}
    )
    for _ in range(2):
        applied = topo.ok(pin_dir, "apply", config)
        assert "p3 has settings but no role (an entry, a group" in applied.stderr
        assert topo.xdp("p3") is None
    assert topo.ok(pin_dir, "apply", config).stdout == "nothing to change\n"
    topo.static_arp()
    with UdpSink(topo.host(2)) as sink:  # the entry the file has forwards
        send_udp(topo.host(1), topo.host(2).ip, 10)
        assert sink.count(10) == 10
    # An entry whose egress is gone is left out of save, and so are its port's settings.
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    saved = yaml.safe_load(topo.ok(pin_dir, "save").stdout)
    assert "forward" not in saved and "ports" not in saved, saved


@pytest.mark.parametrize("on_miss", ["drop", "pass"])
def test_an_egress_kept_for_its_on_miss_verdict_is_saved_and_applied_back(
    make_topo, pin_dir, tmp_path, on_miss
):
    topo = make_topo(2)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--on-miss", on_miss)
    topo.ok(pin_dir, "del", "p1")  # p2 still forwards to p1, which keeps the program
    saved = tmp_path / "saved.yaml"
    topo.ok(pin_dir, "save", "--output", str(saved))
    assert yaml.safe_load(saved.read_text())["ports"]["p1"] == {"on_miss": on_miss}
    assert topo.ok(pin_dir, "apply", "--dry-run", str(saved)).stdout == "nothing to change\n"
    topo.ok(pin_dir, "down")
    topo.ok(pin_dir, "apply", str(saved))
    assert topo.ok(pin_dir, "apply", str(saved)).stdout == "nothing to change\n"
    (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p1"]
    assert (row["on_miss"], row["state"]) == (on_miss, "no entry")
    h1, h2 = topo.hosts
    with UdpSink(h2) as sink, UdpSink(h1) as back:
        send_udp(h1, h2.ip, 10)  # enters p1, which has no entry: its verdict
        send_udp(h2, h1.ip, 10)  # p2 -> p1
        assert back.count(10) == 10
        assert sink.count(10, timeout=0.5) == 0
    stats = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
    (p1,) = [p for p in stats["ports"] if p["port"]["ifname"] == "p1"]
    assert p1["not_forwarded"]["miss"] >= 10


INVALID = [
    ("version: 1\nforward:\n  - {from: p1, to: p2\n", 4, "flow mapping on line 3"),
    ("version: 1\nforwards: []\n", 2, "unknown key 'forwards'"),
    ("version: 7\n", 1, "version must be 1"),
    ("version: 1\nforward:\n  - {from: p1, to: nope}\n", 3, "no such interface: nope"),
    ("version: 1\nforward:\n  - {from: p1, to: p1}\n", 3, "forwards to itself"),
    (
        "version: 1\nforward:\n  - {from: p1, to: p2}\ngroups:\n  - {name: g, members: [p1, p2]}\n",
        5,
        "a port does one or the other",
    ),
    ("version: 1\nforward:\n  - {from: p1, to: p2, egress: {dst_mac: 02:00}}\n", 3, "MAC"),
    (
        "version: 1\nforward:\n  - {from: p1, to: p2, egress: {program: missing.c}}\n",
        3,
        "no egress program file",
    ),
    ("version: 1\nports:\n  p1: {mode: turbo}\n", 3, "mode must be one of"),
]


@pytest.mark.parametrize(
    "text, line, reason",
    INVALID,
    ids=[
        "syntax",
        "unknown-key",
        "version",
        "unknown-interface",
        "self-forward",
        "forward-and-flood",
        "bad-mac",
        "missing-program",
        "bad-mode",
    ],
)
def test_invalid_files_are_refused_with_line_and_reason(
    topo, pin_dir, tmp_path, text, line, reason
):
    topo.ok(pin_dir, "add", "p1", "p2")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "apply", str(path)), 2, f"{path}:{line}:", reason)
    assert snapshot(topo, pin_dir) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_apply_leaves_the_old_state_or_the_new_one(make_topo, pin_dir, sig):
    topo = make_topo(24)
    old = topo.config_file({"forward": [{"from": "p1", "to": "p2"}]})
    new = topo.config_file(
        {"forward": [{"from": f"p{i}", "to": f"p{i % 24 + 1}"} for i in range(2, 25)]}
    )
    topo.ok(pin_dir, "apply", old)
    before = snapshot(topo, pin_dir)
    rolled_back = 0
    # While starting up, then after the first, tenth and fortieth of ~48 steps (-v
    # logs each step as it begins).
    for after_steps in (0, 1, 10, 40):
        proc = topo.start(pin_dir, "-v", "apply", new)
        if after_steps == 0:
            time.sleep(0.05)
        for _ in range(after_steps):
            proc.stderr.readline()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        # -sig: killed while Python itself was starting up.
        assert proc.returncode in (0, 130, -sig), err
        if snapshot(topo, pin_dir) == before:
            assert proc.returncode != 0, err
            rolled_back += "rolled back" in err
            continue
        assert "rolled back" not in err, err
        listing = topo.list_json(pin_dir)
        assert len(listing["entries"]) == 23, err
        assert {r["state"] for r in listing["entries"]} == {"ok"}, err
        topo.ok(pin_dir, "apply", old)
        before = snapshot(topo, pin_dir)
    assert rolled_back >= 2, "interrupts after the first and tenth steps did not roll back"
    # Rerunning converges.
    topo.ok(pin_dir, "apply", new)
    assert topo.ok(pin_dir, "apply", new).stdout == "nothing to change\n"


# --- bad input, fuzzed, against the real thing -----------------------------------------

FUZZ = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def names_in(wanted: config.Config) -> set[str]:
    return (
        {e.ingress for e in wanted.forward}
        | {e.egress for e in wanted.forward}
        | set(wanted.ports)
        | {m for g in wanted.groups for m in g.members}
    )


@FUZZ
@given(doc=CONFIG_DOCS)
def test_fuzzed_bad_files_are_refused_and_change_nothing(topo, pin_dir, tmp_path, doc):
    text = yaml.safe_dump(doc)
    try:
        wanted = config.parse(text)
        assume(not names_in(wanted) <= {"p1", "p2"})  # else it is a good file
    except config.ConfigError:
        pass
    if not os.path.isdir(pin_dir):
        topo.ok(pin_dir, "add", "p1", "p2", "-b")
    path = tmp_path / "fuzzed.yaml"
    path.write_text(text)
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "apply", str(path)), 2, str(path))
    assert snapshot(topo, pin_dir) == before


BAD_IFACES = st.sampled_from(["nope", "eth9", "lo", "p1.", "999999"])
WORDS = st.one_of(
    st.sampled_from(
        [
            "p1",
            "p2",
            "-b",
            "--force",
            "--table",
            "devmap",
            "--mode",
            "generic",
            "--on-miss",
            "drop",
            "--group",
            "g",
            "--exclude-ingress",
            "--no-egress",
            "--src-mac",
            "egress",
            "--dst-mac",
            "02:00:00:00:00:01",
            "--dry-run",
            "--value",
            "ifindex",
            "--egress-prog",
            "none.c",
            "--bogus",
        ]
    ),
    BAD_IFACES,
)


@FUZZ
@given(
    command=st.sampled_from([["add"], ["del"], ["broadcast"], ["broadcast", "del"]]),
    bad=BAD_IFACES,
    rest=st.lists(WORDS, max_size=5),
    bad_first=st.booleans(),
)
def test_fuzzed_bad_arguments_are_refused_and_change_nothing(
    topo, pin_dir, command, bad, rest, bad_first
):
    if not os.path.isdir(pin_dir):
        topo.ok(pin_dir, "add", "p1", "p2", "-b")
    # The interface that does not exist comes where an interface is expected.
    args = [*command, bad, *rest] if bad_first else [*command, "p1", bad, *rest]
    before = snapshot(topo, pin_dir)
    result = topo.xdpfwd(pin_dir, *args)
    assert result.returncode in (1, 2), (args, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert snapshot(topo, pin_dir) == before, args
