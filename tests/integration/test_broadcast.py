"""Broadcast groups: flooding with and without the ingress port, separate groups,
members leaving, a hub carrying ARP and ping, and errors; frames counted with packet
sockets on every host."""

import json
import os
import threading
import time
from contextlib import ExitStack

import pytest

from xdpfwd.state.dataplane import Dataplane
from xdpfwd.state.pins import PinDir

from .net import (
    FrameCounter,
    UdpSink,
    assert_fails,
    run_fix,
    send_udp,
    sh,
    snapshot,
    udp_frame_len,
)

NO_BCC = {"PYTHONPATH": os.path.join(os.path.dirname(__file__), "no_bcc")}


def flood(topo, src: int, count: int, port: int, hosts=None) -> dict[int, int]:
    """Send count datagrams from host src; return frames seen per host (by index), of
    hosts (default: all)."""
    with ExitStack() as stack:
        counters = {
            h.index: stack.enter_context(FrameCounter(h.ns, h.dev)) for h in hosts or topo.hosts
        }
        # Unicast to a host that does not exist: only the hub's flooding carries it.
        send_udp(topo.host(src), "10.77.0.200", count, port=port)
        return {i: len(c.frames(udp_port=port)) for i, c in counters.items()}


def group_slots(pin_dir: str, group: str) -> int:
    """The size of the group's devmap: what a broadcast walks for each frame."""
    shown = sh("bpftool", "-j", "map", "show", "pinned", f"{pin_dir}/group/{group}")
    return json.loads(shown.stdout)["max_entries"]


def static_neighbour(topo, src: int) -> None:
    h = topo.host(src)
    sh(
        "ip",
        "-n",
        h.ns,
        "neigh",
        "replace",
        "10.77.0.200",
        "lladdr",
        "02:00:00:00:00:c8",
        "dev",
        h.dev,
        "nud",
        "permanent",
    )


@pytest.mark.parametrize("table", ["devmap-hash", "devmap"])
@pytest.mark.parametrize("exclude", [True, False], ids=["exclude-ingress", "include-ingress"])
def test_a_frame_reaches_every_other_member_exactly_once(make_topo, pin_dir, table, exclude):
    topo = make_topo(3)
    static_neighbour(topo, 1)
    flag = "--exclude-ingress" if exclude else "--include-ingress"
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", flag, "--table", table)
    seen = flood(topo, 1, 20, port=9300)
    assert seen[2] == seen[3] == 20
    assert seen[1] == (0 if exclude else 20)  # back out of the ingress port, or not
    listing = topo.list_json(pin_dir)
    (group,) = listing["groups"]
    assert group["table"] == table and group["exclude_ingress"] == exclude
    assert [m["ifname"] for m in group["members"]] == ["p1", "p2", "p3"]
    p1 = next(r for r in listing["entries"] if r["ingress"]["ifname"] == "p1")
    assert p1["group"] == "default" and p1["counters"]["redirect_packets"] >= 20
    assert p1["forwarded_packets"] == p1["counters"]["redirect_packets"]  # what it flooded
    pairs = {(p["ingress"]["ifname"], p["egress"]["ifname"]): p for p in group["pairs"]}
    assert pairs[("p1", "p2")]["tx_packets"] == pairs[("p1", "p3")]["tx_packets"] == 20
    # The copies the drivers sent (no egress program runs), in frames of one size.
    assert pairs[("p1", "p2")]["tx_bytes"] == 20 * udp_frame_len(64)
    stats = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
    assert {p["counted_by"] for p in stats["pairs"]} == {"transmit"}
    (p1,) = [p for p in stats["ports"] if p["port"]["ifname"] == "p1"]
    assert p1["forwarded_packets"] == p1["redirect_packets"] >= 20
    assert group_slots(pin_dir, "default") == 3


def test_groups_are_separate_flood_domains(make_topo, pin_dir):
    topo = make_topo(5)
    static_neighbour(topo, 1)
    static_neighbour(topo, 4)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--group", "one", "--exclude-ingress")
    topo.ok(pin_dir, "broadcast", "p4", "p5", "--group", "two", "--exclude-ingress")
    seen = flood(topo, 1, 15, port=9301)
    assert (seen[2], seen[3], seen[4], seen[5]) == (15, 15, 0, 0)
    seen = flood(topo, 4, 15, port=9302)
    assert (seen[1], seen[2], seen[3], seen[5]) == (0, 0, 0, 15)
    assert {g["name"] for g in topo.list_json(pin_dir)["groups"]} == {"one", "two"}


