"""A throwaway lab: N ports, each a veth pair whose far end is a host in its own netns.

Port i is the veth end `<prefix><i>` in the current namespace (the one xdpfwd
forwards between); its peer `host0` lives in namespace `<prefix><i>` with address
198.18.0.<i>/24 (the RFC 2544 benchmarking range), like a host on a switch port.

The lab removes only what it made, known by a record rather than by name: its ports
carry the alias `xdpfwd-lab:<prefix>` (IFLA_IFALIAS), and its namespaces are listed,
with their inode numbers, in RECORD_DIR/<prefix>.json (/run is cleared at boot, like
namespaces). A device or namespace called like a lab's but not recorded is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from xdpfwd import interrupts
from xdpfwd.errors import InputError, PrereqError, XdpfwdError
from xdpfwd.kernel import devices, files, netdev, netns, offloads
from xdpfwd.model.reports import Lab, LabPort, PingResult
from xdpfwd.state import pins

HOST_DEV = "host0"
MAX_PORTS = 250
RECORD_DIR = "/run/xdpfwd/lab"
ALIAS_PREFIX = "xdpfwd-lab:"
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,9}$")


def check_prefix(prefix: str) -> None:
    if not _PREFIX.match(prefix):
        raise InputError(
            f"lab name {prefix!r}: 1-10 lowercase letters, digits or '-', starting with a letter"
        )


def alias(prefix: str) -> str:
    """The alias of the lab's ports: what marks them as the lab's."""
    return ALIAS_PREFIX + prefix


def lab_port(prefix: str, index: int) -> LabPort:
    name = f"{prefix}{index}"
    return LabPort(port=name, netns=name, host_dev=HOST_DEV, address=f"198.18.0.{index}/24")


def up(prefix: str, nports: int, queues: int = 1) -> Lab:
    """Build the lab; on any failure remove what was built. Raises InputError when
    the lab exists, or a device or namespace of one of its names does."""
    check_prefix(prefix)
    if not 2 <= nports <= MAX_PORTS:
        raise InputError(f"a lab has 2 to {MAX_PORTS} ports, not {nports}")
    if status(prefix).ports:
        raise InputError(f"lab {prefix} already exists; `xdpfwd lab down --name {prefix}` first")
    if pins.mounts_surely_vanish():
        # The host namespaces are bind mounts under /run/netns: they would go with
        # this mount namespace, and their veths with them.
        here = netns.current_name() or "NAME"
        raise PrereqError(
            "this process has a mount namespace of its own (as under `ip netns exec`), "
            "where the lab's host namespaces would vanish with it, and its ports too: "
            f"run it as `xdpfwd --netns {here} ...` instead"
        )
    ports = [lab_port(prefix, i) for i in range(1, nports + 1)]
    links = {link.ifname for link in netdev.links().values()}
    for p in ports:
        if p.port in links:
            raise InputError(f"interface {p.port} already exists; choose another lab name")
        if netns.exists(p.netns):
            raise InputError(f"network namespace {p.netns} already exists; choose another lab name")
    try:
        for p in ports:
            _build_port(prefix, p, queues)
            interrupts.check()
    except BaseException:
        down(prefix)
        raise
    return Lab(prefix, ports)


def _build_port(prefix: str, p: LabPort, queues: int) -> None:
    # down() removes what is recorded (namespaces) or marked (ports, by alias): an
    # interrupt waits until what is made is also recorded or marked.
    with interrupts.held():
        try:
            netns.create(p.netns)
        except FileExistsError:
            raise InputError(f"network namespace {p.netns} already exists") from None
        _record(prefix, p.netns)
    # The veth's far end lives in the recorded namespace: removing that takes the
    # pair, but in the background; down() removes the port itself first.
    with interrupts.held():
        devices.add_veth(p.port, p.host_dev, p.netns, queues)
        devices.set_alias(p.port, alias(prefix))
    devices.configure(p.port)
    devices.configure("lo", netns=p.netns)
    devices.configure(p.host_dev, netns=p.netns, address=p.address)
    with netns.entered(p.netns):
        # What doctor --fix does for users' veths (see state/health.py): the host
        # takes frames redirected to its port, and sends checksums XDP can forward.
        offloads.change(p.host_dev, tx=False, gro=True)


def down(prefix: str) -> list[str]:
    """Remove the lab's ports and namespaces (only what it recorded); return the
    namespaces removed. Raises XdpfwdError when there is no such lab but devices or
    namespaces of its names exist: they are someone else's.

    Ports go first: deleting a veth removes both ends at once, whereas a removed
    namespace takes its devices down later, in the background.
    """
    check_prefix(prefix)
    namespaces = _recorded_namespaces(prefix)
    ports = _lab_port_names(prefix)
    if not namespaces and not ports:
        _forget(prefix, None)
        others = _named_like(prefix)
        if others:
            raise XdpfwdError(
                f"no lab named {prefix}: {_listed(others)} "
                f"{'exists' if len(others) == 1 else 'exist'} but `xdpfwd lab up` did not "
                f"make {'it' if len(others) == 1 else 'them'}; left alone"
            )
        return []
    for name in ports:
        devices.delete_link(name)
    removed = []
    for name in namespaces:
        netns.remove(name)
        _forget(prefix, name)
        removed.append(name)
    _forget(prefix, None)
    return removed


def status(prefix: str) -> Lab:
    """The lab's ports as they are (none when there is no such lab)."""
    check_prefix(prefix)
    names = _recorded_namespaces(prefix) + _lab_port_names(prefix)
    indexes = sorted({int(n[len(prefix) :]) for n in names if _is_lab_name(prefix, n)})
    mark = alias(prefix)  # (a device made by hand under a port's name is not the port)
    by_name = {link.ifname: link.ifindex for link in netdev.links().values() if link.alias == mark}
    ports = [lab_port(prefix, i) for i in indexes]
    return Lab(prefix, [replace(p, ifindex=by_name.get(p.port)) for p in ports])


