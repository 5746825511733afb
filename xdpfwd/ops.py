"""The operations behind the commands. No click and no printing: they return results
and raise XdpfwdError subclasses. Every change is made under the pin directory's lock
and undone if a later step fails, so a failed call leaves the previous state."""

from __future__ import annotations

import errno
import os
from contextlib import ExitStack
from pathlib import Path

from . import lab, netdev, prereqs
from .bpf import loader, maps, source
from .bpf import syscall as sc
from .counters import clear as stats_clear  # noqa: F401  (CLI entry points)
from .counters import read as stats_read  # noqa: F401
from .counters import watch as stats_watch  # noqa: F401
from .dataplane import Dataplane, Layout
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
    EgressProg,
    EgressSpec,
    Iface,
    Listing,
    PortRow,
)
from .pins import PinDir
from .ports import (
    AttachPlan,
    attach,
    fresh_link,
    iface,
    known,
    map_write,
    open_pinned_prog,
    prog_name,
    release_idle,
)
from .transaction import Change, change

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


def _egress_check(spec: EgressSpec):
    def check(layout: Layout) -> None:
        if not layout.has_egress and (spec.program == "user" or spec.rewrites):
            raise XdpfwdError(
                "the forwarding table holds plain ifindex entries (--value ifindex); egress "
                "programs and MAC rewrites need bpf_devmap_val entries (Linux 5.8+)"
            )

    return check


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
    _check_egress_spec(egress_spec, bidirectional)
    user = _read_user_program(egress_spec) if egress_spec.program == "user" else None
    ports = [in_link, out_link] if bidirectional else [in_link]
    entries = [(in_link, out_link), (out_link, in_link)] if bidirectional else [(in_link, out_link)]
    check = _egress_check(egress_spec)
    with change(pins, table, value, ports, mode, force, check) as c:
        dp = c.dp
        _check_not_members(dp, ports)
        # Compiled before anything changes: a compile error leaves all as it was.
        prog_fd = _entry_prog_fd(dp, egress_spec, user, pins, c.resources)
        rewrite = _rewrite(egress_spec, out_link)
        attachments = [_attach_forwarding_port(c, plan, mode, on_miss) for plan in c.plans]
        for src, dst in entries:
            previous = _write_entry(dp, src.ifindex, dst.ifindex, prog_fd, rewrite, c)
            c.after_commit.append(
                lambda s=src.ifindex, d=dst.ifindex, p=previous: _forget_stale_pair_state(
                    dp, s, d, p, rewrite
                )
            )
        result = AddResult(
            entries=[(iface(s), iface(d)) for s, d in entries],
            attachments=attachments,
            table=c.layout.table,
            value_format=c.layout.value_format,
            prog_id=dp.prog_id,
            compiled=c.compiled,
            egress=_egress_prog(dp, dp.fwd.get(in_link.ifindex)),
        )
    return result


def _attach_forwarding_port(
    c: Change, plan: AttachPlan, mode: str, on_miss: str | None
) -> Attachment:
    previous = c.dp.ports.get(plan.link.ifindex)
    verdict = maps.ON_MISS_VERDICTS[on_miss] if on_miss else None
    if verdict is None:
        verdict = previous.on_miss if previous else maps.XDP_PASS
    return attach(c.dp, plan, mode, maps.PortSettings(on_miss=verdict), c.undo)


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


def _write_entry(
    dp: Dataplane,
    ingress: int,
    egress: int,
    prog_fd: int,
    rewrite: maps.Rewrite | None,
    c: Change,
) -> maps.FwdEntry | None:
    """Write one entry (in a single, atomic map update); return the one it replaced."""
    previous = dp.fwd.get(ingress)
    if rewrite is not None:
        # In place before the entry, so its first frame is already rewritten.
        old_rewrite = dp.rewrites.get(ingress, egress)
        map_write(dp.rewrites.set, ingress, egress, rewrite)
        if old_rewrite is None:
            c.undo.callback(dp.rewrites.forget, ingress, egress)
        else:
            c.undo.callback(dp.rewrites.set, ingress, egress, old_rewrite)
    if previous is None:
        c.undo.callback(dp.fwd.delete, ingress)
    else:
        # The old program lives only as long as something holds it: keep an fd.
        old_fd = sc.prog_fd_by_id(previous.egress_prog_id) if previous.egress_prog_id else 0
        if old_fd:
            c.resources.callback(os.close, old_fd)
        c.undo.callback(dp.fwd.set, ingress, previous.egress_ifindex, old_fd)
    map_write(dp.fwd.set, ingress, egress, prog_fd)
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


def _egress_prog(dp: Dataplane, entry: maps.FwdEntry | None) -> EgressProg | None:
    if entry is None:
        return None
    prog_id = entry.egress_prog_id
    if not prog_id:
        return EgressProg("none", 0, None)
    kinds = {dp.egress_id: "built-in", dp.rewrite_id: "rewrite", dp.group_prog_id: "group"}
    return EgressProg(kinds.get(prog_id, "user"), prog_id, prog_name(prog_id))


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
                undo.pop_all()
            finally:
                if prog_fd:
                    os.close(prog_fd)
            if dp.layout.has_egress:
                dp.egress_stats.delete(ingress.ifindex)
                dp.rewrites.forget(ingress.ifindex, entry.egress_ifindex)
    links = netdev.links()
    return DelResult(
        removed=known(ingress.ifindex, links),
        egress=known(entry.egress_ifindex, links),
        detached=detached,
    )


def list_ports(pins: PinDir) -> Listing:
    """Every port xdpfwd manages under pins, with its entry or group, mode, state and
    counters, and every broadcast group."""
    prereqs.require_privileges()
    dp = Dataplane.open(pins)
    if dp is None:
        return Listing(pins.path, None, None, None, [], [])
    with dp:
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
        egress_prog=_egress_prog(dp, entry),
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
    detached: list[Iface] = []
    with pins.locked(create=False):
        if not pins.exists():
            return DownResult([], removed_pins=False)
        prog_fd = open_pinned_prog(pins)
        if prog_fd is not None:
            try:
                prog_id = sc.prog_info(prog_fd).id
                for link in netdev.links().values():
                    if link.xdp_prog_id == prog_id:
                        netdev.detach_xdp(link, expected_fd=prog_fd)
                        detached.append(iface(link))
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
