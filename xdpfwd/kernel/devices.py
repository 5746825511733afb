"""Creating and removing devices, for the labs and the bench (pyroute2): veth pairs,
a bridge, addresses, aliases. Only lab, demo and bench import it, so the other
commands do not pay pyroute2's import."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from xdpfwd.kernel import netns as namespaces


@contextmanager
def _iproute(netns: str | None = None) -> Iterator[IPRoute]:
    """An rtnetlink socket here, or in the named namespace: entered on this thread
    rather than with IPRoute(netns=...), which forks a helper (see netns.py)."""
    if netns is None:
        with IPRoute(ext_ack=True) as ipr:
            yield ipr
        return
    with namespaces.entered(netns):
        sock = IPRoute(ext_ack=True)
    with sock:
        yield sock


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
