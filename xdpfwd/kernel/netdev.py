"""Network devices over rtnetlink (rtnl): lookup, XDP attach and detach, notifications."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from xdpfwd.errors import AttachError, InputError, PrereqError
from xdpfwd.kernel import netns as namespaces
from xdpfwd.kernel import rtnl
from xdpfwd.kernel.rtnl import NetlinkError

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

# The largest MTU whose frames fit in one page-sized XDP buffer on a veth: a page
# less XDP_PACKET_HEADROOM (256), struct skb_shared_info (320) and the Ethernet
# header; 3506 with 4 KB pages. Above it a program without BPF_F_XDP_HAS_FRAGS cannot
# attach natively, and a multi-buffer one sees longer frames in several buffers.
# (Other drivers split frames at sizes of their own.)
SINGLE_BUFFER_MTU = os.sysconf("SC_PAGE_SIZE") - 256 - 320 - 14


@dataclass(frozen=True)
class Link:
    ifindex: int
    ifname: str
    kind: str | None
    up: bool
    loopback: bool
    mtu: int
    xdp_prog_id: int  # 0 when no XDP program is attached
    xdp_mode: str | None  # native, generic or offload
    mac: str | None = None
    peer_ifindex: int = 0  # IFLA_LINK: a veth's peer (possibly in another netns)
    peer_netnsid: int | None = None
    operstate: str | None = None  # IFLA_OPERSTATE: UP, DOWN, LOWERLAYERDOWN, UNKNOWN...
    alias: str | None = None  # IFLA_IFALIAS (`ip link set DEV alias TEXT`)

    @property
    def live(self) -> bool:
        """Up and able to send: what a balanced entry spreads its flows over."""
        return self.up and self.operstate in (None, "UP", "UNKNOWN")


def parse_link(body: bytes) -> Link:
    """Build a Link from the body of an RTM_NEWLINK message (struct ifinfomsg, then
    attributes)."""
    _, _, index, flags, _ = rtnl.IFINFO.unpack_from(body)
    attrs = rtnl.parse_attrs(body, rtnl.IFINFO.size)
    kind = None
    if rtnl.IFLA_LINKINFO in attrs:
        kind = rtnl.as_str(rtnl.parse_attrs(attrs[rtnl.IFLA_LINKINFO]).get(rtnl.IFLA_INFO_KIND))
    prog_id, mode = _xdp_program(attrs.get(rtnl.IFLA_XDP))
    mac = attrs.get(rtnl.IFLA_ADDRESS)
    operstate = rtnl.as_int(attrs.get(rtnl.IFLA_OPERSTATE))
    return Link(
        ifindex=index,
        ifname=rtnl.as_str(attrs.get(rtnl.IFLA_IFNAME)) or "",
        kind=kind,
        up=bool(flags & IFF_UP),
        loopback=bool(flags & IFF_LOOPBACK),
        mtu=rtnl.as_int(attrs.get(rtnl.IFLA_MTU)) or 0,
        xdp_prog_id=prog_id,
        xdp_mode=mode,
        mac=":".join(f"{b:02x}" for b in mac) if mac else None,
        peer_ifindex=rtnl.as_int(attrs.get(rtnl.IFLA_LINK), signed=True) or 0,
        peer_netnsid=rtnl.as_int(attrs.get(rtnl.IFLA_LINK_NETNSID), signed=True),
        operstate=None if operstate is None else _operstate(operstate),
        alias=rtnl.as_str(attrs.get(rtnl.IFLA_IFALIAS)),
    )


def _operstate(value: int) -> str:
    return rtnl.OPERSTATES[value] if value < len(rtnl.OPERSTATES) else str(value)


def _xdp_program(payload: bytes | None) -> tuple[int, str | None]:
    """(program id, mode) of IFLA_XDP; (0, None) when nothing is attached."""
    if payload is None:
        return 0, None
    xdp = rtnl.parse_attrs(payload)
    attached = rtnl.as_int(xdp.get(rtnl.IFLA_XDP_ATTACHED)) or 0
    if attached in rtnl.XDP_ATTACHED_MODES:
        return rtnl.as_int(xdp.get(rtnl.IFLA_XDP_PROG_ID)) or 0, rtnl.XDP_ATTACHED_MODES[attached]
    if attached == rtnl.XDP_ATTACHED_MULTI:
        # Several modes at once (offload plus another): report the host-side one.
        for attr, name in (
            (rtnl.IFLA_XDP_DRV_PROG_ID, "native"),
            (rtnl.IFLA_XDP_SKB_PROG_ID, "generic"),
        ):
            prog_id = rtnl.as_int(xdp.get(attr))
            if prog_id:
                return prog_id, name
    return 0, None


class _Sockets(threading.local):
    """This thread's netlink sockets in its own namespace, one per kind, kept for the
    life of the process: a command asks the kernel several things, and a socket each
    time costs a socket, a bind and (for generic netlink) a family lookup."""

    def __init__(self):
        self.route: dict[int, rtnl.Socket] = {}
        self.netdev_family: dict[int, tuple[rtnl.Socket, int]] = {}


_sockets = _Sockets()


def _current_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@contextmanager
def _route(netns: str | None = None) -> Iterator[rtnl.Socket]:
    """An rtnetlink socket: this thread's own, or a new one in the named namespace
    (closed after use: a socket would keep a deleted namespace alive)."""
    if netns is not None:
        with namespaces.entered(netns):
            sock = rtnl.route_socket()
        try:
            yield sock
        finally:
            sock.close()
        return
    key = _current_netns()
    if key not in _sockets.route:
        _sockets.route[key] = rtnl.route_socket()
    yield _sockets.route[key]


@dataclass(frozen=True)
class Named:
    ifindex: int
    ifname: str


class Names:
    """Interface names of this namespace, looked up one by one (SIOCGIFNAME on one
    socket) as asked: for readers that need no more than names, where a dump of every
    link costs about 2 ms per link (2 s for 1,000 veth ends). get() is what Links'
    dicts offer."""

    _SIOCGIFNAME = 0x8910
    _IFREQ = struct.Struct("16si20x")  # struct ifreq: name, then ifr_ifindex

    def __init__(self):
        self._found: dict[int, Named | None] = {}
        self._sock: socket.socket | None = None

    def get(self, ifindex: int) -> Named | None:
        if ifindex not in self._found:
            self._found[ifindex] = self._lookup(ifindex)
        return self._found[ifindex]

    def _lookup(self, ifindex: int) -> Named | None:
        if not 0 < ifindex < 1 << 31:
            return None
        if self._sock is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            reply = fcntl.ioctl(self._sock, self._SIOCGIFNAME, self._IFREQ.pack(b"", ifindex))
        except OSError:
            return None  # gone (ENODEV)
        return Named(ifindex, reply[:16].split(b"\0", 1)[0].decode(errors="replace"))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def links(netns: str | None = None) -> dict[int, Link]:
    """Every link of the network namespace, by ifindex."""
    with _route(netns) as sock:
        return {link.ifindex: link for link in map(parse_link, rtnl.get_links(sock))}


@dataclass(frozen=True)
class Elsewhere:
    """The links of a network namespace other than this thread's."""

    label: str  # its name, or "the initial namespace"
    path: str  # its file, for nsenter --net and namespaces.entered_path()
    links: dict[int, Link]


