"""A small netlink client for what every command asks the kernel: links, XDP attach
and detach, link notifications, and the XDP features of the "netdev" generic netlink
family. pyroute2's import alone costs about 100 ms, most of a short command's start;
the labs' device set-up, which only lab, demo and bench do, still uses it (netdev).

Messages are struct nlmsghdr, a family header, then attributes (struct nlattr),
each padded to 4 bytes (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10  # the dump's objects changed while it ran: it may miss some
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # in an error: the request was not echoed whole
NLM_F_ACK_TLVS = 0x200  # in an error: extended ack attributes follow
NLA_F_NESTED = 1 << 15
NLA_TYPE_MASK = 0x3FFF
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTMGRP_LINK = 1

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_EXT_MASK = 29
IFLA_LINK_NETNSID = 37
IFLA_XDP = 43
IFLA_ALT_IFNAME = 53
IFNAMSIZ = 16
IFLA_INFO_KIND = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the counters are most of a link message

IFLA_XDP_FD = 1
IFLA_XDP_ATTACHED = 2
IFLA_XDP_FLAGS = 3
IFLA_XDP_PROG_ID = 4
IFLA_XDP_DRV_PROG_ID = 5
IFLA_XDP_SKB_PROG_ID = 6
IFLA_XDP_EXPECTED_FD = 8
XDP_ATTACHED_MODES = {1: "native", 2: "generic", 3: "offload"}
XDP_ATTACHED_MULTI = 4

# enum IF_OPER_* (RFC 2863), as `ip link` names them
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

NETLINK_GENERIC = 16  # not in Python's socket module
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
ATTR = struct.Struct("=HH")  # struct nlattr: len, type
IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change
GENL = struct.Struct("=BBxx")  # struct genlmsghdr: cmd, version
ERRNO = struct.Struct("=i")


class NetlinkError(OSError):
    """The kernel refused a request: errno, and its extended ack message if it gave one."""

    def __init__(self, code: int, message: str | None = None):
        super().__init__(code, message or os.strerror(code))
        self.message = message


def _pad(size: int) -> int:
    return (size + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    return (
        ATTR.pack(ATTR.size + len(payload), kind)
        + payload
        + bytes(_pad(len(payload)) - len(payload))
    )


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def s32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=i", value))


def string(kind: int, text: str) -> bytes:
    return attr(kind, os.fsencode(text) + b"\0")


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes from offset on, by type (flag bits cleared); the last of a type wins."""
    found: dict[int, bytes] = {}
    while offset + ATTR.size <= len(data):
        size, kind = ATTR.unpack_from(data, offset)
        if size < ATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + ATTR.size : offset + size]
        offset += _pad(size)
    return found


def as_int(payload: bytes | None, signed: bool = False) -> int | None:
    if payload is None:
        return None
    return int.from_bytes(payload, sys.byteorder, signed=signed)


def as_str(payload: bytes | None) -> str | None:
    if payload is None:
        return None
    return payload.split(b"\0", 1)[0].decode(errors="replace")


def messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of each message in one datagram."""
    found = []
    offset = 0
    while offset + HEADER.size <= len(data):
        size, kind, flags, seq, _ = HEADER.unpack_from(data, offset)
        if size < HEADER.size:
            break
        found.append((kind, flags, seq, data[offset + HEADER.size : offset + size]))
        offset += _pad(size)
    return found


def _error(flags: int, body: bytes) -> NetlinkError | None:
    """None for an ack; the kernel's refusal otherwise."""
    (code,) = ERRNO.unpack_from(body)
    if code == 0:
        return None
    message = None
    if flags & NLM_F_ACK_TLVS:
        echoed = HEADER.unpack_from(body, ERRNO.size)[0]
        start = ERRNO.size + (HEADER.size if flags & NLM_F_CAPPED else _pad(echoed))
        message = as_str(parse_attrs(body, start).get(NLMSGERR_ATTR_MSG))
    return NetlinkError(-code, message)


