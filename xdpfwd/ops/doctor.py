"""`xdpfwd doctor`: what the host provides, what the kernel can do (probed for real),
and what state the managed ports are in; each problem with a one-line fix."""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack

from xdpfwd.errors import InputError, PrereqError, XdpfwdError
from xdpfwd.kernel import netdev, netns, prereqs
from xdpfwd.kernel.bpf import loader, maps, netns_link
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import STATE_EGRESS_GONE, STATE_NOT_FLOODING, STATE_UNPINNED_GROUP, Iface
from xdpfwd.model.reports import Check
from xdpfwd.state import health, intent, multicast, pins, tracing
from xdpfwd.state.dataplane import Dataplane, reading
from xdpfwd.state.groups import group_infos
from xdpfwd.state.ports import known, orphans, prog_name

PASS, WARN, FAIL, SKIP, FIXED = "pass", "warn", "fail", "skip", "fixed"
ATTACH_XDP_DEVMAP = sc.ATTACH_XDP_DEVMAP
BPF_F_BROADCAST = 1 << 3
BPF_FUNC_REDIRECT_MAP = 51


def _check(name: str, fn) -> Check:
    """Run fn, which returns (status, detail[, fix]); an exception is a failure."""
    try:
        return Check(name, *fn())
    except (OSError, XdpfwdError) as e:
        return Check(name, FAIL, str(e))


# --- the host ------------------------------------------------------------------------


def _privileges():
    missing = prereqs.missing_caps("add")
    if missing:
        return (
            FAIL,
            f"lacks {', '.join(missing)}: cannot load BPF programs and attach XDP",
            "run as root (sudo); see CAPABILITIES in xdpfwd(8)",
        )
    return PASS, "can load BPF programs and attach XDP (CAP_NET_ADMIN and CAP_SYS_ADMIN)"


def _bpffs(pin_dir: pins.PinDir):
    mount_point, fstype = pins._mount_of(pin_dir.path)
    if fstype == "bpf":
        return PASS, f"{pin_dir.path} is on the bpffs at {mount_point}"
    if not pin_dir.path.startswith(pins.BPFFS_DEFAULT_MOUNT + "/"):
        return (
            FAIL,
            f"{pin_dir.path} is on {fstype}, not a bpffs",
            "mount one, or choose another --pin-dir",
        )
    if pins.mounts_last():
        return (
            WARN,
            f"no bpffs at {pins.BPFFS_DEFAULT_MOUNT} yet",
            "xdpfwd mounts it on the first add",
        )
    return (
        FAIL,
        f"no bpffs at {pins.BPFFS_DEFAULT_MOUNT}, and one mounted in this mount namespace of "
        "its own (as ip netns exec makes) would vanish with its last process",
        "xdpfwd --netns NAME instead of ip netns exec",
    )


def _bcc():
    try:
        prereqs.require_bcc()
    except PrereqError:
        return FAIL, "BCC is not importable", prereqs.INSTALL_BCC.split(";")[0]
    return PASS, f"BCC {getattr(sys.modules['bcc'], '__version__', '?')} is importable"


def _compile():
    start = time.monotonic()
    fds = loader.compile_programs(
        "int xdpfwd_probe(struct xdp_md *ctx) { return XDP_PASS; }",
        {"xdpfwd_probe": loader.XDP},
        [],
        label="a test program",
    )
    for fd in fds.values():
        os.close(fd)
    return PASS, f"BCC compiled a test program in {time.monotonic() - start:.1f} s"


# --- the kernel, probed --------------------------------------------------------------


def _probe_map(map_type: int, value_size: int = 4) -> int:
    return sc.map_create(map_type, 4, value_size, 1, "xdpfwd_probe")


def _devmap():
    os.close(_probe_map(sc.MAP_TYPE_DEVMAP))
    return PASS, "BPF_MAP_TYPE_DEVMAP"


def _devmap_hash():
    try:
        os.close(_probe_map(sc.MAP_TYPE_DEVMAP_HASH))
    except OSError:
        return FAIL, "no BPF_MAP_TYPE_DEVMAP_HASH (Linux 5.4+)", "use --table devmap"
    return PASS, "BPF_MAP_TYPE_DEVMAP_HASH"


