"""Offload features of a device, and of a veth port's peer wherever its network
namespace is (legacy ethtool ioctls: each reads or sets one group of features, as
`ethtool -k/-K` names them).

A veth's IFLA_LINK_NETNSID is an id relative to our namespace, and the kernel has no
call from an id to a namespace: so each namespace this host can reach (/run/netns,
other nsfs mounts, /proc/*/ns/net, then nsfs fds that processes hold) is opened and
asked its id (RTM_GETNSID with NETNSA_FD) until every wanted one is found. To act
there, the thread enters it just long enough to open an AF_INET socket: a socket
keeps its namespace, so ioctls on it reach the peer. (Ethtool netlink resolves the
device in the socket's namespace too, and an ifindex there may name another device
here.)
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from xdpfwd.kernel import netns

SIOCETHTOOL, SIOCGIFNAME, SIOCGIFMTU = 0x8946, 0x8910, 0x8921
# ETHTOOL_G*/S* of TXCSUM (tx-checksumming: HW/IP/IPV6_CSUM), TSO, GSO, GRO.
_GET = {"tx": 0x16, "tso": 0x1E, "gso": 0x23, "gro": 0x2B}
_SET = {"tx": 0x17, "tso": 0x1F, "gso": 0x24, "gro": 0x2C}

_RTM_GETNSID, _NETNSA_NSID, _NETNSA_FD, _NLMSG_ERROR = 90, 1, 3, 2


def _ethtool(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    value = ctypes.create_string_buffer(struct.pack("=II", cmd, data), 8)
    ifreq = struct.pack("16sP16x", ifname.encode(), ctypes.addressof(value))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return struct.unpack_from("=II", value.raw)[1]


def _inet_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def read(ifname: str, sock: socket.socket | None = None) -> dict[str, bool]:
    """The features of ifname in sock's namespace (ours without sock)."""
    with ExitStack() as stack:
        if sock is None:
            sock = stack.enter_context(_inet_socket())
        return {name: bool(_ethtool(sock, ifname, cmd)) for name, cmd in _GET.items()}


def change(ifname: str, sock: socket.socket | None = None, **features: bool) -> None:
    """Set features of ifname, e.g. change("veth1", tx=False, gro=True). tx off also
    turns TSO off, as with ethtool. Raises OSError."""
    with ExitStack() as stack:
        if sock is None:
            sock = stack.enter_context(_inet_socket())
        for name, on in features.items():
            _ethtool(sock, ifname, _SET[name], int(on))


def ethtool_command(ifname: str, **features: bool) -> str:
    words = " ".join(f"{name} {'on' if on else 'off'}" for name, on in features.items())
    return f"ethtool -K {ifname} {words}"


@dataclass(frozen=True)
class Namespace:
    """How a user reaches a network namespace from a shell."""

    name: str | None = None  # under /run/netns
    path: str | None = None  # another nsfs mount, or an fd a process holds
    pid: int | None = None  # a process inside it
    initial: bool = False  # the initial namespace (path: netns.initial_path())

    def run(self, command: str) -> str:
        if self.name:
            return f"ip netns exec {self.name} {command}"
        if self.pid:
            return f"nsenter -t {self.pid} -n {command}"
        return f"nsenter --net={self.path} {command}"

    @property
    def label(self) -> str:
        if self.name:
            return f"namespace {self.name}"
        if self.initial:
            return "the initial namespace"
        if self.pid:
            return f"the namespace of pid {self.pid}"
        return f"the namespace at {self.path}"


def _candidates() -> Iterator[tuple[str, Namespace]]:
    """Every network namespace we may reach, named ones first."""
    try:
        for name in sorted(os.listdir(netns.NETNS_RUN_DIR)):
            yield os.path.join(netns.NETNS_RUN_DIR, name), Namespace(name=name)
    except FileNotFoundError:
        pass
    with open("/proc/self/mountinfo") as f:  # e.g. /run/docker/netns/*
        for line in f:
            fields = line.split()
            kind = fields[fields.index("-") + 1]
            if kind == "nsfs" and not fields[4].startswith(netns.NETNS_RUN_DIR + "/"):
                yield fields[4], Namespace(path=fields[4])
    pids = sorted((int(p) for p in os.listdir("/proc") if p.isdigit()), reverse=True)
    for pid in pids:  # newest first: the likeliest holder of a fresh namespace
        yield f"/proc/{pid}/ns/net", Namespace(pid=pid)
    for pid in pids:  # last: namespaces kept alive only by an open fd
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if os.readlink(path).startswith("net:["):
                    yield path, Namespace(path=path)
            except OSError:
                pass


