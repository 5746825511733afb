"""Balanced entries in the dataplane: the ingress port's hash mode (`balance`) and its
buckets (`buckets`, a DEVMAP_HASH keyed by ingress and bucket), written inside a
change with undo, read back for list, stats and save.

Every write leaves traffic flowing: buckets are updated one by one (each an atomic
devmap update, and only those that change), a single entry the port had is removed
only once its buckets are in place, and the ingress program prefers a single entry,
so one written over a balanced entry takes effect at once.

The buckets' egress program is by default the one broadcast groups use (it counts
each frame on its (ingress, egress) pair), so each egress port's share is counted
(see prog_fd); with --src-mac/--dst-mac or --egress-prog the entry's frames are
counted as a whole, and with --no-egress they run none (the ingress port's redirect
counters are the entry's total).
"""

from __future__ import annotations

from xdpfwd.errors import XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import BalanceInfo, BalancePort, EgressProg, EgressSpec, Iface
from xdpfwd.state import buckets, entries
from xdpfwd.state.config import BalancedConf
from xdpfwd.state.dataplane import Dataplane, hold_program
from xdpfwd.state.ports import known, map_write, prog_name
from xdpfwd.state.transaction import Change

PORT_UP, PORT_DOWN, PORT_GONE = "up", "down", "gone"


def check_supported(dp: Dataplane) -> None:
    """Raises XdpfwdError for pins set up before xdpfwd had balanced entries."""
    if dp.balance is None:
        raise XdpfwdError(
            f"the program pinned in {dp.pins.path} predates balanced entries; rebuild it: "
            f"{dp.pins.rebuild_hint()}"
        )


def check_ifindex(link: netdev.Link) -> None:
    if link.ifindex >= 1 << (32 - maps.BUCKET_BITS):
        raise XdpfwdError(
            f"{link.ifname} has ifindex {link.ifindex}, too large for a balanced entry "
            f"(below {1 << (32 - maps.BUCKET_BITS)})"
        )


def hash_of(dp: Dataplane, ingress: int) -> str | None:
    """The hash mode of ingress's balanced entry, or None when it has none."""
    return dp.balance.get(ingress) if dp.balance is not None else None


def balanced_ports(dp: Dataplane, ports: list[int] | None = None) -> dict[int, str]:
    """Managed ports that have a balanced entry -> its hash mode."""
    if dp.balance is None:
        return {}
    found = {}
    for port in dp.ports.ifindexes() if ports is None else ports:
        mode = dp.balance.get(port)
        if mode is not None:
            found[port] = mode
    return found


def table(dp: Dataplane, ingress: int) -> list[maps.FwdEntry | None]:
    return dp.buckets.table(ingress)


def targets(dp: Dataplane, ingress: int) -> set[int]:
    """The egress ports ingress's buckets point at now."""
    return {entry.egress_ifindex for entry in table(dp, ingress) if entry is not None}


def prog_fd(c: Change, spec: EgressSpec, user: tuple[str, str] | None) -> int:
    """The egress program of a balanced entry's buckets (0 for none): the pair-counting
    one by default, the rewrite one, or a user program (compiled here).

    Single entries get no program by default (their ingress port's redirect counters
    are theirs), but what each egress port of a balanced entry sent is known only
    after the bucket lookup: counting it is work the program does. --no-egress
    (program "none") leaves it out, for the speed of a bare spread."""
    dp = c.dp
    if not dp.layout.has_egress or spec.program == "none":
        return 0
    if spec.program == "built-in" and not spec.rewrites:
        return dp.group_prog_fd
    return entries.prog_fd(c, spec, user)


def spec_of(
    dp: Dataplane, ingress: int, entry: maps.FwdEntry, egress: netdev.Link
) -> EgressSpec | None:
    """What the egress program of a bucket does: built-in (per-port counters), none,
    or as for a single entry (a rewrite, a user program). Unlike a single entry's,
    built-in and none differ here: only the buckets' program counts per port."""
    if not entry.egress_prog_id:
        return EgressSpec(program="none")
    if entry.egress_prog_id == dp.group_prog_id:
        return EgressSpec()
    return entries.spec_of(dp, ingress, entry, egress)


