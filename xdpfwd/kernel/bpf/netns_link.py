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

from xdpfwd.kernel.bpf import syscall as sc

PROG_NAME = "xdpfwd_netns"
_SK_PASS = 1
# Kernels before sk_lookup (5.9) refuse the program or the link with these.
_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, 524)  # 524: the kernel's ENOTSUPP


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


def pinned_inode(path: str) -> int | None:
    """The inode of the namespace linked at path, 0 once it is gone; None when no link
    is pinned there (nothing, or the map an earlier version pinned in its place).
    Raises PermissionError when this process may not open it."""
    try:
        fd = sc.obj_get(path)
    except FileNotFoundError:
        return None
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:bpf-link":
            return None
        info = sc.link_info(fd)
    finally:
        os.close(fd)
    return info.netns_inode if info.link_type == sc.BPF_LINK_TYPE_NETNS else None
