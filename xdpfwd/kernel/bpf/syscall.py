"""Thin ctypes wrapper around bpf(2): maps, pins, object info, test runs.

Everything after compilation goes through here instead of libbcc, so a CLI call that
only reads or writes pinned state never loads BCC and LLVM.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
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
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15

# enum bpf_map_type (the ones xdpfwd names)
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_HASH_OF_MAPS = 13
MAP_TYPE_DEVMAP = 14
MAP_TYPE_DEVMAP_HASH = 25

# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_OBJ_NAME_LEN = 16


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
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
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
    ]


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
        raise OSError(err, f"{what}: {os.strerror(err)}")
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


def prog_load(prog_type: int, insns: bytes, name: str, expected_attach_type: int = 0) -> int:
    """Load raw instructions (for feature probes); returns the program fd."""
    ibuf, lic = _buf(insns, len(insns)), ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(ibuf),
        license=ctypes.addressof(lic),
        prog_name=name.encode()[: BPF_OBJ_NAME_LEN - 1],
        expected_attach_type=expected_attach_type,
    )
    return _bpf(BPF_PROG_LOAD, attr, f"load program {name}")


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


def pinned_kind(path: str) -> tuple[str, str]:
    """What is pinned at path: ("map" or "prog" or "link", the object's name).

    Raises FileNotFoundError, or OSError when path holds no BPF object.
    """
    fd = obj_get(path)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target == "anon_inode:bpf-map":
            return "map", map_info(fd).name
        if target == "anon_inode:bpf-prog":
            return "prog", prog_info(fd).name
        return "link" if target == "anon_inode:bpf_link" else target, ""
    finally:
        os.close(fd)


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _GetIdAttr(id=prog_id), f"open program id {prog_id}")


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
