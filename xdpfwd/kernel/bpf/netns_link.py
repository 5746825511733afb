"""The pin that ties a pin dir to the network namespace whose ports it serves.

It is a bpf_link of a network namespace: the kernel reports that namespace's inode
while it lives, by whatever it is held (a name, a process, a thread, an open fd, a
socket, a bind mount in any mount namespace), and 0 once it is gone. No user-space
search can see every holder, and an inode alone cannot tell a namespace from the next
one, which the kernel gives the same inode.

The link needs a program: an sk_lookup one that returns SK_PASS without choosing a
socket, so sockets are found as they would be without it. It runs when the kernel
looks up a listening TCP or an unconnected UDP socket for a packet arriving in that
namespace, never for forwarded frames.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

from xdpfwd.kernel.bpf import syscall as sc

PROG_NAME = "xdpfwd_netns"
EARLIER_MAP_NAME = "xdpfwd_netns"  # the map an earlier version recorded the namespace in
_SK_PASS = 1
# Kernels before sk_lookup (5.9) refuse the program or the link with these.
_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, 524)  # 524: the kernel's ENOTSUPP
MAX_PER_NETNS = 64  # sk_lookup programs a namespace takes (the kernel's limit, E2BIG)


def pin(path: str) -> bool:
    """Pin a link to this thread's network namespace at path; False when the kernel
    has no network namespace links. Raises FileExistsError if path is taken, OSError."""
    code = sc.insn(0xB7, imm=_SK_PASS) + sc.insn(0x95)  # r0 = SK_PASS; exit
    try:
        prog = sc.prog_load(
            sc.PROG_TYPE_SK_LOOKUP, code, PROG_NAME, expected_attach_type=sc.ATTACH_SK_LOOKUP
        )
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise
    try:
        netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            link = sc.link_create(prog, netns, sc.ATTACH_SK_LOOKUP)
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                return False
            raise
        finally:
            os.close(netns)
        try:
            sc.obj_pin(link, path)
        finally:
            os.close(link)
    finally:
        os.close(prog)
    return True


@dataclass(frozen=True)
class Pinned:
    """What a pin dir's namespace pin holds."""

    kind: str  # "none", "link" (xdpfwd's), "earlier" (an earlier version's map), "foreign"
    inode: int = 0  # the namespace's (a link's reads 0 once the namespace is gone)
    cookie: int = 0  # an earlier record's SO_NETNS_COOKIE (0: recorded without one)


_EARLIER = struct.Struct("=QQ")  # the earlier version's record: inode, cookie


def read(path: str) -> Pinned:
    """What is pinned at path. Raises PermissionError when this process may not open
    it. A link's program is told by its name only where this process may open it
    (CAP_SYS_ADMIN): a reader without takes a namespace link for xdpfwd's, which
    serves to refuse it when it is another namespace's; changes and removals, which
    need the capability, tell."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return Pinned("foreign")  # a directory, a symbolic link: pins are neither
        fd = sc.obj_get(path)
    except FileNotFoundError:
        return Pinned("none")
    try:
        kind = sc.fd_kind(fd)
        if kind == "link":
            info = sc.link_info(fd)
            if info.link_type == sc.BPF_LINK_TYPE_NETNS and _prog_name(info.prog_id) in (
                PROG_NAME,
                None,
            ):
                return Pinned("link", info.netns_inode or 0)
        elif kind == "map":
            info = sc.map_info(fd)
            if info.name == EARLIER_MAP_NAME and info.value_size in (8, _EARLIER.size):
                raw = sc.map_lookup(fd, bytes(4), info.value_size) or bytes(info.value_size)
                inode, cookie = _EARLIER.unpack(raw.ljust(_EARLIER.size, b"\0"))
                return Pinned("earlier", inode, cookie)
        return Pinned("foreign")
    finally:
        os.close(fd)


def _prog_name(prog_id: int) -> str | None:
    """The program's name; None where this process may not open it."""
    try:
        fd = sc.prog_fd_by_id(prog_id)
    except FileNotFoundError:
        return ""
    except PermissionError:
        return None
    try:
        return sc.prog_info(fd).name
    finally:
        os.close(fd)
