"""Compiling with BCC: the only module that imports bcc, and only when it must compile."""

from __future__ import annotations

import logging
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from xdpfwd import progress
from xdpfwd.errors import BpfError, PrereqError
from xdpfwd.kernel import prereqs
from xdpfwd.kernel.bpf import btf, source
from xdpfwd.kernel.bpf import syscall as sc

log = logging.getLogger(__name__)

XDP_INGRESS_FUNC = "xdpfwd_ingress"
XDP_EGRESS_FUNC = "xdpfwd_egress"
XDP_REWRITE_FUNC = "xdpfwd_egress_rewrite"
XDP_GROUP_FUNC = "xdpfwd_egress_group"
XDP_MCAST_FUNC = "xdpfwd_egress_mcast"
PROG_XDP = sc.PROG_TYPE_XDP


class Kind(NamedTuple):
    """What a compiled function is loaded as: BPF_PROG_LOAD's type and attach target."""

    prog_type: int
    attach_type: int = 0
    attach_btf_id: int = 0  # the kernel BTF type a tracing program attaches to


XDP = Kind(PROG_XDP)
XDP_DEVMAP = Kind(PROG_XDP, sc.ATTACH_XDP_DEVMAP)  # a devmap entry's egress program
# The tracepoint programs of xdpfwd_trace.c, by the tracepoint each attaches to
# (names within the kernel's 15 characters).
TRACE_FUNCS = {
    "xdp_devmap_xmit": "xdpfwd_tp_xmit",
    "xdp_redirect_err": "xdpfwd_tp_rerr",
    "xdp_exception": "xdpfwd_tp_exc",
}


# The helper number the C calls for bpf_cast_to_kern_ctx() (xdpfwd_bcc.h): BCC cannot
# emit a kfunc call, so xdpfwd rewrites these calls into one before loading.
KERN_CTX_CALL = 0x7FFF0001
_CALL = 0x85  # BPF_JMP | BPF_CALL
_PSEUDO_KFUNC_CALL = 2


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
    """The compiler's first error; where it is in the wrapper after a user's file, a
    note in that file says why (a brace it leaves open): the note's error with it."""
    lines = [line.strip() for line in lines]
    first = next((line for line in lines if "error:" in line), None)
    if first is None or not first.startswith(source.WRAPPER + ":"):
        return first
    ours = (source.WRAPPER + ":", str(source.bpf_source_dir()))
    for i, line in enumerate(lines):
        if "note:" in line and not line.startswith(ours):
            error = next((e for e in reversed(lines[:i]) if "error:" in e), first)
            return f"{error} ({line})"
    return first


