"""Network devices over rtnetlink (pyroute2): lookup, XDP attach/detach, veth set-up."""

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

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.rtnl import RTMGRP_LINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from xdpfwd.errors import AttachError, InputError
from xdpfwd.kernel import netns as namespaces

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
_ATTACHED_MODE = {"xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload"}

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


def parse_link(msg) -> Link:
    """Build a Link from a pyroute2 ifinfmsg (RTM_NEWLINK)."""
    kind = None
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is not None:
        kind = linkinfo.get_attr("IFLA_INFO_KIND")
    prog_id, mode = 0, None
    xdp = msg.get_attr("IFLA_XDP")
    if xdp is not None:
        attached = xdp.get_attr("IFLA_XDP_ATTACHED")
        if attached in _ATTACHED_MODE:
            mode = _ATTACHED_MODE[attached]
            prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
        elif attached == "xdpmulti":
            # Several modes at once (offload plus another): report the host-side one.
            for attr, name in (
                ("IFLA_XDP_DRV_PROG_ID", "native"),
                ("IFLA_XDP_SKB_PROG_ID", "generic"),
            ):
                if xdp.get_attr(attr):
                    prog_id, mode = xdp.get_attr(attr), name
                    break
    flags = msg["flags"]
    return Link(
        ifindex=msg["index"],
        ifname=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        up=bool(flags & IFF_UP),
        loopback=bool(flags & IFF_LOOPBACK),
        mtu=msg.get_attr("IFLA_MTU") or 0,
        xdp_prog_id=prog_id,
        xdp_mode=mode,
        mac=msg.get_attr("IFLA_ADDRESS"),
        peer_ifindex=msg.get_attr("IFLA_LINK") or 0,
        peer_netnsid=msg.get_attr("IFLA_LINK_NETNSID"),
        operstate=msg.get_attr("IFLA_OPERSTATE"),
        alias=msg.get_attr("IFLA_IFALIAS"),
    )


class _Sockets(threading.local):
    """This thread's netlink sockets in its own namespace, one per kind, kept for the
    life of the process: a command asks the kernel several things, and a socket each
    time costs a socket, a bind and (for generic netlink) a family lookup."""

    def __init__(self):
        self.route: dict[int, IPRoute] = {}
        self.netdev_family: dict[int, GenericNetlinkSocket] = {}


_sockets = _Sockets()


def _current_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@contextmanager
def _iproute(netns: str | None = None) -> Iterator[IPRoute]:
    """An rtnetlink socket: this thread's own, or a new one in the named namespace
    (closed after use: a socket would keep a deleted namespace alive).

    Opened after entering the namespace on this thread rather than with
    IPRoute(netns=...), which forks a helper (see netns.py).
    """
    if netns is not None:
        with namespaces.entered(netns):
            sock = IPRoute(ext_ack=True)
        with sock:
            yield sock
        return
    key = _current_netns()
    if key not in _sockets.route:
        _sockets.route[key] = IPRoute(ext_ack=True)
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
    with _iproute(netns) as ipr:
        return {link.ifindex: link for link in map(parse_link, ipr.get_links())}


def link(ifindex: int) -> Link | None:
    with _iproute() as ipr:
        try:
            return parse_link(ipr.get_links(ifindex)[0])
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise


def link_by_name(ifname: str, netns: str | None = None) -> Link | None:
    with _iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return parse_link(ipr.get_links(found[0])[0]) if found else None


IFINDEX_MAX = 2**31 - 1  # ifindexes are positive ints (struct ifinfomsg's ifi_index)
IFNAMSIZ = 16


