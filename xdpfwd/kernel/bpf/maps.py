"""Typed access to xdpfwd's pinned maps; names and layouts mirror bpf_src/xdpfwd_common.h."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field, fields

from xdpfwd.kernel.bpf import syscall as sc

PIN_FWD = "fwd"
PIN_PORTS = "ports"
PIN_PORT_STATS = "port_stats"
PIN_ENTRY_STATS = "entry_stats"
PIN_HI_SUFFIX = "_hi"
PIN_PROG_INGRESS = "prog_ingress"
PIN_PROG_EGRESS = "prog_egress"
PIN_PROG_REWRITE = "prog_egress_rewrite"
PIN_PROG_GROUP = "prog_egress_group"
PIN_GROUPS = "groups"
# Copies of ports and groups for ifindexes below STATS_SLOTS, in array slots the XDP
# programs read first (xdpfwd_ports.c): pin dirs made before them have none.
PIN_PORT_SLOTS = "port_slots"
PIN_GROUP_SLOTS = "group_slots"
PIN_FWD_SLOTS = "fwd_slots"
PIN_GROUP_DIR = "group"
PIN_PAIR_STATS = "pair_stats"
PIN_TX_EVENTS = "tx_events"
# User space only, no C side: where each user egress program came from (for `save`);
# the prog_flags every XDP program of the pin dir is loaded with (absent: 0, a pin dir
# made before multi-buffer support); the tracepoint programs and their bpf_links
# (+ the tracepoint's name).
PIN_USER_PROGS = "user_progs"
PIN_PROG_FLAGS = "prog_flags"
PIN_TRACE_PROG_PREFIX = "prog_tp_"
PIN_TRACE_LINK_PREFIX = "link_tp_"
# Earlier versions pinned tracepoint programs (BCC's TRACEPOINT_PROBE) under this
# prefix while `stats --watch` ran; still xdpfwd's to remove.
PIN_TRACE_LEGACY_PREFIX = "trace_"
PIN_REWRITE = "rewrite"
PIN_BALANCE = "balance"
PIN_BUCKETS = "buckets"
# The configuration last asked for, by device name (user space only, no C side).
PIN_INTENT = "intent"
# The first pin in a pin dir xdpfwd creates, the last it removes: its mark of ownership.
PIN_OWNER = "xdpfwd_owner"
PIN_NETNS = "netns"  # a link to the network namespace whose ports the pin dir serves
OWNER_NAME = "xdpfwd_owner"  # the marker map's own name, with its shape below
OWNER_FORMAT = 1  # the one value it holds: the pin dir's layout version
# Frames user egress programs gave a verdict other than XDP_PASS/XDP_DROP, per entry.
PIN_ENTRY_INVALID = "entry_invalid"
# Per entry counted by its ingress port's redirects, what the port had redirected when
# the entry's pair began (user space only): the pair's frames are those since.
PIN_ENTRY_BASE = "entry_base"
# What ended pairs and released ports had counted (user space only), so that the sums
# they were part of never go down: see RetiredTable and state/counters.retire().
PIN_RETIRED = "retired"

FWD_MAX_ENTRIES = 65536
MAX_PORTS = 4096
STATS_SLOTS = 1024
MAX_PAIRS = 16384
GROUP_MAX_MEMBERS = 64
BUCKET_BITS = 8
BUCKETS = 1 << BUCKET_BITS
BUCKETS_MAX_ENTRIES = 65536
# struct xdpfwd_balance.hash: what the hash of a balanced entry covers.
HASH_MODES = {"symmetric": 1, "l4": 2, "l3": 3, "l2": 4}

PIN_BENCH_CFG = "bench_cfg"
PIN_BENCH_SINK = "bench_sink"
PIN_BENCH_FWD = "bench_fwd"
PIN_BENCH_FLOOD = "bench_flood"
PIN_BENCH_SPREAD = "bench_spread"
BENCH_SPREAD_MAX = 4
BENCH_UDP_PORT = 9
BENCH_SRC_PORT = 1024

REWRITE_SRC = 1
REWRITE_DST = 2
PORT_BROADCAST = 1
PORT_EXCLUDE_INGRESS = 2
PORT_MEMBERS_SHIFT = 8  # a member's flags above it: its group's members

# enum xdp_action
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

TABLE_TYPES = {"devmap": sc.MAP_TYPE_DEVMAP, "devmap-hash": sc.MAP_TYPE_DEVMAP_HASH}
ON_MISS_VERDICTS = {"pass": XDP_PASS, "drop": XDP_DROP}
# Forwarding table values: struct bpf_devmap_val (Linux 5.8+) or a plain ifindex.
VALUE_FORMATS = {"devmap-val": 8, "ifindex": 4}

_U32 = struct.Struct("=I")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_DEVMAP_VAL = struct.Struct("=Ii")  # ifindex, egress prog fd (the kernel returns its id)
_PAIR = struct.Struct("=II")  # struct xdpfwd_pair
_PORT = struct.Struct("=II")  # struct xdpfwd_port
_COUNTER = struct.Struct("=QQ")  # struct xdpfwd_counter
_REWRITE = struct.Struct("=6s6sI")  # struct xdpfwd_rewrite
_BENCH_CFG = struct.Struct("=III")  # struct xdpfwd_bench_cfg
_USER_PROG = struct.Struct("=256s64s32s")  # source path, function, sha256 of the source
# Longest path and function name a record holds, NUL-terminated: a field without a NUL
# was cut short (earlier versions truncated long paths) and is not trusted.
USER_PROG_PATH_MAX = 255
USER_PROG_FUNC_MAX = 63


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
    too_big_packets: int = 0  # multi-buffer frames a group could not flood (dropped)
    too_big_bytes: int = 0

    @property
    def rx_packets(self) -> int:
        return self.redirect_packets + self.pass_packets + self.drop_packets + self.too_big_packets

    @property
    def rx_bytes(self) -> int:
        return self.redirect_bytes + self.pass_bytes + self.drop_bytes + self.too_big_bytes

    def as_dict(self) -> dict[str, int]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes, **d}


@dataclass(frozen=True)
class EgressStats:
    """What a forwarding entry's egress program did with its frames, summed over CPUs."""

    tx_packets: int = 0
    tx_bytes: int = 0
    drop_packets: int = 0
    drop_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        """In the names stats uses: a drop here is an egress program's."""
        return {
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "egress_drop_packets": self.drop_packets,
            "egress_drop_bytes": self.drop_bytes,
        }


