"""Everything xdpfwd shows: rich tables for people, JSON for programs, errors on stderr."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from xdpfwd.model import (
    AddResult,
    BalanceInfo,
    BroadcastDelResult,
    BroadcastResult,
    DelResult,
    DownResult,
    EgressProg,
    Iface,
    Listing,
    McastDelResult,
    McastGroup,
    McastListing,
    McastResult,
    PortRow,
    PortStats,
    PruneResult,
)
from xdpfwd.model.counters import (
    PairCounters,
    PortCounters,
    Rate,
    Rates,
    Snapshot,
    WatchFrame,
)
from xdpfwd.model.reports import BASELINE, BenchReport, DemoReport, Lab

# Wide enough that no table is cut to fit when stdout is a pipe or a file; rich would
# otherwise assume 80 columns and elide whole columns as "…".
UNCUT_WIDTH = 1000


def _out(**options) -> Console:
    # Created per call so that whatever sys.stdout is now (a CliRunner buffer) is used.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=UNCUT_WIDTH if piped else None, **options)


def _line(console: Console, text: str) -> None:
    """One unwrapped line, printed verbatim (no markup); characters that would break
    it (newlines, other controls, bytes that are not UTF-8) are shown escaped."""
    console.print(Text(printable(text)), soft_wrap=True)


def printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def spinner(text: str):
    """A spinner with text on stderr while a slow step runs (progress.install)."""
    return Console(stderr=True).status(text)


def error(message: str) -> None:
    _line(Console(stderr=True, highlight=False), f"error: {message}")


def note(message: str) -> None:
    _line(Console(stderr=True, highlight=False), f"note: {message}")


def warning(message: str) -> None:
    _line(Console(stderr=True, highlight=False), f"warning: {message}")


# Every --json document (and every line of `stats --watch --json`) is one object:
# these keys first, then the command's. man/xdpfwd.8 (JSON OUTPUT) and
# docs/json-schema.json describe them; a unit test holds the output to the schema.
JSON_SCHEMA_VERSION = 1
_json_context = {"pin_dir": None, "netns": None}


def json_context(pin_dir: str, netns: str | None) -> None:
    """Where this command runs: the pin directory and the namespace (the CLI sets it)."""
    _json_context.update(pin_dir=pin_dir, netns=netns)


def json_document(payload: dict, taken: float | None = None) -> dict:
    """payload under the common keys; every port object also says its namespace."""
    head = {
        "schema_version": JSON_SCHEMA_VERSION,
        "time": taken if taken is not None else time.time(),
        **_json_context,
    }
    return {**head, **_with_netns(payload, _json_context["netns"])}


def _with_netns(data, netns: str | None):
    """A port is {ifname, ifindex} wherever it appears; it gains netns here, once."""
    if isinstance(data, dict):
        if set(data) == {"ifname", "ifindex"}:
            return {**data, "netns": netns}
        return {key: _with_netns(value, netns) for key, value in data.items()}
    if isinstance(data, list):
        return [_with_netns(item, netns) for item in data]
    return data


def print_json(payload: dict, taken: float | None = None) -> None:
    sys.stdout.write(json.dumps(json_document(payload, taken), indent=2) + "\n")


def _egress_prog(prog: EgressProg | None) -> str:
    if prog is None:
        return "-"
    if prog.kind == "none":
        return "none"
    return (
        f"{prog.kind} {prog.name} ({prog.prog_id})"
        if prog.kind == "user"
        else (f"{prog.kind} ({prog.prog_id})")
    )


def _port(iface: Iface | None) -> str:
    if iface is None:
        return "-"
    return f"{iface.ifname} ({iface.ifindex})" if iface.ifname else f"gone ({iface.ifindex})"


def _shares(info: BalanceInfo) -> str:
    return ", ".join(f"{p.name} {p.buckets}" for p in info.ports)


def add_result(result: AddResult) -> None:
    out = _out()
    if result.balance is not None:
        src = result.entries[0][0]
        ports = ", ".join(dst.ifname for _, dst in result.entries)
        _line(out, f"{src.ifname} -> {ports} (balanced, {result.balance.hash} hash)")
        _line(out, f"  buckets: {_shares(result.balance)} of 256")
    else:
        for src, dst in result.entries:
            _line(out, f"{src.ifname} -> {dst.ifname}")
    _attachments(out, result.attachments, "")
    compiled = "compiled now" if result.compiled else "reused pinned program"
    _line(
        out,
        f"  table {result.table} of {result.value_format} entries, program id "
        f"{result.prog_id} ({compiled})",
    )
    if result.egress is not None:
        _line(out, f"  egress program: {_egress_prog(result.egress)}")
    _warnings(result.attachments, result.warnings)


def _attachments(out: Console, attachments, role: str) -> None:
    """A line per port attached (or found attached), with its role if it has one."""
    for att in attachments:
        how = "attached" if att.changed else "already attached"
        _line(out, f"  {att.port.ifname}: {role}{', ' if role else ''}{how} ({att.mode} mode)")


def _warnings(attachments, warnings) -> None:
    _fallback_warnings(attachments)
    for message in warnings:
        warning(message)


def _fallback_warnings(attachments) -> None:
    for att in attachments:
        if att.warning:
            warning(att.warning)


def broadcast_result(result: BroadcastResult) -> None:
    out = _out()
    verb = "created" if result.created else "updated"
    excluded = "excluded" if result.exclude_ingress else "included"
    _line(out, f"group {result.group} {verb}: ingress port {excluded}, {result.table} table")
    _attachments(out, result.attachments, "member")
    for port in result.converted:
        _line(out, f"  {port.ifname}: its forwarding entry was removed")
    _warnings(result.attachments, result.warnings)


def broadcast_del_result(result: BroadcastDelResult) -> None:
    out = _out()
    for port in result.removed:
        _line(out, f"removed {port.label} from its group")
    for name in result.emptied:
        _line(out, f"  group {name} had no member left and was removed")
    for port in result.detached:
        _line(out, f"  detached from {port.label}")


def del_result(result: DelResult) -> None:
    out = _out()
    if result.balanced:
        ports = ", ".join(port.label for port in result.balanced)
        _line(out, f"removed {result.removed.label} -> {ports} (balanced)")
    else:
        _line(out, f"removed {result.removed.label} -> {result.egress.label}")
    for port in result.detached:
        _line(out, f"  detached from {port.label}")


def prune_result(result: PruneResult) -> None:
    out = _out()
    if not (result.gone or result.emptied or result.detached or result.steps):
        _line(out, "nothing to prune")
    for step in result.steps:
        _line(out, step)
    for message in result.skipped:
        warning(message)
    for ifindex in result.gone:
        _line(out, f"forgot ifindex {ifindex}: its device is gone")
    for name in result.emptied:
        _line(out, f"removed group {name}: no member left")
    for port in result.detached:
        _line(out, f"detached from {port.label}")


def down_result(result: DownResult, pin_dir: str) -> None:
    out = _out()
    if not result.removed_pins:
        _line(out, f"nothing to do: no xdpfwd state in {pin_dir}")
        return
    for port in result.detached:
        _line(out, f"detached from {port.label}")
    if result.left:
        _line(out, f"removed xdpfwd's pins from {pin_dir}")
        shown = ", ".join(result.left)
        warning(f"kept {pin_dir}: it also holds what xdpfwd did not make ({shown})")
    else:
        _line(out, f"removed {pin_dir}")


def listing_table(listing: Listing) -> Table:
    table = Table(
        title=f"{listing.pin_dir}  {listing.table} of {listing.value_format} entries  "
        f"program id {listing.prog_id}",
        title_justify="left",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for name in ("INGRESS", "EGRESS", "MODE", "ON-MISS", "STATE", "EGRESS PROG"):
        table.add_column(name, no_wrap=True)
    table.add_column("FORWARDED", justify="right")
    table.add_column("MISSED", justify="right")
    table.add_column("LOST", justify="right")
    for row in listing.rows:
        state = Text(row.state, style="green" if row.state == "ok" else "yellow")
        if row.balance is not None:
            egress = f"balanced over {len(row.balance.ports)}"
        else:
            egress = f"group {row.group}" if row.group else _egress_of(row)
        table.add_row(
            _port(row.ingress),
            egress,
            row.mode or "-",
            row.on_miss,
            state,
            _egress_prog(row.egress_prog),
            str(row.forwarded_or_redirected),
            str(row.counters.miss_packets),
            _lost(row.lost),
        )
    return table


def _egress_of(row: PortRow) -> str:
    if row.egress is None and row.multicast:
        return "multicast " + ", ".join(row.multicast)
    return _port(row.egress)


def _forwarded(snapshot: Snapshot, port: PortCounters) -> int:
    """As PortRow.forwarded_or_redirected."""
    forwarded = snapshot.forwarded(port.port.ifindex)
    return port.counters.redirect_packets if forwarded is None else forwarded


def _lost(lost: dict[str, int | None]) -> str:
    """Frames lost by every reason but a miss; "?" marks what is not known."""
    known = [n for reason, n in lost.items() if reason != "miss" and n is not None]
    unknown = any(n is None for n in lost.values())
    return f"{sum(known)}{'+?' if unknown else ''}"


def groups_table(listing: Listing) -> Table:
    table = Table(
        title="broadcast groups",
        title_justify="left",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for name in ("GROUP", "INGRESS PORT", "MEMBERS"):
        table.add_column(name)
    for group in listing.groups:
        table.add_row(
            group.name,
            "excluded" if group.exclude_ingress else "included",
            ", ".join(_port(m) for m in group.members),
        )
    return table


def balanced_table(listing: Listing) -> Table:
    """One row per egress port of each balanced entry."""
    table = Table(
        title="balanced entries",
        title_justify="left",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for name in ("INGRESS", "HASH", "EGRESS", "STATE", "WEIGHT", "BUCKETS"):
        table.add_column(name, no_wrap=True, justify="right" if name == "BUCKETS" else "left")
    table.add_column("FRAMES", justify="right")
    table.add_column("BYTES", justify="right")
    for row in listing.rows:
        info = row.balance
        if info is None:
            continue
        for i, p in enumerate(info.ports):
            c = p.counters
            table.add_row(
                _port(row.ingress) if i == 0 else "",
                info.hash if i == 0 else "",
                f"{p.name} ({p.port.ifindex})" if p.port.ifindex else p.name,
                Text(p.state, style="green" if p.state == "up" else "yellow"),
                str(p.weight) if p.weight else "-",
                f"{p.buckets} ({p.buckets * 100 / 256:.0f}%)",
                count(c.tx_packets) if c else "-",
                nbytes(c.tx_bytes) if c else "-",
            )
        if info.unassigned:
            table.add_row("", "", "(no port)", "", "", str(info.unassigned), "", "")
    return table


def listing(result: Listing, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    out = _out()
    if not result.rows:
        _line(out, f"no forwarding entries in {result.pin_dir}")
        return
    out.print(listing_table(result))
    if any(row.balance for row in result.rows):
        out.print(balanced_table(result))
    if result.groups:
        out.print(groups_table(result))
    if result.multicast:
        out.print(multicast_table(result.multicast))
    for row in result.rows:
        for problem in row.problems:
            warning(f"{row.ingress.label}: {problem}")


# --- multicast -----------------------------------------------------------------------


def _count_or_dash(value: int | None) -> str:
    return "-" if value is None else count(value)


def multicast_table(groups: list[McastGroup]) -> Table:
    table = Table(
        title="multicast groups",
        title_justify="left",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for name in ("GROUP", "FROM", "TO", "INGRESS PORT"):
        table.add_column(name)
    for name in ("IN", "COPIES", "LOST"):
        table.add_column(name, justify="right", no_wrap=True)
    for g in groups:
        table.add_row(
            g.group,
            ", ".join(_port(p) for p in g.sources),
            ", ".join(_port(r.port) for r in g.receivers),
            "excluded" if g.exclude_ingress else "included",
            count(g.in_packets),
            _count_or_dash(g.copies_out),
            _count_or_dash(g.copies_lost),
        )
    return table


def multicast_listing(result: McastListing, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    out = _out()
    if not result.supported:
        _line(out, f"the pins in {result.pin_dir} predate multicast groups")
    elif not result.groups:
        _line(out, f"no multicast groups in {result.pin_dir}")
    else:
        out.print(multicast_table(result.groups))


def multicast_result(result: McastResult) -> None:
    out = _out()
    verb = "created" if result.created else "updated"
    excluded = "excluded" if result.exclude_ingress else "included"
    _line(out, f"multicast group {result.group} {verb}: ingress port {excluded}")
    _line(out, f"  from {', '.join(p.label for p in result.sources)}")
    _line(out, f"  to {', '.join(p.label for p in result.receivers)}")
    _attachments(out, result.attachments, "source")
    _warnings(result.attachments, result.warnings)


def multicast_del_result(result: McastDelResult) -> None:
    out = _out()
    for port in result.receivers:
        _line(out, f"{port.label} receives {result.group} no more")
    for port in result.sources:
        _line(out, f"{port.label} is a source of {result.group} no more")
    if result.removed:
        _line(out, f"  multicast group {result.group} was removed")
    for port in result.detached:
        _line(out, f"  detached from {port.label}")


def lab_status(lab: Lab, name: str, as_json: bool) -> None:
    if as_json:
        print_json(lab.as_dict())
        return
    if not lab.ports:
        _line(_out(), f"no lab named {name}")
        return
    table = Table(title=f"lab {lab.prefix}", title_justify="left", box=None, header_style="bold")
    for column in ("PORT", "HOST NETNS", "HOST DEVICE", "HOST ADDRESS"):
        table.add_column(column)
    for p in lab.ports:
        table.add_row(p.port, p.netns, p.host_dev, p.address)
    _out().print(table)


def demo_report(report: DemoReport) -> None:
    out = _out()
    _line(out, "lab: veth ports, each with a host namespace behind it")
    for p in report.lab.ports:
        _line(out, f"  {p.port} <-> host {p.address} (netns {p.netns})")
    add_result(report.added)
    pings = Table(
        title="ping across the XDP forwarder", title_justify="left", box=None, header_style="bold"
    )
    for column in ("FROM", "TO", "SENT", "RECEIVED", "RESULT"):
        pings.add_column(column)
    for p in report.pings:
        ok = p.received == p.sent > 0
        pings.add_row(
            f"{p.source.ip} ({p.source.netns})",
            f"{p.target.ip} ({p.target.netns})",
            str(p.sent),
            str(p.received),
            Text("ok" if ok else "LOST", style="green" if ok else "red"),
        )
    out.print(pings)
    out.print(listing_table(report.listing))
    verdict = (
        "frames were forwarded by XDP in both directions" if report.ok else "some pings were lost"
    )
    _line(out, f"demo {'passed' if report.ok else 'FAILED'}: {verdict}; lab and pins removed")


def bench_report(report: BenchReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    out = _out()
    m, s = report.machine, report.settings
    _line(out, f"{m['cpu']}, {m['cpus_online']} CPUs, Linux {m['kernel']}")
    if m.get("xdp_tracepoint_links"):
        _line(
            out,
            f"warning: {m['xdp_tracepoint_links']} program(s) not this bench's were on the "
            "XDP tracepoints (bpftool link show): every row paid for them",
        )
    _line(
        out,
        f"{s['frame_size']} B frames, {s['flows']} flow(s), {s['cpus']} generator CPU(s), "
        f"{s['repeat']} x {s['duration_s']:g} s per row",
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ROW")
    for column in ("MEDIAN", "RANGE", "RATIO"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in report.rows:
        low, high = min(row.samples), max(row.samples)
        if row.unit == "Mpps":
            median, spread = f"{row.median:.2f} Mpps", f"{low:.2f}-{high:.2f}"
        else:
            median, spread = f"{row.median * 1000:.0f} ms", f"{low * 1000:.0f}-{high * 1000:.0f}"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        if row.reference not in (None, BASELINE) and row.ratio is not None:
            ratio += f" {row.reference}"
        table.add_row(row.name, median, spread, ratio)
    out.print(table)
    _line(out, "RATIO: to the baseline, or to the row named after it")


# --- stats ---------------------------------------------------------------------------


def _scaled(value: float, unit: str) -> str:
    """Human units with three significant digits: 1.23 Mpps, 614 Mbit/s, 12.3 KB."""
    prefix = ""
    for factor, name in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= factor:
            value, prefix = value / factor, name
            break
    digits = 0 if value >= 100 or not prefix else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {prefix}{unit}".rstrip()


def pps(value: float) -> str:
    return _scaled(value, "pps")


def bps(value: float) -> str:
    return _scaled(value, "bit/s")


def count(value: int) -> str:
    return str(value) if value < 10_000 else _scaled(value, "")


def nbytes(value: int) -> str:
    return _scaled(value, "B")


def _sorted_ports(snapshot: Snapshot, rates: Rates | None, sort: str) -> list[PortCounters]:
    rows = list(snapshot.ports.values())
    if sort == "rate":
        if rates:
            rows.sort(key=lambda p: -(rates.port_rx.get(p.port.ifindex) or Rate(0, 0)).pps)
        else:
            rows.sort(key=lambda p: -(p.counters.rx_packets if p.counters else 0))
    return rows


def _sorted_pairs(snapshot: Snapshot, rates: Rates | None, sort: str) -> list[PairCounters]:
    rows = list(snapshot.pairs.values())
    if sort == "rate":
        if rates:
            rows.sort(key=lambda p: -(rates.pair_tx.get(p.key) or Rate(0, 0)).pps)
        else:
            rows.sort(key=lambda p: -p.tx_packets)
    return rows


_REASON_LABELS = {
    "miss": "miss",
    "too_big": "too big to flood",
    "egress_drop": "egress drop",
    "egress_invalid": "invalid verdict",
    "redirect_error": "redirect err",
    "xmit_drop": "tx drop",
}


def _losses_line(losses: dict[str, int | None], since: str) -> Text:
    """One line, short enough for 80 columns: only the reasons that lost frames."""
    parts = [f"{_REASON_LABELS[reason]} {count(n)}" for reason, n in losses.items() if n]
    line = f"not forwarded ({since}): {', '.join(parts) or 'none'}"
    if losses.get("xmit_drop") is None:
        line += "; loss accounting is off (see doctor)"
    return Text(line, no_wrap=True, overflow="ellipsis")


def stats_tables(
    snapshot: Snapshot,
    rates: Rates | None = None,
    losses: dict | None = None,
    sort: str = "name",
    expand: bool = False,
) -> Group:
    """One table of ports and one of pairs: totals, or rates (with the running totals
    beside them) when given. expand: the tables take the terminal's whole width."""
    ports = Table(box=None, header_style="bold", pad_edge=False, expand=expand)
    pairs = Table(box=None, header_style="bold", pad_edge=False, expand=expand)
    if rates is None:
        columns = ("PORT", "RX", "RX BYTES", "FWD", "MISS", "LOST", "TX", "TX BYTES")
        pair_columns = ("PAIR", "VIA", "TX", "TX BYTES", "EGRESS DROP", "REDIR ERR", "TX DROP")
    else:
        columns = ("PORT", "RX/S", "RX BIT/S", "RX", "TX/S", "TX BIT/S", "TX", "MISS/S")
        pair_columns = ("PAIR", "VIA", "TX/S", "TX BIT/S", "TX", "REDIR ERR")
    for i, name in enumerate(columns):
        ports.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for i, name in enumerate(pair_columns):
        pairs.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for p in _sorted_ports(snapshot, rates, sort):
        c = p.counters
        if rates is None:
            rx = (
                (
                    count(c.rx_packets),
                    nbytes(c.rx_bytes),
                    count(_forwarded(snapshot, p)),
                    count(c.miss_packets),
                    _lost(snapshot.port_losses(p.port.ifindex)),
                )
                if c
                else ("-",) * 5
            )
            ports.add_row(_port(p.port), *rx, count(p.tx_packets), nbytes(p.tx_bytes))
            continue
        rx, tx = rates.port_rx.get(p.port.ifindex), rates.port_tx.get(p.port.ifindex)  # None: -
        miss = rates.port_miss.get(p.port.ifindex)
        ports.add_row(
            _port(p.port),
            pps(rx.pps) if rx else "-",
            bps(rx.bps) if rx else "-",
            count(c.rx_packets) if c else "-",
            pps(tx.pps) if tx else "-",
            bps(tx.bps) if tx else "-",
            count(p.tx_packets),
            pps(miss) if miss is not None else "-",
        )
    for p in _sorted_pairs(snapshot, rates, sort):
        label = f"{p.ingress.label} -> {p.egress.label}"
        via = f"group {p.group}" if p.group else "entry"
        if p.buckets is not None:
            via = f"balanced {p.buckets * 100 / 256:.0f}%"
        if rates is None:
            ev = p.events
            pairs.add_row(
                label,
                via,
                count(p.tx_packets),
                nbytes(p.tx_bytes),
                count(p.egress_drop_packets),
                count(ev.redirect_errors) if ev else "-",
                count(max(0, ev.xmit_drops - p.egress_drop_packets - p.egress_invalid_packets))
                if ev
                else "-",
            )
        else:
            tx, ev = rates.pair_tx.get(p.key), p.events
            pairs.add_row(
                label,
                via,
                pps(tx.pps) if tx else "-",
                bps(tx.bps) if tx else "-",
                count(p.tx_packets),
                count(ev.redirect_errors) if ev else "-",
            )
    parts: list = [ports]
    if snapshot.pairs:
        parts.append(pairs)
    if snapshot.multicast:
        parts.append(_multicast_stats_table(snapshot, rates, expand))
    if losses is not None:
        since = "since start" if rates is not None else "total"
        parts.append(_losses_line(losses, since))
    return Group(*parts)


