"""Forwarding entries inside a change: writing and removing them (with undo), and
their egress programs: which one an entry gets, and which one it has."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import files, netdev
from xdpfwd.kernel.bpf import loader, maps, source
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import EgressProg, EgressSpec
from xdpfwd.state.dataplane import Dataplane, Layout, hold_program
from xdpfwd.state.pins import unlink_if_there
from xdpfwd.state.ports import map_write, prog_name
from xdpfwd.state.transaction import Change


def check_spec(spec: EgressSpec, bidirectional: bool) -> None:
    if spec.program == "user" and spec.rewrites:
        raise InputError("--egress-prog replaces the rewrite program: rewrite in your program")
    if spec.program == "none" and spec.rewrites:
        raise InputError("--no-egress leaves no program to rewrite addresses")
    if bidirectional and not spec.is_default and spec.program != "none":
        raise InputError(
            "egress programs and rewrites are set per entry: add each direction on its own"
        )
    for option, mac in (("--src-mac", spec.src_mac), ("--dst-mac", spec.dst_mac)):
        if mac is not None and mac != "egress":
            try:
                maps.rewrite_mac_bytes(mac, source=option == "--src-mac")
            except ValueError as e:
                raise InputError(f"{option}: {e}") from None
    if spec.dst_mac == "egress":
        raise InputError("--dst-mac takes a MAC address (only --src-mac takes 'egress')")


def layout_check(spec: EgressSpec):
    def check(layout: Layout) -> None:
        if not layout.has_egress and (spec.program == "user" or spec.rewrites):
            raise XdpfwdError(
                "the forwarding table holds plain ifindex entries (--value ifindex); egress "
                "programs and MAC rewrites need bpf_devmap_val entries (Linux 5.8+)"
            )

    return check


def source_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def read_user_program(spec: EgressSpec) -> tuple[str, str]:
    """(source text, function name) of a user egress program; raises InputError.

    The file is read with files.read_bounded (a regular file, 4 MiB at most); its
    absolute path and the function name must fit in the record `save` reads back
    (maps.USER_PROG_PATH_MAX, maps.USER_PROG_FUNC_MAX bytes), and a function named
    on the command line must be in the file: both found before BCC runs.
    """
    path = spec.user_file or ""
    shown = files.shown(path)
    recorded = os.fsencode(os.path.abspath(path)) if path else b""
    if len(recorded) > maps.USER_PROG_PATH_MAX:
        raise InputError(
            f"egress program path {shown} is {len(recorded)} bytes long as an absolute "
            f"path; xdpfwd records at most {maps.USER_PROG_PATH_MAX} (for `save`): move it"
        )
    try:
        recorded.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"egress program path {shown} is not UTF-8; `save` could not write it: rename it"
        ) from None
    text = files.decode_text(files.read_bounded(path, "egress program"), f"egress program {shown}")
    if spec.user_func is None:
        func = source.user_function(text)
        if func is None:
            raise InputError(
                f"{shown} has no single `int NAME(struct xdp_md *ctx)`: name the function, "
                f"--egress-prog {shown}:FUNCTION"
            )
        return text, func
    func = spec.user_func
    if len(func.encode()) > maps.USER_PROG_FUNC_MAX:
        raise InputError(
            f"function name {func[:20]}... is longer than {maps.USER_PROG_FUNC_MAX} bytes"
        )
    if not source.mentions_function(text, func):
        found = sorted(source.xdp_functions(text))
        hint = f" (its XDP functions: {', '.join(found)})" if found else ""
        raise InputError(f"{shown} has no function {func}{hint}")
    return text, func


def verdict_warnings(text: str, file_name: str, func: str) -> list[str]:
    """Warnings for a user egress program that names verdicts a devmap egress program
    cannot give: the kernel accepts only XDP_PASS and XDP_DROP there."""
    named = source.invalid_egress_verdicts(text)
    if not named:
        return []
    return [
        f"{file_name} mentions {', '.join(named)}: an egress program may only pass or "
        f"drop; frames {func} gives another verdict are dropped and counted as "
        "'invalid verdict' (see `xdpfwd stats`)"
    ]


def prog_fd(c: Change, spec: EgressSpec, user: tuple[str, str] | None) -> int:
    """The program fd an entry gets (0 for none); compiles a user program.

    An entry gets an egress program only when it does work (a rewrite, the user's
    program): an entry is keyed by its ingress port, so the port's redirect counters
    are the entry's, and what does not make it out the tracepoints report. The
    kernel's devmap program call alone costs about 8% of a bare redirect."""
    dp = c.dp
    if not dp.layout.has_egress or spec.kind == "plain":
        return 0
    if user is not None:
        text, func = user
        invalid = dp.pins.pin(maps.PIN_ENTRY_INVALID)
        if not os.path.lexists(invalid):
            # BCC pins the first user program's map before the verifier runs: a program
            # it refuses, or a change undone, must not leave it.
            c.undo.callback(unlink_if_there, invalid)
        # Loaded with the pin dir's flags: the devmap it goes into keeps those.
        name = os.path.basename(spec.user_file)
        fd = loader.compile_user_egress(dp.pins.path, text, name, func, frags=dp.frags)
        c.resources.callback(os.close, fd)
        source = maps.UserProg(os.path.abspath(spec.user_file), func, source_digest(text))
        map_write(dp.user_progs.set, sc.prog_info(fd).id, source)
        return fd
    return dp.rewrite_fd


