"""Rates, loss attribution, units, JSON, Prometheus and the stats CLI, without a kernel."""

import io
import json
from dataclasses import replace

import pytest
from rich.console import Console
from rich.table import Table

from xdpfwd.kernel.bpf.maps import DepartedPorts, PortStats, RetiredPort, TxEvents
from xdpfwd.model import Iface, McastGroup, McastReceiver
from xdpfwd.model.counters import (
    LOSS_REASONS,
    PairCounters,
    PortCounters,
    Snapshot,
    WatchFrame,
    add_losses,
    increase,
    rates,
    retirements,
    select,
)
from xdpfwd.ops.stats import next_tick
from xdpfwd.render import documents, tables
from xdpfwd.state.counters import _charge_copy_drops

from .test_cli import invoke, one_error_line

ETH1, ETH2, GONE = Iface(2, "eth1"), Iface(3, "eth2"), Iface(17, None)


def snap(
    taken,
    rx=0,
    nbytes=0,
    miss=0,
    tx=0,
    drops=0,
    xmit=0,
    redirect_err=0,
    too_big=0,
    invalid=0,
    extra=(),
):
    events = TxEvents(xmit_drops=xmit, redirect_errors=redirect_err)
    ports = {
        2: PortCounters(
            ETH1,
            PortStats(
                redirect_packets=rx,
                redirect_bytes=nbytes,
                miss_packets=miss,
                pass_packets=miss,
                too_big_packets=too_big,
            ),
            events=events,
        ),
        3: PortCounters(ETH2, PortStats(), tx, tx * 100, events=TxEvents()),
    }
    for port in extra:
        ports[port.ifindex] = PortCounters(port, PortStats())
    pair = PairCounters(
        ETH1,
        ETH2,
        None,
        "egress",
        tx,
        tx * 100,
        drops,
        events,
        egress_invalid_packets=invalid,
    )
    return Snapshot(taken, 1e9 + taken, ports, {pair.key: pair}, {}, tracing=True)


@pytest.mark.parametrize(
    "before, after, grew",
    [(5, 9, 4), (9, 9, 0), (9, 3, 3)],
    ids=["grew", "same", "reset-counts-from-zero"],
)
def test_increase(before, after, grew):
    assert increase(before, after) == grew


def test_rates_come_from_time_deltas():
    r = rates(
        snap(10.0, rx=1000, nbytes=64_000, tx=1000), snap(12.0, rx=3000, nbytes=192_000, tx=3000)
    )
    assert r.seconds == 2.0
    assert r.port_rx[2].pps == 1000.0
    assert r.port_rx[2].bps == (192_000 - 64_000) * 8 / 2
    assert r.pair_tx[(2, 3)].pps == 1000.0
    assert r.port_tx[3].bps == 2000 * 100 * 8 / 2


def test_a_reset_counter_never_gives_a_negative_rate():
    r = rates(snap(0.0, rx=10_000), snap(1.0, rx=50))
    assert r.port_rx[2].pps == 50.0


def test_new_rows_have_no_rate_and_gone_rows_vanish():
    before, after = snap(0.0, extra=[Iface(9, "old")]), snap(1.0, extra=[Iface(8, "new")])
    r = rates(before, after)
    assert 8 not in r.port_rx and 9 not in r.port_rx and 2 in r.port_rx


def test_every_lost_frame_gets_one_reason():
    # 7 dropped by an egress program, 2 given an invalid verdict (XDP_TX): the
    # tracepoint's 12 drops include those 9.
    r = rates(snap(0.0), snap(1.0, miss=4, drops=7, invalid=2, xmit=12, redirect_err=5, too_big=2))
    assert r.losses == {
        "miss": 4,
        "too_big": 2,
        "egress_drop": 7,
        "egress_invalid": 2,
        "redirect_error": 5,
        "xmit_drop": 3,
    }
    assert add_losses(r.losses, r.losses)["xmit_drop"] == 6


def test_invalid_verdicts_are_their_own_reason_in_every_output():
    s = snap(0.0, invalid=3)
    assert s.losses()["egress_invalid"] == 3
    assert "invalid verdict 3" in tables._losses_line(s.losses(), "total")
    assert 'xdpfwd_not_forwarded_packets_total{reason="egress_invalid"} 3' in documents.prometheus(
        s
    )
    assert documents.stats_dict(s)["pairs"][0]["egress_invalid_packets"] == 3


