"""Jumbo frames: multi-buffer programs attach natively at MTU 9000 and forward 8000-byte
frames; a broadcast group counts the multi-buffer frames it cannot flood, and so does a
multicast group those it cannot copy; a pin dir of single-buffer programs keeps working
and says what to do."""

import json
import os
import socket
import struct
import time
from contextlib import ExitStack

import pytest

from xdpfwd.kernel.bpf import syscall as sc

from .net import FrameCounter, UdpSink, in_netns, send_udp, sh, udp_frame_len

JUMBO = 8000 - udp_frame_len(0)  # UDP payload of an 8000-byte frame
SMALL = 1400 - udp_frame_len(0)


def stats(topo, pin_dir) -> dict:
    return json.loads(topo.ok(pin_dir, "stats", "--json").stdout)


def port_stats(data, name) -> dict:
    return next(p for p in data["ports"] if p["port"]["ifname"] == name)


@pytest.fixture
def jumbo_topo(make_topo):
    def make(nports: int):
        topo = make_topo(nports)
        topo.set_mtu(9000)
        topo.static_arp()
        return topo

    return make


def test_jumbo_frames_forward_natively_both_ways(jumbo_topo, pin_dir):
    topo = jumbo_topo(2)
    h1, h2 = topo.hosts
    result = topo.ok(pin_dir, "add", "p1", "p2", "-b")
    assert "native XDP refused" not in result.stderr
    assert {topo.xdp(p)["mode"] for p in ("p1", "p2")} == {1}  # XDP_ATTACHED_DRV
    for src, dst in ((h1, h2), (h2, h1)):
        with UdpSink(dst) as sink:
            send_udp(src, dst.ip, 50, payload=JUMBO)
            assert sink.count(50) == 50
    data = stats(topo, pin_dir)
    p1 = port_stats(data, "p1")
    # Byte counters count the whole frame, not only its first buffer.
    assert p1["redirect_packets"] == 50 and p1["rx_bytes"] == 50 * 8000
    pair = next(p for p in data["pairs"] if p["ingress"]["ifname"] == "p1")
    assert pair["tx_bytes"] == 50 * 8000 and p1["forwarded_packets"] == 50
    assert data["not_forwarded"] == dict.fromkeys(data["not_forwarded"], 0)
    assert topo.list_json(pin_dir)["multi_buffer"] is True


def test_doctor_names_a_veth_peer_whose_mtu_drops_what_is_forwarded_to_it(jumbo_topo, pin_dir):
    topo = jumbo_topo(2)
    h1, h2 = topo.hosts
    sh("ip", "-n", h2.ns, "link", "set", h2.dev, "mtu", "1500")  # p2 itself stays at 9000
    topo.ok(pin_dir, "add", "p1", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 10, payload=JUMBO)
        assert sink.count(10, timeout=1) == 0
    assert stats(topo, pin_dir)["not_forwarded"]["xmit_drop"] == 10
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["id"] == "mtu"]
    assert f"p2's veth peer {h2.dev} has MTU 1500, below p1's 9000" in check["detail"]
    sh("ip", "netns", "exec", topo.fwd, "sh", "-c", check["fix"])  # run as printed
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 10, payload=JUMBO)
        assert sink.count(10) == 10


def test_doctors_mtu_fix_for_a_group_lowers_the_member_it_cannot_flood_from(make_topo, pin_dir):
    topo = make_topo(2)
    topo.set_mtu(9000, hosts=[1])
    topo.ok(pin_dir, "broadcast", "p1", "p2", "--exclude-ingress")
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["id"] == "mtu"]
    assert check["fix"].endswith("ip link set dev p1 mtu 1500")  # not p2 up to 9000
    sh("ip", "netns", "exec", topo.fwd, "sh", "-c", check["fix"])  # run as printed
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--json").stdout)
    assert not [c for c in doctor["checks"] if c["id"] in ("mtu", "too_big_to_flood")], doctor


def test_mac_rewrite_of_jumbo_frames(jumbo_topo, pin_dir):
    topo = jumbo_topo(2)
    h1, h2 = topo.hosts
    # h1 sends to a MAC nobody has; the entry's rewrite restores h2's.
    neigh = ("lladdr", "02:00:00:00:00:99", "dev", h1.dev, "nud", "permanent")
    sh("ip", "-n", h1.ns, "neigh", "replace", h2.ip, *neigh)
    topo.ok(pin_dir, "add", "p1", "p2", "--dst-mac", h2.mac)
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 30, payload=JUMBO)
        assert sink.count(30) == 30


