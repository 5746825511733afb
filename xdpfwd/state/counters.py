"""Reading xdpfwd's counters into a Snapshot, and zeroing them."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import maps
from xdpfwd.model.counters import PairCounters, PortCounters, Snapshot
from xdpfwd.state import balance
from xdpfwd.state.dataplane import Dataplane
from xdpfwd.state.groups import group_infos
from xdpfwd.state.ports import known


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
    pairs = [
        *_entry_pairs(dp, ports, links, dp.invalid_verdicts()),
        *_group_pairs(dp, links),
        *_balanced_pairs(dp, links),
    ]
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


def _entry_pairs(dp: Dataplane, ports: dict[int, PortCounters], links, invalid):
    for port, counters in ports.items():
        entry = dp.fwd.get(port)
        if entry is None:
            continue
        ingress, egress = counters.port, known(entry.egress_ifindex, links)
        stats = dp.egress_stats.read(port) if entry.egress_prog_id else None
        if stats is None:
            # No egress program counts this entry: what the ingress port redirected.
            c = counters.counters
            yield PairCounters(
                ingress, egress, None, "ingress", c.redirect_packets, c.redirect_bytes
            )
        else:
            yield PairCounters(
                ingress,
                egress,
                None,
                "egress",
                stats.tx_packets,
                stats.tx_bytes,
                stats.drop_packets,
                egress_invalid_packets=invalid.read(port) if invalid is not None else 0,
            )


def _balanced_pairs(dp: Dataplane, links):
    """Each egress port of a balanced entry whose buckets count per pair (the
    built-in egress program), with the buckets it has now."""
    if dp.pairs is None or not dp.group_prog_id:
        return  # plain ifindex entries: no egress programs, no pair counters
    for ingress in balance.balanced_ports(dp):
        table = balance.table(dp, ingress)
        if not any(e is not None and e.egress_prog_id == dp.group_prog_id for e in table):
            continue
        now = Counter(e.egress_ifindex for e in table if e is not None)
        egress = now.keys() | {e for i, e in dp.pairs.pairs() if i == ingress}
        for port in sorted(egress):
            c = dp.pairs.read(ingress, port) or maps.EgressStats()
            yield PairCounters(
                known(ingress, links),
                known(port, links),
                None,
                "egress",
                c.tx_packets,
                c.tx_bytes,
                c.drop_packets,
                buckets=now.get(port, 0),
            )


def _group_pairs(dp: Dataplane, links):
    for group in group_infos(dp, links):
        for row in group.pairs:
            c = row.counters
            yield PairCounters(
                row.ingress,
                row.egress,
                group.name,
                "egress",
                c.tx_packets,
                c.tx_bytes,
                c.drop_packets,
            )


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


def zero(dp: Dataplane) -> None:
    for port in dp.ports.ifindexes():
        dp.stats.reset(port)
        if dp.egress_stats is not None:
            dp.egress_stats.reset(port)
    invalid = dp.invalid_verdicts()
    if invalid is not None:
        for port in invalid.ifindexes():
            invalid.delete(port)
    if dp.pairs is not None:
        for ingress, egress in dp.pairs.pairs():
            dp.pairs.forget(ingress, egress)
    events = _open_tx_events(dp)
    if events is not None:
        for ingress, egress in events.pairs():
            events.forget(ingress, egress)
        events.close()
