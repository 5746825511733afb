"""xdpfwd's own netlink client against the kernel: what it reads of links is what
iproute2 reads, lookups of missing links are None, the kernel's refusals keep their
errno and extended ack message, and a generic netlink dump (the netdev family's
replies lack NLM_F_MULTI) is read to its end."""

import errno
import json
import os

import pytest

from xdpfwd.errors import InputError
from xdpfwd.kernel import netdev, rtnl

from .net import in_netns, load_xdp_pass_program, sh


def ip_links(ns: str) -> dict[str, dict]:
    return {i["ifname"]: i for i in json.loads(sh("ip", "-n", ns, "-j", "link", "show").stdout)}


def test_links_read_as_iproute2_reads_them(scratch_ns):
    sh("ip", "-n", scratch_ns, "link", "add", "q1", "mtu", "2000", "type", "veth", "peer", "q2")
    sh("ip", "-n", scratch_ns, "link", "set", "q1", "up", "alias", "a port")
    with in_netns(scratch_ns):
        dumped = netdev.links()
        by_name = netdev.link_by_name("q1")
        missing = netdev.link_by_name("nope"), netdev.link(2**31 - 1)
    expected = ip_links(scratch_ns)
    assert sorted(link.ifname for link in dumped.values()) == sorted(expected)
    for link in dumped.values():
        want = expected[link.ifname]
        assert (link.ifindex, link.mtu, link.mac) == (want["ifindex"], want["mtu"], want["address"])
        assert link.up == ("UP" in want["flags"])
        assert link.operstate == want["operstate"]
    assert by_name == dumped[by_name.ifindex]
    assert by_name.kind == "veth" and by_name.alias == "a port" and by_name.mtu == 2000
    assert by_name.peer_ifindex == expected["q2"]["ifindex"]
    assert missing == (None, None)


def test_the_kernels_refusal_keeps_its_errno_and_message(scratch_ns):
    sh("ip", "-n", scratch_ns, "link", "add", "q1", "type", "veth", "peer", "q2")
    with in_netns(scratch_ns):
        sock = rtnl.route_socket()
        try:
            q1 = netdev.link_by_name("q1")
            too_big = rtnl.ifinfo(q1.ifindex) + rtnl.u32(rtnl.IFLA_MTU, 1_000_000)
            with pytest.raises(rtnl.NetlinkError) as refused:
                sock.request(rtnl.RTM_SETLINK, rtnl.NLM_F_ACK, too_big)
            # The socket still answers the next request in order.
            assert rtnl.get_links(sock, index=q1.ifindex)
        finally:
            sock.close()
    assert refused.value.errno == errno.EINVAL
    assert "mtu greater than device maximum" in refused.value.message
    assert ip_links(scratch_ns)["q1"]["mtu"] == 1500


def test_xdp_features_cover_every_link(scratch_ns):
    for i in range(3):
        sh("ip", "-n", scratch_ns, "link", "add", f"q{i}", "type", "veth", "peer", f"r{i}")
    with in_netns(scratch_ns):
        features = netdev.xdp_features()
    if features is None:
        pytest.skip("this kernel has no netdev generic netlink family (Linux < 6.3)")
    ifindexes = {i["ifindex"]: i["ifname"] for i in ip_links(scratch_ns).values()}
    assert set(features) == set(ifindexes)
    for ifindex, name in ifindexes.items():
        assert bool(features[ifindex] & netdev.XDP_ACT_BASIC) == (name != "lo")


def test_attaching_to_a_device_that_went_away_says_so(scratch_ns):
    sh("ip", "-n", scratch_ns, "link", "add", "q1", "type", "veth", "peer", "q2")
    with in_netns(scratch_ns):
        q1 = netdev.link_by_name("q1")
    sh("ip", "-n", scratch_ns, "link", "del", "q1")
    fd = load_xdp_pass_program()
    try:
        with in_netns(scratch_ns), pytest.raises(InputError, match="no such interface: q1"):
            netdev.attach_xdp(q1, fd, "auto")
    finally:
        os.close(fd)


def test_a_device_is_found_by_any_name_the_kernel_takes(scratch_ns):
    long_altname = "uplink-to-the-core-switch-rack-7"  # longer than IFNAMSIZ
    sh("ip", "-n", scratch_ns, "link", "add", "s\x1fp", "type", "veth", "peer", "q2")
    sh("ip", "-n", scratch_ns, "link", "property", "add", "dev", "q2", "altname", long_altname)
    with in_netns(scratch_ns):
        assert netdev.resolve("s\x1fp").ifname == "s\x1fp"
        assert netdev.resolve(long_altname).ifname == "q2"
