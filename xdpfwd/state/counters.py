"""Reading xdpfwd's counters into a Snapshot, keeping what ended pairs and released
or departed ports had counted (so that the sums they were part of never go down), and
zeroing them."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection
from contextlib import closing
from dataclasses import astuple, replace

from xdpfwd.errors import XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import McastGroup, McastReceiver
from xdpfwd.model.counters import (
    LOSS_REASONS,
    PairCounters,
    PortCounters,
    Snapshot,
    retirements,
)
from xdpfwd.state import balance, intent, multicast, tracing
from xdpfwd.state.dataplane import Dataplane
from xdpfwd.state.entries import entry_counts
from xdpfwd.state.groups import group_infos
from xdpfwd.state.ports import known

log = logging.getLogger(__name__)


def snapshot(dp: Dataplane, links: dict[int, netdev.Link] | netdev.Names | None = None) -> Snapshot:
    """Every managed port and every pair (forwarding entries, group members), named
    after the links the caller read (or their names, looked up now).

    While loss accounting is attached, ports and pairs carry what the tracepoint
    programs counted so far.
    """
    if links is None:
        with closing(netdev.Names()) as names:
            return snapshot(dp, names)
    taken, wall = time.monotonic(), time.time()
    events = tx_events(dp)
    traced = events is not None
    events = events or {}
    ports, flooded, uncounted = {}, {}, set()
    for port in sorted(dp.ports.ifindexes()):
        counters, flooded[port] = dp.stats.read_with_tail(port)
        ports[port] = PortCounters(known(port, links), counters or maps.PortStats())
        settings = dp.ports.get(port)
        if settings is not None and settings.broadcast and not settings.members:
            uncounted.add(port)  # generic mode: its copies are counted nowhere
    pairs = [
        *_entry_pairs(dp, ports, links),
        *_group_pairs(dp, links),
        *_balanced_pairs(dp, links),
    ]
    pairs = [_with_events(pair, events) for pair in pairs] if traced else pairs
    tx: dict[int, list[PairCounters]] = {}
    for pair in pairs:
        tx.setdefault(pair.egress.ifindex, []).append(pair)
        # An egress-only port runs no xdpfwd program: only what it sends is known.
        ports.setdefault(pair.egress.ifindex, PortCounters(pair.egress, None))
    groups = multicast.group_infos(dp, links)
    groups, events = _charge_copy_drops(groups, events, {p.key for p in pairs})
    copied: dict[int, tuple[int, int]] = {}  # receiver -> multicast copies, bytes
    for group in groups:
        # (A former receiver's copies stay in its TX while the group lives.)
        for r in (*group.receivers, *group.former):
            packets, nbytes = copied.get(r.port.ifindex, (0, 0))
            copied[r.port.ifindex] = (packets + (r.copies or 0), nbytes + (r.copy_bytes or 0))
            ports.setdefault(r.port.ifindex, PortCounters(r.port, None))
    retired = dp.retired.rows() if dp.retired is not None else {}
    replicated = {  # port -> frames it replicated as a multicast source (now or before)
        port: (dp.mcast.port_stats.read(port) or maps.McastPortStats()).packets
        for port in (dp.ports.ifindexes() if dp.mcast is not None else ())
    }
    for port, counters in list(ports.items()):
        sent = tx.get(port, [])
        more = copied.get(port, (0, 0))
        past = retired.get(port, maps.RetiredPort())
        ports[port] = PortCounters(
            counters.port,
            counters.counters,
            sum(p.tx_packets for p in sent) + more[0] + past.tx_packets,
            sum(p.tx_bytes for p in sent) + more[1] + past.tx_bytes,
            _summed(e for (ingress, _), e in events.items() if ingress == port) if traced else None,
            replicated.get(port, 0),
            past,
            flooded.get(port),
            port not in uncounted,
        )
    ports = dict(sorted(ports.items()))
    exceptions = {ingress: e.exceptions for (ingress, egress), e in events.items() if egress == 0}
    return Snapshot(
        taken,
        wall,
        ports,
        {p.key: p for p in pairs},
        exceptions,
        traced,
        {g.group: g for g in groups},
        dict(zip(LOSS_REASONS, dp.retired.released(), strict=True)) if dp.retired else {},
        _departed(dp, retired, ports).plus(_departed_receivers(groups)),
        dp.retired.released_copies() if dp.retired else 0,
    )


def retire(
    dp: Dataplane,
    before: Snapshot,
    links: dict[int, netdev.Link],
    kept: Collection[tuple[int, int]] = (),
) -> None:
    """After a change: keep what the pairs it ended, and the ports it released, had
    counted (model.counters.retirements; kept: group pairs kept as they were
    forgotten), and forget the rows of deleted devices. A failure costs only
    monotony: it is logged, the change stands."""
    if dp.retired is None:
        return  # pins made before: the next change creates the map
    table = dp.retired
    try:
        ended = retirements(before, snapshot(dp, links), kept)
        for port, counts in ended.ports.items():
            table.set_port(port, table.port(port).plus(counts))
        for port in ended.released:  # its losses go to the total of released ports
            table.set_port(port, maps.RetiredPort(*astuple(table.port(port))[:2]))
        if ended.released_flood_copies_lost:
            table.set_released_copies(table.released_copies() + ended.released_flood_copies_lost)
        if any(ended.released_losses.values()):
            more = (ended.released_losses[reason] for reason in LOSS_REASONS)
            table.set_released(tuple(a + b for a, b in zip(table.released(), more, strict=True)))
        departed = table.departed().plus(ended.departed)
        for port, row in table.rows().items():
            if port not in links:  # a device with its ifindex would get its TX
                departed = departed.plus(
                    maps.DepartedPorts(tx_packets=row.tx_packets, tx_bytes=row.tx_bytes)
                )
                table.delete(port)
        if departed != table.departed():
            table.set_departed(departed)
    except (OSError, XdpfwdError) as e:  # the change is committed: say it, go on
        log.warning("could not keep the counts of what this change ended: %s", e)


def _departed(
    dp: Dataplane, retired: dict[int, maps.RetiredPort], ports: dict[int, PortCounters]
) -> maps.DepartedPorts:
    """What ports no longer in the rows had counted: the departed rows, and the retired
    TX of ports nothing sends to now (theirs again if they come back)."""
    if dp.retired is None:
        return maps.DepartedPorts()
    absent = [row for port, row in retired.items() if port not in ports]
    sent = maps.DepartedPorts(
        tx_packets=sum(row.tx_packets for row in absent),
        tx_bytes=sum(row.tx_bytes for row in absent),
    )
    return dp.retired.departed().plus(sent)


def _departed_receivers(groups: list[McastGroup]) -> maps.DepartedPorts:
    """The copies receivers whose devices are gone had sent, while their groups live
    (then they are retired with the group's other rows)."""
    gone = [r for g in groups for r in g.departed]
    return maps.DepartedPorts(
        tx_packets=sum(r.copies or 0 for r in gone),
        tx_bytes=sum(r.copy_bytes or 0 for r in gone),
    )


def _entry_pairs(dp: Dataplane, ports: dict[int, PortCounters], links):
    running = {port: dp.fwd.get(port) for port in ports}
    taken = _taken_entries(dp, [p for p, entry in running.items() if entry is None], links)
    for port, counters in ports.items():
        entry = running[port]
        if entry is not None:
            egress = entry.egress_ifindex
            counted_by = "egress" if entry.egress_prog_id else "ingress"  # what counts its drops
        elif port in taken:
            egress, counted_by = taken[port]
        else:
            continue
        c = entry_counts(dp, port, counters.counters)
        yield PairCounters(
            counters.port,
            known(egress, links),
            None,
            counted_by,
            c.sent.tx_packets,
            c.sent.tx_bytes,
            c.sent.drop_packets,
            egress_invalid_packets=c.invalid_packets,
        )


def _taken_entries(dp: Dataplane, without_entry: list[int], links) -> dict[int, tuple[int, str]]:
    """Ingress -> the gone egress of its entry, which the kernel took, and what counted
    its drops. Deleting a device takes the devmap entries that send to it; the pair,
    whose beginning stays, is shown until a change (prune) ends it and keeps its
    counts, which the record names the egress of."""
    if dp.entry_base is None or not without_entry:
        return {}
    began = [p for p in without_entry if dp.entry_base.get(p) is not None]
    recorded = intent.load(dp.pins) if began else None  # (links: names only, for speed)
    if recorded is None:
        return {}
    taken = {}
    for port in began:
        link = links.get(port)
        name = link.ifname if link is not None else recorded.name_of(port)
        entry = next((e for e in recorded.config.forward if e.ingress == name), None)
        egress = recorded.bound.get(entry.egress) if entry is not None else None
        if egress is not None and links.get(egress) is None:
            taken[port] = egress, "ingress" if entry.spec.kind == "plain" else "egress"
    return taken


def _balanced_pairs(dp: Dataplane, links):
    """Each egress port of a balanced entry whose buckets count per pair (the
    built-in egress program), with the buckets it has now."""
    if dp.pairs is None or not dp.group_prog_id:
        return  # plain ifindex entries: no egress programs, no pair counters
    for ingress in balance.balanced_ports(dp):
        live = [e for e in balance.table(dp, ingress) if e is not None]
        counted = {e for i, e in dp.pairs.pairs() if i == ingress}
        # The kernel took every bucket when the devices of all its ports were deleted:
        # their pairs count on until prune.
        if not (any(e.egress_prog_id == dp.group_prog_id for e in live) or (counted and not live)):
            continue
        now = Counter(e.egress_ifindex for e in live)
        egress = now.keys() | counted
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
        # Members of groups made before the tracepoint counted copies run the
        # built-in egress program, which counts them instead.
        entries = dp.open_group(group.name).members().values()
        counted_by = "egress" if any(e.egress_prog_id for e in entries) else "transmit"
        for row in group.pairs:
            c = row.counters
            yield PairCounters(
                row.ingress,
                row.egress,
                group.name,
                counted_by,
                c.tx_packets,
                c.tx_bytes,
                c.drop_packets,
            )


def tx_events(dp: Dataplane) -> dict[tuple[int, int], maps.TxEvents] | None:
    """What the tracepoint programs counted per (ingress, egress) pair; None while
    loss accounting is not attached (nothing would count)."""
    if dp.tx_events is None or not tracing.is_attached(dp.pins):
        return None
    return dp.tx_events.read_all()


def _charge_copy_drops(
    groups: list[McastGroup],
    events: dict[tuple[int, int], maps.TxEvents],
    pairs: set[tuple[int, int]],
) -> tuple[list[McastGroup], dict[tuple[int, int], maps.TxEvents]]:
    """Copies of multicast frames that a receiver's driver did not send, after its
    egress program counted them, charged to their group (copies lost, off the
    receiver's copies) and not to the source port's frames: the tracepoint names
    only the (source, receiver) pair, which is no entry's or member's of the source
    (their bulks would mix: refused). A pair of several groups goes to the first."""
    charged: set[tuple[int, int]] = set()
    result = []
    for g in groups:
        dropped: dict[int, int] = {}
        for s in g.sources:
            for r in g.receivers:
                key = (s.ifindex, r.port.ifindex)
                if key in events and key not in pairs and key not in charged:
                    charged.add(key)
                    dropped[key[1]] = dropped.get(key[1], 0) + events[key].xmit_drops
        if not any(dropped.values()) or not g.counted:
            result.append(g)
            continue
        receivers = [_less_copies(r, dropped.get(r.port.ifindex, 0)) for r in g.receivers]
        # copies_out also holds former receivers' copies: take off only what was dropped.
        changed = zip(g.receivers, receivers, strict=True)
        taken = sum((before.copies or 0) - (after.copies or 0) for before, after in changed)
        result.append(replace(g, receivers=receivers, copies_out=(g.copies_out or 0) - taken))
    events = {k: replace(e, xmit_drops=0) if k in charged else e for k, e in events.items()}
    return result, events


def _less_copies(r: McastReceiver, dropped: int) -> McastReceiver:
    """r without dropped copies (their bytes at the mean size of its copies)."""
    copies, nbytes = r.copies or 0, r.copy_bytes or 0
    if not dropped or not copies:
        return r
    left = max(0, copies - dropped)
    return replace(r, copies=left, copy_bytes=nbytes * left // copies)


def _summed(rows) -> maps.TxEvents:
    totals = [0, 0, 0, 0]
    for row in rows:
        for i, value in enumerate(astuple(row)):
            totals[i] += value
    return maps.TxEvents(*totals)


def _with_events(pair: PairCounters, events) -> PairCounters:
    return replace(pair, events=events.get(pair.key, maps.TxEvents()))


def zero(dp: Dataplane) -> None:
    for port in dp.ports.ifindexes():
        dp.stats.reset(port)
        if dp.mcast is not None:
            dp.mcast.port_stats.reset(port)
        if dp.egress_stats is not None:
            dp.egress_stats.reset(port)
        dp.forget_entry_base(port)
    invalid = dp.invalid_verdicts()
    if invalid is not None:
        for port in invalid.ifindexes():
            invalid.delete(port)
    if dp.pairs is not None:
        for ingress, egress in dp.pairs.pairs():
            dp.pairs.forget(ingress, egress)
    multicast.zero(dp)
    if dp.retired is not None:
        dp.retired.clear()
    if dp.tx_events is not None:
        for ingress, egress in dp.tx_events.pairs():
            dp.tx_events.forget(ingress, egress)
