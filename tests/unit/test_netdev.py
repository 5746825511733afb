"""Parsing of RTM_NEWLINK messages recorded from a real kernel (veths with and without XDP)."""

import json
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from xdpfwd.kernel.netdev import parse_link

RECORDED = json.loads((Path(__file__).parent / "data" / "rtm_newlink.json").read_text())


def recorded(name):
    msg = ifinfmsg(bytes.fromhex(RECORDED[name]))
    msg.decode()
    return parse_link(msg)


@pytest.mark.parametrize(
    "name, kind, mode, has_prog",
    [
        ("lo", None, None, False),
        ("v2", "veth", None, False),
        ("v1", "veth", "native", True),
        ("v3", "veth", "generic", True),
    ],
    ids=["loopback", "veth-no-xdp", "veth-native", "veth-generic"],
)
def test_parse_link(name, kind, mode, has_prog):
    link = recorded(name)
    assert link.ifname == name
    assert link.kind == kind
    assert link.xdp_mode == mode
    assert (link.xdp_prog_id > 0) == has_prog
    assert link.loopback == (name == "lo")


def test_veth_peer_index():
    v1, v2 = recorded("v1"), recorded("v2")
    assert v1.peer_ifindex == v2.ifindex and v2.peer_ifindex == v1.ifindex
