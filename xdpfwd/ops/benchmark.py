"""`xdpfwd bench`: rates measured on a throwaway lab, each compared with a baseline
measured in the same run.

Frames come from an in-kernel generator (traffic.py) transmitting into the host
end of lab port 1; they arrive at port 1, are forwarded by whatever the row sets
up, and are counted and dropped by a sink program on the host ends of the other
ports. A row's rate is frames delivered to the sinks per second (a broadcast
delivers each frame once per member reached).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from functools import partial

from xdpfwd import interrupts
from xdpfwd.errors import InputError
from xdpfwd.kernel import devices, netdev, netns, offloads, prereqs, traffic
from xdpfwd.kernel.bpf import loader, maps, run_stats, source
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import DEFAULT_EGRESS, EgressSpec, Iface
from xdpfwd.model.reports import BASELINE, BenchReport, BenchRow, ProgramCost, RowProfile
from xdpfwd.state import lab, tracing
from xdpfwd.state.pins import PinDir

GEN, SINK, FWD = "xdpfwd_bench_gen", "xdpfwd_bench_sink", "xdpfwd_bench_fwd"
FLOOD = "xdpfwd_bench_flood"  # + the fanout
SPREAD = "xdpfwd_bench_spread"
FANOUTS = (2, 4)
BALANCED_FLOWS = 256  # at least this many flows in balanced rows, so that they spread
MCAST_RECEIVERS = 4  # one of FANOUTS: the multicast row is compared with its bare broadcast
MCAST_GROUP = "239.1.1.1"
BARE_BROADCAST = f"broadcast_bare_{MCAST_RECEIVERS}"
ENTRIES = 1000
NO_EGRESS = EgressSpec(program="none")
REWRITE = EgressSpec(src_mac="egress", dst_mac="02:00:5e:00:53:01")
# The least a user egress program can be: what its wrapping and the devmap call cost.
USER_PROGRAM = "int pass_all(struct xdp_md *ctx)\n{\n\treturn XDP_PASS;\n}\n"
ENTRIES_PIN = "entries"
# What the rig pins in its own directory (besides the pin dirs of xdpfwd it runs).
RIG_PINS = (
    maps.PIN_BENCH_CFG,
    maps.PIN_BENCH_SINK,
    maps.PIN_BENCH_FWD,
    *(f"{maps.PIN_BENCH_FLOOD}{n}" for n in FANOUTS),
    maps.PIN_BENCH_SPREAD,
    ENTRIES_PIN,
)


def machine() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "kernel": platform.release(),
        "cpu": model,
        "cpus_online": os.cpu_count(),
        # Programs others left on the XDP tracepoints run for every row's redirects.
        "xdp_tracepoint_links": len(tracing.host_links()),
    }


@contextmanager
def _namespace_of_its_own() -> Iterator[None]:
    """The lab's ports in a network namespace made for the run: their ifindexes are
    small there, as a host's NICs' are, so that xdpfwd's rows take the array paths of
    ports below ifindex 1024 however many devices the host has made (the hash paths
    cost a few percent); and the caller's namespace gets nothing of the run's."""
    name = f"xb{os.getpid()}"
    netns.create(name)
    try:
        with netns.entered(name):
            yield
    finally:
        netns.remove(name)


class _Rig:
    """The lab, the compiled benchmark programs, sinks on every port but the first."""

    def __init__(
        self,
        ops,
        stack: ExitStack,
        pins: PinDir,
        nports: int,
        cpus: list[int],
        size: int,
        flows: int,
    ):
        prefix = f"xb{os.getpid()}p"
        self.lab = stack.enter_context(lab.running(prefix, nports, queues=len(cpus)))
        self.pins = pins.scratch("bench")
        self.pins.ensure_bpffs()
        os.mkdir(self.pins.path, mode=0o700)
        stack.callback(_remove_rig_pins, self.pins)
        # xdpfwd's own pins, kept across samples so that it compiles once.
        self.xdpfwd_pins = PinDir.parse(f"{self.pins.path}/xdpfwd")
        stack.callback(ops.down, self.xdpfwd_pins)
        self.ops = ops
        self.cpus = cpus
        programs = (GEN, SINK, FWD, SPREAD, *(f"{FLOOD}{n}" for n in FANOUTS))
        # Multi-buffer when the kernel can, as xdpfwd's own programs.
        frags = sc.frags_supported()
        self.fds = loader.compile_programs(
            source.program_text(source.BENCH_SOURCE),
            dict.fromkeys(programs, loader.XDP),
            source.cflags(XDPFWD_PIN_DIR=self.pins.path, **loader.frags_defines(frags)),
            prog_flags=loader.xdp_prog_flags(frags),
        )
        for fd in self.fds.values():
            stack.callback(os.close, fd)
        self.sink = stack.enter_context(
            closing(maps.SinkCounter(self.pins.pin(maps.PIN_BENCH_SINK)))
        )
        self.ports = [netdev.link_by_name(p.port) for p in self.lab.ports]
        hosts = [netdev.link_by_name(p.host_dev, netns=p.netns) for p in self.lab.ports]
        for p in self.lab.ports[1:]:
            with netns.entered(p.netns):
                netdev.attach_xdp(netdev.link_by_name(p.host_dev), self.fds[SINK], "native")
        self.target, self.flows = hosts[0].ifindex, flows
        self.set_flows(flows)
        one, two = self.lab.ports[:2]
        frame = traffic.udp_frame(hosts[0].mac, hosts[1].mac, one.ip, two.ip, size)
        self.generator = traffic.Generator(self.fds[GEN], one.netns, frame, cpus)
        group_mac = maps.McastAddr.parse(MCAST_GROUP).mac_text()
        frame = traffic.udp_frame(hosts[0].mac, group_mac, one.ip, MCAST_GROUP, size)
        self.mcast_generator = traffic.Generator(self.fds[GEN], one.netns, frame, cpus)

    def set_flows(self, flows: int, spread: int = 0) -> None:
        """How many flows (UDP source ports) the generator's frames spread over, and
        over how many ports the spread baseline sends them."""
        with closing(maps.BenchConfig(self.pins.pin(maps.PIN_BENCH_CFG))) as cfg:
            cfg.set(self.target, flows, spread)

    def rate(
        self,
        duration: float,
        generator: traffic.Generator | None = None,
        profile: _Profile | None = None,
    ) -> float:
        """One sample: Mpps delivered to the sinks while the generator runs; with a
        profile, the runs of the run's programs during it added to that."""
        if profile is not None:
            ours = run_stats.programs_held_or_pinned(self.pins.path)
            runs = run_stats.read()
        before, _ = self.sink.read()
        _, elapsed = (generator or self.generator).run_for(duration)
        time.sleep(0.05)  # let the last batch drain from the rings
        delivered, _ = self.sink.read()
        if profile is not None:
            after = {i: r for i, r in run_stats.read().items() if i in ours}
            # The generator's threads keep their CPUs busy for the whole sample.
            profile.add(runs, after, delivered - before, elapsed * len(self.cpus))
        return (delivered - before) / elapsed / 1e6


