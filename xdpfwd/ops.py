"""The operations behind the commands. No click and no printing: they return results
and raise XdpfwdError subclasses. Every change is made under the pin directory's lock
and undone if a later step fails, so a failed call leaves the previous state."""

from __future__ import annotations

import os
from dataclasses import replace

from . import dataplane, doctor, entries, lab, netdev, prereqs
from .apply import apply, save  # noqa: F401  (CLI entry points)
from .bpf import maps
from .bpf import syscall as sc
from .counters import clear as stats_clear  # noqa: F401
from .counters import read as stats_read  # noqa: F401
from .counters import watch as stats_watch  # noqa: F401
from .dataplane import Dataplane
from .errors import InputError, XdpfwdError
from .groups import broadcast, broadcast_del, group_infos  # noqa: F401
from .model import (
    DEFAULT_EGRESS,
    STATE_DEVICE_GONE,
    STATE_NO_ENTRY,
    STATE_NOT_ATTACHED,
    STATE_OK,
    AddResult,
    Attachment,
    DelResult,
    DownResult,
    EgressSpec,
    Iface,
    Listing,
    PortRow,
    PruneResult,
)
from .pins import PinDir
from .ports import (
    AttachPlan,
    attach,
    fresh_link,
    iface,
    known,
    release_idle,
    teardown,
)
from .transaction import Change, Undo, change, tidy

_VERDICT_NAMES = {v: k for k, v in maps.ON_MISS_VERDICTS.items()}


def resolve(name: str, allow_gone: bool = False) -> Iface:
    """The interface called name (or with that ifindex).

    With allow_gone, a number that no device has is still accepted as an ifindex,
    so stale entries of deleted devices can be named. Raises InputError.
    """
    try:
        link = netdev.resolve(name)
    except InputError:
        if allow_gone and name.isdigit() and int(name) > 0:
            return Iface(int(name), None)
        raise
    return iface(link)


def _check_forwarding_pair(ingress: netdev.Link, egress: netdev.Link) -> None:
    if ingress.ifindex == egress.ifindex:
        raise InputError(f"ingress and egress are the same interface ({ingress.ifname})")
    for link in (ingress, egress):
        if link.loopback:
            raise InputError(f"{link.ifname} is a loopback device; XDP cannot forward there")


def _check_not_members(dp: Dataplane, links: list[netdev.Link]) -> None:
    for link in links:
        if dp.groups.group_id(link.ifindex) is not None:
            raise XdpfwdError(
                f"{link.ifname} is a broadcast group member; `xdpfwd broadcast del "
                f"{link.ifname}` first"
            )


def add(
    pins: PinDir,
    ingress: Iface,
    egress: Iface,
    *,
    bidirectional: bool = False,
    table: str | None = None,
    value: str | None = None,
    mode: str = "auto",
    on_miss: str | None = None,
    force: bool = False,
    egress_spec: EgressSpec = DEFAULT_EGRESS,
) -> AddResult:
    """Forward every frame entering ingress to egress (and back with bidirectional).

    egress_spec chooses the entry's egress program. Raises InputError,
    XdpfwdError (conflicting table, value format or mode, a broadcast member),
    AttachError, BpfError (also for a user program that does not compile) or
    PrereqError; on any error nothing is left changed.
    """
    in_link, out_link = fresh_link(ingress), fresh_link(egress)
    _check_forwarding_pair(in_link, out_link)
    entries.check_spec(egress_spec, bidirectional)
    user = entries.read_user_program(egress_spec) if egress_spec.program == "user" else None
    ports = [in_link, out_link] if bidirectional else [in_link]
    pairs = [(in_link, out_link), (out_link, in_link)] if bidirectional else [(in_link, out_link)]
    attach = dict.fromkeys(ports, mode)
    with change(pins, table, value, attach, force, entries.layout_check(egress_spec)) as c:
        _check_not_members(c.dp, ports)
        # Compiled before anything changes: a compile error leaves all as it was.
        prog_fd = entries.prog_fd(c, egress_spec, user)
        rewrite = entries.rewrite_of(egress_spec, out_link)
        attachments = [_attach_forwarding_port(c, plan, mode, on_miss) for plan in c.plans]
        for src, dst in pairs:
            entries.write(c, src.ifindex, dst.ifindex, prog_fd, rewrite)
        result = AddResult(
            entries=[(iface(s), iface(d)) for s, d in pairs],
            attachments=attachments,
            table=c.layout.table,
            value_format=c.layout.value_format,
            prog_id=c.dp.prog_id,
            compiled=c.compiled,
            egress=entries.describe(c.dp, c.dp.fwd.get(in_link.ifindex)),
        )
    warnings = doctor.warnings_for([(s.ifindex, d.ifindex) for s, d in pairs])
    return replace(result, warnings=warnings)


def _attach_forwarding_port(
    c: Change, plan: AttachPlan, mode: str, on_miss: str | None
) -> Attachment:
    previous = c.dp.ports.get(plan.link.ifindex)
    verdict = maps.ON_MISS_VERDICTS[on_miss] if on_miss else None
    if verdict is None:
        verdict = previous.on_miss if previous else maps.XDP_PASS
    return attach(c.dp, plan, mode, maps.PortSettings(on_miss=verdict), c.undo)


