"""What keeps frames from leaving a port: problems of (ingress, egress) pairs, shared by
the commands that warn about them (add, broadcast, apply) and by doctor."""

from __future__ import annotations

from xdpfwd.kernel import netdev


def entry_problems(
    ingress: netdev.Link, egress: netdev.Link | None, features: dict[int, int] | None
) -> list[tuple[str, str]]:
    """What keeps frames from ingress from leaving on egress: (problem, fix) pairs."""
    if egress is None:
        return [(f"egress ifindex of {ingress.ifname} is gone", "xdpfwd prune")]
    problems = []
    native = ingress.xdp_mode == "native"
    can_take = features is None or features.get(egress.ifindex, 0) & netdev.XDP_ACT_NDO_XMIT
    if native and not can_take:
        if egress.kind == "veth":
            fix = (
                f"give {egress.ifname}'s veth peer GRO (ethtool -K PEER gro on, in its "
                "namespace) or an XDP program"
            )
        else:
            fix = "its driver cannot; forward with --mode generic"
        problems.append(
            (f"{egress.ifname} cannot take frames redirected to it: they are dropped", fix)
        )
    if egress.mtu < ingress.mtu:
        problems.append(
            (
                f"{egress.ifname} has MTU {egress.mtu}, below {ingress.ifname}'s {ingress.mtu}: "
                "longer frames are dropped",
                f"raise {egress.ifname}'s MTU",
            )
        )
    return problems


def warnings_for(pairs: list[tuple[int, int]], links: dict[int, netdev.Link]) -> tuple[str, ...]:
    """The problems of these (ingress, egress) pairs, as one-line warnings; links are
    the command's (attach modes current)."""
    features = netdev.xdp_features()
    found = []
    for ingress, egress in pairs:
        if ingress in links:
            for problem, fix in entry_problems(links[ingress], links.get(egress), features):
                found.append(f"{problem} ({fix})")
    return tuple(dict.fromkeys(found))


def flood_problem(member: netdev.Link, frags: bool) -> tuple[str, str] | None:
    """What keeps a broadcast group from flooding the long frames entering member:
    with multi-buffer programs, frames longer than a page-sized buffer come in
    several, and the kernel cannot clone those for a broadcast (the program drops
    them and counts them as too big to flood). (problem, fix), or None."""
    if not frags or member.mtu <= netdev.SINGLE_BUFFER_MTU:
        return None
    longest = netdev.SINGLE_BUFFER_MTU + 14
    return (
        f"{member.ifname} has MTU {member.mtu}: frames over {longest} bytes entering it "
        "come in several buffers, which the kernel cannot flood; they are dropped and "
        "counted as too big to flood",
        f"keep group members at MTU {netdev.SINGLE_BUFFER_MTU} or below, or forward "
        "long frames with `xdpfwd add`",
    )


def flood_warnings(
    members: list[int], links: dict[int, netdev.Link], frags: bool
) -> tuple[str, ...]:
    """The flood problems of broadcast members, as one-line warnings."""
    found = []
    for member in members:
        problem = flood_problem(links[member], frags) if member in links else None
        if problem is not None:
            found.append(f"{problem[0]} ({problem[1]})")
    return tuple(found)
