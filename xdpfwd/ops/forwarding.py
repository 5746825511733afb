"""`xdpfwd add/del/list/down`: forwarding entries, one per ingress port, and the
ports that run xdpfwd's program for them."""

from __future__ import annotations

import os
from dataclasses import replace

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev, prereqs
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import (
    DEFAULT_EGRESS,
    STATE_NO_ENTRY,
    STATE_OK,
    AddResult,
    Attachment,
    BalanceInfo,
    DelResult,
    DownResult,
    EgressSpec,
    GroupInfo,
    Iface,
    Listing,
    PortRow,
    Waiting,
)
from xdpfwd.model.counters import Snapshot
from xdpfwd.state import balance, entries, health, intent, multicast
from xdpfwd.state.changes import change, editing
from xdpfwd.state.config import EntryConf
from xdpfwd.state.counters import snapshot
from xdpfwd.state.dataplane import Dataplane, reading
from xdpfwd.state.groups import group_infos
from xdpfwd.state.pins import PinDir
from xdpfwd.state.ports import (
    AttachPlan,
    check_forwardable,
    iface,
    known,
    link_of,
    release_idle,
    teardown,
)
from xdpfwd.state.transaction import Change


def resolve(name: str, allow_gone: bool = False) -> Iface:
    """The interface called name (or with that ifindex).

    With allow_gone, a number that no device has is still accepted as an ifindex,
    so stale entries of deleted devices can be named, and so is a name no device
    has, as ifindex 0: the command binds it under the pin dir's lock
    (intent.bind_gone). Raises InputError.
    """
    try:
        link = netdev.resolve(name)
    except InputError:
        if not allow_gone:
            raise
        ifindex = netdev.parse_ifindex(name)
        if ifindex is not None:
            return Iface(ifindex, None)
        if not netdev.valid_ifname(name):
            raise
        return Iface(0, name)
    if link.loopback:
        raise InputError(f"{link.ifname} is a loopback device; xdpfwd does not forward there")
    return iface(link)


def _check_forwarding_pair(ingress: netdev.Link, egress: netdev.Link) -> None:
    if ingress.ifindex == egress.ifindex:
        raise InputError(f"ingress and egress are the same interface ({ingress.ifname})")
    check_forwardable(ingress)
    check_forwardable(egress)


def _check_not_members(dp: Dataplane, links: list[netdev.Link]) -> None:
    for link in links:
        if dp.groups.group_id(link.ifindex) is not None:
            raise XdpfwdError(
                f"{link.ifname} is a broadcast group member; "
                f"`{dp.pins.command(f'broadcast del {link.ifname}')}` first"
            )


def add(
    pins: PinDir,
    ingress: Iface,
    egress: Iface,
    *,
    bidirectional: bool = False,
    table: str | None = None,
    value: str | None = None,
    mode: str = "auto",
    on_miss: str | None = None,
    force: bool = False,
    egress_spec: EgressSpec = DEFAULT_EGRESS,
) -> AddResult:
    """Forward every frame entering ingress to egress (and back with bidirectional).

    egress_spec chooses the entry's egress program. Raises InputError,
    XdpfwdError (conflicting table, value format or mode, a broadcast member),
    AttachError, BpfError (also for a user program that does not compile) or
    PrereqError; on any error nothing is left changed.
    """
    prereqs.require_privileges("add")
    links = netdev.links()
    in_link, out_link = link_of(ingress, links), link_of(egress, links)
    _check_forwarding_pair(in_link, out_link)
    entries.check_spec(egress_spec, bidirectional)
    user = entries.read_user_program(egress_spec) if egress_spec.program == "user" else None
    pairs = [(in_link.ifindex, out_link.ifindex)]
    if bidirectional:
        pairs.append((out_link.ifindex, in_link.ifindex))
    with change(
        pins,
        table=table,
        value=value,
        attach={ingress: mode for ingress, _ in pairs},
        force=force,
        sends_to=[egress for _, egress in pairs],
        known=links,
        check_layout=entries.layout_check(egress_spec),
    ) as c:
        _check_not_members(c.dp, [plan.link for plan in c.plans])
        adding = {ingress: {egress} for ingress, egress in pairs}
        path_warnings = health.refuse_paths(c.dp, c.links, adding, force)
        # Compiled before anything changes: a compile error leaves all as it was.
        prog_fd = entries.prog_fd(c, egress_spec, user)
        rewrite = entries.rewrite_of(egress_spec, c.links[out_link.ifindex])
        attachments = [_attach_forwarding_port(c, plan, mode, on_miss) for plan in c.plans]
        for src, dst in pairs:
            entries.write(c, src, dst, prog_fd, rewrite)
            balance.remove(c, src)  # a balanced entry the port had: the single one won
        _record(c, pairs, egress_spec, mode)
        result = AddResult(
            entries=[(known(s, c.links), known(d, c.links)) for s, d in pairs],
            attachments=attachments,
            table=c.dp.layout.table,
            value_format=c.dp.layout.value_format,
            prog_id=c.dp.prog_id,
            compiled=c.compiled,
            egress=entries.describe(c.dp, c.dp.fwd.get(in_link.ifindex)),
        )
    warnings = health.warnings_for(pairs, c.links)
    if user is not None:
        shown = os.path.basename(egress_spec.user_file or "")
        warnings += tuple(entries.verdict_warnings(user[0], shown, user[1]))
    return replace(result, warnings=(*path_warnings, *c.notes, *warnings))