def takes_rewrite(spec: EgressSpec, egress: netdev.Link) -> bool:
    """Whether frames to egress can take spec's rewrite: not those of a device without
    a MAC address (a tun), which have no Ethernet header to write it over."""
    return bool(egress.mac) or not spec.rewrites


def no_mac_error(names: list[str]) -> InputError:
    return InputError(
        f"{', '.join(names)} has no MAC address: its frames have no Ethernet header for "
        "--src-mac or --dst-mac to rewrite"
    )


def rewrite_of(spec: EgressSpec, egress: netdev.Link) -> maps.Rewrite | None:
    """The addresses an entry with spec writes (its src "egress" made egress's MAC).
    Raises InputError for "egress" on a device without a MAC address (a tun), with
    the reason any rewrite is refused there (takes_rewrite)."""
    if not spec.rewrites:
        return None
    if spec.src_mac == "egress" and not egress.mac:
        raise no_mac_error([egress.ifname])
    src = egress.mac if spec.src_mac == "egress" else spec.src_mac
    return maps.Rewrite(
        src.lower() if src else None, spec.dst_mac.lower() if spec.dst_mac else None
    )


def spec_of(
    dp: Dataplane, ingress: int, entry: maps.FwdEntry, egress: netdev.Link
) -> EgressSpec | None:
    """What an entry's egress program does, as an EgressSpec (what `save` writes);
    None for a user program whose source was not recorded."""
    prog_id = entry.egress_prog_id
    if not prog_id or prog_id == dp.egress_id:
        return EgressSpec()
    if prog_id == dp.rewrite_id:
        rw = dp.rewrites.get(ingress, entry.egress_ifindex) or maps.Rewrite(None, None)
        src = "egress" if rw.src and rw.src == egress.mac else rw.src
        return EgressSpec(src_mac=src, dst_mac=rw.dst)
    origin = dp.user_progs.get(prog_id)
    if origin is None:
        return None
    return EgressSpec(program="user", user_file=origin.path, user_func=origin.function)


def set_rewrite(c: Change, ingress: int, egress: int, rewrite: maps.Rewrite) -> None:
    """The addresses the (ingress, egress) pair's rewrite program writes (undone with
    the change). Raises InputError towards a device whose frames have no Ethernet
    header (a tun): the addresses would be written over its IP header."""
    link = c.links.get(egress)
    if link is not None and not link.mac:
        raise no_mac_error([link.ifname])
    dp = c.dp
    old = dp.rewrites.get(ingress, egress)
    map_write(dp.rewrites.set, ingress, egress, rewrite)
    if old is None:
        c.undo.callback(dp.rewrites.forget, ingress, egress)
    else:
        c.undo.callback(dp.rewrites.set, ingress, egress, old)


def write(c: Change, ingress: int, egress: int, prog_fd: int, rewrite: maps.Rewrite | None) -> None:
    """Write one entry, in a single map update: the kernel swaps it atomically."""
    dp = c.dp
    previous = dp.fwd.get(ingress)
    if rewrite is not None:
        # In place before the entry, so its first frame is already rewritten.
        set_rewrite(c, ingress, egress, rewrite)
    if previous is None or previous.egress_ifindex != egress:
        _begin_pair(c, ingress)
    if previous is None:
        c.undo.callback(dp.fwd.delete, ingress)
    else:
        old_fd = hold_program(c.resources, previous.egress_prog_id)
        c.undo.callback(dp.fwd.set, ingress, previous.egress_ifindex, old_fd)
    map_write(dp.fwd.set, ingress, egress, prog_fd)
    c.after_commit.append(lambda: forget_stale_state(dp, ingress, egress, previous, rewrite))


