"""Test topologies built with iproute2 (independent of xdpfwd's own lab code) and traffic.

A Topo is one forwarder namespace holding ports p1..pN; behind each port a host
namespace holds the veth peer `h0` with address 10.77.0.<i>/24. IPv6 is off in
every namespace so the only frames are the ones a test sends (plus ARP).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.kernel.bpf.loader import PROG_XDP
from xdpfwd.kernel.bpf.maps import XDP_PASS

SO_RCVBUFFORCE = 33  # not exported by Python's socket module
XDPFWD = os.path.join(os.path.dirname(sys.executable), "xdpfwd")
SUBNET = "10.77.0"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=60)


def xdpfwd_cmd(ns: str, *args: str, outer=(), inner=()) -> list[str]:
    """The real xdpfwd executable, run inside namespace ns.

    outer wraps nsenter (e.g. unshare), inner runs between nsenter and xdpfwd
    (e.g. setpriv, which would leave nsenter without the right to enter).
    """
    return [*outer, "nsenter", f"--net=/run/netns/{ns}", *inner, XDPFWD, *args]


def popen(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def namespaces() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def lab_namespaces() -> set[str]:
    """The namespaces of xdpfwd's demo and bench labs (xd<pid>p<i>, xb<pid>p<i>): what
    their tests must find removed, whatever other test runs do meanwhile."""
    return {name for name in namespaces() if re.fullmatch(r"x[bd]\d+p\d+", name)}


def pins_left(pin_dir: str) -> list[str]:
    """Entries on the test's bpffs besides the kernel's own debug iterators."""
    return [n for n in os.listdir(os.path.dirname(pin_dir)) if not n.endswith(".debug")]


@contextmanager
def in_netns(name: str):
    """Run the body in a named netns; sockets created there stay there."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        assert libc.setns(target, 0x40000000) == 0, os.strerror(ctypes.get_errno())
        yield
    finally:
        assert libc.setns(home, 0x40000000) == 0
        os.close(target)
        os.close(home)


@dataclass
class Host:
    index: int
    ns: str
    port: str  # the forwarder-side veth end
    dev: str = "h0"
    mac: str = ""

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self.index}"