class _Profile:
    """The programs' runs over a row's samples, by program name (a row may load its
    program anew for each sample), for a RowProfile."""

    # A program that ran for fewer frames than this share ran for something else.
    LEAST_RUNS_PER_FRAME = 0.001

    def __init__(self):
        self.frames, self.cpu_seconds = 0, 0.0
        self.runs: dict[str, tuple[int, int]] = {}  # name: (runs, ns)

    def add(self, before: dict, after: dict, frames: int, cpu_seconds: float) -> None:
        """A sample's frames and CPU time, and the runs of the programs in after."""
        self.frames += frames
        self.cpu_seconds += cpu_seconds
        for prog_id, now in after.items():
            was = before.get(prog_id)
            runs = now.runs - (was.runs if was else 0)
            if runs > 0:
                ns = now.run_time_ns - (was.run_time_ns if was else 0)
                total_runs, total_ns = self.runs.get(now.name, (0, 0))
                self.runs[now.name] = (total_runs + runs, total_ns + ns)

    def result(self) -> RowProfile:
        frames = max(self.frames, 1)
        programs = [
            ProgramCost(name, runs / frames, ns / runs)
            for name, (runs, ns) in self.runs.items()
            if runs / frames >= self.LEAST_RUNS_PER_FRAME
        ]
        programs.sort(key=lambda p: -p.ns_per_frame)
        return RowProfile(self.cpu_seconds * 1e9 / frames, programs)


