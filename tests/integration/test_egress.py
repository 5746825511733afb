"""Devmap entries with egress programs: pair counters, MAC rewrite, user programs,
plain ifindex tables, and atomic program swaps, with real frames."""

import json
import struct
import threading

import pytest

from .net import FrameCounter, UdpSink, assert_fails, send_udp, sh, snapshot, udp_frame_len

DROP_ALL = "int drop_all(struct xdp_md *ctx)\n{\n\treturn XDP_DROP;\n}\n"
PASS_A = "int pass_a(struct xdp_md *ctx)\n{\n\treturn XDP_PASS;\n}\n"
# A program with its own map, to check those compile too.
PASS_B = """BPF_ARRAY(seen, u64, 1);
int pass_b(struct xdp_md *ctx)
{
	int zero = 0;
	u64 *n = seen.lookup(&zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_PASS;
}
"""
BROKEN = "int broken(struct xdp_md *ctx)\n{\n\treturn undefined_thing;\n}\n"
# Compiles, and the verifier refuses it: a packet read without a bounds check.
UNCHECKED = """int unchecked(struct xdp_md *ctx)
{
	return *(unsigned char *)(long)ctx->data ? XDP_PASS : XDP_DROP;
}
"""


@pytest.fixture
def programs(tmp_path):
    for name, text in (
        ("drop_all", DROP_ALL),
        ("pass_a", PASS_A),
        ("pass_b", PASS_B),
        ("broken", BROKEN),
        ("unchecked", UNCHECKED),
    ):
        (tmp_path / f"{name}.c").write_text(text)
    return tmp_path


def rows(topo, pin_dir) -> dict:
    return {row["ingress"]["ifname"]: row for row in topo.list_json(pin_dir)["entries"]}


def port_mac(topo, port: str) -> str:
    return json.loads(sh("ip", "-n", topo.fwd, "-j", "link", "show", port).stdout)[0]["address"]


def test_pair_counters_are_exact(make_topo, pin_dir):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "add", "p3", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 150, payload=80)
        send_udp(h3, h2.ip, 70, payload=200)
        assert sink.count(220) == 220
    by_port = rows(topo, pin_dir)
    # No egress program unless it does work: the port's redirects are the entry's.
    assert by_port["p1"]["egress_prog"]["kind"] == "none"
    assert by_port["p1"]["egress_counters"] == {
        "tx_packets": 150,
        "tx_bytes": 150 * udp_frame_len(80),
        "egress_drop_packets": 0,
        "egress_drop_bytes": 0,
    }
    assert by_port["p3"]["egress_counters"]["tx_packets"] == 70
    assert by_port["p3"]["egress_counters"]["tx_bytes"] == 70 * udp_frame_len(200)


def test_mac_rewrite_sets_the_configured_addresses(topo, pin_dir):
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "--src-mac", "egress", "--dst-mac", "02:00:5e:00:53:42")
    with FrameCounter(h2.ns, h2.dev) as capture:
        send_udp(h1, h2.ip, 5, port=9200)
        frames = capture.frames(udp_port=9200)
    assert len(frames) == 5
    for frame in frames:
        assert frame[0:6] == bytes.fromhex("02005e005342")
        assert frame[6:12] == bytes.fromhex(port_mac(topo, "p2").replace(":", ""))
    row = rows(topo, pin_dir)["p1"]
    assert row["egress_prog"]["kind"] == "rewrite"
    assert row["rewrite"] == {"src_mac": port_mac(topo, "p2"), "dst_mac": "02:00:5e:00:53:42"}
    assert row["egress_counters"]["tx_packets"] == 5


def test_no_rewrite_goes_to_a_device_without_an_ethernet_header(topo, pin_dir):
    tun = f"tun{topo.fwd[-6:]}"
    sh("ip", "-n", topo.fwd, "tuntap", "add", "dev", tun, "mode", "tun")
    sh("ip", "-n", topo.fwd, "link", "set", tun, "up")
    topo.ok(pin_dir, "add", "p2", "p1")
    before = topo.list_json(pin_dir)["entries"]
    for rewrite in (["--dst-mac", "02:00:5e:00:53:42"], ["--src-mac", "02:00:5e:00:53:43"]):
        result = topo.xdpfwd(pin_dir, "add", "p1", tun, *rewrite)
        assert_fails(result, 2, f"{tun} has no MAC address")
        assert topo.list_json(pin_dir)["entries"] == before
        assert topo.xdp("p1") is None  # attached for the entry, detached with its undo


