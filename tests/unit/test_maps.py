"""Value layouts of the pinned maps, checked against the C header and against fake kernels."""

import os
import re
import struct

import pytest

from xdpfwd.kernel.bpf import maps, source
from xdpfwd.kernel.bpf import syscall as sc

HEADER = source.read_source(source.COMMON_HEADER)


def c_define(name: str) -> str:
    match = re.search(rf"#define\s+{name}\s+(\S+)", HEADER)
    assert match, f"{name} missing from {source.COMMON_HEADER}"
    return match.group(1).strip('"')


@pytest.mark.parametrize(
    "c_name, py_value",
    [
        ("XDPFWD_PIN_FWD", maps.PIN_FWD),
        ("XDPFWD_PIN_PORTS", maps.PIN_PORTS),
        ("XDPFWD_PIN_PORT_STATS", maps.PIN_PORT_STATS),
        ("XDPFWD_PIN_PROG_INGRESS", maps.PIN_PROG_INGRESS),
        ("XDPFWD_FWD_MAX_ENTRIES", str(maps.FWD_MAX_ENTRIES)),
        ("XDPFWD_MAX_PORTS", str(maps.MAX_PORTS)),
        ("XDPFWD_STATS_SLOTS", str(maps.STATS_SLOTS)),
        ("XDPFWD_PIN_ENTRY_STATS", maps.PIN_ENTRY_STATS),
        ("XDPFWD_PIN_HI_SUFFIX", maps.PIN_HI_SUFFIX),
        ("XDPFWD_PIN_PROG_EGRESS", maps.PIN_PROG_EGRESS),
        ("XDPFWD_PIN_PROG_REWRITE", maps.PIN_PROG_REWRITE),
        ("XDPFWD_PIN_REWRITE", maps.PIN_REWRITE),
        ("XDPFWD_PIN_ENTRY_INVALID", maps.PIN_ENTRY_INVALID),
        ("XDPFWD_MAX_PAIRS", str(maps.MAX_PAIRS)),
        ("XDPFWD_REWRITE_SRC", str(maps.REWRITE_SRC)),
        ("XDPFWD_REWRITE_DST", str(maps.REWRITE_DST)),
        ("XDPFWD_PIN_PROG_GROUP", maps.PIN_PROG_GROUP),
        ("XDPFWD_PIN_GROUPS", maps.PIN_GROUPS),
        ("XDPFWD_PIN_PORT_SLOTS", maps.PIN_PORT_SLOTS),
        ("XDPFWD_PIN_GROUP_SLOTS", maps.PIN_GROUP_SLOTS),
        ("XDPFWD_PIN_FWD_SLOTS", maps.PIN_FWD_SLOTS),
        ("XDPFWD_PIN_GROUP_DIR", maps.PIN_GROUP_DIR),
        ("XDPFWD_PIN_PAIR_STATS", maps.PIN_PAIR_STATS),
        ("XDPFWD_PIN_TX_EVENTS", maps.PIN_TX_EVENTS),
        ("XDPFWD_GROUP_MAX_MEMBERS", str(maps.GROUP_MAX_MEMBERS)),
        ("XDPFWD_PORT_BROADCAST", str(maps.PORT_BROADCAST)),
        ("XDPFWD_PORT_EXCLUDE_INGRESS", str(maps.PORT_EXCLUDE_INGRESS)),
        ("XDPFWD_PIN_BENCH_CFG", maps.PIN_BENCH_CFG),
        ("XDPFWD_PIN_BENCH_SINK", maps.PIN_BENCH_SINK),
        ("XDPFWD_PIN_BENCH_FWD", maps.PIN_BENCH_FWD),
        ("XDPFWD_BENCH_UDP_PORT", str(maps.BENCH_UDP_PORT)),
        ("XDPFWD_BENCH_SRC_PORT", str(maps.BENCH_SRC_PORT)),
        ("XDPFWD_PIN_BALANCE", maps.PIN_BALANCE),
        ("XDPFWD_PIN_BUCKETS", maps.PIN_BUCKETS),
        ("XDPFWD_BUCKET_BITS", str(maps.BUCKET_BITS)),
        ("XDPFWD_BUCKETS_MAX_ENTRIES", str(maps.BUCKETS_MAX_ENTRIES)),
        ("XDPFWD_HASH_SYMMETRIC", str(maps.HASH_MODES["symmetric"])),
        ("XDPFWD_HASH_L4", str(maps.HASH_MODES["l4"])),
        ("XDPFWD_HASH_L3", str(maps.HASH_MODES["l3"])),
        ("XDPFWD_HASH_L2", str(maps.HASH_MODES["l2"])),
        ("XDPFWD_PIN_BENCH_FLOOD", maps.PIN_BENCH_FLOOD),
        ("XDPFWD_PIN_MCAST_SOURCES", maps.PIN_MCAST_SOURCES),
        ("XDPFWD_PIN_MCAST_GROUPS", maps.PIN_MCAST_GROUPS),
        ("XDPFWD_PIN_MCAST_STATS", maps.PIN_MCAST_STATS),
        ("XDPFWD_PIN_MCAST_COPIES", maps.PIN_MCAST_COPIES),
        ("XDPFWD_PIN_PROG_MCAST", maps.PIN_PROG_MCAST),
        ("XDPFWD_MCAST_MAX_GROUPS", str(maps.MCAST_MAX_GROUPS)),
        ("XDPFWD_MCAST_MAX_MEMBERS", str(maps.MCAST_MAX_MEMBERS)),
        ("XDPFWD_MCAST_MAX_SOURCES", str(maps.MCAST_MAX_SOURCES)),
        ("XDPFWD_MCAST_MAX_COPIES", str(maps.MCAST_MAX_COPIES)),
        ("XDPFWD_MCAST_UNTAGGED", hex(maps.MCAST_UNTAGGED)),
        ("XDPFWD_MCAST_MAC", str(maps.MCAST_MAC)),
        ("XDPFWD_MCAST_IPV4", str(maps.MCAST_IPV4)),
        ("XDPFWD_MCAST_IPV6", str(maps.MCAST_IPV6)),
        ("XDPFWD_MCAST_EXCLUDE_INGRESS", str(maps.MCAST_EXCLUDE_INGRESS)),
    ],
)
def test_python_mirrors_the_c_header(c_name, py_value):
    assert c_define(c_name) == py_value


