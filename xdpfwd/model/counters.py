"""Counter snapshots, the rates between two of them, and where unforwarded frames
went. Pure: no I/O, no clock; the callers pass times in."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from xdpfwd.kernel.bpf.maps import PortStats, TxEvents
from xdpfwd.model import Iface

LOSS_REASONS = ("miss", "egress_drop", "egress_invalid", "redirect_error", "xmit_drop")


@dataclass(frozen=True)
class PortCounters:
    port: Iface
    counters: PortStats | None  # what entered it; None: it runs no xdpfwd program
    tx_packets: int = 0  # what xdpfwd sent out of it (sum of its pairs)
    tx_bytes: int = 0


@dataclass(frozen=True)
class PairCounters:
    ingress: Iface
    egress: Iface
    group: str | None  # the broadcast group, or None for a forwarding entry
    counted_by: str  # "egress" (the egress program) or "ingress" (no egress program)
    tx_packets: int = 0
    tx_bytes: int = 0
    egress_drop_packets: int = 0
    events: TxEvents | None = None  # from the tracepoints, while they are attached
    buckets: int | None = None  # a balanced entry's pair: the buckets sending to egress
    # Frames a user egress program gave a verdict other than XDP_PASS/XDP_DROP (dropped).
    egress_invalid_packets: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return self.ingress.ifindex, self.egress.ifindex


@dataclass(frozen=True)
class Snapshot:
    taken: float  # monotonic seconds
    wall: float  # Unix time
    ports: dict[int, PortCounters]
    pairs: dict[tuple[int, int], PairCounters]
    exceptions: dict[int, int] = field(default_factory=dict)  # per port, while tracing
    tracing: bool = False

    def losses(self) -> dict[str, int | None]:
        """Frames not forwarded since the counters began, by reason. The reasons only
        the tracepoints see are known per interval of a watch (rates()), so None."""
        return {
            "miss": sum(p.counters.miss_packets for p in self.ports.values() if p.counters),
            "egress_drop": sum(p.egress_drop_packets for p in self.pairs.values()),
            "egress_invalid": sum(p.egress_invalid_packets for p in self.pairs.values()),
            "redirect_error": None,
            "xmit_drop": None,
        }


@dataclass(frozen=True)
class Rate:
    pps: float
    bps: float  # bits per second


def increase(before: int, after: int) -> int:
    """How much a counter grew; after a reset (it went down) it counts from zero."""
    return after - before if after >= before else after


def _rate(packets: int, nbytes: int, seconds: float) -> Rate:
    return Rate(packets / seconds, nbytes * 8 / seconds)


@dataclass(frozen=True)
class Rates:
    """Rates over one interval, for the rows present at both ends of it."""

    seconds: float
    port_rx: dict[int, Rate]
    port_tx: dict[int, Rate]
    port_miss: dict[int, float]  # pps
    pair_tx: dict[tuple[int, int], Rate]
    losses: dict[str, int]  # frames not forwarded during the interval, by reason


def rates(before: Snapshot, after: Snapshot) -> Rates:
    seconds = max(after.taken - before.taken, 1e-9)
    port_rx, port_tx, port_miss = {}, {}, {}
    for key, port in after.ports.items():
        old = before.ports.get(key)
        if old is None:
            continue  # a new row: no rate yet
        new_c, old_c = port.counters, old.counters
        if new_c and old_c:
            port_rx[key] = _rate(
                increase(old_c.rx_packets, new_c.rx_packets),
                increase(old_c.rx_bytes, new_c.rx_bytes),
                seconds,
            )
            port_miss[key] = increase(old_c.miss_packets, new_c.miss_packets) / seconds
        port_tx[key] = _rate(
            increase(old.tx_packets, port.tx_packets),
            increase(old.tx_bytes, port.tx_bytes),
            seconds,
        )
    pair_tx = {}
    losses = dict.fromkeys(LOSS_REASONS, 0)
    for key, pair in after.pairs.items():
        old = before.pairs.get(key)
        if old is None:
            continue
        pair_tx[key] = _rate(
            increase(old.tx_packets, pair.tx_packets),
            increase(old.tx_bytes, pair.tx_bytes),
            seconds,
        )
        egress_drops = increase(old.egress_drop_packets, pair.egress_drop_packets)
        losses["egress_drop"] += egress_drops
        invalid = increase(old.egress_invalid_packets, pair.egress_invalid_packets)
        losses["egress_invalid"] += invalid
        egress_drops += invalid
        if pair.events and old.events:
            losses["redirect_error"] += increase(
                old.events.redirect_errors, pair.events.redirect_errors
            )
            # The tracepoint's drops include what the egress program dropped.
            xmit = increase(old.events.xmit_drops, pair.events.xmit_drops)
            losses["xmit_drop"] += max(0, xmit - egress_drops)
    for key, port in after.ports.items():
        old = before.ports.get(key)
        if old is not None and old.counters and port.counters:
            losses["miss"] += increase(old.counters.miss_packets, port.counters.miss_packets)
    return Rates(seconds, port_rx, port_tx, port_miss, pair_tx, losses)


def add_losses(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {reason: total.get(reason, 0) + more.get(reason, 0) for reason in LOSS_REASONS}


def select(snapshot: Snapshot, ifindexes: set[int] | None) -> Snapshot:
    """Only the ports in ifindexes and the pairs that touch them (all if None)."""
    if ifindexes is None:
        return snapshot
    return replace(
        snapshot,
        ports={k: p for k, p in snapshot.ports.items() if k in ifindexes},
        pairs={k: p for k, p in snapshot.pairs.items() if set(k) & ifindexes},
    )


@dataclass(frozen=True)
class WatchFrame:
    snapshot: Snapshot
    rates: Rates
    losses: dict[str, int]  # frames not forwarded since the watch began, by reason