def _remove_rig_pins(pins: PinDir) -> None:
    """Unpin what the rig pinned, then its directory: only that (the xdpfwd pin dirs
    inside it are removed by `down` before)."""
    for name in RIG_PINS:
        with suppress(FileNotFoundError):
            os.unlink(pins.pin(name))
    pins.remove_if_empty()


def _loss_accounting(rig: _Rig, on: bool) -> None:
    """Attach or detach the tracepoint programs of xdpfwd's pins (once they exist).

    They run for every devmap transmit on the host, whoever redirects: the rows
    without xdpfwd need them off as much as the row that measures their cost.
    """
    pins = rig.xdpfwd_pins
    if not pins.exists():
        return
    with pins.locked(create=False), ExitStack() as partial:
        if on:
            tracing.ensure_attached(pins, partial)
        else:
            tracing.detach(pins)
        partial.pop_all()


@contextmanager
def _bare(rig: _Rig, program: str, pin: str, ports: list[netdev.Link]) -> Iterator[None]:
    """A baseline program on port 1, its array devmap holding ports, a slot each."""
    _loss_accounting(rig, False)
    ingress = rig.ports[0]
    with closing(maps.ForwardTable(rig.pins.pin(pin))) as devmap:
        for slot, port in enumerate(ports):
            devmap.set(slot, port.ifindex)
        netdev.attach_xdp(ingress, rig.fds[program], "native")
        try:
            yield
        finally:
            netdev.detach_xdp(netdev.link(ingress.ifindex), expected_fd=rig.fds[program])


def _baseline(rig: _Rig):
    return _bare(rig, FWD, maps.PIN_BENCH_FWD, rig.ports[1:2])


@contextmanager
def _baseline_accounted(rig: _Rig) -> Iterator[None]:
    """The baseline while xdpfwd's loss-accounting programs are attached: they run for
    every devmap transmit on the host (the generator's too), so this row is the part
    of forward's cost that is the tracepoints', and what is left the ingress program's."""
    if not rig.xdpfwd_pins.exists():
        with _xdpfwd(rig):  # compiles and pins them
            pass
    with _baseline(rig):
        _loss_accounting(rig, True)
        yield


@contextmanager
def _baseline_dispatched(rig: _Rig) -> Iterator[None]:
    """The baseline while a program that does nothing is attached to the tracepoint
    that loss accounting counts transmit drops on: the cost of the kernel's dispatch
    alone, the least any program there costs."""
    xmit = "xdp_devmap_xmit"
    kind = loader.trace_kinds()[loader.TRACE_FUNCS[xmit]]
    code = sc.insn(0xB7) + sc.insn(0x95)  # r0 = 0; exit
    prog = sc.prog_load(
        kind.prog_type, code, "xdpfwd_bench_tp", kind.attach_type, attach_btf_id=kind.attach_btf_id
    )
    try:
        with _baseline(rig):
            link = sc.raw_tracepoint_open(prog, xmit, typed=True)
            try:
                yield
            finally:
                os.close(link)
    finally:
        os.close(prog)


def _bare_broadcast(rig: _Rig, fanout: int):
    """Port 1 floods to the next fanout ports, which the map holds with port 1."""
    return _bare(
        rig, f"{FLOOD}{fanout}", f"{maps.PIN_BENCH_FLOOD}{fanout}", rig.ports[: fanout + 1]
    )


@contextmanager
def _xdpfwd(
    rig: _Rig, egress_spec: EgressSpec = DEFAULT_EGRESS, accounting: bool = True
) -> Iterator[None]:
    ingress, egress = (_iface(link) for link in rig.ports[:2])
    rig.ops.add(rig.xdpfwd_pins, ingress, egress, mode="native", egress_spec=egress_spec)
    try:
        _loss_accounting(rig, accounting)
        yield
    finally:
        rig.ops.delete(rig.xdpfwd_pins, ingress)


