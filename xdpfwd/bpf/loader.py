"""Compiling with BCC: the only module that imports bcc, and only when it must compile."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from .. import prereqs
from ..errors import BpfError, PrereqError
from . import source

log = logging.getLogger(__name__)

XDP_INGRESS_FUNC = "xdpfwd_ingress"
XDP_EGRESS_FUNC = "xdpfwd_egress"
XDP_REWRITE_FUNC = "xdpfwd_egress_rewrite"
XDP_GROUP_FUNC = "xdpfwd_egress_group"
ATTACH_XDP_DEVMAP = 33  # enum bpf_attach_type BPF_XDP_DEVMAP: a devmap entry's program


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


def compile_xdp(
    text: str, funcs: dict[str, int | None], cflags: list[str], label: str | None = None
) -> dict[str, int]:
    """Compile C text with BCC and load each function of funcs as an XDP program.

    funcs maps a function to its expected attach type (None for a plain XDP
    program). Returns a program fd per function. Maps declared in pinned sections
    are created and pinned (or adopted) by BCC. Raises PrereqError when BCC or
    kernel headers are missing, BpfError when the compile or a load fails.
    """
    prereqs.require_bcc()
    prereqs.require_kernel_headers()
    label = label or ", ".join(funcs)
    log.info("compiling %s with BCC", label)
    fds: dict[str, int] = {}
    failure = None
    with _captured_output() as output:
        try:
            from bcc import BPF

            bpf = BPF(text=text.encode(), cflags=cflags)
            for func, attach_type in funcs.items():
                extra = {} if attach_type is None else {"attach_type": attach_type}
                fds[func] = os.dup(bpf.load_func(func.encode(), BPF.XDP, **extra).fd)
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
    funcs: dict[str, int | None] = {XDP_INGRESS_FUNC: None}
    if value_size == 8:
        funcs |= dict.fromkeys(
            (XDP_EGRESS_FUNC, XDP_REWRITE_FUNC, XDP_GROUP_FUNC), ATTACH_XDP_DEVMAP
        )
    return compile_xdp(
        source.ingress_text(with_egress=value_size == 8),
        funcs,
        source.cflags(XDPFWD_PIN_DIR=pin_dir, XDPFWD_FWD_VALUE_SIZE=value_size),
    )


def compile_user_egress(pin_dir: str, user_text: str, file_name: str, func: str) -> int:
    """Compile a user's egress function wrapped with xdpfwd's entry counters."""
    fds = compile_xdp(
        source.user_egress_text(user_text, file_name, func),
        {func: ATTACH_XDP_DEVMAP},
        source.cflags(XDPFWD_PIN_DIR=pin_dir, XDPFWD_FWD_VALUE_SIZE=8),
        label=f"{file_name}:{func}",
    )
    return fds[func]
