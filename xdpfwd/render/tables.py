"""Tables for people (rich): listings, stats and their live view, doctor's checks,
the demo's and bench's reports; with --json, the same results as documents."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from xdpfwd.model import Listing, McastGroup, McastListing, PortRow
from xdpfwd.model.counters import PairCounters, PortCounters, Rate, Rates, Snapshot, WatchFrame
from xdpfwd.model.reports import BASELINE, BenchReport, BenchRow, DemoReport, Lab
from xdpfwd.render.documents import (
    print_json,
    watch_json_line,
)
from xdpfwd.render.lines import add_result, egress_text, line, port_text, printable, warning

# Wide enough that no table is cut to fit when stdout is a pipe or a file; rich would
# otherwise assume 80 columns and elide whole columns as "…".
UNCUT_WIDTH = 1000


def _out(**options) -> Console:
    # Created per call so that whatever sys.stdout is now (a CliRunner buffer) is used.
    columns = os.environ.get("COLUMNS")
    if columns is not None and not (columns.isdigit() and int(columns) > 0):
        # rich would take COLUMNS=0 as a width of 0 and draw nothing.
        del os.environ["COLUMNS"]
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=UNCUT_WIDTH if piped else None, **options)


def spinner(text: str):
    """A spinner with text on stderr while a slow step runs (progress.install)."""
    return Console(stderr=True).status(text)


def _row(table: Table, *cells: str | Text) -> None:
    """A row whose text is shown as it is: rich would read '[...]' in an interface
    name as markup, and a control character would reach the terminal."""
    table.add_row(*(Text(printable(c)) if isinstance(c, str) else c for c in cells))


def listing_table(listing: Listing) -> Table:
    table = Table(
        title=Text(
            printable(
                f"{listing.pin_dir}  {listing.table} of {listing.value_format} entries  "
                f"program id {listing.prog_id}"
            )
        ),
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
        _row(
            table,
            port_text(row.ingress),
            egress,
            row.mode or "-",
            row.on_miss,
            state,
            egress_text(row.egress_prog),
            str(row.forwarded_or_redirected),
            str(row.counters.miss_packets),
            _lost(row.lost, row.flood_copies_lost),
        )
    return table


def _egress_of(row: PortRow) -> str:
    if row.egress is None and row.multicast:
        return "multicast " + ", ".join(row.multicast)
    return port_text(row.egress)


def _forwarded(snapshot: Snapshot, port: PortCounters) -> int:
    """As PortRow.forwarded_or_redirected, with the frames multicast groups copied:
    what went on, by an entry or a group."""
    forwarded = snapshot.forwarded(port.port.ifindex)
    if forwarded is None:
        return port.counters.redirect_packets
    return forwarded + port.mcast_packets


def _lost(lost: dict[str, int | None], flood_copies_lost: int | None = 0) -> str:
    """Frames lost by every reason but a miss, and (a member's: its losses after the
    redirect count copies) the copies of its floods no member got; "?" marks what is
    not known."""
    known = [n for reason, n in lost.items() if reason != "miss" and n is not None]
    unknown = any(n is None for n in lost.values())
    return f"{sum(known) + (flood_copies_lost or 0)}{'+?' if unknown else ''}"


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
        # The ingress setting lives on the members: a group without any has none.
        if not group.members:
            ingress = "-"
        else:
            ingress = "excluded" if group.exclude_ingress else "included"
        _row(table, group.name, ingress, ", ".join(port_text(m) for m in group.members))
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
            _row(
                table,
                port_text(row.ingress) if i == 0 else "",
                info.hash if i == 0 else "",
                f"{p.name} ({p.port.ifindex})" if p.port.ifindex else p.name,
                Text(p.state, style="green" if p.state == "up" else "yellow"),
                str(p.weight) if p.weight else "-",
                f"{p.buckets} ({p.buckets * 100 / 256:.0f}%)",
                count(c.tx_packets) if c else "-",
                nbytes(c.tx_bytes) if c else "-",
            )
        if info.unassigned:
            _row(table, "", "", "(no port)", "", "", str(info.unassigned), "", "")
    return table


def listing(result: Listing, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    out = _out()
    if not result.rows:
        line(f"no forwarding entries in {result.pin_dir}")
        _waiting_lines(result)
        return
    out.print(listing_table(result))
    if any(row.balance for row in result.rows):
        out.print(balanced_table(result))
    if result.groups:
        out.print(groups_table(result))
    if result.multicast:
        out.print(multicast_table(result.multicast))
    for problem in dict.fromkeys(p for row in result.rows for p in row.problems):
        warning(problem)  # each names its ports, once though several rows send there
    _waiting_lines(result)


def _waiting_lines(result: Listing) -> None:
    for w in result.waiting:
        what = f"{w.ingress} -> {', '.join(w.egress)}" if w.ingress else f"group {w.group}"
        if w.group:
            what += f" member{'s' if len(w.egress) > 1 else ''} {', '.join(w.egress)}"
        _not_running(what, w.gone)


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
        _row(
            table,
            g.group,
            ", ".join(port_text(p) for p in g.sources),
            ", ".join(port_text(r.port) for r in g.receivers),
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
        line(f"the pins in {result.pin_dir} predate multicast groups")
    elif not result.groups and not result.waiting:
        line(f"no multicast groups in {result.pin_dir}")
    elif result.groups:
        out.print(multicast_table(result.groups))
    dropping = {g.group for g in result.groups}
    for g in result.waiting:
        what = f"{g.group} (from {', '.join(g.sources)} to {', '.join(g.receivers)})"
        if g.group in dropping:
            line(f"{what}: runs without receivers, dropping its frames ({_gone(g.gone)})")
        else:
            _not_running(what, g.gone)


def _not_running(what: str, gone: list[str]) -> None:
    line(f"{what}: recorded, does not run ({_gone(gone)})")


def _gone(gone: list[str]) -> str:
    devices = "the devices of" if len(gone) > 1 else "the device of"
    verb = "are" if len(gone) > 1 else "is"
    return f"{devices} {', '.join(gone)} {verb} gone" if gone else "see prune"


def lab_status(lab: Lab, name: str, as_json: bool) -> None:
    if as_json:
        print_json(lab.as_dict())
        return
    if not lab.ports:
        line(f"no lab named {name}")
        return
    table = Table(title=f"lab {lab.prefix}", title_justify="left", box=None, header_style="bold")
    for column in ("PORT", "HOST NETNS", "HOST DEVICE", "HOST ADDRESS"):
        table.add_column(column)
    for p in lab.ports:
        _row(table, p.port, p.netns, p.host_dev, p.address)
    _out().print(table)


def demo_report(report: DemoReport) -> None:
    out = _out()
    line("lab: veth ports, each with a host namespace behind it")
    for p in report.lab.ports:
        line(f"  {p.port} <-> host {p.address} (netns {p.netns})")
    add_result(report.added)
    pings = Table(
        title="ping across the XDP forwarder", title_justify="left", box=None, header_style="bold"
    )
    for column in ("FROM", "TO", "SENT", "RECEIVED", "RESULT"):
        pings.add_column(column)
    for p in report.pings:
        ok = p.received == p.sent > 0
        _row(
            pings,
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
    line(f"demo {'passed' if report.ok else 'FAILED'}: {verdict}; lab and pins removed")


def bench_report(report: BenchReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    out = _out()
    m, s = report.machine, report.settings
    line(f"{m['cpu']}, {m['cpus_online']} CPUs, Linux {m['kernel']}")
    if m.get("xdp_tracepoint_links"):
        line(
            f"warning: {m['xdp_tracepoint_links']} program(s) not this bench's were on the "
            "XDP tracepoints (bpftool link show): every row paid for them",
        )
    line(
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
        _row(table, row.name, median, spread, ratio)
    out.print(table)
    line("RATIO: to the baseline, or to the row named after it")
    if s.get("profile"):
        _bench_profile(out, report.rows)


def _bench_profile(out, rows: list[BenchRow]) -> None:
    """The programs each row ran, in nanoseconds per frame delivered."""
    line("")
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ROW")
    for column in ("CPU NS/FRAME", "PROGRAM", "RUNS/FRAME", "NS/RUN", "NS/FRAME"):
        table.add_column(column, justify="left" if column == "PROGRAM" else "right")
    for row in rows:
        if row.profile is None:
            continue
        first = (row.key, f"{row.profile.cpu_ns_per_frame:.1f}")
        for program in row.profile.programs:
            _row(
                table,
                *first,
                program.name,
                f"{program.runs_per_frame:.3f}",
                f"{program.ns_per_run:.1f}",
                f"{program.ns_per_frame:.1f}",
            )
            first = ("", "")
    out.print(table)
    line(
        "CPU NS/FRAME: the generator CPUs' time per frame delivered (the samples' length "
        "times their number); what the programs leave of it is the kernel's (redirects, "
        "drivers, each program's dispatch) and whatever else ran on those CPUs. Only "
        "this run's programs are shown. Run statistics add to every program's time."
    )


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


def _losses_line(
    losses: dict[str, int | None], since: str, copies_lost: int = 0, flood_copies_lost: int = 0
) -> Text:
    """One line, short enough for 80 columns: only the reasons that lost frames, and
    the copies of broadcasts and multicast groups' frames that reached no member."""
    parts = [f"{_REASON_LABELS[reason]} {count(n)}" for reason, n in losses.items() if n]
    line = f"not forwarded ({since}): {', '.join(parts) or 'none'}"
    if flood_copies_lost:
        line += f"; broadcast copies lost {count(flood_copies_lost)}"
    if copies_lost:
        line += f"; multicast copies lost {count(copies_lost)}"
    if losses.get("xmit_drop") is None:
        line += "; loss accounting is off (see doctor)"
    return Text(line, no_wrap=True, overflow="ellipsis")