def _egress_programs():
    with ExitStack() as fds:
        try:
            devmap = _probe_map(sc.MAP_TYPE_DEVMAP, 8)
            fds.callback(os.close, devmap)
            code = sc.insn(0xB7, imm=maps.XDP_PASS) + sc.insn(0x95)  # r0 = XDP_PASS; exit
            prog = sc.prog_load(loader.PROG_XDP, code, "xdpfwd_probe", ATTACH_XDP_DEVMAP)
            fds.callback(os.close, prog)
            sc.map_update(
                devmap,
                (0).to_bytes(4, "little"),
                (1).to_bytes(4, "little") + prog.to_bytes(4, "little"),
            )
        except OSError as e:
            return (
                FAIL,
                f"no bpf_devmap_val entries with egress programs ({e.strerror})",
                "Linux 5.8+; meanwhile add uses --value ifindex, no egress programs",
            )
    return PASS, "bpf_devmap_val entries with BPF_XDP_DEVMAP egress programs"


def _multi_buffer():
    if sc.frags_supported():
        return PASS, "multi-buffer XDP programs (BPF_F_XDP_HAS_FRAGS): native XDP at any MTU"
    return (
        WARN,
        "no multi-buffer XDP programs (Linux 5.18+): native XDP on veth only up to MTU "
        f"{netdev.SINGLE_BUFFER_MTU}",
        "larger MTUs need --mode generic",
    )


def _btf():
    try:
        offsets = loader.trace_offsets()
    except PrereqError as e:
        return WARN, str(e), "loss accounting (redirect errors, transmit drops) stays off"
    return PASS, (
        "the kernel's BTF gives the tracepoint programs struct net_device's layout "
        f"(ifindex at {offsets['XDPFWD_NETDEV_IFINDEX_OFF']})"
    )


def _broadcast():
    with ExitStack() as fds:
        devmap = _probe_map(sc.MAP_TYPE_DEVMAP)
        fds.callback(os.close, devmap)
        code = (
            sc.insn(0x18, dst=1, src=1, imm=devmap)
            + sc.insn(0)  # r1 = the devmap
            + sc.insn(0xB7, dst=2)
            + sc.insn(0xB7, dst=3, imm=BPF_F_BROADCAST)
            + sc.insn(0x85, imm=BPF_FUNC_REDIRECT_MAP)
            + sc.insn(0x95)
        )
        prog = sc.prog_load(loader.PROG_XDP, code, "xdpfwd_probe")
        fds.callback(os.close, prog)
        # A kernel without the flag returns XDP_ABORTED for it.
        verdict, _ = sc.prog_test_run(prog, bytes(64), 1)
    if verdict != maps.XDP_REDIRECT:
        return FAIL, "bpf_redirect_map() refuses BPF_F_BROADCAST", "broadcast needs Linux 5.15+"
    return PASS, "bpf_redirect_map() with BPF_F_BROADCAST"


# --- the managed ports ---------------------------------------------------------------


