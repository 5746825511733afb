"""Parsing of RTM_NEWLINK messages recorded from a real kernel (veths with and without XDP)."""

import json
import os
from pathlib import Path

import pytest

from xdpfwd.errors import InputError
from xdpfwd.kernel import netdev, rtnl
from xdpfwd.kernel.netdev import parse_link

RECORDED = json.loads((Path(__file__).parent / "data" / "rtm_newlink.json").read_text())


def recorded(name):
    message = bytes.fromhex(RECORDED[name])
    ((kind, _, _, body),) = rtnl.messages(message)
    assert kind == rtnl.RTM_NEWLINK
    return parse_link(body)


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


@pytest.mark.parametrize(
    "text, expected",
    [("17", 17), ("2147483647", 2147483647), ("eth1", None), ("١٧", None), (" 3", None)],
    ids=["ifindex", "largest", "a-name", "non-ascii-digits", "space"],
)
def test_ifindexes_are_ascii_numbers(text, expected):
    assert netdev.parse_ifindex(text) == expected


@pytest.mark.parametrize("text", ["0", "2147483648", "4294967296", "99999999999999999999"])
def test_ifindexes_out_of_range_are_refused_in_one_line(text):
    # 0 names no device (the kernel would answer with the first one, lo); the rest do
    # not fit the kernel's int and used to escape as a struct.error.
    with pytest.raises(InputError, match=f"no such interface: {text} \\(ifindexes run from 1"):
        netdev.parse_ifindex(text)


@pytest.mark.parametrize(
    "name, valid",
    [
        ("eth0", True),
        ("a" * 15, True),
        ("a" * 16, True),  # an altname
        ("a" * 127, True),
        ("a" * 128, False),
        ("s\x1fp", True),  # not a space to the kernel
        ("w\u2003x", True),
        ("voilà", False),  # U+00E0 is C3 A0, and 0xA0 is a space to the kernel
        ("", False),
        ("a/b", False),
        ("a b", False),
        ("a\nb", False),
        ("..", False),
        (os.fsdecode(b"\xff"), False),
    ],
    ids=[
        "eth0",
        "15-bytes",
        "16-bytes",
        "127-bytes",
        "128-bytes",
        "unit-separator",
        "em-space",
        "a-grave",
        "empty",
        "slash",
        "space",
        "newline",
        "dotdot",
        "not-utf8",
    ],
)
def test_interface_names_the_kernel_could_have(name, valid):
    assert netdev.valid_ifname(name) is valid


def test_names_are_looked_up_one_by_one_and_gone_ones_are_none():
    names = netdev.Names()
    try:
        assert names.get(1) == netdev.Named(1, "lo")  # every namespace has lo
        assert names.get(2**31 - 1) is None and names.get(0) is None and names.get(-1) is None
    finally:
        names.close()