class Socket:
    """A netlink socket of one protocol in the namespace it was opened in."""

    RECV_SIZE = 1 << 16  # the kernel sizes its dump batches to what we read (<= 32 KB)
    DUMP_TRIES = 3

    def __init__(self, protocol: int):
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        self.sock = socket.socket(socket.AF_NETLINK, kind, protocol)
        try:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            except OSError:
                pass  # a kernel before 4.12: errors come without their message
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return the (type, body) of each reply. A dump ends with
        NLMSG_DONE (whatever its replies' flags say: the netdev family's lack
        NLM_F_MULTI), anything else with its reply or ack; a dump the kernel marks
        inconsistent (links changed while it ran) is asked again, up to DUMP_TRIES
        times. Raises NetlinkError."""
        if flags & NLM_F_DUMP == NLM_F_DUMP:
            for _ in range(self.DUMP_TRIES - 1):
                replies, consistent = self._exchange(kind, flags, payload)
                if consistent:
                    return replies
        return self._exchange(kind, flags, payload)[0]

    def _exchange(self, kind: int, flags: int, payload: bytes):
        done_after_one = not flags & NLM_F_ACK and flags & NLM_F_DUMP != NLM_F_DUMP
        consistent = True
        self._seq += 1
        seq = self._seq
        flags |= NLM_F_REQUEST
        self.sock.send(HEADER.pack(HEADER.size + len(payload), kind, flags, seq, 0) + payload)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(self.RECV_SIZE)
            for reply_kind, reply_flags, reply_seq, body in messages(data):
                if reply_seq != seq:
                    continue  # a late answer to a request that was interrupted
                consistent = consistent and not reply_flags & NLM_F_DUMP_INTR
                if reply_kind == NLMSG_ERROR:
                    error = _error(reply_flags, body)
                    if error is not None:
                        raise error
                    return replies, consistent
                if reply_kind == NLMSG_DONE:
                    return replies, consistent
                replies.append((reply_kind, body))
                if done_after_one:
                    return replies, consistent


def route_socket() -> Socket:
    return Socket(socket.NETLINK_ROUTE)


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def get_links(sock: Socket, index: int = 0, name: str | None = None) -> list[bytes]:
    """RTM_NEWLINK bodies: every link (no index, no name) or the one asked for.
    Raises NetlinkError (ENODEV: no such link)."""
    payload = ifinfo(index) + u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    if name is not None:
        # Either attribute finds a device by its name or an altname; only
        # IFLA_ALT_IFNAME takes one longer than IFNAMSIZ.
        long_name = len(os.fsencode(name)) >= IFNAMSIZ
        payload += string(IFLA_ALT_IFNAME if long_name else IFLA_IFNAME, name)
    dump = NLM_F_DUMP if not index and name is None else 0
    return [body for kind, body in sock.request(RTM_GETLINK, dump, payload) if kind == RTM_NEWLINK]


def set_xdp(sock: Socket, index: int, fd: int, flags: int, expected_fd: int | None) -> None:
    attrs = [s32(IFLA_XDP_FD, fd), u32(IFLA_XDP_FLAGS, flags)]
    if expected_fd is not None:
        attrs.append(s32(IFLA_XDP_EXPECTED_FD, expected_fd))
    sock.request(RTM_SETLINK, NLM_F_ACK, ifinfo(index) + nested(IFLA_XDP, *attrs))


def genl_family(sock: Socket, name: str) -> int:
    """The id of a generic netlink family; raises NetlinkError (ENOENT: none)."""
    payload = GENL.pack(CTRL_CMD_GETFAMILY, 1) + string(CTRL_ATTR_FAMILY_NAME, name)
    for _, body in sock.request(GENL_ID_CTRL, 0, payload):
        family = as_int(parse_attrs(body, GENL.size).get(CTRL_ATTR_FAMILY_ID))
        if family is not None:
            return family
    raise NetlinkError(errno.ENOENT, f"no generic netlink family {name}")


def genl_dump(sock: Socket, family: int, cmd: int) -> list[dict[int, bytes]]:
    """The attributes of each reply to a dump request of a generic netlink family."""
    replies = sock.request(family, NLM_F_DUMP, GENL.pack(cmd, 1))
    return [parse_attrs(body, GENL.size) for _, body in replies]
