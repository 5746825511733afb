"""`xdpfwd stats`: exact counts, live rates, transmit failures, the live table in a
real terminal, Prometheus output and device churn, with real traffic."""

import json
import os
import shlex
import subprocess
import threading
import time

import pytest

from xdpfwd.state import tracing

from .conftest import RUN_ID
from .net import UdpSink, assert_fails, send_udp, sh, udp_frame_len, xdpfwd_cmd

NO_BCC = {"PYTHONPATH": os.path.join(os.path.dirname(__file__), "no_bcc")}


def stats_json(topo, pin_dir, *args) -> dict:
    return json.loads(topo.ok(pin_dir, "stats", "--json", *args).stdout)


def by_port(data) -> dict:
    return {p["port"]["ifname"]: p for p in data["ports"]}


def by_pair(data) -> dict:
    return {(p["ingress"]["ifname"], p["egress"]["ifname"]): p for p in data["pairs"]}


def watch(topo, pin_dir, *args, env=None):
    """Start `stats --watch --json`; return the process once its first line is out."""
    proc = topo.start(pin_dir, "stats", "--watch", "--json", *args, env=env)
    first = proc.stdout.readline()
    assert first, proc.stderr.read()
    return proc, [json.loads(first)]


def finish(proc, lines: list) -> list:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return lines + [json.loads(line) for line in out.splitlines()]


class Sender(threading.Thread):
    """Sends UDP from one host to another until stopped."""

    def __init__(self, src, dst_ip):
        super().__init__()
        self.src, self.dst_ip, self.stopped = src, dst_ip, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            send_udp(self.src, self.dst_ip, 32, port=9400)
            time.sleep(0.005)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.join()


def test_counts_are_exact(make_topo, pin_dir):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "--dst-mac", h2.mac)
    topo.ok(pin_dir, "add", "p3", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 120, payload=90)
        send_udp(h3, h2.ip, 30, payload=90)
        assert sink.count(150) == 150
    data = stats_json(topo, pin_dir)
    ports, pairs = by_port(data), by_pair(data)
    assert ports["p1"]["rx_packets"] == ports["p1"]["redirect_packets"] == 120
    assert ports["p1"]["rx_bytes"] == 120 * udp_frame_len(90)
    assert pairs[("p1", "p2")]["tx_packets"] == 120
    assert pairs[("p1", "p2")]["counted_by"] == "egress"  # its rewrite program counts
    assert pairs[("p3", "p2")]["tx_packets"] == 30
    assert pairs[("p3", "p2")]["counted_by"] == "ingress"  # no egress program: the port's
    assert ports["p2"]["tx_packets"] == 150
    assert data["totals"]["rx_packets"] == 150
    # Loss accounting is on from the first add: every reason is known.
    assert data["tracing"] is True
    assert data["not_forwarded"] == {
        "miss": 0,
        "too_big": 0,
        "egress_drop": 0,
        "egress_invalid": 0,
        "redirect_error": 0,
        "xmit_drop": 0,
    }
    # Every frame p1 took left on p2: in = forwarded (+ passed + dropped + lost: none).
    assert ports["p1"]["forwarded_packets"] == 120
    # The one-shot call needs no compiler.
    assert topo.xdpfwd(pin_dir, "stats", env=NO_BCC).returncode == 0
    # --iface: p3's own row and the pairs it is in; a port xdpfwd has nothing of is no
    # empty table, which would pass for one that counted nothing.
    only = json.loads(topo.ok(pin_dir, "stats", "--json", "--iface", "p3").stdout)
    assert list(by_port(only)) == ["p3"] and list(by_pair(only)) == [("p3", "p2")]
    sh("ip", "-n", topo.fwd, "link", "add", "px", "type", "veth", "peer", "name", "py")
    for name in ("px", "99999"):
        refused = topo.xdpfwd(pin_dir, "stats", "--iface", "p3", "--iface", name)
        assert_fails(refused, 1, "has no counters: xdpfwd does not forward from or to it")