class _Grid:
    """Columns laid out as a borderless rich Table would be (a space each side of a
    cell but not at the edges, bold headers, the first `left` columns left-justified,
    the rest right-justified), rendered as lines of text: `stats --watch` draws these
    at every refresh, and rich's Table layout cost about 8 ms per refresh for 10
    ports and 10 pairs. expand: the columns share the whole width between them."""

    def __init__(self, headers: tuple[str, ...], left: int = 1, expand: bool = False):
        self.headers, self.left, self.expand = headers, left, expand
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(printable(cell) for cell in cells))

    def __rich_console__(self, console: Console, options):
        lines = [self.headers, *self.rows]
        widths = [max(cell_len(row[i]) for row in lines) for i in range(len(self.headers))]
        spare = options.max_width - sum(widths) - 2 * (len(widths) - 1)
        if self.expand and spare > 0:
            total = sum(widths)
            shares = [spare * w // total for w in widths]
            shares[-1] += spare - sum(shares)
            widths = [w + share for w, share in zip(widths, shares, strict=True)]
        for number, row in enumerate(lines):
            cells = []
            for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
                pad = " " * (width - cell_len(cell))
                cells.append(cell + pad if i < self.left else pad + cell)
            style = "bold" if number == 0 else ""
            yield Text("  ".join(cells), style=style, no_wrap=True, overflow="ellipsis")


def stats_tables(
    snapshot: Snapshot,
    rates: Rates | None = None,
    losses: dict | None = None,
    sort: str = "name",
    expand: bool = False,
    flood_copies_lost: int | None = None,
) -> Group:
    """One table of ports and one of pairs: totals, or rates (with the running totals
    beside them) when given; losses and flood_copies_lost, over the same span, for
    the last line. expand: the tables take the terminal's whole width."""
    if rates is None:
        columns = ("PORT", "RX", "RX BYTES", "FWD", "MISS", "LOST", "TX", "TX BYTES")
        pair_columns = ("PAIR", "VIA", "TX", "TX BYTES", "EGRESS DROP", "REDIR ERR", "TX DROP")
    else:
        columns = ("PORT", "RX/S", "RX BIT/S", "RX", "TX/S", "TX BIT/S", "TX", "MISS/S")
        pair_columns = ("PAIR", "VIA", "TX/S", "TX BIT/S", "TX", "REDIR ERR")
    ports = _Grid(columns, left=1, expand=expand)
    pairs = _Grid(pair_columns, left=2, expand=expand)
    for p in _sorted_ports(snapshot, rates, sort):
        c = p.counters
        if rates is None:
            rx = (
                (
                    count(c.rx_packets),
                    nbytes(c.rx_bytes),
                    count(_forwarded(snapshot, p)),
                    count(c.miss_packets),
                    _lost(
                        snapshot.port_losses(p.port.ifindex),
                        snapshot.copies_lost(p.port.ifindex),
                    ),
                )
                if c
                else ("-",) * 5
            )
            ports.add_row(port_text(p.port), *rx, count(p.tx_packets), nbytes(p.tx_bytes))
            continue
        rx, tx = rates.port_rx.get(p.port.ifindex), rates.port_tx.get(p.port.ifindex)  # None: -
        miss = rates.port_miss.get(p.port.ifindex)
        ports.add_row(
            port_text(p.port),
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
        # (A watch shows the groups' copies lost in their table, as running totals.)
        copies = [g.copies_lost for g in snapshot.multicast.values()] if rates is None else []
        parts.append(
            _losses_line(losses, since, sum(n for n in copies if n), flood_copies_lost or 0)
        )
    return Group(*parts)


def _multicast_stats_table(snapshot: Snapshot, rates: Rates | None, expand: bool) -> _Grid:
    """Per group: frames in, copies out and lost (totals), or their rates with the
    running totals beside them."""
    if rates is None:
        columns = ("GROUP", "IN", "IN BYTES", "COPIES", "LOST")
    else:
        columns = ("GROUP", "IN/S", "IN BIT/S", "IN", "COPIES/S", "COPIES BIT/S", "COPIES")
    table = _Grid(columns, left=1, expand=expand)
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


def stats_table(snapshot: Snapshot | None, pin_dir: str, sort: str) -> None:
    """One-shot stats as tables (documents.stats_text() gives the other formats)."""
    if snapshot is None:
        line(f"no xdpfwd state in {pin_dir}")
    else:
        losses, copies = snapshot.losses(), snapshot.flood_copies_lost()
        _out().print(stats_tables(snapshot, losses=losses, sort=sort, flood_copies_lost=copies))
        line(COUNTERS_SINCE)


COUNTERS_SINCE = "totals since each port (pair: entry, member) joined; --clear zeroes them"


def watch_view(
    frame: WatchFrame, pin_dir: str, interval: float, sort: str, expand: bool = False
) -> Group:
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.snapshot.wall))
    title = Text(
        printable(f"xdpfwd stats  {stamp}  every {interval:g} s  {pin_dir}  (Ctrl-C ends)"),
        no_wrap=True,
        overflow="ellipsis",
    )
    tables = stats_tables(
        frame.snapshot, frame.rates, frame.losses, sort, expand, frame.flood_copies_lost
    )
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
        _row(table, c.name, Text(c.status, style=_STATUS_STYLES[c.status]), detail)
    _out().print(table)