def test_select_keeps_a_ports_rows_and_pairs():
    s = select(snap(0.0), {3})
    assert set(s.ports) == {3} and set(s.pairs) == {(2, 3)}
    assert select(snap(0.0), {99}).pairs == {}


@pytest.mark.parametrize(
    "fn, value, text",
    [
        (tables.pps, 1_234_567, "1.23 Mpps"),
        (tables.pps, 12_345, "12.3 Kpps"),
        (tables.pps, 512, "512 pps"),
        (tables.pps, 0.0, "0 pps"),
        (tables.bps, 614e6, "614 Mbit/s"),
        (tables.bps, 1.5e9, "1.50 Gbit/s"),
        (tables.count, 9_999, "9999"),
        (tables.count, 123_456, "123 K"),
        (tables.nbytes, 1_234, "1.23 KB"),
    ],
)
def test_human_units(fn, value, text):
    assert fn(value) == text


def test_json_keys_are_the_same_with_and_without_rates():
    once = documents.stats_dict(snap(0.0, rx=5))
    before, after = snap(0.0), snap(1.0, rx=5)
    live = documents.stats_dict(after, rates(before, after), {"miss": 0})
    assert set(once) == set(live)
    assert {frozenset(p) for p in once["ports"]} == {frozenset(p) for p in live["ports"]}
    assert {frozenset(p) for p in once["pairs"]} == {frozenset(p) for p in live["pairs"]}
    assert once["ports"][0]["rx_pps"] is None and live["ports"][0]["rx_pps"] == 5.0
    assert once["watch_not_forwarded"] is None and live["watch_not_forwarded"] == {"miss": 0}
    json.dumps(live)


def test_tables_show_gone_devices():
    s = snap(0.0, extra=[GONE])
    with_gone = Snapshot(
        s.taken,
        s.wall,
        s.ports,
        {(17, 3): PairCounters(GONE, ETH2, "g", "egress", 4, 400)},
        {},
        False,
    )
    result, _ = invoke(["stats"], ops=_StatsOps(with_gone))
    assert "gone (17)" in result.stdout and "ifindex 17 -> eth2" in result.stdout
    assert "group g" in result.stdout


def test_prometheus_exposition():
    text = documents.prometheus(snap(0.0, rx=5, nbytes=320, tx=5))
    lines = text.splitlines()
    assert "# TYPE xdpfwd_port_rx_packets_total counter" in lines
    assert 'xdpfwd_port_rx_packets_total{port="eth1",device="eth1",ifindex="2"} 5' in lines
    pair = 'ingress="eth1",ingress_ifindex="2",egress="eth2",egress_ifindex="3",group=""'
    assert f"xdpfwd_pair_tx_packets_total{{{pair}}} 5" in lines
    assert 'xdpfwd_not_forwarded_packets_total{reason="miss"} 0' in lines
    assert 'xdpfwd_port_miss_bytes_total{port="eth1",device="eth1",ifindex="2"} 0' in lines
    assert "# TYPE xdpfwd_scrape_timestamp_seconds gauge" in lines
    assert f"xdpfwd_scrape_timestamp_seconds {1e9:.3f}" in lines
    for line in lines:
        if line.startswith("# HELP ") and "timestamp" not in line:
            metric = line.split()[2]
            assert f"# TYPE {metric} counter" in lines
    assert documents._label('a"b\\c') == 'a\\"b\\\\c'


class _StatsOps:
    """Fake operations for the stats command."""

    def __init__(self, snapshot=None, frames=()):
        self.snapshot, self.frames, self.calls = snapshot, list(frames), []

    def check_pin_dir(self, pins, removing=False):
        pass

    def resolve(self, name, allow_gone=False):
        return {"eth1": ETH1, "eth2": ETH2}.get(name) or Iface(int(name), None)

    def stats_read(self, pins):
        self.calls.append("read")
        return self.snapshot

    def stats_clear(self, pins):
        self.calls.append("clear")
        return self.snapshot is not None

    def stats_watch(self, pins, interval, count):
        self.calls.append(("watch", interval, count))
        yield from self.frames
        raise KeyboardInterrupt  # as Ctrl-C does