def _multicast_stats_table(snapshot: Snapshot, rates: Rates | None, expand: bool) -> Table:
    """Per group: frames in, copies out and lost (totals), or their rates with the
    running totals beside them."""
    table = Table(box=None, header_style="bold", pad_edge=False, expand=expand)
    if rates is None:
        columns = ("GROUP", "IN", "IN BYTES", "COPIES", "LOST")
    else:
        columns = ("GROUP", "IN/S", "IN BIT/S", "IN", "COPIES/S", "COPIES BIT/S", "COPIES")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for key, g in snapshot.multicast.items():
        if rates is None:
            table.add_row(
                key,
                count(g.in_packets),
                nbytes(g.in_bytes),
                _count_or_dash(g.copies_out),
                _count_or_dash(g.copies_lost),
            )
            continue
        rx, tx = rates.mcast_in.get(key), rates.mcast_out.get(key)
        table.add_row(
            key,
            pps(rx.pps) if rx else "-",
            bps(rx.bps) if rx else "-",
            count(g.in_packets),
            pps(tx.pps) if tx else "-",
            bps(tx.bps) if tx else "-",
            _count_or_dash(g.copies_out),
        )
    return table


def _multicast_stats(snapshot: Snapshot, rates: Rates | None) -> list[dict]:
    rows = []
    for key, g in snapshot.multicast.items():
        rx = rates.mcast_in.get(key) if rates else None
        tx = rates.mcast_out.get(key) if rates else None
        rows.append(
            {
                **g.as_dict(),
                "in_pps": rx.pps if rx else None,
                "in_bps": rx.bps if rx else None,
                "copies_pps": tx.pps if tx else None,
                "copies_bps": tx.bps if tx else None,
            }
        )
    return rows


