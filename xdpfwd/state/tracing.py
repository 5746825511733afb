"""Attaching xdpfwd's tracepoint programs while `stats --watch` runs.

The programs are compiled once and pinned with the rest; attaching needs no BCC:
perf_event_open() on the tracepoint and PERF_EVENT_IOC_SET_BPF. A BPF program on
a tracepoint runs for the event on every CPU, so one perf event on CPU 0 is enough.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import lru_cache

from xdpfwd.errors import BpfError, PrereqError
from xdpfwd.kernel.bpf import loader, maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.state.pins import PinDir

TRACEFS = "/sys/kernel/tracing"
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319, "s390x": 331}
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
# struct perf_event_attr up to wakeup_events; the kernel takes the rest as zeros.
_PERF_ATTR = struct.Struct("=IIQQQQQII")


@lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def ensure_tracefs() -> None:
    """Mount tracefs if it is not mounted; raises PrereqError when that fails."""
    if os.path.isdir(os.path.join(TRACEFS, "events")):
        return
    if _libc().mount(b"tracefs", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise PrereqError(
            f"tracefs is not mounted at {TRACEFS} and mounting it failed ({os.strerror(err)}); "
            f"mount it (`mount -t tracefs tracefs {TRACEFS}`) to trace transmit failures"
        )


def _pin(event: str) -> str:
    return maps.PIN_TRACE_PREFIX + event


def ensure_programs(pins: PinDir) -> bool:
    """Compile and pin the tracepoint programs unless they are; True if compiled.

    Call with the pin directory locked. Raises PrereqError or BpfError.
    """
    missing = [e for e in loader.TRACE_FUNCS if _pin(e) not in pins.names()]
    if not missing:
        return False
    fds = loader.compile_trace(pins.path)
    try:
        for event, func in loader.TRACE_FUNCS.items():
            if event in missing:
                sc.obj_pin(fds[func], pins.pin(_pin(event)))
    except OSError as e:
        raise BpfError(f"pinning the tracepoint programs failed: {e.strerror}") from e
    finally:
        for fd in fds.values():
            os.close(fd)
    return True


def _perf_event_open(tracepoint_id: int) -> int:
    nr = _SYS_PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise BpfError(f"perf_event_open() syscall number unknown for {platform.machine()}")
    attr = ctypes.create_string_buffer(128)
    _PERF_ATTR.pack_into(attr, 0, PERF_TYPE_TRACEPOINT, 128, tracepoint_id, 1, 0, 0, 0, 1, 0)
    fd = _libc().syscall(nr, attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise BpfError(f"perf_event_open on tracepoint {tracepoint_id}: {os.strerror(err)}")
    return fd


@contextmanager
def attached(pins: PinDir) -> Iterator[None]:
    """Keep the pinned tracepoint programs attached for the body. Raises BpfError."""
    with ExitStack() as stack:
        for event in loader.TRACE_FUNCS:
            with open(os.path.join(TRACEFS, "events", "xdp", event, "id")) as f:
                tracepoint_id = int(f.read())
            prog_fd = sc.obj_get(pins.pin(_pin(event)))
            stack.callback(os.close, prog_fd)
            perf_fd = _perf_event_open(tracepoint_id)
            stack.callback(os.close, perf_fd)
            try:
                fcntl.ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
                fcntl.ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0)
            except OSError as e:
                raise BpfError(f"attaching to xdp:{event} failed: {e.strerror}") from e
        yield
