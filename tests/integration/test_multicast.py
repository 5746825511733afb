"""Multicast groups: frames replicated by destination address (IPv4, IPv6, MAC) from
source ports to receivers, counted with packet sockets on every host; unicast and
ungrouped multicast taking the port's usual path; counters, save/apply, doctor."""

import json
import os
import socket
import struct
import threading
import time
from contextlib import ExitStack

import pytest

from .net import (
    FrameCounter,
    UdpSink,
    assert_fails,
    doctor_check,
    in_netns,
    pins_left,
    run_fix,
    send_udp,
    sh,
    snapshot,
)

NO_BCC = {"PYTHONPATH": os.path.join(os.path.dirname(__file__), "no_bcc")}
ETH_P_EXPERIMENTAL = 0x88B5


def _mac_of_ipv4(group: str) -> bytes:
    low = socket.inet_aton(group)[1:]
    return bytes([0x01, 0x00, 0x5E, low[0] & 0x7F, low[1], low[2]])


def classify(frame: bytes) -> tuple | None:
    """What a test frame was sent to: ('udp', port) for UDP over IPv4 or IPv6,
    ('raw', destination MAC) for the experimental ethertype; None for anything else."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800 and len(frame) >= 42 and frame[23] == 17:
        ihl = (frame[14] & 0x0F) * 4
        return ("udp", struct.unpack_from("!H", frame, 14 + ihl + 2)[0])
    if ethertype == 0x86DD and len(frame) >= 62 and frame[20] == 17:
        return ("udp", struct.unpack_from("!H", frame, 14 + 40 + 2)[0])
    if ethertype == ETH_P_EXPERIMENTAL:
        return ("raw", frame[:6].hex(":"))
    return None


def exchange(topo, send) -> dict[int, dict]:
    """Run send() with a packet socket on every host; return, per host index, how many
    test frames of each kind (classify) arrived."""
    with ExitStack() as stack:
        counters = {h.index: stack.enter_context(FrameCounter(h.ns, h.dev)) for h in topo.hosts}
        send()
        seen = {}
        for n, (index, counter) in enumerate(counters.items()):
            kinds: dict = {}
            for frame in counter.frames(timeout=1.0 if n == 0 else 0.2):
                kind = classify(frame)
                if kind is not None:
                    kinds[kind] = kinds.get(kind, 0) + 1
            seen[index] = kinds
        return seen


def send_mcast(host, group: str, count: int, port: int) -> None:
    """count UDP datagrams to an IPv4 or IPv6 group, out of the host's veth end."""
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    with in_netns(host.ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        ifindex = socket.if_nametoindex(host.dev)
    with sock:
        if family == socket.AF_INET:
            mreqn = struct.pack("=4s4si", b"\0" * 4, socket.inet_aton(host.ip), ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        for i in range(count):
            sock.sendto(struct.pack("!I", i) + bytes(60), (group, port))
            if i % 64 == 63:
                time.sleep(0.002)


def send_raw(host, dst_mac: str, count: int) -> None:
    """count frames of an experimental ethertype to dst_mac, from the host's veth end."""
    with in_netns(host.ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sock:
        sock.bind((host.dev, 0))
        header = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(host.mac.replace(":", ""))
        for i in range(count):
            sock.send(header + struct.pack("!HI", ETH_P_EXPERIMENTAL, i) + bytes(50))


def enable_ipv6(host, address: str) -> None:
    """IPv6 on one host (the topology turns it off), with an address usable at once."""
    sh(
        "ip",
        "netns",
        "exec",
        host.ns,
        "sysctl",
        "-qw",
        f"net.ipv6.conf.{host.dev}.disable_ipv6=0",
    )
    sh("ip", "-n", host.ns, "addr", "add", address, "dev", host.dev, "nodad")


def stats_json(topo, pin_dir) -> dict:
    return json.loads(topo.ok(pin_dir, "stats", "--json").stdout)


def port_counters(stats: dict, ifname: str) -> dict:
    return next(p for p in stats["ports"] if p["port"]["ifname"] == ifname)


def groups_by_address(data: dict) -> dict[str, dict]:
    return {g["group"]: g for g in data["multicast"]}


def assert_group_counts(group: dict, frames: int, copies: dict[str, int]) -> None:
    assert group["in_packets"] == frames, group
    received = {r["port"]["ifname"]: r["tx_packets"] for r in group["receivers"]}
    assert received == copies, group
    assert group["copies_out"] == sum(copies.values()) == group["copies_expected"]
    assert group["copies_lost"] == 0


@pytest.mark.parametrize("setup", ["cli", "apply"])
def test_ipv4_groups_reach_their_receivers_only(make_topo, pin_dir, setup):
    topo = make_topo(5)
    if setup == "cli":
        topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
        topo.ok(pin_dir, "multicast", "add", "239.2.2.2", "--from", "p1", "--to", "p5")
    else:
        doc = {
            "ports": {"p1": {"on_miss": "drop"}},
            "multicast": [
                {"group": "239.1.1.1", "from": ["p1"], "to": ["p2", "p3"]},
                {"group": "239.2.2.2", "from": ["p1"], "to": ["p5"]},
            ],
        }
        topo.ok(pin_dir, "apply", topo.config_file(doc))

    def send():
        for group, port in (("239.1.1.1", 9401), ("239.2.2.2", 9402), ("239.3.3.3", 9403)):
            send_mcast(topo.host(1), group, 50, port)

    seen = exchange(topo, send)
    assert seen == {
        1: {},
        2: {("udp", 9401): 50},
        3: {("udp", 9401): 50},
        4: {},
        5: {("udp", 9402): 50},
    }
    data = stats_json(topo, pin_dir)
    groups = groups_by_address(data)
    assert set(groups) == {"239.1.1.1", "239.2.2.2"}
    assert_group_counts(groups["239.1.1.1"], 50, {"p2": 50, "p3": 50})
    assert_group_counts(groups["239.2.2.2"], 50, {"p5": 50})
    assert groups["239.1.1.1"]["in_bytes"] == 50 * (14 + 20 + 8 + 64)
    # 239.3.3.3 has no group: p1's on-miss verdict took it (pass, or drop as applied).
    p1 = port_counters(data, "p1")
    verdict = "pass_packets" if setup == "cli" else "drop_packets"
    assert (p1["redirect_packets"], p1["miss_packets"], p1[verdict]) == (100, 50, 50)
    # What xdpfwd sent out of each receiver includes its copies.
    assert port_counters(data, "p2")["tx_packets"] == 50
    # The receivers need no program: only the source runs xdpfwd.
    assert topo.xdp("p1") is not None and topo.xdp("p2") is None
    topo.ok(pin_dir, "stats", "--clear")
    cleared = groups_by_address(stats_json(topo, pin_dir))["239.1.1.1"]
    assert (cleared["in_packets"], cleared["copies_expected"], cleared["copies_out"]) == (0, 0, 0)


def test_ipv6_groups_reach_their_receivers_only(make_topo, pin_dir):
    topo = make_topo(5)
    enable_ipv6(topo.host(1), "fd77::1/64")
    topo.ok(pin_dir, "multicast", "add", "ff3e::1:1", "--from", "p1", "--to", "p2", "p3")
    topo.ok(pin_dir, "multicast", "add", "ff3e::2:2", "--from", "p1", "--to", "p5")

    def send():
        for group, port in (("ff3e::1:1", 9411), ("ff3e::2:2", 9412), ("ff3e::3:3", 9413)):
            send_mcast(topo.host(1), group, 50, port)

    seen = exchange(topo, send)
    udp = {host: {k: n for k, n in kinds.items() if k[0] == "udp"} for host, kinds in seen.items()}
    assert udp == {
        1: {},
        2: {("udp", 9411): 50},
        3: {("udp", 9411): 50},
        4: {},
        5: {("udp", 9412): 50},
    }
    groups = groups_by_address(stats_json(topo, pin_dir))
    assert_group_counts(groups["ff3e::1:1"], 50, {"p2": 50, "p3": 50})
    assert_group_counts(groups["ff3e::2:2"], 50, {"p5": 50})
    assert groups["ff3e::1:1"]["kind"] == "ipv6"


def test_mac_groups_match_any_frame_to_their_address(make_topo, pin_dir):
    topo = make_topo(5)
    # IP frames to 224.0.0.251 have no IP group, so the MAC group takes them.
    topo.ok(pin_dir, "multicast", "add", "01:00:5E:00:00:FB", "--from", "p1", "--to", "p2", "p3")
    topo.ok(pin_dir, "multicast", "add", "03:00:00:00:00:02", "--from", "p1", "--to", "p5")

    def send():
        send_mcast(topo.host(1), "224.0.0.251", 50, 9421)
        send_raw(topo.host(1), "03:00:00:00:00:02", 50)
        send_raw(topo.host(1), "03:00:00:00:00:03", 50)  # no group

    seen = exchange(topo, send)
    assert seen == {
        1: {},
        2: {("udp", 9421): 50},
        3: {("udp", 9421): 50},
        4: {},
        5: {("raw", "03:00:00:00:00:02"): 50},
    }
    listing = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)
    groups = groups_by_address(listing | {"multicast": listing["groups"]})
    assert set(groups) == {"01:00:5e:00:00:fb", "03:00:00:00:00:02"}
    assert_group_counts(groups["01:00:5e:00:00:fb"], 50, {"p2": 50, "p3": 50})
    assert_group_counts(groups["03:00:00:00:00:02"], 50, {"p5": 50})


def send_interleaved(host, groups: dict[str, int], count: int) -> None:
    """count datagrams to each group, one group after another."""
    with in_netns(host.ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ifindex = socket.if_nametoindex(host.dev)
    with sock:
        mreqn = struct.pack("=4s4si", b"\0" * 4, socket.inet_aton(host.ip), ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        for i in range(count):
            for group, port in groups.items():
                sock.sendto(struct.pack("!I", i) + bytes(60), (group, port))
            if i % 32 == 31:
                time.sleep(0.002)


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_copies_are_counted_on_their_own_group_in_either_mode(make_topo, pin_dir, mode):
    """Native XDP tags each copy with its group in the frame's metadata; generic XDP
    hands egress programs no metadata, and they take the group from a per-CPU slot."""
    topo = make_topo(4)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "-m", mode)
    topo.ok(pin_dir, "multicast", "add", "239.2.2.2", "--from", "p1", "--to", "p3", "p4")
    assert topo.xdp("p1")["mode"] == (1 if mode == "native" else 2)
    groups = {"239.1.1.1": 9501, "239.2.2.2": 9502}
    seen = exchange(topo, lambda: send_interleaved(topo.host(1), groups, 100))
    assert seen == {
        1: {},
        2: {("udp", 9501): 100},
        3: {("udp", 9502): 100},
        4: {("udp", 9502): 100},
    }
    counted = groups_by_address(stats_json(topo, pin_dir))
    assert_group_counts(counted["239.1.1.1"], 100, {"p2": 100})
    assert_group_counts(counted["239.2.2.2"], 100, {"p3": 100, "p4": 100})


def test_plain_ifindex_tables_replicate_without_counting_copies(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p4", "p1", "--value", "ifindex")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 20, 9510))
    assert seen == {1: {}, 2: {("udp", 9510): 20}, 3: {("udp", 9510): 20}, 4: {}}
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    assert group["in_packets"] == 20
    assert group["copies_out"] is None and group["copies_lost"] is None
    assert [r["tx_packets"] for r in group["receivers"]] == [None, None]


def test_ip_groups_that_share_a_mac_stay_apart(make_topo, pin_dir):
    topo = make_topo(3)
    assert _mac_of_ipv4("239.1.1.1") == _mac_of_ipv4("239.129.1.1")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    topo.ok(pin_dir, "multicast", "add", "239.129.1.1", "--from", "p1", "--to", "p3")

    def send():
        send_mcast(topo.host(1), "239.1.1.1", 30, 9431)
        send_mcast(topo.host(1), "239.129.1.1", 30, 9432)

    seen = exchange(topo, send)
    assert seen == {1: {}, 2: {("udp", 9431): 30}, 3: {("udp", 9432): 30}}


@pytest.mark.parametrize("table", ["devmap-hash", "devmap"])
def test_a_bus_with_exclude_ingress_sends_nothing_back(make_topo, pin_dir, table):
    topo = make_topo(3)
    topo.ok(
        pin_dir,
        "multicast",
        "add",
        "239.5.5.5",
        "--to",
        "p1",
        "p2",
        "p3",
        "--exclude-ingress",
        "--table",
        table,
    )

    def send():
        for host in topo.hosts:
            send_mcast(host, "239.5.5.5", 20, 9440 + host.index)

    seen = exchange(topo, send)
    for host in topo.hosts:
        others = {("udp", 9440 + h.index): 20 for h in topo.hosts if h is not host}
        assert seen[host.index] == others
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    assert group["exclude_ingress"] is True
    assert [s["ifname"] for s in group["sources"]] == ["p1", "p2", "p3"]
    assert_group_counts(group, 60, {"p1": 40, "p2": 40, "p3": 40})


def test_include_ingress_sends_a_copy_back(make_topo, pin_dir):
    topo = make_topo(2)
    topo.ok(pin_dir, "multicast", "add", "239.6.6.6", "--to", "p1", "p2", "--include-ingress")
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.6.6.6", 10, 9450))
    assert seen == {1: {("udp", 9450): 10}, 2: {("udp", 9450): 10}}


def test_unicast_keeps_its_entry_while_the_port_is_a_multicast_source(make_topo, pin_dir):
    topo = make_topo(3)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3")
    with UdpSink(topo.host(2), 9460) as sink:
        send_udp(topo.host(1), topo.host(2).ip, 40, port=9460)
        assert sink.count(40) == 40

    def send():
        send_mcast(topo.host(1), "239.1.1.1", 30, 9461)
        send_mcast(topo.host(1), "239.3.3.3", 30, 9462)  # no group: p1's entry takes it

    seen = exchange(topo, send)
    assert seen == {1: {}, 2: {("udp", 9462): 30}, 3: {("udp", 9461): 30}}
    (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p1"]
    assert row["egress"]["ifname"] == "p2" and row["multicast"] == ["239.1.1.1"]
    # The entry has no egress program: its count is p1's redirects less its multicast.
    data = stats_json(topo, pin_dir)
    (pair,) = [p for p in data["pairs"] if p["ingress"]["ifname"] == "p1"]
    (group,) = data["multicast"]
    redirected = port_counters(data, "p1")["redirect_packets"]
    assert pair["counted_by"] == "ingress" and group["in_packets"] == 30
    assert pair["tx_packets"] == redirected - 30 >= 70  # 40 + 30 (and stray frames)
    assert row["egress_counters"]["tx_packets"] >= 70
    assert port_counters(data, "p3")["tx_packets"] == 30
    # Without its entry, p1 stays attached: it is still a source.
    topo.ok(pin_dir, "del", "p1")
    assert topo.xdp("p1") is not None
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 10, 9463))
    assert seen == {1: {}, 2: {}, 3: {("udp", 9463): 10}}


def test_changing_members_compiles_nothing_and_loses_no_frame(make_topo, pin_dir):
    topo = make_topo(5)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    topo.ok(pin_dir, "multicast", "add", "239.2.2.2", "--from", "p1", "--to", "p3")
    prog_id = topo.xdp("p1")["prog"]["id"]
    total, stop = 3000, threading.Event()

    def sender():
        try:
            for _ in range(total // 100):
                send_mcast(topo.host(1), "239.1.1.1", 100, 9470)
                time.sleep(0.02)
        finally:
            stop.set()

    with UdpSinkOnGroup(topo.host(2), 9470) as sink:
        thread = threading.Thread(target=sender)
        thread.start()
        changes = 0
        while not stop.is_set():
            # The other group changes, and this group grows and shrinks, meanwhile.
            for args in (
                ("add", "239.2.2.2", "--to", "p4", "p5"),
                ("add", "239.1.1.1", "--to", "p4", "p5"),
                ("del", "239.2.2.2", "--to", "p4"),
                ("del", "239.1.1.1", "--to", "p4", "p5"),
                ("add", "239.2.2.2", "--from", "p2"),
                ("del", "239.2.2.2", "--from", "p2"),
            ):
                result = topo.xdpfwd(pin_dir, "multicast", *args, env=NO_BCC)
                assert result.returncode == 0, result.stderr
                changes += 1
        thread.join()
        assert sink.count_until(stop) == total
    assert changes >= 6
    assert topo.xdp("p1")["prog"]["id"] == prog_id
    (group,) = [
        g
        for g in json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
        if g["group"] == "239.1.1.1"
    ]
    assert group["in_packets"] == total
    assert {r["port"]["ifname"]: r["tx_packets"] for r in group["receivers"]} == {"p2": total}


class UdpSinkOnGroup(UdpSink):
    """A UDP socket counting datagrams to any address on a port (the host is no member
    of the group: xdpfwd delivers the frames, the host's stack takes them as its own)."""

    def __init__(self, host, port: int):
        with in_netns(host.ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
            self.sock.bind(("0.0.0.0", port))
            # Take multicast datagrams to any group (IP_MULTICAST_ALL is on by default,
            # but the host must be a member of some group for the stack to keep them).
            mreq = struct.pack("=4s4s", socket.inet_aton("239.1.1.1"), socket.inet_aton(host.ip))
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.sock.setblocking(False)


def test_removing_a_group_and_down(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 10, 9479))
    assert seen == {1: {}, 2: {("udp", 9479): 10}, 3: {("udp", 9479): 10}}
    result = topo.ok(pin_dir, "multicast", "del", "239.1.1.1", "--to", "p3")
    assert "p3 receives 239.1.1.1 no more" in result.stdout
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 10, 9480))
    assert seen == {1: {}, 2: {("udp", 9480): 10}, 3: {}}
    # A former receiver's copies still count: nothing shows as lost.
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    assert (group["in_packets"], group["copies_out"], group["copies_lost"]) == (20, 30, 0)
    assert [r["port"]["ifname"] for r in group["receivers"]] == ["p2"]
    result = topo.ok(pin_dir, "multicast", "del", "239.1.1.1")
    assert "was removed" in result.stdout and "detached from p1" in result.stdout
    assert topo.xdp("p1") is None
    assert json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"] == []
    topo.ok(pin_dir, "multicast", "add", "ff02::fb", "--to", "p1", "p2")
    assert topo.xdp("p2") is not None
    result = topo.ok(pin_dir, "down")
    assert "detached from p1" in result.stdout and "detached from p2" in result.stdout
    assert topo.xdp("p1") is None and topo.xdp("p2") is None
    assert pins_left(pin_dir) == []


def test_save_and_apply_restore_the_groups(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p4")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    topo.ok(pin_dir, "multicast", "add", "ff3e::1:1", "--to", "p2", "p3", "--exclude-ingress")
    saved = topo.ok(pin_dir, "save", "--format", "json").stdout
    doc = json.loads(saved)
    assert doc["multicast"] == [
        {"group": "239.1.1.1", "from": ["p1"], "to": ["p2", "p3"], "exclude_ingress": False},
        {"group": "ff3e::1:1", "to": ["p2", "p3"], "exclude_ingress": True},
    ]
    before = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)
    path = topo.config_file({k: v for k, v in doc.items() if k != "version"})
    topo.ok(pin_dir, "down")
    result = topo.ok(pin_dir, "apply", path)
    assert "create multicast group 239.1.1.1" in result.stdout
    after = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)
    members = lambda data: [  # noqa: E731
        (
            g["group"],
            g["exclude_ingress"],
            g["sources"],
            [r["port"]["ifname"] for r in g["receivers"]],
        )
        for g in data["groups"]
    ]
    assert members(after) == members(before)
    assert topo.ok(pin_dir, "apply", path).stdout.strip() == "nothing to change"
    # A file with a group changed and one gone: apply makes it so.
    doc["multicast"] = [{"group": "239.1.1.1", "from": ["p1"], "to": ["p3"]}]
    result = topo.ok(pin_dir, "apply", topo.config_file({"forward": doc["forward"], **doc}))
    assert "remove multicast group ff3e::1:1" in result.stdout
    assert "change multicast group 239.1.1.1" in result.stdout
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 10, 9490))
    assert seen == {1: {}, 2: {}, 3: {("udp", 9490): 10}, 4: {}}