def c_struct_fields(name: str) -> list[str]:
    body = re.search(rf"struct {name} {{(.*?)}};", HEADER, re.S).group(1)
    return re.findall(r"struct xdpfwd_counter (\w+);", body)


@pytest.mark.parametrize(
    "c_struct, cls",
    [("xdpfwd_port_stats", maps.PortStats), ("xdpfwd_egress_stats", maps.EgressStats)],
)
def test_stats_fields_follow_the_c_struct_order(c_struct, cls):
    counters = c_struct_fields(c_struct)
    expected = [f"{c}_{unit}" for c in counters for unit in ("packets", "bytes")]
    assert list(cls.__dataclass_fields__) == expected


class FakeKernel:
    """Stands in for the bpf(2) map calls: one store per pinned path."""

    def __init__(self, monkeypatch, infos: dict[str, sc.MapInfo]):
        self.paths = list(infos)
        self.infos = infos
        self.stores: dict[str, dict[bytes, bytes]] = {path: {} for path in infos}
        monkeypatch.setattr(sc, "obj_get", lambda path: 100 + self.paths.index(path))
        monkeypatch.setattr(sc, "map_info", lambda fd: self.infos[self.paths[fd - 100]])
        monkeypatch.setattr(sc, "map_lookup", lambda fd, k, size: self.store(fd).get(k))
        monkeypatch.setattr(sc, "map_update", self.update)
        monkeypatch.setattr(sc, "map_delete", lambda fd, k: self.store(fd).pop(k, None) is not None)
        monkeypatch.setattr(sc, "possible_cpus", lambda: 2)
        monkeypatch.setattr(os, "close", lambda fd: None)

    def store(self, fd):
        return self.stores[self.paths[fd - 100]]

    def update(self, fd, key, value, flags=0):
        if flags == sc.BPF_NOEXIST and key in self.store(fd):
            raise FileExistsError(17, "exists")
        self.store(fd)[key] = value


def key(ifindex):
    return struct.pack("=I", ifindex)


