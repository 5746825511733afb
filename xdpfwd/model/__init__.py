"""Plain results that the operations return and the renderers show."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from xdpfwd.kernel.bpf.maps import BUCKETS, EgressStats, PortStats, Rewrite, TxEvents

# XDP attach modes, and the words iproute2 and xdp-tools users bring for them; the CLI
# and the configuration file accept them all.
MODES = ("auto", "native", "generic")
# A broadcast group's name: it names a pin (group/NAME) and a kernel map (xg_NAME).
GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MULTICAST_EMPTIED = "multicast "  # what names a multicast group among the emptied


def emptied_group(name: str) -> str:
    """A group a tidy removed, as a line names it: `broadcast group NAME` or
    `multicast group ADDRESS` (the emptied names carry MULTICAST_EMPTIED)."""
    if name.startswith(MULTICAST_EMPTIED):
        return f"multicast group {name.removeprefix(MULTICAST_EMPTIED)}"
    return f"broadcast group {name}"


MODE_WORDS = {"skb": "generic", "xdpgeneric": "generic", "drv": "native", "xdpdrv": "native"}


@dataclass(frozen=True)
class Iface:
    """An interface as xdpfwd knows it; ifname is None when the device is gone."""

    ifindex: int
    ifname: str | None

    @property
    def label(self) -> str:
        return self.ifname if self.ifname else f"ifindex {self.ifindex}"

    def as_dict(self) -> dict:
        return {"ifname": self.ifname, "ifindex": self.ifindex}


@dataclass(frozen=True)
class EgressSpec:
    """What the egress program of a new entry does (bpf_devmap_val tables only)."""

    program: str = "built-in"  # built-in (pair counters), none, or user
    src_mac: str | None = None  # "egress" (the egress port's address) or a MAC
    dst_mac: str | None = None
    user_file: str | None = None
    user_func: str | None = None  # None: the file's only XDP function

    @property
    def rewrites(self) -> bool:
        return bool(self.src_mac or self.dst_mac)

    @property
    def kind(self) -> str:
        """What the entry's egress program is: user, rewrite, or plain (none at all:
        built-in and none are the same since entries are counted at ingress)."""
        if self.program == "user":
            return "user"
        return "rewrite" if self.rewrites else "plain"

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_EGRESS


DEFAULT_EGRESS = EgressSpec()


@dataclass(frozen=True)
class EgressProg:
    """An entry's egress program as read back from the map (the kernel gives its id)."""

    kind: str  # built-in, rewrite, group, user or none
    prog_id: int
    name: str | None
    source: str | None = None  # FILE.c:FUNCTION of a user program, when known

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "id": self.prog_id or None,
            "name": self.name,
            "source": self.source,
        }


@dataclass(frozen=True)
class BalancePort:
    """An egress port of a balanced entry."""

    port: Iface  # ifname None when the device is gone (ifindex 0: never seen)
    name: str  # as configured
    weight: int  # 0: not configured (its buckets are left over)
    buckets: int  # buckets that send to it now
    state: str  # up, down or gone
    counters: EgressStats | None = None  # what it sent for the entry, when counted
    rewrite: Rewrite | None = None  # the addresses written on frames to it

    def as_dict(self) -> dict:
        return {
            # The port as it is now (ifname null when gone, ifindex null if never seen).
            "port": {"ifname": self.port.ifname, "ifindex": self.port.ifindex or None},
            "name": self.name,
            "weight": self.weight,
            "buckets": self.buckets,
            "share": self.buckets / BUCKETS,
            "state": self.state,
            "counters": self.counters.as_dict() if self.counters else None,
            "rewrite": self.rewrite.as_dict() if self.rewrite else None,
        }


@dataclass(frozen=True)
class BalanceInfo:
    """A balanced entry: how its frames are hashed, where its buckets go."""

    hash: str
    ports: list[BalancePort]
    unassigned: int = 0  # buckets without a port (all ports down): they miss

    def as_dict(self) -> dict:
        return {
            "hash": self.hash,
            "buckets": BUCKETS,
            "unassigned": self.unassigned,
            "ports": [p.as_dict() for p in self.ports],
        }


