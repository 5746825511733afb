"""No frame lost without a reason: veth senders with the kernel's default offloads,
forwarding loops, and apply converging in one pass whatever it moves."""

import json
import os

import pytest

from .net import UdpSink, assert_fails, doctor_check, quoted, run_fix, send_udp, sh, tcp_transfer

TCP_BYTES = 4 << 20


def udp_both_ways(topo, a: int, b: int, count: int = 200) -> tuple[int, int]:
    got = []
    for src, dst in ((a, b), (b, a)):
        with UdpSink(topo.host(dst)) as sink:
            send_udp(topo.host(src), topo.host(dst).ip, count)
            got.append(sink.count(count))
    return got[0], got[1]


def fix_commands(topo, *features: str) -> list[str]:
    return [f"ip netns exec {h.ns} ethtool -K h0 {' '.join(features)}" for h in topo.hosts]


def test_native_entry_warns_about_default_offloads_and_doctor_fix_makes_it_forward(
    make_topo, pin_dir
):
    topo = make_topo(2, prepared=False)
    added = topo.ok(pin_dir, "add", "p1", "p2", "--bidirectional", "--mode", "native")
    for command in fix_commands(topo, "tx", "off") + fix_commands(topo, "gro", "on"):
        assert command in added.stderr, added.stderr
    assert "none of its UDP or TCP gets through" in added.stderr
    listed = topo.list_json(pin_dir)["entries"]
    assert all(any("tx off" in p for p in row["problems"]) for row in listed)
    doctor = topo.xdpfwd(pin_dir, "doctor", "--no-compile")
    assert doctor.returncode == 1
    for command in fix_commands(topo, "tx", "off"):
        assert command in doctor.stdout.replace("\n", " ").replace("  ", " ") or command in (
            doctor.stdout
        )
    fixed = topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.count("fixed") == 4, fixed.stdout
    assert udp_both_ways(topo, 1, 2) == (200, 200)
    assert tcp_transfer(topo.host(1), topo.host(2), TCP_BYTES) == TCP_BYTES
    assert topo.xdpfwd(pin_dir, "doctor", "--no-compile").returncode == 0
    assert all(row["problems"] == [] for row in topo.list_json(pin_dir)["entries"])


def test_broadcast_group_with_default_offloads_is_fixed_the_same_way(make_topo, pin_dir):
    topo = make_topo(3, prepared=False)
    result = topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--mode", "native")
    for command in fix_commands(topo, "tx", "off"):
        assert command in result.stderr, result.stderr
    fixed = topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--fix")
    assert fixed.returncode == 0 and fixed.stdout.count("fixed") == 6, fixed.stdout
    assert udp_both_ways(topo, 1, 2) == (200, 200)
    assert udp_both_ways(topo, 1, 3) == (200, 200)
    assert tcp_transfer(topo.host(1), topo.host(2), TCP_BYTES) == TCP_BYTES


