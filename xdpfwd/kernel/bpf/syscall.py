"""Thin ctypes wrapper around bpf(2): maps, pins, object info, test runs.

Everything after compilation goes through here instead of libbcc, so a CLI call that
only reads or writes pinned state never loads BCC and LLVM.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_NEXT_ID = 11
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_GET_NEXT_ID = 31
BPF_ENABLE_STATS = 32

BPF_STATS_RUN_TIME = 0

# enum bpf_map_type (the ones xdpfwd names)
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_ARRAY_OF_MAPS = 12
MAP_TYPE_HASH_OF_MAPS = 13
MAP_TYPE_DEVMAP = 14
MAP_TYPE_DEVMAP_HASH = 25

# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_OBJ_NAME_LEN = 16

# enum bpf_prog_type (the ones xdpfwd loads)
PROG_TYPE_XDP = 6
PROG_TYPE_RAW_TRACEPOINT = 17
PROG_TYPE_TRACING = 26
PROG_TYPE_SK_LOOKUP = 30
# enum bpf_attach_type: BPF_XDP_DEVMAP, a devmap entry's (egress) program;
# BPF_TRACE_RAW_TP, a tracing program on a tracepoint whose arguments BTF types (tp_btf)
ATTACH_XDP_DEVMAP = 33
ATTACH_TRACE_RAW_TP = 23
ATTACH_SK_LOOKUP = 36
# enum bpf_link_type
BPF_LINK_TYPE_RAW_TRACEPOINT = 1
BPF_LINK_TYPE_NETNS = 5
# prog_flags: the program handles multi-buffer frames (Linux 5.18+)
BPF_F_XDP_HAS_FRAGS = 1 << 5


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


class _RawTracepointAttr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_uint64),
        ("prog_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class _GetIdAttr(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        # Up to the run statistics, which the kernel keeps while they are enabled.
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
    ]


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _RawTracepointLinkInfo(ctypes.Structure):
    _fields_ = [
        ("tp_name", ctypes.c_uint64),  # a buffer we provide
        ("tp_name_len", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _NetnsLinkInfo(ctypes.Structure):
    _fields_ = [("netns_ino", ctypes.c_uint32), ("attach_type", ctypes.c_uint32)]


class _LinkInfoUnion(ctypes.Union):
    _fields_ = [("raw_tracepoint", _RawTracepointLinkInfo), ("netns", _NetnsLinkInfo)]


class _LinkInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("u", _LinkInfoUnion),
    ]


class ProgLoadError(OSError):
    """BPF_PROG_LOAD failed; log holds the verifier's log (may be empty)."""

    def __init__(self, err: int, what: str, log: str):
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.log = log

    def reason(self) -> str | None:
        """The verifier's last line that says what is wrong; None when the log holds
        only its statistics (the program was refused after verification). Not a
        statistics line, nor a trace of what it walked: instructions and register
        states (`12: ...`, `from 12 to 8: ...`), source lines, the two states it
        compares after `infinite loop detected`."""
        lines = [line.strip() for line in self.log.splitlines() if line.strip()]
        useful = [line for line in lines if not _VERIFIER_TRACE.match(line)]
        return useful[-1] if useful else None


_VERIFIER_TRACE = re.compile(
    r"processed |verification time|stack depth|cur state:|old state:|;|\d+: |from \d+ to \d+:"
)


@dataclass(frozen=True)
class MapInfo:
    map_type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    name: str


@dataclass(frozen=True)
class ProgInfo:
    prog_type: int
    id: int
    name: str


@dataclass(frozen=True)
class ProgRuns:
    """A program's runs and the time they took, counted while run statistics are on."""

    name: str
    runs: int
    run_time_ns: int


@dataclass(frozen=True)
class LinkInfo:
    link_type: int
    id: int
    prog_id: int
    tracepoint: str | None = None  # of a raw tracepoint link
    # Of a network namespace link: its namespace's inode, 0 once that namespace is gone.
    netns_inode: int | None = None


@lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown for {platform.machine()}")
    ret = _libc().syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        failure = OSError(err, f"{what}: {os.strerror(err)}")  # FileNotFoundError for ENOENT...
        failure.bpf_call = what  # what the CLI names when nothing handled it
        raise failure
    return ret


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    name: str,
    flags: int = 0,
    inner_map_fd: int = 0,
) -> int:
    attr = _MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        inner_map_fd=inner_map_fd,
        map_name=name.encode()[: BPF_OBJ_NAME_LEN - 1],
    )
    return _bpf(BPF_MAP_CREATE, attr, f"create map {name}")


def _buf(data: bytes | None, size: int):
    buf = ctypes.create_string_buffer(size)
    if data is not None:
        ctypes.memmove(buf, data, min(len(data), size))
    return buf