def test_prune_leaves_out_a_rewrite_whose_egress_came_back_without_a_mac(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p2", "--dst-mac", "02:00:5e:00:53:42")
    topo.ok(pin_dir, "add", "p3", "p4")
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    sh("ip", "-n", topo.fwd, "tuntap", "add", "dev", "p2", "mode", "tun")
    sh("ip", "-n", topo.fwd, "link", "set", "p2", "up")
    result = topo.ok(pin_dir, "prune")
    assert "p1: p2 has no MAC address for its rewrite: left out" in result.stdout + result.stderr
    entries = {r["ingress"]["ifname"]: r for r in topo.list_json(pin_dir)["entries"]}
    assert entries["p3"]["egress"]["ifname"] == "p4"  # the rest is kept as it was
    assert entries.get("p1", {}).get("egress", {}).get("ifname") != "p2"
    h3, h4 = topo.host(3), topo.host(4)  # and still forwards
    sh("ip", "-n", h3.ns, "neigh", "replace", h4.ip, "lladdr", h4.mac, "dev", h3.dev)
    with UdpSink(h4) as sink:
        send_udp(h3, h4.ip, 10)
        assert sink.count(10) == 10


def test_a_balanced_rewrites_port_that_came_back_without_a_mac_counts_as_down(make_topo, pin_dir):
    topo = make_topo(4)
    rewrite = ("--src-mac", "egress", "--dst-mac", "02:00:5e:00:53:42")
    topo.ok(pin_dir, "add", "p1", "p2", "p3", *rewrite)
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    sh("ip", "-n", topo.fwd, "tuntap", "add", "dev", "p3", "mode", "tun")
    sh("ip", "-n", topo.fwd, "link", "set", "p3", "up")
    result = topo.ok(pin_dir, "prune")
    assert "p1: p3 has no MAC address for its rewrite: taken as down" in result.stderr
    (row,) = [r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p1"]
    buckets = {p["name"]: p["buckets"] for p in row["balance"]["ports"]}
    assert buckets == {"p2": 256, "p3": 0} and row["balance"]["unassigned"] == 0
    # Every flow arrives, rewritten, through the port left: none on the tun, none lost.
    h1, h2 = topo.host(1), topo.host(2)
    sh("ip", "-n", h1.ns, "neigh", "replace", h2.ip, "lladdr", h2.mac, "dev", h1.dev)
    with FrameCounter(h2.ns, h2.dev) as capture:
        for _ in range(16):  # a socket each: 16 source ports, 16 flows
            send_udp(h1, h2.ip, 1, port=9300)
        frames = capture.frames(udp_port=9300)
    assert len(frames) == 16
    assert all(frame[0:6] == bytes.fromhex("02005e005342") for frame in frames)
    # Asked for on the command line, it is refused.
    assert_fails(topo.xdpfwd(pin_dir, "add", "p4", "p2", "p3", *rewrite), 2, "p3 has no MAC")


def test_rewrite_to_the_receivers_mac_makes_a_router_hop_work(topo, pin_dir):
    """Hosts in two subnets send to a gateway MAC nobody owns; xdpfwd acts as the hop."""
    h1, h2 = topo.hosts
    for host, net in ((h1, "10.77.1"), (h2, "10.77.2")):
        sh("ip", "-n", host.ns, "addr", "flush", "dev", host.dev)
        sh("ip", "-n", host.ns, "addr", "add", f"{net}.{host.index}/24", "dev", host.dev)
        sh("ip", "-n", host.ns, "route", "add", "default", "via", f"{net}.254")
        sh(
            "ip",
            "-n",
            host.ns,
            "neigh",
            "replace",
            f"{net}.254",
            "lladdr",
            "02:00:00:00:fe:01",
            "dev",
            host.dev,
            "nud",
            "permanent",
        )
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    assert topo.ping(1, "10.77.2.2", count=2) == 0  # h2 drops frames for the gateway's MAC
    topo.ok(pin_dir, "add", "p1", "p2", "--src-mac", "egress", "--dst-mac", h2.mac)
    topo.ok(pin_dir, "add", "p2", "p1", "--src-mac", "egress", "--dst-mac", h1.mac)
    assert topo.ping(1, "10.77.2.2") == 3


def test_user_program_dropping_stops_only_its_entry(make_topo, pin_dir, programs):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", str(programs / "drop_all.c"))
    topo.ok(pin_dir, "add", "p3", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 30)
        assert sink.count(30, timeout=1.0) == 0
        send_udp(h3, h2.ip, 30)
        assert sink.count(30) == 30
    by_port = rows(topo, pin_dir)
    assert by_port["p1"]["egress_prog"]["kind"] == "user"
    assert by_port["p1"]["egress_prog"]["name"] == "drop_all"
    assert by_port["p1"]["egress_prog"]["source"] == f"{programs / 'drop_all.c'}:drop_all"
    assert by_port["p1"]["egress_counters"]["egress_drop_packets"] == 30
    assert by_port["p1"]["egress_counters"]["tx_packets"] == 0
    assert by_port["p3"]["egress_counters"]["tx_packets"] == 30


def test_changing_an_entrys_program_neither_resets_nor_relabels_its_counts(topo, pin_dir, programs):
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", str(programs / "drop_all.c"))
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 20)
        assert sink.count(20, timeout=1.0) == 0
    for options, count in (((), 30), (("--dst-mac", h2.mac), 10)):
        topo.ok(pin_dir, "add", "p1", "p2", *options)
        with UdpSink(h2) as sink:
            send_udp(h1, h2.ip, count)
            assert sink.count(count) == count
    stats = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
    (pair,) = stats["pairs"]
    # The 40 that left, and the 20 the first program dropped, still named as such.
    assert (pair["tx_packets"], pair["egress_drop_packets"]) == (40, 20)
    assert stats["not_forwarded"]["egress_drop"] == 20
    assert stats["not_forwarded"]["xmit_drop"] == 0
    p1 = next(p for p in stats["ports"] if p["port"]["ifname"] == "p1")
    assert p1["forwarded_packets"] == 40


def test_listed_prog_id_is_what_the_kernel_holds(topo, pin_dir, programs):
    topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", f"{programs / 'pass_b.c'}:pass_b")
    listed = rows(topo, pin_dir)["p1"]
    ifindex = listed["ingress"]["ifindex"]
    key = [f"0x{b:02x}" for b in struct.pack("=I", ifindex)]
    entry = json.loads(
        sh("bpftool", "-j", "map", "lookup", "pinned", f"{pin_dir}/fwd", "key", *key).stdout
    )
    value = bytes(int(b, 16) for b in entry["value"])
    egress_ifindex, prog_id = struct.unpack("=II", value)
    assert egress_ifindex == listed["egress"]["ifindex"]
    assert prog_id == listed["egress_prog"]["id"]
    prog = json.loads(sh("bpftool", "-j", "prog", "show", "id", str(prog_id)).stdout)
    assert prog["name"] == listed["egress_prog"]["name"] == "pass_b"


@pytest.mark.parametrize("table", ["devmap-hash", "devmap"])
def test_plain_ifindex_tables_forward_and_refuse_egress_features(topo, pin_dir, programs, table):
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--value", "ifindex", "--table", table)
    assert topo.ping(1, topo.host(2).ip) == 3
    assert topo.ping(2, topo.host(1).ip) == 3
    listing = topo.list_json(pin_dir)
    assert listing["value"] == "ifindex"
    for row in listing["entries"]:
        assert row["egress_prog"] == {"kind": "none", "id": None, "name": None, "source": None}
        assert row["egress_counters"] is None
    before = snapshot(topo, pin_dir)
    for extra in (["--src-mac", "egress"], ["--egress-prog", str(programs / "pass_a.c")]):
        assert_fails(topo.xdpfwd(pin_dir, "add", "p1", "p2", *extra), 1, "plain ifindex")
    assert_fails(topo.xdpfwd(pin_dir, "add", "p1", "p2", "--value", "devmap-val"), 1, "--value")
    assert snapshot(topo, pin_dir) == before


def test_no_egress_entries_forward_without_a_program_and_still_count(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--no-egress")
    assert topo.ping(1, topo.host(2).ip) == 3
    for row in rows(topo, pin_dir).values():
        assert row["egress_prog"]["kind"] == "none"
        assert row["egress_counters"]["tx_packets"] == row["counters"]["redirect_packets"] >= 3
        assert row["egress_counters"]["egress_drop_packets"] == 0


def test_compile_error_leaves_the_running_configuration_untouched(topo, pin_dir, programs):
    broken = str(programs / "broken.c")
    # Nothing set up yet: nothing may be left pinned or attached.
    assert_fails(
        topo.xdpfwd(pin_dir, "add", "p1", "p2", "--egress-prog", broken),
        4,
        "broken.c:3",
        "undefined_thing",
    )
    assert snapshot(topo, pin_dir) == ({"p1": None, "p2": None}, None, None)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "add", "p1", "p2", "--egress-prog", broken), 4, "broken.c")
    after = snapshot(topo, pin_dir)
    assert after[:2] == before[:2]
    for old, new in zip(before[2], after[2], strict=True):
        assert old["egress_prog"] == new["egress_prog"]
    assert topo.ping(1, topo.host(2).ip) == 3