def stats_dict(snapshot: Snapshot, rates: Rates | None = None, losses: dict | None = None) -> dict:
    """The stats as one JSON document's keys; the same every time (null when unknown).
    Counters count since they began; rates and watch_not_forwarded, over the watch."""

    def rate(table: dict, key, field: str):
        r = table.get(key) if rates else None
        return getattr(r, field) if r is not None else None

    ports = []
    for p in snapshot.ports.values():
        k = p.port.ifindex
        counters = p.counters.as_dict() if p.counters else dict.fromkeys(_PORT_COUNTER_KEYS)
        ports.append(
            {
                "port": p.port.as_dict(),
                **counters,
                "forwarded_packets": snapshot.forwarded(k),
                "not_forwarded": snapshot.port_losses(k),
                "tx_packets": p.tx_packets,
                "tx_bytes": p.tx_bytes,
                "rx_pps": rate(rates.port_rx if rates else {}, k, "pps"),
                "rx_bps": rate(rates.port_rx if rates else {}, k, "bps"),
                "tx_pps": rate(rates.port_tx if rates else {}, k, "pps"),
                "tx_bps": rate(rates.port_tx if rates else {}, k, "bps"),
            }
        )
    pairs = []
    for p in snapshot.pairs.values():
        events = p.events
        pairs.append(
            {
                "ingress": p.ingress.as_dict(),
                "egress": p.egress.as_dict(),
                "group": p.group,
                "counted_by": p.counted_by,
                "tx_packets": p.tx_packets,
                "tx_bytes": p.tx_bytes,
                "egress_drop_packets": p.egress_drop_packets,
                "egress_invalid_packets": p.egress_invalid_packets,
                "xmit_drop_packets": events.xmit_drops if events else None,
                "redirect_error_packets": events.redirect_errors if events else None,
                "tx_pps": rate(rates.pair_tx if rates else {}, p.key, "pps"),
                "tx_bps": rate(rates.pair_tx if rates else {}, p.key, "bps"),
                "buckets": p.buckets,
            }
        )
    totals = {
        name: sum(row[name] or 0 for row in ports)
        for name in (
            "rx_packets",
            "rx_bytes",
            "redirect_packets",
            "miss_packets",
            "pass_packets",
            "drop_packets",
            "too_big_packets",
            "tx_packets",
            "tx_bytes",
        )
    }
    return {
        "tracing": snapshot.tracing,
        "interval_s": rates.seconds if rates else None,
        "ports": ports,
        "pairs": pairs,
        "multicast": _multicast_stats(snapshot, rates),
        "totals": totals,
        "not_forwarded": snapshot.losses(),
        "watch_not_forwarded": losses,
    }