def test_watch_ends_cleanly_on_ctrl_c():
    before, after = snap(0.0), snap(1.0, rx=10)
    frame = WatchFrame(
        after,
        rates(before, after),
        {"miss": 0, "too_big": 0, "egress_drop": 0, "redirect_error": 0, "xmit_drop": 0},
    )
    ops = _StatsOps(frames=[frame, frame])
    result, _ = invoke(["stats", "--watch", "--json"], ops=ops)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["ports"][0]["rx_pps"] == 10.0
    plain, _ = invoke(["stats", "--watch"], ops=_StatsOps(frames=[frame]))
    assert plain.exit_code == 0 and "10 pps" in plain.stdout and "\x1b[" not in plain.stdout


def test_a_port_watched_by_name_is_followed_when_its_device_is_made_again():
    before = snap(0.0, rx=3)
    again = {k: p for k, p in before.ports.items() if k != 3} | {
        7: PortCounters(Iface(7, "eth2"), PortStats(redirect_packets=5))
    }
    after = replace(before, taken=1.0, ports=again, pairs={})
    losses = {"miss": 0, "too_big": 0, "egress_drop": 0, "redirect_error": 0, "xmit_drop": 0}
    frames = [WatchFrame(s, rates(before, s), losses) for s in (before, after)]
    for given, ifindexes in (("eth2", [[3], [7]]), ("3", [[3], []])):
        result, _ = invoke(
            ["stats", "-w", "--json", "--iface", given], ops=_StatsOps(frames=frames)
        )
        shown = [json.loads(line)["ports"] for line in result.stdout.splitlines()]
        assert [[p["port"]["ifindex"] for p in ports] for ports in shown] == ifindexes, given


def test_iface_filter_and_clear():
    ops = _StatsOps(snap(0.0, rx=3))
    result, _ = invoke(["stats", "--clear", "--json"], ops=ops)
    assert ops.calls == ["clear", "read"] and "counters cleared" in result.stderr
    result, _ = invoke(["stats", "--json", "--iface", "eth2"], ops=ops)
    data = json.loads(result.stdout)
    assert [p["port"]["ifname"] for p in data["ports"]] == ["eth2"]


def test_with_nothing_set_up_no_port_has_counters_and_nothing_is_cleared():
    for fmt in ("json", "prometheus", "table"):
        result, _ = invoke(["stats", "--format", fmt, "--iface", "eth2"], ops=_StatsOps())
        assert result.exit_code == 1 and "eth2 has no counters" in one_error_line(result)
    result, _ = invoke(["stats", "--clear"], ops=_StatsOps())
    assert result.exit_code == 0 and "cleared" not in result.stderr
    assert "no xdpfwd state in" in result.stderr


def test_a_watch_reads_on_its_grid_and_after_a_late_read_goes_on_from_it():
    assert next_tick(10.0, 10.0, 0.5) == 10.5  # the first
    assert next_tick(10.5, 10.51, 0.5) == 11.0  # on time: no drift
    assert next_tick(11.0, 12.3, 0.5) == 12.8  # a read that waited 1.3 s


@pytest.mark.parametrize(
    "args, message",
    [
        (["stats", "--count", "3"], "--watch"),
        (["stats", "--interval", "2"], "--watch"),
        (["stats", "--output", "/tmp/x"], "--format json or prometheus"),
        (["stats", "-w", "--format", "prometheus"], "one-shot"),
        (["stats", "-w", "--interval", "nan"], "'nan' is not a number of seconds"),
    ],
    ids=[
        "count-without-watch",
        "interval-without-watch",
        "output-of-a-table",
        "prometheus-watch",
        "interval-nan",
    ],
)
def test_stats_usage_errors(args, message):
    result, ops = invoke(args, ops=_StatsOps())
    assert result.exit_code == 2 and message in one_error_line(result)
    assert ops.calls == []


# --- multicast groups ----------------------------------------------------------------


def mcast_snap(taken, frames, copies=(None, None)):
    receivers = [
        McastReceiver(port, n, None if n is None else n * 100)
        for port, n in zip((ETH2, Iface(4, "eth3")), copies, strict=True)
    ]
    out = None if None in copies else sum(copies)
    group = McastGroup(
        "239.1.1.1", "ipv4", False, [ETH1], receivers, frames, frames * 100, 2 * frames, out
    )
    return replace(snap(taken), multicast={"239.1.1.1": group})