def test_forward_entry_is_a_bpf_devmap_val(monkeypatch):
    kernel = FakeKernel(
        monkeypatch, {"/fwd": sc.MapInfo(sc.MAP_TYPE_DEVMAP_HASH, 1, 4, 8, 65536, "x")}
    )
    fwd = maps.ForwardTable("/fwd")
    fwd.set(7, 9)
    assert kernel.stores["/fwd"][key(7)] == struct.pack("=Ii", 9, 0)
    # The kernel returns the egress program's id in the fd slot.
    kernel.stores["/fwd"][key(7)] = struct.pack("=Ii", 9, 42)
    assert fwd.get(7) == maps.FwdEntry(egress_ifindex=9, egress_prog_id=42)
    assert fwd.get(8) is None
    assert fwd.table_type == "devmap-hash"


@pytest.fixture
def stats_kernel(monkeypatch):
    return FakeKernel(
        monkeypatch,
        {
            "/slots": sc.MapInfo(sc.MAP_TYPE_PERCPU_ARRAY, 2, 4, 64, maps.STATS_SLOTS, "x"),
            "/slots_hi": sc.MapInfo(sc.MAP_TYPE_PERCPU_HASH, 3, 4, 64, maps.MAX_PORTS, "x"),
        },
    )


@pytest.mark.parametrize(
    "ifindex, where",
    [(5, "/slots"), (maps.STATS_SLOTS, "/slots_hi")],
    ids=["low-ifindex-array-slot", "high-ifindex-hash"],
)
def test_port_stats_are_summed_over_cpus(stats_kernel, ifindex, where):
    stats = maps.SlottedStats("/slots", maps.PortStats)
    stats.reset(ifindex)
    assert stats.read(ifindex) == maps.PortStats()
    cpu0 = struct.pack("=8Q", 10, 1000, 1, 60, 1, 60, 0, 0)
    cpu1 = struct.pack("=8Q", 5, 500, 2, 120, 0, 0, 2, 120)
    stats_kernel.stores[where][key(ifindex)] = cpu0 + cpu1
    total = stats.read(ifindex)
    assert total.redirect_packets == 15 and total.redirect_bytes == 1500
    assert total.miss_packets == 3
    assert total.rx_packets == 15 + 1 + 2
    assert total.rx_bytes == 1500 + 60 + 120


def test_deleting_port_stats_zeroes_a_slot_and_removes_a_hash_key(stats_kernel):
    stats = maps.SlottedStats("/slots", maps.PortStats)
    for ifindex in (5, 5000):
        stats.reset(ifindex)
        stats.delete(ifindex)
    assert stats_kernel.stores["/slots"][key(5)] == bytes(128)
    assert key(5000) not in stats_kernel.stores["/slots_hi"]


def test_table_type_names():
    assert maps.table_type_name(sc.MAP_TYPE_DEVMAP) == "devmap"
    assert maps.table_type_name(sc.MAP_TYPE_DEVMAP_HASH) == "devmap-hash"
    with pytest.raises(ValueError):
        maps.table_type_name(sc.MAP_TYPE_HASH)


@pytest.mark.parametrize(
    "mac, ok",
    [
        ("02:00:5e:00:53:01", True),
        ("02:00:5E:00:53:0A", True),
        ("02:00:5e:00:53", False),
        ("02-00-5e-00-53-01", False),
        ("zz:00:00:00:00:00", False),
    ],
)
def test_mac_parsing(mac, ok):
    if ok:
        assert maps.mac_text(maps.mac_bytes(mac)) == mac.lower()
    else:
        with pytest.raises(ValueError):
            maps.mac_bytes(mac)


def test_rewrite_layout_and_flags(monkeypatch):
    kernel = FakeKernel(
        monkeypatch, {"/rw": sc.MapInfo(sc.MAP_TYPE_HASH, 4, 8, 16, maps.MAX_PAIRS, "x")}
    )
    table = maps.RewriteTable("/rw")
    table.set(3, 4, maps.Rewrite(None, "02:00:00:00:00:09"))
    raw = kernel.stores["/rw"][struct.pack("=II", 3, 4)]
    assert raw == bytes(6) + bytes.fromhex("020000000009") + struct.pack("=I", maps.REWRITE_DST)
    assert table.get(3, 4) == maps.Rewrite(None, "02:00:00:00:00:09")
    assert table.get(4, 3) is None