def test_prune_warns_about_the_defaults_of_a_device_made_again_and_its_fix_works(
    make_topo, pin_dir
):
    topo = make_topo(3)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "broadcast", "p3", "p2", "--exclude-ingress")
    h2 = topo.host(2)
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    topo.prepared = topo.gro = False  # made again as a container's would be
    topo.plug(h2)
    pruned = topo.ok(pin_dir, "prune")
    # p2 is p1's egress and a member: it takes redirected frames and sends to a group.
    fixes = [f"ip netns exec {h2.ns} ethtool -K h0 {what}" for what in ("tx off", "gro on")]
    warned = pruned.stderr.strip().splitlines()
    assert len(warned) == 2 and all(f"(fix: {fix})" in pruned.stderr for fix in fixes), warned
    assert all(line.startswith("warning: p2") for line in warned), warned  # p1, p3: fine
    for fix in fixes:
        sh(*fix.split())
    topo.static_arp()
    with UdpSink(h2) as sink:
        send_udp(topo.host(1), h2.ip, 50)
        assert sink.count(50) == 50
    assert "warning" not in topo.ok(pin_dir, "prune").stderr  # said once, when bound


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_an_egress_without_carrier_is_warned_about_and_its_fix_works(make_topo, pin_dir, mode):
    topo = make_topo(2)
    topo.static_arp()
    h2 = topo.host(2)
    sh("ip", "-n", h2.ns, "link", "set", h2.dev, "down")  # p2 stays up, without carrier
    added = topo.ok(pin_dir, "add", "p1", "p2", "--mode", mode)
    fix = f"ip netns exec {h2.ns} ip link set dev h0 up"
    warned = (
        f"p2 has no carrier (its veth peer h0 is down): frames sent to it are dropped (fix: {fix})"
    )
    assert warned in added.stderr
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile").stdout)
    (check,) = [c for c in doctor["checks"] if c["id"] == "egress_down"]
    assert (check["status"], check["port"]["ifname"], check["fix"]) == ("warn", "p2", fix)
    assert states(topo, pin_dir) == {"p1": "egress down"}
    # p2 runs nothing of xdpfwd's and has no row: p1's, which sends there, says why.
    (row,) = topo.list_json(pin_dir)["entries"]
    assert row["problems"] == [warned]
    assert topo.ok(pin_dir, "list").stderr.splitlines() == [f"warning: {warned}"]
    if mode == "native":  # (generic mode's drops there are counted nowhere: CAVEATS)
        send_udp(topo.host(1), h2.ip, 10)
        stats = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
        assert stats["not_forwarded"]["xmit_drop"] == 10
    sh(*fix.split())
    with UdpSink(h2) as sink:
        send_udp(topo.host(1), h2.ip, 30)
        assert sink.count(30) == 30
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile").stdout)
    assert not [c for c in doctor["checks"] if c["id"] == "egress_down"]
    assert states(topo, pin_dir) == {"p1": "ok"}  # (doctor read the carrier back: no lag)
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "down")  # nothing enters it
    assert states(topo, pin_dir) == {"p1": "down"}


def test_an_ingress_that_is_down_is_warned_about(make_topo, pin_dir):
    # add said nothing of it (as an egress, the same port got a warning).
    topo = make_topo(2)
    topo.static_arp()
    sh("ip", "-n", topo.fwd, "link", "set", "p1", "down")
    added = topo.ok(pin_dir, "add", "p1", "p2")
    fix = "ip link set dev p1 up"
    assert added.stderr.splitlines() == [f"warning: p1 is down: nothing enters it (fix: {fix})"]
    sh("ip", "-n", topo.fwd, *fix.split()[1:])
    assert topo.udp_arrives(1, 2, 10) == 10
    h2 = topo.host(2)  # up, its peer down: no carrier, nothing enters it either
    sh("ip", "-n", h2.ns, "link", "set", h2.dev, "down")
    added = topo.ok(pin_dir, "add", "p2", "p1")
    assert "p2 has no carrier: nothing enters it (fix: bring p2's other end up)" in added.stderr


def states(topo, pin_dir):
    return {r["ingress"]["ifname"]: r["state"] for r in topo.list_json(pin_dir)["entries"]}


def test_doctor_says_what_became_of_an_entry_whose_egress_device_is_gone(make_topo, pin_dir):
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2")
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile").stdout)
    (check,) = [c for c in doctor["checks"] if c["port"] and c["port"]["ifname"] == "p1"]
    assert check["status"] == "warn", check
    assert check["detail"].startswith("its entry to p2 went with p2's device"), check
    assert check["fix"].endswith(f"`xdpfwd --pin-dir {pin_dir} del p1`"), check
    topo.plug(topo.host(2))
    topo.ok(pin_dir, "prune")
    topo.static_arp()
    with UdpSink(topo.host(2)) as sink:
        send_udp(topo.host(1), topo.host(2).ip, 20)
        assert sink.count(20) == 20
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile").stdout)
    assert all(c["status"] == "pass" for c in doctor["checks"] if c["port"]), doctor


