"""A throwaway lab: N ports, each a veth pair whose far end is a host in its own netns.

Port i is the veth end `<prefix><i>` in the current namespace (the one xdpfwd
forwards between); its peer `host0` lives in namespace `<prefix><i>` with address
198.18.0.<i>/24 (the RFC 2544 benchmarking range), like a host on a switch port.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from xdpfwd import interrupts
from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev, netns, offloads
from xdpfwd.model.reports import Lab, LabPort, PingResult

HOST_DEV = "host0"
MAX_PORTS = 250
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,9}$")


def check_prefix(prefix: str) -> None:
    if not _PREFIX.match(prefix):
        raise InputError(
            f"lab name {prefix!r}: 1-10 lowercase letters, digits or '-', starting with a letter"
        )


def lab_port(prefix: str, index: int) -> LabPort:
    name = f"{prefix}{index}"
    return LabPort(port=name, netns=name, host_dev=HOST_DEV, address=f"198.18.0.{index}/24")


def up(prefix: str, nports: int, queues: int = 1) -> Lab:
    """Build the lab; on any failure remove what was built. Raises InputError."""
    check_prefix(prefix)
    if not 2 <= nports <= MAX_PORTS:
        raise InputError(f"a lab has 2 to {MAX_PORTS} ports, not {nports}")
    if status(prefix).ports:
        raise InputError(f"lab {prefix} already exists; `xdpfwd lab down --name {prefix}` first")
    ports = [lab_port(prefix, i) for i in range(1, nports + 1)]
    try:
        for p in ports:
            _build_port(p, queues)
            interrupts.check()
    except BaseException:
        down(prefix)
        raise
    return Lab(prefix, ports)


def _build_port(p: LabPort, queues: int) -> None:
    if netdev.link_by_name(p.port) is not None:
        raise InputError(f"interface {p.port} already exists; choose another lab name")
    netns.create(p.netns)
    netdev.add_veth(p.port, p.host_dev, p.netns, queues)
    netdev.configure(p.port)
    netdev.configure("lo", netns=p.netns)
    netdev.configure(p.host_dev, netns=p.netns, address=p.address)
    with netns.entered(p.netns):
        # What doctor --fix does for users' veths (see state/health.py): the host
        # takes frames redirected to its port, and sends checksums XDP can forward.
        offloads.change(p.host_dev, tx=False, gro=True)


def down(prefix: str) -> list[str]:
    """Remove the lab's ports and namespaces; return the namespaces removed.

    Ports go first: deleting a veth removes both ends at once, whereas a removed
    namespace takes its devices down later, in the background.
    """
    check_prefix(prefix)
    for name in _lab_port_names(prefix):
        netdev.delete_link(name)
    removed = []
    for name in _lab_namespaces(prefix):
        netns.remove(name)
        removed.append(name)
    return removed


def status(prefix: str) -> Lab:
    """The lab's ports as they are (none when there is no such lab)."""
    check_prefix(prefix)
    indexes = sorted(
        {int(n[len(prefix) :]) for n in _lab_namespaces(prefix) + _lab_port_names(prefix)}
    )
    by_name = {link.ifname: link.ifindex for link in netdev.links().values()}
    ports = [lab_port(prefix, i) for i in indexes]
    return Lab(prefix, [replace(p, ifindex=by_name.get(p.port)) for p in ports])


def _lab_namespaces(prefix: str) -> list[str]:
    return [n for n in netns.names() if re.fullmatch(re.escape(prefix) + r"\d+", n)]


def _lab_port_names(prefix: str) -> list[str]:
    pattern = re.escape(prefix) + r"\d+"
    return [link.ifname for link in netdev.links().values() if re.fullmatch(pattern, link.ifname)]


@contextmanager
def running(prefix: str, nports: int, queues: int = 1) -> Iterator[Lab]:
    lab = up(prefix, nports, queues)
    try:
        yield lab
    finally:
        down(prefix)


def ping(source: LabPort, target: LabPort, count: int = 3) -> PingResult:
    """Ping target's host from source's host with the system ping."""
    try:
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                source.netns,
                "ping",
                "-n",
                "-q",
                "-c",
                str(count),
                "-i",
                "0.2",
                "-W",
                "1",
                target.ip,
            ],
            capture_output=True,
            text=True,
            timeout=count * 2 + 10,
        )
    except FileNotFoundError as e:
        raise XdpfwdError(f"{e.filename} is not installed (ping comes from iputils-ping)") from e
    match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", proc.stdout)
    if match is None:
        raise XdpfwdError(f"ping gave no summary: {(proc.stderr or proc.stdout).strip()}")
    return PingResult(source, target, int(match.group(1)), int(match.group(2)))