def delete(pins: PinDir, ingress: Iface) -> DelResult:
    """Remove ingress's entry, then detach from every port that no longer needs xdpfwd.

    A port keeps the program while another entry forwards to it, so its on-miss
    verdict still applies to what enters it. Raises XdpfwdError when ingress has
    no entry, AttachError when a detach fails.
    """
    prereqs.require_privileges()
    no_entry = XdpfwdError(f"{ingress.label} has no xdpfwd entry; see `xdpfwd list`")
    with pins.locked(create=False):
        dp = Dataplane.open(pins)
        if dp is None:
            raise no_entry
        with dp, Undo() as undo:
            entry = dp.fwd.get(ingress.ifindex)
            if entry is None:
                if dp.groups.group_id(ingress.ifindex) is not None:
                    raise XdpfwdError(
                        f"{ingress.label} is a broadcast group member; use `xdpfwd broadcast "
                        f"del {ingress.label}`"
                    )
                raise no_entry
            prog_fd = sc.prog_fd_by_id(entry.egress_prog_id) if entry.egress_prog_id else 0
            try:
                dp.fwd.delete(ingress.ifindex)
                undo.callback(dp.fwd.set, ingress.ifindex, entry.egress_ifindex, prog_fd)
                detached = release_idle(dp, undo)
                undo.commit()
            finally:
                if prog_fd:
                    os.close(prog_fd)
            entries.forget_pair(dp, ingress.ifindex, entry.egress_ifindex)
    links = netdev.links()
    return DelResult(
        removed=known(ingress.ifindex, links),
        egress=known(entry.egress_ifindex, links),
        detached=detached,
    )


def prune(pins: PinDir) -> PruneResult:
    """Forget what deleted devices left behind, and detach from idle ports."""
    prereqs.require_privileges()
    with pins.locked(create=False):
        dp = Dataplane.open(pins)
        if dp is None:
            return PruneResult([], [], [])
        with dp, Undo() as undo:
            gone, emptied, detached = tidy(dp, undo)
            undo.commit()
    return PruneResult(gone, emptied, detached)


def list_ports(pins: PinDir) -> Listing:
    """Every port xdpfwd manages under pins, with its entry or group, mode, state and
    counters, and every broadcast group."""
    prereqs.require_privileges()
    with dataplane.reading(pins) as dp:
        if dp is None:
            return Listing(pins.path, None, None, None, [], [])
        links = netdev.links()
        groups = group_infos(dp, links)
        member_of = {m.ifindex: g.name for g in groups for m in g.members}
        rows = [_port_row(dp, port, links, member_of) for port in sorted(dp.ports.ifindexes())]
        return Listing(pins.path, dp.layout.table, dp.layout.value_format, dp.prog_id, rows, groups)


def _port_row(
    dp: Dataplane, port: int, links: dict[int, netdev.Link], member_of: dict[int, str]
) -> PortRow:
    link = links.get(port)
    entry = dp.fwd.get(port)
    egress = known(entry.egress_ifindex, links) if entry else None
    group = member_of.get(port)
    attached = link is not None and link.xdp_prog_id == dp.prog_id
    if link is None or (egress is not None and egress.ifname is None):
        state = STATE_DEVICE_GONE
    elif not attached:
        state = STATE_NOT_ATTACHED
    elif entry is None and group is None:
        state = STATE_NO_ENTRY
    else:
        state = STATE_OK
    has_egress = entry is not None and dp.layout.has_egress
    settings = dp.ports.get(port) or maps.PortSettings()
    return PortRow(
        ingress=known(port, links),
        egress=egress,
        table=dp.layout.table,
        value_format=dp.layout.value_format,
        mode=link.xdp_mode if attached else None,
        on_miss=_VERDICT_NAMES.get(settings.on_miss, "pass"),
        state=state,
        counters=dp.stats.read(port) or maps.PortStats(),
        egress_prog=entries.describe(dp, entry),
        rewrite=dp.rewrites.get(port, entry.egress_ifindex) if has_egress else None,
        egress_counters=(dp.egress_stats.read(port) or maps.EgressStats()) if has_egress else None,
        group=group,
    )


def down(pins: PinDir) -> DownResult:
    """Detach xdpfwd's program from every interface and remove every pin.

    Programs xdpfwd did not attach stay. Raises AttachError when a detach fails.
    """
    prereqs.require_privileges()
    if not pins.exists():
        return DownResult([], removed_pins=False)
    with pins.locked(create=False):
        if not pins.exists():
            return DownResult([], removed_pins=False)
        return DownResult(teardown(pins), removed_pins=True)


def check_host(pins: PinDir, compile_test: bool = True) -> list[doctor.Check]:
    return doctor.run(pins, compile_test)


def lab_up(name: str, nports: int) -> lab.Lab:
    prereqs.require_privileges()
    return lab.up(name, nports)


def lab_down(name: str) -> list[str]:
    prereqs.require_privileges()
    return lab.down(name)


def lab_status(name: str) -> lab.Lab | None:
    return lab.status(name)
