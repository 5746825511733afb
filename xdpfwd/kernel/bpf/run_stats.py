"""Every program's runs and run time, as the kernel counts them while run statistics
are enabled, and which programs are this process's (`bench --profile`)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from xdpfwd.errors import PrereqError
from xdpfwd.kernel.bpf import syscall as sc

_DEVMAP_VAL = struct.Struct("=II")  # ifindex, program id


@contextmanager
def enabled() -> Iterator[None]:
    """Run statistics on for the block, as they were after it (raises PrereqError)."""
    try:
        fd = sc.enable_run_time_stats()
    except OSError as e:
        raise PrereqError(
            f"cannot turn on BPF run statistics: {e.strerror} (BPF_ENABLE_STATS, Linux 5.8+)"
        ) from e
    try:
        yield
    finally:
        os.close(fd)


def read() -> dict[int, sc.ProgRuns]:
    """Every loaded program's runs so far, by program id."""
    return {i: sc.prog_runs(fd) for i, fd in sc.each_opened(sc.next_prog_id, sc.prog_fd_by_id)}


def programs_held_or_pinned(top: str) -> set[int]:
    """The ids of the programs this process holds (an fd of the program or of a link
    to it), and of those pinned under directory top, or whose links are, or that the
    entries of its devmaps run (egress programs): to tell them from other processes'
    programs of the same names."""
    ids = {_program_of(int(fd)) for fd in os.listdir("/proc/self/fd")}
    for directory, _, names in os.walk(top):
        for name in names:
            try:
                fd = sc.obj_get(os.path.join(directory, name))
            except OSError:
                continue  # unpinned since, or no BPF object
            try:
                ids.add(_program_of(fd))
                if sc.fd_kind(fd) == "map":
                    ids.update(_egress_programs(fd))
            finally:
                os.close(fd)
    ids.discard(None)
    ids.discard(0)
    return ids


def _egress_programs(fd: int) -> set[int]:
    """The programs the entries of map fd run, if it is a devmap (struct
    bpf_devmap_val: ifindex, then the program's id as the kernel reads it back)."""
    info = sc.map_info(fd)
    if info.map_type not in (sc.MAP_TYPE_DEVMAP, sc.MAP_TYPE_DEVMAP_HASH):
        return set()
    if info.value_size != _DEVMAP_VAL.size:
        return set()
    values = (sc.map_lookup(fd, key, info.value_size) for key in sc.map_keys(fd, info.key_size))
    return {_DEVMAP_VAL.unpack(value)[1] for value in values if value is not None}


def _program_of(fd: int) -> int | None:
    try:
        kind = sc.fd_kind(fd)
    except OSError:
        return None  # closed since (the listing's own fd)
    if kind == "prog":
        return sc.prog_info(fd).id
    if kind == "link":
        return sc.link_info(fd).prog_id
    return None