def test_multicast_rates_and_losses():
    before, after = mcast_snap(0.0, 100, (100, 100)), mcast_snap(2.0, 300, (300, 290))
    r = rates(before, after)
    assert r.mcast_in["239.1.1.1"].pps == 100.0
    assert r.mcast_out["239.1.1.1"].pps == (590 - 200) / 2
    group = after.multicast["239.1.1.1"]
    assert (group.copies_out, group.copies_lost) == (590, 10)
    data = documents.stats_dict(after, r)
    (row,) = data["multicast"]
    assert row["in_pps"] == 100.0 and row["copies_lost"] == 10
    assert row["receivers"][1] == {
        "port": {"ifname": "eth3", "ifindex": 4},
        "tx_packets": 290,
        "tx_bytes": 29000,
    }


def test_uncounted_copies_have_no_loss_and_no_rate():
    before, after = mcast_snap(0.0, 10), mcast_snap(1.0, 20)
    r = rates(before, after)
    assert "239.1.1.1" not in r.mcast_out and r.mcast_in["239.1.1.1"].pps == 10.0
    assert after.multicast["239.1.1.1"].copies_lost is None


def test_select_keeps_the_groups_of_a_port():
    snapshot = mcast_snap(0.0, 1, (1, 1))
    assert select(snapshot, {4}).multicast == snapshot.multicast
    assert select(snapshot, {99}).multicast == {}


def test_a_multicast_source_forwards_its_redirects_less_its_replicas():
    s = snap(0.0, rx=100, xmit=0)
    s = replace(s, ports={**s.ports, 2: replace(s.ports[2], mcast_packets=30)})
    assert s.forwarded(2) == 70


def test_the_live_multicast_table_fits_80_columns_with_totals_beside_rates():
    before, after = mcast_snap(0.0, 100, (100, 100)), mcast_snap(2.0, 300, (300, 290))
    frame = WatchFrame(after, rates(before, after), after.losses())
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(tables.watch_view(frame, "/sys/fs/bpf/xdpfwd", 1.0, "name", expand=True))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    header = next(line for line in lines if line.startswith("GROUP"))
    assert "IN/S" in header and "COPIES/S" in header
    row = next(line for line in lines if line.startswith("239.1.1.1"))
    assert row.split()[5] == "300" and row.split()[-1] == "590"


def test_prometheus_multicast_metrics():
    text = documents.prometheus(mcast_snap(0.0, 50, (50, 48)))
    assert 'xdpfwd_multicast_in_packets_total{group="239.1.1.1"} 50' in text
    assert 'xdpfwd_multicast_copies_lost_total{group="239.1.1.1"} 2' in text
    labels = 'group="239.1.1.1",egress="eth3",egress_ifindex="4"'
    assert f"xdpfwd_multicast_copies_total{{{labels}}} 48" in text
    assert "# TYPE xdpfwd_multicast_copy_bytes_total counter" in text


def test_frames_in_are_forwarded_passed_dropped_or_lost_by_reason():
    s = snap(0.0, rx=100, miss=3, drops=4, xmit=10, redirect_err=5, too_big=2)
    port = s.ports[2].counters
    lost = s.port_losses(2)
    assert lost == {
        "miss": 3,
        "too_big": 2,
        "egress_drop": 4,
        "egress_invalid": 0,
        "redirect_error": 5,
        "xmit_drop": 6,
    }
    # 100 redirected: 5 failed, 4 dropped by the egress program, 6 more by the driver.
    assert s.forwarded(2) == 85
    after_program = lost["egress_drop"] + lost["redirect_error"] + lost["xmit_drop"]
    total = s.forwarded(2) + port.pass_packets + port.drop_packets + lost["too_big"]
    assert total + after_program == port.rx_packets


def test_without_loss_accounting_the_traced_reasons_are_unknown():
    s = replace(snap(0.0, rx=10, xmit=3), tracing=False)
    assert s.port_losses(2)["xmit_drop"] is None and s.forwarded(2) is None
    assert s.losses()["redirect_error"] is None and s.losses()["too_big"] == 0
    assert "loss accounting is off" in str(tables._losses_line(s.losses(), "total"))
    assert "xdpfwd_pair_redirect_error_packets_total" not in documents.prometheus(s)


