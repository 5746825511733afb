"""Balanced entries with real frames: how flows spread over egress ports, symmetric
hashing across two ingress ports, and ports that go down or away and come back
(with `xdpfwd follow` running, and with `prune` alone)."""

from __future__ import annotations

import collections
import json
import socket
import struct
import threading
import time
from contextlib import ExitStack

import pytest

from .net import FrameCounter, Host, UdpSink, in_netns, send_udp, sh

DPORT = 9000
FLOWS = 300


def udp_ports(frame: bytes) -> tuple[int, int] | None:
    """(source port, destination port) of an IPv4/UDP frame."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    return struct.unpack_from("!HH", frame, 14 + ihl)


class Flows:
    """UDP flows from one host, one socket (source port) each."""

    def __init__(self, src: Host, dst_ip: str, ports: range, dport: int = DPORT):
        self.dst = (dst_ip, dport)
        self.socks = []
        with in_netns(src.ns):
            for port in ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((src.ip, port))
                self.socks.append(sock)

    def send(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            for i, sock in enumerate(self.socks):
                try:
                    sock.sendto(b"x" * 32, self.dst)
                except OSError:
                    pass  # the sender's device is being re-created
                if i % 64 == 63:
                    time.sleep(0.002)  # far below the veth ring size

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class Receivers:
    """A packet socket on each egress host's device: which flows reach which host."""

    def __init__(self, topo, hosts: list[int]):
        self.topo = topo
        self.counters = {i: FrameCounter(topo.host(i).ns, topo.host(i).dev) for i in hosts}

    def reopen(self, i: int) -> None:
        """After the host's device was re-created."""
        self.counters[i].close()
        self.counters[i] = FrameCounter(self.topo.host(i).ns, self.topo.host(i).dev)

    def window(self, seconds: float) -> dict[tuple[int, int], collections.Counter]:
        """(sport, dport) -> Counter(host -> frames) seen within seconds."""
        seen: dict[tuple[int, int], collections.Counter] = collections.defaultdict(
            collections.Counter
        )
        threads = []

        def collect(i, counter):
            try:
                frames = counter.frames(timeout=seconds)
            except OSError:  # its device was deleted
                return
            for frame in frames:
                ports = udp_ports(frame)
                if ports is not None:
                    seen[ports][i] += 1

        for i, counter in self.counters.items():
            threads.append(threading.Thread(target=collect, args=(i, counter)))
            threads[-1].start()
        for thread in threads:
            thread.join()
        return seen

    def close(self) -> None:
        for counter in self.counters.values():
            counter.close()


def mapping(seen, dport: int = DPORT) -> dict[int, set[int]]:
    """Source port -> the hosts its datagrams reached."""
    return {sport: set(hosts) for (sport, d), hosts in seen.items() if d == dport}


def spread(topo, pin_dir, *add_args) -> tuple[dict[int, set[int]], dict]:
    topo.static_arp()
    topo.ok(pin_dir, "add", *add_args)
    h1, h2 = topo.host(1), topo.host(2)
    with ExitStack() as stack:
        flows = Flows(h1, h2.ip, range(20000, 20000 + FLOWS))
        stack.callback(flows.close)
        receivers = Receivers(topo, [i for i in range(2, len(topo.hosts) + 1)])
        stack.callback(receivers.close)
        sender = threading.Thread(target=lambda: (time.sleep(0.2), flows.send(3)))
        sender.start()
        seen = receivers.window(2.0)
        sender.join()
    return seen, topo.list_json(pin_dir)["entries"][0]


def test_flows_spread_over_three_ports_each_flow_to_one(make_topo, pin_dir):
    topo = make_topo(4)
    seen, row = spread(topo, pin_dir, "p1", "p2", "p3", "p4")
    flows = mapping(seen)
    assert len(flows) == FLOWS
    for (sport, _), hosts in seen.items():
        assert len(hosts) == 1 and sum(hosts.values()) == 3, (sport, hosts)
    share = collections.Counter(next(iter(hosts)) for hosts in flows.values())
    for host in (2, 3, 4):
        assert 0.20 * FLOWS <= share[host] <= 0.47 * FLOWS, share
    # list counts each egress port's frames (the buckets' egress program, per pair)
    ports = {p["name"]: p for p in row["balance"]["ports"]}
    assert row["state"] == "ok" and row["egress"] is None
    assert sum(p["buckets"] for p in ports.values()) == 256
    for host in (2, 3, 4):
        assert ports[f"p{host}"]["counters"]["tx_packets"] == 3 * share[host]