def _record(c: Change, pairs: list[tuple[int, int]], spec: EgressSpec, mode: str) -> None:
    """What add asked for, in the recorded configuration."""
    name = lambda port: c.links[port].ifname  # noqa: E731
    wanted = [EntryConf(name(src), name(dst), spec) for src, dst in pairs]
    verdicts = {name(src): c.dp.ports.get(src).on_miss_name for src, _ in pairs}
    intent.update(c, lambda r: intent.with_entries(r, wanted, mode, verdicts))


def _attach_forwarding_port(
    c: Change, plan: AttachPlan, mode: str, on_miss: str | None
) -> Attachment:
    previous = c.dp.ports.get(plan.link.ifindex)
    if on_miss is not None:
        verdict = maps.ON_MISS_VERDICTS[on_miss]
    else:
        verdict = previous.on_miss if previous else maps.XDP_PASS
    return c.attach(plan, mode, maps.PortSettings(on_miss=verdict))


def delete(pins: PinDir, ingress: Iface) -> DelResult:
    """Remove ingress's entry, then detach from every port that no longer needs xdpfwd.

    A port keeps the program while another entry forwards to it, so its on-miss
    verdict still applies to what enters it. Raises XdpfwdError when ingress has
    no entry, AttachError when a detach fails.
    """
    prereqs.require_privileges("del")
    with editing(pins) as c:
        recorded = intent.current(c.dp, c.links) if c is not None else None
        ingress = intent.bind_gone(recorded, ingress, c.links if c is not None else {})
        no_entry = XdpfwdError(f"{ingress.label} has no xdpfwd entry; see `{pins.command('list')}`")
        if c is None:
            raise no_entry
        if c.dp.fwd.get(ingress.ifindex) is None and balance.hash_of(c.dp, ingress.ifindex):
            return _delete_balanced(c, ingress)
        if c.dp.fwd.get(ingress.ifindex) is None:
            member = recorded is not None and recorded.group_of(ingress.ifname or "") is not None
            if member or c.dp.groups.group_id(ingress.ifindex) is not None:
                raise XdpfwdError(
                    f"{ingress.label} is a broadcast group member; use "
                    f"`{pins.command(f'broadcast del {ingress.label}')}`"
                )
            forgotten = _recorded_only(c, recorded, ingress)
            if forgotten is None:
                raise no_entry
            _forget(c, ingress)
            # It may have waited attached, dropping what missed (release_idle).
            return replace(forgotten, detached=release_idle(c.dp, c.undo, c.links))
        entry = entries.remove(c, ingress.ifindex)
        _forget(c, ingress)
        detached = release_idle(c.dp, c.undo, c.links)
    return DelResult(
        removed=ingress,
        egress=known(entry.egress_ifindex, c.links),
        detached=detached,
    )


def _recorded_only(c: Change, recorded: intent.Intent | None, ingress: Iface) -> DelResult | None:
    """The entry of ingress that the recorded configuration has and that does not run
    (its device was made again, or its egress is gone): what prune and follow would
    restore. None when there is none."""
    if recorded is None or not ingress.ifname:
        return None
    by_name = {link.ifname: link.ifindex for link in c.links.values()}
    single = next((e for e in recorded.config.forward if e.ingress == ingress.ifname), None)
    if single is not None:
        egress = Iface(by_name.get(single.egress, 0), single.egress)
        return DelResult(ingress, egress, [], recorded_only=True)
    balanced = recorded.balanced(ingress.ifname)
    if balanced is not None:
        ports = tuple(Iface(by_name.get(name, 0), name) for name in balanced.ports)
        return DelResult(ingress, ports[0], [], balanced=ports, recorded_only=True)
    return None