def test_a_broadcast_member_forwarded_what_it_flooded_its_copies_lost_or_not():
    # (JSON said null where the table said the frames flooded, as the README does.)
    s = snap(0.0, rx=10, redirect_err=2)
    member = PairCounters(ETH1, ETH2, "g", "transmit", 10, 1000)
    s = replace(s, pairs={member.key: member}, tracing=False)
    assert s.forwarded(2) == s.ports[2].counters.redirect_packets > 0


def test_prometheus_has_every_reason_per_port_and_the_pairs_events():
    text = documents.prometheus(snap(0.0, rx=5, redirect_err=2, too_big=1))
    lines = text.splitlines()
    assert 'xdpfwd_port_too_big_packets_total{port="eth1",device="eth1",ifindex="2"} 1' in lines
    pair = 'ingress="eth1",ingress_ifindex="2",egress="eth2",egress_ifindex="3",group=""'
    assert f"xdpfwd_pair_redirect_error_packets_total{{{pair}}} 2" in lines
    labels = 'port="eth1",device="eth1",ifindex="2",reason="too_big"'
    assert f"xdpfwd_port_not_forwarded_packets_total{{{labels}}} 1" in lines
    assert 'xdpfwd_not_forwarded_packets_total{reason="too_big"} 1' in lines


@pytest.mark.parametrize(
    "lost, text",
    [
        ({"miss": 9, "too_big": 1, "egress_drop": 2, "redirect_error": 3, "xmit_drop": 0}, "6"),
        (
            {"miss": 0, "too_big": 1, "egress_drop": 0, "redirect_error": None, "xmit_drop": None},
            "1+?",
        ),
    ],
    ids=["known", "loss accounting off"],
)
def test_lost_column(lost, text):
    assert tables._lost(lost) == text


def test_the_live_view_fits_80_columns_and_shows_totals_beside_rates():
    before, after = snap(0.0, rx=0, miss=0), snap(1.0, rx=5, miss=2, tx=4, redirect_err=3)
    frame = WatchFrame(after, rates(before, after), after.losses())
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(tables.watch_view(frame, "/sys/fs/bpf/" + "x" * 90, 1.0, "name", expand=True))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith("xdpfwd stats") and lines[0].endswith("…")
    header = next(line for line in lines if line.startswith("PAIR"))
    assert "TX/S" in header and "REDIR ERR" in header
    assert any(line.startswith("not forwarded (since start): miss 2") for line in lines)


def test_one_shot_stats_say_since_when_they_count():
    result, _ = invoke(["stats"], ops=_StatsOps(snap(1.0, rx=5)))
    last = result.stdout.splitlines()[-1]
    assert last == tables.COUNTERS_SINCE and len(last) <= 80