def _prog_id(fd: int) -> int:
    return sc.prog_info(fd).id if fd else 0


def write(
    c: Change,
    ingress: int,
    mode: str,
    wanted: list[int | None],
    prog_fd: int,
    rewrites: dict[int, maps.Rewrite | None],
) -> int:
    """Make ingress balanced with mode, bucket b going to egress wanted[b] (None: no
    egress) with program prog_fd; rewrites are the Ethernet rewrites of its egress
    ports. Returns how many buckets changed. Raises BpfError."""
    dp = c.dp
    check_supported(dp)
    for egress, rewrite in rewrites.items():
        if rewrite is not None:
            entries.set_rewrite(c, ingress, egress, rewrite)
    prog_id = _prog_id(prog_fd)
    changed = 0
    for bucket, (have, want) in enumerate(zip(table(dp, ingress), wanted, strict=True)):
        if want is None and have is None:
            continue
        if have is not None and want == have.egress_ifindex and prog_id == have.egress_prog_id:
            continue
        changed += 1
        if have is None:
            c.undo.callback(dp.buckets.remove, ingress, bucket)
        else:
            old_fd = hold_program(c.resources, have.egress_prog_id)
            c.undo.callback(dp.buckets.set, ingress, bucket, have.egress_ifindex, old_fd)
        if want is None:
            dp.buckets.remove(ingress, bucket)
        else:
            map_write(dp.buckets.set, ingress, bucket, want, prog_fd)
    previous = dp.balance.get(ingress)
    if previous != mode:
        map_write(dp.balance.set, ingress, mode)
        if previous is None:
            c.undo.callback(dp.balance.clear, ingress)
        else:
            c.undo.callback(dp.balance.set, ingress, previous)
    # A single entry of the port would win over the buckets: it goes once they are in.
    entries.remove(c, ingress)
    keep = set(rewrites) | {e for e in wanted if e}
    c.after_commit.append(lambda: _forget_others(dp, ingress, keep, rewrites))
    return changed


def _forget_others(dp: Dataplane, ingress: int, keep: set[int], rewrites: dict) -> None:
    """After a commit: drop pair counters and rewrites of ports the entry left, but
    not the rewrite of the single entry the port may have now (which counts no pairs:
    a pair counter kept would come back with its old count if the entry is balanced
    again, counted twice in its port's TX); the rewrites the entry wants are set
    again (a single entry it replaced forgot its own pair's at commit)."""
    single = dp.fwd.get(ingress)
    ours = {single.egress_ifindex} if single is not None else set()
    if dp.pairs is not None:
        for i, egress in dp.pairs.pairs():
            if i == ingress and egress not in keep:
                dp.pairs.forget(i, egress)
    if dp.rewrites is not None:
        wanted = {egress: rw for egress, rw in rewrites.items() if rw is not None}
        for egress, rewrite in wanted.items():
            dp.rewrites.set(ingress, egress, rewrite)
        for i, egress in dp.rewrites.pairs():
            if i == ingress and egress not in wanted.keys() | ours:
                dp.rewrites.forget(i, egress)


def remove(c: Change, ingress: int) -> set[int] | None:
    """Remove ingress's balanced entry (undone with the change); return the egress
    ports its buckets pointed at, or None when it had none."""
    dp = c.dp
    mode = hash_of(dp, ingress)
    if mode is None:
        return None
    dp.balance.clear(ingress)
    c.undo.callback(dp.balance.set, ingress, mode)
    before = table(dp, ingress)
    for bucket, have in enumerate(before):
        if have is not None:
            fd = hold_program(c.resources, have.egress_prog_id)
            dp.buckets.remove(ingress, bucket)
            c.undo.callback(dp.buckets.set, ingress, bucket, have.egress_ifindex, fd)
    c.after_commit.append(lambda: _forget_others(dp, ingress, set(), {}))
    return {e.egress_ifindex for e in before if e is not None}