class Topo:
    """prepared=False leaves the hosts' veths with the kernel's default offloads, as
    users' containers have them (TX checksum offload, TSO and GSO on, GRO off)."""

    def __init__(self, tag: str, nports: int, gro: bool = True, prepared: bool = True):
        self.fwd = f"xt{tag}f"
        self.hosts = [Host(i, f"xt{tag}h{i}", f"p{i}") for i in range(1, nports + 1)]
        self.gro = gro and prepared
        self.prepared = prepared
        self.files: list[str] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.fwd] + [h.ns for h in self.hosts]

    def build(self) -> Topo:
        for ns in self.namespaces:
            sh("ip", "netns", "add", ns)
            sh(
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            )
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for h in self.hosts:
            self.plug(h)
        return self

    def plug(self, h: Host) -> None:
        """Create h's veth pair (its port here, its end in its namespace) and set the
        host end up as build() does; also for a port deleted and made again."""
        sh(
            "ip",
            "-n",
            self.fwd,
            "link",
            "add",
            h.port,
            "type",
            "veth",
            "peer",
            "name",
            h.dev,
            "netns",
            h.ns,
        )
        sh("ip", "-n", self.fwd, "link", "set", h.port, "up")
        sh("ip", "-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", h.dev)
        sh("ip", "-n", h.ns, "link", "set", h.dev, "up")
        if self.prepared:
            # The sender's checksum offload leaves partial L4 checksums that an XDP
            # redirect never completes: hosts compute checksums in software.
            sh("ip", "netns", "exec", h.ns, "ethtool", "-K", h.dev, "tx", "off")
        if self.gro:
            # The veth gotcha: frames redirected into a veth need GRO (or XDP) on its peer.
            sh("ip", "netns", "exec", h.ns, "ethtool", "-K", h.dev, "gro", "on")
        h.mac = json.loads(sh("ip", "-n", h.ns, "-j", "link", "show", h.dev).stdout)[0]["address"]

    def destroy(self) -> None:
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        for path in self.files:
            if os.path.exists(path):
                os.unlink(path)

    def host(self, i: int) -> Host:
        return self.hosts[i - 1]

    def set_mtu(self, mtu: int, hosts: list[int] | None = None) -> None:
        """The same MTU on the ports and hosts' ends (of the hosts numbered, or all)."""
        for h in self.hosts if hosts is None else [self.host(i) for i in hosts]:
            sh("ip", "-n", self.fwd, "link", "set", h.port, "mtu", str(mtu))
            sh("ip", "-n", h.ns, "link", "set", h.dev, "mtu", str(mtu))

    def xdpfwd(
        self, pin_dir: str, *args: str, env: dict | None = None, outer=(), inner=(), stdin=""
    ):
        """Run the real xdpfwd executable inside the forwarder namespace, to completion,
        with stdin on its standard input."""
        cmd = xdpfwd_cmd(self.fwd, "--pin-dir", pin_dir, *args, outer=outer, inner=inner)
        environ = {**os.environ, **(env or {})}
        return subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=120, env=environ
        )

    def start(self, pin_dir: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        """The same, in the background, with stdout and stderr piped."""
        return popen(xdpfwd_cmd(self.fwd, "--pin-dir", pin_dir, *args), env)

    def ok(self, pin_dir: str, *args: str):
        result = self.xdpfwd(pin_dir, *args)
        assert result.returncode == 0, f"xdpfwd {' '.join(args)}: {result.stderr}"
        return result

    def list_json(self, pin_dir: str) -> dict:
        return json.loads(self.ok(pin_dir, "list", "--json").stdout)

    def xdp(self, port: str) -> dict | None:
        """What iproute2 says is attached to a forwarder port: {'mode': 1|2, 'prog': {...}}."""
        info = json.loads(sh("ip", "-n", self.fwd, "-j", "link", "show", "dev", port).stdout)
        return info[0].get("xdp")

    def ping(self, src: int, dst_ip: str, count: int = 3) -> int:
        """Echo replies that came back to host src from dst_ip."""
        result = sh(
            "ip",
            "netns",
            "exec",
            self.host(src).ns,
            "ping",
            "-n",
            "-q",
            "-c",
            str(count),
            "-i",
            "0.2",
            "-W",
            "1",
            dst_ip,
            check=False,
        )
        for line in result.stdout.splitlines():
            if "packets transmitted" in line:
                return int(line.split(",")[1].split()[0])
        raise AssertionError(f"no ping summary: {result.stdout} {result.stderr}")

    def config_file(self, doc: dict) -> str:
        """A configuration file for apply (version 1 plus doc), beside the namespaces."""
        path = f"/tmp/xdpfwd-test-{self.fwd}-{len(doc)}-{abs(hash(json.dumps(doc))) % 10**8}.json"
        with open(path, "w") as f:
            json.dump({"version": 1, **doc}, f)
        self.files.append(path)
        return path

    def udp_arrives(self, src: int, dst: int, count: int) -> int:
        """Datagrams from host src that reach host dst, src knowing dst's address in
        advance (static_arp() needs every host: some devices may be gone)."""
        a, b = self.host(src), self.host(dst)
        sh("ip", "-n", a.ns, "neigh", "replace", b.ip, "lladdr", b.mac, "dev", a.dev)
        with UdpSink(b) as sink:
            send_udp(a, b.ip, count)
            return sink.count(count)

    def static_arp(self) -> None:
        """Neighbours known in advance, so a test's datagrams are the only frames sent."""
        for a in self.hosts:
            for b in self.hosts:
                if a is not b:
                    sh(
                        "ip",
                        "-n",
                        a.ns,
                        "neigh",
                        "replace",
                        b.ip,
                        "lladdr",
                        b.mac,
                        "dev",
                        a.dev,
                        "nud",
                        "permanent",
                    )


class _Receiver:
    """Owns one receiving socket; `with` closes it."""

    sock: socket.socket

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UdpSink(_Receiver):
    """A UDP socket bound inside a host namespace, counting datagrams."""

    def __init__(self, host: Host, port: int = 9000):
        with in_netns(host.ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Redirected frames arrive as page-sized skbs: make room so none is refused.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        self.sock.bind((host.ip, port))
        self.sock.setblocking(False)

    def count(self, expect: int, timeout: float = 2.0) -> int:
        got, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.sock], [], [], 0.1)[0]:
                if got >= expect:
                    break
                continue
            while True:
                try:
                    self.sock.recv(65535)
                    got += 1
                except BlockingIOError:
                    break
        return got

    def count_until(self, stop, quiet: float = 0.5) -> int:
        """Count until stop (a threading.Event) is set and nothing arrived for quiet s."""
        got, last = 0, time.monotonic()
        while not stop.is_set() or time.monotonic() - last < quiet:
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            while True:
                try:
                    self.sock.recv(65535)
                    got += 1
                    last = time.monotonic()
                except BlockingIOError:
                    break
        return got


