"""The in-kernel generator and `xdpfwd bench`, in a throwaway namespace."""

import json
import os
import signal
import subprocess
import time
from contextlib import ExitStack

import pytest

from xdpfwd import ops
from xdpfwd.model.reports import BASELINE
from xdpfwd.ops import benchmark as bench
from xdpfwd.state import lab

from .conftest import RUN_ID
from .net import in_netns, lab_namespaces, namespaces, pins_left, popen, sh, xdpfwd_cmd


def xmit_errors(*devices: tuple[str | None, str]) -> int:
    """Frames veth devices (netns, name) could not hand to their peer: its ring was full."""
    total = 0
    for netns, dev in devices:
        prefix = ("ip", "netns", "exec", netns) if netns else ()
        for line in sh(*prefix, "ethtool", "-S", dev).stdout.splitlines():
            name, _, value = line.strip().partition(": ")
            if name.startswith("tx_queue_") and name.endswith("_xdp_xmit_errors"):
                total += int(value)
    return total


@pytest.mark.parametrize("count", [1, 1000, 100_000])
def test_generator_sends_exactly_n_frames_through_a_plain_redirect(scratch_ns, pin_dir, count):
    from xdpfwd.state.pins import PinDir

    before = lab_namespaces()
    with in_netns(scratch_ns), ExitStack() as stack:
        rig = bench._Rig(ops, stack, PinDir.parse(pin_dir), 2, [0], 64, flows=4)
        one, two = rig.lab.ports
        # Where a burst can overflow a ring: into port 1, and out of port 2.
        senders = ((one.netns, one.host_dev), (None, two.port))
        with bench._baseline(rig):
            start, _ = rig.sink.read()
            errors = xmit_errors(*senders)
            rig.generator.send(count)
            deadline = time.monotonic() + 5
            while rig.sink.read()[0] - start + xmit_errors(*senders) - errors < count:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            time.sleep(0.1)  # anything beyond count would show up by now
            delivered, nbytes = rig.sink.read()
            lost = xmit_errors(*senders) - errors
    assert delivered - start + lost == count
    assert lost <= count // 100  # a full ring now and then, not a generator that runs ahead
    assert nbytes % 64 == 0
    assert lab_namespaces() == before


def run_bench(scratch_ns: str, pin_dir: str, *args: str, stdout=subprocess.PIPE):
    """`xdpfwd bench ARGS` with pin_dir, in scratch_ns; its stderr (and stdout) as text."""
    return subprocess.run(
        xdpfwd_cmd(scratch_ns, "--pin-dir", pin_dir, "bench", *args),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )


def assert_the_baseline_forwards(rig) -> None:
    """Port 1 runs the baseline program (not xdpfwd's), and every frame arrives."""
    from xdpfwd.kernel import netdev
    from xdpfwd.kernel.bpf import syscall as sc

    baseline_id = sc.prog_info(rig.fds[bench.FWD]).id
    assert netdev.link(rig.ports[0].ifindex).xdp_prog_id == baseline_id
    start, _ = rig.sink.read()
    rig.generator.send(1000)
    deadline = time.monotonic() + 5
    while rig.sink.read()[0] - start < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rig.sink.read()[0] - start == 1000


@pytest.mark.parametrize("pinned_before", [False, True], ids=["first row", "after forward"])
def test_the_accounted_baseline_runs_the_baseline_under_the_tracepoint_programs(
    scratch_ns, pin_dir, pinned_before
):
    from xdpfwd.state import tracing
    from xdpfwd.state.pins import PinDir

    with in_netns(scratch_ns), ExitStack() as stack:
        rig = bench._Rig(ops, stack, PinDir.parse(pin_dir), 2, [0], 64, flows=1)
        if pinned_before:
            with bench._xdpfwd(rig):
                pass
        with bench._baseline_accounted(rig):
            assert tracing.is_attached(rig.xdpfwd_pins)
            assert_the_baseline_forwards(rig)
        with bench._baseline(rig):
            assert not tracing.is_attached(rig.xdpfwd_pins)
    assert pins_left(pin_dir) == []