def _nsid(nl: socket.socket, fd: int, seq: int) -> int | None:
    """Our id for the namespace fd refers to (None: it has none)."""
    body = struct.pack("=B3x", socket.AF_UNSPEC) + struct.pack("=HHI", 8, _NETNSA_FD, fd)
    nl.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETNSID, 1, seq, 0) + body)
    data = nl.recv(4096)
    _, kind, _, reply_seq, _ = struct.unpack_from("=IHHII", data)
    if kind == _NLMSG_ERROR or reply_seq != seq:
        return None
    offset = 20
    while offset + 4 <= len(data):
        length, attr = struct.unpack_from("=HH", data, offset)
        if attr == _NETNSA_NSID:
            nsid = struct.unpack_from("=i", data, offset + 4)[0]
            return nsid if nsid >= 0 else None
        offset += (length + 3) & ~3
    return None


def _open_namespaces(nsids: set[int], stack: ExitStack) -> dict[int, tuple[int, Namespace]]:
    """(open fd, Namespace) for each of our nsids that can be found."""
    found: dict[int, tuple[int, Namespace]] = {}
    here = os.stat("/proc/thread-self/ns/net")
    seen = {(here.st_dev, here.st_ino)}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        for seq, (path, namespace) in enumerate(_candidates(), 1):
            if not nsids - found.keys():
                break
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # gone meanwhile, or not ours to read
            seen.add((st.st_dev, st.st_ino))
            nsid = _nsid(nl, fd, seq)
            if nsid in nsids and nsid not in found:
                stack.callback(os.close, fd)
                if st.st_ino == netns.INIT_NET_INODE:  # by pid 1, not whichever showed it
                    namespace = Namespace(path=netns.initial_path() or path, initial=True)
                found[nsid] = (fd, namespace)
            else:
                os.close(fd)
    return found


@dataclass
class Peer:
    """The far end of a veth port of ours, with a socket in its namespace."""

    port: int  # our port's ifindex
    ifname: str  # the peer's name, in its namespace
    namespace: Namespace | None  # None: our own
    sock: socket.socket
    # veth_xdp_xmit() drops a frame longer than the peer's MTU allows: it counts too.
    mtu: int | None = None

    def read(self) -> dict[str, bool]:
        return read(self.ifname, self.sock)

    def change(self, **features: bool) -> None:
        change(self.ifname, self.sock, **features)

    def command(self, **features: bool) -> str:
        """The shell command that does change(**features), for a message."""
        return self.shell(ethtool_command(self.ifname, **features))

    def shell(self, command: str) -> str:
        """command as run in the peer's namespace, from a shell in ours."""
        return (
            self.namespace.run(command) if self.namespace else netns.as_run_from_the_shell(command)
        )


def _ifname(sock: socket.socket, ifindex: int) -> str:
    ifreq = bytearray(struct.pack("=16si20x", b"", ifindex))
    fcntl.ioctl(sock.fileno(), SIOCGIFNAME, ifreq)
    return bytes(ifreq[:16]).split(b"\0", 1)[0].decode(errors="replace")  # as rtnl.as_str


def _mtu(sock: socket.socket, ifname: str) -> int:
    ifreq = bytearray(struct.pack("=16si20x", ifname.encode(), 0))
    fcntl.ioctl(sock.fileno(), SIOCGIFMTU, ifreq)
    return struct.unpack_from("=i", ifreq, 16)[0]


@contextmanager
def peers(ports: dict[int, tuple[int, int | None]]) -> Iterator[dict[int, Peer]]:
    """The peers of veth ports given as {ifindex: (IFLA_LINK, IFLA_LINK_NETNSID)}, by
    our port's ifindex; a peer whose namespace cannot be found, or entered (setns(2)
    takes CAP_SYS_ADMIN, which reading commands go without), is left out. This
    thread stays in its own namespace; the peers' sockets close at the end."""
    with ExitStack() as stack:
        wanted = {nsid for _, nsid in ports.values() if nsid is not None}
        spaces = _open_namespaces(wanted, stack)
        socks: dict[int | None, tuple[socket.socket, Namespace | None]] = {
            None: (stack.enter_context(_inet_socket()), None)
        }
        for nsid, (fd, namespace) in spaces.items():
            try:
                with netns.entered_fd(fd):
                    sock = _inet_socket()
            except PermissionError:
                continue  # entering needs CAP_SYS_ADMIN: a reader without it sees less
            socks[nsid] = (stack.enter_context(sock), namespace)
        found = {}
        for port, (peer_ifindex, nsid) in ports.items():
            if nsid not in socks:
                continue
            sock, namespace = socks[nsid]
            try:
                name = _ifname(sock, peer_ifindex)
                mtu = _mtu(sock, name)
            except OSError:
                continue  # gone meanwhile
            found[port] = Peer(port, name, namespace, sock, mtu)
        yield found