def test_plain_ifindex_entries(monkeypatch):
    kernel = FakeKernel(monkeypatch, {"/fwd": sc.MapInfo(sc.MAP_TYPE_DEVMAP, 1, 4, 4, 65536, "x")})
    fwd = maps.ForwardTable("/fwd")
    assert fwd.value_format == "ifindex"
    fwd.set(7, 9)
    assert kernel.stores["/fwd"][key(7)] == struct.pack("=I", 9)
    assert fwd.get(7) == maps.FwdEntry(9, 0)
    with pytest.raises(ValueError):
        fwd.set(7, 9, prog_fd=5)


def test_bucket_keys_pack_the_ingress_port_and_the_bucket():
    assert maps.BucketTable.key(3, 255) == 3 << 8 | 255
    with pytest.raises(ValueError):
        maps.BucketTable.key(1 << 24, 0)


def test_the_intent_document_is_kept_in_chunks(monkeypatch):
    path = "/sys/fs/bpf/x/intent"
    info = sc.MapInfo(sc.MAP_TYPE_HASH, 1, 4, 8, 256, "xdpfwd_intent")
    kernel = FakeKernel(monkeypatch, {path: info})
    monkeypatch.setattr(sc, "map_keys", lambda fd, size: list(kernel.store(fd)))
    store = maps.IntentStore(path)
    assert store.read() is None
    store.write(b"0123456789abcdefghij")
    assert store.read() == b"0123456789abcdefghij"
    assert len(kernel.stores[path]) == 1 + 3  # the length, then three 8-byte chunks
    store.write(b"short")
    assert store.read() == b"short" and len(kernel.stores[path]) == 2


# --- multicast ---------------------------------------------------------------------


def c_struct_body(name: str) -> list[str]:
    body = re.search(rf"struct {name} {{(.*?)}};", HEADER, re.S).group(1)
    return [
        line.split("/*")[0].strip() for line in body.splitlines() if line.split("/*")[0].strip()
    ]


@pytest.mark.parametrize(
    "c_struct, layout, fields_",
    [
        (
            "xdpfwd_mcast_key",
            maps._MCAST_KEY,
            ["__u32 ifindex;", "__u8 kind;", "__u8 pad[3];", "__u8 addr[16];"],
        ),
        (
            "xdpfwd_mcast_source",
            maps._MCAST_SOURCE,
            ["__u32 slot;", "__u32 flags;", "__u32 copies;", "__u32 pad;"],
        ),
        (
            "xdpfwd_mcast_stats",
            maps._MCAST_STATS,
            ["struct xdpfwd_counter in;", "__u64 copies;"],
        ),
    ],
    ids=["key", "source", "stats"],
)
def test_multicast_layouts_follow_the_c_structs(c_struct, layout, fields_):
    assert c_struct_body(c_struct) == fields_
    sizes = {"__u32": 4, "__u8": 1, "__u64": 8, "struct": 16}
    expected = 0
    for field in fields_:
        kind = field.split()[0]
        count = int(re.search(r"\[(\d+)\]", field).group(1)) if "[" in field else 1
        expected += sizes[kind] * count
    assert layout.size == expected


