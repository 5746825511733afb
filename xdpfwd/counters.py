"""Reading xdpfwd's counters into stats.Snapshot, watching them, and zeroing them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from . import interrupts, netdev, prereqs, tracing
from .bpf import maps
from .dataplane import Dataplane, reading
from .errors import XdpfwdError
from .groups import group_infos
from .pins import PinDir
from .ports import known
from .stats import PairCounters, PortCounters, Rates, Snapshot, add_losses, rates


def read(pins: PinDir) -> Snapshot | None:
    """The counters since they began, or None when nothing is set up."""
    prereqs.require_privileges()
    with reading(pins) as dp:
        return snapshot(dp) if dp is not None else None


def _read_while_watching(pins: PinDir) -> Snapshot:
    """Like read(), but a watch outlives state: a `down` meanwhile, or pins removed by
    hand, leave an empty snapshot rather than an error."""
    try:
        with reading(pins) as dp:
            if dp is not None:
                return snapshot(dp, tracing=True)
    except (XdpfwdError, OSError):
        pass
    return Snapshot(time.monotonic(), time.time(), {}, {}, {}, True)


@dataclass(frozen=True)
class WatchFrame:
    snapshot: Snapshot
    rates: Rates
    losses: dict[str, int]  # frames not forwarded since the watch began, by reason


def watch(pins: PinDir, interval: float, count: int | None = None) -> Iterator[WatchFrame]:
    """A frame every interval seconds (count of them, or until interrupted), with the
    XDP tracepoint programs attached meanwhile (compiled on first use).

    Raises XdpfwdError when nothing is set up, PrereqError without tracefs.
    """
    prereqs.require_privileges()
    tracing.ensure_tracefs()
    with pins.locked(create=False):
        dp = Dataplane.open(pins)
        if dp is None:
            raise XdpfwdError(f"nothing to watch: no xdpfwd state in {pins.path}")
        dp.close()
        tracing.ensure_programs(pins)
    with tracing.attached(pins):
        before = _read_while_watching(pins)
        losses: dict[str, int] = {}
        tick = before.taken
        for _ in itertools.count() if count is None else range(count):
            tick += interval
            time.sleep(max(0.0, tick - time.monotonic()))
            interrupts.check()
            after = _read_while_watching(pins)
            step = rates(before, after)
            losses = add_losses(losses, step.losses)
            yield WatchFrame(after, step, losses)
            before = after


def snapshot(dp: Dataplane, tracing: bool = False) -> Snapshot:
    """Every managed port and every pair (forwarding entries, group members).

    With tracing, pairs carry what the tracepoint programs counted so far.
    """
    taken, wall = time.monotonic(), time.time()
    links = netdev.links()
    events = _tx_events(dp) if tracing else {}
    ports = {
        port: PortCounters(known(port, links), dp.stats.read(port) or maps.PortStats())
        for port in sorted(dp.ports.ifindexes())
    }
    pairs = [*_entry_pairs(dp, ports, links), *_group_pairs(dp, links)]
    pairs = [_with_events(pair, events) for pair in pairs] if tracing else pairs
    tx: dict[int, list[PairCounters]] = {}
    for pair in pairs:
        tx.setdefault(pair.egress.ifindex, []).append(pair)
        # An egress-only port runs no xdpfwd program: only what it sends is known.
        ports.setdefault(pair.egress.ifindex, PortCounters(pair.egress, None))
    for port, counters in list(ports.items()):
        sent = tx.get(port, [])
        ports[port] = PortCounters(
            counters.port,
            counters.counters,
            sum(p.tx_packets for p in sent),
            sum(p.tx_bytes for p in sent),
        )
    ports = dict(sorted(ports.items()))
    exceptions = {ingress: e.exceptions for (ingress, egress), e in events.items() if egress == 0}
    return Snapshot(taken, wall, ports, {p.key: p for p in pairs}, exceptions, tracing)


def _entry_pairs(dp: Dataplane, ports: dict[int, PortCounters], links):
    for port, counters in ports.items():
        entry = dp.fwd.get(port)
        if entry is None:
            continue
        ingress, egress = counters.port, known(entry.egress_ifindex, links)
        stats = dp.egress_stats.read(port) if entry.egress_prog_id else None
        if stats is None:
            # No egress program counts this entry: what the ingress port redirected.
            c = counters.counters
            yield PairCounters(ingress, egress, None, "ingress", c.redirect_packets,
                               c.redirect_bytes)  # fmt: skip
        else:
            yield PairCounters(ingress, egress, None, "egress", stats.tx_packets,
                               stats.tx_bytes, stats.drop_packets)  # fmt: skip


def _group_pairs(dp: Dataplane, links):
    for group in group_infos(dp, links):
        for row in group.pairs:
            c = row.counters
            yield PairCounters(row.ingress, row.egress, group.name, "egress", c.tx_packets,
                               c.tx_bytes, c.drop_packets)  # fmt: skip


def _open_tx_events(dp: Dataplane) -> maps.TxEventsTable | None:
    """The tracepoints' counts; None before the first `stats --watch` compiled them."""
    try:
        return maps.TxEventsTable(dp.pins.pin(maps.PIN_TX_EVENTS))
    except FileNotFoundError:
        return None


def _tx_events(dp: Dataplane) -> dict[tuple[int, int], maps.TxEvents]:
    table = _open_tx_events(dp)
    if table is None:
        return {}
    try:
        return table.read_all()
    finally:
        table.close()


def _with_events(pair: PairCounters, events) -> PairCounters:
    return replace(pair, events=events.get(pair.key, maps.TxEvents()))


def clear(pins: PinDir) -> bool:
    """Zero every counter under pins; False when nothing is set up there."""
    prereqs.require_privileges()
    with pins.locked(create=False):
        dp = Dataplane.open(pins)
        if dp is None:
            return False
        with dp:
            _zero(dp)
    return True


def _zero(dp: Dataplane) -> None:
    for port in dp.ports.ifindexes():
        dp.stats.reset(port)
        if dp.egress_stats is not None:
            dp.egress_stats.reset(port)
    if dp.pairs is not None:
        for ingress, egress in dp.pairs.pairs():
            dp.pairs.forget(ingress, egress)
    events = _open_tx_events(dp)
    if events is not None:
        for ingress, egress in events.pairs():
            events.forget(ingress, egress)
        events.close()
