"""The operations behind the commands. No click and no printing: they return results
and raise XdpfwdError subclasses. Every change is made under the pin directory's lock
and undone if a later step fails, so a failed call leaves the previous state."""

from __future__ import annotations

import errno
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from . import dataplane, lab, netdev, prereqs
from .bpf import loader, maps, source
from .bpf import syscall as sc
from .dataplane import Dataplane
from .errors import AttachError, BpfError, InputError, XdpfwdError
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
    EgressProg,
    EgressSpec,
    Iface,
    Listing,
    PortRow,
)
from .pins import PinDir

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
    return Iface(link.ifindex, link.ifname)


def _iface(link: netdev.Link) -> Iface:
    return Iface(link.ifindex, link.ifname)


def _fresh_link(port: Iface) -> netdev.Link:
    link = netdev.link(port.ifindex)
    if link is None:
        raise InputError(f"no such interface: {port.label}")
    return link


def _check_forwarding_pair(ingress: netdev.Link, egress: netdev.Link) -> None:
    if ingress.ifindex == egress.ifindex:
        raise InputError(f"ingress and egress are the same interface ({ingress.ifname})")
    for link in (ingress, egress):
        if link.loopback:
            raise InputError(f"{link.ifname} is a loopback device; XDP cannot forward there")


def _open_pinned_prog(pins: PinDir) -> int | None:
    try:
        return sc.obj_get(pins.pin(maps.PIN_PROG_INGRESS))
    except FileNotFoundError:
        return None


def _pinned_prog_id(pins: PinDir) -> int | None:
    fd = _open_pinned_prog(pins)
    if fd is None:
        return None
    try:
        return sc.prog_info(fd).id
    finally:
        os.close(fd)


def _prog_name(prog_id: int) -> str:
    try:
        fd = sc.prog_fd_by_id(prog_id)
    except OSError:
        return "?"
    try:
        return sc.prog_info(fd).name or "?"
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _AttachPlan:
    link: netdev.Link
    keep: bool  # xdpfwd's program is already attached
    foreign_prog_id: int  # a program to replace (only with --force)


def _plan_attach(link: netdev.Link, ours: int | None, mode: str, force: bool) -> _AttachPlan:
    if link.xdp_prog_id and link.xdp_prog_id == ours:
        if mode != "auto" and mode != link.xdp_mode:
            raise XdpfwdError(
                f"{link.ifname} already runs xdpfwd in {link.xdp_mode} mode; "
                f"`xdpfwd del` its entries first to switch to {mode}"
            )
        return _AttachPlan(link, keep=True, foreign_prog_id=0)
    if link.xdp_prog_id and not force:
        raise AttachError(
            f"{link.ifname} already has XDP program {_prog_name(link.xdp_prog_id)!r} "
            f"(id {link.xdp_prog_id}) that xdpfwd did not attach; use --force to replace it"
        )
    return _AttachPlan(link, keep=False, foreign_prog_id=link.xdp_prog_id)


def _check_table_bounds(table: str, ports: list[netdev.Link]) -> None:
    for link in ports:
        if table == "devmap" and link.ifindex >= maps.FWD_MAX_ENTRIES:
            raise InputError(
                f"{link.ifname} has ifindex {link.ifindex}, beyond what a devmap table holds "
                f"({maps.FWD_MAX_ENTRIES}); use --table devmap-hash"
            )


def _check_egress_spec(spec: EgressSpec, bidirectional: bool) -> None:
    if spec.program == "user" and spec.rewrites:
        raise InputError("--egress-prog replaces the rewrite program: rewrite in your program")
    if spec.program == "none" and spec.rewrites:
        raise InputError("--no-egress leaves no program to rewrite addresses")
    if bidirectional and not spec.is_default and spec.program != "none":
        raise InputError(
            "egress programs and rewrites are set per entry: add each direction on its own"
        )
    for option, mac in (("--src-mac", spec.src_mac), ("--dst-mac", spec.dst_mac)):
        if mac and mac != "egress":
            try:
                maps.mac_bytes(mac)
            except ValueError as e:
                raise InputError(f"{option}: {e}") from None
    if spec.dst_mac == "egress":
        raise InputError("--dst-mac takes a MAC address (only --src-mac takes 'egress')")


def _check_egress_fits(layout: dataplane.Layout, spec: EgressSpec) -> None:
    if not layout.has_egress and (spec.program == "user" or spec.rewrites):
        raise XdpfwdError(
            "the forwarding table holds plain ifindex entries (--value ifindex); egress "
            "programs and MAC rewrites need bpf_devmap_val entries (Linux 5.8+)"
        )