def prog_load(
    prog_type: int,
    insns: bytes,
    name: str,
    expected_attach_type: int = 0,
    prog_flags: int = 0,
    log_size: int = 1 << 20,
    attach_btf_id: int = 0,
) -> int:
    """Load raw instructions; return the program fd. Raises ProgLoadError.

    The verifier's log is asked for only on a second try after a failure: logging
    slows every successful load down.
    """
    ibuf, lic = _buf(insns, len(insns)), ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(ibuf),
        license=ctypes.addressof(lic),
        prog_flags=prog_flags,
        prog_name=name.encode()[: BPF_OBJ_NAME_LEN - 1],
        expected_attach_type=expected_attach_type,
        attach_btf_id=attach_btf_id,
    )
    what = f"load program {name}"
    try:
        return _bpf(BPF_PROG_LOAD, attr, what)
    except OSError as first:
        failure = first
    logbuf = ctypes.create_string_buffer(log_size)
    attr.log_level, attr.log_size, attr.log_buf = 1, log_size, ctypes.addressof(logbuf)
    try:
        return _bpf(BPF_PROG_LOAD, attr, what)  # it loads after all: fine
    except OSError:
        pass
    raise ProgLoadError(failure.errno, what, logbuf.value.decode(errors="replace"))


@lru_cache(maxsize=1)
def frags_supported() -> bool:
    """Whether XDP programs may be multi-buffer (BPF_F_XDP_HAS_FRAGS, Linux 5.18+):
    loads a two-instruction program with the flag, once per process."""
    code = insn(0xB7, imm=2) + insn(0x95)  # r0 = XDP_PASS; exit
    try:
        fd = prog_load(PROG_TYPE_XDP, code, "xdpfwd_probe", prog_flags=BPF_F_XDP_HAS_FRAGS)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.E2BIG):
            return False  # an older kernel refuses the unknown flag
        raise
    os.close(fd)
    return True


def raw_tracepoint_open(prog_fd: int, tracepoint: str, typed: bool = False) -> int:
    """Attach a raw tracepoint program (e.g. to "xdp_devmap_xmit"), or a typed one
    (tp_btf: its tracepoint was fixed at load); return the bpf_link fd. Pinned, the
    link keeps the program attached after the process exits; it ends when its last
    fd and pin are gone."""
    nbuf = ctypes.create_string_buffer(tracepoint.encode())
    attr = _RawTracepointAttr(name=0 if typed else ctypes.addressof(nbuf), prog_fd=prog_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"attach to raw tracepoint {tracepoint}")


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """Attach a program to a target (a network namespace fd for ATTACH_SK_LOOKUP);
    return the bpf_link fd."""
    attr = _LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type)
    return _bpf(BPF_LINK_CREATE, attr, f"create link of attach type {attach_type}")


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction (struct bpf_insn)."""
    return struct.pack("=BBhi", code, src << 4 | dst, off, imm)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Return the value stored under key, or None when there is none."""
    kbuf, vbuf = _buf(key, len(key)), _buf(None, value_size)
    attr = _ElemAttr(map_fd=fd, key=ctypes.addressof(kbuf), value=ctypes.addressof(vbuf))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, "map lookup")
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return vbuf.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    kbuf, vbuf = _buf(key, len(key)), _buf(value, len(value))
    attr = _ElemAttr(
        map_fd=fd, key=ctypes.addressof(kbuf), value=ctypes.addressof(vbuf), flags=flags
    )
    _bpf(BPF_MAP_UPDATE_ELEM, attr, "map update")


def map_delete(fd: int, key: bytes) -> bool:
    """Delete key; return False when it was not there."""
    kbuf = _buf(key, len(key))
    attr = _ElemAttr(map_fd=fd, key=ctypes.addressof(kbuf))
    try:
        _bpf(BPF_MAP_DELETE_ELEM, attr, "map delete")
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """All keys of a map (a snapshot; entries may change meanwhile)."""
    keys: list[bytes] = []
    prev = None
    while True:
        kbuf = _buf(prev, key_size) if prev is not None else None
        nbuf = _buf(None, key_size)
        attr = _ElemAttr(
            map_fd=fd,
            key=ctypes.addressof(kbuf) if kbuf is not None else 0,
            value=ctypes.addressof(nbuf),
        )
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, attr, "map next key")
        except OSError as e:
            if e.errno == errno.ENOENT:
                return keys
            raise
        prev = nbuf.raw
        keys.append(prev)


def obj_pin(fd: int, path: str) -> None:
    pbuf = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _ObjAttr(pathname=ctypes.addressof(pbuf), bpf_fd=fd), f"pin {path}")


def obj_get(path: str) -> int:
    """Open a pinned object; raises FileNotFoundError when nothing is pinned there."""
    pbuf = ctypes.create_string_buffer(os.fsencode(path))
    try:
        return _bpf(BPF_OBJ_GET, _ObjAttr(pathname=ctypes.addressof(pbuf)), f"open pin {path}")
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, f"nothing pinned at {path}") from None
        raise