def _port_checks(dp: Dataplane, links: dict[int, netdev.Link], fix: bool) -> list[Check]:
    features = netdev.xdp_features()
    checks = []
    groups = group_infos(dp, links)
    members = {m.ifindex: g.name for g in groups for m in g.members}
    recorded = intent.current(dp, links)
    reused = intent.reused(recorded, dp.ports.ifindexes(), links, dp.prog_id)
    for port in sorted(dp.ports.ifindexes()):
        link = links.get(port)
        this = known(port, links)
        name = f"port {this.label}"
        if link is None:
            gone = f"device ifindex {port} is gone"
            checks.append(Check(name, FAIL, gone, dp.pins.command("prune"), this, "port"))
            continue
        down = "" if link.up else "; the link is down"
        if port in reused:
            text = (
                f"ifindex {port} was {reused[port]}'s, whose device is gone; "
                f"{link.ifname} has it now"
            )
            checks.append(Check(name, FAIL, text, dp.pins.command("prune"), this, "port"))
            continue
        if link.xdp_prog_id != dp.prog_id:
            # prune attaches what the recorded configuration has, as it runs
            if recorded is not None and recorded.knows(link.ifname) and not link.xdp_prog_id:
                fix_it = dp.pins.command("prune")
            else:
                fix_it = f"{dp.pins.command('apply FILE')} (or add it again)"
            detached = f"xdpfwd's program is not attached{down}"
            checks.append(Check(name, FAIL, detached, fix_it, this, "port"))
            continue
        native = features is None or features.get(port, 0) & netdev.XDP_ACT_BASIC
        status, detail = PASS, f"{link.xdp_mode} XDP, MTU {link.mtu}"
        if link.xdp_mode == "generic":
            status = WARN
            detail += "; generic is slower" + ("" if native else " (no native XDP in its driver)")
        fix_it = ""
        group = members.get(port)
        entry = dp.fwd.get(port)
        settings = dp.ports.get(port) or maps.PortSettings()
        flooding = dp.groups.group_id(port) is not None
        lost = recorded.gone_egress(link.ifname, links) if recorded and not entry else None
        state = health.port_state(
            link, None, True, entry is not None, group, settings, flooding, egress_gone=bool(lost)
        )
        if state == STATE_NOT_FLOODING:
            status, detail = FAIL, f"a member of group {group} whose settings do not flood"
            fix_it = f"{dp.pins.command('apply FILE')} (or broadcast del, then broadcast it again)"
        elif state == STATE_UNPINNED_GROUP:
            status = FAIL
            detail = (
                "floods through a broadcast group that no pin under "
                f"{dp.pins.pin(maps.PIN_GROUP_DIR)} lists it in: list, save and broadcast "
                "do not see its group"
            )
            fix_it = dp.pins.command("prune")
        elif state == STATE_EGRESS_GONE:
            status = WARN
            detail = (
                f"its entry to {lost} went with {lost}'s device: what enters it takes the "
                f"on-miss verdict ({settings.on_miss_name}) until {lost} is made again, "
                "which prune (or follow) binds"
            )
            fix_it = f"make {lost} again, or `{dp.pins.command(f'del {link.ifname}')}`"
        elif not link.up:
            status, detail = WARN, detail + down
            if group is not None:  # the kernel skips it, with no tracepoint to count it
                detail += f": group {group}'s copies to it are lost, and counted nowhere"
            fix_it = netns.as_run_from_the_shell(f"ip link set dev {link.ifname} up")
        checks.append(Check(name, status, detail, fix_it, this, "port"))
    pairs = health.managed_pairs(dp, groups)
    pairs = [(i, e) for i, e in pairs if i in links and links[i].xdp_prog_id == dp.prog_id]
    flooding = [*members, *multicast.sources_of(dp)]  # multicast copies cannot be made either
    # A managed port's own check says it is down: no second line for it as an egress.
    said_down = {p for p in dp.ports.ifindexes() if p in links and not links[p].up}
    with health.inspected(pairs, links, features, flooding) as (problems, peers):
        for problem in problems:
            if problem.kind != "egress_down" or problem.ifindex not in said_down:
                checks.append(_problem_check(problem, peers, fix))
    flooded = [m for m in flooding if m in links and links[m].xdp_prog_id == dp.prog_id]
    for problem in health.flood_problems(flooded, links, dp.frags):
        checks.append(_problem_check(problem, {}, fix))
    checks += _path_checks(dp, links)
    return checks


def _multicast_checks(dp: Dataplane, links: dict[int, netdev.Link]) -> list[Check]:
    """Groups with receivers whose devices went (deleted, or moved to another
    namespace): the kernel takes them out of the group's devmap, while each source's
    count of the copies a frame makes still has them, so every frame adds to the
    group's copies lost until prune (or follow) recounts them."""
    m = dp.mcast
    if m is None:
        return []
    counted: dict[int, set[int]] = {}  # slot -> ports its copies were counted for
    for slot, port in m.copies.pairs() if m.copies is not None else ():
        counted.setdefault(slot, set()).add(port)
    checks = []
    for g in multicast.read_groups(dp).values():
        missing = max(
            e.copies - multicast.copies_of(s, g.receivers, g.exclude_ingress)
            for s, e in g.entries.items()
        )
        if missing <= 0:
            continue
        name = f"multicast {g.addr.text}"
        if not g.receivers:
            text = (
                "the device of every receiver is gone: the group drops its frames (each "
                "counts its copies lost) rather than let them out of the source's other "
                "paths, until prune restores receivers made again; or end the group"
            )
            fix = dp.pins.command(f"multicast del {g.addr.text}")
            checks.append(Check(name, FAIL, text, fix, None, "receiver_gone"))
            continue
        gone = sorted(p for p in counted.get(g.slot, ()) if p not in g.receivers | links.keys())
        which = f" (ifindex {', '.join(map(str, gone))})" if len(gone) == missing else ""
        who = (
            f"the device of a receiver{which} is gone, and the kernel took it"
            if missing == 1
            else f"the devices of {missing} receivers{which} are gone, and the kernel took them"
        )
        text = (
            f"{who} out of the group: each frame makes {missing} fewer copies than it "
            "counts as expected, shown as copies lost"
        )
        checks.append(Check(name, FAIL, text, dp.pins.command("prune"), None, "receiver_gone"))
    return checks