def _read_user_program(spec: EgressSpec) -> tuple[str, str]:
    """(source text, function name) of a user egress program; raises InputError."""
    path = spec.user_file or ""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"cannot read egress program {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"egress program {path} is not text") from None
    func = spec.user_func or source.user_function(text)
    if func is None:
        raise InputError(
            f"{path} has no single `int NAME(struct xdp_md *ctx)`: name the function, "
            f"--egress-prog {path}:FUNCTION"
        )
    return text, func


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
    XdpfwdError (conflicting table, value format or mode), AttachError, BpfError
    (also for a user program that does not compile) or PrereqError; on any error
    nothing is left changed.
    """
    in_link, out_link = _fresh_link(ingress), _fresh_link(egress)
    _check_forwarding_pair(in_link, out_link)
    _check_egress_spec(egress_spec, bidirectional)
    user = _read_user_program(egress_spec) if egress_spec.program == "user" else None
    prereqs.require_privileges()
    pins.ensure_bpffs()
    ports = [in_link, out_link] if bidirectional else [in_link]
    entries = [(in_link, out_link), (out_link, in_link)] if bidirectional else [(in_link, out_link)]
    with pins.locked(create=True) as created, ExitStack() as undo_setup:
        if created:
            undo_setup.callback(pins.remove_if_empty)
        ours = _pinned_prog_id(pins)
        plans = [_plan_attach(link, ours, mode, force) for link in ports]
        layout = dataplane.planned_layout(pins, table, value)
        _check_table_bounds(layout.table, ports)
        _check_egress_fits(layout, egress_spec)
        compiled = dataplane.ensure_pinned(pins, layout, undo_setup)
        with Dataplane.open(pins) as dp, ExitStack() as resources, ExitStack() as undo:
            # Compiled before anything changes: a compile error leaves all as it was.
            prog_fd = _entry_prog_fd(dp, egress_spec, user, pins, resources)
            rewrite = _rewrite(egress_spec, out_link)
            attachments = [_attach(dp, plan, mode, on_miss, undo) for plan in plans]
            replaced = [
                _write_entry(dp, src.ifindex, dst.ifindex, prog_fd, rewrite, undo, resources)
                for src, dst in entries
            ]
            undo.pop_all()
            for (src, dst), previous in zip(entries, replaced, strict=True):
                _forget_stale_pair_state(dp, src.ifindex, dst.ifindex, previous, rewrite)
            result = AddResult(
                entries=[(_iface(s), _iface(d)) for s, d in entries],
                attachments=attachments,
                table=layout.table,
                value_format=layout.value_format,
                prog_id=dp.prog_id,
                compiled=compiled,
                egress=_egress_prog(dp, dp.fwd.get(in_link.ifindex)),
            )
        undo_setup.pop_all()
    return result


def _entry_prog_fd(
    dp: Dataplane,
    spec: EgressSpec,
    user: tuple[str, str] | None,
    pins: PinDir,
    resources: ExitStack,
) -> int:
    """The program fd an entry gets (0 for none); compiles a user program."""
    if not dp.layout.has_egress or spec.program == "none":
        return 0
    if user is not None:
        text, func = user
        fd = loader.compile_user_egress(pins.path, text, os.path.basename(spec.user_file), func)
        resources.callback(os.close, fd)
        return fd
    return dp.rewrite_fd if spec.rewrites else dp.egress_fd


def _rewrite(spec: EgressSpec, egress: netdev.Link) -> maps.Rewrite | None:
    if not spec.rewrites:
        return None
    src = egress.mac if spec.src_mac == "egress" else spec.src_mac
    return maps.Rewrite(src, spec.dst_mac)


def _attach(
    dp: Dataplane, plan: _AttachPlan, mode: str, on_miss: str | None, undo: ExitStack
) -> Attachment:
    link = plan.link
    previous = dp.ports.get(link.ifindex)
    verdict = maps.ON_MISS_VERDICTS[on_miss] if on_miss else previous or maps.XDP_PASS
    _map_write(dp.ports.set, link.ifindex, verdict)
    if previous is None:
        # A port new to xdpfwd starts from zero (an array slot may hold old counts).
        _map_write(dp.stats.reset, link.ifindex)
        undo.callback(dp.stats.delete, link.ifindex)
        undo.callback(dp.ports.delete, link.ifindex)
    else:
        undo.callback(dp.ports.set, link.ifindex, previous)
    if plan.keep:
        return Attachment(_iface(link), link.xdp_mode or "?", changed=False)
    if plan.foreign_prog_id:
        used = _replace_foreign(dp, plan, mode, undo)
    else:
        used = netdev.attach_xdp(link, dp.prog_fd, mode)
        undo.callback(_detach_ours, link.ifindex, dp.prog_fd)
    return Attachment(_iface(link), used, changed=True)


def _replace_foreign(dp: Dataplane, plan: _AttachPlan, mode: str, undo: ExitStack) -> str:
    """Put our program in place of a foreign one; undo puts the foreign one back."""
    link = plan.link
    if link.xdp_mode not in netdev.MODE_FLAGS:
        raise AttachError(f"{link.ifname} has an offloaded XDP program; xdpfwd cannot replace it")
    try:
        old_fd = sc.prog_fd_by_id(plan.foreign_prog_id)
    except OSError as e:
        raise AttachError(f"cannot open the program on {link.ifname}: {e.strerror}") from e
    undo.callback(os.close, old_fd)
    if mode in ("auto", link.xdp_mode):
        # Same mode: the kernel swaps the two programs atomically.
        used = netdev.attach_xdp(link, dp.prog_fd, link.xdp_mode, replace_fd=old_fd)
        undo.callback(netdev.attach_xdp, link, old_fd, used, dp.prog_fd)
        return used
    netdev.detach_xdp(link, expected_fd=old_fd)
    undo.callback(netdev.attach_xdp, link, old_fd, link.xdp_mode)
    used = netdev.attach_xdp(link, dp.prog_fd, mode)
    undo.callback(_detach_ours, link.ifindex, dp.prog_fd)
    return used


def _detach_ours(ifindex: int, prog_fd: int) -> None:
    link = netdev.link(ifindex)
    if link is not None:
        netdev.detach_xdp(link, expected_fd=prog_fd)


def _map_write(fn, *args) -> None:
    try:
        fn(*args)
    except OSError as e:
        raise BpfError(f"updating a pinned map failed: {e.strerror}") from e


def _write_entry(
    dp: Dataplane,
    ingress: int,
    egress: int,
    prog_fd: int,
    rewrite: maps.Rewrite | None,
    undo: ExitStack,
    resources: ExitStack,
) -> maps.FwdEntry | None:
    """Write one entry (in a single, atomic map update); return the one it replaced."""
    previous = dp.fwd.get(ingress)
    if rewrite is not None:
        # In place before the entry, so its first frame is already rewritten.
        old_rewrite = dp.rewrites.get(ingress, egress)
        _map_write(dp.rewrites.set, ingress, egress, rewrite)
        if old_rewrite is None:
            undo.callback(dp.rewrites.forget, ingress, egress)
        else:
            undo.callback(dp.rewrites.set, ingress, egress, old_rewrite)
    if previous is None:
        undo.callback(dp.fwd.delete, ingress)
    else:
        # The old program lives only as long as something holds it: keep an fd.
        old_fd = sc.prog_fd_by_id(previous.egress_prog_id) if previous.egress_prog_id else 0
        if old_fd:
            resources.callback(os.close, old_fd)
        undo.callback(dp.fwd.set, ingress, previous.egress_ifindex, old_fd)
    _map_write(dp.fwd.set, ingress, egress, prog_fd)
    return previous


def _forget_stale_pair_state(
    dp: Dataplane,
    ingress: int,
    egress: int,
    previous: maps.FwdEntry | None,
    rewrite: maps.Rewrite | None,
) -> None:
    """Start an entry's egress counters afresh when its pair is new; drop stale rewrites."""
    if not dp.layout.has_egress:
        return
    if previous is None or previous.egress_ifindex != egress:
        dp.egress_stats.reset(ingress)
        if previous is not None:
            dp.rewrites.forget(ingress, previous.egress_ifindex)
    if rewrite is None:
        dp.rewrites.forget(ingress, egress)