def fd_kind(fd: int) -> str:
    """What fd is: "map", "prog" or "link" for a BPF object, else what /proc says
    (the kernel does not tell them apart otherwise)."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    return (
        target.removeprefix("anon_inode:bpf-") if target.startswith("anon_inode:bpf-") else target
    )


def pinned_kind(path: str) -> tuple[str, str]:
    """What is pinned at path: ("map" or "prog" or "link", the object's name).

    Raises FileNotFoundError, or OSError when path holds no BPF object.
    """
    fd = obj_get(path)
    try:
        kind = fd_kind(fd)
        if kind == "map":
            return kind, map_info(fd).name
        if kind == "prog":
            return kind, prog_info(fd).name
        return kind, ""
    finally:
        os.close(fd)


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _GetIdAttr(id=prog_id), f"open program id {prog_id}")


def link_fd_by_id(link_id: int) -> int:
    return _bpf(BPF_LINK_GET_FD_BY_ID, _GetIdAttr(id=link_id), f"open link id {link_id}")


def _next_id(cmd: int, what: str, after: int) -> int:
    attr = _GetIdAttr(id=after)
    try:
        _bpf(cmd, attr, f"next {what} id")
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, f"no more {what}s") from None
        raise
    return attr.next_id


def next_link_id(link_id: int) -> int:
    """The id of the first bpf_link after link_id; raises FileNotFoundError at the end."""
    return _next_id(BPF_LINK_GET_NEXT_ID, "link", link_id)


def next_prog_id(prog_id: int) -> int:
    """The id of the first program after prog_id; raises FileNotFoundError at the end."""
    return _next_id(BPF_PROG_GET_NEXT_ID, "program", prog_id)


def each_opened(
    next_id: Callable[[int], int], fd_by_id: Callable[[int], int]
) -> Iterator[tuple[int, int]]:
    """(id, fd) of every object next_id walks (next_link_id, next_prog_id) that is
    still there when opened by fd_by_id; each fd is closed when the next is asked for."""
    obj_id = 0
    while True:
        try:
            obj_id = next_id(obj_id)
        except FileNotFoundError:
            return
        try:
            fd = fd_by_id(obj_id)
        except OSError:
            continue  # gone meanwhile
        try:
            yield obj_id, fd
        finally:
            os.close(fd)


def enable_run_time_stats() -> int:
    """An fd that keeps the kernel counting every program's runs and run time while it
    is open (Linux 5.8+; the sysctl kernel.bpf_stats_enabled, without leaving it on)."""
    return _bpf(BPF_ENABLE_STATS, _EnableStatsAttr(type=BPF_STATS_RUN_TIME), "enable run stats")


def map_fd_by_id(map_id: int) -> int:
    return _bpf(BPF_MAP_GET_FD_BY_ID, _GetIdAttr(id=map_id), f"open map id {map_id}")


def _info(fd: int, info: ctypes.Structure) -> None:
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "object info")


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    _info(fd, info)
    return MapInfo(
        info.type, info.id, info.key_size, info.value_size, info.max_entries, info.name.decode()
    )


def prog_info(fd: int) -> ProgInfo:
    info = _ProgInfo()
    _info(fd, info)
    return ProgInfo(info.type, info.id, info.name.decode())


def prog_runs(fd: int) -> ProgRuns:
    info = _ProgInfo()
    _info(fd, info)
    return ProgRuns(info.name.decode(), info.run_cnt, info.run_time_ns)


def prog_map_ids(fd: int) -> list[int]:
    """The ids of the maps a program uses."""
    info = _ProgInfo()
    _info(fd, info)  # nr_map_ids: how many there are
    ids = (ctypes.c_uint32 * info.nr_map_ids)()
    info = _ProgInfo(nr_map_ids=len(ids), map_ids=ctypes.addressof(ids))
    _info(fd, info)
    return list(ids[: info.nr_map_ids])


def link_info(fd: int) -> LinkInfo:
    name = ctypes.create_string_buffer(64)
    info = _LinkInfo()
    info.u.raw_tracepoint.tp_name, info.u.raw_tracepoint.tp_name_len = ctypes.addressof(name), 64
    _info(fd, info)
    if info.type == BPF_LINK_TYPE_RAW_TRACEPOINT:
        return LinkInfo(info.type, info.id, info.prog_id, tracepoint=name.value.decode())
    if info.type == BPF_LINK_TYPE_NETNS:
        return LinkInfo(info.type, info.id, info.prog_id, netns_inode=info.u.netns.netns_ino)
    return LinkInfo(info.type, info.id, info.prog_id)


def prog_test_run(
    prog_fd: int, data: bytes, repeat: int, ctx: bytes = b"", flags: int = 0, batch_size: int = 0
) -> tuple[int, int]:
    """Run a program on data `repeat` times; return (retval, duration in ns per run)."""
    dbuf = _buf(data, len(data))
    cbuf = _buf(ctx, len(ctx)) if ctx else None
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(data),
        data_in=ctypes.addressof(dbuf),
        repeat=repeat,
        ctx_size_in=len(ctx),
        ctx_in=ctypes.addressof(cbuf) if cbuf is not None else 0,
        flags=flags,
        batch_size=batch_size,
    )
    _bpf(BPF_PROG_TEST_RUN, attr, "program test run")
    return attr.retval, attr.duration


@lru_cache(maxsize=1)
def possible_cpus() -> int:
    """Number of per-CPU slots in a per-CPU map value (the kernel's possible CPUs)."""
    with open("/sys/devices/system/cpu/possible") as f:
        count = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            count += int(hi or lo) - int(lo) + 1
    return count