@dataclass(frozen=True)
class PortSettings:
    """struct xdpfwd_port: what the ingress program does on a port without an entry."""

    on_miss: int = XDP_PASS
    flags: int = 0  # PORT_*
    # Of a member: its group's members, for the copies each flood should make. None
    # when writing: keep what the map has (only the group's changes set it).
    members: int | None = field(default=None, compare=False)

    @property
    def on_miss_name(self) -> str:
        """pass or drop, as the CLI and the configuration file say it."""
        return next((k for k, v in ON_MISS_VERDICTS.items() if v == self.on_miss), "pass")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & PORT_BROADCAST)

    @property
    def exclude_ingress(self) -> bool:
        return bool(self.flags & PORT_EXCLUDE_INGRESS)


@dataclass(frozen=True)
class TxEvents:
    """What the XDP tracepoints reported for a pair, summed over CPUs."""

    xmit_sent: int = 0  # not counted any more (see xdpfwd_trace.c)
    xmit_drops: int = 0  # includes frames the pair's egress program dropped
    redirect_errors: int = 0
    exceptions: int = 0


@dataclass(frozen=True)
class FwdEntry:
    egress_ifindex: int
    egress_prog_id: int  # 0: no egress program (always 0 in ifindex tables)


@dataclass(frozen=True)
class Rewrite:
    src: str | None  # MAC written as source address, or None to keep it
    dst: str | None

    def as_dict(self) -> dict:
        return {"src_mac": self.src, "dst_mac": self.dst}


def mac_bytes(mac: str) -> bytes:
    """Raises ValueError unless mac is six colon-separated pairs of hex digits."""
    if not _MAC.fullmatch(mac):
        raise ValueError(f"{mac!r} is not a MAC address (like 02:00:5e:00:53:01)")
    return bytes.fromhex(mac.replace(":", ""))


def rewrite_mac_bytes(mac: str, source: bool) -> bytes:
    """A MAC address an entry's rewrite may write; raises ValueError unless it is one:
    not all zeros, and a source address unicast (a frame from a group address is
    invalid, and switches drop it)."""
    raw = mac_bytes(mac)
    if raw == bytes(6):
        raise ValueError(f"{mac} is the null address, which no frame carries")
    if source and raw[0] & 1:
        raise ValueError(f"{mac} is a group address; a source address must be unicast")
    return raw


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _key(ifindex: int) -> bytes:
    return _U32.pack(ifindex)


def _pair(ingress: int, egress: int) -> bytes:
    return _PAIR.pack(ingress, egress)


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

    def _read_percpu(self, key: bytes, layout: struct.Struct) -> list[int] | None:
        """A per-CPU value with every field summed over the CPUs; None if key is absent."""
        ncpus, slot = sc.possible_cpus(), self._slot()
        raw = sc.map_lookup(self.fd, key, slot * ncpus)
        if raw is None:
            return None
        per_cpu = [layout.unpack_from(raw, cpu * slot) for cpu in range(ncpus)]
        return [sum(field) for field in zip(*per_cpu, strict=True)]


class DevMap(PinnedMap):
    """A devmap of xdpfwd's: values are bpf_devmap_val or plain egress ifindexes."""

    @property
    def table_type(self) -> str:
        return table_type_name(self.info.map_type)

    @property
    def value_format(self) -> str:
        return value_format_name(self.info.value_size)

    def _get(self, key: int) -> FwdEntry | None:
        raw = sc.map_lookup(self.fd, _key(key), self.info.value_size)
        if raw is None:
            return None
        if self.info.value_size == _U32.size:
            return FwdEntry(_U32.unpack(raw)[0], 0)
        return FwdEntry(*_DEVMAP_VAL.unpack(raw))

    def _value(self, egress: int, prog_fd: int) -> bytes:
        if self.info.value_size == _U32.size:
            if prog_fd:
                raise ValueError("plain ifindex entries cannot hold an egress program")
            return _U32.pack(egress)
        return _DEVMAP_VAL.pack(egress, prog_fd)

    def _set(self, key: int, egress: int, prog_fd: int) -> None:
        """Write an entry in one update: the kernel swaps it atomically."""
        sc.map_update(self.fd, _key(key), self._value(egress, prog_fd))


class BucketTable(DevMap):
    """Buckets of balanced entries: (ingress ifindex, bucket) -> egress (+ program)."""

    @staticmethod
    def key(ingress: int, bucket: int) -> int:
        if not 0 < ingress < 1 << (32 - BUCKET_BITS):
            raise ValueError(f"ifindex {ingress} is too large for a balanced entry")
        return ingress << BUCKET_BITS | bucket

    def get(self, ingress: int, bucket: int) -> FwdEntry | None:
        return self._get(self.key(ingress, bucket))

    def set(self, ingress: int, bucket: int, egress: int, prog_fd: int = 0) -> None:
        self._set(self.key(ingress, bucket), egress, prog_fd)

    def remove(self, ingress: int, bucket: int) -> bool:
        return sc.map_delete(self.fd, _key(self.key(ingress, bucket)))

    def table(self, ingress: int) -> list[FwdEntry | None]:
        """Every bucket of ingress's entry, in bucket order (None: no egress)."""
        return [self.get(ingress, bucket) for bucket in range(BUCKETS)]


class _SlotsAndHash:
    """Values keyed by ifindex: in an array slot below STATS_SLOTS, in a hash above
    (pinned at the array's path with PIN_HI_SUFFIX)."""

    def __init__(self, path: str):
        self.slots = PinnedMap(path)
        try:
            self.high = PinnedMap(path + PIN_HI_SUFFIX)
        except BaseException:
            self.slots.close()
            raise

    def close(self) -> None:
        self.slots.close()
        self.high.close()

    def _map(self, ifindex: int) -> PinnedMap:
        return self.slots if ifindex < STATS_SLOTS else self.high


