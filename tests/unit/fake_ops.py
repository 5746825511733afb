"""A stand-in for xdpfwd.ops that records calls, for CLI tests without root or kernel."""

from __future__ import annotations

from xdpfwd.errors import InputError
from xdpfwd.kernel.bpf.maps import EgressStats, PortStats, Rewrite
from xdpfwd.model import (
    DEFAULT_EGRESS,
    AddResult,
    Attachment,
    BalanceInfo,
    BalancePort,
    BroadcastDelResult,
    BroadcastResult,
    DelResult,
    DownResult,
    EgressProg,
    GroupInfo,
    Iface,
    Listing,
    McastDelResult,
    McastGroup,
    McastListing,
    McastReceiver,
    McastResult,
    PairRow,
    PortRow,
    PruneResult,
)
from xdpfwd.model.counters import LOSS_REASONS
from xdpfwd.model.reports import (
    ApplyResult,
    BenchReport,
    BenchRow,
    Check,
    DemoReport,
    Lab,
    LabPort,
    PingResult,
    ProgramCost,
    RowProfile,
    SaveResult,
)
from xdpfwd.ops.following import FollowLine
from xdpfwd.state import config

LINKS = {"eth1": 2, "eth2": 3, "eth3": 4}


class FakeOps:
    def __init__(self, fail_with: BaseException | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail_with = fail_with
        self.doctor_status = "pass"
        self.demo_replies = 3

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if self.fail_with is not None:
            raise self.fail_with

    def check_pin_dir(self, pins, removing=False):
        pass  # its namespace is this one

    def resolve(self, name, allow_gone=False):
        if name in LINKS:
            return Iface(LINKS[name], name)
        if allow_gone and name.isdigit():
            return Iface(int(name), None)
        raise InputError(f"no such interface: {name}")

    def add(self, pins, ingress, egress, **kwargs):
        self._record("add", pins, ingress, egress, **kwargs)
        return AddResult(
            entries=[(ingress, egress)],
            attachments=[Attachment(ingress, "native", True)],
            table="devmap-hash",
            value_format="devmap-val",
            prog_id=7,
            compiled=True,
            egress=EgressProg("built-in", 8, "xdpfwd_egress"),
        )

    def add_balanced(self, pins, ingress, egress, **kwargs):
        self._record("add_balanced", pins, ingress, egress, **kwargs)
        ports = [
            BalancePort(port, port.ifname, 1, 256 // len(egress), "up", EgressStats())
            for port in egress
        ]
        return AddResult(
            entries=[(ingress, port) for port in egress],
            attachments=[Attachment(ingress, "native", True)],
            table="devmap-hash",
            value_format="devmap-val",
            prog_id=7,
            compiled=False,
            egress=EgressProg("built-in", 8, "xdpfwd_egress_g"),
            balance=BalanceInfo(kwargs.get("hash", "symmetric"), ports),
        )

    def follow(self, pins):
        self._record("follow", pins)
        if self.fail_with is not None:
            raise self.fail_with
        return (line for line in (FollowLine("following"), FollowLine("p1: 85 buckets moved")))

    def delete(self, pins, ingress):
        self._record("delete", pins, ingress)
        return DelResult(removed=ingress, egress=Iface(3, "eth2"), detached=[ingress])

    def list_ports(self, pins):
        self._record("list_ports", pins)
        rows = [
            PortRow(
                Iface(2, "eth1"),
                Iface(3, "eth2"),
                "devmap-hash",
                "devmap-val",
                "native",
                "pass",
                "ok",
                PortStats(redirect_packets=5, redirect_bytes=500),
                egress_prog=EgressProg("user", 9, "drop_arp"),
                rewrite=Rewrite("02:00:00:00:00:01", None),
                egress_counters=EgressStats(4, 400, 1, 100),
                lost={**dict.fromkeys(LOSS_REASONS, 0), "egress_drop": 1},
                forwarded=4,
            ),
            PortRow(
                Iface(17, None),
                None,
                "devmap-hash",
                "devmap-val",
                None,
                "drop",
                "device gone",
                PortStats(),
                lost=dict.fromkeys(LOSS_REASONS, 0),
            ),
        ]
        groups = [
            GroupInfo(
                "cams",
                "devmap-hash",
                True,
                [Iface(3, "eth2"), Iface(4, "eth3")],
                [PairRow(Iface(3, "eth2"), Iface(4, "eth3"), EgressStats(7, 700, 0, 0))],
            )
        ]
        return Listing(pins.path, "devmap-hash", "devmap-val", 7, rows, groups, [FEED])

    def broadcast(self, pins, members, **kwargs):
        self._record("broadcast", pins, members, **kwargs)
        return BroadcastResult(
            kwargs["group"], True, members or [], [], [], True, "devmap-hash", False
        )

    def broadcast_del(self, pins, members, group):
        self._record("broadcast_del", pins, members, group)
        return BroadcastDelResult(members, ["default"], ["default"], members)

    def multicast_add(self, pins, group, receivers, sources, **kwargs):
        self._record("multicast_add", pins, group, receivers, sources, **kwargs)
        return McastResult(group, True, False, sources or receivers, receivers, [], False)

    def multicast_del(self, pins, group, receivers, sources):
        self._record("multicast_del", pins, group, receivers, sources)
        return McastDelResult(group, not receivers and not sources, sources, receivers, [])

    def multicast_list(self, pins):
        self._record("multicast_list", pins)
        return McastListing(pins.path, True, [FEED])

    def down(self, pins):
        self._record("down", pins)
        return DownResult([Iface(2, "eth1")], removed_pins=True)

    def lab_up(self, name, nports):
        self._record("lab_up", name, nports)
        return Lab(name, [])

    def lab_down(self, name):
        self._record("lab_down", name)
        return []

    def lab_status(self, name):
        self._record("lab_status", name)
        return Lab(name, [])

    def prune(self, pins):
        self._record("prune", pins)
        return PruneResult([17], ["cams"], [Iface(3, "eth2")])

    def save(self, pins, fmt):
        self._record("save", pins, fmt)
        running = config.Config(forward=(config.EntryConf("eth1", "eth2", DEFAULT_EGRESS),))
        return SaveResult(config.dump(running, fmt), ["ifindex 17 left out: its device is gone"])

    def apply(self, pins, path, dry_run, force):
        """Reads the file for real (parsing needs no root), so bad files fail as they would."""
        self._record("apply", pins, path, dry_run=dry_run, force=force)
        wanted = config.load(path)
        steps = [f"forward {e.ingress} -> {e.egress}" for e in wanted.forward]
        return ApplyResult(steps, dry_run=dry_run)

    def check_host(self, pins, compile_test, fix=False):
        self._record("check_host", pins, compile_test=compile_test, fix=fix)
        return [
            Check("privileges", "pass", "root"),
            Check(
                "port eth1", self.doctor_status, "up", "xdpfwd apply FILE", Iface(2, "eth1"), "port"
            ),
        ]

    def stats_read(self, pins):
        self._record("stats_read", pins)
        return None

    def stats_clear(self, pins):
        self._record("stats_clear", pins)

    def stats_watch(self, pins, interval, count):
        self._record("stats_watch", pins, interval, count)
        yield from ()

    def demo(self, pins, **options):
        self._record("demo", pins, **options)
        one = LabPort("xd1p1", "xd1p1", "host0", "198.18.0.1/24")
        two = LabPort("xd1p2", "xd1p2", "host0", "198.18.0.2/24")
        added = self.add(pins, Iface(2, one.port), Iface(3, two.port))
        pings = [PingResult(one, two, 3, self.demo_replies), PingResult(two, one, 3, 3)]
        return DemoReport(Lab("xd1p", [one, two]), added, pings, self.list_ports(pins))

    def bench(self, pins, **options):
        self._record("bench", pins, **options)
        profile = None
        if options["profile"]:
            profile = RowProfile(160.0, [ProgramCost("xdpfwd_bench_fw", 1.0, 21.25)])
        rows = [
            BenchRow(
                "baseline",
                "baseline: bpf_redirect_map() only",
                "Mpps",
                [3.0, 3.2],
                None,
                None,
                profile,
            )
        ]
        settings = {
            "duration_s": options["duration"],
            "frame_size": options["size"],
            "repeat": options["repeat"],
            "cpus": options["cpus"],
            "flows": options["flows"],
            "profile": options["profile"],
        }
        return BenchReport(
            settings,
            {"kernel": "6.1", "cpu": "test", "cpus_online": 2, "xdp_tracepoint_links": 1},
            rows,
        )


FEED = McastGroup(
    "239.1.1.1",
    "ipv4",
    False,
    [Iface(2, "eth1")],
    [McastReceiver(Iface(3, "eth2"), 50, 5300), McastReceiver(Iface(4, "eth3"), 48, 5088)],
    50,
    5300,
    100,
    98,
)