def forget(dp: Dataplane, ingress: int) -> None:
    """Drop what a gone ingress port's balanced entry left (no undo: tidying)."""
    if hash_of(dp, ingress) is None:
        return
    dp.balance.clear(ingress)
    for bucket in range(maps.BUCKETS):
        dp.buckets.remove(ingress, bucket)


def wanted_table(
    entry: BalancedConf, layout: buckets.Layout, links_by_name: dict[str, netdev.Link]
) -> tuple[list[int | None], buckets.Layout]:
    """Each bucket's egress ifindex now (and the live layout, by name): the layout,
    with the buckets of ports that are down or gone on the live ports. A port without
    a MAC address (a tun) counts as down for an entry that rewrites addresses."""
    up = {
        name
        for name in entry.ports
        if (link := links_by_name.get(name))
        and link.live
        and entries.takes_rewrite(entry.spec, link)
    }
    now = buckets.live(layout, entry.weight_map(), up)
    return [links_by_name[name].ifindex if name else None for name in now], now


def rewrites(
    spec: EgressSpec, ports: tuple[str, ...], links_by_name: dict[str, netdev.Link]
) -> dict[int, maps.Rewrite | None]:
    """The Ethernet rewrite of each of the ports that exists and can take one (a port
    without a MAC address has no buckets then: wanted_table)."""
    return {
        link.ifindex: entries.rewrite_of(spec, link)
        for name in ports
        if (link := links_by_name.get(name)) and entries.takes_rewrite(spec, link)
    }


def port_state(link: netdev.Link | None) -> str:
    if link is None:
        return PORT_GONE
    return PORT_UP if link.live else PORT_DOWN


def info(
    dp: Dataplane,
    ingress: int,
    links: dict[int, netdev.Link],
    recorded: BalancedConf | None,
    bound: dict[str, int],
) -> BalanceInfo:
    """A balanced entry as list shows it: its ports (as recorded, then any other its
    buckets point at) with their weight, buckets now, state and counters."""
    now = table(dp, ingress)
    per_port: dict[int, int] = {}
    for entry in now:
        if entry is not None:
            per_port[entry.egress_ifindex] = per_port.get(entry.egress_ifindex, 0) + 1
    by_name = {link.ifname: link for link in links.values()}
    counted = bool(dp.group_prog_id) and any(
        e is not None and e.egress_prog_id == dp.group_prog_id for e in now
    )
    rows, seen = [], set()
    names = recorded.weight_map() if recorded else {}
    for name, weight in names.items():
        link = by_name.get(name)
        port = Iface(link.ifindex, name) if link else Iface(bound.get(name, 0), None)
        rows.append(_port(dp, ingress, port, weight, per_port, port_state(link), counted, name))
        seen.add(port.ifindex)
    for egress in sorted(set(per_port) - seen):
        port = known(egress, links)
        state = port_state(links.get(egress))
        rows.append(_port(dp, ingress, port, 0, per_port, state, counted, port.label))
    unassigned = sum(1 for e in now if e is None)
    return BalanceInfo(hash_of(dp, ingress) or "?", rows, unassigned)


def _port(dp, ingress, port: Iface, weight, per_port, state, counted, name) -> BalancePort:
    stats = None
    if counted and dp.pairs is not None and port.ifindex:
        stats = dp.pairs.read(ingress, port.ifindex) or maps.EgressStats()
    rewrite = dp.rewrites.get(ingress, port.ifindex) if dp.layout.has_egress else None
    return BalancePort(port, name, weight, per_port.get(port.ifindex, 0), state, stats, rewrite)


def describe(dp: Dataplane, ingress: int) -> EgressProg | None:
    """The egress program of ingress's buckets, as list shows it."""
    entry = next((e for e in table(dp, ingress) if e is not None), None)
    if entry is not None and entry.egress_prog_id and entry.egress_prog_id == dp.group_prog_id:
        return EgressProg("built-in", entry.egress_prog_id, prog_name(entry.egress_prog_id))
    return entries.describe(dp, entry)