def test_copies_the_kernel_skips_are_counted_as_lost(make_topo, pin_dir):
    # A member below the frame's MTU, down, or gone: the kernel skips it without a
    # trace; they were counted nowhere, and p1's stats said LOST 0.
    topo = make_topo(4)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "p4", "--exclude-ingress")

    def p1() -> dict:
        ports = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)["ports"]
        return next(p for p in ports if p["port"]["ifname"] == "p1")

    def flood_big(count: int, port: int, hosts=topo.hosts) -> dict[int, int]:
        with ExitStack() as stack:
            seen = {h.index: stack.enter_context(FrameCounter(h.ns, h.dev)) for h in hosts}
            send_udp(topo.host(1), "10.77.0.200", count, payload=1200, port=port)
            return {i: len(c.frames(udp_port=port)) for i, c in seen.items()}

    sh("ip", "-n", topo.fwd, "link", "set", "p3", "mtu", "1000")
    before = p1()
    watch = topo.start(pin_dir, "stats", "--watch", "--json", "--count", "1", "--interval", "2")
    time.sleep(0.8)  # its first read is done: the copies lost count in its interval
    assert flood_big(10, 9310) == {1: 0, 2: 10, 3: 0, 4: 10}
    (frame,) = [json.loads(line) for line in watch.communicate(timeout=30)[0].splitlines()]
    assert frame["watch_flood_copies_lost"] == 10
    after = p1()
    flooded = after["redirect_packets"] - before["redirect_packets"]
    assert after["flood_copies"] - before["flood_copies"] == 3 * flooded
    assert after["flood_copies_lost"] - before["flood_copies_lost"] == 10  # the big ones
    sh("ip", "-n", topo.fwd, "link", "set", "p3", "mtu", "1500")
    sh("ip", "-n", topo.fwd, "link", "set", "p4", "down")
    assert flood_big(10, 9311) == {1: 0, 2: 10, 3: 10, 4: 0}
    now = p1()
    flooded = now["redirect_packets"] - after["redirect_packets"]  # each lost p4's copy
    assert now["flood_copies_lost"] - after["flood_copies_lost"] == flooded >= 10
    (entry,) = [e for e in topo.list_json(pin_dir)["entries"] if e["ingress"]["ifname"] == "p1"]
    assert entry["flood_copies_lost"] == now["flood_copies_lost"]
    (summary,) = [s for s in topo.ok(pin_dir, "stats").stdout.splitlines() if "not forw" in s]
    assert f"broadcast copies lost {now['flood_copies_lost']}" in summary
    # A member that leaves keeps them in the total (they went from it).
    total = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)["flood_copies_lost"]
    topo.ok(pin_dir, "broadcast", "del", "p1")
    assert json.loads(topo.ok(pin_dir, "stats", "--json").stdout)["flood_copies_lost"] == total
    topo.ok(pin_dir, "broadcast", "p1")
    now = p1()
    # In generic mode no copies are counted (null), and those lost before stay.
    topo.ok(pin_dir, "broadcast", "p1", "--mode", "generic")
    shown = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
    assert shown["flood_copies_lost"] == total
    assert (
        next(p for p in shown["ports"] if p["port"]["ifname"] == "p1")["flood_copies_lost"] is None
    )
    topo.ok(pin_dir, "broadcast", "p1", "--mode", "native")
    assert p1()["flood_copies_lost"] == now["flood_copies_lost"]
    # Gone: lost until prune takes it out; then two copies a frame, both made.
    sh("ip", "-n", topo.fwd, "link", "del", "p4")
    topo.ok(pin_dir, "prune")
    before = p1()
    assert flood_big(10, 9312, topo.hosts[:3]) == {1: 0, 2: 10, 3: 10}
    after = p1()
    flooded = after["redirect_packets"] - before["redirect_packets"]
    assert after["flood_copies"] - before["flood_copies"] == 2 * flooded
    assert after["flood_copies_lost"] == before["flood_copies_lost"]


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_copies_a_driver_drops_are_no_copies_lost(make_topo, pin_dir, mode):
    # Its pair had sent nothing yet: its transmit drops were on no pair, and the copies
    # were counted twice, lost and dropped. In generic mode no tracepoint sees copies:
    # every one was said lost.
    topo = make_topo(3)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress", "--mode", mode)
    h3 = topo.host(3)
    sh("ip", "-n", h3.ns, "link", "set", h3.dev, "down")  # p3 without carrier
    assert flood(topo, 1, 10, port=9313, hosts=topo.hosts[:2]) == {1: 0, 2: 10}
    ports = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)["ports"]
    (p1,) = [p for p in ports if p["port"]["ifname"] == "p1"]
    assert p1["forwarded_packets"] == p1["redirect_packets"] >= 10  # what it flooded
    if mode == "generic":
        assert p1["flood_copies_lost"] is None
        return
    assert p1["flood_copies_lost"] == 0
    assert p1["not_forwarded"]["xmit_drop"] == p1["redirect_packets"]  # p3's copies
    (group,) = topo.list_json(pin_dir)["groups"]
    pairs = {(p["ingress"]["ifname"], p["egress"]["ifname"]): p for p in group["pairs"]}
    assert pairs[("p1", "p3")]["xmit_drop_packets"] == p1["redirect_packets"]


