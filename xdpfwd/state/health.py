"""What keeps frames from getting through a port: problems of (ingress, egress) pairs,
shared by the commands that warn about them (add, broadcast, apply) and by doctor,
which can also fix the ones that are settings of a veth peer (`doctor --fix`).

Measured on veth (PLATFORM.md): native XDP turns a sender's skb into an xdp_frame and
the partial-checksum state is lost, so a peer that sends with TX checksum offload
(every container runtime's default) gets none of its UDP or TCP through; generic XDP
keeps it but refuses GSO super-frames larger than the egress MTU, so large TCP
transfers stall. Only the sender's settings fix it. And a frame redirected into a
veth is dropped unless the veth's peer has GRO or an XDP program. With multi-buffer
programs, a broadcast member whose MTU lets in frames longer than one buffer cannot
flood those (too big to flood: counted, a warning rather than a failure).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from xdpfwd.errors import XdpfwdError
from xdpfwd.kernel import netdev, netns, offloads
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import (
    STATE_DEVICE_GONE,
    STATE_DOWN,
    STATE_EGRESS_DOWN,
    STATE_EGRESS_GONE,
    STATE_NO_ENTRY,
    STATE_NOT_ATTACHED,
    STATE_NOT_FLOODING,
    STATE_OK,
    STATE_UNPINNED_GROUP,
    GroupInfo,
    Iface,
)
from xdpfwd.state import intent, multicast
from xdpfwd.state.dataplane import Dataplane


@dataclass(frozen=True)
class Problem:
    # A stable key: sender_offload, receiver_gro, driver, mtu, egress_gone,
    # egress_down, too_big_to_flood.
    kind: str
    ifindex: int  # the port it is about (whose veth peer --fix changes)
    port: str
    text: str
    fix: str  # one line: a command, or what to do
    peer_change: tuple[tuple[str, bool], ...] = ()  # what --fix sets on the peer
    # Only some frames are lost, by design (doctor warns rather than fails).
    warn_only: bool = False

    @property
    def line(self) -> str:
        return f"{self.text} (fix: {self.fix})"


def sender_problems(
    port: netdev.Link, peer: offloads.Peer | None, features: dict[str, bool] | None
) -> list[Problem]:
    """What the veth peer of port, which sends into it, loses across XDP."""
    if port.kind != "veth" or peer is None or features is None:
        return []
    where = f"{peer.namespace.label}" if peer.namespace else "this namespace"
    sender = f"{port.ifname}'s veth peer {peer.ifname} ({where})"
    if port.xdp_mode == "native" and features.get("tx"):
        kind, change = "sender_offload", {"tx": False}
        text = (
            f"{sender} sends with TX checksum offload: native XDP loses the partial "
            "checksums, so none of its UDP or TCP gets through"
        )
    # GSO alone is no problem: without TSO the stack segments before the veth (with
    # `tx off`, TSO goes off and GSO stays on: 4 MB of TCP measured through).
    elif port.xdp_mode == "generic" and features.get("tso"):
        kind, change = "sender_offload", {"tso": False, "gso": False}
        text = (
            f"{sender} sends TCP segments larger than the MTU (TSO/GSO): generic XDP "
            "refuses them, so large TCP transfers stall"
        )
    else:
        return []
    fix = peer.command(**change)
    return [Problem(kind, port.ifindex, port.ifname, text, fix, tuple(change.items()))]


def entry_problems(
    ingress: netdev.Link,
    egress: netdev.Link | None,
    features: dict[int, int] | None,
    egress_peer: offloads.Peer | None = None,
    floods: bool = False,
) -> list[Problem]:
    """What keeps frames from ingress from leaving on egress (as copies, if it floods:
    a broadcast member or multicast source)."""
    if egress is None:
        gone = f"the egress of {ingress.ifname} is gone"
        return [Problem("egress_gone", ingress.ifindex, ingress.ifname, gone, "xdpfwd prune")]
    problems = []
    if not egress.live:
        problems.append(_egress_down(egress, egress_peer))
    native = ingress.xdp_mode == "native"
    can_take = features is None or features.get(egress.ifindex, 0) & netdev.XDP_ACT_NDO_XMIT
    if native and not can_take:
        text = f"{egress.ifname} cannot take frames redirected to it: they are dropped"
        if egress_peer is not None:
            change = {"gro": True}
            fix = egress_peer.command(**change)
            problems.append(
                Problem(
                    "receiver_gro", egress.ifindex, egress.ifname, text, fix, tuple(change.items())
                )
            )
        elif egress.kind == "veth":
            fix = f"give {egress.ifname}'s veth peer GRO (ethtool -K PEER gro on) or XDP"
            problems.append(Problem("receiver_gro", egress.ifindex, egress.ifname, text, fix))
        else:
            fix = "its driver cannot; forward with --mode generic"
            problems.append(Problem("driver", egress.ifindex, egress.ifname, text, fix))
    if egress.mtu < ingress.mtu:
        text = (
            f"{egress.ifname} has MTU {egress.mtu}, below {ingress.ifname}'s {ingress.mtu}: "
            "longer frames are dropped"
        )
        # A group floods no frame longer than one buffer: raising the member above
        # that would only move the loss (too_big_to_flood); lower the ingress instead.
        lower = floods and ingress.mtu > netdev.SINGLE_BUFFER_MTU
        port, mtu = (ingress.ifname, egress.mtu) if lower else (egress.ifname, ingress.mtu)
        fix = netns.as_run_from_the_shell(f"ip link set dev {port} mtu {mtu}")
        problems.append(Problem("mtu", egress.ifindex, egress.ifname, text, fix))
    elif egress_peer is not None and egress_peer.mtu is not None and egress_peer.mtu < ingress.mtu:
        peer = egress_peer.ifname
        text = (
            f"{egress.ifname}'s veth peer {peer} has MTU {egress_peer.mtu}, below "
            f"{ingress.ifname}'s {ingress.mtu}: longer frames are dropped"
        )
        fix = egress_peer.shell(f"ip link set dev {peer} mtu {ingress.mtu}")
        problems.append(Problem("mtu", egress.ifindex, egress.ifname, text, fix))
    return problems


def _egress_down(egress: netdev.Link, peer: offloads.Peer | None) -> Problem:
    """An egress that cannot send: the driver drops what is redirected to it (counted
    as transmit drops natively; in generic mode, and for a group's copies, nowhere)."""
    if not egress.up:
        why, fix = "is down", netns.as_run_from_the_shell(f"ip link set dev {egress.ifname} up")
    elif peer is not None:
        why = f"has no carrier (its veth peer {peer.ifname} is down)"
        fix = peer.shell(f"ip link set dev {peer.ifname} up")
    else:
        why, fix = "has no carrier", f"connect {egress.ifname}, or bring its other end up"
    text = f"{egress.ifname} {why}: frames sent to it are dropped"
    return Problem("egress_down", egress.ifindex, egress.ifname, text, fix, warn_only=True)


def forwarding_loop(
    entries: Mapping[int, int | Collection[int]], links: dict[int, netdev.Link]
) -> list[int]:
    """A cycle that frames would go round forever, as the ports it passes (empty if
    none): each entry sends out of its egress (a balanced entry out of any of its
    ports: some flows take each), and what leaves a veth enters its peer, which
    forwards again if it has an entry. Only peers in this namespace are known."""
    return [ingress for ingress, _ in loop_hops(entries, links)]


def loop_hops(
    entries: Mapping[int, int | Collection[int]],
    links: dict[int, netdev.Link],
    through: Collection[int] | None = None,
) -> list[tuple[int, int]]:
    """The (ingress, egress) hops of a forwarding loop, as forwarding_loop finds it;
    with through, only a loop that passes one of those ports."""

    def far_end(port: int) -> int | None:
        link = links.get(port)
        if link is None or link.kind != "veth" or link.peer_netnsid is not None:
            return None
        return link.peer_ifindex if link.peer_ifindex in links else None

    def egress_of(port: int) -> list[int]:
        found = entries.get(port)
        if found is None:
            return []
        # Back out of the port itself last: a loop through other ports reads plainer.
        return [found] if isinstance(found, int) else sorted(found, key=lambda e: (e == port, e))

    for start in entries if through is None else through:
        # Depth first from start, back to it; a cycle that does not pass start is
        # found from its own start.
        path: list[tuple[int, int]] = []
        stack = [(start, iter(egress_of(start)))]
        seen = {start}
        while stack:
            port, untried = stack[-1]
            egress = next(untried, None)
            if egress is None:
                stack.pop()
                if path:
                    path.pop()
                continue
            after = far_end(egress)
            if after == start:
                return [*path, (port, egress)]
            if after is None or after in seen:
                continue
            seen.add(after)
            path.append((port, egress))
            stack.append((after, iter(egress_of(after))))
    return []


def forwarding_graph(dp: Dataplane) -> dict[int, set[int]]:
    """Where each port sends what enters it: a single entry's egress, each port a
    balanced entry's buckets point at, or every member of its broadcast group."""
    graph = {}
    for port in dp.ports.ifindexes():
        entry = dp.fwd.get(port)
        if entry is not None:
            graph[port] = {entry.egress_ifindex}
        elif dp.balance is not None and dp.balance.get(port) is not None:
            graph[port] = {e.egress_ifindex for e in dp.buckets.table(port) if e is not None}
    for name in dp.group_names():
        members = set(dp.open_group(name).members())
        settings = [dp.ports.get(m) for m in members]
        exclude = any(s is not None and s.flags & maps.PORT_EXCLUDE_INGRESS for s in settings)
        graph.update(flood_graph(members, exclude))
    return graph


def flood_graph(members: Collection[int], exclude_ingress: bool) -> dict[int, set[int]]:
    """Where a broadcast group's members send what enters them."""
    return {m: {o for o in members if o != m or not exclude_ingress} for m in members}


def configured_graph(
    forward: Iterable, balanced: Iterable, groups: Iterable, index: Mapping[str, int]
) -> dict[int, set[int]]:
    """Where a configuration's entries, balanced entries and broadcast groups (by
    name, as a file or the recorded configuration has them) send what enters each
    port of index (name -> ifindex); names not in index are left out."""
    graph: dict[int, set[int]] = {}
    for entry in forward:
        if entry.ingress in index and entry.egress in index:
            graph[index[entry.ingress]] = {index[entry.egress]}
    for entry in balanced:
        if entry.ingress in index:
            graph[index[entry.ingress]] = {index[name] for name in entry.ports if name in index}
    for group in groups:
        members = [index[name] for name in group.members if name in index]
        graph.update(flood_graph(members, group.exclude_ingress))
    return graph


def _recorded_graph(dp: Dataplane, links: dict[int, netdev.Link]) -> dict[int, set[int]]:
    """Where the recorded configuration sends what enters each port here: what prune
    and follow restore. A balanced entry's port that is down holds no bucket now, and
    a device re-created under a name has lost its entry or membership meanwhile."""
    recorded = intent.current(dp, links)
    if recorded is None:
        return {}
    index = {link.ifname: link.ifindex for link in links.values()}
    config = recorded.config
    return configured_graph(config.forward, config.balanced, config.groups, index)


def _restored_multicast(dp: Dataplane, links: dict[int, netdev.Link]) -> dict[str, Any]:
    """The multicast groups by address, as prune and follow restore them: as they run,
    with the recorded members whose device is here (one made again rejoins)."""
    groups: dict[str, Any] = {a.text: g for a, g in multicast.read_groups(dp).items()}
    recorded = intent.current(dp, links)
    index = {link.ifname: link.ifindex for link in links.values()}
    for wanted in recorded.config.multicast if recorded is not None else ():
        have = groups.get(wanted.group)
        sources = {index[n] for n in wanted.sources if n in index}
        receivers = {index[n] for n in wanted.receivers if n in index}
        if have is not None:
            sources, receivers = sources | have.sources, receivers | have.receivers
        if sources and receivers:
            groups[wanted.group] = multicast.GroupPorts(
                frozenset(sources), frozenset(receivers), wanted.exclude_ingress
            )
    return groups


def refuse_paths(
    dp: Dataplane,
    links: dict[int, netdev.Link],
    adding: dict[int, set[int]],
    force: bool,
) -> tuple[str, ...]:
    """Raise XdpfwdError if adding (ingress -> where it sends, replacing what ingress
    has) closes a forwarding loop with the entries and groups there are, for any
    frame or for a multicast group's own, or sends a group's copies and other frames
    of a source out of one port (shared_bulks); with force, the warnings to print
    instead."""
    graph = _running_graph(dp, links)
    graph.update(adding)
    groups = _restored_multicast(dp, links)
    # Only what passes what changes: one added with --force before stays its own.
    loop = find_loop(graph, links, groups.values(), through=adding)
    shared = shared_bulks(graph, groups, sources=adding)
    return (
        *refuse_loop(loop, links, force, "add them", _forgettable(dp, links, loop, adding)),
        *refuse_shared_bulk(shared, links, force, "add them"),
    )


def _forgettable(
    dp: Dataplane, links: dict[int, netdev.Link], loop: list[tuple[int, int]], adding
) -> str | None:
    """The command that forgets a hop of loop that does not run, which prune would
    restore (the recorded entry or membership of a device made again), if it has one."""
    running = forwarding_graph(dp)
    waiting = [(i, e) for i, e in loop if i not in adding and e not in running.get(i, set())]
    recorded = intent.current(dp, links) if waiting else None
    for ingress, egress in waiting:
        name = _label(ingress, links)
        if recorded is None or recorded.balanced(name) is not None:
            continue  # a balanced entry's port that is down: del would drop the entry
        verb = "broadcast del" if recorded.group_of(name) else "del"
        return (
            f"{name} -> {_label(egress, links)} does not run, but prune would restore it: "
            f"`{dp.pins.command(f'{verb} {name}')}` forgets it"
        )
    return None


def refuse_multicast_paths(
    dp: Dataplane,
    links: dict[int, netdev.Link],
    address: str,
    group: multicast.GroupPorts,
    now: multicast.GroupPorts | None,
    force: bool,
) -> tuple[str, ...]:
    """As refuse_paths, for multicast group address as it is to be (group; now: as it
    is): its own frames' loops through its sources, and its sources' other frames out
    of a receiver it did not send them to before (one made with --force stays)."""
    running = _running_graph(dp, links)
    shared = new_shared_bulks(running, address, group, now)
    return (
        *refuse_loop(multicast_loop(running, group, links), links, force, "add them"),
        *refuse_shared_bulk(shared, links, force, "add them"),
    )


def new_shared_bulks(
    graph: dict[int, set[int]], address: str, group: Any, now: Any | None
) -> list[tuple[int, int, str]]:
    """The shared bulks (shared_bulks) of multicast group address as group that it
    does not have as it runs (now; None: it does not run)."""
    before = shared_bulks(graph, {address: now}) if now is not None else []
    return [s for s in shared_bulks(graph, {address: group}) if s not in before]


def multicast_loop(
    graph: dict[int, set[int]], group: Any, links: dict[int, netdev.Link]
) -> list[tuple[int, int]]:
    """The hops of a loop that group's own frames (group: anything with sources,
    receivers and exclude_ingress) go round through one of its sources, graph
    sending the rest."""
    own = _multicast_graph(graph, group.sources, group.receivers, group.exclude_ingress)
    return loop_hops(own, links, through=group.sources)


def find_loop(
    graph: dict[int, set[int]],
    links: dict[int, netdev.Link],
    multicast_groups: Collection = (),
    through: Collection[int] | None = None,
) -> list[tuple[int, int]]:
    """loop_hops of graph, or else of graph as the own frames of one of the multicast
    groups (anything with sources, receivers and exclude_ingress) see it."""
    graphs = [
        graph,
        *(
            _multicast_graph(graph, g.sources, g.receivers, g.exclude_ingress)
            for g in multicast_groups
        ),
    ]
    return next(filter(None, (loop_hops(g, links, through) for g in graphs)), [])


def _multicast_graph(
    graph: dict[int, set[int]],
    sources: Collection[int],
    receivers: Collection[int],
    exclude_ingress: bool,
) -> dict[int, set[int]]:
    """graph for a multicast group's own frames: a source sends those to the group's
    receivers instead of where its entry or broadcast group sends the rest."""
    return graph | {s: {r for r in receivers if r != s or not exclude_ingress} for s in sources}


def _running_graph(dp: Dataplane, links: dict[int, netdev.Link]) -> dict[int, set[int]]:
    """forwarding_graph, with what the recorded configuration adds to it."""
    graph = forwarding_graph(dp)
    for port, configured in _recorded_graph(dp, links).items():
        graph[port] = graph.get(port, set()) | configured
    return graph


def shared_bulks(
    graph: dict[int, set[int]],
    groups: Mapping[str, Any],
    sources: Collection[int] | None = None,
) -> list[tuple[int, int, str]]:
    """(source port, receiver, group address) where a multicast group's source also
    sends its other frames out of that receiver: by its entry, balanced entry or
    broadcast group (graph). groups: by address, anything with sources, receivers
    and exclude_ingress; only the given sources, with sources.

    Native XDP queues a bulk of frames per egress device and CPU, and the kernel runs
    the devmap egress program of the bulk's first frame on all of them (devmap.c,
    bq_enqueue), so the group's copies and the port's other frames would run each
    other's egress program: copies counted as forwarded or forwarded frames as copies,
    an entry's MAC rewrite (or user program) applied to copies or skipped on its own
    frames. Found whatever the mode and table: both can change later."""
    found = []
    for address, group in sorted(groups.items()):
        for source in sorted(group.sources):
            if sources is not None and source not in sources:
                continue
            copied_to = {r for r in group.receivers if r != source or not group.exclude_ingress}
            found += [(source, r, address) for r in sorted(copied_to & graph.get(source, set()))]
    return found


@dataclass(frozen=True)
class ForcedPaths:
    """What runs that the checks refuse without --force: made with it, or before
    xdpfwd refused them."""

    graph: dict[int, set[int]]  # forwarding_graph
    groups: dict[str, Any]  # the multicast groups, by address
    loop: list[tuple[int, int]]  # a loop's hops (find_loop), empty for none
    shared: list[tuple[int, int, str]]  # shared_bulks


def forced_paths(dp: Dataplane, links: dict[int, netdev.Link]) -> ForcedPaths:
    """The loop and the shared bulks that run in dp."""
    graph = forwarding_graph(dp)
    groups = {addr.text: g for addr, g in multicast.read_groups(dp).items()}
    loop = find_loop(graph, links, groups.values())
    return ForcedPaths(graph, groups, loop, shared_bulks(graph, groups))


def refuse_shared_bulk(
    found: list[tuple[int, int, str]], links: dict[int, netdev.Link], force: bool, doing: str
) -> tuple[str, ...]:
    """Raise XdpfwdError naming the first of shared_bulks' finds, that --force would
    `doing` anyway; with force, the warning to print instead."""
    if not found:
        return ()
    message = shared_bulk_text(found[0], links, "would send")
    if not force:
        source, receiver = found[0][:2]
        way_out = (
            "--exclude-ingress keeps its copies from going back out of it"
            if source == receiver
            else f"take {_label(receiver, links)} out of one of them"
        )
        raise XdpfwdError(f"{message}; refused ({way_out}, or --force to {doing} anyway)")
    return (message,)


def shared_bulk_text(shared: tuple[int, int, str], links: dict[int, netdev.Link], verb: str) -> str:
    """What one of shared_bulks' finds does: `verb` is "sends" or "would send"."""
    source, receiver = (_label(port, links) for port in shared[:2])
    return (
        f"{source} {verb} both multicast group {shared[2]} and its other frames out of "
        f"{receiver}: the kernel runs one egress program on each bulk of frames from "
        f"{source} to {receiver}, so each would be counted (or rewritten) as the other"
    )


def _label(port: int, links: dict[int, netdev.Link]) -> str:
    return links[port].ifname if port in links else f"ifindex {port}"


def refuse_loop(
    hops: list[tuple[int, int]],
    links: dict[int, netdev.Link],
    force: bool,
    doing: str,
    forget: str | None = None,
) -> tuple[str, ...]:
    """Raise XdpfwdError naming the loop of hops (if any) that --force would `doing`
    anyway (forget: another way out); with force, the warning to print instead."""
    if not hops:
        return ()
    label = functools.partial(_label, links=links)
    # Each hop's egress is the veth peer of the next hop's ingress (loop_hops).
    steps = [
        f"out of {label(egress)}, into its veth peer {label(hops[(i + 1) % len(hops)][0])}"
        for i, (_, egress) in enumerate(hops)
    ]
    path = f"{label(hops[0][0])} sends them " + ", which sends them ".join(steps)
    message = f"frames would go round a loop forever: {path}"
    if not force:
        way_out = (
            f"{forget}, or --force to {doing} anyway" if forget else f"--force to {doing} anyway"
        )
        raise XdpfwdError(f"{message}; refused ({way_out})")
    return (message,)


def port_state(
    link: netdev.Link | None,
    egress: Iface | None,
    attached: bool,
    has_entry: bool,
    group: str | None,
    settings: maps.PortSettings,
    flooding: bool,
    egress_gone: bool = False,
    egress_down: bool = False,
) -> str:
    """What a port does, compared with what its role says it should: a port that is
    meant to forward or flood but whose settings make it miss is not ok. egress_gone:
    the port's entry (the recorded one of a port without one) has no egress device;
    egress_down: its entry's egress device is down or has no carrier."""
    if link is None or (egress is not None and egress.ifname is None):
        return STATE_DEVICE_GONE
    if not attached:
        return STATE_NOT_ATTACHED
    if egress_gone:
        return STATE_EGRESS_GONE
    if not link.up:  # (administratively: the carrier's state reaches netlink with a lag)
        return STATE_DOWN
    if not has_entry and group is None:
        return STATE_UNPINNED_GROUP if flooding else STATE_NO_ENTRY
    if group is not None and not has_entry and not (settings.broadcast and flooding):
        return STATE_NOT_FLOODING
    return STATE_EGRESS_DOWN if egress_down else STATE_OK


def managed_pairs(dp: Dataplane, groups: list[GroupInfo]) -> list[tuple[int, int]]:
    """The (ingress, egress) pairs of a dataplane: its entries (each egress port a
    balanced entry's buckets point at), every two members of a broadcast group, and
    each multicast source with the receivers its copies go to."""
    pairs = []
    for port in sorted(dp.ports.ifindexes()):
        entry = dp.fwd.get(port)
        if entry is not None:
            pairs.append((port, entry.egress_ifindex))
        elif dp.balance is not None and dp.balance.get(port) is not None:
            egress = {e.egress_ifindex for e in dp.buckets.table(port) if e is not None}
            pairs += [(port, e) for e in sorted(egress)]
    for group in groups:
        members = [m.ifindex for m in group.members]
        pairs += [(a, b) for a in members for b in members if a != b]
    for source, receivers in sorted(multicast.targets_of(dp).items()):
        pairs += [(source, r) for r in sorted(receivers)]
    return list(dict.fromkeys(pairs))


def problems(
    pairs: list[tuple[int, int]],
    links: dict[int, netdev.Link],
    features: dict[int, int] | None,
    peers: dict[int, offloads.Peer],
    peer_features: dict[int, dict[str, bool]],
    floods: Collection[int] = (),
) -> list[Problem]:
    """Every problem of these (ingress, egress) pairs, each once; the ingress ports'
    veth peers send, the egress ports' peers receive; floods: the ingress ports whose
    frames leave as a group's copies."""
    found: list[Problem] = []
    for ingress in dict.fromkeys(i for i, _ in pairs):
        if ingress in links:
            found += sender_problems(links[ingress], peers.get(ingress), peer_features.get(ingress))
    for ingress, egress in pairs:
        if ingress in links:
            found += entry_problems(
                links[ingress], links.get(egress), features, peers.get(egress), ingress in floods
            )
    return list(dict.fromkeys(found))


@contextmanager
def inspected(
    pairs: list[tuple[int, int]],
    links: dict[int, netdev.Link],
    features: dict[int, int] | None = None,
    floods: Collection[int] = (),
) -> Iterator[tuple[list[Problem], dict[int, offloads.Peer]]]:
    """The problems of pairs, read from the kernel, with the veth peers open (so that
    doctor --fix can change them) until the end of the block."""
    ports = {port for pair in pairs for port in pair}
    veths = {
        port: (links[port].peer_ifindex, links[port].peer_netnsid)
        for port in ports
        if port in links and links[port].kind == "veth" and links[port].peer_ifindex
    }
    with offloads.peers(veths) as peers:
        read = {}
        for port, peer in peers.items():
            try:
                read[port] = peer.read()
            except OSError:
                pass  # gone meanwhile
        if features is None:
            features = netdev.xdp_features()
        yield problems(pairs, links, features, peers, read, floods), peers


def warnings_for(pairs: list[tuple[int, int]], links: dict[int, netdev.Link]) -> tuple[str, ...]:
    """The problems of these (ingress, egress) pairs, as one-line warnings; links are
    the command's (attach modes current)."""
    with inspected(pairs, links) as (found, _):
        lines = [p.line for p in found]
    said = {p.ifindex for p in found if p.kind == "egress_down"}  # (its own line says so)
    for ingress in dict.fromkeys(i for i, _ in pairs):
        link = links.get(ingress)
        if link is not None and not link.live and ingress not in said:
            if link.up:  # (the carrier: its veth peer, or the cable, is down)
                why, fix = "has no carrier", f"bring {link.ifname}'s other end up"
            else:
                why = "is down"
                fix = netns.as_run_from_the_shell(f"ip link set dev {link.ifname} up")
            lines.append(f"{link.ifname} {why}: nothing enters it (fix: {fix})")
    return tuple(lines)


def flood_problems(members: list[int], links: dict[int, netdev.Link], frags: bool) -> list[Problem]:
    """What keeps a broadcast group from flooding the long frames entering its members
    (or a multicast group from copying those entering its sources): with multi-buffer
    programs, frames longer than a page-sized buffer come in several, and the kernel
    cannot clone those for a broadcast (the program drops them and counts them as too
    big to flood). Members gone are skipped."""
    found = []
    for member in dict.fromkeys(members):
        link = links.get(member)
        if not frags or link is None or link.mtu <= netdev.SINGLE_BUFFER_MTU:
            continue
        longest = netdev.SINGLE_BUFFER_MTU + 14
        text = (
            f"{link.ifname} has MTU {link.mtu}: frames over {longest} bytes entering it "
            "come in several buffers, which the kernel cannot flood; they are dropped and "
            "counted as too big to flood"
        )
        fix = (
            f"keep group members at MTU {netdev.SINGLE_BUFFER_MTU} or below, or forward "
            "long frames with `xdpfwd add`"
        )
        found.append(Problem("too_big_to_flood", member, link.ifname, text, fix, warn_only=True))
    return found


def flood_warnings(
    members: list[int], links: dict[int, netdev.Link], frags: bool
) -> tuple[str, ...]:
    """The flood problems of broadcast members, as one-line warnings."""
    return tuple(p.line for p in flood_problems(members, links, frags))


def fix(problem: Problem, peers: dict[int, offloads.Peer]) -> bool:
    """Make the peer change problem names; False if it names none. Raises OSError."""
    peer = peers.get(problem.ifindex)
    if not problem.peer_change or peer is None:
        return False
    peer.change(**dict(problem.peer_change))
    return True