@pytest.mark.parametrize("on_miss", ["drop", "pass"])
def test_a_port_asked_to_drop_what_misses_keeps_dropping_while_its_egress_is_gone(
    make_topo, pin_dir, on_miss
):
    topo = make_topo(2)
    h1, h2 = topo.hosts
    # An address of the forwarder's own on p1: what reaches its stack answers a ping.
    sh("ip", "-n", topo.fwd, "addr", "add", "10.77.0.250/24", "dev", "p1")
    topo.ok(pin_dir, "add", "p1", "p2", "--on-miss", on_miss)
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    topo.ok(pin_dir, "prune")
    if on_miss == "drop":  # attached, dropping what enters, as before the device went
        (row,) = topo.list_json(pin_dir)["entries"]
        assert (row["ingress"]["ifname"], row["state"]) == ("p1", "egress gone"), row
        assert topo.xdp("p1") is not None
        assert topo.ping(1, "10.77.0.250", count=3) == 0
        (row,) = topo.list_json(pin_dir)["entries"]
        dropped = row["counters"]["drop_packets"]  # ARP requests, which went unanswered
        assert dropped == row["counters"]["miss_packets"] == row["not_forwarded"]["miss"] > 0, row
    else:  # detached: the host's stack takes what enters, as the verdict pass did
        assert topo.xdp("p1") is None
        assert topo.ping(1, "10.77.0.250", count=3) == 3
    # Flooding would forget the waiting entry: refused, as for a running one.
    refused = topo.xdpfwd(pin_dir, "broadcast", "p1")
    assert_fails(refused, 1, "p1 forwards to p2 (`xdpfwd add`; the entry waits for p2's device")
    topo.plug(h2)
    restored = topo.ok(pin_dir, "prune").stdout
    assert "forward p1 -> p2" in restored, restored
    topo.static_arp()
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 20)
        assert sink.count(20) == 20
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    deleted = topo.ok(pin_dir, "del", "p1").stdout  # an entry only the record has
    assert "forgot p1 -> p2" in deleted and "detached from p1" in deleted, deleted
    assert topo.xdp("p1") is None


def test_a_drop_port_renamed_while_its_entry_waits_keeps_dropping(make_topo, pin_dir):
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2", "--on-miss", "drop")
    for args in (["set", "p1", "down"], ["set", "p1", "name", "p1x"], ["set", "p1x", "up"]):
        sh("ip", "-n", topo.fwd, "link", *args)
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    sh("ip", "-n", topo.fwd, "addr", "add", "10.77.0.250/24", "dev", "p1x")
    topo.ok(pin_dir, "prune")
    assert topo.xdp("p1x") is not None
    assert topo.ping(1, "10.77.0.250", count=2) == 0
    (row,) = topo.list_json(pin_dir)["entries"]  # what the ping sent was dropped, counted
    assert row["ingress"]["ifname"] == "p1x" and row["counters"]["drop_packets"] > 0, row


def test_generic_mode_warns_about_segmentation_offload_and_its_fix_works(make_topo, pin_dir):
    topo = make_topo(2, prepared=False)
    added = topo.ok(pin_dir, "add", "p1", "p2", "--bidirectional", "--mode", "generic")
    for command in fix_commands(topo, "tso", "off", "gso", "off"):
        assert command in added.stderr, added.stderr
    assert "large TCP transfers stall" in added.stderr
    assert "tx off" not in added.stderr  # generic keeps the checksum state
    assert topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--fix").returncode == 0
    assert tcp_transfer(topo.host(1), topo.host(2), TCP_BYTES) == TCP_BYTES
    assert udp_both_ways(topo, 1, 2) == (200, 200)


def test_doctor_fix_touches_nothing_but_managed_ports_peers(make_topo, pin_dir):
    topo = make_topo(3, prepared=False)
    topo.ok(pin_dir, "add", "p1", "p2", "--mode", "native")
    before = topo_offloads(topo, 3)
    assert topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--fix").returncode == 0
    assert topo_offloads(topo, 3) == before  # p3 is not managed


def topo_offloads(topo, i: int) -> str:
    return sh("ip", "netns", "exec", topo.host(i).ns, "ethtool", "-k", "h0").stdout


def veth_pairs(topo, *pairs: tuple[str, str], down: tuple[str, ...] = ()) -> None:
    """Veth pairs in the forwarder's namespace, up but for the down ends: what leaves
    one end enters the other, the makings of a loop."""
    for a, b in pairs:
        sh("ip", "-n", topo.fwd, "link", "add", a, "type", "veth", "peer", "name", b)
        for dev in (a, b):
            if dev not in down:
                sh("ip", "-n", topo.fwd, "link", "set", dev, "up")