class BalanceTable(_SlotsAndHash):
    """Balanced entries: ingress ifindex -> hash mode."""

    _VALUE = struct.Struct("=II")  # struct xdpfwd_balance

    def get(self, ifindex: int) -> str | None:
        """The hash mode of ifindex's balanced entry, or None."""
        raw = sc.map_lookup(self._map(ifindex).fd, _key(ifindex), self._VALUE.size)
        mode = self._VALUE.unpack(raw)[0] if raw is not None else 0
        return next((name for name, value in HASH_MODES.items() if value == mode), None)

    def set(self, ifindex: int, mode: str) -> None:
        value = self._VALUE.pack(HASH_MODES[mode], 0)
        sc.map_update(self._map(ifindex).fd, _key(ifindex), value)

    def clear(self, ifindex: int) -> None:
        if ifindex < STATS_SLOTS:
            sc.map_update(self.slots.fd, _key(ifindex), self._VALUE.pack(0, 0))
        else:
            self.high.delete(ifindex)


class IntentStore(PinnedMap):
    """A document kept in a map of INTENT_CHUNK-byte chunks: key 0 holds its length,
    keys 1.. its bytes. Written and read under the pin directory's lock."""

    def read(self) -> bytes | None:
        head = sc.map_lookup(self.fd, _key(0), self.info.value_size)
        if head is None:
            return None
        size = _U32.unpack_from(head)[0]
        chunks = []
        for index in range(1, -(-size // self.info.value_size) + 1):
            chunk = sc.map_lookup(self.fd, _key(index), self.info.value_size)
            if chunk is None:
                return None
            chunks.append(chunk)
        return b"".join(chunks)[:size]

    def write(self, data: bytes) -> None:
        size = self.info.value_size
        count = -(-len(data) // size)
        if count >= self.info.max_entries:
            raise OSError(errno.E2BIG, f"{len(data)} bytes do not fit the intent map")
        for index in range(count):
            chunk = data[index * size : (index + 1) * size]
            sc.map_update(self.fd, _key(index + 1), chunk.ljust(size, b"\0"))
        sc.map_update(self.fd, _key(0), _U32.pack(len(data)).ljust(size, b"\0"))
        for key in sc.map_keys(self.fd, _U32.size):
            if _U32.unpack(key)[0] > count:
                sc.map_delete(self.fd, key)


class GroupMap(DevMap):
    """A broadcast group: its devmap holds one entry per member port. Keys are the
    members' ifindexes in a DEVMAP_HASH, slot numbers in a DEVMAP."""

    def _keys(self) -> list[int]:
        if self.info.map_type == sc.MAP_TYPE_DEVMAP_HASH:
            return self.ifindexes()
        return list(range(self.info.max_entries))

    def members(self) -> dict[int, FwdEntry]:
        """Member ifindex -> its entry."""
        entries = (self._get(key) for key in self._keys())
        return {e.egress_ifindex: e for e in entries if e is not None}


class MapOfMaps(PinnedMap):
    """A map of maps keyed by a u32: written with an inner map's fd, read back as its
    id (the kernel returns ids, not fds)."""

    def set(self, key: int, inner_fd: int) -> None:
        sc.map_update(self.fd, _key(key), _U32.pack(inner_fd))

    def inner_id(self, key: int) -> int | None:
        raw = sc.map_lookup(self.fd, _key(key), _U32.size)
        return None if raw is None else _U32.unpack(raw)[0]


class _Mirrored(PinnedMap):
    """A map keyed by ifindex whose entries below STATS_SLOTS are copied into array
    slots, which the XDP programs read instead (an array lookup the verifier
    inlines; see xdpfwd_ports.c). It is read here alone: it holds every entry.
    Without slots (a pin dir made before them) the programs read it alone too."""

    slots: PinnedMap | None = None
    _unused = b""  # what an unused slot holds

    def mirror(self, slots: PinnedMap) -> None:
        self.slots = slots

    def _write(self, ifindex: int, value: bytes) -> None:
        # The slot last: a program never finds a slot ahead of the entry it copies.
        sc.map_update(self.fd, _key(ifindex), value)
        if self.slots is not None and ifindex < STATS_SLOTS:
            sc.map_update(self.slots.fd, _key(ifindex), value)

    def delete(self, ifindex: int) -> bool:
        if self.slots is not None and ifindex < STATS_SLOTS:
            if self._unused:
                sc.map_update(self.slots.fd, _key(ifindex), self._unused)
            else:
                sc.map_delete(self.slots.fd, _key(ifindex))
        return super().delete(ifindex)


@contextmanager
def _held_program(prog_id: int) -> Iterator[int]:
    """An fd on the program prog_id while the block runs (0 for none)."""
    fd = sc.prog_fd_by_id(prog_id) if prog_id else 0
    try:
        yield fd
    finally:
        if fd:
            os.close(fd)


class ForwardTable(_Mirrored, DevMap):
    """Forwarding devmap: ingress ifindex -> egress ifindex (+ egress program)."""

    def get(self, ingress: int) -> FwdEntry | None:
        return self._get(ingress)

    def set(self, ingress: int, egress: int, prog_fd: int = 0) -> None:
        self._write(ingress, self._value(egress, prog_fd))

    def copy_to_slots(self) -> None:
        for ingress in self.ifindexes():
            entry = self.get(ingress)
            if entry is not None and ingress < STATS_SLOTS:
                with _held_program(entry.egress_prog_id) as prog_fd:
                    self.set(ingress, entry.egress_ifindex, prog_fd)


class GroupsTable(_Mirrored, MapOfMaps):
    """Broadcast member ports: port ifindex -> its group's devmap (an empty slot of
    the ARRAY_OF_MAPS copy reads as none)."""

    group_id = MapOfMaps.inner_id

    def set(self, key: int, inner_fd: int) -> None:
        self._write(key, _U32.pack(inner_fd))

    def copy_to_slots(self) -> None:
        for port in self.ifindexes():
            map_id = self.group_id(port)
            if map_id is not None and port < STATS_SLOTS:
                fd = sc.map_fd_by_id(map_id)
                try:
                    self.set(port, fd)
                finally:
                    os.close(fd)


class PortTable(_Mirrored):
    """Ports running the ingress program: ifindex -> PortSettings (a slot with
    on_miss 0 is unused)."""

    _unused = bytes(_PORT.size)

    def get(self, ifindex: int) -> PortSettings | None:
        raw = sc.map_lookup(self.fd, _key(ifindex), self.info.value_size)
        if raw is None:
            return None
        on_miss, flags = _PORT.unpack(raw)
        low = (1 << PORT_MEMBERS_SHIFT) - 1
        return PortSettings(on_miss, flags & low, flags >> PORT_MEMBERS_SHIFT)

    def set(self, ifindex: int, settings: PortSettings) -> None:
        members = settings.members
        if members is None:
            members = (self.get(ifindex) or PortSettings(members=0)).members
        flags = settings.flags | members << PORT_MEMBERS_SHIFT
        self._write(ifindex, _PORT.pack(settings.on_miss, flags))

    def copy_to_slots(self) -> None:
        for port in self.ifindexes():
            settings = self.get(port)
            if settings is not None and port < STATS_SLOTS:
                self.set(port, settings)


class SlottedStats(_SlotsAndHash):
    """Per-CPU counters keyed by ifindex, read as summed dataclasses of type cls,
    and what follows them, unpaired counts (`tail` of them)."""

    def __init__(self, path: str, cls: type, tail: int = 0):
        super().__init__(path)
        self.cls = cls
        # A pin dir made by an older xdpfwd has fewer counters: the rest read as 0,
        # and a tail count it does not have as None.
        count = min(len(fields(cls)) + tail, self.slots.info.value_size // 8)
        self._layout = struct.Struct("=" + "Q" * count)
        self._fields = min(count, len(fields(cls)))
        self._tail = tail

    def read(self, ifindex: int):
        """The summed counters of ifindex (an instance of cls), or None."""
        return self.read_with_tail(ifindex)[0]

    def read_with_tail(self, ifindex: int) -> tuple:
        """(the summed counters of ifindex or None, the tail counts or None each)."""
        totals = self._map(ifindex)._read_percpu(_key(ifindex), self._layout)
        if totals is None:
            return None, *([None] * self._tail)
        tail = totals[self._fields :]
        return self.cls(*totals[: self._fields]), *tail, *([None] * (self._tail - len(tail)))

    def reset(self, ifindex: int) -> None:
        """Zero the counters of ifindex (creating them)."""
        table = self._map(ifindex)
        sc.map_update(table.fd, _key(ifindex), bytes(table._slot() * sc.possible_cpus()))

    def delete(self, ifindex: int) -> None:
        if ifindex < STATS_SLOTS:
            self.reset(ifindex)
        else:
            self.high.delete(ifindex)


class PairMap(PinnedMap):
    """A map keyed by struct xdpfwd_pair."""

    def pairs(self) -> list[tuple[int, int]]:
        return [_PAIR.unpack(k) for k in sc.map_keys(self.fd, self.info.key_size)]

    def forget(self, ingress: int, egress: int) -> None:
        sc.map_delete(self.fd, _pair(ingress, egress))


class PairStatsTable(PairMap):
    """Per-CPU counters per (ingress, egress) pair of broadcast groups."""

    _layout = struct.Struct("=4Q")

    def read(self, ingress: int, egress: int) -> EgressStats | None:
        totals = self._read_percpu(_pair(ingress, egress), self._layout)
        return None if totals is None else EgressStats(*totals)


class InvalidVerdictTable(PinnedMap):
    """Per-CPU counts, per forwarding entry (its ingress ifindex), of the frames its
    user egress program gave a verdict other than XDP_PASS or XDP_DROP."""

    def read(self, ingress: int) -> tuple[int, int]:
        """Frames and bytes."""
        packets, nbytes = self._read_percpu(_key(ingress), _COUNTER) or (0, 0)
        return packets, nbytes


class TxEventsTable(PairMap):
    """Per-CPU tracepoint counts per (ingress, egress) pair (egress 0: exceptions)."""

    _layout = struct.Struct("=4Q")

    def read_all(self) -> dict[tuple[int, int], TxEvents]:
        events = {}
        for key in sc.map_keys(self.fd, self.info.key_size):
            totals = self._read_percpu(key, self._layout)
            if totals is not None:
                events[_PAIR.unpack(key)] = TxEvents(*totals)
        return events


class RewriteTable(PairMap):
    """Ethernet rewrites of entries: (ingress, egress) -> addresses to write."""

    def get(self, ingress: int, egress: int) -> Rewrite | None:
        raw = sc.map_lookup(self.fd, _pair(ingress, egress), self.info.value_size)
        if raw is None:
            return None
        src, dst, flags = _REWRITE.unpack(raw)
        return Rewrite(
            mac_text(src) if flags & REWRITE_SRC else None,
            mac_text(dst) if flags & REWRITE_DST else None,
        )

    def set(self, ingress: int, egress: int, rewrite: Rewrite) -> None:
        flags = (REWRITE_SRC if rewrite.src else 0) | (REWRITE_DST if rewrite.dst else 0)
        src = mac_bytes(rewrite.src) if rewrite.src else bytes(6)
        dst = mac_bytes(rewrite.dst) if rewrite.dst else bytes(6)
        sc.map_update(self.fd, _pair(ingress, egress), _REWRITE.pack(src, dst, flags))


@dataclass(frozen=True)
class UserProg:
    path: str
    function: str
    digest: bytes  # sha256 of the source it was compiled from


class UserProgTable(PinnedMap):
    """Program id -> where a user egress program came from (an LRU hash: ids of
    programs long gone fall out by themselves)."""

    def get(self, prog_id: int) -> UserProg | None:
        raw = sc.map_lookup(self.fd, _key(prog_id), self.info.value_size)
        if raw is None:
            return None
        path, function, digest = _USER_PROG.unpack(raw)
        if b"\0" not in path or b"\0" not in function:
            return None  # cut short: not where the program came from
        try:
            path_text, function_text = (f.split(b"\0")[0].decode() for f in (path, function))
        except UnicodeDecodeError:
            return None
        return UserProg(path_text, function_text, digest)

    def set(self, prog_id: int, prog: UserProg) -> None:
        path, function = prog.path.encode(), prog.function.encode()
        if len(path) > USER_PROG_PATH_MAX or len(function) > USER_PROG_FUNC_MAX:
            raise ValueError(f"{prog.path}:{prog.function} is too long to record")
        value = _USER_PROG.pack(path, function, prog.digest)
        sc.map_update(self.fd, _key(prog_id), value)


def create_pinned_owner(path: str) -> None:
    """Pin the marker of a pin dir that is xdpfwd's: a one-slot array, named and shaped
    so that no other tool's map looks like it. Raises FileExistsError if path is taken."""
    _pin_record(path, OWNER_NAME, _U32.pack(OWNER_FORMAT))


def _pin_record(path: str, name: str, value: bytes) -> None:
    """Pin a one-slot array named name that holds value: a record of the pin dir's.
    Raises FileExistsError if path is taken."""
    fd = sc.map_create(sc.MAP_TYPE_ARRAY, _U32.size, len(value), 1, name)
    try:
        sc.map_update(fd, _key(0), value)
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)


def _read_record(path: str, layout: struct.Struct) -> tuple | None:
    """The fields of the record pinned at path; None when nothing is pinned there."""
    try:
        fd = sc.obj_get(path)
    except FileNotFoundError:
        return None
    try:
        raw = sc.map_lookup(fd, _key(0), layout.size)
        return layout.unpack(raw) if raw else layout.unpack(bytes(layout.size))
    finally:
        os.close(fd)


def is_owner_marker(path: str) -> bool:
    """Whether path holds xdpfwd's ownership marker (False for anything else).

    Raises PermissionError when this process may not open what is pinned there.
    """
    fd = sc.obj_get(path)
    try:
        if sc.fd_kind(fd) != "map":
            return False
        info = sc.map_info(fd)
        shaped = (info.map_type, info.key_size, info.value_size, info.max_entries, info.name) == (
            sc.MAP_TYPE_ARRAY,
            _U32.size,
            _U32.size,
            1,
            OWNER_NAME,
        )
        # And what xdpfwd wrote in it: a map made by hand in its shape holds 0.
        return shaped and sc.map_lookup(fd, _key(0), _U32.size) == _U32.pack(OWNER_FORMAT)
    finally:
        os.close(fd)


class EntryBaseTable(PinnedMap):
    """Ingress ifindex -> (packets, bytes) its port had redirected when its entry's
    pair began."""

    def get(self, ifindex: int) -> tuple[int, int] | None:
        raw = sc.map_lookup(self.fd, _key(ifindex), self.info.value_size)
        return None if raw is None else _COUNTER.unpack(raw)

    def set(self, ifindex: int, base: tuple[int, int]) -> None:
        sc.map_update(self.fd, _key(ifindex), _COUNTER.pack(*base))


@dataclass(frozen=True)
class RetiredPort:
    """What ended pairs had counted on a port: as their egress, what they sent (and
    multicast copies to it); as their ingress, their egress programs' drops and
    invalid verdicts, and how many of those drops the tracepoint counted too; and the
    copies of its floods that they counted as sent or dropped."""

    tx_packets: int = 0
    tx_bytes: int = 0
    egress_drop: int = 0
    egress_invalid: int = 0
    traced_drops: int = 0
    flooded: int = 0  # copies of its floods sent or dropped by a driver, as ingress

    def plus(self, other: RetiredPort) -> RetiredPort:
        return RetiredPort(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class DepartedPorts:
    """What ports that left the counters (released, deleted, sent to no more) had
    counted, in the sums over ports."""

    received: PortStats = PortStats()
    tx_packets: int = 0
    tx_bytes: int = 0

    def plus(self, other: DepartedPorts) -> DepartedPorts:
        return DepartedPorts._of(
            tuple(a + b for a, b in zip(self._row(), other._row(), strict=True))
        )

    def _row(self) -> tuple[int, ...]:
        return (*astuple(self.received), self.tx_packets, self.tx_bytes)

    @classmethod
    def _of(cls, row: tuple[int, ...]) -> DepartedPorts:
        return cls(PortStats(*row[:-2]), *row[-2:])


_RETIRED = struct.Struct("=6Q")
RELEASED_ROW = 0  # no device has ifindex 0
# A DepartedPorts, 12 counts, in two rows of 6 at keys no ifindex (a positive int) has:
# a row more in the same map, so pin dirs made before need no new pin.
DEPARTED_ROWS = (0xFFFFFFFF, 0xFFFFFFFE)
# The copies of broadcasts no member got, of ports released since (its first count).
RELEASED_COPIES_ROW = 0xFFFFFFFD


class RetiredTable(PinnedMap):
    """Ifindex -> RetiredPort; row RELEASED_ROW -> what released ports had not
    forwarded, one count per reason (model.counters.LOSS_REASONS, in its order);
    rows DEPARTED_ROWS -> DepartedPorts; row RELEASED_COPIES_ROW -> the broadcast
    copies lost of released ports."""

    def rows(self) -> dict[int, RetiredPort]:
        """Every port's row."""
        found = {}
        for key in sc.map_keys(self.fd, self.info.key_size):
            (ifindex,) = _U32.unpack(key)
            if ifindex not in (RELEASED_ROW, RELEASED_COPIES_ROW, *DEPARTED_ROWS):
                found[ifindex] = self.port(ifindex)
        return found

    def clear(self) -> None:
        for key in sc.map_keys(self.fd, self.info.key_size):
            sc.map_delete(self.fd, key)

    def port(self, ifindex: int) -> RetiredPort:
        raw = sc.map_lookup(self.fd, _key(ifindex), self.info.value_size)
        return RetiredPort() if raw is None else RetiredPort(*_RETIRED.unpack(raw))

    def set_port(self, ifindex: int, retired: RetiredPort) -> None:
        sc.map_update(self.fd, _key(ifindex), _RETIRED.pack(*astuple(retired)))

    def released(self) -> tuple[int, ...]:
        raw = sc.map_lookup(self.fd, _key(RELEASED_ROW), self.info.value_size)
        return (0,) * 6 if raw is None else _RETIRED.unpack(raw)

    def set_released(self, counts: tuple[int, ...]) -> None:
        sc.map_update(self.fd, _key(RELEASED_ROW), _RETIRED.pack(*counts))

    def released_copies(self) -> int:
        raw = sc.map_lookup(self.fd, _key(RELEASED_COPIES_ROW), self.info.value_size)
        return 0 if raw is None else _RETIRED.unpack(raw)[0]

    def set_released_copies(self, copies: int) -> None:
        sc.map_update(self.fd, _key(RELEASED_COPIES_ROW), _RETIRED.pack(copies, 0, 0, 0, 0, 0))

    def departed(self) -> DepartedPorts:
        rows = [sc.map_lookup(self.fd, _key(k), self.info.value_size) for k in DEPARTED_ROWS]
        if None in rows:  # pins made before there were these rows; or zeroed
            return DepartedPorts()
        return DepartedPorts._of(_RETIRED.unpack(rows[0]) + _RETIRED.unpack(rows[1]))

    def set_departed(self, departed: DepartedPorts) -> None:
        row = departed._row()
        for key, half in zip(DEPARTED_ROWS, (row[:6], row[6:]), strict=True):
            sc.map_update(self.fd, _key(key), _RETIRED.pack(*half))


def _create_pinned_u32_map(path: str, map_type: int, value_size: int, size: int, name: str):
    """A map keyed by a u32 that only user space uses, pinned at path."""
    fd = sc.map_create(map_type, _U32.size, value_size, size, name)
    try:
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)


def create_pinned_retired(path: str) -> None:
    _create_pinned_u32_map(path, sc.MAP_TYPE_HASH, _RETIRED.size, MAX_PORTS, "xdpfwd_retired")


def create_pinned_entry_base(path: str) -> None:
    _create_pinned_u32_map(path, sc.MAP_TYPE_HASH, _COUNTER.size, MAX_PORTS, "xdpfwd_base")


def create_pinned_user_progs(path: str) -> None:
    _create_pinned_u32_map(path, sc.MAP_TYPE_LRU_HASH, _USER_PROG.size, 1024, "xdpfwd_user")


def create_pinned_prog_flags(path: str, prog_flags: int) -> None:
    """Record the prog_flags the pin dir's XDP programs are loaded with: programs that
    share a devmap must agree on BPF_F_XDP_HAS_FRAGS, later ones (user egress
    programs) too."""
    _pin_record(path, "xdpfwd_flags", _U32.pack(prog_flags))


def read_prog_flags(path: str) -> int | None:
    """The recorded prog_flags; None when the pin dir has no record."""
    record = _read_record(path, _U32)
    return None if record is None else record[0]


class BenchConfig(PinnedMap):
    def set(self, target_ifindex: int, flows: int, spread: int = 0) -> None:
        sc.map_update(self.fd, _key(0), _BENCH_CFG.pack(target_ifindex, flows, spread))


class SinkCounter(PinnedMap):
    def read(self) -> tuple[int, int]:
        """(packets, bytes) that reached the sinks so far."""
        packets, nbytes = self._read_percpu(_key(0), _COUNTER) or (0, 0)
        return packets, nbytes


def table_type_name(map_type: int) -> str:
    for name, value in TABLE_TYPES.items():
        if value == map_type:
            return name
    raise ValueError(f"map type {map_type} is not a devmap")


def value_format_name(value_size: int) -> str:
    for name, size in VALUE_FORMATS.items():
        if size == value_size:
            return name
    raise ValueError(f"devmap value size {value_size} is neither an ifindex nor a bpf_devmap_val")


def create_pinned_devmap_hash(
    path: str, name: str = "xdpfwd_fwd", value_size: int = 8, max_entries: int = FWD_MAX_ENTRIES
) -> None:
    """Create and pin a forwarding DEVMAP_HASH (BCC cannot create this map type)."""
    fd = sc.map_create(sc.MAP_TYPE_DEVMAP_HASH, _U32.size, value_size, max_entries, name)
    try:
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)


INTENT_CHUNK = 4096
INTENT_MAX_CHUNKS = 256
BPF_F_NO_PREALLOC = 1


def create_pinned_intent(path: str) -> None:
    """Create and pin the (empty) map that keeps the configuration asked for."""
    fd = sc.map_create(
        sc.MAP_TYPE_HASH,
        _U32.size,
        INTENT_CHUNK,
        INTENT_MAX_CHUNKS,
        "xdpfwd_intent",
        flags=BPF_F_NO_PREALLOC,
    )
    try:
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)


def _create_devmap(table: str, value_size: int, max_entries: int, name: str) -> int:
    key_size = _U32.size
    return sc.map_create(TABLE_TYPES[table], key_size, value_size, max_entries, name)


def create_pinned_groups_table(path: str, table: str, value_size: int) -> None:
    """Create and pin the map of maps from member ports to group devmaps. Its inner
    maps must look like the template: same type and value size (devmaps may differ
    in size)."""
    template = _create_devmap(table, value_size, GROUP_MAX_MEMBERS, "xdpfwd_group_t")
    try:
        fd = sc.map_create(
            sc.MAP_TYPE_HASH_OF_MAPS,
            _U32.size,
            _U32.size,
            MAX_PORTS,
            "xdpfwd_groups",
            inner_map_fd=template,
        )
    finally:
        os.close(template)
    try:
        sc.obj_pin(fd, path)
    finally:
        os.close(fd)


def create_pinned_slots(pins_path: str, table: str, value_size: int) -> list[str]:
    """Create and pin the slot copies of ports, fwd and groups that are missing (see
    _Mirrored); return the names pinned. On failure, what was pinned stays: call it
    where a rollback removes new pins."""
    made = []

    def pin(name: str, create) -> None:
        path = os.path.join(pins_path, name)
        if os.path.exists(path):
            return
        fd = create()
        try:
            sc.obj_pin(fd, path)
        finally:
            os.close(fd)
        made.append(name)

    pin(
        PIN_PORT_SLOTS,
        lambda: sc.map_create(
            sc.MAP_TYPE_ARRAY, _U32.size, _PORT.size, STATS_SLOTS, "xdpfwd_pslots"
        ),
    )
    pin(PIN_FWD_SLOTS, lambda: _create_devmap("devmap", value_size, STATS_SLOTS, "xdpfwd_fslots"))
    template = _create_devmap(table, value_size, GROUP_MAX_MEMBERS, "xdpfwd_group_t")
    try:
        pin(
            PIN_GROUP_SLOTS,
            lambda: sc.map_create(
                sc.MAP_TYPE_ARRAY_OF_MAPS,
                _U32.size,
                _U32.size,
                STATS_SLOTS,
                "xdpfwd_gslots",
                inner_map_fd=template,
            ),
        )
    finally:
        os.close(template)
    return made


def devmap_val_supported() -> bool:
    """Whether the kernel takes struct bpf_devmap_val values in a devmap (5.8+)."""
    try:
        fd = sc.map_create(sc.MAP_TYPE_DEVMAP, _U32.size, _DEVMAP_VAL.size, 1, "xdpfwd_probe")
    except OSError as e:
        if e.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    return True


# --- multicast groups (bpf_src/xdpfwd_mcast.c) ---------------------------------------

PIN_MCAST_SOURCES = "mcast_sources"
PIN_MCAST_GROUPS = "mcast_groups"
PIN_MCAST_STATS = "mcast_stats"
PIN_MCAST_COPIES = "mcast_copies"
PIN_MCAST_PORT_STATS = "mcast_port_stats"
PIN_MCAST_PORTS = "mcast_ports"
PIN_PROG_MCAST = "prog_egress_mcast"
MCAST_MAX_GROUPS = 1024
MCAST_MAX_MEMBERS = 64
MCAST_MAX_SOURCES = 16384
MCAST_MAX_COPIES = 16384
MCAST_UNTAGGED = 0xFFFFFFFF
MCAST_MAC = 1
MCAST_IPV4 = 4
MCAST_IPV6 = 6
MCAST_EXCLUDE_INGRESS = 1
BPF_F_NO_PREALLOC = 1

_MCAST_KEY = struct.Struct("=IB3x16s")  # struct xdpfwd_mcast_key
_MCAST_SOURCE = struct.Struct("=IIIxxxx")  # struct xdpfwd_mcast_source
_MCAST_STATS = struct.Struct("=QQQ")  # struct xdpfwd_mcast_stats
_MCAST_KIND_LENGTHS = {MCAST_MAC: 6, MCAST_IPV4: 4, MCAST_IPV6: 16}


@dataclass(frozen=True)
class McastAddr:
    """A group address as the lookup key holds it: its kind and its bytes."""

    kind: int  # MCAST_MAC, MCAST_IPV4 or MCAST_IPV6
    raw: bytes

    @property
    def text(self) -> str:
        if self.kind == MCAST_MAC:
            return mac_text(self.raw)
        return str(ipaddress.ip_address(self.raw))

    @property
    def kind_name(self) -> str:
        return {MCAST_MAC: "mac", MCAST_IPV4: "ipv4", MCAST_IPV6: "ipv6"}[self.kind]

    def mac_text(self) -> str:
        """The destination MAC of frames to this group (RFC 1112, RFC 2464)."""
        if self.kind == MCAST_IPV4:
            return mac_text(bytes([1, 0, 0x5E, self.raw[1] & 0x7F, *self.raw[2:]]))
        if self.kind == MCAST_IPV6:
            return mac_text(b"\x33\x33" + self.raw[12:])
        return mac_text(self.raw)

    @classmethod
    def parse(cls, text: str) -> McastAddr:
        """An IPv4 (224.0.0.0/4), IPv6 (ff00::/8) or MAC (I/G bit set) multicast
        address. Raises ValueError for anything else."""
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            ip = None
        if ip is not None:
            if not ip.is_multicast:
                raise ValueError(f"{text} is not a multicast address ({_MCAST_RANGES})")
            if getattr(ip, "scope_id", None):  # frames carry no scope: it would go unused
                raise ValueError(f"{text}: a group takes no %scope; its ports say where")
            return cls(MCAST_IPV4 if ip.version == 4 else MCAST_IPV6, ip.packed)
        try:
            raw = mac_bytes(text.lower())
        except ValueError:
            raise ValueError(f"{text!r} is not a multicast group ({_MCAST_RANGES})") from None
        if not raw[0] & 1:
            raise ValueError(f"{text} is a unicast MAC address ({_MCAST_RANGES})")
        return cls(MCAST_MAC, raw)

    def key(self, ifindex: int) -> bytes:
        return _MCAST_KEY.pack(ifindex, self.kind, self.raw)

    @classmethod
    def from_key(cls, raw_key: bytes) -> tuple[int, McastAddr]:
        """(source ifindex, group address) of a packed struct xdpfwd_mcast_key."""
        ifindex, kind, addr = _MCAST_KEY.unpack(raw_key)
        return ifindex, cls(kind, addr[: _MCAST_KIND_LENGTHS.get(kind, 16)])


_MCAST_RANGES = "IPv4 224.0.0.0/4, IPv6 ff00::/8, or a MAC with the group bit, like 01:00:5e:..."


@dataclass(frozen=True)
class McastSource:
    """struct xdpfwd_mcast_source: what a frame from a source port does in its group."""

    slot: int
    flags: int  # MCAST_EXCLUDE_INGRESS
    copies: int  # copies one frame from this source should make

    @property
    def exclude_ingress(self) -> bool:
        return bool(self.flags & MCAST_EXCLUDE_INGRESS)


@dataclass(frozen=True)
class McastPortStats:
    """Frames a source port replicated to its multicast groups, summed over CPUs."""

    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class McastStats:
    """struct xdpfwd_mcast_stats of a group, summed over CPUs."""

    in_packets: int = 0
    in_bytes: int = 0
    copies_expected: int = 0


class McastSourceTable(PinnedMap):
    """(source port, group address) -> McastSource."""

    def items(self) -> dict[tuple[int, McastAddr], McastSource]:
        found = {}
        for key in sc.map_keys(self.fd, self.info.key_size):
            raw = sc.map_lookup(self.fd, key, self.info.value_size)
            if raw is not None:
                found[McastAddr.from_key(key)] = McastSource(*_MCAST_SOURCE.unpack(raw))
        return found

    def set(self, ifindex: int, group: McastAddr, source: McastSource) -> None:
        value = _MCAST_SOURCE.pack(source.slot, source.flags, source.copies)
        sc.map_update(self.fd, group.key(ifindex), value)

    def remove(self, ifindex: int, group: McastAddr) -> bool:
        return sc.map_delete(self.fd, group.key(ifindex))


class McastGroupsTable(MapOfMaps):
    """Group slot -> the group's devmap (an array of maps)."""

    devmap_id = MapOfMaps.inner_id

    def clear(self, slot: int) -> None:
        sc.map_delete(self.fd, _key(slot))


class McastPortsTable(PinnedMap):
    """Ports below STATS_SLOTS by slot: whether each is a source of some group."""

    def is_source(self, port: int) -> bool:
        raw = sc.map_lookup(self.fd, _key(port), _U32.size)
        return raw is not None and _U32.unpack(raw)[0] != 0

    def mark(self, port: int, source: bool) -> None:
        sc.map_update(self.fd, _key(port), _U32.pack(int(source)))


class McastStatsTable(PinnedMap):
    """Per group slot: McastStats, per CPU."""

    def read(self, slot: int) -> McastStats:
        totals = self._read_percpu(_key(slot), _MCAST_STATS)
        return McastStats(*totals) if totals else McastStats()

    def reset(self, slot: int) -> None:
        sc.map_update(self.fd, _key(slot), bytes(self._slot() * sc.possible_cpus()))


class McastCopiesTable(PinnedMap):
    """Per (group slot, receiver) pair: copies sent, per CPU (rows made by user space)."""

    def pairs(self) -> list[tuple[int, int]]:
        return [_PAIR.unpack(k) for k in sc.map_keys(self.fd, self.info.key_size)]

    def read(self, slot: int, egress: int) -> tuple[int, int] | None:
        """(packets, bytes) copied to egress, or None when the pair has no row."""
        totals = self._read_percpu(_pair(slot, egress), _COUNTER)
        return None if totals is None else (totals[0], totals[1])

    def reset(self, slot: int, egress: int) -> None:
        """Zero the pair's row, creating it."""
        sc.map_update(self.fd, _pair(slot, egress), bytes(self._slot() * sc.possible_cpus()))

    def forget(self, slot: int, egress: int) -> None:
        sc.map_delete(self.fd, _pair(slot, egress))


def adopt(cls, fd: int, label: str):
    """A map of class cls on fd, which it then owns (closed by its close())."""
    opened = cls.__new__(cls)
    opened.path = label
    opened.fd = fd
    try:
        opened.info = sc.map_info(fd)
    except BaseException:
        os.close(fd)
        raise
    return opened


def open_by_id(cls, map_id: int):
    """A map of class cls opened by its id (a devmap held by a map of maps)."""
    return adopt(cls, sc.map_fd_by_id(map_id), f"map id {map_id}")


def create_sized_devmap(
    table: str, value_size: int, ports: list[int], prog_fd: int, name: str
) -> GroupMap:
    """A new devmap holding exactly ports, sized to them (a broadcast walks every slot
    or bucket of its devmap for each frame), each entry with the egress program
    prog_fd (0: none). Unpinned: the caller pins it or puts it in a map of maps."""
    size = max(1, len(ports))
    devmap = adopt(GroupMap, _create_devmap(table, value_size, size, name), name)
    try:
        hashed = devmap.info.map_type == sc.MAP_TYPE_DEVMAP_HASH
        for slot, port in enumerate(ports):
            devmap._set(port if hashed else slot, port, prog_fd)
    except BaseException:
        devmap.close()
        raise
    return devmap


def create_pinned_mcast_maps(pins_path: str, table: str, value_size: int) -> None:
    """Create and pin the multicast maps BCC cannot create (the map of maps) or would
    preallocate (the hashes). On failure, what was pinned stays: call it where a
    rollback removes new pins."""

    def pin(name: str, fd: int) -> None:
        try:
            sc.obj_pin(fd, os.path.join(pins_path, name))
        finally:
            os.close(fd)

    template = _create_devmap(table, value_size, MCAST_MAX_MEMBERS, "xdpfwd_mcast_t")
    try:
        groups = sc.map_create(
            sc.MAP_TYPE_ARRAY_OF_MAPS,
            _U32.size,
            _U32.size,
            MCAST_MAX_GROUPS,
            "xdpfwd_mcast",
            inner_map_fd=template,
        )
    finally:
        os.close(template)
    pin(PIN_MCAST_GROUPS, groups)
    sources = sc.map_create(
        sc.MAP_TYPE_HASH,
        _MCAST_KEY.size,
        _MCAST_SOURCE.size,
        MCAST_MAX_SOURCES,
        "xdpfwd_msources",
        flags=BPF_F_NO_PREALLOC,
    )
    pin(PIN_MCAST_SOURCES, sources)
    if value_size == VALUE_FORMATS["devmap-val"]:
        copies = sc.map_create(
            sc.MAP_TYPE_PERCPU_HASH,
            _PAIR.size,
            _COUNTER.size,
            MCAST_MAX_COPIES,
            "xdpfwd_mcopies",
            flags=BPF_F_NO_PREALLOC,
        )
        pin(PIN_MCAST_COPIES, copies)
