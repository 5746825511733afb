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
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from functools import partial

from xdpfwd import interrupts
from xdpfwd.errors import InputError
from xdpfwd.kernel import netdev, netns, offloads, traffic
from xdpfwd.kernel.bpf import loader, maps, source
from xdpfwd.model import DEFAULT_EGRESS, EgressSpec, Iface
from xdpfwd.model.reports import BASELINE, BenchReport, BenchRow
from xdpfwd.state import lab
from xdpfwd.state.pins import PinDir

GEN, SINK, FWD = "xdpfwd_bench_gen", "xdpfwd_bench_sink", "xdpfwd_bench_fwd"
SPREAD = "xdpfwd_bench_spread"
FORWARDING = "xdpfwd, as `add` sets it up (egress program)"
FANOUTS = (2, 4)
BALANCED_FLOWS = 256  # at least this many flows in balanced rows, so that they spread
ENTRIES = 1000
NO_EGRESS = EgressSpec(program="none")


def machine() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {"kernel": platform.release(), "cpu": model, "cpus_online": os.cpu_count()}


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
        os.makedirs(self.pins.path)
        stack.callback(self.pins.remove)
        # xdpfwd's own pins, kept across samples so that it compiles once.
        self.xdpfwd_pins = PinDir.parse(f"{self.pins.path}/xdpfwd")
        stack.callback(ops.down, self.xdpfwd_pins)
        self.ops = ops
        maps.create_pinned_devmap_hash(self.pins.pin(maps.PIN_BENCH_FWD), "bench_fwd")
        self.fds = loader.compile_programs(
            source.program_text(source.BENCH_SOURCE),
            dict.fromkeys((GEN, SINK, FWD, SPREAD), (loader.PROG_XDP, None)),
            source.cflags(XDPFWD_PIN_DIR=self.pins.path),
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

    def set_flows(self, flows: int, spread: int = 0) -> None:
        """How many flows (UDP source ports) the generator's frames spread over, and
        over how many ports the spread baseline sends them."""
        with closing(maps.BenchConfig(self.pins.pin(maps.PIN_BENCH_CFG))) as cfg:
            cfg.set(self.target, flows, spread)

    def rate(self, duration: float) -> float:
        """One sample: Mpps delivered to the sinks while the generator runs."""
        before, _ = self.sink.read()
        _, elapsed = self.generator.run_for(duration)
        time.sleep(0.05)  # let the last batch drain from the rings
        delivered, _ = self.sink.read()
        return (delivered - before) / elapsed / 1e6


@contextmanager
def _baseline(rig: _Rig) -> Iterator[None]:
    ingress, egress = rig.ports[:2]
    with closing(maps.ForwardTable(rig.pins.pin(maps.PIN_BENCH_FWD))) as fwd:
        fwd.set(ingress.ifindex, egress.ifindex)
        netdev.attach_xdp(ingress, rig.fds[FWD], "native")
        try:
            yield
        finally:
            netdev.detach_xdp(netdev.link(ingress.ifindex), expected_fd=rig.fds[FWD])


@contextmanager
def _xdpfwd(rig: _Rig, egress_spec: EgressSpec = DEFAULT_EGRESS) -> Iterator[None]:
    ingress, egress = (_iface(link) for link in rig.ports[:2])
    rig.ops.add(rig.xdpfwd_pins, ingress, egress, mode="native", egress_spec=egress_spec)
    try:
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
        yield
    finally:
        rig.ops.broadcast_del(rig.xdpfwd_pins, members)


@contextmanager
def _spread(rig: _Rig, fanout: int) -> Iterator[None]:
    """The baseline of balanced rows: a bare bpf_redirect_map() over fanout ports,
    picked by UDP source port, with as many flows as they get."""
    ingress = rig.ports[0]
    with closing(maps.ForwardTable(rig.pins.pin(maps.PIN_BENCH_FWD))) as fwd:
        for i, egress in enumerate(rig.ports[1 : fanout + 1]):
            fwd.set(ingress.ifindex << maps.BUCKET_BITS | i, egress.ifindex)
        rig.set_flows(max(rig.flows, BALANCED_FLOWS), spread=fanout)
        netdev.attach_xdp(ingress, rig.fds[SPREAD], "native")
        try:
            yield
        finally:
            netdev.detach_xdp(netdev.link(ingress.ifindex), expected_fd=rig.fds[SPREAD])
            rig.set_flows(rig.flows)
            for i in range(fanout):
                fwd.delete(ingress.ifindex << maps.BUCKET_BITS | i)


@contextmanager
def _balanced(rig: _Rig, fanout: int, egress_spec: EgressSpec = DEFAULT_EGRESS) -> Iterator[None]:
    """Port 1 balanced over the next fanout ports, with enough flows to spread."""
    ingress = _iface(rig.ports[0])
    egress = [_iface(link) for link in rig.ports[1 : fanout + 1]]
    rig.ops.add_balanced(rig.xdpfwd_pins, ingress, egress, mode="native", egress_spec=egress_spec)
    rig.set_flows(max(rig.flows, BALANCED_FLOWS))
    try:
        yield
    finally:
        rig.set_flows(rig.flows)
        rig.ops.delete(rig.xdpfwd_pins, ingress)


@contextmanager
def _bridge(rig: _Rig) -> Iterator[None]:
    ingress, egress = rig.ports[:2]
    name = f"{rig.lab.prefix}br"
    # Without an XDP program, the port needs GRO to take the generator's frames.
    offloads.change(ingress.ifname, gro=True)
    try:
        netdev.add_bridge(name, [ingress.ifname, egress.ifname])
        yield
    finally:
        netdev.delete_link(name)
        offloads.change(ingress.ifname, gro=False)


def _spread_row(fanout: int) -> str:
    return f"baseline spread over {fanout} ports by UDP port"


def _label(reference: str) -> str | None:
    """How the ratio column names a row's reference (None: the usual)."""
    return "spread" if reference.startswith("baseline spread") else None


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
    path = rig.pins.pin("entries")
    maps.create_pinned_devmap_hash(path, "bench_entries")
    with closing(maps.ForwardTable(path)) as table:
        for _ in range(repeat):
            start = time.monotonic()
            for key in range(1, ENTRIES + 1):
                table.set(key, rig.ports[1].ifindex)
            entries.append(time.monotonic() - start)
    return [
        BenchRow("xdpfwd add, compiling the program", "s", compiling),
        BenchRow("xdpfwd add, program already pinned", "s", pinned),
        BenchRow(f"{ENTRIES} forwarding entries written", "s", entries),
    ]


def run(
    ops,
    pins: PinDir,
    *,
    duration: float = 3.0,
    size: int = 64,
    repeat: int = 3,
    cpus: int = 1,
    flows: int = 1,
    progress: Callable[[str], None] = lambda message: None,
) -> BenchReport:
    """Build a lab, measure every row repeat times, remove everything. ops are the
    operations the rows set up (add, broadcast...): the ops package passes itself.

    Raises PrereqError, BpfError, AttachError or InputError.
    """
    available = sorted(os.sched_getaffinity(0))
    if not 1 <= cpus <= len(available):
        raise InputError(f"--cpus must be between 1 and {len(available)}")
    settings = {
        "duration_s": duration,
        "frame_size": size,
        "repeat": repeat,
        "cpus": cpus,
        "flows": flows,
    }
    report = BenchReport(settings, machine())
    with ExitStack() as stack:
        progress("building the lab and compiling the benchmark programs")
        rig = _Rig(ops, stack, pins, max(FANOUTS) + 1, available[:cpus], size, flows)
        # (name, set-up, the row it is compared with)
        rows: list[tuple[str, Callable, str]] = [
            (BASELINE, _baseline, BASELINE),
            (FORWARDING, _xdpfwd, BASELINE),
            (
                "xdpfwd --no-egress (port counters only)",
                partial(_xdpfwd, egress_spec=NO_EGRESS),
                BASELINE,
            ),
            *(
                (
                    f"broadcast to {n} ports, frames delivered",
                    partial(_broadcast, fanout=n),
                    FORWARDING,
                )
                for n in FANOUTS
            ),
            *(
                row
                for n in FANOUTS
                for row in (
                    (_spread_row(n), partial(_spread, fanout=n), BASELINE),
                    (
                        f"balanced over {n} ports (--no-egress)",
                        partial(_balanced, fanout=n, egress_spec=NO_EGRESS),
                        _spread_row(n),
                    ),
                )
            ),
            (
                f"balanced over {max(FANOUTS)} ports, as `add` sets it up",
                partial(_balanced, fanout=max(FANOUTS)),
                _spread_row(max(FANOUTS)),
            ),
            ("Linux bridge (no XDP)", _bridge, BASELINE),
        ]
        # Rows take turns within each repeat, so drift over the run hits them alike.
        samples: dict[str, list[float]] = {name: [] for name, _, _ in rows}
        for k in range(repeat):
            for name, setup, _ in rows:
                interrupts.check()
                progress(f"[{k + 1}/{repeat}] {name}")
                with setup(rig):
                    samples[name].append(rig.rate(duration))
        report.rows.extend(
            BenchRow(name, "Mpps", samples[name], ref, samples[ref], _label(ref))
            for name, _, ref in rows
        )
        progress("measuring the control plane")
        report.rows.extend(_control_plane_rows(rig, repeat))
    return report