def _forget_pair(dp: Dataplane, ingress: int, egress: int) -> None:
    if dp.layout.has_egress:
        dp.egress_stats.delete(ingress)
        dp.rewrites.forget(ingress, egress)


def _egress_prog(dp: Dataplane, entry: maps.FwdEntry | None) -> EgressProg | None:
    if entry is None:
        return None
    prog_id = entry.egress_prog_id
    if not prog_id:
        return EgressProg("none", 0, None)
    kinds = {dp.egress_id: "built-in", dp.rewrite_id: "rewrite"}
    return EgressProg(kinds.get(prog_id, "user"), prog_id, _prog_name(prog_id))


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
        with dp, ExitStack() as undo:
            entry = dp.fwd.get(ingress.ifindex)
            if entry is None:
                raise no_entry
            prog_fd = sc.prog_fd_by_id(entry.egress_prog_id) if entry.egress_prog_id else 0
            try:
                dp.fwd.delete(ingress.ifindex)
                undo.callback(dp.fwd.set, ingress.ifindex, entry.egress_ifindex, prog_fd)
                detached = _release_idle_ports(dp, undo)
                undo.pop_all()
            finally:
                if prog_fd:
                    os.close(prog_fd)
            _forget_pair(dp, ingress.ifindex, entry.egress_ifindex)
    links = netdev.links()
    return DelResult(
        removed=_known(ingress.ifindex, links),
        egress=_known(entry.egress_ifindex, links),
        detached=detached,
    )