@dataclass(frozen=True)
class Attachment:
    port: Iface
    mode: str  # native or generic
    changed: bool  # False when xdpfwd's program was already there
    fallback: str | None = None  # why native XDP was refused, when auto chose generic

    @property
    def warning(self) -> str | None:
        if self.fallback is None:
            return None
        return f"{self.port.label}: native XDP refused ({self.fallback}); using generic mode"


@dataclass(frozen=True)
class AddResult:
    entries: list[tuple[Iface, Iface]]
    attachments: list[Attachment]
    table: str
    value_format: str
    prog_id: int
    compiled: bool
    egress: EgressProg
    warnings: tuple[str, ...] = ()  # problems that will keep frames from leaving
    balance: BalanceInfo | None = None  # a balanced entry (entries: one per port)


@dataclass(frozen=True)
class DelResult:
    removed: Iface
    egress: Iface
    detached: list[Iface]
    balanced: tuple[Iface, ...] = ()  # every egress port of a balanced entry
    recorded_only: bool = False  # not running: only what prune and follow would restore


@dataclass(frozen=True)
class DownResult:
    detached: list[Iface]
    removed_pins: bool
    left: tuple[str, ...] = ()  # what the pin dir holds that xdpfwd did not make (kept)
    elsewhere: list[str] = field(default_factory=list)  # "NAME in NS": ports moved away
    still_loaded: list[int] = field(default_factory=list)  # program ids something holds


@dataclass(frozen=True)
class PruneResult:
    gone: list[int]  # ifindexes of deleted devices whose state was forgotten
    emptied: list[str]  # groups left without members
    detached: list[Iface]
    steps: tuple[str, ...] = ()  # what was done to match the recorded configuration
    skipped: tuple[str, ...] = ()  # what it names that was left alone, and why
    warnings: tuple[str, ...] = ()  # problems of the paths of devices it bound anew


# States of a row in `xdpfwd list`.
STATE_OK = "ok"
STATE_DEVICE_GONE = "device gone"
STATE_NOT_ATTACHED = "program not attached"
STATE_NO_ENTRY = "no entry"
STATE_EGRESS_GONE = "egress gone"  # no entry: the kernel took it with its egress device
STATE_DOWN = "down"  # the port's device is set down: nothing enters it
STATE_EGRESS_DOWN = "egress down"  # the entry's egress cannot send: its frames are dropped
STATE_NOT_FLOODING = "misses: not flooding"  # a group member whose settings do not flood
# A port that floods, but through a devmap that no pinned group lists it in: the
# group's pin was removed by hand (or a change stopped half way).
STATE_UNPINNED_GROUP = "floods: group not pinned"


