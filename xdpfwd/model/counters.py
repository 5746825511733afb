"""Counter snapshots, the rates between two of them, and where unforwarded frames
went. Pure: no I/O, no clock; the callers pass times in."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from functools import cached_property

from xdpfwd.kernel.bpf.maps import DepartedPorts, EgressStats, PortStats, RetiredPort, TxEvents
from xdpfwd.model import Iface, McastGroup

# Why a frame that entered a port was not forwarded: no entry (the on-miss verdict),
# a multi-buffer frame its group cannot flood, dropped by the egress program, an
# invalid verdict of a user egress program (dropped), the redirect failed, the egress
# driver did not send it. The last two only the tracepoint programs see (loss
# accounting).
LOSS_REASONS = (
    "miss",
    "too_big",
    "egress_drop",
    "egress_invalid",
    "redirect_error",
    "xmit_drop",
)
TRACED_REASONS = ("redirect_error", "xmit_drop")
# The received counts summed over ports (Snapshot.totals, with tx_packets and tx_bytes).
TOTALS_RECEIVED = (
    "rx_packets",
    "rx_bytes",
    "redirect_packets",
    "miss_packets",
    "pass_packets",
    "drop_packets",
    "too_big_packets",
)


@dataclass(frozen=True)
class PortCounters:
    port: Iface
    counters: PortStats | None  # what entered it; None: it runs no xdpfwd program
    tx_packets: int = 0  # what xdpfwd sent out of it (sum of its pairs)
    tx_bytes: int = 0
    # What the tracepoints saw of frames that entered it, over every egress (also
    # past entries, and failed broadcasts they cannot name the member of).
    events: TxEvents | None = None
    # Frames it replicated as a multicast source (also among its redirects).
    mcast_packets: int = 0
    # What ended pairs had counted on it (in tx_* already, and in its losses).
    retired: RetiredPort = RetiredPort()
    # The copies its floods should have made (None: pins made before it was counted).
    flood_copies: int | None = None
    floods_counted: bool = True  # False in generic mode: no more copies are counted


@dataclass(frozen=True)
class PairCounters:
    ingress: Iface
    egress: Iface
    group: str | None  # the broadcast group, or None for a forwarding entry
    # "ingress": the port's redirects (no egress program); "egress": the entry's egress
    # program; "transmit": the copies of a broadcast the driver sent (the tracepoint),
    # bytes from the mean size of the frames the ingress port redirected.
    counted_by: str
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
    tracing: bool = False  # loss accounting is attached: events are known
    multicast: dict[str, McastGroup] = field(default_factory=dict)  # by group address
    # What ports released since the counters began had not forwarded, by reason.
    released: dict[str, int] = field(default_factory=dict)
    departed: DepartedPorts = DepartedPorts()  # what ports no longer here had counted
    released_flood_copies_lost: int = 0  # of ports released since the counters began

    @cached_property
    def _pairs_by_ingress(self) -> dict[int, list[PairCounters]]:
        by_ingress: dict[int, list[PairCounters]] = {}
        for pair in self.pairs.values():
            by_ingress.setdefault(pair.ingress.ifindex, []).append(pair)
        return by_ingress

    def _pairs_from(self, ifindex: int) -> list[PairCounters]:
        return self._pairs_by_ingress.get(ifindex, [])

    def port_losses(self, ifindex: int) -> dict[str, int | None]:
        """Frames that entered the port and were not forwarded, by reason (None: not
        known: loss accounting being off, or, for what the ingress program counts, a
        port it does not run on)."""
        port = self.ports[ifindex]
        c = port.counters
        pairs = self._pairs_from(ifindex)
        past = port.retired
        losses: dict[str, int | None] = {
            "miss": c.miss_packets if c else None,
            "too_big": c.too_big_packets if c else None,
            "egress_drop": past.egress_drop + sum(p.egress_drop_packets for p in pairs),
            "egress_invalid": past.egress_invalid + sum(p.egress_invalid_packets for p in pairs),
            "redirect_error": None,
            "xmit_drop": None,
        }
        if self.tracing:
            events = port.events or TxEvents()
            # The tracepoint's drops include what an egress program dropped (natively),
            # invalid verdicts too.
            counted = past.traced_drops + sum(_traced_drops(p) for p in pairs)
            losses["redirect_error"] = events.redirect_errors
            losses["xmit_drop"] = max(0, events.xmit_drops - counted)
        return losses

    def forwarded(self, ifindex: int) -> int | None:
        """Frames of the port's entry that left on its egress: redirected, less its
        multicast replicas and those lost after the redirect; for a broadcast member,
        the frames it flooded (what is lost after the redirect is copies). None when
        unknown (loss accounting off, a port xdpfwd does not run on)."""
        port = self.ports[ifindex]
        if port.counters is None:
            return None
        if any(p.group for p in self._pairs_from(ifindex)):
            return port.counters.redirect_packets - port.mcast_packets
        if not self.tracing:
            return None
        lost = self.port_losses(ifindex)
        after = sum(
            lost[r] or 0 for r in ("egress_drop", "egress_invalid", "redirect_error", "xmit_drop")
        )
        return max(0, port.counters.redirect_packets - port.mcast_packets - after)

    def copies_lost(self, ifindex: int) -> int | None:
        """Copies of the port's floods that no driver got: the kernel skips a member
        that is down, gone or of too small an MTU, and says so nowhere. Those its
        floods should have made, less those the transmit tracepoint saw sent or
        dropped (the port's xmit drops); None when that is not known."""
        return self._copies_lost(ifindex) if self.ports[ifindex].floods_counted else None

    def _copies_lost(self, ifindex: int) -> int | None:
        """copies_lost(), also of a port whose floods are not counted now (what it
        lost while they were)."""
        port = self.ports[ifindex]
        if port.flood_copies is None or not self.tracing:
            return None
        sent = sum(p.tx_packets for p in self._pairs_from(ifindex) if p.group)
        dropped = port.events.xmit_drops if port.events else 0  # (a member's are copies)
        return max(0, port.flood_copies - port.retired.flooded - sent - dropped)

    def flood_copies_lost(self) -> int | None:
        """The copies of broadcasts no member got, over the ports and those released;
        None when that is not known."""
        if not self.tracing:
            return None
        lost = (self._copies_lost(k) for k in self.ports)
        return self.released_flood_copies_lost + sum(n for n in lost if n)

    def totals(self) -> dict[str, int]:
        """Sums over the ports, with what ports that left had counted: they never go
        down while the counters run."""
        received = [p.counters for p in self.ports.values() if p.counters]
        received.append(self.departed.received)
        totals = {name: sum(getattr(c, name) for c in received) for name in TOTALS_RECEIVED}
        ports = self.ports.values()
        totals["tx_packets"] = self.departed.tx_packets + sum(p.tx_packets for p in ports)
        totals["tx_bytes"] = self.departed.tx_bytes + sum(p.tx_bytes for p in ports)
        return totals

    def losses(self) -> dict[str, int | None]:
        """Frames not forwarded since the counters began, by reason; the reasons only
        the tracepoints see are None when loss accounting is off."""
        total: dict[str, int | None] = dict.fromkeys(LOSS_REASONS, 0)
        if not self.tracing:
            total.update(dict.fromkeys(TRACED_REASONS))
        for ifindex in self.ports:
            for reason, n in self.port_losses(ifindex).items():
                if n is not None:
                    total[reason] += n
        for reason, n in self.released.items():
            if total[reason] is not None:
                total[reason] += n
        return total


def _traced_drops(pair: PairCounters) -> int:
    """The pair's egress-program drops that the transmit tracepoint counted too."""
    if pair.events is None:
        return 0
    return min(pair.egress_drop_packets + pair.egress_invalid_packets, pair.events.xmit_drops)


@dataclass(frozen=True)
class Retirement:
    """What a change ended, found by comparing snapshots taken before and after it."""

    ports: dict[int, RetiredPort]  # to add to each port's retired counts
    released: set[int]  # ports whose own counters ended (released, deleted, reset)
    released_losses: dict[str, int]  # what those had not forwarded, by reason
    departed: DepartedPorts = DepartedPorts()  # what released ports had received
    released_flood_copies_lost: int = 0  # their floods' copies no member got


def retirements(
    before: Snapshot, after: Snapshot, kept: Collection[tuple[int, int]] = ()
) -> Retirement:
    """The counts of pairs (and multicast receivers) that ended, or whose counters
    started again, between the snapshots, and of ports whose counters ended: what
    keeps port TX, port losses and the total of losses from going down. kept: group
    pairs whose last counts were kept as they were forgotten."""
    add: dict[int, RetiredPort] = {}

    def retire(port: int, counts: RetiredPort) -> None:
        add[port] = add.get(port, RetiredPort()).plus(counts)

    new = _parts(after)
    for key, (egress, ingress, counts) in _parts(before).items():
        if isinstance(key[0], tuple) and key[1:] in kept:  # a group's pair, kept already
            continue
        now = new.get(key)
        # A count started again is back near zero; two reads under traffic can differ
        # by a few frames (redirects read before drops), which must not retire it.
        if now is None or now[2].tx_packets < counts.tx_packets // 2:
            retire(egress, RetiredPort(counts.tx_packets, counts.tx_bytes))
            if ingress:
                retire(ingress, replace(counts, tx_packets=0, tx_bytes=0))
    released = {
        port
        for port, was in before.ports.items()
        if was.counters is not None and _ended(was.counters, after.ports.get(port))
    }
    losses = dict.fromkeys(LOSS_REASONS, 0)
    for port in released:
        for reason, n in before.port_losses(port).items():
            losses[reason] += n or 0
    departed = DepartedPorts()
    for port in released:
        departed = departed.plus(DepartedPorts(before.ports[port].counters))
    ported = {p: c for p, c in add.items() if c != RetiredPort()}
    copies = sum(before.copies_lost(port) or 0 for port in released)
    return Retirement(ported, released, losses, departed, copies)


def _parts(s: Snapshot) -> dict[tuple, tuple[int, int, RetiredPort]]:
    """Each pair's, and each multicast receiver's, share of the port sums: key ->
    (egress, ingress, counts). Keys tell the kinds of pair apart (an entry that
    becomes balanced counts anew). A receiver's copies have no ingress (0)."""
    parts: dict[tuple, tuple[int, int, RetiredPort]] = {}
    for p in s.pairs.values():
        kind = ("group", p.group) if p.group else ("balanced" if p.buckets is not None else "entry")
        counts = RetiredPort(
            p.tx_packets,
            p.tx_bytes,
            p.egress_drop_packets,
            p.egress_invalid_packets,
            _traced_drops(p),
            _flooded(p),
        )
        parts[(kind, *p.key)] = (p.egress.ifindex, p.ingress.ifindex, counts)
    for g in s.multicast.values():
        for r in (*g.receivers, *g.former, *g.departed):
            counts = RetiredPort(r.copies or 0, r.copy_bytes or 0)
            parts[("multicast", g.group, r.port.ifindex)] = (r.port.ifindex, 0, counts)
    return parts


def _flooded(pair: PairCounters) -> int:
    """The copies of a group's pair that its driver sent (those it dropped stay in
    the tracepoint's counts, which live while the port does)."""
    return pair.tx_packets if pair.group is not None else 0


def pair_retirement(ingress: int, egress: int, last: EgressStats) -> list[tuple[int, RetiredPort]]:
    """What a group's pair had counted, as its two ports keep it (see _parts)."""
    return [
        (egress, RetiredPort(last.tx_packets, last.tx_bytes)),
        (ingress, RetiredPort(egress_drop=last.drop_packets, flooded=last.tx_packets)),
    ]


def _ended(was: PortStats, now: PortCounters | None) -> bool:
    return now is None or now.counters is None or now.counters.rx_packets < was.rx_packets


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
    mcast_in: dict[str, Rate] = field(default_factory=dict)  # frames into each group
    mcast_out: dict[str, Rate] = field(default_factory=dict)  # copies out of each group
    flood_copies_lost: int = 0  # copies of broadcasts no member got, during the interval


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
    for key, pair in after.pairs.items():
        old = before.pairs.get(key)
        if old is None:
            continue
        pair_tx[key] = _rate(
            increase(old.tx_packets, pair.tx_packets),
            increase(old.tx_bytes, pair.tx_bytes),
            seconds,
        )
    losses = dict.fromkeys(LOSS_REASONS, 0)
    for key in after.ports:
        if key not in before.ports:
            continue
        was, now = before.port_losses(key), after.port_losses(key)
        for reason in LOSS_REASONS:
            if was[reason] is not None and now[reason] is not None:
                losses[reason] += increase(was[reason], now[reason])
    mcast_in, mcast_out = {}, {}
    for key, group in after.multicast.items():
        old = before.multicast.get(key)
        if old is None:
            continue
        mcast_in[key] = _rate(
            increase(old.in_packets, group.in_packets),
            increase(old.in_bytes, group.in_bytes),
            seconds,
        )
        if group.counted and old.counted:
            mcast_out[key] = _rate(
                increase(old.copies_out, group.copies_out),
                increase(_copy_bytes(old), _copy_bytes(group)),
                seconds,
            )
    was, now = before.flood_copies_lost(), after.flood_copies_lost()
    copies = increase(was, now) if was is not None and now is not None else 0
    return Rates(seconds, port_rx, port_tx, port_miss, pair_tx, losses, mcast_in, mcast_out, copies)


def _copy_bytes(group: McastGroup) -> int:
    return sum(r.copy_bytes or 0 for r in group.receivers)


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
        multicast={k: g for k, g in snapshot.multicast.items() if g.touches(ifindexes)},
        released={},  # not of the ports selected
        departed=DepartedPorts(),
        released_flood_copies_lost=0,
    )


@dataclass(frozen=True)
class WatchFrame:
    snapshot: Snapshot
    rates: Rates
    losses: dict[str, int]  # frames not forwarded since the watch began, by reason
    flood_copies_lost: int = 0  # copies of broadcasts no member got, since it began