def _known(ifindex: int, links: dict[int, netdev.Link]) -> Iface:
    link = links.get(ifindex)
    return Iface(ifindex, link.ifname if link else None)


def _release_idle_ports(dp: Dataplane, undo: ExitStack) -> list[Iface]:
    """Detach from ports with no entry that no entry forwards to; forget their state."""
    ports = dp.ports.ifindexes()
    entries = {port: dp.fwd.get(port) for port in ports}
    targets = {entry.egress_ifindex for entry in entries.values() if entry}
    links = netdev.links()
    released = []
    for port in ports:
        if entries[port] is not None or port in targets:
            continue
        link = links.get(port)
        if link is not None and link.xdp_prog_id == dp.prog_id:
            netdev.detach_xdp(link, expected_fd=dp.prog_fd)
            undo.callback(netdev.attach_xdp, link, dp.prog_fd, link.xdp_mode)
        on_miss = dp.ports.get(port)
        dp.ports.delete(port)
        if on_miss is not None:
            undo.callback(dp.ports.set, port, on_miss)
        dp.stats.delete(port)
        released.append(_known(port, links))
    return released


def list_ports(pins: PinDir) -> Listing:
    """Every port xdpfwd manages under pins, with its entry, mode, state and counters."""
    prereqs.require_privileges()
    dp = Dataplane.open(pins)
    if dp is None:
        return Listing(pins.path, None, None, None, [])
    with dp:
        links = netdev.links()
        rows = [_port_row(dp, port, links) for port in sorted(dp.ports.ifindexes())]
        return Listing(pins.path, dp.layout.table, dp.layout.value_format, dp.prog_id, rows)


def _port_row(dp: Dataplane, port: int, links: dict[int, netdev.Link]) -> PortRow:
    link = links.get(port)
    entry = dp.fwd.get(port)
    egress = _known(entry.egress_ifindex, links) if entry else None
    attached = link is not None and link.xdp_prog_id == dp.prog_id
    if link is None or (egress is not None and egress.ifname is None):
        state = STATE_DEVICE_GONE
    elif not attached:
        state = STATE_NOT_ATTACHED
    elif entry is None:
        state = STATE_NO_ENTRY
    else:
        state = STATE_OK
    has_egress = entry is not None and dp.layout.has_egress
    return PortRow(
        ingress=_known(port, links),
        egress=egress,
        table=dp.layout.table,
        value_format=dp.layout.value_format,
        mode=link.xdp_mode if attached else None,
        on_miss=_VERDICT_NAMES.get(dp.ports.get(port) or maps.XDP_PASS, "pass"),
        state=state,
        counters=dp.stats.read(port) or maps.PortStats(),
        egress_prog=_egress_prog(dp, entry),
        rewrite=dp.rewrites.get(port, entry.egress_ifindex) if has_egress else None,
        egress_counters=(dp.egress_stats.read(port) or maps.EgressStats()) if has_egress else None,
    )


def down(pins: PinDir) -> DownResult:
    """Detach xdpfwd's program from every interface and remove every pin.

    Programs xdpfwd did not attach stay. Raises AttachError when a detach fails.
    """
    prereqs.require_privileges()
    if not pins.exists():
        return DownResult([], removed_pins=False)
    detached: list[Iface] = []
    with pins.locked(create=False):
        if not pins.exists():
            return DownResult([], removed_pins=False)
        prog_fd = _open_pinned_prog(pins)
        if prog_fd is not None:
            try:
                prog_id = sc.prog_info(prog_fd).id
                for link in netdev.links().values():
                    if link.xdp_prog_id == prog_id:
                        netdev.detach_xdp(link, expected_fd=prog_fd)
                        detached.append(_iface(link))
            finally:
                os.close(prog_fd)
        try:
            pins.remove()
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise XdpfwdError(f"removing {pins.path} failed: {e.strerror}") from e
    return DownResult(detached, removed_pins=True)


def lab_up(name: str, nports: int) -> lab.Lab:
    prereqs.require_privileges()
    return lab.up(name, nports)


def lab_down(name: str) -> list[str]:
    prereqs.require_privileges()
    return lab.down(name)


def lab_status(name: str) -> lab.Lab | None:
    return lab.status(name)