def test_sums_keep_what_ended_pairs_and_released_ports_counted(make_topo, pin_dir):
    # A port's TX sums the pairs sending to it, the total of losses sums the ports:
    # neither may go down when a pair or a port goes (Prometheus would read a reset).
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p3")
    send_udp(h1, h2.ip, 6)  # p1 has no entry yet: its on-miss verdict, counted as misses
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "add", "p3", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 12)
        send_udp(h3, h2.ip, 8)
        assert sink.count(20) == 20
    data = stats_json(topo, pin_dir)
    assert (by_port(data)["p2"]["tx_packets"], data["not_forwarded"]["miss"]) == (20, 6)
    totals = data["totals"]
    assert (totals["rx_packets"], totals["miss_packets"], totals["tx_packets"]) == (26, 6, 20)
    topo.ok(pin_dir, "multicast", "del", "239.1.1.1")
    topo.ok(pin_dir, "del", "p1")  # its pair to p2 ends, and p1 is released
    data = stats_json(topo, pin_dir)
    assert "p1" not in by_port(data) and ("p1", "p2") not in by_pair(data)
    assert (by_port(data)["p2"]["tx_packets"], data["not_forwarded"]["miss"]) == (20, 6)
    assert data["totals"] == totals  # p1's frames in them still
    with UdpSink(h2) as sink:
        send_udp(h3, h2.ip, 3)
        assert sink.count(3) == 3
    text = topo.ok(pin_dir, "stats", "--format", "prometheus").stdout
    assert 'xdpfwd_port_tx_packets_total{port="p2",' in text
    tx = next(
        line
        for line in text.splitlines()
        if line.startswith('xdpfwd_port_tx_packets_total{port="p2",')
    )
    assert tx.split()[-1] == "23"
    assert 'xdpfwd_not_forwarded_packets_total{reason="miss"} 6' in text
    totals = stats_json(topo, pin_dir)["totals"]
    assert (totals["rx_packets"], totals["tx_packets"], totals["tx_bytes"]) == (
        29,
        23,
        23 * udp_frame_len(64),
    )
    # The egress's device deleted: p2 leaves the rows (and p3, sending to nothing),
    # not the totals.
    sh("ip", "-n", topo.fwd, "link", "del", "p2")
    assert stats_json(topo, pin_dir)["totals"] == totals  # the kernel took p3's entry
    topo.ok(pin_dir, "prune")
    data = stats_json(topo, pin_dir)
    assert "p2" not in by_port(data) and data["totals"] == totals
    # Zeroed counters start every sum from zero, what ended included.
    topo.ok(pin_dir, "stats", "--clear")
    data = stats_json(topo, pin_dir)
    assert set(data["totals"].values()) == {0} and data["not_forwarded"]["miss"] == 0


def test_counts_stay_when_the_kernel_takes_what_sends_to_a_deleted_device(
    make_topo, pin_dir, tmp_path
):
    # Deleting a device takes the devmap entries that send to it at once, before any
    # prune: their pairs keep their counts (and drops their reason) until prune ends
    # them, and then the sums keep them.
    topo = make_topo(8)
    h1, h2, h3, h4, h5, h6, h7, h8 = topo.hosts
    topo.static_arp()
    drop = tmp_path / "drop_all.c"
    drop.write_text("int drop_all(struct xdp_md *ctx)\n{\n\treturn XDP_DROP;\n}\n")
    topo.ok(pin_dir, "add", "p1", "p2", "--egress-prog", f"{drop}:drop_all")
    topo.ok(pin_dir, "broadcast", "p3", "p4", "p5", "--exclude-ingress", "--group", "g")
    topo.ok(pin_dir, "add", "p6", "p7", "p8")  # balanced
    send_udp(h1, h2.ip, 10)
    send_udp(h6, h7.ip, 10)  # to p7 or p8, as its addresses hash
    with UdpSink(h4) as sink:
        send_udp(h3, h4.ip, 10)
        assert sink.count(10) == 10
    before = stats_json(topo, pin_dir)
    assert before["not_forwarded"]["egress_drop"] == 10
    assert by_port(before)["p4"]["tx_packets"] == 10
    assert sum(p["tx_packets"] for k, p in by_pair(before).items() if k[0] == "p6") == 10
    for port in ("p2", "p3", "p5", "p7", "p8"):
        sh("ip", "-n", topo.fwd, "link", "del", port)
    for step in ("deleted", "pruned"):
        data = stats_json(topo, pin_dir)
        assert data["totals"] == before["totals"], step
        assert data["not_forwarded"] == before["not_forwarded"], step
        assert by_port(data)["p4"]["tx_packets"] == 10, step  # p3's copies, p3 gone
        topo.ok(pin_dir, "prune")