def test_members_leaving_and_joining_under_traffic_lose_no_copy_count(make_topo, pin_dir):
    # Pairs ended by a change kept the counts read when it began: the copies sent
    # while it ran were said lost (hundreds), and the member's TX fell short.
    topo = make_topo(3)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    with ExitStack() as stack:
        seen = {h.index: stack.enter_context(FrameCounter(h.ns, h.dev)) for h in topo.hosts}
        # 8,000 frames over about 2 s (a packet socket's buffer holds fewer than 15,000).
        sender = threading.Thread(target=lambda: [paced(topo.host(1)) for _ in range(40)])
        sender.start()
        for _ in range(2):
            topo.ok(pin_dir, "broadcast", "del", "p3")
            topo.ok(pin_dir, "broadcast", "p3")
        sender.join()
        time.sleep(0.3)
        got = {i: len(c.frames(udp_port=9000)) for i, c in seen.items()}
    ports = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)["ports"]
    p1 = next(p for p in ports if p["port"]["ifname"] == "p1")
    # (A frame in flight while a member's count changes may count one copy off.)
    assert p1["flood_copies_lost"] <= 4
    tx = {p["port"]["ifname"]: p["tx_packets"] for p in ports}
    assert tx["p2"] == got[2] == 8000
    # p3's copies are all in its TX, up to a burst more than p1 counted: each join
    # writes p1's count after its devmap, whose update returns an RCU grace period
    # after it took effect (groups._resize). Never fewer, which would be lost.
    assert 0 <= tx["p3"] - (p1["flood_copies"] - 8000) <= 400


def paced(host) -> None:
    send_udp(host, "10.77.0.200", 200)
    time.sleep(0.05)


def test_a_member_that_leaves_stops_receiving(make_topo, pin_dir):
    topo = make_topo(3)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    topo.ok(pin_dir, "broadcast", "del", "p3")
    assert topo.xdp("p3") is None
    assert group_slots(pin_dir, "default") == 2  # a devmap sized to the members left
    seen = flood(topo, 1, 10, port=9303)
    assert (seen[2], seen[3]) == (10, 0)
    # The last members leaving remove the group.
    result = topo.ok(pin_dir, "broadcast", "del", "p1", "p2")
    assert "group default had no member left" in result.stdout
    assert result.stderr == ""  # not put down to deleted devices
    assert topo.list_json(pin_dir)["groups"] == []


def test_a_group_name_may_hold_a_dash(make_topo, pin_dir):
    topo = make_topo(3)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--group", "my-cams", "--exclude-ingress")
    assert flood(topo, 1, 5, port=9306) == {1: 0, 2: 5, 3: 5}
    assert group_slots(pin_dir, "my-cams") == 3


def test_a_swap_pin_a_crash_left_is_no_group_and_not_in_the_way(make_topo, pin_dir):
    topo = make_topo(3)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "--exclude-ingress")
    # What a crash between pinning a group's new devmap and renaming it leaves.
    swap = f"{pin_dir}/group/_default"
    sh("bpftool", "map", "pin", "pinned", f"{pin_dir}/group/default", swap)
    assert [g["name"] for g in topo.list_json(pin_dir)["groups"]] == ["default"]
    topo.ok(pin_dir, "broadcast", "p3")
    assert not os.path.exists(swap)
    assert group_slots(pin_dir, "default") == 3
    assert flood(topo, 1, 5, port=9307) == {1: 0, 2: 5, 3: 5}