@contextmanager
def _broadcast(rig: _Rig, fanout: int) -> Iterator[None]:
    """Port 1 floods to the next fanout ports (a group with --exclude-ingress)."""
    members = [_iface(link) for link in rig.ports[: fanout + 1]]
    rig.ops.broadcast(
        rig.xdpfwd_pins, members, group=f"fanout{fanout}", exclude_ingress=True, mode="native"
    )
    try:
        _loss_accounting(rig, True)
        yield
    finally:
        rig.ops.broadcast_del(rig.xdpfwd_pins, members)


@contextmanager
def _bare_spread(rig: _Rig, fanout: int) -> Iterator[None]:
    """The baseline of balanced rows: port 1 spreads its frames over the next fanout
    ports by UDP source port (no hash), through an array devmap holding just them,
    with as many flows as balanced rows get."""
    rig.set_flows(max(rig.flows, BALANCED_FLOWS), spread=fanout)
    try:
        with _bare(rig, SPREAD, maps.PIN_BENCH_SPREAD, rig.ports[1 : fanout + 1]):
            yield
    finally:
        rig.set_flows(rig.flows)


@contextmanager
def _balanced(rig: _Rig, fanout: int, egress_spec: EgressSpec = DEFAULT_EGRESS) -> Iterator[None]:
    """Port 1 balanced over the next fanout ports, with enough flows to spread."""
    ingress = _iface(rig.ports[0])
    egress = [_iface(link) for link in rig.ports[1 : fanout + 1]]
    rig.ops.add_balanced(rig.xdpfwd_pins, ingress, egress, mode="native", egress_spec=egress_spec)
    rig.set_flows(max(rig.flows, BALANCED_FLOWS))
    try:
        _loss_accounting(rig, True)
        yield
    finally:
        rig.set_flows(rig.flows)
        rig.ops.delete(rig.xdpfwd_pins, ingress)


@contextmanager
def _multicast(rig: _Rig) -> Iterator[traffic.Generator]:
    """Port 1 is the source of a multicast group whose receivers are the next ports."""
    source, *receivers = (_iface(link) for link in rig.ports[: MCAST_RECEIVERS + 1])
    rig.ops.multicast_add(rig.xdpfwd_pins, MCAST_GROUP, receivers, [source], mode="native")
    try:
        _loss_accounting(rig, True)
        yield rig.mcast_generator
    finally:
        rig.ops.multicast_del(rig.xdpfwd_pins, MCAST_GROUP)


@contextmanager
def _bridge(rig: _Rig) -> Iterator[None]:
    _loss_accounting(rig, False)
    ingress, egress = rig.ports[:2]
    name = f"{rig.lab.prefix}br"
    # Without an XDP program, the port needs GRO to take the generator's frames.
    offloads.change(ingress.ifname, gro=True)
    try:
        devices.add_bridge(name, [ingress.ifname, egress.ifname])
        yield
    finally:
        devices.delete_link(name)
        offloads.change(ingress.ifname, gro=False)


def _iface(link: netdev.Link) -> Iface:
    return Iface(link.ifindex, link.ifname)


def _cli(pins: PinDir, *args: str) -> float:
    """Wall time of one xdpfwd command, run as users run it."""
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "xdpfwd", "--pin-dir", pins.path, *args],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - start


def _control_plane_rows(rig: _Rig, repeat: int) -> list[BenchRow]:
    one, two = (p.ifname for p in rig.ports[:2])
    compiling, pinned, entries = [], [], []
    for i in range(repeat):
        pins = PinDir.parse(f"{rig.pins.path}/control{i}")
        try:
            compiling.append(_cli(pins, "add", one, two))
            pinned.append(_cli(pins, "add", two, one))
        finally:
            rig.ops.down(pins)
    path = rig.pins.pin(ENTRIES_PIN)
    maps.create_pinned_devmap_hash(path, "bench_entries")
    with closing(maps.ForwardTable(path)) as table:
        for _ in range(repeat):
            start = time.monotonic()
            for key in range(1, ENTRIES + 1):
                table.set(key, rig.ports[1].ifindex)
            entries.append(time.monotonic() - start)
    return [
        BenchRow("add_compiling", "xdpfwd add, compiling the program", "s", compiling),
        BenchRow("add_pinned", "xdpfwd add, program already pinned", "s", pinned),
        BenchRow("entries_written", f"{ENTRIES} forwarding entries written", "s", entries),
    ]