def _delete_balanced(c: Change, ingress: Iface) -> DelResult:
    targets = balance.remove(c, ingress.ifindex)
    recorded = intent.current(c.dp, c.links)
    conf = recorded.balanced(ingress.ifname) if recorded and ingress.ifname else None
    if conf is not None:
        by_name = {link.ifname: link.ifindex for link in c.links.values()}
        egress = [by_name.get(name, recorded.bound.get(name, 0)) for name in conf.ports]
    else:
        egress = sorted(targets)
    _forget(c, ingress)
    detached = release_idle(c.dp, c.undo, c.links)
    balanced = tuple(known(port, c.links) for port in egress)
    return DelResult(
        removed=ingress,
        egress=balanced[0] if balanced else Iface(0, None),
        detached=detached,
        balanced=balanced,
    )


def _forget(c: Change, ingress: Iface) -> None:
    """The entry out of the recorded configuration (named as bound, if it is gone)."""
    recorded = intent.current(c.dp, c.links)
    name = ingress.ifname or (recorded.name_of(ingress.ifindex) if recorded else None)
    if name is not None:
        intent.update(c, lambda r: intent.without_entry(r, name))


def list_ports(pins: PinDir) -> Listing:
    """Every port xdpfwd manages under pins, with its entry or group, mode, state and
    counters, every broadcast group, and what the recorded configuration has that does
    not run."""
    with reading(pins) as dp:
        if dp is None:
            return Listing(pins.path, None, None, None, [], [])
        links = netdev.links()
        counted = snapshot(dp, links)
        groups = [_with_events(g, counted) for g in group_infos(dp, links)]
        member_of = {m.ifindex: g.name for g in groups for m in g.members}
        recorded = intent.current(dp, links) or intent.Intent()
        sources = multicast.sources_of(dp)
        pairs = health.managed_pairs(dp, groups)
        with health.inspected(pairs, links) as (problems, _):
            problems += health.flood_problems([*member_of, *sources], links, dp.frags)
            rows = [
                _with_multicast(
                    _port_row(dp, port, links, member_of, counted, recorded),
                    sources.get(port, []),
                )
                for port in sorted(dp.ports.ifindexes())
            ]
        rows = [replace(row, problems=_problems_of(row, pairs, problems)) for row in rows]
        layout = dp.layout
        return Listing(
            pins.path,
            layout.table,
            layout.value_format,
            dp.prog_id,
            rows,
            groups,
            list(counted.multicast.values()),
            loss_accounting=counted.tracing,
            multi_buffer=dp.frags,
            waiting=_waiting(dp, recorded, groups, links),
        )


def _problems_of(
    row: PortRow, pairs: list[tuple[int, int]], problems: list[health.Problem]
) -> tuple[str, ...]:
    """The problems of a port and of the ports its frames go to (an egress that is
    not a port of xdpfwd's has no row to show them)."""
    port = row.ingress.ifindex
    concerned = {port} | {egress for ingress, egress in pairs if ingress == port}
    return tuple(p.line for p in problems if p.ifindex in concerned)


def _waiting(
    dp: Dataplane, recorded: intent.Intent, groups: list[GroupInfo], links: dict[int, netdev.Link]
) -> list[Waiting]:
    """The recorded entries whose ingress port does not run, and the recorded members
    of broadcast groups that are not in them (their devices gone, or refused by prune)."""

    def name(port: Iface) -> str | None:
        return port.ifname or recorded.name_of(port.ifindex)

    running = {name(known(port, links)) for port in dp.ports.ifindexes()}
    waiting = [
        Waiting(e.ingress, [e.egress], None, recorded.gone([e.ingress, e.egress], links))
        for e in recorded.config.forward
        if e.ingress not in running
    ]
    waiting += [
        Waiting(b.ingress, list(b.ports), None, recorded.gone([b.ingress, *b.ports], links))
        for b in recorded.config.balanced
        if b.ingress not in running
    ]
    members = {g.name: {name(m) for m in g.members} for g in groups}
    for g in recorded.config.groups:
        left_out = [m for m in g.members if m not in members.get(g.name, ())]
        if left_out:
            waiting.append(Waiting(None, left_out, g.name, recorded.gone(left_out, links)))
    return waiting


def _with_multicast(row: PortRow, groups: list[str]) -> PortRow:
    """The multicast groups the port is a source of; a source needs no entry."""
    if not groups:
        return row
    state = STATE_OK if row.state == STATE_NO_ENTRY else row.state
    return replace(row, multicast=tuple(groups), state=state)