def flood(topo, count: int, payload: int, port: int) -> dict[int, int]:
    """Frames each host saw of count datagrams host 1 sent to an address nobody has."""
    with ExitStack() as stack:
        counters = {h.index: stack.enter_context(FrameCounter(h.ns, h.dev)) for h in topo.hosts}
        send_udp(topo.host(1), "10.77.0.200", count, payload=payload, port=port)
        return {i: len(c.frames(udp_port=port)) for i, c in counters.items()}


def test_broadcast_counts_frames_too_big_to_flood(jumbo_topo, pin_dir, tmp_path):
    topo = jumbo_topo(3)
    neigh = ("lladdr", "02:00:00:00:00:c8", "dev", "h0", "nud", "permanent")
    sh("ip", "-n", topo.host(1).ns, "neigh", "replace", "10.77.0.200", *neigh)
    result = topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "--exclude-ingress")
    warnings = [line for line in result.stderr.splitlines() if "too big to flood" in line]
    assert len(warnings) == 3 and "p1 has MTU 9000" in result.stderr
    seen = flood(topo, 40, JUMBO, port=9310)
    assert (seen[2], seen[3]) == (0, 0)
    seen = flood(topo, 40, SMALL, port=9311)
    assert (seen[2], seen[3]) == (40, 40)  # frames in one buffer still flood
    data = stats(topo, pin_dir)
    p1 = port_stats(data, "p1")
    assert p1["too_big_packets"] == 40 and p1["too_big_bytes"] == 40 * 8000
    assert p1["not_forwarded"]["too_big"] == 40 and data["not_forwarded"]["too_big"] == 40
    # Dropped by the program: no redirect was tried, so none failed.
    assert data["not_forwarded"]["redirect_error"] == 0
    assert p1["rx_packets"] == p1["redirect_packets"] + p1["too_big_packets"]
    out = tmp_path / "x.prom"
    topo.ok(pin_dir, "stats", "--format", "prometheus", "--output", str(out))
    assert 'xdpfwd_not_forwarded_packets_total{reason="too_big"} 40' in out.read_text()
    table = topo.ok(pin_dir, "stats").stdout
    assert "too big to flood 40" in table
    doctor = topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--json")
    checks = json.loads(doctor.stdout)["checks"]
    too_big = {c["port"]["ifname"]: c for c in checks if c["id"] == "too_big_to_flood"}
    assert set(too_big) == {"p1", "p2", "p3"}
    assert too_big["p2"]["status"] == "warn" and "too big to flood" in too_big["p2"]["detail"]
    # list --json carries it with the member's other problems.
    rows = {r["ingress"]["ifname"]: r for r in topo.list_json(pin_dir)["entries"]}
    assert any("too big to flood" in line for line in rows["p2"]["problems"])
    # apply warns as broadcast does.
    saved = str(tmp_path / "saved.yaml")
    topo.ok(pin_dir, "save", "--output", saved)
    topo.ok(pin_dir, "down")
    applied = topo.ok(pin_dir, "apply", saved)
    assert applied.stderr.count("too big to flood") == 3


def send_to_group(host, group: str, count: int, payload: int, port: int) -> None:
    with in_netns(host.ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host.ip))
        for i in range(count):
            sock.sendto(struct.pack("!I", i) + bytes(payload - 4), (group, port))
            if i % 64 == 63:
                time.sleep(0.002)


def test_multicast_counts_frames_too_big_to_copy(jumbo_topo, pin_dir):
    topo = jumbo_topo(3)
    result = topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    # Only the source lets in frames the group cannot copy.
    warnings = [line for line in result.stderr.splitlines() if "too big to flood" in line]
    assert len(warnings) == 1 and "p1 has MTU 9000" in warnings[0]

    def seen(payload: int, port: int) -> dict[int, int]:
        with ExitStack() as stack:
            hosts = topo.hosts[1:]
            counters = {h.index: stack.enter_context(FrameCounter(h.ns, h.dev)) for h in hosts}
            send_to_group(topo.host(1), "239.1.1.1", 40, payload, port)
            return {i: len(c.frames(udp_port=port)) for i, c in counters.items()}

    assert seen(JUMBO, 9320) == {2: 0, 3: 0}
    assert seen(SMALL, 9321) == {2: 40, 3: 40}  # frames in one buffer are still copied
    data = stats(topo, pin_dir)
    p1 = port_stats(data, "p1")
    assert p1["too_big_packets"] == 40 and p1["too_big_bytes"] == 40 * 8000
    assert p1["not_forwarded"]["too_big"] == 40
    assert data["not_forwarded"]["redirect_error"] == 0
    assert p1["rx_packets"] == p1["redirect_packets"] + p1["too_big_packets"]
    (group,) = data["multicast"]
    # Into the group: only the frames it copied; each copy counted whole.
    assert (group["in_packets"], group["copies_out"], group["copies_lost"]) == (40, 80, 0)
    assert {r["tx_bytes"] for r in group["receivers"]} == {40 * 1400}
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--json").stdout)
    too_big = [c["port"]["ifname"] for c in doctor["checks"] if c["id"] == "too_big_to_flood"]
    assert too_big == ["p1"]


