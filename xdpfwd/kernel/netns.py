"""Named network namespaces (/run/netns): create, remove, and run code inside one.

Done in this process and thread, never in a forked helper (as pyroute2 would): a
helper that is a copy of xdpfwd could be hit by a signal and run xdpfwd's rollback,
and Python drops a Ctrl-C that arrives during a fork.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache

from xdpfwd.errors import InputError, PrereqError
from xdpfwd.kernel import prereqs

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2


@lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


def check_name(name: str) -> None:
    """Raises InputError unless name can be a namespace name (and part of a pin path)."""
    if not _NAME.match(name) or name in (".", ".."):
        raise InputError(f"network namespace name {name!r}: letters, digits and . _ + -")


def path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _share_run_dir() -> None:
    """Make /run/netns a shared mount, so namespaces bound there show in every mount
    namespace (what `ip netns add` does)."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    libc = _libc()
    run_dir = NETNS_RUN_DIR.encode()
    if libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None), "mount /run/netns")
    _check(libc.mount(b"", run_dir, b"none", MS_SHARED | MS_REC, None), "share /run/netns")


def create(name: str) -> None:
    """Create a named network namespace. Raises FileExistsError if it exists."""
    _share_run_dir()
    target = path(name)
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        # unshare() moves only this thread; the bind mount keeps the namespace alive.
        # Back home whatever happens once it may have moved, an interrupt included.
        try:
            _check(_libc().unshare(CLONE_NEWNET), "unshare")
            _check(
                _libc().mount(b"/proc/thread-self/ns/net", target.encode(), b"none", MS_BIND, None),
                f"bind {target}",
            )
        finally:
            _setns(home)
    except BaseException:
        remove(name)  # mounted or not: an interrupt may come between the two
        raise
    finally:
        os.close(home)


def remove(name: str) -> None:
    """Remove a namespace; its devices go with it, in the background."""
    target = path(name)
    if _libc().umount2(target.encode(), MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass


def current_inode() -> int:
    """The inode of the calling thread's network namespace (what tells namespaces
    apart, as `ls -i /proc/self/ns/net` shows it)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


INIT_NET_INODE = 0xEFFFFFF9  # PROC_NET_INIT_INO: the initial namespace's, always


def initial_path() -> str | None:
    """A file of the initial namespace this process can open: pid 1's or, where that
    is closed to it (a sandbox's init), another process's there, such as a kernel
    thread's. None when there is none."""
    pids = sorted((int(p) for p in os.listdir("/proc") if p.isdigit()), key=lambda p: p != 1)
    for pid in pids:
        where = f"/proc/{pid}/ns/net"
        try:
            fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # gone, or closed to this process
        try:
            if os.fstat(fd).st_ino == INIT_NET_INODE:
                return where
        finally:
            os.close(fd)
    return None


SO_NETNS_COOKIE = 71  # <asm-generic/socket.h>, Linux 5.14+


def current_cookie() -> int:
    """The calling thread's namespace's cookie, which the kernel never gives to another
    namespace (0 before Linux 5.14)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
        except OSError:
            return 0


def is_current(name: str) -> bool:
    """Whether name, under /run/netns, is the calling thread's namespace (one of its
    names, if it has several)."""
    try:
        return "/" not in name and os.stat(path(name)).st_ino == current_inode()
    except OSError:
        return False


def name_of(inode: int) -> str | None:
    """The name under /run/netns of the live namespace of inode, if it has one."""
    for name in names():
        with suppress(OSError):
            if os.stat(path(name)).st_ino == inode:
                return name
    return None


def current_name() -> str | None:
    """The calling thread's namespace's name under /run/netns, if it has one."""
    return name_of(current_inode())


def still_named(name: str) -> bool:
    """Whether /run/netns/name is still the calling thread's namespace (`ip netns del`
    removes the name; whoever runs in the namespace keeps it alive)."""
    try:
        return os.stat(path(name)).st_ino == current_inode()
    except OSError:
        return False


def describe(inode: int) -> str:
    """A live network namespace as a user knows it: by name when it has one."""
    if inode == INIT_NET_INODE:
        return "the initial network namespace"
    name = name_of(inode)
    return f"network namespace {name}" if name else f"the network namespace of inode {inode}"


def _setns(fd: int) -> None:
    _check(_libc().setns(fd, CLONE_NEWNET), "setns")


def enter(name: str) -> None:
    """Move this thread into the named namespace.

    Raises InputError if it is unknown, or its /run/netns entry is not a namespace
    (left behind when a namespace was not removed with `ip netns del`), PrereqError
    without CAP_SYS_ADMIN. Unlike pyroute2's setns() this never creates a namespace
    on a typo.
    """
    target = path(name)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise InputError(f"no such network namespace: {name}") from None
    except OSError as e:
        raise InputError(f"network namespace {name}: {target}: {e.strerror}") from None
    try:
        prereqs.require_privileges("--netns")
        _setns(fd)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise InputError(
                f"{target} is not a network namespace (a stale entry; `ip netns del {name}` "
                "removes it)"
            ) from None
        if e.errno == errno.EPERM:
            raise PrereqError(
                f"entering network namespace {name} needs CAP_SYS_ADMIN: {e.strerror}"
            ) from None
        raise
    finally:
        os.close(fd)


# Where --netns moved this process: the user runs the commands xdpfwd gives as fixes
# from the shell xdpfwd was started in.
_moved_to: str | None = None


def move(name: str) -> None:
    """enter(name) for the rest of the process (--netns)."""
    global _moved_to
    enter(name)
    _moved_to = name


def as_run_from_the_shell(command: str) -> str:
    """A shell command for a device of this process's namespace, as the user runs it:
    inside `ip netns exec NAME` when --netns moved xdpfwd there."""
    return f"ip netns exec {_moved_to} {command}" if _moved_to else command


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body inside the named namespace, then come back. Sockets opened in
    the body stay in that namespace."""
    with _returning():
        enter(name)
        yield


@contextmanager
def entered_path(where: str) -> Iterator[None]:
    """Like entered(), for a namespace file (/proc/PID/ns/net, /run/netns/NAME)."""
    fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered_fd(fd):
            yield
    finally:
        os.close(fd)


@contextmanager
def entered_fd(fd: int) -> Iterator[None]:
    """Like entered(), for the namespace an open nsfs fd refers to."""
    with _returning():
        _setns(fd)
        yield


@contextmanager
def _returning() -> Iterator[None]:
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        yield
    finally:
        try:
            _setns(home)
        finally:
            os.close(home)