def test_a_forwarding_loop_is_refused_and_warned_about_with_force(make_topo, pin_dir):
    topo = make_topo(2)
    # Two ends of one veth pair in the forwarder: what leaves one enters the other.
    veth_pairs(topo, ("la", "lb"))
    refused = topo.xdpfwd(pin_dir, "add", "la", "lb")
    assert_fails(refused, 1, "loop", "la sends them out of lb, into its veth peer la", "--force")
    assert topo.list_json(pin_dir)["entries"] == []
    # A balanced entry loops for the flows whose buckets go to lb.
    refused = topo.xdpfwd(pin_dir, "add", "la", "p2", "lb")
    assert_fails(refused, 1, "loop", "la sends them out of lb, into its veth peer la", "--force")
    assert topo.list_json(pin_dir)["entries"] == []
    forced = topo.ok(pin_dir, "add", "la", "lb", "--force")
    assert "loop" in forced.stderr
    # A loop added with --force is no reason to refuse what does not pass it.
    topo.ok(pin_dir, "add", "p1", "p2")
    # doctor fails it, with the del that ends it.
    loop = doctor_check(topo, pin_dir, "loop")
    assert "round a loop forever: la sends them out of lb" in loop["detail"]
    run_fix(topo, pin_dir, loop["fix"], "del", "la")
    assert doctor_check(topo, pin_dir, "loop") is None


def test_a_loop_through_a_broadcast_group_is_refused(make_topo, pin_dir):
    topo = make_topo(3)
    veth_pairs(topo, ("la", "lb"), ("ua", "ub"))
    # Both ends of one veth pair in a group: what one floods enters the other.
    refused = topo.xdpfwd(pin_dir, "broadcast", "la", "lb", "p1")
    assert_fails(refused, 1, "loop", "--force")
    assert not os.path.exists(f"{pin_dir}/group")
    assert topo.xdp("la") is None
    # A group, and an entry from a member's veth peer back to another member.
    topo.ok(pin_dir, "broadcast", "la", "ua", "p1", "--exclude-ingress")
    refused = topo.xdpfwd(pin_dir, "add", "ub", "lb")
    assert_fails(refused, 1, "loop", "--force")
    assert "ub" not in [e["ingress"]["ifname"] for e in topo.list_json(pin_dir)["entries"]]
    # The same loop closed from the other side: the entry first, then the group.
    topo.ok(pin_dir, "broadcast", "del", "la", "ua", "p1")
    topo.ok(pin_dir, "add", "ub", "lb")
    refused = topo.xdpfwd(pin_dir, "broadcast", "la", "ua", "--exclude-ingress")
    assert_fails(refused, 1, "loop", "--force")
    assert topo.list_json(pin_dir)["groups"] == []


def test_a_balanced_entrys_port_that_is_down_still_counts_for_loops(make_topo, pin_dir):
    topo = make_topo(2)
    veth_pairs(topo, ("ya", "yb"), ("za", "zb"), down=("zb",))
    # zb is down: it holds no bucket now, and gets some back when it comes up.
    topo.ok(pin_dir, "add", "yb", "p2", "zb")
    refused = topo.xdpfwd(pin_dir, "add", "za", "ya")
    assert_fails(refused, 1, "loop", "--force")


def test_a_loop_through_a_multicast_group_is_refused(make_topo, pin_dir):
    topo = make_topo(2)
    veth_pairs(topo, ("la", "lb"), ("ua", "ub"))
    # A bus over both ends of one veth pair: the group's frames go round.
    refused = topo.xdpfwd(pin_dir, "multicast", "add", "239.1.1.1", "--to", "la", "lb")
    assert_fails(refused, 1, "loop forever: lb sends them out of la, into its veth peer lb")
    assert topo.xdp("la") is None and topo.xdp("lb") is None
    # Only the group's own frames count: p1's entry into la is no loop of theirs.
    topo.ok(pin_dir, "add", "p1", "la")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.2", "--from", "p1", "--to", "p2")
    # A source whose copies come back to it: out of la into lb, whose entry sends
    # them out of ub into ua.
    topo.ok(pin_dir, "add", "lb", "ub")
    refused = topo.xdpfwd(pin_dir, "multicast", "add", "239.1.1.3", "--from", "ua", "--to", "la")
    path = "ua sends them out of la, into its veth peer lb, which sends them out of ub, into its"
    assert_fails(refused, 1, f"loop forever: {path} veth peer ua", "--force")
    # The same loop closed from the other side: the group first, then the entry.
    topo.ok(pin_dir, "del", "lb")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.3", "--from", "ua", "--to", "la")
    assert_fails(
        topo.xdpfwd(pin_dir, "add", "lb", "ub"),
        1,
        "loop forever: lb sends them out of ub",
        "--force",
    )
    forced = topo.ok(pin_dir, "add", "lb", "ub", "--force")
    assert "round a loop" in forced.stderr
    assert doctor_check(topo, pin_dir, "loop")["fix"].endswith("multicast del 239.1.1.3 --to la")
    saved = topo.ok(pin_dir, "save")
    assert "round a loop" in saved.stderr and "this file needs --force" in saved.stderr


