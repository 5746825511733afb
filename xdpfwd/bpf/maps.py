"""Typed access to xdpfwd's pinned maps; names and layouts mirror bpf_src/xdpfwd_common.h."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, fields

from . import syscall as sc

PIN_FWD = "fwd"
PIN_PORTS = "ports"
PIN_PORT_STATS = "port_stats"
PIN_PORT_STATS_HI = "port_stats_hi"
PIN_PROG_INGRESS = "prog_ingress"

FWD_MAX_ENTRIES = 65536
MAX_PORTS = 4096
STATS_SLOTS = 1024

PIN_BENCH_CFG = "bench_cfg"
PIN_BENCH_SINK = "bench_sink"
PIN_BENCH_FWD = "bench_fwd"
BENCH_UDP_PORT = 9
BENCH_SRC_PORT = 1024

# enum xdp_action
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

TABLE_TYPES = {"devmap": sc.MAP_TYPE_DEVMAP, "devmap-hash": sc.MAP_TYPE_DEVMAP_HASH}
ON_MISS_VERDICTS = {"pass": XDP_PASS, "drop": XDP_DROP}

_U32 = struct.Struct("=I")
_DEVMAP_VAL = struct.Struct("=Ii")  # struct bpf_devmap_val: ifindex, prog fd (id on read)
_PORT = struct.Struct("=I")  # struct xdpfwd_port
_COUNTER = struct.Struct("=QQ")  # struct xdpfwd_counter
_BENCH_CFG = struct.Struct("=II")  # struct xdpfwd_bench_cfg


@dataclass(frozen=True)
class PortStats:
    """Counters of one ingress port, summed over CPUs."""

    redirect_packets: int = 0
    redirect_bytes: int = 0
    miss_packets: int = 0
    miss_bytes: int = 0
    pass_packets: int = 0
    pass_bytes: int = 0
    drop_packets: int = 0
    drop_bytes: int = 0

    @property
    def rx_packets(self) -> int:
        return self.redirect_packets + self.pass_packets + self.drop_packets

    @property
    def rx_bytes(self) -> int:
        return self.redirect_bytes + self.pass_bytes + self.drop_bytes

    def as_dict(self) -> dict[str, int]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes, **d}


_PORT_STATS = struct.Struct("=" + "Q" * len(fields(PortStats)))


@dataclass(frozen=True)
class FwdEntry:
    egress_ifindex: int
    egress_prog_id: int


def _key(ifindex: int) -> bytes:
    return _U32.pack(ifindex)


class PinnedMap:
    """A map opened from its pin; owns the fd."""

    def __init__(self, path: str):
        self.path = path
        self.fd = sc.obj_get(path)
        self.info = sc.map_info(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def ifindexes(self) -> list[int]:
        return [_U32.unpack(k)[0] for k in sc.map_keys(self.fd, self.info.key_size)]

    def delete(self, ifindex: int) -> bool:
        return sc.map_delete(self.fd, _key(ifindex))

    def _slot(self) -> int:
        """Bytes per CPU in a per-CPU map's value."""
        return (self.info.value_size + 7) // 8 * 8

    def _read_percpu(self, key: int, layout: struct.Struct) -> list[int] | None:
        """A per-CPU value with every field summed over the CPUs; None if key is absent."""
        ncpus, slot = sc.possible_cpus(), self._slot()
        raw = sc.map_lookup(self.fd, _key(key), slot * ncpus)
        if raw is None:
            return None
        per_cpu = [layout.unpack_from(raw, cpu * slot) for cpu in range(ncpus)]
        return [sum(field) for field in zip(*per_cpu, strict=True)]


class ForwardTable(PinnedMap):
    """Forwarding devmap: ingress ifindex -> struct bpf_devmap_val."""

    @property
    def table_type(self) -> str:
        return table_type_name(self.info.map_type)

    def get(self, ingress: int) -> FwdEntry | None:
        raw = sc.map_lookup(self.fd, _key(ingress), self.info.value_size)
        if raw is None:
            return None
        egress, prog_id = _DEVMAP_VAL.unpack(raw)
        return FwdEntry(egress, prog_id)

    def set(self, ingress: int, egress: int) -> None:
        sc.map_update(self.fd, _key(ingress), _DEVMAP_VAL.pack(egress, 0))


class PortTable(PinnedMap):
    """Ports running the ingress program: ifindex -> on-miss verdict."""

    def get(self, ifindex: int) -> int | None:
        raw = sc.map_lookup(self.fd, _key(ifindex), self.info.value_size)
        return None if raw is None else _PORT.unpack(raw)[0]

    def set(self, ifindex: int, on_miss: int) -> None:
        sc.map_update(self.fd, _key(ifindex), _PORT.pack(on_miss))


class PortStatsTable:
    """Per-CPU counters per ingress port: an array slot below STATS_SLOTS, a hash above."""

    def __init__(self, slots_path: str, high_path: str):
        self.slots = PinnedMap(slots_path)
        try:
            self.high = PinnedMap(high_path)
        except BaseException:
            self.slots.close()
            raise

    def close(self) -> None:
        self.slots.close()
        self.high.close()

    def _map(self, ifindex: int) -> PinnedMap:
        return self.slots if ifindex < STATS_SLOTS else self.high

    def read(self, ifindex: int) -> PortStats | None:
        totals = self._map(ifindex)._read_percpu(ifindex, _PORT_STATS)
        return None if totals is None else PortStats(*totals)

    def reset(self, ifindex: int) -> None:
        """Zero the port's counters (creating them)."""
        table = self._map(ifindex)
        sc.map_update(table.fd, _key(ifindex), bytes(table._slot() * sc.possible_cpus()))

    def delete(self, ifindex: int) -> None:
        if ifindex < STATS_SLOTS:
            self.reset(ifindex)
        else:
            self.high.delete(ifindex)


class BenchConfig(PinnedMap):
    def set(self, target_ifindex: int, flows: int) -> None:
        sc.map_update(self.fd, _key(0), _BENCH_CFG.pack(target_ifindex, flows))


class SinkCounter(PinnedMap):
    def read(self) -> tuple[int, int]:
        """(packets, bytes) that reached the sinks so far."""
        packets, nbytes = self._read_percpu(0, _COUNTER) or (0, 0)
        return packets, nbytes


def table_type_name(map_type: int) -> str:
    for name, value in TABLE_TYPES.items():
        if value == map_type:
            return name
    raise ValueError(f"map type {map_type} is not a devmap")


def create_pinned_devmap_hash(path: str, name: str = "xdpfwd_fwd") -> None:
    """Create and pin a forwarding DEVMAP_HASH (BCC cannot create this map type)."""
    fd = sc.map_create(sc.MAP_TYPE_DEVMAP_HASH, _U32.size, _DEVMAP_VAL.size, FWD_MAX_ENTRIES, name)
    try:
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)