def test_an_entry_moved_to_another_egress_counts_from_zero_there(make_topo, pin_dir):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 40)
        assert sink.count(40) == 40
    topo.ok(pin_dir, "add", "p1", "p3")  # in place: p1 stays attached, its counters too
    data = stats_json(topo, pin_dir)
    assert by_port(data)["p1"]["redirect_packets"] == 40
    # The 40 frames left on p2: none of them is p1 -> p3's (nor p3's TX).
    assert by_pair(data)[("p1", "p3")]["tx_packets"] == 0
    assert by_port(data)["p3"]["tx_packets"] == 0
    with UdpSink(h3) as sink:
        send_udp(h1, h3.ip, 25)
        assert sink.count(25) == 25
    data = stats_json(topo, pin_dir)
    pair = by_pair(data)[("p1", "p3")]
    assert (pair["counted_by"], pair["tx_packets"]) == ("ingress", 25)
    assert pair["tx_bytes"] == 25 * udp_frame_len(64)
    assert by_port(data)["p3"]["tx_packets"] == 25
    assert by_port(data)["p1"]["forwarded_packets"] == 65  # the port's own counters go on
    # An egress program for a while, then none again: the same pair, counted on.
    topo.ok(pin_dir, "add", "p1", "p3", "--dst-mac", h3.mac)
    with UdpSink(h3) as sink:
        send_udp(h1, h3.ip, 5)
        assert sink.count(5) == 5
    topo.ok(pin_dir, "add", "p1", "p3")
    with UdpSink(h3) as sink:
        send_udp(h1, h3.ip, 7)
        assert sink.count(7) == 7
    assert by_pair(stats_json(topo, pin_dir))[("p1", "p3")]["tx_packets"] == 37


def test_watch_reports_rates_while_traffic_flows(topo, pin_dir):
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    with Sender(h1, h2.ip):
        proc, lines = watch(topo, pin_dir, "--count", "3", "--interval", "0.5")
        lines = finish(proc, lines)
    assert len(lines) == 3
    for line in lines[1:]:
        ports, pairs = by_port(line), by_pair(line)
        assert line["tracing"] is True and 0.4 < line["interval_s"] < 1.5
        assert ports["p1"]["rx_pps"] > 0 and ports["p1"]["rx_bps"] > 0
        assert pairs[("p1", "p2")]["tx_pps"] > 0
    # The tracepoint programs are pinned now: a second watch compiles nothing.
    proc, lines = watch(topo, pin_dir, "--count", "1", "--interval", "0.2", env=NO_BCC)
    finish(proc, lines)


def test_transmit_failures_are_counted_with_no_watcher(make_topo, pin_dir, tmp_path):
    # h2's veth end has neither GRO nor XDP: redirecting into p2 fails in the kernel.
    topo = make_topo(2, gro=False)
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2")
    with UdpSink(h2) as sink:
        send_udp(h1, h2.ip, 50)
        assert sink.count(50, timeout=0.5) == 0
    # No `stats --watch` ran: the pinned tracepoint links counted meanwhile.
    data = stats_json(topo, pin_dir)
    lost = data["not_forwarded"]
    assert lost["redirect_error"] == 50 and lost["xmit_drop"] == 0 and lost["miss"] == 0
    p1 = by_port(data)["p1"]
    # The ingress program did redirect them: only the tracepoints saw them fail.
    assert p1["redirect_packets"] == 50 and p1["forwarded_packets"] == 0
    assert p1["not_forwarded"]["redirect_error"] == 50
    assert by_pair(data)[("p1", "p2")]["redirect_error_packets"] == 50
    # TX is what was handed towards p2, a counter that never goes down: the 50 lost
    # after show as the pair's redirect errors, and forwarded subtracts them.
    assert by_pair(data)[("p1", "p2")]["tx_packets"] == by_port(data)["p2"]["tx_packets"] == 50
    out = tmp_path / "xdpfwd.prom"
    topo.ok(pin_dir, "stats", "--format", "prometheus", "--output", str(out))
    text = out.read_text()
    pair = pair_labels(topo, "p1", "p2")
    assert f"xdpfwd_pair_redirect_error_packets_total{{{pair}}} 50" in text
    assert 'xdpfwd_not_forwarded_packets_total{reason="redirect_error"} 50' in text
    row = next(r for r in topo.list_json(pin_dir)["entries"] if r["ingress"]["ifname"] == "p1")
    assert row["redirect_error_packets"] == 50
    assert row["not_forwarded"]["redirect_error"] == 50
    # Loss accounting counts once however many watchers run, and they all see it.
    first, lines1 = watch(topo, pin_dir, "--count", "6", "--interval", "0.5")
    second, lines2 = watch(topo, pin_dir, "--count", "6", "--interval", "0.5")
    send_udp(h1, h2.ip, 30)
    for proc, lines in ((first, lines1), (second, lines2)):
        lines = finish(proc, lines)
        assert lines[-1]["watch_not_forwarded"]["redirect_error"] == 30
        assert lines[-1]["not_forwarded"]["redirect_error"] == 80
        assert by_port(lines[-1])["p1"]["not_forwarded"]["redirect_error"] == 80
    assert stats_json(topo, pin_dir)["not_forwarded"]["redirect_error"] == 80