def test_a_program_the_verifier_refuses_leaves_no_pin_behind(topo, pin_dir, programs):
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    before = snapshot(topo, pin_dir)
    failed = topo.xdpfwd(pin_dir, "add", "p1", "p2", "--egress-prog", str(programs / "unchecked.c"))
    assert_fails(failed, 4, "unchecked.c")
    assert snapshot(topo, pin_dir) == before  # the first user program's map is not pinned
    assert topo.ping(1, topo.host(2).ip) == 3


def test_swapping_egress_programs_never_stops_forwarding(topo, pin_dir, programs):
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    sink = UdpSink(h2)
    received, sent = [], [0]
    sending, done = threading.Event(), threading.Event()

    def sender():
        while not sending.is_set():
            send_udp(h1, h2.ip, 64)
            sent[0] += 64

    threads = [
        threading.Thread(target=sender),
        threading.Thread(target=lambda: received.append(sink.count_until(done))),
    ]
    swaps = [
        ["--egress-prog", str(programs / "pass_a.c")],
        ["--egress-prog", f"{programs / 'pass_b.c'}:pass_b"],
        ["--src-mac", "egress", "--dst-mac", h2.mac],
        ["--no-egress"],
        [],
    ]
    try:
        for t in threads:
            t.start()
        for _ in range(2):
            for extra in swaps:
                topo.ok(pin_dir, "add", "p1", "p2", *extra)
    finally:
        sending.set()
        threads[0].join()
        done.set()
        threads[1].join()
        sink.close()
    assert sent[0] > 1000
    assert received[0] == sent[0]
    # An entry missing even briefly would have sent frames to the on-miss path.
    assert rows(topo, pin_dir)["p1"]["counters"]["miss_packets"] == 0


