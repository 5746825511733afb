"""Value layouts of the pinned maps, checked against the C header and against fake kernels."""

import re
import struct

import pytest

from xdpfwd.bpf import maps, source
from xdpfwd.bpf import syscall as sc

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
    ],
)
def test_python_mirrors_the_c_header(c_name, py_value):
    assert c_define(c_name) == py_value


def c_struct_fields(name: str) -> list[str]:
    body = re.search(rf"struct {name} {{(.*?)}};", HEADER, re.S).group(1)
    return re.findall(r"struct xdpfwd_counter (\w+);", body)


def test_port_stats_fields_follow_the_c_struct_order():
    counters = c_struct_fields("xdpfwd_port_stats")
    expected = [f"{c}_{unit}" for c in counters for unit in ("packets", "bytes")]
    assert list(maps.PortStats().__dataclass_fields__) == expected


class FakeKernelMap:
    """Stands in for the bpf(2) map calls on one map."""

    def __init__(self, monkeypatch, info: sc.MapInfo):
        self.store: dict[bytes, bytes] = {}
        monkeypatch.setattr(sc, "obj_get", lambda path: 99)
        monkeypatch.setattr(sc, "map_info", lambda fd: info)
        monkeypatch.setattr(sc, "map_lookup", lambda fd, k, size: self.store.get(k))
        monkeypatch.setattr(sc, "map_update", self.update)
        monkeypatch.setattr(sc, "map_delete", lambda fd, k: self.store.pop(k, None) is not None)
        monkeypatch.setattr(sc, "possible_cpus", lambda: 2)

    def update(self, fd, key, value, flags=0):
        if flags == sc.BPF_NOEXIST and key in self.store:
            raise FileExistsError(17, "exists")
        self.store[key] = value


def test_forward_entry_is_a_bpf_devmap_val(monkeypatch):
    kernel = FakeKernelMap(monkeypatch, sc.MapInfo(sc.MAP_TYPE_DEVMAP_HASH, 1, 4, 8, 65536, "x"))
    fwd = maps.ForwardTable("/pin/fwd")
    fwd.set(7, 9)
    assert kernel.store[struct.pack("=I", 7)] == struct.pack("=Ii", 9, 0)
    # The kernel returns the egress program's id in the fd slot.
    kernel.store[struct.pack("=I", 7)] = struct.pack("=Ii", 9, 42)
    assert fwd.get(7) == maps.FwdEntry(egress_ifindex=9, egress_prog_id=42)
    assert fwd.get(8) is None
    assert fwd.table_type == "devmap-hash"


def test_port_stats_are_summed_over_cpus(monkeypatch):
    kernel = FakeKernelMap(monkeypatch, sc.MapInfo(sc.MAP_TYPE_PERCPU_HASH, 2, 4, 64, 4096, "x"))
    stats = maps.PortStatsTable("/pin/port_stats")
    assert stats.create(5) is True
    assert stats.create(5) is False
    cpu0 = struct.pack("=8Q", 10, 1000, 1, 60, 1, 60, 0, 0)
    cpu1 = struct.pack("=8Q", 5, 500, 2, 120, 0, 0, 2, 120)
    kernel.store[struct.pack("=I", 5)] = cpu0 + cpu1
    total = stats.read(5)
    assert total.redirect_packets == 15 and total.redirect_bytes == 1500
    assert total.miss_packets == 3
    assert total.rx_packets == 15 + 1 + 2
    assert total.rx_bytes == 1500 + 60 + 120


def test_table_type_names():
    assert maps.table_type_name(sc.MAP_TYPE_DEVMAP) == "devmap"
    assert maps.table_type_name(sc.MAP_TYPE_DEVMAP_HASH) == "devmap-hash"
    with pytest.raises(ValueError):
        maps.table_type_name(sc.MAP_TYPE_HASH)