@pytest.mark.parametrize(
    "text, kind, raw, shown",
    [
        ("239.1.1.1", maps.MCAST_IPV4, bytes([239, 1, 1, 1]), "239.1.1.1"),
        ("224.0.0.251", maps.MCAST_IPV4, bytes([224, 0, 0, 251]), "224.0.0.251"),
        (
            "FF3E:0::1:1",
            maps.MCAST_IPV6,
            bytes.fromhex("ff3e" + "00" * 10 + "00010001"),
            "ff3e::1:1",
        ),
        ("01:00:5E:00:00:FB", maps.MCAST_MAC, bytes.fromhex("01005e0000fb"), "01:00:5e:00:00:fb"),
        ("ff:ff:ff:ff:ff:ff", maps.MCAST_MAC, b"\xff" * 6, "ff:ff:ff:ff:ff:ff"),
    ],
    ids=["ipv4", "ipv4-link-local", "ipv6", "mac", "broadcast-mac"],
)
def test_group_addresses_parse_to_their_key(text, kind, raw, shown):
    addr = maps.McastAddr.parse(text)
    assert (addr.kind, addr.raw, addr.text) == (kind, raw, shown)
    packed = addr.key(7)
    assert len(packed) == 24 and packed[:4] == struct.pack("=I", 7)
    assert packed[4] == kind and packed[5:8] == bytes(3)
    assert packed[8:] == raw + bytes(16 - len(raw))  # zeros after the address
    assert maps.McastAddr.from_key(packed) == (7, addr)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("10.0.0.1", "not a multicast address"),
        ("2001:db8::1", "not a multicast address"),
        ("02:00:00:00:00:01", "unicast MAC"),
        ("eth0", "not a multicast group"),
        ("239.1.1", "not a multicast group"),
        ("ff02::1%eth1", "takes no %scope"),
    ],
    ids=["ipv4-unicast", "ipv6-unicast", "mac-unicast", "name", "short", "scoped"],
)
def test_group_addresses_refused(text, reason):
    with pytest.raises(ValueError, match=reason):
        maps.McastAddr.parse(text)


@pytest.mark.parametrize(
    "group, mac",
    [
        ("239.1.1.1", "01:00:5e:01:01:01"),
        ("239.129.1.1", "01:00:5e:01:01:01"),
        ("ff3e::1:1", "33:33:00:01:00:01"),
        ("01:00:5e:00:00:fb", "01:00:5e:00:00:fb"),
    ],
)
def test_the_mac_of_a_group(group, mac):
    assert maps.McastAddr.parse(group).mac_text() == mac


def test_multicast_sources_table(monkeypatch):
    kernel = FakeKernel(
        monkeypatch,
        {"/src": sc.MapInfo(sc.MAP_TYPE_HASH, 5, 24, 16, maps.MCAST_MAX_SOURCES, "x")},
    )
    monkeypatch.setattr(sc, "map_keys", lambda fd, size: list(kernel.store(fd)))
    table = maps.McastSourceTable("/src")
    group = maps.McastAddr.parse("239.1.1.1")
    table.set(3, group, maps.McastSource(5, maps.MCAST_EXCLUDE_INGRESS, 2))
    assert kernel.stores["/src"][group.key(3)] == struct.pack("=IIII", 5, 1, 2, 0)
    assert table.items() == {(3, group): maps.McastSource(5, 1, 2)}
    assert table.items()[(3, group)].exclude_ingress
    assert table.remove(3, group) and table.items() == {}


def user_progs(monkeypatch):
    info = sc.MapInfo(sc.MAP_TYPE_LRU_HASH, 5, 4, 352, 1024, "xdpfwd_user")
    kernel = FakeKernel(monkeypatch, {"/user": info})
    return kernel, maps.UserProgTable("/user")


def test_user_program_records_round_trip_and_refuse_what_does_not_fit(monkeypatch):
    _, table = user_progs(monkeypatch)
    prog = maps.UserProg("/srv/é/" + "p" * 245 + ".c", "f", bytes(32))
    assert len(prog.path.encode()) == maps.USER_PROG_PATH_MAX
    table.set(7, prog)
    assert table.get(7) == prog
    with pytest.raises(ValueError):
        table.set(8, maps.UserProg("/" + "p" * maps.USER_PROG_PATH_MAX, "f", bytes(32)))
    with pytest.raises(ValueError):
        table.set(8, maps.UserProg("/p.c", "f" * (maps.USER_PROG_FUNC_MAX + 1), bytes(32)))


@pytest.mark.parametrize(
    "path",
    [
        "/" + "é" * 128,  # 257 bytes cut at 256: inside a character, and no NUL
        "/" + "p" * 255,  # 256 bytes: fits the field but leaves no NUL: cut short
    ],
    ids=["cut-inside-a-character", "no-terminator"],
)
def test_records_cut_short_by_earlier_versions_read_as_not_recorded(monkeypatch, path):
    kernel, table = user_progs(monkeypatch)
    raw = struct.pack("=256s64s32s", path.encode(), b"f", bytes(32))
    kernel.stores["/user"][key(9)] = raw
    assert table.get(9) is None