def test_doctor_ends_a_forced_loop_by_the_hop_it_names(make_topo, pin_dir):
    topo = make_topo(2)
    veth_pairs(topo, ("la", "lb"), ("ua", "ub"))
    topo.ok(pin_dir, "add", "ua", "p1")
    topo.ok(pin_dir, "add", "lb", "ub")
    # The group's frames go ua -> la, into lb, whose entry sends them into ua again.
    group = ["multicast", "add", "239.1.1.3", "--from", "ua", "--to", "la"]
    assert "round a loop" in topo.ok(pin_dir, *group, "--force").stderr
    loop = doctor_check(topo, pin_dir, "loop")
    assert all(f"sends them out of {port}, into" in loop["detail"] for port in ("la", "ub"))
    run_fix(topo, pin_dir, loop["fix"], "multicast", "del", "239.1.1.3", "--to", "la")
    assert doctor_check(topo, pin_dir, "loop") is None


def test_prune_leaves_out_a_hop_that_would_close_a_loop_and_restores_the_rest(make_topo, pin_dir):
    topo = make_topo(2)
    veth_pairs(topo, ("ya", "yb"), ("yc", "yd"), ("yf", "yg"))
    topo.ok(pin_dir, "add", "ya", "yc")
    topo.ok(pin_dir, "add", "yd", "yf")
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    # ya and yf made again as the two ends of one pair: restored, yd's entry would
    # send into ya, whose entry sends out of yc into yd. p1 made again the usual way.
    for dev in ("ya", "yf", "p1"):
        sh("ip", "-n", topo.fwd, "link", "del", dev)
    veth_pairs(topo, ("ya", "yf"))
    topo.plug(topo.host(1))
    pruned = topo.ok(pin_dir, "prune")
    assert "not restored: frames would go round a loop forever" in pruned.stderr
    restored = [e for e in ("forward ya -> yc", "forward yd -> yf") if e in pruned.stdout]
    assert len(restored) == 1 and "forward p1 -> p2" in pruned.stdout
    assert doctor_check(topo, pin_dir, "loop") is None
    assert topo.ping(1, topo.host(2).ip) == 3
    # Once the devices are wired otherwise, prune restores the other entry too.
    sh("ip", "-n", topo.fwd, "link", "del", "ya")
    veth_pairs(topo, ("ya", "yb"), ("yf", "yg"))
    pruned = topo.ok(pin_dir, "prune")
    assert "not restored" not in pruned.stderr
    assert {e["ingress"]["ifname"] for e in topo.list_json(pin_dir)["entries"]} >= {"ya", "yd"}


def test_prune_leaves_out_a_hop_that_closes_a_loop_of_a_groups_frames(make_topo, pin_dir):
    topo = make_topo(2)
    veth_pairs(topo, ("ya", "yb"), ("yc", "yd"), ("yx", "yy"))
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "ya", "--to", "yc")
    topo.ok(pin_dir, "add", "yx", "yb")
    # yx made again as yc's peer: the group's copies out of yc would come in at yx,
    # whose entry sends them into ya, a source of the group.
    sh("ip", "-n", topo.fwd, "link", "del", "yx")
    sh("ip", "-n", topo.fwd, "link", "set", "yd", "name", "yx")
    pruned = topo.ok(pin_dir, "prune")
    assert "yx -> yb not restored: frames would go round a loop forever" in pruned.stderr
    assert "forward yx -> yb" not in pruned.stdout