def test_an_entry_balanced_again_counts_its_ports_from_where_they_were(make_topo, pin_dir):
    # The pair counter of the port a single entry kept came back with its old count
    # when the entry was balanced again: counted a second time in that port's TX
    # (helper-49).
    topo = make_topo(3)
    topo.static_arp()
    flows = Flows(topo.host(1), topo.host(2).ip, range(20000, 20000 + 64))

    def tx() -> tuple[dict[str, int], int]:
        data = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
        ports = {p["port"]["ifname"]: p["tx_packets"] for p in data["ports"]}
        return {name: ports.get(name, 0) for name in ("p2", "p3")}, data["totals"]["tx_packets"]

    def arrivals() -> dict[str, int]:
        """Each host's frames of one round of the flows."""
        with ExitStack() as stack:
            seen = {
                f"p{i}": stack.enter_context(FrameCounter(topo.host(i).ns, topo.host(i).dev))
                for i in (2, 3)
            }
            flows.send()
            return {name: len(c.frames(udp_port=DPORT)) for name, c in seen.items()}

    try:
        topo.ok(pin_dir, "add", "p1", "p2", "p3")
        first = arrivals()
        spread, total = tx()
        assert spread == first and total == 64 and all(spread.values())
        topo.ok(pin_dir, "add", "p1", "p2")
        topo.ok(pin_dir, "add", "p1", "p2", "p3")
        assert tx() == (spread, 64)
        second = arrivals()
        again, total = tx()
        assert again == {name: spread[name] + second[name] for name in spread} and total == 128
    finally:
        flows.close()


def test_weights_give_the_first_port_about_half(make_topo, pin_dir):
    topo = make_topo(4)
    seen, row = spread(topo, pin_dir, "p1", "p2", "p3", "p4", "--weights", "2,1,1")
    share = collections.Counter(next(iter(h)) for h in mapping(seen).values())
    assert 0.40 * FLOWS <= share[2] <= 0.60 * FLOWS, share
    assert [p["buckets"] for p in row["balance"]["ports"]] == [128, 64, 64]


def test_symmetric_hash_sends_both_directions_of_a_flow_to_one_egress(make_topo, pin_dir):
    """X -> Y enters p1, Y -> X enters p2; both balanced over p3, p4, p5."""
    topo = make_topo(5)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p3", "p4", "p5")
    topo.ok(pin_dir, "add", "p2", "p5", "p3", "p4")  # the same ports, in another order
    x, y = topo.host(1), topo.host(2)
    ports = range(21000, 21000 + 100)
    with ExitStack() as stack:
        forward = Flows(x, y.ip, ports)
        stack.callback(forward.close)
        receivers = Receivers(topo, [3, 4, 5])
        stack.callback(receivers.close)
        # Y answers from port DPORT to each of X's source ports.
        with in_netns(y.ns):
            back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stack.callback(back.close)
        back.bind((y.ip, DPORT))

        def send():
            time.sleep(0.2)
            forward.send(2)
            for _ in range(2):
                for port in ports:
                    back.sendto(b"y" * 32, (x.ip, port))

        sender = threading.Thread(target=send)
        sender.start()
        seen = receivers.window(2.0)
        sender.join()
    there = {sport: hosts for (sport, dport), hosts in seen.items() if dport == DPORT}
    back_ = {dport: hosts for (sport, dport), hosts in seen.items() if sport == DPORT}
    assert set(there) == set(back_) == set(ports)
    for port in ports:
        assert len(there[port]) == 1 and set(there[port]) == set(back_[port]), port
    assert len({next(iter(h)) for h in there.values()}) == 3  # and it did spread


# --- ports that go down or away -------------------------------------------------------


def recreate_veth(topo, i: int) -> None:
    """Port p<i> again (deleted with its peer): same names, same host address."""
    host = topo.host(i)
    veth = ["type", "veth", "peer", "name", host.dev, "netns", host.ns]
    sh("ip", "-n", topo.fwd, "link", "add", host.port, *veth)
    sh("ip", "-n", topo.fwd, "link", "set", host.port, "up")
    sh("ip", "-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", host.dev)
    sh("ip", "-n", host.ns, "link", "set", host.dev, "up")
    sh("ip", "netns", "exec", host.ns, "ethtool", "-K", host.dev, "gro", "on", "tx", "off")
    info = json.loads(sh("ip", "-n", host.ns, "-j", "link", "show", host.dev).stdout)
    host.mac = info[0]["address"]
    topo.static_arp()


