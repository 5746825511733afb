"""Everything xdpfwd shows: rich tables for people, JSON for programs, errors on stderr."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .bench import BASELINE, BenchReport
from .demo import DemoReport
from .lab import Lab
from .model import (
    AddResult,
    BroadcastDelResult,
    BroadcastResult,
    DelResult,
    DownResult,
    EgressProg,
    Iface,
    Listing,
)


def _out() -> Console:
    # Created per call so that whatever sys.stdout is now (a CliRunner buffer) is used.
    return Console(highlight=False)


def _line(console: Console, text: str) -> None:
    """One unwrapped line, printed verbatim (no markup)."""
    console.print(Text(text), soft_wrap=True)


def error(message: str) -> None:
    _line(Console(stderr=True, highlight=False), f"error: {message}")


def note(message: str) -> None:
    _line(Console(stderr=True, highlight=False), f"note: {message}")


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


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


def add_result(result: AddResult) -> None:
    out = _out()
    for src, dst in result.entries:
        _line(out, f"{src.ifname} -> {dst.ifname}")
    for att in result.attachments:
        how = "attached" if att.changed else "already attached"
        _line(out, f"  {att.port.ifname}: {how} ({att.mode} mode)")
    compiled = "compiled now" if result.compiled else "reused pinned program"
    _line(out, f"  table {result.table} of {result.value_format} entries, program id "
               f"{result.prog_id} ({compiled})")  # fmt: skip
    if result.egress is not None:
        _line(out, f"  egress program: {_egress_prog(result.egress)}")


def broadcast_result(result: BroadcastResult) -> None:
    out = _out()
    verb = "created" if result.created else "updated"
    excluded = "excluded" if result.exclude_ingress else "included"
    _line(out, f"group {result.group} {verb}: ingress port {excluded}, {result.table} table")
    for att in result.attachments:
        how = "attached" if att.changed else "already attached"
        _line(out, f"  {att.port.ifname}: member, {how} ({att.mode} mode)")
    for port in result.converted:
        _line(out, f"  {port.ifname}: its forwarding entry was removed")


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
    _line(out, f"removed {result.removed.label} -> {result.egress.label}")
    for port in result.detached:
        _line(out, f"  detached from {port.label}")


def down_result(result: DownResult, pin_dir: str) -> None:
    out = _out()
    if not result.removed_pins:
        _line(out, f"nothing to do: no xdpfwd state in {pin_dir}")
        return
    for port in result.detached:
        _line(out, f"detached from {port.label}")
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
    for row in listing.rows:
        state = Text(row.state, style="green" if row.state == "ok" else "yellow")
        table.add_row(
            _port(row.ingress),
            f"group {row.group}" if row.group else _port(row.egress),
            row.mode or "-",
            row.on_miss,
            state,
            _egress_prog(row.egress_prog),
            str(row.counters.redirect_packets),
            str(row.counters.miss_packets),
        )
    return table


def groups_table(listing: Listing) -> Table:
    table = Table(title="broadcast groups", title_justify="left", box=None,
                  header_style="bold", pad_edge=False)  # fmt: skip
    for name in ("GROUP", "INGRESS PORT", "MEMBERS"):
        table.add_column(name)
    for group in listing.groups:
        table.add_row(
            group.name,
            "excluded" if group.exclude_ingress else "included",
            ", ".join(_port(m) for m in group.members),
        )
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
    if result.groups:
        out.print(groups_table(result))


def lab_status(lab: Lab | None, name: str, as_json: bool) -> None:
    if as_json:
        print_json(lab.as_dict() if lab else None)
        return
    if lab is None:
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
    _line(out, f"{s['frame_size']} B frames, {s['flows']} flow(s), {s['cpus']} generator CPU(s), "
               f"{s['repeat']} x {s['duration_s']:g} s per row")  # fmt: skip
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
        if row.reference not in (None, BASELINE):
            ratio += " fwd"
        table.add_row(row.name, median, spread, ratio)
    out.print(table)
    _line(out, "RATIO: to the baseline, or with 'fwd' to xdpfwd forwarding to one port")
