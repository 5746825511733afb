"""What xdpfwd says in lines: errors, warnings and notes on stderr, and what each
changing command did, on stdout. Plain text, no rich: every command prints these,
and rich's import costs about 40 ms."""

from __future__ import annotations

import sys
import time

from xdpfwd.model import (
    AddResult,
    BalanceInfo,
    BroadcastDelResult,
    BroadcastResult,
    DelResult,
    DownResult,
    EgressProg,
    Iface,
    McastDelResult,
    McastResult,
    PruneResult,
    emptied_group,
)


def line(text: str, err: bool = False) -> None:
    """One line on stdout (stderr with err), printed verbatim; characters that would
    break it (newlines, other controls, bytes that are not UTF-8) are shown escaped."""
    print(printable(text), file=sys.stderr if err else sys.stdout)


def printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def error(message: str) -> None:
    line(f"error: {message}", err=True)


def note(message: str) -> None:
    line(f"note: {message}", err=True)


def warning(message: str) -> None:
    line(f"warning: {message}", err=True)


def egress_text(prog: EgressProg | None) -> str:
    if prog is None:
        return "-"
    if prog.kind == "none":
        return "none"
    return (
        f"{prog.kind} {prog.name} ({prog.prog_id})"
        if prog.kind == "user"
        else (f"{prog.kind} ({prog.prog_id})")
    )


def port_text(iface: Iface | None) -> str:
    if iface is None:
        return "-"
    return f"{iface.ifname} ({iface.ifindex})" if iface.ifname else f"gone ({iface.ifindex})"


def _shares(info: BalanceInfo) -> str:
    return ", ".join(f"{p.name} {p.buckets}" for p in info.ports)


def add_result(result: AddResult) -> None:
    if result.balance is not None:
        src = result.entries[0][0]
        ports = ", ".join(dst.ifname for _, dst in result.entries)
        line(f"{src.ifname} -> {ports} (balanced, {result.balance.hash} hash)")
        line(f"  buckets: {_shares(result.balance)} of 256")
    else:
        for src, dst in result.entries:
            line(f"{src.ifname} -> {dst.ifname}")
    _attachments(result.attachments, "")
    compiled = "compiled now" if result.compiled else "reused pinned program"
    line(
        f"  table {result.table} of {result.value_format} entries, program id "
        f"{result.prog_id} ({compiled})",
    )
    if result.egress is not None:
        line(f"  egress program: {egress_text(result.egress)}")
    _warnings(result.attachments, result.warnings)


def _attachments(attachments, role: str) -> None:
    """A line per port attached (or found attached), with its role if it has one."""
    for att in attachments:
        how = "attached" if att.changed else "already attached"
        line(f"  {att.port.ifname}: {role}{', ' if role else ''}{how} ({att.mode} mode)")


def _warnings(attachments, warnings) -> None:
    _fallback_warnings(attachments)
    for message in warnings:
        warning(message)


def _fallback_warnings(attachments) -> None:
    for att in attachments:
        if att.warning:
            warning(att.warning)


def broadcast_result(result: BroadcastResult) -> None:
    verb = "created" if result.created else "updated"
    excluded = "excluded" if result.exclude_ingress else "included"
    line(f"group {result.group} {verb}: ingress port {excluded}, {result.table} table")
    _attachments(result.attachments, "member")
    for port in result.converted:
        line(f"  {port.ifname}: its forwarding entry was removed")
    _warnings(result.attachments, result.warnings)


def broadcast_del_result(result: BroadcastDelResult) -> None:
    group = f"group {result.groups[0]}" if len(result.groups) == 1 else "its group"
    for port in result.removed:
        line(f"removed {port.label} from {group}")
    for port in result.forgotten:
        line(f"forgot {port.label}'s membership: it did not run (prune would have restored it)")
    for name in result.emptied:
        line(f"  group {name} had no member left and was removed")
    for port in result.detached:
        line(f"  detached from {port.label}")


def del_result(result: DelResult) -> None:
    verb = "forgot" if result.recorded_only else "removed"
    if result.balanced:
        ports = ", ".join(port.label for port in result.balanced)
        line(f"{verb} {result.removed.label} -> {ports} (balanced)")
    else:
        line(f"{verb} {result.removed.label} -> {result.egress.label}")
    if result.recorded_only:
        line("  it did not run (prune would have restored it)")
    for port in result.detached:
        line(f"  detached from {port.label}")


def prune_result(result: PruneResult) -> None:
    done = result.gone or result.emptied or result.detached or result.steps
    if not (done or result.skipped):  # what it left out is no "nothing"
        line("nothing to prune")
    for step in result.steps:
        line(step)
    for message in (*result.skipped, *result.warnings):
        warning(message)
    for ifindex in result.gone:
        line(f"forgot ifindex {ifindex}: its device is gone")
    for name in result.emptied:
        line(f"removed {emptied_group(name)}: no member left")
    for port in result.detached:
        line(f"detached from {port.label}")


def down_result(result: DownResult, pin_dir: str) -> None:
    if not result.removed_pins:
        line(f"nothing to do: no xdpfwd state in {pin_dir}")
        return
    for port in result.detached:
        line(f"detached from {port.label}")
    for port in result.elsewhere:
        line(f"detached from {port} (moved there with the program)")
    for prog_id in result.still_loaded:
        warning(
            f"program id {prog_id} still runs on a device xdpfwd cannot see (in a network "
            "namespace without a name?): `ip link set dev DEV xdp off` there detaches it"
        )
    if result.left:
        line(f"removed xdpfwd's pins from {pin_dir}")
        shown = ", ".join(result.left)
        warning(f"kept {pin_dir}: it also holds what xdpfwd did not make ({shown})")
    else:
        line(f"removed {pin_dir}")


def multicast_result(result: McastResult) -> None:
    verb = "created" if result.created else "updated"
    excluded = "excluded" if result.exclude_ingress else "included"
    line(f"multicast group {result.group} {verb}: ingress port {excluded}")
    line(f"  from {', '.join(p.label for p in result.sources)}")
    line(f"  to {', '.join(p.label for p in result.receivers)}")
    _attachments(result.attachments, "source")
    _warnings(result.attachments, result.warnings)


def multicast_del_result(result: McastDelResult) -> None:
    if result.recorded_only and not result.kept:
        line(f"forgot multicast group {result.group}: it did not run (only recorded)")
        return
    for port in result.receivers:
        line(f"{port.label} receives {result.group} no more")
    for port in result.sources:
        line(f"{port.label} is a source of {result.group} no more")
    if result.kept:
        gone = ", ".join(result.waiting)
        line(
            f"  multicast group {result.group} runs no more; the recorded configuration keeps "
            + (f"it for {gone}, whose device is gone" if gone else "it")
            + " (prune restores it once it can)"
        )
    elif result.removed and not result.recorded_only:
        line(f"  multicast group {result.group} was removed")
    for port in result.detached:
        line(f"  detached from {port.label}")


def follow(actions) -> None:
    """follow's lines as they come: one per action, time-stamped, flushed at once
    (a journal or a pipe sees each when it happens)."""
    for action in actions:
        stamp = time.strftime("%H:%M:%S")
        prefix = {"warning": "warning: ", "error": "error: "}.get(action.level, "")
        sys.stdout.write(f"{stamp} {prefix}{printable(action.text)}\n")
        sys.stdout.flush()


def apply_result(result) -> None:
    if not result.steps:
        line("nothing to change")
    else:
        line("would do:" if result.dry_run else "done:")
        for step in result.steps:
            line(f"  {step}")
    for message in result.warnings:
        warning(message)
