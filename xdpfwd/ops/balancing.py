"""`xdpfwd add IN OUT1 OUT2...`: balanced entries, which spread the flows entering a
port over several egress ports (see state/balance.py and state/buckets.py)."""

from __future__ import annotations

import os
from dataclasses import replace

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev, prereqs
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import DEFAULT_EGRESS, AddResult, EgressSpec, Iface
from xdpfwd.state import balance, buckets, entries, health, intent
from xdpfwd.state.changes import change
from xdpfwd.state.config import BalancedConf
from xdpfwd.state.ports import check_forwardable, known, link_of


def add(
    pins,
    ingress: Iface,
    egress: list[Iface],
    *,
    hash: str = "symmetric",
    weights: list[int] | None = None,
    table: str | None = None,
    value: str | None = None,
    mode: str = "auto",
    on_miss: str | None = None,
    force: bool = False,
    egress_spec: EgressSpec = DEFAULT_EGRESS,
) -> AddResult:
    """Spread the flows entering ingress over the egress ports, by weight (1 each by
    default): a hash of each frame's addresses (hash: symmetric, l4, l3 or l2) picks
    one of 256 buckets, each bucket sends to one port. An entry the port had (single
    or balanced) is replaced without a gap; changing the ports or weights moves as
    few buckets as possible. Egress settings apply to each egress port.

    Raises InputError, XdpfwdError (a broadcast member, a loop, old pins),
    AttachError, BpfError or PrereqError; on any error nothing is left changed.
    """
    prereqs.require_privileges("add")
    links = netdev.links()
    in_link = link_of(ingress, links)
    out_links = [link_of(port, links) for port in egress]
    for link in (in_link, *out_links):
        check_forwardable(link)
    balance.check_ifindex(in_link)
    if hash not in maps.HASH_MODES:
        raise InputError(f"--hash must be one of {', '.join(maps.HASH_MODES)}")
    wanted = BalancedConf(
        in_link.ifname,
        tuple(link.ifname for link in out_links),
        tuple(weights or (1,) * len(out_links)),
        hash,
        egress_spec,
    )
    reason = buckets.problem(wanted.ingress, wanted.ports, wanted.weights)
    if reason:
        raise InputError(f"--weights: {reason}" if "weights" in reason else reason)
    entries.check_spec(egress_spec, False)
    bare = [link.ifname for link in out_links if not entries.takes_rewrite(egress_spec, link)]
    if bare:
        raise entries.no_mac_error(bare)
    user = entries.read_user_program(egress_spec) if egress_spec.program == "user" else None
    with change(
        pins,
        table=table,
        value=value,
        attach={in_link.ifindex: mode},
        force=force,
        sends_to=[link.ifindex for link in out_links],
        known=links,
        check_layout=entries.layout_check(egress_spec),
    ) as c:
        balance.check_supported(c.dp)
        if c.dp.groups.group_id(in_link.ifindex) is not None:
            raise XdpfwdError(
                f"{in_link.ifname} is a broadcast group member; "
                f"`{pins.command(f'broadcast del {in_link.ifname}')}` first"
            )
        adding = {in_link.ifindex: {o.ifindex for o in out_links}}
        path_warnings = health.refuse_paths(c.dp, c.links, adding, force)
        # Compiled before anything changes: a compile error leaves all as it was.
        prog_fd = balance.prog_fd(c, egress_spec, user)
        layout = _layout(intent.current(c.dp, c.links), wanted)
        previous = c.dp.ports.get(in_link.ifindex)
        if on_miss is not None:
            verdict = maps.ON_MISS_VERDICTS[on_miss]
        else:
            verdict = previous.on_miss if previous else maps.XDP_PASS
        settings = maps.PortSettings(on_miss=verdict)
        attachment = c.attach(c.plans[0], mode, settings)
        by_name = {link.ifname: link for link in c.links.values()}
        now, _ = balance.wanted_table(wanted, layout, by_name)
        rewrites = balance.rewrites(egress_spec, wanted.ports, by_name)
        balance.write(c, in_link.ifindex, hash, now, prog_fd, rewrites)
        intent.update(
            c, lambda r: intent.with_balanced(r, wanted, layout, mode, settings.on_miss_name)
        )
        result = AddResult(
            entries=[
                (known(in_link.ifindex, c.links), known(o.ifindex, c.links)) for o in out_links
            ],
            attachments=[attachment],
            table=c.dp.layout.table,
            value_format=c.dp.layout.value_format,
            prog_id=c.dp.prog_id,
            compiled=c.compiled,
            egress=balance.describe(c.dp, in_link.ifindex),
            balance=balance.info(c.dp, in_link.ifindex, c.links, wanted, {}),
        )
    pairs = [(in_link.ifindex, o.ifindex) for o in out_links]
    warnings = health.warnings_for(pairs, c.links)
    if user is not None:
        shown = os.path.basename(egress_spec.user_file or "")
        warnings += tuple(entries.verdict_warnings(user[0], shown, user[1]))
    return replace(result, warnings=(*path_warnings, *warnings))


def _layout(recorded: intent.Intent | None, wanted: BalancedConf) -> buckets.Layout:
    """The entry's bucket layout: kept if its ports and weights are unchanged, else
    another entry's with the same ports and weights, else the fewest moves."""
    others = recorded.recorded_layouts() if recorded else {}
    keep = {name: weights for name, (weights, _) in others.items() if name != wanted.ingress}
    chosen = buckets.choose({**keep, wanted.ingress: wanted.weight_map()}, others)
    return chosen[wanted.ingress]