def _rows(user_spec: EgressSpec) -> list[tuple[str, str, Callable, str]]:
    """The traffic rows: (key, name, set-up, the key of the row it is compared with)."""
    return [
        (BASELINE, "baseline: bpf_redirect_map() only", _baseline, BASELINE),
        ("forward", "xdpfwd, as `add` sets it up (loss accounting on)", _xdpfwd, BASELINE),
        (
            "forward_no_loss_accounting",
            "xdpfwd without loss accounting",
            partial(_xdpfwd, accounting=False),
            "forward",
        ),
        (
            "baseline_loss_accounting",
            "baseline with xdpfwd's loss accounting attached",
            _baseline_accounted,
            BASELINE,
        ),
        (
            "baseline_empty_tracepoint",
            "baseline with a program doing nothing on the transmit tracepoint",
            _baseline_dispatched,
            BASELINE,
        ),
        (
            "forward_rewrite",
            "xdpfwd with a MAC rewrite (egress program)",
            partial(_xdpfwd, egress_spec=REWRITE),
            BASELINE,
        ),
        (
            "forward_user_program",
            "xdpfwd with a user egress program (XDP_PASS)",
            partial(_xdpfwd, egress_spec=user_spec),
            BASELINE,
        ),
        *(
            row
            for n in FANOUTS
            for row in (
                (
                    f"broadcast_bare_{n}",
                    f"bare broadcast to {n} ports (frames delivered)",
                    partial(_bare_broadcast, fanout=n),
                    BASELINE,
                ),
                (
                    f"broadcast_{n}",
                    f"xdpfwd broadcast to {n} ports (frames delivered)",
                    partial(_broadcast, fanout=n),
                    f"broadcast_bare_{n}",
                ),
            )
        ),
        *(
            row
            for n in FANOUTS
            for row in (
                (
                    f"spread_bare_{n}",
                    f"bare spread over {n} ports ({BALANCED_FLOWS} flows)",
                    partial(_bare_spread, fanout=n),
                    BASELINE,
                ),
                (
                    f"balanced_no_egress_{n}",
                    f"xdpfwd balanced over {n} ports, --no-egress",
                    partial(_balanced, fanout=n, egress_spec=NO_EGRESS),
                    f"spread_bare_{n}",
                ),
            )
        ),
        (
            f"balanced_{max(FANOUTS)}",
            f"xdpfwd balanced over {max(FANOUTS)} ports (per-port counters)",
            partial(_balanced, fanout=max(FANOUTS)),
            f"spread_bare_{max(FANOUTS)}",
        ),
        (
            f"multicast_{MCAST_RECEIVERS}",
            f"multicast group to {MCAST_RECEIVERS} receivers (copies delivered)",
            _multicast,
            BARE_BROADCAST,
        ),
        ("bridge", "Linux bridge (no XDP)", _bridge, BASELINE),
    ]


CONTROL_PLANE_KEYS = ("add_compiling", "add_pinned", "entries_written")


def row_keys() -> list[str]:
    """Every row's key, in the order bench measures them."""
    return [key for key, *_ in _rows(DEFAULT_EGRESS)] + list(CONTROL_PLANE_KEYS)


def _selected(rows: list[tuple[str, str, Callable, str]], keys: tuple[str, ...]):
    """The rows of keys and the rows they are compared with, in table order."""
    reference = {key: ref for key, _, _, ref in rows}
    wanted = set()
    for key in keys:
        while key in reference and key not in wanted:
            wanted.add(key)
            key = reference[key]
    return [row for row in rows if row[0] in wanted]