def test_doctor_and_add_warn_about_a_receiver_that_cannot_take_frames(make_topo, pin_dir):
    topo = make_topo(3, gro=False)
    result = topo.ok(
        pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "--mode", "native"
    )
    assert "warning: p2 cannot take frames redirected to it" in result.stderr
    doctor = topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile")
    assert doctor.returncode == 1
    checks = json.loads(doctor.stdout)["checks"]
    failed = [c for c in checks if c["status"] == "fail"]
    fixes = [c["fix"] for c in failed if "p2 cannot take frames" in c["detail"]]
    assert fixes and all("gro on" in fix for fix in fixes), failed
    assert all(c["port"]["ifname"] == "p2" for c in failed if c["id"] == "receiver_gro")
    # doctor --fix gives the receiver's peer GRO: the warning goes.
    fixed = json.loads(topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile", "--fix").stdout)
    assert any(c["id"] == "receiver_gro" and c["status"] == "fixed" for c in fixed["checks"])
    again = topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--to", "p3", "--mode", "native")
    assert "p2 cannot take frames" not in again.stderr


def test_pins_made_before_multicast_keep_working_and_say_how_to_upgrade(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p1", "p2")
    for name in (
        "mcast_sources",
        "mcast_groups",
        "mcast_stats",
        "mcast_copies",
        "mcast_port_stats",
        "mcast_port_stats_hi",
    ):
        os.unlink(os.path.join(pin_dir, name))  # as a pin dir of an older xdpfwd
    os.unlink(os.path.join(pin_dir, "prog_egress_mcast"))
    assert topo.ok(pin_dir, "list", "--json")
    topo.ok(pin_dir, "add", "p2", "p1")
    before = snapshot(topo, pin_dir)
    line = assert_fails(
        topo.xdpfwd(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3"),
        1,
        "predate multicast groups",
    )
    xdpfwd = f"xdpfwd --pin-dir {pin_dir}"  # a hint without it would act on the default dir
    assert f"{xdpfwd} save -o FILE && {xdpfwd} down && {xdpfwd} apply FILE" in line
    assert snapshot(topo, pin_dir) == before
    assert "predate" in topo.ok(pin_dir, "multicast", "list").stdout
    doctor = json.loads(topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile").stdout)
    (check,) = [c for c in doctor["checks"] if c["id"] == "multicast"]
    assert check["status"] == "warn"
    assert check["fix"] == f"{xdpfwd} save -o FILE && {xdpfwd} down && {xdpfwd} apply FILE"


def test_multicast_errors_change_nothing(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    before = snapshot(topo, pin_dir)
    cases = [
        (["multicast", "add", "10.0.0.1", "--to", "p2"], 2, "not a multicast address"),
        (["multicast", "add", "02:00:00:00:00:01", "--to", "p2"], 2, "unicast MAC"),
        (["multicast", "add", "bogus", "--to", "p2"], 2, "not a multicast group"),
        (["multicast", "add", "239.1.1.1"], 2, "name receivers"),
        (["multicast", "add", "239.1.1.1", "--to", "nope"], 2, "no such interface: nope"),
        (["multicast", "add", "239.9.9.9", "--from", "p1"], 1, "name its receivers"),
        (["multicast", "del", "239.9.9.9"], 1, "no multicast group 239.9.9.9"),
        (["multicast", "del", "239.1.1.1", "--to", "p3"], 1, "p3 is not a receiver"),
        (["multicast", "del", "239.1.1.1", "--from", "p2"], 1, "p2 is not a source"),
    ]
    for args, code, needle in cases:
        assert_fails(topo.xdpfwd(pin_dir, *args), code, needle)
    assert snapshot(topo, pin_dir) == before


def test_deleted_devices_leave_their_groups(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    topo.ok(pin_dir, "prune")
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    assert [r["port"]["ifname"] for r in group["receivers"]] == ["p2"]
    with FrameCounter(topo.host(2).ns, topo.host(2).dev) as counter:
        send_mcast(topo.host(1), "239.1.1.1", 10, 9520)
        assert len([f for f in counter.frames() if classify(f) == ("udp", 9520)]) == 10
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    assert (group["copies_expected"], group["copies_lost"]) == (10, 0)
    sh("ip", "-n", topo.fwd, "link", "del", "p1")
    result = topo.ok(pin_dir, "prune")
    assert "removed multicast group 239.1.1.1" in result.stdout
    assert json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"] == []


def test_doctor_names_a_receiver_whose_device_went_until_prune_recounts(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    with FrameCounter(topo.host(3).ns, topo.host(3).dev) as counter:
        send_mcast(topo.host(1), "239.1.1.1", 2, 9525)  # p3's copies get counted
        assert len([f for f in counter.frames() if classify(f) == ("udp", 9525)]) == 2
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    p3 = next(r["port"]["ifindex"] for r in group["receivers"] if r["port"]["ifname"] == "p3")
    assert doctor_check(topo, pin_dir, "receiver_gone") is None
    assert stats_json(topo, pin_dir)["totals"]["tx_packets"] == 4
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    # p3's copies left its TX with it, not the totals (helper-51: they went down).
    assert stats_json(topo, pin_dir)["totals"]["tx_packets"] == 4
    send_mcast(topo.host(1), "239.1.1.1", 5, 9526)
    group = groups_by_address(stats_json(topo, pin_dir))["239.1.1.1"]
    assert (group["copies_expected"], group["copies_lost"]) == (14, 5)
    # The summary of every frame not forwarded says so too (it said "none").
    (summary,) = [s for s in topo.ok(pin_dir, "stats").stdout.splitlines() if "not forw" in s]
    assert summary == "not forwarded (total): none; multicast copies lost 5"
    check = doctor_check(topo, pin_dir, "receiver_gone")
    assert check["check"] == "multicast 239.1.1.1"
    assert f"the device of a receiver (ifindex {p3}) is gone" in check["detail"]
    run_fix(topo, pin_dir, check["fix"], "prune")
    assert doctor_check(topo, pin_dir, "receiver_gone") is None
    with FrameCounter(topo.host(2).ns, topo.host(2).dev) as counter:
        send_mcast(topo.host(1), "239.1.1.1", 3, 9527)
        assert len([f for f in counter.frames() if classify(f) == ("udp", 9527)]) == 3
    stats = stats_json(topo, pin_dir)
    group = groups_by_address(stats)["239.1.1.1"]
    assert (group["copies_expected"], group["copies_lost"]) == (17, 5)
    assert stats["totals"]["tx_packets"] == 4 + 5 + 3
    topo.ok(pin_dir, "multicast", "del", "239.1.1.1")
    assert stats_json(topo, pin_dir)["totals"]["tx_packets"] == 12


def copies_at(topo, index: int, group: str, count: int, port: int, source: int = 1) -> int:
    """How many of count datagrams host source sends to group arrive at host index."""
    with FrameCounter(topo.host(index).ns, topo.host(index).dev) as counter:
        send_mcast(topo.host(source), group, count, port)
        return len([f for f in counter.frames() if classify(f) == ("udp", port)])


def test_devices_made_again_rejoin_their_groups(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.2", "--from", "p1", "--to", "p3")
    sh("ip", "-n", topo.fwd, "link", "del", "p3")  # a container restarting
    pruned = topo.ok(pin_dir, "prune")
    assert "removed" not in pruned.stdout  # 239.1.1.2 drops its frames meanwhile
    saved = topo.ok(pin_dir, "save")
    assert "p3 left out of multicast group 239.1.1.1: device gone" in saved.stderr
    assert "multicast group 239.1.1.2 left out: the device of p3 is gone" in saved.stderr
    topo.plug(topo.host(3))
    pruned = topo.ok(pin_dir, "prune").stdout
    assert "change multicast group 239.1.1.1 (from p1 to p2, p3)" in pruned
    assert "change multicast group 239.1.1.2 (from p1 to p3)" in pruned
    assert copies_at(topo, 3, "239.1.1.1", 4, 9550) == 4
    assert copies_at(topo, 3, "239.1.1.2", 5, 9551) == 5
    # The source made again is attached again, and feeds both groups.
    sh("ip", "-n", topo.fwd, "link", "del", "p1")
    topo.ok(pin_dir, "prune")
    assert json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"] == []
    topo.plug(topo.host(1))
    assert "attach" in topo.ok(pin_dir, "prune").stdout
    assert topo.xdp("p1") is not None
    assert copies_at(topo, 2, "239.1.1.1", 6, 9552) == 6
    assert copies_at(topo, 3, "239.1.1.2", 7, 9553) == 7
    assert topo.ok(pin_dir, "prune").stdout.strip() == "nothing to prune"


def test_a_group_whose_receivers_are_all_gone_drops_its_frames_until_they_return(
    make_topo, pin_dir
):
    # Removed, it let its frames out of the source's other way: a feed went out of
    # the uplink of the source's entry (helper-46).
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3")
    topo.ok(pin_dir, "add", "p1", "p2")
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    pruned = topo.ok(pin_dir, "prune")
    assert "removed" not in pruned.stdout + pruned.stderr
    assert copies_at(topo, 2, "239.1.1.1", 5, 9560) == 0
    group = groups_by_address(stats_json(topo, pin_dir))["239.1.1.1"]
    assert group["receivers"] == []
    assert (group["copies_expected"], group["copies_lost"]) == (5, 5)
    check = doctor_check(topo, pin_dir, "receiver_gone")
    assert "the device of every receiver is gone: the group drops its frames" in check["detail"]
    assert topo.ok(pin_dir, "prune").stdout.strip() == "nothing to prune"
    topo.plug(topo.host(3))
    assert "change multicast group 239.1.1.1 (from p1 to p3)" in topo.ok(pin_dir, "prune").stdout
    assert copies_at(topo, 3, "239.1.1.1", 4, 9561) == 4
    assert doctor_check(topo, pin_dir, "receiver_gone") is None
    # Ended on demand, its frames take the source's entry.
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    topo.ok(pin_dir, "prune")
    fix = doctor_check(topo, pin_dir, "receiver_gone")["fix"]
    run_fix(topo, pin_dir, fix, "multicast", "del", "239.1.1.1")
    assert groups_by_address(stats_json(topo, pin_dir)) == {}
    assert copies_at(topo, 2, "239.1.1.1", 3, 9562) == 3


def test_multicast_del_forgets_what_only_the_record_keeps(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.2", "--from", "p1", "--to", "p4")
    for port in ("p3", "p4"):
        sh("ip", "-n", topo.fwd, "link", "del", port)
    topo.ok(pin_dir, "prune")
    listed = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)
    # 239.1.1.2 runs without receivers, dropping its frames, and waits for p4.
    assert [g["group"] for g in listed["groups"]] == ["239.1.1.1", "239.1.1.2"]
    assert listed["waiting"] == [
        {"group": "239.1.1.2", "receivers": ["p4"], "sources": ["p1"], "gone": ["p4"]}
    ]
    shown = topo.ok(pin_dir, "multicast", "list").stdout
    assert (
        "239.1.1.2 (from p1 to p4): runs without receivers, dropping its frames (the device "
        "of p4 is gone)"
    ) in shown
    # The last receiver that runs leaves: the group waits for p3.
    result = topo.ok(pin_dir, "multicast", "del", "239.1.1.1", "--to", "p2")
    assert "239.1.1.1 runs no more; the recorded configuration keeps it for p3," in result.stdout
    result = topo.ok(pin_dir, "multicast", "del", "239.1.1.2")
    assert "p4 receives 239.1.1.2 no more" in result.stdout  # by name: its device is gone
    assert "multicast group 239.1.1.2 was removed" in result.stdout
    assert_fails(
        topo.xdpfwd(pin_dir, "multicast", "del", "239.1.1.2"), 1, "no multicast group 239.1.1.2"
    )
    listed = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)
    assert listed["groups"] == [] and [g["group"] for g in listed["waiting"]] == ["239.1.1.1"]
    for index in (3, 4):
        topo.plug(topo.host(index))
    assert "create multicast group 239.1.1.1 (from p1 to p3)" in topo.ok(pin_dir, "prune").stdout
    assert copies_at(topo, 3, "239.1.1.1", 3, 9555) == 3
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    assert [r["port"]["ifname"] for r in group["receivers"]] == ["p3"]
    # A receiver only recorded is forgotten by name: made again, it stays out.
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    result = topo.ok(pin_dir, "multicast", "del", "239.1.1.1", "--to", "p3")
    assert "p3 receives 239.1.1.1 no more" in result.stdout
    topo.plug(topo.host(3))
    assert topo.ok(pin_dir, "prune").stdout.strip() in ("nothing to prune", "detached from p1")
    assert json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"] == []


def test_a_gone_member_named_before_prune_is_the_only_one_forgotten(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "p4", "--to", "p2", "p3")
    for port in ("p1", "p4"):
        sh("ip", "-n", topo.fwd, "link", "del", port)
    result = topo.ok(pin_dir, "multicast", "del", "239.1.1.1", "--from", "p1")
    assert result.stdout.startswith("p1 is a source of 239.1.1.1 no more"), result.stdout
    # Only p4's device is gone: p2 and p3 run, and are not named as gone.
    assert "keeps it for p4, whose device is gone" in result.stdout
    topo.plug(topo.host(4))
    assert (
        "create multicast group 239.1.1.1 (from p4 to p2, p3)" in topo.ok(pin_dir, "prune").stdout
    )
    assert copies_at(topo, 3, "239.1.1.1", 5, 9556, source=4) == 5
    # A receiver renamed is saved under its new name, and not said to be gone.
    sh("ip", "-n", topo.fwd, "link", "set", "p3", "name", "p3x")
    saved = topo.ok(pin_dir, "save")
    assert "p3x" in saved.stdout and "gone" not in saved.stderr, saved.stderr


def test_a_port_a_recorded_group_would_take_back_is_no_way_round_the_shared_bulk_refusal(
    make_topo, pin_dir
):
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    topo.plug(topo.host(3))  # not bound yet: prune (or follow) puts p3 back in the group
    refused = topo.xdpfwd(pin_dir, "add", "p1", "p3")
    assert_fails(refused, 1, "p1 would send both multicast group 239.1.1.1 and its other frames")
    topo.ok(pin_dir, "add", "p1", "p3", "--force")
    pruned = topo.ok(pin_dir, "prune")
    assert "multicast group 239.1.1.1 not restored: p1 would send both" in pruned.stderr
    assert "multicast group" not in pruned.stdout
    assert doctor_check(topo, pin_dir, "shared_bulk") is None


def feed_and_unicast(topo, copies: int, unicast: int, port: int) -> None:
    """From host 1: copies datagrams to 239.1.1.1 (all of them arrive at host 3) and
    unicast ones to host 2 (all arrive), on port and port + 1."""
    with (
        FrameCounter(topo.host(3).ns, topo.host(3).dev) as seen,
        UdpSink(topo.host(2), port + 1) as sink,
    ):
        send_mcast(topo.host(1), "239.1.1.1", copies, port)
        send_udp(topo.host(1), topo.host(2).ip, unicast, port=port + 1)
        assert sink.count(unicast) == unicast
        assert len([f for f in seen.frames() if classify(f) == ("udp", port)]) == copies


def test_a_sources_frames_in_add_up_with_the_frames_its_groups_copied(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3")
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.static_arp()
    feed_and_unicast(topo, 5, 3, 9530)
    p1 = port_counters(stats_json(topo, pin_dir), "p1")
    lost = sum(n for n in p1["not_forwarded"].values() if n)
    assert (p1["multicast_packets"], p1["forwarded_packets"], lost) == (5, 3, 0)
    assert (
        p1["rx_packets"] == p1["forwarded_packets"] + p1["multicast_packets"] + p1["miss_packets"]
    )
    table = topo.ok(pin_dir, "stats").stdout
    row = next(line.split() for line in table.splitlines() if line.split()[:1] == ["p1"])
    # p1 (IFINDEX) RX RX-BYTES B FWD: 3 forwarded by the entry, 5 copied by the group
    assert row[5] == "8"


def test_copies_a_receivers_driver_drops_are_the_groups_loss_not_the_sources(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3", "p4")
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.static_arp()
    # p4's peer is down: the veth driver drops what is sent to p4, after its egress program.
    sh("ip", "-n", topo.host(4).ns, "link", "set", topo.host(4).dev, "down")
    feed_and_unicast(topo, 6, 4, 9540)
    stats = stats_json(topo, pin_dir)
    group = groups_by_address(stats)["239.1.1.1"]
    received = {r["port"]["ifname"]: r["tx_packets"] for r in group["receivers"]}
    assert received == {"p3": 6, "p4": 0}
    assert (group["copies_expected"], group["copies_out"], group["copies_lost"]) == (12, 6, 6)
    p1 = port_counters(stats, "p1")
    # The source's own frames: 4 forwarded by its entry, 6 copied, none lost.
    assert (p1["forwarded_packets"], p1["multicast_packets"]) == (4, 6)
    assert not any(p1["not_forwarded"].values())
    assert port_counters(stats, "p4")["tx_packets"] == 0
    # multicast list reads them as stats does (it counted p4's copies as sent).
    listed = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    counts = {key: n for key, n in group.items() if not key.endswith(("_pps", "_bps"))}
    assert listed == [counts]


def test_a_receiver_taken_out_and_back_counts_each_copy_once(make_topo, pin_dir):
    # Its row stayed while it was out, and came back as its count while its port's TX
    # kept those copies too: 20 + 20 (helper-49).
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    first = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 20, 9545))
    topo.ok(pin_dir, "multicast", "del", "239.1.1.1", "--to", "p3")
    assert stats_json(topo, pin_dir)["totals"]["tx_packets"] == 40  # out, its copies kept
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--to", "p3")
    stats = stats_json(topo, pin_dir)
    assert port_counters(stats, "p3")["tx_packets"] == first[3][("udp", 9545)] == 20
    assert stats["totals"]["tx_packets"] == 40
    then = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 10, 9546))
    assert then[3] == {("udp", 9546): 10}
    stats = stats_json(topo, pin_dir)
    assert port_counters(stats, "p3")["tx_packets"] == 30
    assert stats["totals"]["tx_packets"] == 60
    group = groups_by_address(stats)["239.1.1.1"]
    assert (group["copies_expected"], group["copies_out"], group["copies_lost"]) == (60, 60, 0)


def test_a_saved_source_whose_group_is_gone_is_not_attached_by_prune(make_topo, pin_dir, tmp_path):
    # save writes the source's settings (ports:), apply records them; the group itself
    # is not recorded, so once it is gone the port has no role left.
    topo = make_topo(2)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    saved = str(tmp_path / "saved.yaml")
    topo.ok(pin_dir, "save", "-o", saved)
    topo.ok(pin_dir, "down")
    topo.ok(pin_dir, "apply", saved)
    assert "detached from p1" in topo.ok(pin_dir, "multicast", "del", "239.1.1.1").stdout
    assert topo.ok(pin_dir, "prune").stdout.strip() == "nothing to prune"
    assert topo.xdp("p1") is None


def test_a_change_that_removes_a_group_of_deleted_devices_says_so(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    sh("ip", "-n", topo.fwd, "link", "del", "p1")
    added = topo.ok(pin_dir, "add", "p3", "p4")
    assert "removed multicast group 239.1.1.1: its sources or receivers are gone" in added.stderr
    assert json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"] == []


def test_ports_added_to_a_feed_only_receive_and_to_a_bus_also_send(make_topo, pin_dir):
    topo = make_topo(5)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--to", "p3")
    topo.ok(pin_dir, "multicast", "add", "239.2.2.2", "--to", "p4", "p5")
    topo.ok(pin_dir, "multicast", "add", "239.2.2.2", "--to", "p3")
    groups = {
        g["group"]: (
            [s["ifname"] for s in g["sources"]],
            [r["port"]["ifname"] for r in g["receivers"]],
        )
        for g in json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    }
    assert groups == {
        "239.1.1.1": (["p1"], ["p2", "p3"]),
        "239.2.2.2": (["p3", "p4", "p5"], ["p3", "p4", "p5"]),
    }
    assert topo.xdp("p2") is None  # a receiver only


def test_a_group_replacing_another_in_one_apply_counts_its_copies(make_topo, pin_dir):
    """The new group must not take over the old one's counter rows, which are
    forgotten only after the change commits."""
    topo = make_topo(3)
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2")
    doc = {"multicast": [{"group": "239.7.7.7", "from": ["p1"], "to": ["p2", "p3"]}]}
    result = topo.ok(pin_dir, "apply", topo.config_file(doc))
    assert "remove multicast group 239.1.1.1" in result.stdout
    assert "create multicast group 239.7.7.7" in result.stdout
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.7.7.7", 25, 9530))
    assert seen == {1: {}, 2: {("udp", 9530): 25}, 3: {("udp", 9530): 25}}
    (group,) = json.loads(topo.ok(pin_dir, "multicast", "list", "--json").stdout)["groups"]
    assert_group_counts(group, 25, {"p2": 25, "p3": 25})


ALTERNATING_GENERATOR = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
BPF_PERCPU_ARRAY(sent, u32, 1);

/* Live frames, every other one to 239.1.1.1 (port 9501) and to 239.3.3.3 (9503). */
int alternate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	u32 zero = 0, *n = sent.lookup(&zero);
	u8 g;

	if (!n || (void *)(udp + 1) > data_end)
		return XDP_ABORTED;
	g = *n & 1 ? 3 : 1;
	*n += 1;
	eth->h_dest[3] = eth->h_dest[4] = eth->h_dest[5] = g;
	ip->daddr = htonl(0xef000000 | g << 16 | g << 8 | g);
	ip->check = 0;  /* nobody routes them: the packet sockets count them */
	udp->dest = htons(9500 + g);
	return bpf_redirect(TARGET, 0);
}
"""


def send_alternating(host, count: int) -> None:
    """count frames in one live-frames run, which the kernel hands on in bulks: to
    239.1.1.1 and 239.3.3.3 in turn, so each bulk out of a port mixes the two."""
    from bcc import BPF

    from xdpfwd.kernel import traffic

    with in_netns(host.ns):
        target = socket.if_nametoindex(host.dev)
    bpf = BPF(text=ALTERNATING_GENERATOR.encode(), cflags=[f"-DTARGET={target}"])
    try:
        prog = bpf.load_func(b"alternate", BPF.XDP)
        frame = traffic.udp_frame(host.mac, "01:00:5e:01:01:01", host.ip, "239.1.1.1", 64)
        traffic.Generator(prog.fd, host.ns, frame, [0]).send(count)
    finally:
        bpf.cleanup()


def test_a_source_sends_a_group_and_its_other_frames_out_of_one_port_only_forced(
    make_topo, pin_dir
):
    """Native XDP queues a bulk per egress port and the kernel runs the egress program
    of a bulk's first frame on all of it: a source whose copies and other frames
    leave by one port would have them counted, or rewritten, as each other."""
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p2", "--dst-mac", "02:00:00:00:00:aa")
    before = snapshot(topo, pin_dir)
    group = ["multicast", "add", "239.1.1.1", "--from", "p1", "--to"]
    refused = topo.xdpfwd(pin_dir, *group, "p3", "p2")
    both = "p1 would send both multicast group 239.1.1.1 and its other frames out of p2"
    assert_fails(refused, 1, both, "take p2 out of one of them, or --force")
    assert snapshot(topo, pin_dir) == before
    # The group first, then an entry, a balanced entry or a broadcast group.
    topo.ok(pin_dir, "del", "p1")
    topo.ok(pin_dir, *group, "p3")
    before = snapshot(topo, pin_dir)
    for args in (["add", "p1", "p3"], ["add", "p1", "p4", "p3"], ["broadcast", "p1", "p3"]):
        refused = topo.xdpfwd(pin_dir, *args)
        assert_fails(refused, 1, "p1 would send both multicast group 239.1.1.1", "out of p3")
        assert snapshot(topo, pin_dir) == before, args
    # A bus's sources may flood to each other: their copies never go back out of
    # themselves with --exclude-ingress, and with --include-ingress they do.
    topo.ok(pin_dir, "multicast", "add", "239.2.2.2", "--to", "p2", "p4", "--exclude-ingress")
    topo.ok(pin_dir, "broadcast", "p2", "--exclude-ingress")
    refused = topo.xdpfwd(pin_dir, "broadcast", "p4")
    assert_fails(refused, 1, "multicast group 239.2.2.2 and its other frames out of p")
    forced = topo.ok(pin_dir, "add", "p1", "p3", "--force")
    assert "would send both multicast group 239.1.1.1" in forced.stderr
    saved = topo.ok(pin_dir, "save")
    assert "p1 sends both multicast group 239.1.1.1 and its other frames out of p3" in saved.stderr
    assert "`apply` of this file needs --force" in saved.stderr
    # doctor fails it, with the fix that keeps the entry; after the fix it passes.
    shared = doctor_check(topo, pin_dir, "shared_bulk")
    assert "p1 sends both multicast group 239.1.1.1 and its other frames" in shared["detail"]
    run_fix(topo, pin_dir, shared["fix"], "multicast", "del", "239.1.1.1", "--to", "p3")
    assert doctor_check(topo, pin_dir, "shared_bulk") is None


def test_a_forced_overlap_stays_and_only_new_ones_are_refused(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "add", "p3", "p4")
    group = ["multicast", "add", "239.1.1.1"]
    forced = topo.ok(pin_dir, *group, "--from", "p1", "--to", "p2", "p3", "--force")
    assert "p1 would send both multicast group 239.1.1.1" in forced.stderr
    topo.ok(pin_dir, *group, "--to", "p4")  # p1's copies out of p4: nothing else goes there
    refused = topo.xdpfwd(pin_dir, *group, "--from", "p3")
    assert_fails(refused, 1, "p3 would send both multicast group 239.1.1.1", "out of p4")
    # A source that receives its own copies, and floods back out of itself too.
    topo.ok(pin_dir, "del", "p3")
    topo.ok(pin_dir, "broadcast", "p3", "p4")
    refused = topo.xdpfwd(pin_dir, "multicast", "add", "239.2.2.2", "--to", "p3", "p4")
    assert_fails(refused, 1, "--exclude-ingress keeps its copies from going back out of it")


def test_an_entry_prune_would_restore_is_no_way_round_the_refusal(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p1", "p3")
    # p1 deleted and made again: its entry is gone, and prune (or follow) brings it back.
    sh("ip", "-n", topo.fwd, "link", "del", "p1")
    topo.plug(topo.host(1))
    refused = topo.xdpfwd(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3")
    assert_fails(refused, 1, "p1 would send both multicast group 239.1.1.1 and its other frames")
    assert "forward p1 -> p3" in topo.ok(pin_dir, "prune").stdout


def test_apply_refuses_a_source_sending_a_group_and_its_other_frames_out_of_one_port(
    make_topo, pin_dir
):
    topo = make_topo(3)
    path = topo.config_file(
        {
            "forward": [{"from": "p1", "to": "p2"}],
            "multicast": [{"group": "239.1.1.1", "from": ["p1"], "to": ["p2", "p3"]}],
        }
    )
    for dry_run in ((), ("--dry-run",)):
        refused = topo.xdpfwd(pin_dir, "apply", path, *dry_run)
        assert_fails(refused, 2, f"{path}:1: ", "239.1.1.1 and its other frames out of p2")
    assert not os.path.exists(pin_dir)
    forced = topo.ok(pin_dir, "apply", path, "--force")
    assert "each would be counted" in forced.stderr


# A user egress program whose work shows on the frame: it sets the destination MAC.
MARK_DESTINATION = r"""
int mark_destination(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	if (data + 6 > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, "\x02\0\0\0\0\xbb", 6);
	return XDP_PASS;
}
"""


@pytest.mark.parametrize("egress", ["rewrite", "user program"])
def test_bulks_mixing_copies_and_forwarded_frames_each_run_their_own_egress(
    make_topo, pin_dir, egress, tmp_path
):
    """A bulk of frames from p1 holds copies and forwarded frames at once; out of
    different ports, each kind runs its own egress program."""
    topo = make_topo(3)
    if egress == "rewrite":
        topo.ok(pin_dir, "add", "p1", "p2", "--dst-mac", "02:00:00:00:00:aa")
    else:
        program = tmp_path / "mark_destination.c"
        program.write_text(MARK_DESTINATION)
        topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", str(program))
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3")
    with ExitStack() as stack:
        h2, h3 = (stack.enter_context(FrameCounter(h.ns, h.dev)) for h in topo.hosts[1:])
        send_alternating(topo.host(1), 600)
        out_of_p2 = [f[:6].hex(":") for f in h2.frames(timeout=1.0) if classify(f)]
        out_of_p3 = [f[:6].hex(":") for f in h3.frames(timeout=0.2) if classify(f)]
    forwarded_mac = "02:00:00:00:00:aa" if egress == "rewrite" else "02:00:00:00:00:bb"
    assert out_of_p2 == [forwarded_mac] * 300
    assert out_of_p3 == ["01:00:5e:01:01:01"] * 300
    data = stats_json(topo, pin_dir)
    assert_group_counts(groups_by_address(data)["239.1.1.1"], 300, {"p3": 300})
    (pair,) = [p for p in data["pairs"] if p["ingress"]["ifname"] == "p1"]
    assert pair["tx_packets"] == 300, pair


def test_renames_of_a_receiver_of_a_device_replaced_under_its_name_and_of_a_swap(
    make_topo, pin_dir, tmp_path
):
    topo = make_topo(6)
    topo.static_arp()
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p2", "p3")
    topo.ok(pin_dir, "add", "p4", "p5")
    topo.ok(pin_dir, "add", "p6", "p2", "p3")  # balanced
    link = ("ip", "-n", topo.fwd, "link")
    sh(*link, "set", "p3", "name", "q3")  # a receiver only: its group's devmap holds it
    sh(*link, "set", "p5", "name", "q5")  # an egress, and a new device under its old name
    sh(*link, "add", "p5", "type", "veth", "peer", "name", "x5")
    for old, new in (("p2", "t2"), ("p6", "p2"), ("t2", "p6")):  # p2 and p6 swapped
        sh(*link, "set", old, "name", new)
    saved = tmp_path / "saved.yaml"
    topo.ok(pin_dir, "save", "--output", str(saved))
    assert topo.ok(pin_dir, "apply", "--dry-run", str(saved)).stdout == "nothing to change\n"
    assert sorted(topo.ok(pin_dir, "prune").stdout.splitlines()) == [
        "p2 is p6 now: recorded as p6",
        "p3 is q3 now: recorded as q3",
        "p5 is q5 now: recorded as q5",
        "p6 is p2 now: recorded as p2",
    ]
    assert topo.ok(pin_dir, "prune").stdout == "nothing to prune\n"
    assert topo.xdp("p5") is None and topo.xdp("p6") is None  # nothing new attached
    seen = exchange(topo, lambda: send_mcast(topo.host(1), "239.1.1.1", 20, 9421))
    assert seen[2] == {("udp", 9421): 20} and seen[3] == {("udp", 9421): 20}
    with UdpSink(topo.host(5)) as sink:  # p4's entry still sends to the renamed q5
        send_udp(topo.host(4), topo.host(5).ip, 10)
        assert sink.count(10) == 10
