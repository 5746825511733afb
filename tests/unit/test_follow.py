"""The configuration recorded in the pins (what each command asks for), and the follow
loop driven by a fake event source: resync at start, after bursts and overruns."""

from dataclasses import replace

import pytest

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import netdev
from xdpfwd.model import EgressSpec, Iface, PruneResult
from xdpfwd.ops import following as follow
from xdpfwd.state import buckets, intent
from xdpfwd.state.config import (
    BalancedConf,
    Config,
    EntryConf,
    GroupConf,
    McastConf,
    PortConf,
    to_dict,
)
from xdpfwd.state.pins import PinDir

BAL = BalancedConf("eth1", ("eth2", "eth3"), (2, 1), "l4", EgressSpec(program="none"))
LAYOUT = buckets.fresh(BAL.weight_map())


def recorded() -> intent.Intent:
    wanted = Config(
        ports={"eth1": PortConf("native", "drop"), "eth5": PortConf()},
        forward=(EntryConf("eth4", "eth1", EgressSpec()),),
        groups=(GroupConf("g", True, ("eth5", "eth6")),),
        balanced=(BAL,),
    )
    return intent.Intent(wanted, {"eth1": LAYOUT}, {"eth1": 2, "eth4": 5})


def test_the_record_reads_back_the_same():
    again = intent.from_text(intent.to_text(recorded()))
    assert to_dict(again.config) == to_dict(recorded().config)
    assert (again.layouts, again.bound) == (recorded().layouts, recorded().bound)
    assert again.layout(BAL) == LAYOUT


def test_a_layout_that_does_not_fit_the_ports_is_made_afresh():
    record = intent.Intent(Config(balanced=(BAL,)), {"eth1": buckets.fresh({"eth9": 1, "a": 1})})
    assert record.layout(BAL) == LAYOUT


@pytest.mark.parametrize("text", ["{}", '{"version": 2}', "[", '{"version": 1}'])
def test_an_unreadable_record_is_refused(text):
    with pytest.raises((ValueError, KeyError)):
        intent.from_text(text)


def test_add_makes_a_port_forward_and_nothing_else():
    record = intent.with_entries(
        recorded(), [EntryConf("eth5", "eth2", EgressSpec())], "auto", {"eth5": "drop"}
    )
    wanted = record.config
    assert [e.ingress for e in wanted.forward] == ["eth4", "eth5"]
    assert wanted.groups == (GroupConf("g", True, ("eth6",)),)
    assert wanted.ports["eth5"] == PortConf("auto", "drop")


def test_add_balanced_replaces_a_single_entry_and_keeps_the_mode_asked_before():
    entry = BalancedConf("eth4", ("eth2", "eth3"), (1, 1))
    layout = buckets.fresh(entry.weight_map())
    record = intent.with_balanced(recorded(), entry, layout, "auto", "pass")
    assert record.config.forward == ()
    assert {e.ingress for e in record.config.balanced} == {"eth1", "eth4"}
    assert record.layouts["eth4"] == layout
    single = intent.with_entries(
        record, [EntryConf("eth1", "eth2", EgressSpec())], "auto", {"eth1": "drop"}
    )
    assert "eth1" not in single.layouts and single.config.ports["eth1"].mode == "native"


def test_del_and_broadcast_del_forget_the_roles():
    gone = intent.without_entry(recorded(), "eth1")
    assert gone.config.balanced == () and "eth1" not in gone.layouts
    assert "eth1" not in gone.config.ports
    left = intent.without_members(recorded(), ["eth5", "eth6"])
    assert left.config.groups == ()


def test_broadcast_turns_a_balanced_port_into_a_member():
    record = intent.with_members(recorded(), "g", ["eth1"], False, "auto", {"eth1": "drop"})
    assert record.config.balanced == ()
    assert record.config.groups == (GroupConf("g", False, ("eth5", "eth6", "eth1")),)


def test_multicast_add_joins_the_recorded_members_and_keeps_a_sources_settings():
    first = McastConf("239.1.1.1", ("eth7",), ("eth1",))
    record = intent.with_multicast(recorded(), first, "generic", {"eth1": "pass"})
    assert record.config.ports["eth1"] == PortConf("generic", "pass")
    # eth7's device is gone: it stays recorded while eth8 joins.
    record = intent.with_multicast(record, McastConf("239.1.1.1", ("eth8",), ("eth1",)), "auto", {})
    (group,) = record.config.multicast
    assert (group.receivers, group.sources) == (("eth7", "eth8"), ("eth1",))
    again = intent.from_text(intent.to_text(record)).multicast("239.1.1.1")
    assert replace(again, line=0) == group
    # A source's other roles go with del; its settings stay while it is a source.
    kept = intent.without_entry(intent.without_members(record, ["eth5"]), "eth1")
    assert kept.config.ports["eth1"] == PortConf("generic", "pass")
    assert "eth5" not in kept.config.ports
    assert intent.bind(kept, {}).knows("eth7")


