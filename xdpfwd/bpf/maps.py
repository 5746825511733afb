"""Typed access to xdpfwd's pinned maps; names and layouts mirror bpf_src/xdpfwd_common.h."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, fields

from . import syscall as sc

PIN_FWD = "fwd"
PIN_PORTS = "ports"
PIN_PORT_STATS = "port_stats"
PIN_PROG_INGRESS = "prog_ingress"

FWD_MAX_ENTRIES = 65536
MAX_PORTS = 4096

# enum xdp_action
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

TABLE_TYPES = {"devmap": sc.MAP_TYPE_DEVMAP, "devmap-hash": sc.MAP_TYPE_DEVMAP_HASH}
ON_MISS_VERDICTS = {"pass": XDP_PASS, "drop": XDP_DROP}

_U32 = struct.Struct("=I")
_DEVMAP_VAL = struct.Struct("=Ii")  # struct bpf_devmap_val: ifindex, prog fd (id on read)
_PORT = struct.Struct("=I")  # struct xdpfwd_port


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


class PortStatsTable(PinnedMap):
    """Per-CPU counters per ingress port."""

    def _slot(self) -> int:
        return (self.info.value_size + 7) // 8 * 8

    def read(self, ifindex: int) -> PortStats | None:
        ncpus = sc.possible_cpus()
        raw = sc.map_lookup(self.fd, _key(ifindex), self._slot() * ncpus)
        if raw is None:
            return None
        totals = [0] * len(fields(PortStats))
        for cpu in range(ncpus):
            values = _PORT_STATS.unpack_from(raw, cpu * self._slot())
            totals = [t + v for t, v in zip(totals, values, strict=True)]
        return PortStats(*totals)

    def create(self, ifindex: int) -> bool:
        """Add zeroed counters for a port; False when the port already has them."""
        zeros = bytes(self._slot() * sc.possible_cpus())
        try:
            sc.map_update(self.fd, _key(ifindex), zeros, sc.BPF_NOEXIST)
        except FileExistsError:
            return False
        return True


def table_type_name(map_type: int) -> str:
    for name, value in TABLE_TYPES.items():
        if value == map_type:
            return name
    raise ValueError(f"map type {map_type} is not a devmap")


def create_pinned_devmap_hash(path: str) -> None:
    """Create and pin the forwarding DEVMAP_HASH (BCC cannot create this map type)."""
    fd = sc.map_create(
        sc.MAP_TYPE_DEVMAP_HASH, _U32.size, _DEVMAP_VAL.size, FWD_MAX_ENTRIES, "xdpfwd_fwd"
    )
    try:
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)