def valid_ifname(name: str) -> bool:
    """Whether the kernel could have a device called name (dev_valid_name())."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError:  # bytes that are not UTF-8, from the command line
        return False
    if not 0 < size < IFNAMSIZ or name in (".", ".."):
        return False
    return not any(c in "/:" or c.isspace() for c in name)


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


class _NetdevDevMsg(genlmsg):
    """Messages of the "netdev" generic netlink family (Linux 6.3+)."""

    nla_map = (
        ("NETDEV_A_DEV_UNSPEC", "none"),
        ("NETDEV_A_DEV_IFINDEX", "uint32"),
        ("NETDEV_A_DEV_PAD", "none"),
        ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
    )


def xdp_features() -> dict[int, int] | None:
    """XDP features per ifindex in this namespace; None if the kernel cannot tell."""
    try:
        key = _current_netns()
        if key not in _sockets.netdev_family:
            sock = GenericNetlinkSocket()
            sock.bind("netdev", _NetdevDevMsg)
            _sockets.netdev_family[key] = sock
        sock = _sockets.netdev_family[key]
        msg = _NetdevDevMsg()
        msg["cmd"] = 1  # NETDEV_CMD_DEV_GET
        msg["version"] = 1
        replies = sock.nlm_request(msg, msg_type=sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
        return {
            r.get_attr("NETDEV_A_DEV_IFINDEX"): r.get_attr("NETDEV_A_DEV_XDP_FEATURES") or 0
            for r in replies
        }
    except (NetlinkError, OSError):
        return None


def _netlink_reason(e: NetlinkError) -> str:
    message = e.args[1] if len(e.args) > 1 and e.args[1] else None
    return message or errno.errorcode.get(e.code, str(e.code))


def _set_xdp(ifindex: int, fd: int, flags: int, expected_fd: int | None = None) -> None:
    attrs = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    with _iproute() as ipr:
        ipr.link("set", index=ifindex, xdp={"attrs": attrs})


@dataclass(frozen=True)
class Attached:
    mode: str  # native or generic
    refused: str | None = None  # why native XDP was refused, when auto fell back


def attach_xdp(port: Link, prog_fd: int, mode: str, replace_fd: int | None = None) -> Attached:
    """Attach prog_fd to port in mode native, generic or auto; return the mode used
    (and, when auto fell back to generic, the kernel's reason).

    Without replace_fd the kernel refuses if any program is attached meanwhile;
    with it, the program replace_fd refers to is swapped out atomically.
    Raises AttachError.
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
            conflict = e.code in (errno.EBUSY, errno.EEXIST)
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
        if e.code == errno.ENODEV:
            return
        raise AttachError(f"detaching XDP from {port.ifname} failed: {_netlink_reason(e)}") from e


def add_veth(ifname: str, peer: str, peer_netns: str, queues: int = 1) -> None:
    """Create a veth pair with ifname here and peer inside peer_netns."""
    with _iproute() as ipr:
        ipr.link(
            "add",
            ifname=ifname,
            kind="veth",
            num_tx_queues=queues,
            num_rx_queues=queues,
            peer={
                "ifname": peer,
                "net_ns_fd": peer_netns,
                "num_tx_queues": queues,
                "num_rx_queues": queues,
            },
        )


def set_alias(ifname: str, alias: str) -> None:
    """Set a device's alias (IFLA_IFALIAS), which only user space reads."""
    with _iproute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], ifalias=alias)


def add_bridge(ifname: str, ports: list[str]) -> None:
    """Create a Linux bridge, up, with ports enslaved."""
    with _iproute() as ipr:
        ipr.link("add", ifname=ifname, kind="bridge")
        bridge = ipr.link_lookup(ifname=ifname)[0]
        for port in ports:
            ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=bridge)
        ipr.link("set", index=bridge, state="up")


def delete_link(ifname: str) -> bool:
    """Delete a device; False if there was none (or it vanished meanwhile)."""
    with _iproute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return False
            raise
        return True


def configure(ifname: str, netns: str | None = None, address: str | None = None) -> None:
    """Bring ifname up, with an IPv4 address in CIDR form if one is given."""
    with _iproute(netns) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        if address:
            ip, prefix = address.split("/")
            ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")


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
            self.sock.bind((0, RTMGRP_LINK))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self._marshal = MarshalRtnl()

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
            for msg in self._marshal.parse(data):
                event = msg.get("event")
                if event in ("RTM_NEWLINK", "RTM_DELLINK"):
                    found.append(LinkEvent(event == "RTM_DELLINK", parse_link(msg)))