def _path_checks(dp: Dataplane, links: dict[int, netdev.Link]) -> list[Check]:
    """A forwarding loop, and sources that send a group and other frames out of one
    port: made with --force, or before xdpfwd refused them."""
    forced = health.forced_paths(dp, links)
    checks = []
    if forced.loop:
        (text,) = health.refuse_loop(forced.loop, links, True, "")
        ingress = known(forced.loop[0][0], links)
        fix_it = dp.pins.command(_loop_removal(dp, forced, links))
        checks.append(Check(f"port {ingress.label}", FAIL, text, fix_it, ingress, "loop"))
    for shared in forced.shared:
        source, receiver = known(shared[0], links), known(shared[1], links)
        text = health.shared_bulk_text(shared, links, "sends")
        fix_it = dp.pins.command(f"multicast del {shared[2]} --to {receiver.label}")
        check = Check(f"port {source.label}", FAIL, text, fix_it, source, "shared_bulk")
        checks.append(check)
    return checks


def _loop_removal(dp: Dataplane, forced: health.ForcedPaths, links: dict[int, netdev.Link]) -> str:
    """The xdpfwd command (its words) that ends forced.loop: a multicast group's hop,
    where the loop is the group's frames' own (the forwarding graph has no such hop),
    or else the first hop's entry or membership."""
    for ingress, egress in forced.loop:
        if egress not in forced.graph.get(ingress, set()):
            for address, group in sorted(forced.groups.items()):
                if ingress in group.sources and egress in group.receivers:
                    return f"multicast del {address} --to {known(egress, links).label}"
    first = known(forced.loop[0][0], links).label
    if dp.groups.group_id(forced.loop[0][0]) is not None:
        return f"broadcast del {first}"
    return f"del {first}"


def _problem_check(problem: health.Problem, peers, fix: bool) -> Check:
    status, text = (WARN if problem.warn_only else FAIL), problem.text
    if fix and problem.peer_change:
        try:
            health.fix(problem, peers)
            status = FIXED
        except OSError as e:
            text = f"{problem.text}; fixing it failed: {e.strerror}"
    port = Iface(problem.ifindex, problem.port)
    return Check(f"port {problem.port}", status, text, problem.fix, port, problem.kind)


def _programs_check(dp: Dataplane) -> Check:
    name = "multi-buffer"
    if dp.frags:
        return Check(name, PASS, "programs loaded with BPF_F_XDP_HAS_FRAGS")
    if not dp.flags_recorded and sc.frags_supported():
        return Check(
            name,
            WARN,
            f"programs pinned by an older xdpfwd, without multi-buffer support: native XDP "
            f"only up to MTU {netdev.SINGLE_BUFFER_MTU}",
            dp.pins.rebuild_hint().strip("`"),
        )
    return Check(name, PASS, "single-buffer programs (the kernel has no other)")


def _accounting(pin_dir: pins.PinDir):
    found = tracing.links(pin_dir)
    attached = [e for e, link in found.items() if link is not None and link.tracepoint == e]
    if len(attached) == len(found):
        ids = ", ".join(str(link.id) for link in found.values())
        return PASS, f"tracepoint programs attached to xdp:{', xdp:'.join(found)} (links {ids})"
    return (
        WARN,
        "the tracepoint programs are not attached: redirect errors and transmit drops "
        "are not counted",
        f"{pin_dir.command('stats --watch --count 1')} attaches them (so does the next add, "
        "broadcast or apply)",
    )