def _is_lab_name(prefix: str, name: str) -> bool:
    return re.fullmatch(re.escape(prefix) + r"\d+", name) is not None


def _lab_port_names(prefix: str) -> list[str]:
    """The devices here that the lab made: they carry its alias."""
    mark = alias(prefix)
    return sorted(link.ifname for link in netdev.links().values() if link.alias == mark)


def _named_like(prefix: str) -> list[str]:
    """Devices and namespaces called like the lab's ports, whoever made them."""
    links = [link.ifname for link in netdev.links().values()]
    return sorted({n for n in links + netns.names() if _is_lab_name(prefix, n)})


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


# --- the record of the lab's namespaces -------------------------------------------------


def _record_path(prefix: str) -> str:
    return os.path.join(RECORD_DIR, f"{prefix}.json")


def _read_record(prefix: str) -> dict[str, int]:
    """Namespace name -> inode number of the namespace the lab made under that name."""
    try:
        with open(_record_path(prefix)) as f:
            record = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise XdpfwdError(f"the record of lab {prefix} is unreadable ({e}): remove it") from e
    found = record.get("namespaces") if isinstance(record, dict) else None
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, int)}


def _write_record(prefix: str, namespaces: dict[str, int]) -> None:
    path = _record_path(prefix)
    if not namespaces:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.removedirs(RECORD_DIR)  # up to /run, as long as each is empty
        return
    os.makedirs(RECORD_DIR, mode=0o755, exist_ok=True)
    files.replace_atomically(path, json.dumps({"namespaces": namespaces}).encode())


def _namespace_inode(name: str) -> int | None:
    try:
        return os.stat(netns.path(name)).st_ino
    except OSError:
        return None


def _record(prefix: str, name: str) -> None:
    """Record a namespace the lab just made, by name and inode number."""
    record = _read_record(prefix)
    record[name] = _namespace_inode(name)
    _write_record(prefix, record)


def _forget(prefix: str, name: str | None) -> None:
    """Drop a namespace from the record; with None, drop the entries of namespaces that
    are gone or replaced. The record goes with its last entry."""
    record = _read_record(prefix)
    if name is not None:
        kept = {ns: ino for ns, ino in record.items() if ns != name}
    else:
        kept = {ns: ino for ns, ino in record.items() if _namespace_inode(ns) == ino}
    if kept != record:
        _write_record(prefix, kept)


def _recorded_namespaces(prefix: str) -> list[str]:
    """The lab's namespaces that still exist: recorded, and the same namespace (a
    namespace made again under the name by someone else has another inode)."""
    return sorted(
        name for name, ino in _read_record(prefix).items() if _namespace_inode(name) == ino
    )


@contextmanager
def running(prefix: str, nports: int, queues: int = 1) -> Iterator[Lab]:
    lab = up(prefix, nports, queues)
    try:
        yield lab
    finally:
        with interrupts.held():  # a second interrupt would leave namespaces
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