@pytest.mark.parametrize(
    "receivers, sources, left",
    [
        (None, None, None),
        ((), (), McastConf("239.1.1.1", ("eth7", "eth8"), ("eth1", "eth5"))),
        (("eth7",), (), McastConf("239.1.1.1", ("eth8",), ("eth1", "eth5"))),
        (("eth7", "eth8"), (), None),
        ((), ("eth1", "eth5"), None),
    ],
)
def test_multicast_del_takes_members_out_and_an_emptied_group_away(receivers, sources, left):
    group = McastConf("239.1.1.1", ("eth7", "eth8"), ("eth1", "eth5"))
    record = intent.with_multicast(recorded(), group, "auto", {"eth1": "drop", "eth5": "pass"})
    after = intent.without_multicast(record, "239.1.1.1", receivers, sources)
    assert after.multicast("239.1.1.1") == left
    # eth1 forwards (a balanced entry) and eth5 floods: both keep their settings.
    assert {"eth1", "eth5"} <= set(after.config.ports)
    alone = intent.without_multicast(intent.without_entry(record, "eth1"), "239.1.1.1")
    assert "eth1" not in alone.config.ports


def test_bind_keeps_the_names_it_knows_with_the_ifindexes_they_have_now():
    links = {
        9: netdev.Link(9, "eth1", "veth", True, False, 1500, 0, None),
        3: netdev.Link(3, "lo", None, True, True, 65536, 0, None),
    }
    bound = intent.bind(recorded(), links).bound
    assert bound == {"eth1": 9, "eth4": 5}
    assert intent.bind(recorded(), links).name_of(5) == "eth4"


# --- the follow loop ------------------------------------------------------------------


def link(name="eth2", ifindex=3, up=True):
    return netdev.Link(
        ifindex, name, "veth", up, False, 1500, 0, None, operstate="UP" if up else "DOWN"
    )


class FakeEvents:
    """wait() returns the scripted batches (an exception is raised), then stops the loop."""

    def __init__(self, script):
        self.script = list(script)
        self.closed = False

    def wait(self, timeout):
        if not self.script:
            raise KeyboardInterrupt
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self.closed = True


class FakeOps:
    def __init__(self, results, refusal=None):
        self.results = list(results)
        self.calls = 0
        self.refusal = refusal

    def check_pin_dir(self, pins):
        if self.refusal is not None:
            raise self.refusal

    def prune(self, pins):
        self.calls += 1
        result = self.results.pop(0) if self.results else PruneResult([], [], [])
        if isinstance(result, BaseException):
            raise result
        return result


def run(script, results):
    events, ops = FakeEvents(script), FakeOps(results)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        for line in follow.run(ops, PinDir("/sys/fs/bpf/x"), events=events, settle=0, resync=60):
            lines.append((line.level, line.text))
    assert events.closed
    return lines, ops.calls


def test_follow_runs_at_start_and_after_each_burst_one_line_per_action():
    moved = PruneResult([], [], [], steps=("eth1: 85 buckets from eth3 (down) to eth2 (85)",))
    back = PruneResult(
        [7], [], [Iface(4, "eth4")], steps=("eth1: 85 buckets from eth2 to eth3 (85)",)
    )
    down = [netdev.LinkEvent(False, link("eth3", 4, up=False))]
    # nothing queued at start; events, then nothing more queued; the same again
    lines, calls = run([[], down, [], down, []], [PruneResult([], [], []), moved, back])
    assert calls == 3
    assert [text for level, text in lines if level == "action"] == [
        moved.steps[0],
        back.steps[0],
        "forgot ifindex 7: its device is gone",
        "detached from eth4",
    ]


def test_follow_resyncs_after_an_overrun_and_survives_errors():
    lines, calls = run(
        [
            netdev.Overrun(),
            [netdev.LinkEvent(True, link())],
            [],
            [netdev.LinkEvent(True, link())],
            [],
        ],
        [PruneResult([], [], []), XdpfwdError("pins are incomplete"), PruneResult([], [], [])],
    )
    assert ("warning", "netlink overrun: resynchronising from a full dump") in lines
    assert ("error", "pins are incomplete") in lines
    assert calls == 3


def test_follow_says_a_lasting_error_once_and_when_it_is_resolved():
    failing = XdpfwdError("pins are incomplete")
    events = [[netdev.LinkEvent(True, link())], []] * 4
    lines, calls = run(events, [failing, failing, failing, PruneResult([], [], [])])
    assert calls == 4
    assert lines.count(("error", "pins are incomplete")) == 1
    assert ("action", "the last error is resolved") in lines


def test_a_pin_dir_that_is_not_this_namespaces_ends_the_follow():
    refusal = InputError("/sys/fs/bpf/x served the ports of a network namespace that is gone")
    events, ops = FakeEvents([[], []]), FakeOps([], refusal)
    with pytest.raises(InputError, match="that is gone"):
        list(follow.run(ops, PinDir("/sys/fs/bpf/x"), events=events, settle=0, resync=60))
    assert ops.calls == 0 and events.closed


def test_follow_says_once_what_it_leaves_alone():
    skipped = PruneResult([], [], [], skipped=("eth1 runs another XDP program (id 9): left alone",))
    lines, _ = run([[netdev.LinkEvent(False, link())], []], [skipped, skipped])
    assert lines.count(("warning", skipped.skipped[0])) == 1


def test_follow_warns_about_a_device_it_bound_anew():
    text = "eth2 cannot take frames redirected to it: they are dropped (fix: ...)"
    bound = PruneResult([], [], [], steps=("attach to eth2 (auto)",), warnings=(text,))
    lines, _ = run([[netdev.LinkEvent(False, link())], []], [bound, PruneResult([], [], [])])
    assert ("warning", text) in lines