def send_udp(src: Host, dst_ip: str, count: int, payload: int = 64, port: int = 9000) -> None:
    with in_netns(src.ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for i in range(count):
            sock.sendto(struct.pack("!I", i) + bytes(payload - 4), (dst_ip, port))
            if i % 64 == 63:
                time.sleep(0.002)  # stay far below the veth ring size


def tcp_transfer(src: Host, dst: Host, nbytes: int, timeout: float = 10.0) -> int:
    """Bytes of an nbytes TCP transfer from src's host to dst's that arrived in time."""
    with in_netns(dst.ns):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with in_netns(src.ns):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    received = [0]

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            try:
                while received[0] < nbytes:
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        break
                    received[0] += len(chunk)
            except OSError:
                pass

    with server, client:
        server.bind((dst.ip, 0))
        server.listen(1)
        server.settimeout(timeout)
        reader = threading.Thread(target=serve, daemon=True)
        reader.start()
        client.settimeout(timeout)
        try:
            client.connect((dst.ip, server.getsockname()[1]))
            client.sendall(bytes(nbytes))
        except OSError:
            pass
        reader.join(timeout)
    return received[0]


def udp_frame_len(payload: int) -> int:
    return 14 + 20 + 8 + payload


class FrameCounter(_Receiver):
    """A packet socket on a device inside a namespace: counts frames, including ones
    that XDP passed up the stack (AF_PACKET sees what the stack receives)."""

    def __init__(self, ns: str, dev: str):
        with in_netns(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
            self.sock.bind((dev, 0))
        self.sock.setblocking(False)

    def frames(self, timeout: float = 1.0, udp_port: int | None = None) -> list[bytes]:
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            while True:
                try:
                    frame, addr = self.sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                if udp_port is None or _udp_dport(frame) == udp_port:
                    seen.append(frame)
        return seen


def _udp_dport(frame: bytes) -> int | None:
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    return struct.unpack_from("!H", frame, 14 + ihl + 2)[0]


def load_xdp_pass_program(name: str = "foreign_pass") -> int:
    """Load a two-instruction XDP program (r0 = XDP_PASS; exit): another tool's program."""
    return sc.prog_load(PROG_XDP, sc.insn(0xB7, imm=XDP_PASS) + sc.insn(0x95), name)


def attach_foreign(topo: Topo, port: str, generic: bool = False) -> int:
    """Attach another tool's XDP program to a forwarder port; return its program id."""
    from pyroute2 import IPRoute

    fd = load_xdp_pass_program()
    try:
        # Entered in this thread, not IPRoute(netns=...), which forks a copy of pytest.
        with in_netns(topo.fwd), IPRoute() as ipr:
            index = ipr.link_lookup(ifname=port)[0]
            ipr.link(
                "set",
                index=index,
                xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", 2 if generic else 4)]},
            )
    finally:
        os.close(fd)
    return topo.xdp(port)["prog"]["id"]


def snapshot(topo, pin_dir) -> tuple:
    """Everything a failed command must leave as it was."""
    xdp = {h.port: topo.xdp(h.port) for h in topo.hosts}
    pins = sorted(os.listdir(pin_dir)) if os.path.isdir(pin_dir) else None
    listing = topo.list_json(pin_dir)["entries"] if pins else None
    return xdp, pins, listing


def doctor_check(topo, pin_dir: str, check_id: str) -> dict | None:
    """doctor's check of that id, None if it has none; asserts doctor fails with one."""
    result = topo.xdpfwd(pin_dir, "doctor", "--json", "--no-compile")
    found = [c for c in json.loads(result.stdout)["checks"] if c["id"] == check_id]
    assert len(found) <= 1, found
    assert not found or (found[0]["status"] == "fail" and result.returncode == 1), found
    return found[0] if found else None


def run_fix(topo, pin_dir: str, fix: str, *words: str):
    """Run a fix hint literally, after checking it is `xdpfwd --pin-dir PIN_DIR words`
    (a hint without --pin-dir would act on the default directory); its result."""
    assert fix.split() == ["xdpfwd", "--pin-dir", pin_dir, *words], fix
    return topo.ok(pin_dir, *words)


def quoted(message: str) -> str:
    """The first command a message quotes in backquotes."""
    return message.split("`")[1]


def assert_fails(result, code: int, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