def _redirected(dp: Dataplane, port: int, counters: maps.PortStats) -> tuple[int, int]:
    """Frames and bytes port redirected, less those it replicated as a multicast
    source (both count from when the port was attached or the counters were zeroed)."""
    mcast = dp.mcast.port_stats.read(port) if dp.mcast is not None else None
    mcast = mcast or maps.McastPortStats()
    return (
        max(0, counters.redirect_packets - mcast.packets),
        max(0, counters.redirect_bytes - mcast.bytes),
    )


def _since_pair_began(dp: Dataplane, port: int, counters: maps.PortStats) -> maps.EgressStats:
    """What port redirected (counters, less its multicast frames) since its entry's
    pair began. Before that, its frames went elsewhere: to another egress, or as a
    member's copies."""
    packets, nbytes = _redirected(dp, port, counters)
    base = dp.entry_base.get(port) if dp.entry_base is not None else None
    if base is not None:
        packets, nbytes = max(0, packets - base[0]), max(0, nbytes - base[1])
    return maps.EgressStats(packets, nbytes)


@dataclass(frozen=True)
class EntryCounts:
    sent: maps.EgressStats  # tx: sent on; drop: what its egress programs dropped
    invalid_packets: int  # what a user egress program gave an invalid verdict (dropped)


def entry_counts(dp: Dataplane, port: int, counters: maps.PortStats) -> EntryCounts:
    """What the entry of port did with its frames since its pair began: what the port
    redirected to it, less what its egress programs (the one now and any before)
    dropped, is what it sent on. The same count whichever program runs, so changing
    the program neither resets it nor turns past drops into other losses."""
    redirected = _since_pair_began(dp, port, counters)
    programs = dp.egress_stats.read(port) if dp.egress_stats is not None else None
    programs = programs or maps.EgressStats()
    table = dp.invalid_verdicts()
    invalid, invalid_bytes = table.read(port) if table is not None else (0, 0)
    sent = maps.EgressStats(
        max(0, redirected.tx_packets - programs.drop_packets - invalid),
        max(0, redirected.tx_bytes - programs.drop_bytes - invalid_bytes),
        programs.drop_packets,
        programs.drop_bytes,
    )
    return EntryCounts(sent, invalid)


def _begin_pair(c: Change, ingress: int) -> None:
    """Count ingress's entry from now on (undone with the change): a new pair."""
    dp = c.dp
    if dp.entry_base is None:
        return
    old = dp.entry_base.get(ingress)
    dp.entry_base.set(ingress, _redirected(dp, ingress, dp.stats.read(ingress) or maps.PortStats()))
    if old is None:
        c.undo.callback(dp.entry_base.delete, ingress)
    else:
        c.undo.callback(dp.entry_base.set, ingress, old)


def remove(c: Change, ingress: int) -> maps.FwdEntry | None:
    """Remove ingress's entry (undone with the change); return it."""
    dp = c.dp
    entry = dp.fwd.get(ingress)
    if entry is None:
        return None
    prog_fd = hold_program(c.resources, entry.egress_prog_id)
    dp.fwd.delete(ingress)
    c.undo.callback(dp.fwd.set, ingress, entry.egress_ifindex, prog_fd)
    c.after_commit.append(lambda: dp.forget_entry_base(ingress))
    if dp.layout.has_egress:
        c.after_commit.append(lambda: forget_pair(dp, ingress, entry.egress_ifindex))
    return entry


def forget_pair(dp: Dataplane, ingress: int, egress: int) -> None:
    """Drop the counters and the rewrite of an entry that is gone."""
    if dp.layout.has_egress:
        dp.egress_stats.delete(ingress)
        dp.rewrites.forget(ingress, egress)
        dp.forget_invalid(ingress)


def forget_stale_state(
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
        dp.forget_invalid(ingress)
        if previous is not None:
            dp.rewrites.forget(ingress, previous.egress_ifindex)
    if rewrite is None:
        dp.rewrites.forget(ingress, egress)


def describe(dp: Dataplane, entry: maps.FwdEntry | None) -> EgressProg | None:
    if entry is None:
        return None
    prog_id = entry.egress_prog_id
    if not prog_id:
        return EgressProg("none", 0, None)
    kinds = {dp.egress_id: "built-in", dp.rewrite_id: "rewrite", dp.group_prog_id: "group"}
    kind = kinds.get(prog_id, "user")
    origin = dp.user_progs.get(prog_id) if kind == "user" else None
    source = f"{origin.path}:{origin.function}" if origin else None
    return EgressProg(kind, prog_id, prog_name(prog_id), source)