def _with_events(group: GroupInfo, counted: Snapshot) -> GroupInfo:
    pairs = [replace(r, events=_events(counted, r.ingress, r.egress)) for r in group.pairs]
    return replace(group, pairs=pairs)


def _events(counted: Snapshot, ingress: Iface, egress: Iface | None):
    pair = counted.pairs.get((ingress.ifindex, egress.ifindex)) if egress else None
    return pair.events if pair else None


def _port_row(
    dp: Dataplane,
    port: int,
    links: dict[int, netdev.Link],
    member_of: dict[int, str],
    counted: Snapshot,
    recorded: intent.Intent,
) -> PortRow:
    link = links.get(port)
    entry = dp.fwd.get(port)
    egress = known(entry.egress_ifindex, links) if entry else None
    group = member_of.get(port)
    attached = link is not None and link.xdp_prog_id == dp.prog_id
    settings = dp.ports.get(port) or maps.PortSettings()
    flooding = dp.groups.group_id(port) is not None
    balanced = None
    if entry is None and balance.hash_of(dp, port):
        conf = recorded.balanced(link.ifname) if link else None
        balanced = balance.info(dp, port, links, conf, recorded.bound)
    has_entry = entry is not None or balanced is not None
    waits = not has_entry and link is not None and recorded.gone_egress(link.ifname, links)
    if balanced is not None:  # its buckets miss while every port's device is gone
        waits = bool(balanced.ports) and all(p.state == balance.PORT_GONE for p in balanced.ports)
    egress_link = links.get(entry.egress_ifindex) if entry else None
    egress_down = egress_link is not None and not egress_link.live
    if balanced is not None:  # no bucket left: every frame misses
        egress_down = bool(balanced.ports) and all(
            p.state != balance.PORT_UP for p in balanced.ports
        )
    state = health.port_state(
        link,
        egress,
        attached,
        has_entry,
        group,
        settings,
        flooding,
        egress_gone=bool(waits),
        egress_down=egress_down,
    )
    has_egress = entry is not None and dp.layout.has_egress
    counters = counted.ports[port].counters or maps.PortStats()
    if entry is not None and has_egress:
        egress_counters = entries.entry_counts(dp, port, counters).sent
    elif balanced is not None and dp.layout.has_egress:
        egress_counters = _balanced_counters(dp, port, balanced, counters)
    else:
        egress_counters = None
    return PortRow(
        ingress=known(port, links),
        egress=egress,
        table=dp.layout.table,
        value_format=dp.layout.value_format,
        mode=link.xdp_mode if attached else None,
        on_miss=settings.on_miss_name,
        state=state,
        counters=counters,
        egress_prog=balance.describe(dp, port) if balanced else entries.describe(dp, entry),
        rewrite=dp.rewrites.get(port, entry.egress_ifindex) if has_egress else None,
        egress_counters=egress_counters,
        group=group,
        lost=counted.port_losses(port),
        events=_events(counted, known(port, links), egress),
        forwarded=counted.forwarded(port),
        flood_copies_lost=counted.copies_lost(port),
        balance=balanced,
    )


def _balanced_counters(
    dp: Dataplane, port: int, info: BalanceInfo, counters: maps.PortStats
) -> maps.EgressStats:
    """What a balanced entry sent: the sum of its ports' counts where its buckets count
    per port, else as for a single entry (its port's redirects, less what its buckets'
    program dropped)."""
    counted = [p.counters for p in info.ports if p.counters is not None]
    if counted:
        return maps.EgressStats(
            sum(c.tx_packets for c in counted),
            sum(c.tx_bytes for c in counted),
            sum(c.drop_packets for c in counted),
            sum(c.drop_bytes for c in counted),
        )
    return entries.entry_counts(dp, port, counters).sent


def down(pins: PinDir) -> DownResult:
    """Detach xdpfwd's program from every interface and remove xdpfwd's pins.

    Programs xdpfwd did not attach stay, and so does whatever else the pin directory
    holds (it is then kept). Raises InputError for a directory that is not xdpfwd's,
    AttachError when a detach fails.
    """
    prereqs.require_privileges("down")
    with pins.locked(create=False):
        survey = pins.check_owned()
        if not survey.exists or survey.empty:
            return DownResult([], removed_pins=False)
        pins.check_netns(removing=True)
        done = teardown(pins)
        return DownResult(done.detached, True, done.left, done.elsewhere, done.still_loaded)