def test_down_detaches_loss_accounting(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2")
    names = os.listdir(pin_dir)
    links = [n for n in names if n.startswith("link_tp_")]
    assert sorted(links) == [
        "link_tp_xdp_devmap_xmit",
        "link_tp_xdp_exception",
        "link_tp_xdp_redirect_err",
    ]
    ids = {_link_id(os.path.join(pin_dir, name)) for name in links}
    assert ids <= set(tracing.host_links())
    topo.ok(pin_dir, "down")
    assert not os.path.exists(pin_dir)
    # Other pin dirs' links (tests running beside) may come and go: only ours count.
    assert not ids & set(tracing.host_links())


def test_raw_tracepoint_programs_of_an_older_pin_dir_are_attached(make_topo, pin_dir):
    # Pin dirs made before the typed (tp_btf) programs hold raw tracepoint programs,
    # which attach by the tracepoint's name: the next change attaches those.
    from xdpfwd.kernel.bpf import syscall as sc

    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p1", "p2")
    old = {}
    for event in tracing.EVENTS:
        os.unlink(os.path.join(pin_dir, tracing.link_pin(event)))
        os.unlink(os.path.join(pin_dir, tracing.prog_pin(event)))
        code = sc.insn(0xB7) + sc.insn(0x95)  # r0 = 0; exit
        # Named as BCC named them, after their C functions (xdpfwd_tp_*).
        fd = sc.prog_load(sc.PROG_TYPE_RAW_TRACEPOINT, code, "xdpfwd_tp_old")
        try:
            sc.obj_pin(fd, os.path.join(pin_dir, tracing.prog_pin(event)))
            old[event] = sc.prog_info(fd).id
        finally:
            os.close(fd)
    topo.ok(pin_dir, "add", "p3", "p1")
    for event, prog_id in old.items():
        fd = sc.obj_get(os.path.join(pin_dir, tracing.link_pin(event)))
        try:
            info = sc.link_info(fd)
        finally:
            os.close(fd)
        assert (info.prog_id, info.tracepoint) == (prog_id, event)


def _link_id(path: str) -> int:
    from xdpfwd.kernel.bpf import syscall as sc

    fd = sc.obj_get(path)
    try:
        return sc.link_info(fd).id
    finally:
        os.close(fd)


@pytest.fixture
def tmux_session():
    name = f"xt{RUN_ID}tmux"
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_live_table_in_a_terminal_ends_cleanly_on_ctrl_c(topo, pin_dir, tmux_session):
    h1, h2 = topo.hosts
    topo.static_arp()
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    xdpfwd = shlex.join(
        xdpfwd_cmd(topo.fwd, "--pin-dir", pin_dir, "stats", "--watch", "--interval", "0.3")
    )
    command = f"{xdpfwd}; echo EXIT=$?; sleep 60"
    sh("tmux", "new-session", "-d", "-s", tmux_session, "-x", "100", "-y", "40", command)

    def screen() -> str:
        return sh("tmux", "capture-pane", "-p", "-t", tmux_session).stdout

    with Sender(h1, h2.ip):
        deadline = time.monotonic() + 20
        while "p1 -> p2" not in screen() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        shown = screen()
    assert "PORT" in shown and "p1 (" in shown and "p2 -> p1" in shown
    assert "pps" in shown and "bit/s" in shown
    sh("tmux", "send-keys", "-t", tmux_session, "C-c")
    deadline = time.monotonic() + 10
    while "EXIT=" not in screen() and time.monotonic() < deadline:
        time.sleep(0.2)
    final = screen()
    assert "EXIT=0" in final
    assert "Traceback" not in final and "error" not in final


def test_clear_zeroes_the_counters(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    assert topo.ping(1, topo.host(2).ip, count=2) == 2
    assert by_port(stats_json(topo, pin_dir))["p1"]["rx_packets"] > 0
    data = stats_json(topo, pin_dir, "--clear")
    assert all(p["rx_packets"] == 0 and p["tx_packets"] == 0 for p in data["ports"])
    assert all(p["tx_packets"] == 0 for p in data["pairs"])


def test_prometheus_file_is_written_atomically(topo, pin_dir, tmp_path):
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    assert topo.ping(1, topo.host(2).ip, count=2) == 2
    out = tmp_path / "metrics" / "xdpfwd.prom"
    out.parent.mkdir()
    out.write_text("stale\n")
    topo.ok(pin_dir, "stats", "--format", "prometheus", "--output", str(out))
    text = out.read_text()
    assert "# TYPE xdpfwd_port_rx_packets_total counter" in text
    assert f"xdpfwd_pair_tx_packets_total{{{pair_labels(topo, 'p1', 'p2')}}}" in text
    assert os.listdir(out.parent) == ["xdpfwd.prom"]
    missing = tmp_path / "no-such-dir" / "x.prom"
    result = topo.xdpfwd(pin_dir, "stats", "--format", "prometheus", "--output", str(missing))
    # Refused while parsing, naming the user's path (not a temporary file's).
    assert_fails(result, 2, str(missing), "does not exist")


def test_watch_survives_ports_going_and_entries_coming(make_topo, pin_dir):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p1", "p2")
    topo.ok(pin_dir, "add", "p3", "p1")
    proc, lines = watch(topo, pin_dir, "--count", "6", "--interval", "0.4")
    gone = by_port(lines[0])["p3"]["port"]["ifindex"]
    sh("ip", "-n", topo.fwd, "link", "del", "p3")
    while not any(
        p["port"] == {"ifname": None, "ifindex": gone, "netns": None} for p in lines[-1]["ports"]
    ):
        lines.append(json.loads(proc.stdout.readline()))  # until a row shows it gone
    # The next write forgets the gone port (and the watch copes with that too).
    topo.ok(pin_dir, "add", "p4", "p2")
    lines = finish(proc, lines)
    ports = by_port(lines[-1])
    assert "p4" in ports and gone not in {p["port"]["ifindex"] for p in lines[-1]["ports"]}
    for line in lines:
        for port in line["ports"]:
            assert port["rx_pps"] is None or port["rx_pps"] >= 0


def pair_labels(topo, ingress: str, egress: str, group: str = "") -> str:
    def ifindex(name: str) -> int:
        return json.loads(sh("ip", "-n", topo.fwd, "-j", "link", "show", name).stdout)[0]["ifindex"]

    return (
        f'ingress="{ingress}",ingress_ifindex="{ifindex(ingress)}",'
        f'egress="{egress}",egress_ifindex="{ifindex(egress)}",group="{group}"'
    )


def test_prometheus_series_stay_apart_when_devices_are_gone(make_topo, pin_dir, tmp_path):
    topo = make_topo(4)
    topo.ok(pin_dir, "broadcast", "p1", "p2", "p3", "p4", "--exclude-ingress")
    topo.static_arp()
    send_udp(topo.host(1), topo.host(2).ip, 5)
    for port in ("p3", "p4"):  # their pairs stay, named "", until prune
        sh("ip", "-n", topo.fwd, "link", "del", port)
    text = topo.ok(pin_dir, "stats", "--format", "prometheus").stdout
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series)), sorted(series)
    assert sum('xdpfwd_pair_tx_packets_total{ingress="p1"' in s for s in series) == 3, series
    gone = [s for s in series if "pair_tx_packets" in s and 'egress="",egress_ifindex=' in s]
    assert len(gone) >= 2, series  # p1 -> p3 and p1 -> p4 at least: once the same labels