@dataclass(frozen=True)
class PortRow:
    """One port running (or meant to run) the ingress program, with its entry if any."""

    ingress: Iface
    egress: Iface | None
    table: str
    value_format: str
    mode: str | None
    on_miss: str
    state: str
    counters: PortStats
    egress_prog: EgressProg | None = None
    rewrite: Rewrite | None = None
    egress_counters: EgressStats | None = None  # counted by the entry's egress program
    group: str | None = None  # the broadcast group the port floods in
    multicast: tuple[str, ...] = ()  # the multicast groups the port is a source of
    # Frames that entered the port and were not forwarded, by reason (None: unknown,
    # loss accounting being off); what the tracepoints saw of the entry's pair.
    lost: dict[str, int | None] = field(default_factory=dict)
    events: TxEvents | None = None
    forwarded: int | None = None  # redirected less lost after it, when that is known
    flood_copies_lost: int | None = None  # of a member's floods, no member got (counters)
    problems: tuple[str, ...] = ()  # what keeps its frames from getting through, with fixes
    balance: BalanceInfo | None = None  # a balanced entry (egress is None then)

    @property
    def forwarded_or_redirected(self) -> int:
        """Frames forwarded when known; otherwise those handed to the redirect (for a
        broadcast member, frames flooded)."""
        return self.counters.redirect_packets if self.forwarded is None else self.forwarded

    def as_dict(self) -> dict:
        return {
            "ingress": self.ingress.as_dict(),
            "egress": self.egress.as_dict() if self.egress else None,
            "table": self.table,
            "value": self.value_format,
            "mode": self.mode,
            "on_miss": self.on_miss,
            "state": self.state,
            "egress_prog": self.egress_prog.as_dict() if self.egress_prog else None,
            "rewrite": self.rewrite.as_dict() if self.rewrite else None,
            "counters": self.counters.as_dict(),
            "egress_counters": self.egress_counters.as_dict() if self.egress_counters else None,
            "group": self.group,
            "multicast": list(self.multicast),
            "problems": list(self.problems),
            "balance": self.balance.as_dict() if self.balance else None,
            "forwarded_packets": self.forwarded,
            "not_forwarded": self.lost,
            "flood_copies_lost": self.flood_copies_lost,
            **_events_dict(self.events),
        }


def _events_dict(events: TxEvents | None) -> dict[str, int | None]:
    """What the tracepoints saw of a pair, under the counters' names (null: unknown)."""
    return {
        "xmit_drop_packets": events.xmit_drops if events else None,
        "redirect_error_packets": events.redirect_errors if events else None,
    }


@dataclass(frozen=True)
class PairRow:
    """Copies a broadcast group delivered from one member to another."""

    ingress: Iface
    egress: Iface
    counters: EgressStats
    events: TxEvents | None = None  # while loss accounting is attached

    def as_dict(self) -> dict:
        return {
            "ingress": self.ingress.as_dict(),
            "egress": self.egress.as_dict(),
            **self.counters.as_dict(),
            **_events_dict(self.events),
        }


@dataclass(frozen=True)
class GroupInfo:
    name: str
    table: str
    exclude_ingress: bool
    members: list[Iface]
    pairs: list[PairRow]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "table": self.table,
            "exclude_ingress": self.exclude_ingress,
            "members": [m.as_dict() for m in self.members],
            "pairs": [p.as_dict() for p in self.pairs],
        }


@dataclass(frozen=True)
class BroadcastResult:
    group: str
    created: bool
    members: list[Iface]
    converted: list[Iface]  # ports whose forwarding entry became membership
    attachments: list[Attachment]
    exclude_ingress: bool
    table: str
    compiled: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BroadcastDelResult:
    removed: list[Iface]
    groups: list[str]
    emptied: list[str]  # groups removed because they had no member left
    detached: list[Iface]
    forgotten: list[Iface] = field(default_factory=list)  # recorded only: not running


@dataclass(frozen=True)
class Waiting:
    """What the recorded configuration has that does not run: an entry whose ingress
    port does not run (egress: its egress ports, several when balanced), or members of
    a broadcast group (group: its name; egress: those members). prune and follow make
    it when the devices return."""

    ingress: str | None
    egress: list[str]
    group: str | None
    gone: list[str]  # the names among them whose device is gone

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Listing:
    pin_dir: str
    table: str | None
    value_format: str | None
    prog_id: int | None
    rows: list[PortRow]
    groups: list[GroupInfo]
    multicast: list[McastGroup] = field(default_factory=list)
    loss_accounting: bool = False  # the tracepoint programs are attached
    multi_buffer: bool | None = None  # programs loaded with BPF_F_XDP_HAS_FRAGS
    waiting: list[Waiting] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "pin_dir": self.pin_dir,
            "table": self.table,
            "value": self.value_format,
            "prog_id": self.prog_id,
            "loss_accounting": self.loss_accounting,
            "multi_buffer": self.multi_buffer,
            "entries": [row.as_dict() for row in self.rows],
            "groups": [g.as_dict() for g in self.groups],
            "multicast": [g.as_dict() for g in self.multicast],
            "waiting": [w.as_dict() for w in self.waiting],
        }