def test_the_dispatch_row_runs_the_baseline_under_a_program_on_the_xmit_tracepoint(
    scratch_ns, pin_dir
):
    from xdpfwd.state import tracing
    from xdpfwd.state.pins import PinDir

    with in_netns(scratch_ns), ExitStack() as stack:
        rig = bench._Rig(ops, stack, PinDir.parse(pin_dir), 2, [0], 64, flows=1)
        before = tracing.host_links()
        with bench._baseline_dispatched(rig):
            added = [link for key, link in tracing.host_links().items() if key not in before]
            assert [link.tracepoint for link in added] == ["xdp_devmap_xmit"]
            assert_the_baseline_forwards(rig)
        assert tracing.host_links().keys() == before.keys()
    assert pins_left(pin_dir) == []


def test_bench_json_has_every_row_with_a_positive_rate(scratch_ns, pin_dir):
    result = run_bench(scratch_ns, pin_dir, "--duration", "1", "--repeat", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    keys = [row["key"] for row in report["rows"]]
    assert keys == [
        BASELINE,
        "forward",
        "forward_no_loss_accounting",
        "baseline_loss_accounting",
        "baseline_empty_tracepoint",
        "forward_rewrite",
        "forward_user_program",
        "broadcast_bare_2",
        "broadcast_2",
        "broadcast_bare_4",
        "broadcast_4",
        "spread_bare_2",
        "balanced_no_egress_2",
        "spread_bare_4",
        "balanced_no_egress_4",
        "balanced_4",
        "multicast_4",
        "bridge",
        "add_compiling",
        "add_pinned",
        "entries_written",
    ]
    refs = {row["key"]: row["ratio_to"] for row in report["rows"]}
    for n in (2, 4):
        assert refs[f"spread_bare_{n}"] == BASELINE
        assert refs[f"balanced_no_egress_{n}"] == f"spread_bare_{n}"
    assert refs["balanced_4"] == "spread_bare_4"
    (mcast,) = [row for row in report["rows"] if row["key"] == "multicast_4"]
    assert mcast["ratio_to"] == "broadcast_bare_4" == bench.BARE_BROADCAST
    without = next(r for r in report["rows"] if r["key"] == "forward_no_loss_accounting")
    assert without["ratio_to"] == "forward"
    assert refs["baseline_loss_accounting"] == BASELINE
    assert refs["baseline_empty_tracepoint"] == BASELINE
    for row in report["rows"]:
        assert row["median"] > 0, row
        if row["unit"] == "Mpps":
            assert row["ratio"] > 0 and row["ratio_to"] in keys
    assert report["rows"][0]["ratio"] == 1.0
    assert report["machine"]["kernel"] == os.uname().release
    # In a namespace of its own, whatever the host's count: xdpfwd's array paths.
    assert max(report["machine"]["lab_ifindexes"]) < 1024
    assert pins_left(pin_dir) == []


def test_profile_names_what_each_row_ran_per_frame_and_leaves_run_stats_as_they_were(
    scratch_ns, pin_dir
):
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_before = f.read()
    # Another xdpfwd's programs, of the same names, run meanwhile (its tracepoint
    # programs for the bench's transmits too): they are not the run's (helper-50).
    other = f"{pin_dir}-other"
    for dev in ("zo1", "zo2"):
        sh("ip", "-n", scratch_ns, "link", "add", dev, "type", "veth", "peer", f"{dev}p")
        sh("ip", "-n", scratch_ns, "link", "set", dev, "up")
    sh(*xdpfwd_cmd(scratch_ns, "--pin-dir", other, "add", "zo1", "zo2"))
    try:
        result = run_bench(
            scratch_ns,
            pin_dir,
            "--row",
            "forward",
            "--row",
            "forward_user_program",
            "--profile",
            "--duration",
            "0.5",
            "--repeat",
            "2",
            "--json",
        )
    finally:
        sh(*xdpfwd_cmd(scratch_ns, "--pin-dir", other, "down"))
    assert pins_left(other) == []
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["profile"] is True
    ran = {row["key"]: {p["name"]: p for p in row["profile"]["programs"]} for row in report["rows"]}
    # Kernel program names are cut at 15 characters.
    assert set(ran[BASELINE]) == {"xdpfwd_bench_ge", "xdpfwd_bench_fw", "xdpfwd_bench_si"}
    for key, forwarder in ((BASELINE, "xdpfwd_bench_fw"), ("forward", "xdpfwd_ingress")):
        # Once per frame delivered, a few more for frames a full ring lost.
        assert 1.0 <= ran[key][forwarder]["runs_per_frame"] < 1.02
        # The sink runs for the lab's other frames too (neighbour discovery).
        assert ran[key]["xdpfwd_bench_si"]["runs_per_frame"] == pytest.approx(1.0, rel=1e-3)
    # The transmit tracepoint fires once per bulk (at most 16 frames): the
    # generator's and the forwarder's.
    assert 2 / 16 <= ran["forward"]["xdpfwd_tp_xmit"]["runs_per_frame"] <= 2
    # A user's egress program, which only the forwarding table's entry holds.
    assert ran["forward_user_program"]["pass_all"]["runs_per_frame"] == pytest.approx(1, rel=0.02)
    for row in report["rows"]:
        spent = sum(p["ns_per_frame"] for p in row["profile"]["programs"])
        assert 0 < spent < row["profile"]["cpu_ns_per_frame"]
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        assert f.read() == stats_before
    assert pins_left(pin_dir) == []


def test_rows_take_turns_in_reverse_order_every_other_repeat(scratch_ns, pin_dir):
    """A row and its reference swap places between repeats, so that what the earlier
    one leaves the kernel doing weighs on both alike."""
    result = run_bench(
        scratch_ns, pin_dir, "--row", "forward", "--duration", "0.2", "--repeat", "3", "--json"
    )
    assert result.returncode == 0, result.stderr
    measured = [
        line.split("] ", 1)[1] for line in result.stderr.splitlines() if line.startswith("note: [")
    ]
    baseline, forward = (row["name"] for row in json.loads(result.stdout)["rows"])
    assert measured == [baseline, forward, forward, baseline, baseline, forward]
    assert pins_left(pin_dir) == []


def test_an_error_after_the_rows_says_nothing_of_a_change_that_stays(scratch_ns, pin_dir):
    # The rows' own changes had marked one made: "it came after the change was made,
    # which stays (see `xdpfwd list`)", where the bench leaves nothing (helper-50).
    with open("/dev/full", "w") as full:
        result = run_bench(
            scratch_ns,
            pin_dir,
            "--row",
            "forward",
            "--duration",
            "0.2",
            "--repeat",
            "1",
            "--json",
            stdout=full,
        )
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last == "error: cannot write the output: No space left on device"
    assert pins_left(pin_dir) == []


def test_a_second_interrupt_waits_for_the_labs_teardown(scratch_ns, monkeypatch):
    # It cut lab.down short: the lab's namespaces stayed (helper-50, a double Ctrl-C
    # while bench built its lab).
    from xdpfwd import interrupts
    from xdpfwd.kernel import netns

    name = f"j{RUN_ID}"
    real_remove, removed = netns.remove, []

    def remove(ns: str) -> None:
        if not removed:
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before the next line
        removed.append(ns)
        real_remove(ns)

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    try:
        with in_netns(scratch_ns), pytest.raises(KeyboardInterrupt):
            with lab.running(name, 3):
                monkeypatch.setattr(netns, "remove", remove)
                raise KeyboardInterrupt  # the first one
        assert len(removed) == 3
        assert {ns for ns in namespaces() if ns.startswith(name)} == set()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()  # the second one, for what comes next
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        monkeypatch.undo()
        # Not with monkeypatch: its undo would set them back to pending.
        interrupts._pending = interrupts._deferred = False
        with in_netns(scratch_ns):
            lab.down(name)


def test_interrupted_lab_up_leaves_nothing(scratch_ns):
    name = f"i{RUN_ID}"

    def ours() -> set[str]:
        return {ns for ns in namespaces() if ns.startswith(name)}

    proc = popen(xdpfwd_cmd(scratch_ns, "lab", "up", "--ports", "60", "--name", name))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(ours()) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    try:
        assert proc.returncode == 130, err
        assert ours() == set()
        links = json.loads(sh("ip", "-n", scratch_ns, "-j", "link").stdout)
        assert [link["ifname"] for link in links] == ["lo"]
    finally:
        with in_netns(scratch_ns):
            lab.down(name)
