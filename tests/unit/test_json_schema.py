"""Every command's --json output against the documented schema (docs/json-schema.json),
and every key of the schema documented in the man page's JSON OUTPUT section."""

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from xdpfwd.kernel.bpf.maps import EgressStats, PortStats
from xdpfwd.model import BalanceInfo, BalancePort, EgressProg, Iface, PortRow
from xdpfwd.model.counters import LOSS_REASONS, PairCounters, Snapshot, WatchFrame, rates
from xdpfwd.model.reports import Lab, LabPort
from xdpfwd.render import documents

from .fake_ops import FakeOps
from .test_cli import invoke
from .test_stats import mcast_snap, snap

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "json-schema.json").read_text())


def check(document: dict, command: str) -> None:
    """Valid against the envelope and the command's schema, with no key beyond them."""
    defs = SCHEMA["$defs"]
    wanted = {
        "$defs": defs,
        "allOf": [{"$ref": "#/$defs/envelope"}, {"$ref": f"#/$defs/{command}"}],
    }
    jsonschema.validate(document, wanted)
    allowed = set(defs["envelope"]["properties"]) | set(defs[command]["properties"])
    assert set(document) <= allowed, set(document) - allowed


def balanced(snapshot: Snapshot) -> Snapshot:
    """snapshot with a balanced entry's pair (eth2 -> eth1, its buckets counted)."""
    ingress, egress = snapshot.ports[3].port, snapshot.ports[2].port
    pair = PairCounters(ingress, egress, None, "egress", 3, 300, buckets=128)
    return replace(snapshot, pairs={**snapshot.pairs, pair.key: pair})


class Stateful(FakeOps):
    """A fake with state: counters, a balanced entry, a lab, frames for a watch."""

    def list_ports(self, pins):
        listing = super().list_ports(pins)
        ports = [
            BalancePort(Iface(3, "eth2"), "eth2", 2, 171, "up", EgressStats(4, 400)),
            BalancePort(Iface(0, None), "eth9", 1, 0, "gone"),
        ]
        row = PortRow(
            Iface(4, "eth3"),
            None,
            "devmap-hash",
            "devmap-val",
            "native",
            "pass",
            "ok",
            PortStats(redirect_packets=4, redirect_bytes=400),
            egress_prog=EgressProg("built-in", 8, "xdpfwd_egress_g"),
            egress_counters=EgressStats(4, 400),
            balance=BalanceInfo("symmetric", ports, unassigned=85),
            lost=dict.fromkeys(LOSS_REASONS, 0),
            forwarded=4,
        )
        return replace(listing, rows=[*listing.rows, row])

    def stats_read(self, pins):
        return balanced(
            replace(snap(1.0, rx=5, tx=4), multicast=mcast_snap(1.0, 50, (50, 48)).multicast)
        )

    def stats_watch(self, pins, interval, count):
        before = balanced(replace(snap(0.0), multicast=mcast_snap(0.0, 10, (10, 10)).multicast))
        after = balanced(
            replace(snap(1.0, rx=5, tx=4), multicast=mcast_snap(1.0, 50, (50, 48)).multicast)
        )
        losses = dict.fromkeys(LOSS_REASONS, 0)
        yield WatchFrame(after, rates(before, after), losses)

    def lab_status(self, name):
        return Lab(name, [LabPort("xlab1", "xlab1", "host0", "198.18.0.1/24", ifindex=7)])


@pytest.mark.parametrize(
    "args, command",
    [
        (["list", "--json"], "list"),
        (["doctor", "--json"], "doctor"),
        (["lab", "status", "--json"], "lab"),
        (["bench", "--json"], "bench"),
        (["stats", "--json"], "stats"),
        (["multicast", "list", "--json"], "multicast"),
    ],
    ids=["list", "doctor", "lab status", "bench", "stats", "multicast list"],
)
@pytest.mark.parametrize("ops", [FakeOps, Stateful], ids=["empty", "with state"])
def test_every_json_output_follows_the_schema(args, command, ops):
    result, _ = invoke(args, ops=ops())
    assert result.exit_code == 0, result.stderr
    check(json.loads(result.stdout), command)


def test_watch_lines_follow_the_schema_with_rates_and_watch_losses():
    result, _ = invoke(["stats", "--watch", "--json", "--count", "1"], ops=Stateful())
    (line,) = result.stdout.splitlines()
    document = json.loads(line)
    check(document, "stats")
    assert document["interval_s"] == 1.0 and document["ports"][0]["rx_pps"] == 5.0
    assert [p["buckets"] for p in document["pairs"]] == [None, 128]
    assert document["watch_not_forwarded"]["miss"] == 0
    (group,) = document["multicast"]
    assert group["in_pps"] == 40.0 and group["receivers"][0]["port"]["netns"] is None


def test_no_state_is_empty_lists_never_null():
    for args in (["stats", "--json"], ["lab", "status", "--json"]):
        document = json.loads(invoke(args)[0].stdout)
        assert document["ports"] == []


def test_ports_are_the_same_object_everywhere_with_the_namespace():
    documents.json_context("/sys/fs/bpf/xdpfwd@blue", "blue")
    try:
        document = documents.json_document({"a": {"ifname": "eth1", "ifindex": 2}, "b": [{}]})
    finally:
        documents.json_context("/sys/fs/bpf/xdpfwd", None)
    assert document["a"] == {"ifname": "eth1", "ifindex": 2, "netns": "blue"}
    assert (document["netns"], document["schema_version"]) == ("blue", 1)


def schema_keys(node) -> set[str]:
    keys = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties":
                keys |= set(value)
            keys |= schema_keys(value)
    elif isinstance(node, list):
        for item in node:
            keys |= schema_keys(item)
    return keys


def test_every_key_of_the_schema_is_in_the_man_pages_json_output_section():
    man = (ROOT / "man" / "xdpfwd.8").read_text().replace("\\-", "-").replace("\\fB", "")
    section = man[man.index('.SH "JSON OUTPUT"') :]
    section = section[: section.index("\n.SH ", 1)]
    missing = [key for key in sorted(schema_keys(SCHEMA)) if key not in section]
    assert not missing, f"not in JSON OUTPUT: {missing}"