_PORT_COUNTER_KEYS = tuple(PortStats().as_dict())

_PROMETHEUS_PORT = (
    ("rx_packets", "Frames that entered the port, seen by xdpfwd's XDP program."),
    ("rx_bytes", "Bytes that entered the port."),
    ("redirect_packets", "Frames the port handed to bpf_redirect_map()."),
    ("redirect_bytes", "Bytes the port handed to bpf_redirect_map()."),
    ("miss_packets", "Frames that found no entry for the port."),
    ("miss_bytes", "Bytes of the frames that found no entry for the port."),
    ("pass_packets", "Frames passed to the host stack (on-miss pass)."),
    ("pass_bytes", "Bytes passed to the host stack (on-miss pass)."),
    ("drop_packets", "Frames dropped (on-miss drop)."),
    ("drop_bytes", "Bytes dropped (on-miss drop)."),
    ("too_big_packets", "Multi-buffer frames its broadcast group could not flood (dropped)."),
    ("too_big_bytes", "Bytes of the multi-buffer frames its group could not flood."),
    ("tx_packets", "Frames xdpfwd sent out of the port."),
    ("tx_bytes", "Bytes xdpfwd sent out of the port."),
)
_PROMETHEUS_PAIR = (
    ("tx_packets", "Frames forwarded from ingress to egress."),
    ("tx_bytes", "Bytes forwarded from ingress to egress."),
    ("egress_drop_packets", "Frames the egress program of the pair dropped."),
    (
        "egress_invalid_packets",
        "Frames a user egress program gave a verdict other than pass or drop (dropped).",
    ),
)
# From the tracepoint programs: written only while loss accounting is attached.
# (metric name, TxEvents field, help)
_PROMETHEUS_PAIR_EVENTS = (
    (
        "redirect_error_packets",
        "redirect_errors",
        "Frames whose redirect from ingress to egress failed.",
    ),
    (
        "xmit_drop_packets",
        "xmit_drops",
        "Frames the egress driver or egress program did not send.",
    ),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(snapshot: Snapshot) -> str:
    """The counters in the Prometheus text exposition format, and when they were read.

    A port is labelled both port (xdpfwd's word) and device (node_exporter's), so
    its series join node_network_* without relabelling."""
    metric = "xdpfwd_scrape_timestamp_seconds"
    lines = [
        f"# HELP {metric} When xdpfwd read these counters (Unix time): how fresh they are.",
        f"# TYPE {metric} gauge",
        f"{metric} {snapshot.wall:.3f}",
    ]
    for name, help_text in _PROMETHEUS_PORT:
        metric = f"xdpfwd_port_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for p in snapshot.ports.values():
            if name.startswith("tx_"):
                value = getattr(p, name)
            elif p.counters is None:
                continue  # runs no xdpfwd program: nothing known of what it received
            else:
                value = getattr(p.counters, name)
            ifname = _label(p.port.ifname or "")
            labels = f'port="{ifname}",device="{ifname}",ifindex="{p.port.ifindex}"'
            lines.append(f"{metric}{{{labels}}} {value}")
    for name, help_text in _PROMETHEUS_PAIR:
        metric = f"xdpfwd_pair_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for p in snapshot.pairs.values():
            labels = (
                f'ingress="{_label(p.ingress.ifname or "")}",'
                f'egress="{_label(p.egress.ifname or "")}",'
                f'group="{_label(p.group or "")}"'
            )
            lines.append(f"{metric}{{{labels}}} {getattr(p, name)}")
    balanced = [p for p in snapshot.pairs.values() if p.buckets is not None]
    metric = "xdpfwd_balance_buckets"
    if balanced:
        lines += [
            f"# HELP {metric} Buckets of a balanced entry that send to egress (of 256).",
            f"# TYPE {metric} gauge",
        ]
    for p in balanced:
        ingress, egress = _label(p.ingress.ifname or ""), _label(p.egress.ifname or "")
        lines.append(f'{metric}{{ingress="{ingress}",egress="{egress}"}} {p.buckets}')
    for name, attr, help_text in _PROMETHEUS_PAIR_EVENTS if snapshot.tracing else ():
        metric = f"xdpfwd_pair_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for p in snapshot.pairs.values():
            labels = (
                f'ingress="{_label(p.ingress.ifname or "")}",'
                f'egress="{_label(p.egress.ifname or "")}",'
                f'group="{_label(p.group or "")}"'
            )
            lines.append(f"{metric}{{{labels}}} {getattr(p.events, attr) if p.events else 0}")
    metric = "xdpfwd_port_not_forwarded_packets_total"
    lines += [
        f"# HELP {metric} Frames that entered the port and were not forwarded, by reason.",
        f"# TYPE {metric} counter",
    ]
    for k, p in snapshot.ports.items():
        if p.counters is None:
            continue
        for reason, value in snapshot.port_losses(k).items():
            if value is not None:
                ifname = _label(p.port.ifname or "")
                labels = f'port="{ifname}",device="{ifname}",ifindex="{k}",reason="{reason}"'
                lines.append(f"{metric}{{{labels}}} {value}")
    lines += _prometheus_multicast(snapshot)
    metric = "xdpfwd_not_forwarded_packets_total"
    lines += [f"# HELP {metric} Frames not forwarded, by reason.", f"# TYPE {metric} counter"]
    for reason, value in snapshot.losses().items():
        if value is not None:
            lines.append(f'{metric}{{reason="{reason}"}} {value}')
    return "\n".join(lines) + "\n"


_PROMETHEUS_MCAST = (
    ("in_packets", "Frames copied to a multicast group's receivers."),
    ("in_bytes", "Bytes of the frames copied to a multicast group's receivers."),
    ("copies_lost", "Copies of a multicast group's frames that reached no receiver."),
)


def _prometheus_multicast(snapshot: Snapshot) -> list[str]:
    lines = []
    groups = snapshot.multicast
    for name, help_text in _PROMETHEUS_MCAST:
        metric = f"xdpfwd_multicast_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for key, g in groups.items():
            value = getattr(g, name)
            if value is not None:
                lines.append(f'{metric}{{group="{_label(key)}"}} {value}')
    for name, field, help_text in (
        ("copies", "copies", "Copies of a multicast group's frames sent to a receiver."),
        ("copy_bytes", "copy_bytes", "Bytes of the copies sent to a receiver."),
    ):
        metric = f"xdpfwd_multicast_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for key, g in groups.items():
            for r in g.receivers:
                value = getattr(r, field)
                if value is not None:
                    labels = f'group="{_label(key)}",egress="{_label(r.port.ifname or "")}"'
                    lines.append(f"{metric}{{{labels}}} {value}")
    return lines


def stats_snapshot(snapshot: Snapshot | None, pin_dir: str, fmt: str, sort: str) -> str | None:
    """One-shot stats: prints a table, or returns JSON/Prometheus text for the caller."""
    if fmt == "json":
        snapshot = snapshot or Snapshot(time.monotonic(), time.time(), {}, {})
        return json.dumps(json_document(stats_dict(snapshot), snapshot.wall), indent=2) + "\n"
    if fmt == "prometheus":
        return prometheus(snapshot) if snapshot else ""
    if snapshot is None:
        _line(_out(), f"no xdpfwd state in {pin_dir}")
    else:
        _out().print(stats_tables(snapshot, losses=snapshot.losses(), sort=sort))
        _line(_out(), COUNTERS_SINCE)
    return None


COUNTERS_SINCE = "totals since each port (pair: entry, member) joined; --clear zeroes them"


def watch_json_line(frame: WatchFrame) -> None:
    data = json_document(stats_dict(frame.snapshot, frame.rates, frame.losses), frame.snapshot.wall)
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def watch_view(
    frame: WatchFrame, pin_dir: str, interval: float, sort: str, expand: bool = False
) -> Group:
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.snapshot.wall))
    title = Text(
        f"xdpfwd stats  {stamp}  every {interval:g} s  {pin_dir}  (Ctrl-C ends)",
        no_wrap=True,
        overflow="ellipsis",
    )
    tables = stats_tables(frame.snapshot, frame.rates, frame.losses, sort, expand)
    return Group(title, tables)