def test_prune_leaves_out_a_multicast_group_whose_receiver_made_again_closes_a_loop(
    make_topo, pin_dir
):
    topo = make_topo(2)
    veth_pairs(topo, ("ya", "yb"), ("yc", "yd"), ("yx", "yy"))
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "ya", "--to", "yc")
    topo.ok(pin_dir, "add", "yx", "yb")
    # yc made again as yx's peer: the group's copies out of yc would come in at yx,
    # whose entry sends them into ya, the group's source.
    sh("ip", "-n", topo.fwd, "link", "del", "yc")
    topo.ok(pin_dir, "prune")
    sh("ip", "-n", topo.fwd, "link", "set", "yy", "name", "yc")
    pruned = topo.ok(pin_dir, "prune")
    assert "multicast group 239.1.1.1 not restored: frames would go round a loop" in pruned.stderr
    assert "multicast group" not in pruned.stdout
    assert doctor_check(topo, pin_dir, "loop") is None
    # Wired otherwise again, the group, which ran without receivers meanwhile (dropping
    # its frames), gets yc back.
    sh("ip", "-n", topo.fwd, "link", "del", "yc")
    veth_pairs(topo, ("yc", "yd"))
    pruned = topo.ok(pin_dir, "prune")
    assert "change multicast group 239.1.1.1 (from ya to yc)" in pruned.stdout


def test_a_forced_loop_does_not_hold_up_prune(make_topo, pin_dir):
    topo = make_topo(2)
    veth_pairs(topo, ("ya", "yb"))
    topo.ok(pin_dir, "add", "ya", "yb", "p2", "--force")  # ya -> yb comes back in at ya
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "down")
    topo.ok(pin_dir, "prune")
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "up")
    pruned = topo.ok(pin_dir, "prune")
    assert "not restored" not in pruned.stderr and "ya" in pruned.stdout


def test_del_forgets_a_recorded_leg_that_a_refused_loop_names(make_topo, pin_dir):
    topo = make_topo(2)
    veth_pairs(topo, ("ya", "yb"), ("yc", "yd"))
    topo.ok(pin_dir, "add", "ya", "yc")
    topo.ok(pin_dir, "broadcast", "yb", "p1")
    # ya and yb made again: neither entry nor membership runs, prune would restore both.
    sh("ip", "-n", topo.fwd, "link", "del", "ya")
    veth_pairs(topo, ("ya", "yb"))
    # Each refusal names a hop that does not run, with the command that forgets it.
    refused = topo.xdpfwd(pin_dir, "add", "yd", "yb")
    assert_fails(refused, 1, "ya -> yc does not run, but prune would restore it", "--force")
    forgot = run_fix(topo, pin_dir, quoted(refused.stderr), "del", "ya").stdout
    assert "forgot ya -> yc" in forgot and "prune would have restored it" in forgot
    assert_fails(topo.xdpfwd(pin_dir, "del", "yb"), 1, "yb is a broadcast group member; use")
    forgot = topo.ok(pin_dir, "broadcast", "del", "yb", "--group", "default").stdout
    assert "forgot yb's membership" in forgot
    topo.ok(pin_dir, "add", "yd", "yb")
    restored = topo.ok(pin_dir, "prune").stdout
    assert "ya" not in restored and "yb to group" not in restored
    assert_fails(topo.xdpfwd(pin_dir, "del", "ya"), 1, "ya has no xdpfwd entry")


def test_a_refused_loop_names_the_broadcast_del_that_forgets_a_recorded_membership(
    make_topo, pin_dir
):
    topo = make_topo(2)
    veth_pairs(topo, ("ya", "yb"), ("yc", "yd"))
    topo.ok(pin_dir, "broadcast", "yb", "yc", "--exclude-ingress")
    sh("ip", "-n", topo.fwd, "link", "del", "ya")
    veth_pairs(topo, ("ya", "yb"))  # yb's membership waits for prune
    # yb would flood out of yc, into yd, whose entry sends it out of ya, into yb.
    refused = topo.xdpfwd(pin_dir, "add", "yd", "ya")
    assert_fails(refused, 1, "yb -> yc does not run, but prune would restore it", "--force")
    run_fix(topo, pin_dir, quoted(refused.stderr), "broadcast", "del", "yb")
    topo.ok(pin_dir, "add", "yd", "ya")
    assert "yb" not in topo.ok(pin_dir, "prune").stdout


