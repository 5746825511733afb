"""Named network namespaces (/run/netns): create, remove, and run code inside one."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import netns as _pyroute2_netns

from .errors import InputError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


def path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    _pyroute2_netns.create(name)


def remove(name: str) -> None:
    """Remove a namespace; its devices go with it (a veth takes its peer along)."""
    if exists(name):
        _pyroute2_netns.remove(name)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter(name: str) -> None:
    """Move this process into the named namespace for good; raises InputError if unknown.

    Unlike pyroute2's setns() this never creates a namespace on a typo.
    """
    try:
        fd = os.open(path(name), os.O_RDONLY)
    except FileNotFoundError:
        raise InputError(f"no such network namespace: {name}") from None
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body inside the named namespace, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