# --- multicast groups --------------------------------------------------------------


@dataclass(frozen=True)
class McastReceiver:
    """A receiver of a multicast group, with the copies its egress program counted
    (None when the group's entries carry no egress program: ifindex tables)."""

    port: Iface
    copies: int | None = None
    copy_bytes: int | None = None

    def as_dict(self) -> dict:
        return {"port": self.port.as_dict(), "tx_packets": self.copies, "tx_bytes": self.copy_bytes}


@dataclass(frozen=True)
class McastGroup:
    """A multicast group: frames to its address entering a source are copied to every
    receiver (not back to the source with exclude_ingress)."""

    group: str  # the address, as xdpfwd writes it (239.1.1.1, ff3e::1:1, 01:00:5e:...)
    kind: str  # ipv4, ipv6 or mac
    exclude_ingress: bool
    sources: list[Iface]
    receivers: list[McastReceiver]
    in_packets: int = 0  # frames replicated
    in_bytes: int = 0
    copies_expected: int = 0  # copies those frames should have made
    copies_out: int | None = None  # copies counted, former receivers' too; None: not counted
    # Receivers that left (devices still here): their rows count on while the group
    # lives, in their ports' TX, so one that joins again goes on from there.
    former: list[McastReceiver] = field(default_factory=list)
    # Receivers whose devices are gone: their copies stay in the totals.
    departed: list[McastReceiver] = field(default_factory=list)

    @property
    def counted(self) -> bool:
        return self.copies_out is not None

    @property
    def copies_lost(self) -> int | None:
        """Copies that never reached a receiver's egress program (clones the kernel
        could not make or send, a receiver's device refusing XDP frames), or that its
        driver dropped after it (see state/counters.py)."""
        out = self.copies_out
        return None if out is None else max(0, self.copies_expected - out)

    def touches(self, ifindexes: set[int]) -> bool:
        ports = {p.ifindex for p in self.sources} | {r.port.ifindex for r in self.receivers}
        return bool(ports & ifindexes)

    def as_dict(self) -> dict:
        return {
            "group": self.group,
            "kind": self.kind,
            "exclude_ingress": self.exclude_ingress,
            "sources": [s.as_dict() for s in self.sources],
            "receivers": [r.as_dict() for r in self.receivers],
            "in_packets": self.in_packets,
            "in_bytes": self.in_bytes,
            "copies_expected": self.copies_expected,
            "copies_out": self.copies_out,
            "copies_lost": self.copies_lost,
        }


@dataclass(frozen=True)
class McastWaiting:
    """A multicast group the recorded configuration has that does not run, or runs
    without receivers (the devices of its receivers or sources are gone): prune and
    follow make it when they return."""

    group: str
    receivers: list[str]  # by name, as recorded
    sources: list[str]
    gone: list[str]  # those whose device is gone

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class McastListing:
    pin_dir: str
    supported: bool  # False: the pins predate multicast groups
    groups: list[McastGroup]
    waiting: list[McastWaiting] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "pin_dir": self.pin_dir,
            "supported": self.supported,
            "groups": [g.as_dict() for g in self.groups],
            "waiting": [w.as_dict() for w in self.waiting],
        }


@dataclass(frozen=True)
class McastResult:
    group: str
    created: bool
    exclude_ingress: bool
    sources: list[Iface]  # after the change
    receivers: list[Iface]
    attachments: list[Attachment]
    compiled: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class McastDelResult:
    group: str
    removed: bool  # the group runs no more
    sources: list[Iface]  # the ones taken out
    receivers: list[Iface]
    detached: list[Iface]
    recorded_only: bool = False  # only the recorded configuration had them: forgotten
    kept: bool = False  # it runs no more, and the recorded configuration keeps it
    waiting: list[str] = field(default_factory=list)  # its members whose device is gone