def links_elsewhere() -> Iterator[Elsewhere]:
    """The links of each named namespace and of the initial one, but this thread's:
    the namespaces this process can look into."""
    here = namespaces.current_inode()
    for name in namespaces.names():
        path = namespaces.path(name)
        try:
            if os.stat(path).st_ino == here:
                continue
            found = links(name)
        except (OSError, InputError, PrereqError, NetlinkError):
            continue  # a stale entry, or one this process may not enter
        yield Elsewhere(name, path, found)
    initial = None if here == namespaces.INIT_NET_INODE else namespaces.initial_path()
    if initial is None:
        return
    try:
        with namespaces.entered_path(initial):
            found = links()
    except (OSError, NetlinkError):
        return
    yield Elsewhere("the initial namespace", initial, found)


def link(ifindex: int) -> Link | None:
    return _one_link(index=ifindex)


def link_by_name(ifname: str, netns: str | None = None) -> Link | None:
    return _one_link(name=ifname, netns=netns)


def _one_link(index: int = 0, name: str | None = None, netns: str | None = None) -> Link | None:
    with _route(netns) as sock:
        try:
            found = rtnl.get_links(sock, index=index, name=name)
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
    return parse_link(found[0]) if found else None


IFINDEX_MAX = 2**31 - 1  # ifindexes are positive ints (struct ifinfomsg's ifi_index)
ALTIFNAMSIZ = 128
_NOT_IN_NAMES = b"/: \t\n\v\f\r\xa0"  # '/', ':' and the kernel's isspace() bytes


def valid_ifname(name: str) -> bool:
    """Whether the kernel could have a device called name, or with name as an altname
    (dev_valid_name(): 1-15 bytes, up to 127 for an altname, none of _NOT_IN_NAMES).
    Names that are not UTF-8 are looked up by their ifindex only."""
    try:
        raw = name.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8, from the command line
        return False
    if not 0 < len(raw) < ALTIFNAMSIZ or raw in (b".", b".."):
        return False
    return not any(byte in _NOT_IN_NAMES for byte in raw)


def parse_ifindex(text: str) -> int | None:
    """text as an ifindex (1 to IFINDEX_MAX in ASCII digits); None if it is not a
    number. Raises InputError for a number out of that range (0 names no device)."""
    if not (text.isascii() and text.isdigit()):
        return None
    ifindex = int(text)
    if not 1 <= ifindex <= IFINDEX_MAX:
        raise InputError(f"no such interface: {text} (ifindexes run from 1 to {IFINDEX_MAX})")
    return ifindex


def resolve(name: str) -> Link:
    """The link called name, or whose ifindex is name; raises InputError."""
    found = link_by_name(name) if valid_ifname(name) else None
    if found is None:
        ifindex = parse_ifindex(name)
        if ifindex is not None:
            found = link(ifindex)
    if found is None:
        raise InputError(f"no such interface: {name}")
    return found