def run(
    ops,
    pins: PinDir,
    *,
    duration: float = 3.0,
    size: int = 64,
    repeat: int = 3,
    cpus: int = 1,
    flows: int = 1,
    rows: tuple[str, ...] = (),
    profile: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> BenchReport:
    """Build a lab, measure every row repeat times, remove everything. ops are the
    operations the rows set up (add, broadcast...): the ops package passes itself.
    rows: the keys of the rows to measure (with the rows they are compared with);
    none: all. profile: with the kernel's run statistics on (they slow every row),
    what each row's programs cost a frame.

    Raises PrereqError, BpfError, AttachError or InputError.
    """
    unknown = [key for key in rows if key not in row_keys()]
    if unknown:
        raise InputError(f"no bench row {unknown[0]!r} (rows: {', '.join(row_keys())})")
    if profile and rows and set(rows) <= set(CONTROL_PLANE_KEYS):
        raise InputError(
            "--profile shows what the programs of a rate's row cost; "
            f"{', '.join(rows)} times the control plane"
        )
    prereqs.require_privileges("bench")
    available = sorted(os.sched_getaffinity(0))
    if not 1 <= cpus <= len(available):
        raise InputError(f"--cpus must be between 1 and {len(available)}")
    settings = {
        "duration_s": duration,
        "frame_size": size,
        "repeat": repeat,
        "cpus": cpus,
        "flows": flows,
        "profile": profile,
    }
    report = BenchReport(settings, machine())
    try:
        with _torn_down_whole() as stack:
            if profile:
                stack.enter_context(run_stats.enabled())
            progress("building the lab and compiling the benchmark programs")
            stack.enter_context(_namespace_of_its_own())
            rig = _Rig(ops, stack, pins, max(FANOUTS) + 1, available[:cpus], size, flows)
            report.machine["lab_ifindexes"] = [port.ifindex for port in rig.ports]
            user = stack.enter_context(tempfile.TemporaryDirectory(prefix="xdpfwd-bench-"))
            _measure(rig, report, _table(user, rows), duration, repeat, profile, progress)
            if not rows or set(rows) & set(CONTROL_PLANE_KEYS):
                progress("measuring the control plane")
                report.rows.extend(_control_plane_rows(rig, repeat))
    finally:
        # What the rows' changes made is gone: an error is about no change that stays.
        interrupts.next_change()
    return report


@contextmanager
def _torn_down_whole() -> Iterator[ExitStack]:
    """An ExitStack whose teardown a second interrupt does not cut short (the lab's
    namespaces would stay): the interrupt waits for the teardown's end."""
    stack = ExitStack()
    try:
        yield stack
    finally:
        with interrupts.held():
            stack.close()


def _table(user: str, rows: tuple[str, ...]) -> list[tuple[str, str, Callable, str]]:
    """The rate rows to measure, their user egress program written into directory user."""
    user_file = os.path.join(user, "pass_all.c")
    with open(user_file, "w") as f:
        f.write(USER_PROGRAM)
    user_spec = EgressSpec(program="user", user_file=user_file, user_func="pass_all")
    table = _rows(user_spec)
    return _selected(table, rows) if rows else table


def _measure(
    rig: _Rig,
    report: BenchReport,
    table: list[tuple[str, str, Callable, str]],
    duration: float,
    repeat: int,
    profile: bool,
    progress: Callable[[str], None],
) -> None:
    """Measure the rate rows of table repeat times into report.
    Rows take turns within each repeat, in reverse order every other repeat: drift over
    the run, and whatever a row's set-up or tear-down leaves the kernel doing during
    the next row's sample, hit a row and its reference (its neighbour) alike."""
    samples: dict[str, list[float]] = {key: [] for key, *_ in table}
    profiles = {key: _Profile() for key, *_ in table} if profile else {}
    for k in range(repeat):
        for key, name, setup, _ in table if k % 2 == 0 else table[::-1]:
            interrupts.check()
            progress(f"[{k + 1}/{repeat}] {name}")
            with setup(rig) as generator:
                samples[key].append(rig.rate(duration, generator, profiles.get(key)))
    report.rows.extend(
        BenchRow(
            key,
            name,
            "Mpps",
            samples[key],
            ref,
            samples[ref],
            profiles[key].result() if profile else None,
        )
        for key, name, _, ref in table
    )
