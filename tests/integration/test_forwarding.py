"""Forwarding through the real xdpfwd executable, on veth pairs in throwaway namespaces."""

import json
import os
import subprocess
import time

import pytest

from xdpfwd.kernel import netns
from xdpfwd.kernel.bpf import maps
from xdpfwd.kernel.bpf import syscall as sc

from .conftest import RUN_ID
from .net import SUBNET, FrameCounter, UdpSink, send_udp, sh, udp_frame_len


def entries_by_ingress(listing: dict) -> dict:
    return {row["ingress"]["ifname"]: row for row in listing["entries"]}


@pytest.mark.parametrize("table", ["devmap-hash", "devmap"])
def test_ping_both_directions(topo, pin_dir, table):
    h1, h2 = topo.hosts
    # Nothing links the two ports until xdpfwd does.
    assert topo.ping(1, h2.ip, count=1) == 0
    # The failed ARP lookup would fail the first ping below too if add took long.
    sh("ip", "-n", h1.ns, "neigh", "flush", "dev", h1.dev)
    topo.ok(pin_dir, "add", "p1", "p2", "--bidirectional", "--table", table)
    # That ping left h1's neighbour entry for h2 failing: if it gives up while the next
    # pings wait for it (the add can take seconds on a busy machine), they are lost.
    sh("ip", "-n", h1.ns, "neigh", "flush", "dev", h1.dev)
    assert topo.ping(1, h2.ip) == 3
    assert topo.ping(2, h1.ip) == 3
    rows = entries_by_ingress(topo.list_json(pin_dir))
    assert rows["p1"]["egress"]["ifname"] == "p2"
    assert rows["p2"]["egress"]["ifname"] == "p1"
    for row in rows.values():
        assert (row["table"], row["state"], row["mode"]) == (table, "ok", "native")
        assert row["counters"]["redirect_packets"] >= 3


def test_a_port_and_peer_whose_names_are_not_utf8_forward_by_ifindex(topo, pin_dir):
    h2 = topo.host(2)
    ifindex = json.loads(sh("ip", "-n", topo.fwd, "-j", "link", "show", "p2").stdout)[0]["ifindex"]
    for ns, old, new in ((topo.fwd, "p2", b"p\xff2"), (h2.ns, h2.dev, b"h\xfe0")):
        name = os.fsdecode(new)
        sh("ip", "-n", ns, "link", "set", old, "down")
        sh("ip", "-n", ns, "link", "set", old, "name", name)
        sh("ip", "-n", ns, "link", "set", name, "up")
    added = topo.ok(pin_dir, "add", str(ifindex), "p1", "-b")
    assert "p\ufffd2 -> p1" in added.stdout and "unexpected" not in added.stderr
    assert topo.ping(1, h2.ip) == 3
    (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifindex"] == ifindex]
    assert row["ingress"]["ifname"] == "p\ufffd2" and row["state"] == "ok", row
    doctor = topo.xdpfwd(pin_dir, "doctor", "--no-compile")
    assert doctor.returncode == 0 and "unexpected" not in doctor.stderr, doctor.stderr
    assert "removed p\ufffd2 -> p1" in topo.ok(pin_dir, "del", str(ifindex)).stdout


def test_generic_mode_forwards(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--mode", "generic")
    assert topo.ping(1, topo.host(2).ip) == 3
    assert topo.xdp("p1")["mode"] == 2  # XDP_ATTACHED_SKB, as iproute2 reports it
    assert {row["mode"] for row in topo.list_json(pin_dir)["entries"]} == {"generic"}


def test_ingress_counters_match_frames_sent(topo, pin_dir):
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 200, payload=100)
        assert sink.count(200) == 200
    counters = entries_by_ingress(topo.list_json(pin_dir))["p1"]["counters"]
    assert counters["rx_packets"] == counters["redirect_packets"] == 200
    assert counters["redirect_bytes"] == 200 * udp_frame_len(100)
    assert counters["miss_packets"] == 0


def test_second_add_reuses_the_pinned_program_without_compiling(make_topo, pin_dir):
    topo = make_topo(3)
    first = topo.ok(pin_dir, "add", "p1", "p2")
    assert "compiled now" in first.stdout
    prog_id = topo.xdp("p1")["prog"]["id"]
    # With BCC made unimportable, the second add can only succeed if it does not compile.
    no_bcc = {"PYTHONPATH": os.path.join(os.path.dirname(__file__), "no_bcc")}
    second = topo.xdpfwd(pin_dir, "add", "p3", "p1", env=no_bcc)
    assert second.returncode == 0, second.stderr
    assert "reused pinned program" in second.stdout
    assert topo.xdp("p3")["prog"]["id"] == prog_id
    assert topo.list_json(pin_dir)["prog_id"] == prog_id


def test_add_is_idempotent(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2")
    again = topo.ok(pin_dir, "add", "p1", "p2")
    assert "already attached" in again.stdout
    assert len(topo.list_json(pin_dir)["entries"]) == 1


@pytest.mark.parametrize("on_miss", ["drop", "pass"])
def test_del_stops_forwarding_and_applies_on_miss(topo, pin_dir, on_miss):
    h1, h2 = topo.hosts
    # An address on p1 makes "reaches the host stack" observable: ping it from h1.
    gateway = f"{SUBNET}.254"
    topo_ip = ["ip", "-n", topo.fwd]
    from .net import sh

    sh(*topo_ip, "addr", "add", f"{gateway}/24", "dev", "p1")
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--on-miss", on_miss)
    assert topo.ping(1, h2.ip) == 3
    topo.ok(pin_dir, "del", "p1")
    # p2 still forwards to p1, so p1 keeps the program and its on-miss verdict.
    assert topo.xdp("p1") is not None
    assert topo.ping(1, h2.ip, count=2) == 0
    reached_host = topo.ping(1, gateway, count=2)
    row = entries_by_ingress(topo.list_json(pin_dir))["p1"]
    assert row["egress"] is None and row["state"] == "no entry"
    if on_miss == "drop":
        assert reached_host == 0
        assert row["counters"]["drop_packets"] >= 4
    else:
        assert reached_host == 2
        assert row["counters"]["pass_packets"] >= 4
    assert row["counters"]["miss_packets"] == (
        row["counters"]["drop_packets"] + row["counters"]["pass_packets"]
    )


def test_del_detaches_a_port_nothing_needs(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2")
    result = topo.ok(pin_dir, "del", "p1")
    assert "detached from p1" in result.stdout
    assert topo.xdp("p1") is None
    assert topo.list_json(pin_dir)["entries"] == []
    assert topo.ping(1, topo.host(2).ip, count=1) == 0


def test_on_miss_pass_really_reaches_the_stack_as_frames(topo, pin_dir):
    """With pass, frames of a deleted entry are seen by a packet socket on the port."""
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--on-miss", "pass")
    topo.ok(pin_dir, "del", "p1")
    with FrameCounter(topo.fwd, "p1") as counter:
        send_udp(h1, h2.ip, 10, port=9100)
        assert len(counter.frames(udp_port=9100)) == 10


def test_down_detaches_a_port_moved_to_another_namespace_with_the_program(
    make_topo, pin_dir, scratch_ns
):
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "netns", scratch_ns)

    def xdp_there():
        return json.loads(sh("ip", "-n", scratch_ns, "-j", "link", "show", "p2").stdout)[0]

    assert xdp_there().get("xdp")  # the program went with the port
    result = topo.ok(pin_dir, "down")
    assert f"detached from p2 in {scratch_ns}" in result.stdout
    assert not xdp_there().get("xdp") and not os.path.exists(pin_dir)


def test_down_detaches_a_port_moved_to_the_initial_namespace_with_the_program(make_topo, pin_dir):
    """Also where pid 1's namespace file is closed to xdpfwd (as on sandboxed hosts):
    it finds the initial namespace through another process there."""
    if os.stat("/proc/self/ns/net").st_ino != netns.INIT_NET_INODE:
        pytest.skip("the tests run outside the initial network namespace")
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    moved = f"xm{RUN_ID}"  # a name of this run's in the initial namespace
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "down")
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "name", moved)
    sh("ip", "-n", topo.fwd, "link", "set", moved, "netns", "1")
    try:
        assert json.loads(sh("ip", "-j", "link", "show", moved).stdout)[0].get("xdp")
        result = topo.ok(pin_dir, "down")
        assert f"detached from {moved} in the initial namespace" in result.stdout
        assert not json.loads(sh("ip", "-j", "link", "show", moved).stdout)[0].get("xdp")
        assert not os.path.exists(pin_dir)
    finally:
        sh("ip", "link", "del", moved, check=False)


