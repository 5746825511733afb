"""Loss accounting: the tracepoint programs that count transmit failures, kept
attached while the pin dir exists because their bpf_links are pinned in it.

They are compiled once (BCC) and pinned with the rest; attaching needs no BCC, only
BPF_RAW_TRACEPOINT_OPEN on the pinned programs. There is one attachment per pin dir,
shared by every reader: a second one would count each event twice.
"""

from __future__ import annotations

import os

from xdpfwd.errors import BpfError
from xdpfwd.kernel import netns
from xdpfwd.kernel.bpf import loader, maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.state.pins import PinDir, unlink_if_there

EVENTS = tuple(loader.TRACE_FUNCS)


def prog_pin(event: str) -> str:
    return maps.PIN_TRACE_PROG_PREFIX + event


def link_pin(event: str) -> str:
    return maps.PIN_TRACE_LINK_PREFIX + event


def is_attached(pins: PinDir, names: set[str] | None = None) -> bool:
    """Whether every tracepoint program of the pin dir is attached (its link pinned)."""
    names = pins.names() if names is None else names
    return all(link_pin(event) in names for event in EVENTS)


def ensure_attached(pins: PinDir, undo) -> bool:
    """Attach the pin dir's tracepoint programs unless they are; True if this call did.

    Compiles and pins the programs first when they are not pinned yet. Call with the
    pin directory locked exclusively; pins made here are removed by undo. Raises
    PrereqError (no BCC, headers or BTF) or BpfError.
    """
    names = pins.names()
    if is_attached(pins, names):
        return False
    missing = [event for event in EVENTS if prog_pin(event) not in names]
    if missing:
        _compile(pins, missing, undo)
    for event in EVENTS:
        if link_pin(event) in names:
            continue  # left by an attach that was cut short
        path = pins.pin(link_pin(event))
        prog = sc.obj_get(pins.pin(prog_pin(event)))
        try:
            # Pin dirs made before the tp_btf programs keep their raw tracepoint ones.
            typed = sc.prog_info(prog).prog_type == sc.PROG_TYPE_TRACING
            link = sc.raw_tracepoint_open(prog, event, typed)
            try:
                sc.obj_pin(link, path)
            finally:
                os.close(link)
        except OSError as e:
            raise BpfError(f"attaching to xdp:{event} failed: {e.strerror}") from e
        finally:
            os.close(prog)
        undo.callback(unlink_if_there, path)
    return True


def _compile(pins: PinDir, events: list[str], undo) -> None:
    before = pins.names()
    undo.callback(_unlink_new, pins, before)  # what BCC pins (tx_events) goes too
    fds = loader.compile_trace(pins.path, netns.current_inode())
    try:
        for event in events:
            sc.obj_pin(fds[loader.TRACE_FUNCS[event]], pins.pin(prog_pin(event)))
    except OSError as e:
        raise BpfError(f"pinning the tracepoint programs failed: {e.strerror}") from e
    finally:
        for fd in fds.values():
            os.close(fd)


def detach(pins: PinDir) -> bool:
    """Unpin the links, which detaches the programs (they stay pinned); True if any
    was attached. Call with the pin directory locked exclusively."""
    found = False
    for event in EVENTS:
        try:
            os.unlink(pins.pin(link_pin(event)))
            found = True
        except FileNotFoundError:
            pass
    return found


def links(pins: PinDir) -> dict[str, sc.LinkInfo | None]:
    """Each tracepoint's pinned link as the kernel describes it (None: not pinned)."""
    found: dict[str, sc.LinkInfo | None] = {}
    for event in EVENTS:
        try:
            fd = sc.obj_get(pins.pin(link_pin(event)))
        except FileNotFoundError:
            found[event] = None
            continue
        try:
            found[event] = sc.link_info(fd)
        finally:
            os.close(fd)
    return found


def host_links() -> dict[int, sc.LinkInfo]:
    """Every raw tracepoint link on an XDP tracepoint, host-wide, by link id: each
    program attached there runs for every XDP redirect of the host, whoever made it."""
    found = {}
    for link_id, fd in sc.each_opened(sc.next_link_id, sc.link_fd_by_id):
        info = sc.link_info(fd)
        if info.tracepoint and info.tracepoint.startswith("xdp_"):
            found[link_id] = info
    return found


def _unlink_new(pins: PinDir, keep: set[str]) -> None:
    for name in pins.names() - keep:
        unlink_if_there(pins.pin(name))