TX_BACK = "int tx_back(struct xdp_md *ctx)\n{\n\treturn XDP_TX;\n}\n"


def test_a_user_program_returning_xdp_tx_is_warned_about_and_counted_apart(topo, pin_dir, tmp_path):
    h1, h2 = topo.hosts
    topo.static_arp()
    program = tmp_path / "tx_back.c"
    program.write_text(TX_BACK)
    added = topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", str(program))
    assert "tx_back.c mentions XDP_TX" in added.stderr
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 40)
        assert sink.count(40, timeout=1.0) == 0  # an egress program cannot send back
    stats = json.loads(topo.ok(pin_dir, "stats", "--json").stdout)
    (pair,) = stats["pairs"]
    assert pair["egress_invalid_packets"] >= 40  # plus any ARP the host sent
    assert pair["egress_drop_packets"] == 0 and pair["tx_packets"] == 0
    assert stats["not_forwarded"]["egress_invalid"] == pair["egress_invalid_packets"]
    assert "invalid verdict" in topo.ok(pin_dir, "stats").stdout
    # Replacing the program (and deleting the entry) starts the count afresh.
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "del", "p1")
    topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", str(program))
    assert (
        json.loads(topo.ok(pin_dir, "stats", "--json").stdout)["pairs"][0]["egress_invalid_packets"]
        == 0
    )


def test_a_program_named_by_its_file_alone_comes_back_with_its_egress(make_topo, pin_dir, programs):
    topo = make_topo(2)
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", str(programs / "pass_a.c"))
    h2 = topo.host(2)
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    topo.plug(h2)
    pruned = topo.ok(pin_dir, "prune")
    assert "warning" not in pruned.stderr and "p1 -> p2" in pruned.stdout, pruned
    assert rows(topo, pin_dir)["p1"]["egress_prog"]["source"] == f"{programs / 'pass_a.c'}:pass_a"
    topo.static_arp()
    with UdpSink(h2) as sink:
        send_udp(topo.host(1), h2.ip, 10)
        assert sink.count(10) == 10