def test_a_group_whose_pin_was_removed_is_flagged_and_pinned_again_by_prune(make_topo, pin_dir):
    topo = make_topo(4)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    os.unlink(f"{pin_dir}/group/default")
    # The members still flood, through the devmap the map of groups holds ...
    assert flood(topo, 1, 5, port=9309) == {1: 0, 2: 5, 3: 5, 4: 0}
    # ... but nothing else sees the group: each reader says so, and every change is
    # refused until prune pins it again.
    prune = f"`xdpfwd --pin-dir {pin_dir} prune` pins it again"
    before = snapshot(topo, pin_dir)
    for args in (
        ["broadcast", "del", "p1"],
        ["broadcast", "p4"],
        ["del", "p2"],
        ["multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2"],
    ):
        refused = topo.xdpfwd(pin_dir, *args)
        assert_fails(refused, 1, "p1, p2, p3 flood through a broadcast group whose pin", prune)
    assert snapshot(topo, pin_dir) == before
    states = {r["ingress"]["ifname"]: r["state"] for r in topo.list_json(pin_dir)["entries"]}
    assert states == dict.fromkeys(["p1", "p2", "p3"], "floods: group not pinned")
    saved = topo.ok(pin_dir, "save")
    assert "groups" not in saved.stdout
    assert (
        f"p1 left out of broadcast groups: it floods through a group that no pin holds "
        f"(`xdpfwd --pin-dir {pin_dir} prune` restores it)" in saved.stderr
    )
    doctor = topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile")
    failed = [c for c in json.loads(doctor.stdout)["checks"] if c["status"] == "fail"]
    assert doctor.returncode == 1 and len(failed) == 3, failed
    assert all("no pin under" in c["detail"] for c in failed), failed
    run_fix(topo, pin_dir, failed[0]["fix"], "prune")
    assert os.path.exists(f"{pin_dir}/group/default")
    states = {r["ingress"]["ifname"]: r["state"] for r in topo.list_json(pin_dir)["entries"]}
    assert states == dict.fromkeys(["p1", "p2", "p3"], "ok")
    assert topo.xdpfwd(pin_dir, "doctor", "--no-compile").returncode == 0
    assert flood(topo, 1, 5, port=9310) == {1: 0, 2: 5, 3: 5, 4: 0}
    # apply of a file without the group takes its members out of it, pin or none.
    os.unlink(f"{pin_dir}/group/default")
    path = topo.config_file({"forward": [{"from": "p3", "to": "p1"}]})
    planned = topo.ok(pin_dir, "apply", path, "--dry-run")
    assert "take p1 out of a broadcast group whose pin is gone" in planned.stdout
    applied = topo.ok(pin_dir, "apply", path)
    assert "take p1 out of a broadcast group whose pin is gone" in applied.stdout
    states = {r["ingress"]["ifname"]: r["state"] for r in topo.list_json(pin_dir)["entries"]}
    assert states == {"p3": "ok"}  # p1, only p3's egress now, needs no program
    topo.ok(pin_dir, "add", "p4", "p2")  # no change is refused any more
    assert flood(topo, 1, 5, port=9311) == {1: 0, 2: 0, 3: 0, 4: 0}  # p1 floods no more
    static_neighbour(topo, 3)
    assert flood(topo, 3, 5, port=9312) == {1: 5, 2: 0, 3: 0, 4: 0}  # p3's entry to p1


def test_a_deleted_member_blocks_no_change(make_topo, pin_dir):
    # The kernel takes a deleted device out of every devmap; xdpfwd's map of groups
    # keeps its ifindex until a change tidies it: no group pin is missing.
    topo = make_topo(4)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    static_neighbour(topo, 1)
    left = [topo.host(i) for i in (1, 2, 4)]  # host 3's end went with p3
    assert flood(topo, 1, 5, port=9313, hosts=left) == {1: 0, 2: 5, 4: 0}
    topo.ok(pin_dir, "add", "p4", "p1")
    topo.ok(pin_dir, "broadcast", "del", "p2")
    assert topo.xdpfwd(pin_dir, "doctor", "--no-compile").returncode == 0
    static_neighbour(topo, 4)
    assert flood(topo, 4, 5, port=9314, hosts=left) == {1: 5, 2: 0, 4: 0}
    # Named after its device is gone, p3 leaves the group and is not restored.
    assert "forgot p3's membership" in topo.ok(pin_dir, "broadcast", "del", "p3").stdout
    topo.plug(topo.host(3))
    assert "p3" not in topo.ok(pin_dir, "prune").stdout