def grid_lines(grid, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(grid)
    return console.export_text().splitlines()


def test_grid_columns_are_aligned_as_a_borderless_table():
    grid = tables._Grid(("PAIR", "VIA", "TX"), left=2)
    grid.add_row("eth1 -> eth2", "entry", "5")
    grid.add_row("é -> 网", "group g", "1.23 K")
    assert grid_lines(grid, 80) == [
        "PAIR          VIA          TX",
        "eth1 -> eth2  entry         5",
        "é -> 网       group g  1.23 K",
    ]


def test_an_expanded_grid_takes_the_whole_width_and_a_narrow_one_is_cut():
    grid = tables._Grid(("PORT", "RX/S"), expand=True)
    grid.add_row("eth1 (2)", "12.3 Kpps")
    lines = grid_lines(grid, 40)
    assert [len(line) for line in lines] == [40, 40]
    assert lines[1].startswith("eth1 (2)") and lines[1].endswith("12.3 Kpps")
    assert grid_lines(grid, 12) == ["PORT       …", "eth1 (2)  1…"]


def test_names_are_shown_verbatim_in_tables_and_grids():
    # rich reads "[red]" as markup; an escape sequence would reach the terminal.
    name = "m[red]x\x1b[31m"
    table = Table()
    table.add_column("PORT")
    tables._row(table, name)
    grid = tables._Grid(("PORT",))
    grid.add_row(name)
    for shown in (table, grid):
        console = Console(width=80, record=True, file=io.StringIO())
        console.print(shown)
        assert "m[red]x\\x1b[31m" in console.export_text()


def test_copies_a_receivers_driver_dropped_come_off_its_copies_and_the_groups():
    source, receiver = Iface(2, "eth1"), Iface(3, "eth2")
    group = McastGroup(
        "239.1.1.1",
        "ipv4",
        False,
        [source],
        [McastReceiver(receiver, 10, 1000)],
        in_packets=14,
        copies_expected=14,
        copies_out=14,  # 4 of them a former receiver's
    )
    events = {(2, 3): TxEvents(0, 3, 0, 0), (2, 9): TxEvents(0, 5, 0, 0)}
    (charged,), left = _charge_copy_drops([group], events, {(2, 9)})
    assert charged.receivers == [McastReceiver(receiver, 7, 700)]
    assert (charged.copies_out, charged.copies_lost) == (11, 3)
    # Off the source's own frames; an entry's pair keeps its drops.
    assert left[(2, 3)].xmit_drops == 0 and left[(2, 9)].xmit_drops == 5


def test_what_a_change_ends_is_retired_where_its_sums_were():
    before = snap(1, rx=10, miss=3, tx=7, drops=2, xmit=2)
    # The pair ended and eth1 was released; eth2 stays, as another pair's egress.
    after = replace(before, ports={3: before.ports[3]}, pairs={})
    ended = retirements(before, after)
    assert ended.ports == {
        3: RetiredPort(tx_packets=7, tx_bytes=700),
        2: RetiredPort(egress_drop=2, traced_drops=2),
    }
    assert ended.released == {2}
    assert ended.released_losses == {**dict.fromkeys(LOSS_REASONS, 0), "miss": 3, "egress_drop": 2}
    # Nothing ended: nothing retired. A pair whose counts started again: its counts are.
    assert retirements(before, before).ports == {} and retirements(before, before).released == set()
    (pair,) = before.pairs.values()
    again = replace(before, pairs={pair.key: replace(pair, tx_packets=0, tx_bytes=0)})
    assert retirements(before, again).ports[3] == RetiredPort(tx_packets=7, tx_bytes=700)
    # Two reads under traffic may see a pair a few frames lower: it goes on, not again.
    skewed = replace(before, pairs={pair.key: replace(pair, tx_packets=6)})
    assert retirements(before, skewed).ports == {}


def test_the_totals_keep_what_released_ports_had_received():
    before = snap(1, rx=10, nbytes=640, miss=3, tx=7)
    assert (before.totals()["rx_packets"], before.totals()["tx_packets"]) == (13, 7)
    # eth1 released, eth2 still sent to: what eth1 received departs.
    released = replace(before, ports={3: before.ports[3]}, pairs={})
    ended = retirements(before, released)
    assert ended.departed.received == before.ports[2].counters
    assert retirements(before, before).departed == DepartedPorts()
    after = replace(released, departed=ended.departed)
    assert after.totals() == before.totals()  # eth2's TX keeps the pair's frames
    assert select(after, {3}).totals()["rx_packets"] == 0  # departed ports are no selection's


def test_retired_counts_are_in_the_sums_and_leave_the_transmit_drops_alone():
    now = snap(1, rx=10, tx=7, drops=2, xmit=5)
    past = RetiredPort(tx_packets=4, egress_drop=1, traced_drops=1)
    # One past drop of the egress program's was among the tracepoint's: xmit 5 - 2 - 1.
    ports = {**now.ports, 2: replace(now.ports[2], retired=past)}
    retired = replace(now, ports=ports, released={"miss": 9, "xmit_drop": 1})
    assert retired.port_losses(2)["egress_drop"] == 3
    assert retired.port_losses(2)["xmit_drop"] == 2
    assert retired.losses()["miss"] == 9 and retired.losses()["xmit_drop"] == 3
    assert select(retired, {2}).losses()["miss"] == 0  # released ports are no selection's


def test_what_only_the_ingress_program_counts_is_unknown_where_it_does_not_run():
    s = snap(0.0, miss=4)
    s = replace(s, ports={**s.ports, 3: replace(s.ports[3], counters=None)})
    assert s.port_losses(2)["miss"] == 4
    lost = s.port_losses(3)  # an egress only: frames entering it are not xdpfwd's to count
    assert lost["miss"] is None and lost["too_big"] is None and lost["xmit_drop"] == 0
    assert s.losses()["miss"] == 4
    (eth2,) = [p for p in documents.stats_dict(s)["ports"] if p["port"]["ifindex"] == 3]
    assert eth2["not_forwarded"]["miss"] is None and eth2["rx_packets"] is None