def watch_plain(frame: WatchFrame, pin_dir: str, interval: float, sort: str) -> None:
    """The live view's content, printed as plain lines (stdout is not a terminal)."""
    console = _out(no_color=True)
    console.print(watch_view(frame, pin_dir, interval, sort))
    sys.stdout.flush()


def watch(frames, pin_dir: str, interval: float, fmt: str, sort: str, keep) -> None:
    """Show watch frames as they come: JSON lines, a live table on a terminal, or the
    same table as plain lines otherwise. keep(snapshot) selects the rows shown."""
    for_frame = lambda f: replace(f, snapshot=keep(f.snapshot))  # noqa: E731
    if fmt == "json":
        for frame in frames:
            watch_json_line(for_frame(frame))
    elif sys.stdout.isatty():
        with Live(console=_out(), auto_refresh=False, transient=False) as live:
            for frame in frames:
                view = watch_view(for_frame(frame), pin_dir, interval, sort, expand=True)
                live.update(view, refresh=True)
    else:
        for frame in frames:
            watch_plain(for_frame(frame), pin_dir, interval, sort)


_STATUS_STYLES = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim", "fixed": "cyan"}


def doctor_report(checks, as_json: bool) -> None:
    if as_json:
        failed = sum(c.status == "fail" for c in checks)
        print_json({"checks": [c.as_dict() for c in checks], "failed": failed})
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("CHECK", "STATUS", "DETAIL"):
        table.add_column(name)
    for c in checks:
        detail = Text(c.detail)
        if c.fix and c.status != "pass":
            detail.append(f"\n  fix: {c.fix}", style="cyan")
        table.add_row(c.name, Text(c.status, style=_STATUS_STYLES[c.status]), detail)
    _out().print(table)


def follow(lines) -> None:
    """follow's lines as they come: one per action, time-stamped, flushed at once
    (a journal or a pipe sees each when it happens)."""
    for line in lines:
        stamp = time.strftime("%H:%M:%S")
        prefix = {"warning": "warning: ", "error": "error: "}.get(line.level, "")
        sys.stdout.write(f"{stamp} {prefix}{line.text}\n")
        sys.stdout.flush()


def apply_result(result) -> None:
    out = _out()
    if not result.steps:
        _line(out, "nothing to change")
    else:
        _line(out, "would do:" if result.dry_run else "done:")
        for step in result.steps:
            _line(out, f"  {step}")
    for message in result.warnings:
        warning(message)
