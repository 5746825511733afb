"""`xdpfwd demo` and `xdpfwd lab`, run inside a throwaway namespace, leave nothing behind."""

import json
import os
import signal
import subprocess
import time

from .conftest import RUN_ID
from .net import lab_namespaces, namespaces, pins_left, popen, sh, xdpfwd_cmd


def run_in(ns, *args, pin_dir="/sys/fs/bpf/unused"):
    cmd = xdpfwd_cmd(ns, "--pin-dir", pin_dir, *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_demo_forwards_pings_both_ways_and_cleans_up(scratch_ns, pin_dir):
    before = lab_namespaces()
    result = run_in(scratch_ns, "demo", "--count", "2", pin_dir=pin_dir)
    assert result.returncode == 0, result.stderr
    assert "demo passed" in result.stdout
    assert result.stdout.count(" ok ") >= 2  # two ping rows, plus the entry states
    assert lab_namespaces() == before
    links = json.loads(sh("ip", "-n", scratch_ns, "-j", "link").stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    assert pins_left(pin_dir) == []


def test_lab_up_status_down(scratch_ns):
    name = f"t{RUN_ID}"
    try:
        assert run_in(scratch_ns, "lab", "up", "--ports", "3", "--name", name).returncode == 0
        status = json.loads(run_in(scratch_ns, "lab", "status", "--name", name, "--json").stdout)
        ports = [p["port"]["ifname"] for p in status["ports"]]
        assert ports == [f"{name}1", f"{name}2", f"{name}3"]
        assert all(p["port"]["ifindex"] for p in status["ports"])
        for port in status["ports"]:
            # The far end is ready for redirected frames and computes its own checksums.
            features = sh(
                "ip", "netns", "exec", port["host_netns"], "ethtool", "-k", port["host_dev"]
            ).stdout
            assert "generic-receive-offload: on" in features
            assert "tx-checksumming: off" in features
        again = run_in(scratch_ns, "lab", "up", "--name", name)
        assert again.returncode == 2 and "already exists" in again.stderr
        sh("ip", "-n", scratch_ns, "link", "del", f"{name}3")
        hand = ("type", "veth", "peer", "name", f"{name}x")
        sh("ip", "-n", scratch_ns, "link", "add", f"{name}3", *hand)  # not the lab's
        status = json.loads(run_in(scratch_ns, "lab", "status", "--name", name, "--json").stdout)
        assert [p["port"]["ifindex"] is None for p in status["ports"]] == [False, False, True]
    finally:
        run_in(scratch_ns, "lab", "down", "--name", name)
    sh("ip", "-n", scratch_ns, "link", "show", f"{name}3")  # left alone
    assert not any(ns.startswith(name) for ns in namespaces())
    status = json.loads(run_in(scratch_ns, "lab", "status", "--name", name, "--json").stdout)
    assert status["ports"] == []


def test_interrupted_demo_leaves_nothing(scratch_ns, pin_dir):
    before = lab_namespaces()
    proc = popen(xdpfwd_cmd(scratch_ns, "--pin-dir", pin_dir, "demo", "--count", "50"))
    # Wait until the lab exists and forwarding is set up, then interrupt.
    demo_pins = f"{pin_dir}-demo-{proc.pid}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not os.path.isdir(demo_pins) and proc.poll() is None:
        time.sleep(0.05)
    assert lab_namespaces() - before, f"the demo built no lab: {proc.poll()} {proc.stderr.read()}"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert lab_namespaces() == before
    assert pins_left(pin_dir) == []
