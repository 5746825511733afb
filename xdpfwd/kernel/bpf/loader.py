"""Compiling with BCC: the only module that imports bcc, and only when it must compile."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from xdpfwd import progress
from xdpfwd.errors import BpfError, PrereqError
from xdpfwd.kernel import prereqs
from xdpfwd.kernel.bpf import source

log = logging.getLogger(__name__)

XDP_INGRESS_FUNC = "xdpfwd_ingress"
XDP_EGRESS_FUNC = "xdpfwd_egress"
XDP_REWRITE_FUNC = "xdpfwd_egress_rewrite"
XDP_GROUP_FUNC = "xdpfwd_egress_group"
ATTACH_XDP_DEVMAP = 33  # enum bpf_attach_type BPF_XDP_DEVMAP: a devmap entry's program
PROG_TRACEPOINT = 5  # enum bpf_prog_type
PROG_XDP = 6
# BCC names the function of TRACEPOINT_PROBE(category, event) like this.
TRACE_FUNCS = {
    event: f"tracepoint__xdp__{event}"
    for event in ("xdp_devmap_xmit", "xdp_redirect_err", "xdp_exception")
}


@contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Collect what BCC and clang print on fds 1 and 2 (they bypass sys.stdout)."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def _first_error(lines: list[str]) -> str | None:
    return next((line.strip() for line in lines if "error:" in line), None)


def compile_programs(
    text: str,
    funcs: dict[str, tuple[int, int | None]],
    cflags: list[str],
    label: str | None = None,
) -> dict[str, int]:
    """Compile C text with BCC and load each function of funcs as a program.

    funcs maps a function to its program type and expected attach type (None for
    the type's default). Returns a program fd per function. Maps declared in pinned sections
    are created and pinned (or adopted) by BCC. Raises PrereqError when BCC or
    kernel headers are missing, BpfError when the compile or a load fails.
    """
    prereqs.require_bcc()
    prereqs.require_kernel_headers()
    label = label or ", ".join(funcs)
    log.info("compiling %s with BCC", label)
    fds: dict[str, int] = {}
    failure = None
    with progress.step(f"compiling {label} with BCC"), _captured_output() as output:
        try:
            from bcc import BPF

            bpf = BPF(text=text.encode(), cflags=cflags)
            for func, (prog_type, attach_type) in funcs.items():
                extra = {} if attach_type is None else {"attach_type": attach_type}
                fds[func] = os.dup(bpf.load_func(func.encode(), prog_type, **extra).fd)
            bpf.cleanup()
        except Exception as e:  # BCC raises bare Exception for compile and load errors
            failure = e
    for line in output:
        log.debug("bcc: %s", line)
    if failure is not None:
        for fd in fds.values():
            os.close(fd)
        if any("Unable to find kernel headers" in line for line in output):
            raise PrereqError(prereqs.missing_headers_message()) from failure
        reason = _first_error(output) or str(failure).strip()
        raise BpfError(f"compiling {label} failed: {reason}") from failure
    return fds


def compile_ingress(pin_dir: str, value_size: int) -> dict[str, int]:
    """Compile the ingress program (and, for bpf_devmap_val entries, the built-in
    egress programs) against the maps pinned, or to pin, under pin_dir."""
    funcs: dict[str, tuple[int, int | None]] = {XDP_INGRESS_FUNC: (PROG_XDP, None)}
    if value_size == 8:
        funcs |= dict.fromkeys(
            (XDP_EGRESS_FUNC, XDP_REWRITE_FUNC, XDP_GROUP_FUNC), (PROG_XDP, ATTACH_XDP_DEVMAP)
        )
    return compile_programs(
        source.ingress_text(with_egress=value_size == 8),
        funcs,
        source.cflags(XDPFWD_PIN_DIR=pin_dir, XDPFWD_FWD_VALUE_SIZE=value_size),
    )


def compile_user_egress(pin_dir: str, user_text: str, file_name: str, func: str) -> int:
    """Compile a user's egress function wrapped with xdpfwd's entry counters."""
    fds = compile_programs(
        source.user_egress_text(user_text, file_name, func),
        {func: (PROG_XDP, ATTACH_XDP_DEVMAP)},
        source.cflags(XDPFWD_PIN_DIR=pin_dir, XDPFWD_FWD_VALUE_SIZE=8),
        label=f"{file_name}:{func}",
    )
    return fds[func]


def compile_trace(pin_dir: str) -> dict[str, int]:
    """Compile the tracepoint programs (BCC reads the events' formats from tracefs)."""
    return compile_programs(
        source.program_text(source.TRACE_SOURCE),
        dict.fromkeys(TRACE_FUNCS.values(), (PROG_TRACEPOINT, None)),
        source.cflags(XDPFWD_PIN_DIR=pin_dir),
        label="the XDP tracepoint programs",
    )