def compile_programs(
    text: str,
    funcs: dict[str, Kind],
    cflags: list[str],
    label: str | None = None,
    prog_flags: int = 0,
) -> dict[str, int]:
    """Compile C text with BCC and load each function of funcs as a program.

    funcs maps a function to what it is loaded as. Every program is loaded with
    prog_flags, by xdpfwd's own BPF_PROG_LOAD of the instructions BCC compiled (BCC
    cannot set the flags, nor load tp_btf programs):
    nothing else loads them first, since a devmap keeps the flags of the first
    program that uses it. Returns a program fd per function. Maps declared in pinned
    sections are created and pinned (or adopted) by BCC. Raises PrereqError when BCC
    or kernel headers are missing, BpfError when the compile or a load fails.
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
            try:
                for func, kind in funcs.items():
                    insns = _with_kfunc_calls(bpf.dump_func(func.encode()))
                    fds[func] = sc.prog_load(
                        kind.prog_type,
                        insns,
                        func,
                        kind.attach_type,
                        prog_flags,
                        attach_btf_id=kind.attach_btf_id,
                    )
            finally:
                bpf.cleanup()
        except Exception as e:  # BCC raises bare Exception for compile errors
            failure = e
    for line in output:
        log.debug("bcc: %s", line)
    if failure is not None:
        for fd in fds.values():
            os.close(fd)
        if any("Unable to find kernel headers" in line for line in output):
            raise PrereqError(prereqs.missing_headers_message()) from failure
        if isinstance(failure, sc.ProgLoadError):
            log.debug("verifier log:\n%s", failure.log)
            raise BpfError(f"loading {label} failed: {_load_reason(failure)}") from failure
        reason = _first_error(output) or str(failure).strip()
        raise BpfError(f"compiling {label} failed: {reason}") from failure
    return fds


def _with_kfunc_calls(insns: bytes) -> bytes:
    """insns with each call of helper KERN_CTX_CALL made a call of the kfunc
    bpf_cast_to_kern_ctx (the C calls it only when frags_defines() said the kernel has it)."""
    placeholder = struct.pack("=B", _CALL), struct.pack("=i", KERN_CTX_CALL)
    out = bytearray(insns)
    for at in range(0, len(out), 8):
        if out[at : at + 1] == placeholder[0] and out[at + 4 : at + 8] == placeholder[1]:
            func_id = _kernel_btf(lambda kernel: kernel.func_id("bpf_cast_to_kern_ctx"))
            out[at : at + 8] = sc.insn(_CALL, src=_PSEUDO_KFUNC_CALL, imm=func_id)
    return bytes(out)


def _load_reason(e: sc.ProgLoadError) -> str:
    reason = e.reason()
    if reason is not None:
        return reason
    if e.log:
        # Verified, then refused: a map it uses belongs to programs of other flags.
        return (
            f"{os.strerror(e.errno)} after verification (a devmap it uses serves programs "
            "loaded with other flags, such as BPF_F_XDP_HAS_FRAGS)"
        )
    return os.strerror(e.errno)


def xdp_prog_flags(frags: bool) -> int:
    return sc.BPF_F_XDP_HAS_FRAGS if frags else 0


def frags_defines(frags: bool) -> dict[str, int]:
    """The C defines for XDP programs loaded with (or without) frags: how they learn a
    frame's length (XDPFWD_FRAME_LEN in xdpfwd_bcc.h). Multi-buffer programs test the
    struct xdp_buff's frags flag when the kernel has bpf_cast_to_kern_ctx (6.2+) and
    BTF to find it by; otherwise they call bpf_xdp_get_buff_len() for every frame."""
    defines = {"XDPFWD_FRAGS": int(frags)}
    if not frags:
        return defines
    try:
        kernel = btf.vmlinux()
        kernel.func_id("bpf_cast_to_kern_ctx")
        defines |= {
            "XDPFWD_KERN_CTX": 1,
            "XDPFWD_KERN_CTX_CALL": KERN_CTX_CALL,
            "XDPFWD_XDP_BUFF_FLAGS_OFF": kernel.offset("xdp_buff", "flags"),
            "XDPFWD_XDP_FLAGS_HAS_FRAGS": kernel.enumerator("XDP_FLAGS_HAS_FRAGS"),
        }
    except btf.BtfError as e:
        log.info("frame lengths by helper call: %s", e)
    return defines


def compile_ingress(pin_dir: str, value_size: int, frags: bool) -> dict[str, int]:
    """Compile the ingress program (and, for bpf_devmap_val entries, the built-in
    egress programs) against the maps pinned, or to pin, under pin_dir; multi-buffer
    programs with frags."""
    funcs = {XDP_INGRESS_FUNC: XDP}
    if value_size == 8:
        funcs |= dict.fromkeys(
            (XDP_EGRESS_FUNC, XDP_REWRITE_FUNC, XDP_GROUP_FUNC, XDP_MCAST_FUNC), XDP_DEVMAP
        )
    return compile_programs(
        source.ingress_text(with_egress=value_size == 8),
        funcs,
        source.cflags(
            XDPFWD_PIN_DIR=pin_dir, XDPFWD_FWD_VALUE_SIZE=value_size, **frags_defines(frags)
        ),
        prog_flags=xdp_prog_flags(frags),
    )


def compile_user_egress(
    pin_dir: str, user_text: str, file_name: str, func: str, frags: bool
) -> int:
    """Compile a user's egress function wrapped with xdpfwd's entry counters."""
    fds = compile_programs(
        source.user_egress_text(user_text, file_name, func),
        {func: XDP_DEVMAP},
        source.cflags(XDPFWD_PIN_DIR=pin_dir, XDPFWD_FWD_VALUE_SIZE=8, **frags_defines(frags)),
        label=f"{file_name}:{func}",
        prog_flags=xdp_prog_flags(frags),
    )
    return fds[func]


def _kernel_btf(what):
    """what(the running kernel's BTF); PrereqError when the kernel has none."""
    try:
        return what(btf.vmlinux())
    except btf.BtfError as e:
        raise PrereqError(
            f"the kernel's BTF is unusable ({e}); loss accounting needs a kernel built "
            "with CONFIG_DEBUG_INFO_BTF"
        ) from e


def trace_offsets() -> dict[str, int]:
    """The kernel struct offsets the tracepoint programs read, from the running
    kernel's BTF. Raises PrereqError when the kernel has no BTF."""
    return _kernel_btf(
        lambda kernel: {
            "XDPFWD_NETDEV_IFINDEX_OFF": kernel.offset("net_device", "ifindex"),
            "XDPFWD_NETDEV_NET_OFF": kernel.offset("net_device", "nd_net"),
            "XDPFWD_NET_INUM_OFF": kernel.offset("net", "ns.inum"),
            "XDPFWD_DTAB_NETDEV_DEV_OFF": kernel.offset("bpf_dtab_netdev", "dev"),
        }
    )


def trace_kinds() -> dict[str, Kind]:
    """Each tracepoint program as a tp_btf program of its tracepoint: the kernel's BTF
    types the tracepoint's arguments (typedef btf_trace_<tracepoint>)."""
    return _kernel_btf(
        lambda kernel: {
            func: Kind(
                sc.PROG_TYPE_TRACING,
                sc.ATTACH_TRACE_RAW_TP,
                kernel.typedef_id(f"btf_trace_{event}"),
            )
            for event, func in TRACE_FUNCS.items()
        }
    )


def compile_trace(pin_dir: str, netns_inum: int) -> dict[str, int]:
    """Compile the tracepoint programs that count transmit failures for the ports
    of pin_dir in the network namespace whose inode is netns_inum."""
    return compile_programs(
        source.program_text(source.STATS_SOURCE, source.PORTS_SOURCE, source.TRACE_SOURCE),
        trace_kinds(),
        source.cflags(XDPFWD_PIN_DIR=pin_dir, XDPFWD_NETNS_INUM=netns_inum, **trace_offsets()),
        label="the XDP tracepoint programs",
    )