class Traffic:
    """60 flows from host 1 to host 2, sent continuously, and where they arrive."""

    def __init__(self, topo, egress: list[int]):
        self.flows = Flows(topo.host(1), topo.host(2).ip, range(22000, 22060))
        self.receivers = Receivers(topo, egress)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            self.flows.send()
            time.sleep(0.01)

    def where(self, seconds: float = 0.4) -> dict[int, set[int]]:
        return mapping(self.receivers.window(seconds))

    def settled(self, expect, deadline: float = 2.0) -> tuple[float, dict[int, set[int]]]:
        """Seconds until a window in which every flow went where expect(flow, hosts)
        says (checked for deadline + a margin), and that window's mapping."""
        start = time.monotonic()
        while True:
            began = time.monotonic() - start
            now = self.where(0.3)
            if len(now) == 60 and all(expect(f, hosts) for f, hosts in now.items()):
                return began, now
            if began > deadline + 1.5:
                return began, now

    def close(self):
        self.stopped.set()
        self.thread.join()
        self.flows.close()
        self.receivers.close()


def _down_up_delete_recreate(topo, pin_dir, apply_once):
    """Shared by the follow and prune tests: apply_once() is what makes xdpfwd act
    (nothing with follow running, `xdpfwd prune` without); returns the delays."""
    delays = {}
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "p3", "p4")
    traffic = Traffic(topo, [2, 3, 4])
    try:
        time.sleep(0.3)
        before = traffic.where(0.6)
        assert len(before) == 60 and all(len(h) == 1 for h in before.values()), before
        home = {flow: next(iter(h)) for flow, h in before.items()}
        assert set(home.values()) == {2, 3, 4}

        def moved_off(gone):
            def expect(flow, hosts):
                if home[flow] == gone:
                    return len(hosts) == 1 and gone not in hosts
                return hosts == {home[flow]}  # no flow moves between survivors

            return expect

        def back(flow, hosts):
            return hosts == {home[flow]}

        sh("ip", "-n", topo.fwd, "link", "set", "p3", "down")
        apply_once()
        delays["p3 down"], now = traffic.settled(moved_off(3))
        assert len(now) == len(home) and all(moved_off(3)(f, h) for f, h in now.items()), now
        sh("ip", "-n", topo.fwd, "link", "set", "p3", "up")
        apply_once()
        delays["p3 up"], now = traffic.settled(back)
        assert len(now) == len(home) and all(back(f, h) for f, h in now.items()), now

        sh("ip", "-n", topo.fwd, "link", "del", "p4")
        apply_once()
        delays["p4 deleted"], now = traffic.settled(moved_off(4))
        assert len(now) == len(home) and all(moved_off(4)(f, h) for f, h in now.items()), now
        recreate_veth(topo, 4)
        traffic.receivers.reopen(4)
        apply_once()
        delays["p4 re-created"], now = traffic.settled(back)
        assert len(now) == len(home) and all(back(f, h) for f, h in now.items()), now

        # The ingress port itself, deleted and re-created: bound again, same buckets.
        sh("ip", "-n", topo.fwd, "link", "del", "p1")
        recreate_veth(topo, 1)
        apply_once()
        delays["p1 re-created"], now = traffic.settled(back)
        assert len(now) == len(home) and all(back(f, h) for f, h in now.items()), now
    finally:
        traffic.close()
    return delays