def test_down_says_when_the_program_still_runs_where_it_cannot_see(make_topo, pin_dir):
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not start"
            time.sleep(0.02)
        # A namespace without a name, which down cannot look into.
        sh("ip", "-n", topo.fwd, "link", "set", "p2", "netns", str(holder.pid))
        result = topo.ok(pin_dir, "down")
        assert "detached from p1" in result.stdout
        assert "still runs on a device xdpfwd cannot see" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def program_exists(prog_id: int) -> bool:
    try:
        os.close(sc.prog_fd_by_id(prog_id))
    except FileNotFoundError:
        return False
    return True


def test_down_leaves_nothing_behind(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    topo.ok(pin_dir, "add", "p3", "p1")
    fd = sc.obj_get(os.path.join(pin_dir, maps.PIN_NETNS))
    netns_link = sc.link_info(fd)
    os.close(fd)
    result = topo.ok(pin_dir, "down")
    with pytest.raises(FileNotFoundError):  # the namespace link: released at once
        os.close(sc.link_fd_by_id(netns_link.id))
    deadline = time.monotonic() + 5  # its program: when the kernel frees the link
    while program_exists(netns_link.prog_id):
        assert time.monotonic() < deadline, "the namespace link's program stays loaded"
        time.sleep(0.05)
    for port in ("p1", "p2", "p3"):
        assert topo.xdp(port) is None, port
        assert f"detached from {port}" in result.stdout
    assert not os.path.exists(pin_dir)
    assert topo.ping(1, topo.host(2).ip, count=1) == 0
    # A second down has nothing to do and says so.
    assert "nothing to do" in topo.ok(pin_dir, "down").stdout


@pytest.mark.parametrize("command", [["prune"], ["del", "p1"]])
def test_prune_detaches_a_port_moved_to_another_namespace_with_the_program(
    make_topo, pin_dir, scratch_ns, command
):
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2", "--on-miss", "drop")
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "netns", scratch_ns)
    sh("ip", "-n", scratch_ns, "link", "set", "p1", "up")
    sh("ip", "-n", scratch_ns, "addr", "add", "10.77.0.200/24", "dev", "p1")
    # There it ran on, dropping what missed (its entry goes with the ifindex here);
    # del of the port left it there too.
    pruned = topo.ok(pin_dir, *command)
    assert f"detached from p1 in {scratch_ns} (moved there with the program)" in pruned.stderr
    assert not json.loads(sh("ip", "-n", scratch_ns, "-j", "link", "show", "p1").stdout)[0].get(
        "xdp"
    )
    assert topo.ping(1, "10.77.0.200") == 3  # its own namespace's stack answers
    assert "detached" not in topo.ok(pin_dir, "prune").stderr  # once