# enum netdev_xdp_act (include/uapi/linux/netdev.h)
XDP_ACT_BASIC = 1 << 0  # native XDP
XDP_ACT_NDO_XMIT = 1 << 2  # takes frames redirected to it (a veth: if its peer can)


NETDEV_CMD_DEV_GET = 1
NETDEV_A_DEV_IFINDEX = 1
NETDEV_A_DEV_XDP_FEATURES = 3


def xdp_features() -> dict[int, int] | None:
    """XDP features per ifindex in this namespace (the "netdev" generic netlink
    family, Linux 6.3+); None if the kernel cannot tell."""
    try:
        key = _current_netns()
        if key not in _sockets.netdev_family:
            sock = rtnl.Socket(rtnl.NETLINK_GENERIC)
            try:
                _sockets.netdev_family[key] = (sock, rtnl.genl_family(sock, "netdev"))
            except BaseException:
                sock.close()
                raise
        sock, family = _sockets.netdev_family[key]
        devices = rtnl.genl_dump(sock, family, NETDEV_CMD_DEV_GET)
    except OSError:
        return None
    features = {}
    for dev in devices:
        features[rtnl.as_int(dev.get(NETDEV_A_DEV_IFINDEX))] = (
            rtnl.as_int(dev.get(NETDEV_A_DEV_XDP_FEATURES)) or 0
        )
    return features


def _netlink_reason(e: NetlinkError) -> str:
    return e.message or errno.errorcode.get(e.errno, str(e.errno))


def _set_xdp(ifindex: int, fd: int, flags: int, expected_fd: int | None = None) -> None:
    with _route() as sock:
        rtnl.set_xdp(sock, ifindex, fd, flags, expected_fd)


@dataclass(frozen=True)
class Attached:
    mode: str  # native or generic
    refused: str | None = None  # why native XDP was refused, when auto fell back


def attach_xdp(port: Link, prog_fd: int, mode: str, replace_fd: int | None = None) -> Attached:
    """Attach prog_fd to port in mode native, generic or auto; return the mode used
    (and, when auto fell back to generic, the kernel's reason).

    Without replace_fd the kernel refuses if any program is attached meanwhile;
    with it, the program replace_fd refers to is swapped out atomically.
    Raises AttachError; InputError when the device went away meanwhile.
    """
    tries = ["native", "generic"] if mode == "auto" else [mode]
    refused = None
    for attempt in tries:
        flags = MODE_FLAGS[attempt]
        if replace_fd is None:
            flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
        else:
            flags |= XDP_FLAGS_REPLACE
        try:
            _set_xdp(port.ifindex, prog_fd, flags, replace_fd)
            return Attached(attempt, refused)
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                raise InputError(f"no such interface: {port.ifname} (it went away)") from e
            conflict = e.errno in (errno.EBUSY, errno.EEXIST)
            if attempt == tries[-1] or conflict:
                raise AttachError(
                    f"attaching XDP ({attempt}) to {port.ifname} failed: {_netlink_reason(e)}"
                ) from e
            refused = _netlink_reason(e)
            log.info("native XDP on %s failed (%s); trying generic", port.ifname, refused)
    raise AssertionError("unreachable")


def detach_xdp(port: Link, expected_fd: int | None = None) -> None:
    """Detach the program attached to port; with expected_fd only if it is that one.

    Raises AttachError.
    """
    if port.xdp_mode is None:
        return
    flags = MODE_FLAGS.get(port.xdp_mode, XDP_FLAGS_HW_MODE)
    if expected_fd is not None:
        flags |= XDP_FLAGS_REPLACE
    try:
        _set_xdp(port.ifindex, -1, flags, expected_fd)
    except NetlinkError as e:
        if e.errno == errno.ENODEV:
            return
        raise AttachError(f"detaching XDP from {port.ifname} failed: {_netlink_reason(e)}") from e


class Overrun(Exception):
    """The kernel dropped link notifications (ENOBUFS): only a full dump tells how
    the links are now."""


@dataclass(frozen=True)
class LinkEvent:
    deleted: bool  # RTM_DELLINK; otherwise RTM_NEWLINK (created or changed)
    link: Link


class LinkEvents:
    """The link notifications of this namespace (RTMGRP_LINK), on a socket of their
    own. Raises OSError when the socket cannot be made."""

    RCVBUF = 1 << 20

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            self.sock.bind((0, rtnl.RTMGRP_LINK))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def wait(self, timeout: float) -> list[LinkEvent]:
        """The events that arrived within timeout seconds (all that are queued once
        one has); raises Overrun when some were lost."""
        if not select.select([self.sock], [], [], max(0.0, timeout))[0]:
            return []
        found: list[LinkEvent] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return found
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    raise Overrun() from e
                raise
            for kind, _, _, body in rtnl.messages(data):
                if kind in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK):
                    found.append(LinkEvent(kind == rtnl.RTM_DELLINK, parse_link(body)))