def test_apply_refuses_a_file_that_closes_a_loop(make_topo, pin_dir, tmp_path):
    topo = make_topo(2)
    veth_pairs(topo, ("la", "lb"))
    entry = topo.config_file({"forward": [{"from": "p1", "to": "p2"}, {"from": "la", "to": "lb"}]})
    group = topo.config_file({"groups": [{"name": "default", "members": ["la", "lb", "p1"]}]})
    bus = topo.config_file({"multicast": [{"group": "239.1.1.1", "to": ["la", "lb"]}]})
    for path in (entry, group, bus):
        for dry_run in ((), ("--dry-run",)):
            refused = topo.xdpfwd(pin_dir, "apply", path, *dry_run)
            assert_fails(refused, 2, f"{path}:1: frames would go round a loop", "--force to apply")
        assert not os.path.exists(pin_dir)  # nothing applied, not even p1's entry
    lines = tmp_path / "loop.yaml"
    lines.write_text("version: 1\nforward:\n  - {from: p1, to: p2}\n  - {from: la, to: lb}\n")
    assert_fails(topo.xdpfwd(pin_dir, "apply", str(lines)), 2, f"{lines}:4: frames would go")
    forced = topo.ok(pin_dir, "apply", group, "--force")
    assert "round a loop" in forced.stderr
    assert topo.xdp("la") is not None


MOVES = [
    ("group to group", {"groups": [{"name": "lab2", "members": ["p1", "p2", "p3", "p4"]}]}),
    (
        "split a group",
        {
            "groups": [
                {"name": "default", "members": ["p1", "p2"]},
                {"name": "lab2", "members": ["p3", "p4"]},
            ]
        },
    ),
    (
        "group to entries",
        {
            "forward": [{"from": "p1", "to": "p2"}, {"from": "p2", "to": "p1"}],
            "groups": [{"name": "lab2", "members": ["p3", "p4"]}],
        },
    ),
    (
        "entries to a group, and back",
        {
            "forward": [{"from": "p3", "to": "p4"}, {"from": "p4", "to": "p3"}],
            "groups": [{"name": "default", "members": ["p1", "p2"]}],
        },
    ),
    (
        "mode switch",
        {
            "ports": {"p1": {"mode": "generic"}, "p2": {"mode": "generic"}},
            "forward": [{"from": "p3", "to": "p4"}, {"from": "p4", "to": "p3"}],
            "groups": [{"name": "default", "members": ["p1", "p2"]}],
        },
    ),
]


def test_apply_converges_in_one_pass_whatever_it_moves(make_topo, pin_dir):
    topo = make_topo(4)
    start = topo.config_file({"groups": [{"name": "default", "members": ["p1", "p2", "p3", "p4"]}]})
    topo.ok(pin_dir, "apply", start)
    for name, doc in MOVES:
        path = topo.config_file(doc)
        topo.ok(pin_dir, "apply", path)
        assert topo.ok(pin_dir, "apply", path, "--dry-run").stdout == "nothing to change\n", name
        assert topo.ok(pin_dir, "apply", path).stdout == "nothing to change\n", name
        states = {
            row["ingress"]["ifname"]: row["state"] for row in topo.list_json(pin_dir)["entries"]
        }
        assert set(states.values()) == {"ok"}, (name, states)
        if name == "mode switch":
            assert topo.xdp("p1")["mode"] == 2  # XDP_ATTACHED_SKB: generic, as the file says
        for a, b in ((1, 2), (3, 4)):
            assert topo.ping(a, topo.host(b).ip, count=2) == 2, (name, a, b)


@pytest.mark.parametrize("table", ["devmap-hash"])
def test_list_says_when_a_member_does_not_flood(topo, pin_dir, table):
    """Intent against the kernel: a member whose settings lost the flood flag misses."""
    topo.ok(pin_dir, "broadcast", "p1", "p2", "--table", table)
    from xdpfwd.kernel.bpf import maps

    from .net import in_netns

    with in_netns(topo.fwd):
        ports = maps.PortTable(f"{pin_dir}/{maps.PIN_PORTS}")
        try:
            index = next(i for i in ports.ifindexes())
            ports.set(index, maps.PortSettings())
        finally:
            ports.close()
    states = [row["state"] for row in topo.list_json(pin_dir)["entries"]]
    assert "misses: not flooding" in states
    assert topo.xdpfwd(pin_dir, "doctor", "--no-compile").returncode == 1