def make_single_buffer_pin_dir(pin_dir: str) -> None:
    """A pin dir whose programs are single-buffer, as an older xdpfwd made them: its
    recorded prog_flags say 0 before the first add compiles, and go afterwards."""
    os.makedirs(pin_dir, mode=0o700)
    fd = sc.map_create(sc.MAP_TYPE_ARRAY, 4, 4, 1, "xdpfwd_flags")
    try:
        sc.map_update(fd, struct.pack("=I", 0), struct.pack("=I", 0))
        sc.obj_pin(fd, os.path.join(pin_dir, "prog_flags"))
    finally:
        os.close(fd)


def test_a_single_buffer_pin_dir_keeps_working_and_says_what_to_do(make_topo, pin_dir):
    topo = make_topo(3)
    make_single_buffer_pin_dir(pin_dir)
    topo.ok(pin_dir, "add", "p1", "p2")  # MTU 1500: native, as before
    os.unlink(os.path.join(pin_dir, "prog_flags"))
    assert topo.xdp("p1")["mode"] == 1
    assert topo.list_json(pin_dir)["multi_buffer"] is False
    # (The kernel would refuse a larger MTU on p1's peer: p1 runs it natively.)
    topo.set_mtu(9000, hosts=[2, 3])
    topo.static_arp()
    refused = topo.xdpfwd(pin_dir, "add", "p2", "p3", "--mode", "native")
    assert refused.returncode == 3
    down = f"xdpfwd --pin-dir {pin_dir} down"
    assert "without multi-buffer support" in refused.stderr and down in refused.stderr
    # auto falls back to generic, and says why.
    result = topo.ok(pin_dir, "add", "p3", "p2")
    assert "p3: native XDP refused" in result.stderr and "using generic mode" in result.stderr
    assert down in result.stderr
    assert topo.xdp("p3")["mode"] == 2
    with UdpSink(topo.host(2)) as sink:
        send_udp(topo.host(3), topo.host(2).ip, 20, payload=JUMBO)
        assert sink.count(20) == 20
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--no-compile", "--json").stdout)
    check = next(c for c in doctor["checks"] if c["id"] == "multi_buffer")
    assert check["status"] == "warn" and "older xdpfwd" in check["detail"]
    # Its user egress programs are single-buffer too, or the devmap would refuse them.
    program = os.path.join(os.path.dirname(pin_dir), "..", "mine.c")
    with open(program, "w") as f:
        f.write("int keep(struct xdp_md *ctx) { return XDP_PASS; }\n")
    topo.ok(pin_dir, "add", "p1", "p3", "--egress-prog", program)


def test_auto_mode_says_why_it_chose_generic(topo, pin_dir):
    # A bridge has no native XDP: auto falls back, and says so.
    sh("ip", "-n", topo.fwd, "link", "add", "xbr0", "type", "bridge")
    sh("ip", "-n", topo.fwd, "link", "set", "xbr0", "up")
    result = topo.ok(pin_dir, "add", "xbr0", "p1")
    line = next(x for x in result.stderr.splitlines() if "native XDP refused" in x)
    assert line.startswith("warning: xbr0: native XDP refused (") and "generic" in line
    assert "xbr0: attached (generic mode)" in result.stdout
    # Made again, it is attached by prune the same way, which says so too.
    sh("ip", "-n", topo.fwd, "link", "del", "xbr0")
    sh("ip", "-n", topo.fwd, "link", "add", "xbr0", "type", "bridge")
    sh("ip", "-n", topo.fwd, "link", "set", "xbr0", "up")
    pruned = topo.ok(pin_dir, "prune")
    assert "attach to xbr0 (auto)" in pruned.stdout
    assert "warning: xbr0: native XDP refused (" in pruned.stderr, pruned.stderr
    assert topo.xdp("xbr0")["mode"] == 2