def _namespace(pin_dir: pins.PinDir):
    """Whether the pin dir is tied to this namespace (check_netns() refused the rest)."""
    pinned = netns_link.read(pin_dir.pin(maps.PIN_NETNS))
    if pinned.kind == "link" and pinned.inode:
        return PASS, "tied to this network namespace (its link: netns)"
    if pinned.kind == "link":
        return (
            WARN,
            "its namespace link was detached (by hand?): it serves here, where its "
            "program runs, and other namespaces take it as gone",
            "the next add, del, broadcast, apply or prune here ties it again",
        )
    return (
        WARN,
        "tied to no network namespace (an earlier xdpfwd's directory, or a kernel before "
        "sk_lookup): it serves where its program runs, and a namespace it has not run in "
        "yet is not refused",
        "the next add, del, broadcast, apply or prune here ties it",
    )


def _state_checks(pin_dir: pins.PinDir, fix: bool) -> list[Check]:
    links = netdev.links()
    try:
        with reading(pin_dir) as dp:
            if dp is None:
                ours, checks = set(), [Check("pins", PASS, f"nothing set up in {pin_dir.path}")]
            else:
                ours = {dp.prog_id}
                complete = Check("pins", PASS, f"{pin_dir.path}: complete")
                checks = [
                    complete,
                    _check("namespace", lambda: _namespace(pin_dir)),
                    _programs_check(dp),
                    _check("loss accounting", lambda: _accounting(pin_dir)),
                    *_port_checks(dp, links, fix),
                    *_multicast_checks(dp, links),
                ]
                if dp.mcast is None:
                    checks.append(
                        Check(
                            "multicast",
                            WARN,
                            "the pins predate multicast groups: `multicast add` refuses; "
                            "rebuilding them stops forwarding for a moment",
                            pin_dir.rebuild_hint().strip("`"),
                        )
                    )
    except InputError as e:  # not a pin directory, or not xdpfwd's
        ours, checks = set(), [Check("pins", FAIL, str(e), "choose another --pin-dir")]
    except XdpfwdError as e:
        fix_pins = f"{pin_dir.command('down')}, then add or apply"
        checks = [Check("pins", FAIL, str(e), fix_pins)]
        # Its program may run on with its pin removed: its ports are no orphans.
        try:
            ours = pin_dir.running_prog_ids(links)
        except (OSError, XdpfwdError):
            ours = set()
    for port, prog_id in orphans(pin_dir, links, ours).items():
        this = known(port, links)
        checks.append(
            Check(
                f"port {this.label}",
                WARN,
                f"runs {prog_name(prog_id)} (id {prog_id}) of no pin dir: its pins were "
                "removed by hand",
                f"{pin_dir.command('apply FILE')} replaces it; or "
                + netns.as_run_from_the_shell(f"ip link set dev {this.label} xdp off"),
                this,
                "orphan",
            )
        )
    return checks


def run(pin_dir: pins.PinDir, compile_test: bool = True, fix: bool = False) -> list[Check]:
    """Every check, in order. With fix, the problems that are settings of a managed
    port's veth peer are fixed (status "fixed"), and nothing else is touched. Raises
    InputError for a pin directory that serves another network namespace: its checks
    would judge this one's devices."""
    pin_dir.check_netns()
    checks = [_check("privileges", _privileges)]
    privileged = checks[0].status == PASS
    checks.append(_check("bpffs", lambda: _bpffs(pin_dir)))
    checks.append(_check("BCC", _bcc))
    if compile_test and checks[-1].status == PASS:
        checks.append(_check("kernel headers", _compile))
    probes = (
        ("DEVMAP", _devmap),
        ("DEVMAP_HASH", _devmap_hash),
        ("egress programs", _egress_programs),
        ("broadcast", _broadcast),
        ("multi-buffer XDP", _multi_buffer),
        ("kernel BTF", _btf),
    )
    for name, probe in probes:
        checks.append(_check(name, probe) if privileged else Check(name, SKIP, "needs root"))
    if privileged:
        checks += _state_checks(pin_dir, fix)
    return checks