def test_follow_moves_buckets_off_ports_that_go_and_back_when_they_return(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p2", "p1")  # pins exist before follow starts
    follow = topo.start(pin_dir, "follow")
    try:
        assert "following link events" in follow.stdout.readline()
        delays = _down_up_delete_recreate(topo, pin_dir, lambda: None)
        # p2 -> p1 went with the old p1 (the kernel purged it); follow wrote it again.
        with UdpSink(topo.host(1), port=9600) as sink:
            send_udp(topo.host(2), topo.host(1).ip, 20, port=9600)
            assert sink.count(20) == 20
    finally:
        follow.terminate()
        out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    for what, delay in delays.items():
        assert delay <= 2.0, (what, delays, out)
    assert "p1: 85 buckets from p3 (down) to p2" in out or "from p3 (down)" in out, out
    assert "from p4 (gone)" in out, out
    lines = out.splitlines()
    assert not [line for line in lines if "error" in line], out


def test_a_balanced_entry_whose_ports_are_all_down_or_gone_says_so(make_topo, pin_dir):
    topo = make_topo(3)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "p3")

    def state() -> str:
        (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p1"]
        return row["state"]

    def missed() -> int:
        stats = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
        (p1,) = [p for p in stats["ports"] if p["port"]["ifname"] == "p1"]
        return p1["not_forwarded"]["miss"]

    sh("ip", "-n", topo.fwd, "link", "set", "p2", "down")  # its buckets' frames are dropped
    (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p1"]
    assert [p.split(":")[0] for p in row["problems"]] == ["p2 is down"]
    for port in ("p2", "p3"):
        sh("ip", "-n", topo.fwd, "link", "set", port, "down")
    topo.ok(pin_dir, "prune")
    assert state() == "egress down"
    before = missed()
    send_udp(topo.host(1), topo.host(2).ip, 10)
    assert missed() == before + 10  # no bucket left: every frame misses
    for port in ("p2", "p3"):
        sh("ip", "-n", topo.fwd, "link", "set", port, "up")
    topo.ok(pin_dir, "prune")
    assert state() == "ok"

    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    assert state() == "ok"  # p3 takes its flows once prune moves the buckets
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    topo.ok(pin_dir, "prune")
    assert state() == "egress gone"  # every frame misses
    for h in topo.hosts[1:]:
        topo.plug(h)
    topo.ok(pin_dir, "prune")
    assert state() == "ok"


def test_prune_does_it_once_without_follow(make_topo, pin_dir):
    topo = make_topo(4)
    delays = _down_up_delete_recreate(topo, pin_dir, lambda: topo.ok(pin_dir, "prune"))
    assert all(delay <= 2.0 for delay in delays.values()), delays


@pytest.mark.parametrize("how", ["kill", "down"])
def test_follow_survives_restarts_and_down(make_topo, pin_dir, how):
    """Nothing is held only in follow's memory: a new one picks up where it was, and
    a `down` under its feet leaves it running (and doing nothing)."""
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p2", "p3", "p4")
    sh("ip", "-n", topo.fwd, "link", "set", "p3", "down")
    first = topo.start(pin_dir, "follow")
    try:
        first.stdout.readline()
        line = first.stdout.readline()
        assert "from p3 (down)" in line, line
        if how == "down":
            topo.ok(pin_dir, "down")
            sh("ip", "-n", topo.fwd, "link", "set", "p3", "up")
            time.sleep(1)
            assert first.poll() is None
            assert topo.list_json(pin_dir)["entries"] == []
            topo.ok(pin_dir, "add", "p1", "p2", "p3", "p4")
            sh("ip", "-n", topo.fwd, "link", "set", "p2", "down")
            time.sleep(1)
        else:
            first.kill()
            first.wait(timeout=10)
            sh("ip", "-n", topo.fwd, "link", "set", "p3", "up")
            second = topo.start(pin_dir, "follow")
            try:
                second.stdout.readline()
                assert "to p3" in second.stdout.readline()
            finally:
                second.terminate()
                second.communicate(timeout=30)
    finally:
        first.terminate()
        out, _ = first.communicate(timeout=30)
    ports = {p["name"]: p for p in topo.list_json(pin_dir)["entries"][0]["balance"]["ports"]}
    if how == "down":
        assert "from p2 (down)" in out, out
        assert ports["p2"]["buckets"] == 0 and ports["p3"]["buckets"] > 0
    else:
        assert [ports[p]["buckets"] for p in ("p2", "p3", "p4")] == [86, 85, 85]


def test_save_apply_and_fewest_moves_when_ports_change(make_topo, pin_dir, tmp_path):
    topo = make_topo(5)
    topo.ok(pin_dir, "add", "p1", "p2", "p3", "p4", "--hash", "l4", "--no-egress")
    saved = tmp_path / "saved.yaml"
    topo.ok(pin_dir, "save", "--output", str(saved))
    text = saved.read_text()
    assert "to: [p2, p3, p4]" in text and "hash: l4" in text and "egress: none" in text
    topo.ok(pin_dir, "down")
    topo.ok(pin_dir, "apply", str(saved))
    assert topo.ok(pin_dir, "apply", str(saved)).stdout == "nothing to change\n"

    def layout():
        ports = topo.list_json(pin_dir)["entries"][0]["balance"]["ports"]
        return {p["name"]: p["buckets"] for p in ports}

    assert layout() == {"p2": 86, "p3": 85, "p4": 85}
    # A fourth port takes 64 buckets, 21 or 22 from each of the others, nothing else.
    result = topo.ok(pin_dir, "add", "p1", "p2", "p3", "p4", "p5", "--hash", "l4", "--no-egress")
    assert "p2 64, p3 64, p4 64, p5 64" in result.stdout
    doc = {"forward": [{"from": "p1", "to": ["p2", "p5"], "weights": [3, 1], "egress": "none"}]}
    applied = topo.ok(pin_dir, "apply", topo.config_file(doc)).stdout
    assert "hash symmetric" in applied and "from p3 to p2" in applied, applied
    assert layout() == {"p2": 192, "p5": 64}


def test_rewrite_applies_to_each_egress_port_and_survives_conversions(make_topo, pin_dir):
    """--src-mac/--dst-mac on a balanced entry rewrite on every egress port; turning a
    single entry into a balanced one and back keeps each one's rewrite."""
    topo = make_topo(4)
    topo.static_arp()
    router, other = "02:00:5e:00:53:01", "02:00:5e:00:53:02"
    rewrite = ("--src-mac", "egress", "--dst-mac")
    topo.ok(pin_dir, "add", "p1", "p2", *rewrite, other)
    topo.ok(pin_dir, "add", "p1", "p2", "p3", "p4", *rewrite, router)
    macs = {
        i: json.loads(sh("ip", "-n", topo.fwd, "-j", "link", "show", f"p{i}").stdout)[0]["address"]
        for i in (2, 3, 4)
    }

    def frames_by_host():
        seen = collections.defaultdict(set)
        with ExitStack() as stack:
            flows = Flows(topo.host(1), topo.host(2).ip, range(23000, 23100))
            stack.callback(flows.close)
            counters = {i: FrameCounter(topo.host(i).ns, "h0") for i in (2, 3, 4)}
            for counter in counters.values():
                stack.callback(counter.close)
            sender = threading.Thread(target=lambda: (time.sleep(0.2), flows.send(1)))
            sender.start()
            for i, counter in counters.items():
                for frame in counter.frames(timeout=0.8, udp_port=DPORT):
                    seen[i].add((frame[0:6].hex(":"), frame[6:12].hex(":")))
            sender.join()
        return seen

    seen = frames_by_host()
    assert set(seen) == {2, 3, 4}
    for i, addresses in seen.items():
        assert addresses == {(router, macs[i])}, (i, addresses)
    (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p1"]
    assert {p["name"]: p["rewrite"] for p in row["balance"]["ports"]} == {
        f"p{i}": {"src_mac": macs[i], "dst_mac": router} for i in (2, 3, 4)
    }
    topo.ok(pin_dir, "add", "p1", "p3", *rewrite, other)
    seen = frames_by_host()
    assert set(seen) == {3} and seen[3] == {(other, macs[3])}, seen


def test_a_balanced_port_kept_for_its_verdict_stays_attached_while_it_is_down(make_topo, pin_dir):
    topo = make_topo(3)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p2", "p1", "--on-miss", "drop")
    topo.ok(pin_dir, "add", "p1", "p2", "p3")
    topo.ok(pin_dir, "del", "p2")  # p2 stays attached: p1's entry sends to it
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "down")
    pruned = topo.ok(pin_dir, "prune")  # p1's buckets leave p2, which keeps its verdict
    assert "detached" not in pruned.stdout, pruned.stdout
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "up")
    topo.ok(pin_dir, "prune")
    assert topo.xdp("p2") is not None
    (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p2"]
    assert row["on_miss"] == "drop"
    assert "p2: {on_miss: drop}" in topo.ok(pin_dir, "save").stdout

    def missed() -> int:
        stats = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
        (p2,) = [p for p in stats["ports"] if p["port"]["ifname"] == "p2"]
        return p2["not_forwarded"]["miss"]

    before = missed()
    with UdpSink(topo.host(1)) as sink:
        send_udp(topo.host(2), topo.host(1).ip, 10)  # enters p2: dropped, as asked
        assert sink.count(10, timeout=0.5) == 0
    assert missed() == before + 10