def test_two_members_whose_devices_are_gone_leave_in_one_del(make_topo, pin_dir):
    # Both were taken for the same device (ifindex 0): "p4 is named twice".
    topo = make_topo(4)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "p4", "--exclude-ingress")
    for port in ("p3", "p4"):
        sh("ip", "-n", topo.fwd, "link", "del", port)
    result = topo.ok(pin_dir, "broadcast", "del", "p3", "p4").stdout
    assert result.splitlines() == ["removed p3 from group default", "removed p4 from group default"]
    for i in (3, 4):
        topo.plug(topo.host(i))
    assert "p3" not in topo.ok(pin_dir, "prune").stdout
    assert flood(topo, 1, 5, port=9315) == {1: 0, 2: 5, 3: 0, 4: 0}


def test_doctor_says_a_member_that_is_down_loses_its_copies_uncounted(make_topo, pin_dir):
    # The kernel's broadcast skips a member that is down, with no tracepoint.
    topo = make_topo(3)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    sh("ip", "-n", topo.fwd, "link", "set", "p3", "down")
    static_neighbour(topo, 1)
    assert flood(topo, 1, 5, port=9315) == {1: 0, 2: 5, 3: 0}
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile").stdout)
    (check,) = [c for c in doctor["checks"] if c["check"] == "port p3"]
    assert check["status"] == "warn"
    assert "the link is down: group default's copies to it are lost" in check["detail"]


def test_a_group_whose_members_were_all_deleted_is_bound_again(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    for h in topo.hosts:
        sh("ip", "-n", topo.fwd, "link", "del", h.port)
    for h in topo.hosts:
        topo.plug(h)
    # The group's devmap is still pinned, empty: prune fills it rather than pin anew.
    assert "add p1 to group default" in topo.ok(pin_dir, "prune").stdout
    assert topo.ok(pin_dir, "prune").stdout.strip() == "nothing to prune"
    static_neighbour(topo, 1)
    assert flood(topo, 1, 5, port=9308) == {1: 0, 2: 5, 3: 5}


def test_a_hub_carries_arp_and_ping(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    for src, dst in ((1, 2), (2, 3), (3, 1)):
        assert topo.ping(src, topo.host(dst).ip) == 3


def test_adding_a_member_and_changing_the_flag_need_no_compiler(make_topo, pin_dir):
    topo = make_topo(4)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "--include-ingress")
    prog_id = topo.xdp("p1")["prog"]["id"]
    more = topo.xdpfwd(pin_dir, "broadcast", "p3", "p4", "--exclude-ingress", env=NO_BCC)
    assert more.returncode == 0, more.stderr
    assert topo.xdp("p4")["prog"]["id"] == prog_id
    (group,) = topo.list_json(pin_dir)["groups"]
    assert group["exclude_ingress"] is True and len(group["members"]) == 4
    assert group_slots(pin_dir, "default") == 4  # grown with its members
    seen = flood(topo, 1, 10, port=9304)
    assert seen == {1: 0, 2: 10, 3: 10, 4: 10}


def test_bare_broadcast_turns_every_managed_port_into_a_member(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    topo.ok(pin_dir, "add", "p3", "p1")

    def roles():
        rows = topo.list_json(pin_dir)["entries"]
        return [(row["ingress"], row["egress"], row["group"]) for row in rows]

    before = roles()
    refused = topo.xdpfwd(pin_dir, "broadcast", "--exclude-ingress")  # not on a terminal
    assert refused.returncode == 2 and "--all" in refused.stderr
    assert roles() == before
    result = topo.ok(pin_dir, "broadcast", "--all", "--exclude-ingress")
    assert "forwarding entry was removed" in result.stdout
    listing = topo.list_json(pin_dir)
    assert all(row["egress"] is None and row["group"] == "default" for row in listing["entries"])
    static_neighbour(topo, 2)
    seen = flood(topo, 2, 10, port=9305)
    assert seen == {1: 10, 2: 0, 3: 10}


def test_a_port_becoming_a_member_forwards_until_it_floods(make_topo, pin_dir):
    # broadcast marks a joining port as a member before its group holds it, and
    # removes its entry last: meanwhile the entry forwards, no frame misses.
    topo = make_topo(3)
    topo.static_arp()
    for _ in range(3):
        topo.ok(pin_dir, "add", "p1", "p2", "-b")
        topo.ok(pin_dir, "add", "p3", "p1")
        sent, received = udp_during(topo, lambda: topo.ok(pin_dir, "broadcast", "--all"))
        # Every datagram reached h2: by p1's entry, then by its group's flooding.
        assert sent > 100 and received == sent, (sent, received)
        ports = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)["ports"]
        p1 = next(p for p in ports if p["port"]["ifname"] == "p1")
        assert p1["miss_packets"] == 0, p1
        topo.ok(pin_dir, "down")


def udp_during(topo, action) -> tuple[int, int]:
    """Datagrams host 1 sent to host 2 while action ran, and those host 2 received."""
    h1, h2 = topo.hosts[:2]
    stop, sent, received = threading.Event(), [0], []

    def send():
        while not stop.is_set():
            send_udp(h1, h2.ip, 16, port=9306)
            sent[0] += 16
            time.sleep(0.002)

    with UdpSink(h2, port=9306) as sink:
        receiver = threading.Thread(target=lambda: received.append(sink.count_until(stop)))
        sender = threading.Thread(target=send)
        receiver.start()
        sender.start()
        try:
            time.sleep(0.2)
            action()
            time.sleep(0.2)
        finally:
            stop.set()
            sender.join()
            receiver.join()
    return sent[0], received[0]


def test_broadcast_errors_change_nothing(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "broadcast", "p3", "--group", "one")
    before = snapshot(topo, pin_dir)
    cases = [
        (["broadcast", "p3", "nope"], 2, "no such interface: nope"),
        (["broadcast", "p1", "p4"], 1, "p1 forwards"),
        (["broadcast", "p3", "p4", "--group", "two"], 1, "member of broadcast group one"),
        (["broadcast", "p4", "--group", "Bad Name"], 2, "group name"),
        (["broadcast", "p4", "--group", ""], 2, "group name ''"),
        (["broadcast", "del", "p4"], 1, "p4 is not a member"),
        (["broadcast", "del", "p3", "--group", "nope"], 1, "no broadcast group nope"),
        (["add", "p3", "p4"], 1, "p3 is a broadcast group member"),
        (["add", "p4", "p3", "-b"], 1, "p3 is a broadcast group member"),
        (["del", "p3"], 1, "broadcast del p3"),
    ]
    for args, code, needle in cases:
        assert_fails(topo.xdpfwd(pin_dir, *args), code, needle)
    assert snapshot(topo, pin_dir) == before


def test_apply_points_again_a_member_a_killed_change_left_in_its_devmap_only(
    make_topo, pin_dir, tmp_path
):
    topo = make_topo(3)
    static_neighbour(topo, 1)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress", "--group", "g")
    saved = tmp_path / "saved.yaml"
    topo.ok(pin_dir, "save", "--output", str(saved))
    p1 = topo.list_json(pin_dir)["entries"][0]["ingress"]
    assert p1["ifname"] == "p1"
    # What a kill between swapping in a group's devmap and pointing its members leaves.
    with Dataplane.open(PinDir.parse(pin_dir)) as dp:
        dp.groups.delete(p1["ifindex"])
    states = {r["ingress"]["ifname"]: r["state"] for r in topo.list_json(pin_dir)["entries"]}
    assert states["p1"] == "misses: not flooding"
    assert flood(topo, 1, 5, port=9313) == {1: 0, 2: 0, 3: 0}
    assert "p1" in topo.ok(pin_dir, "apply", "--dry-run", str(saved)).stdout
    topo.ok(pin_dir, "apply", str(saved))  # it said nothing to change
    states = {r["ingress"]["ifname"]: r["state"] for r in topo.list_json(pin_dir)["entries"]}
    assert set(states.values()) == {"ok"}, states
    assert flood(topo, 1, 5, port=9314) == {1: 0, 2: 5, 3: 5}
    assert topo.ok(pin_dir, "apply", str(saved)).stdout == "nothing to change\n"
