"""The CLI's parsing, exit codes and messages, with the operations faked."""

import dataclasses
import json
import os
import subprocess
import sys

import click.testing
import pytest
from click.testing import CliRunner

from xdpfwd import interrupts
from xdpfwd.cli import cli
from xdpfwd.errors import AttachError, BpfError, InputError, PrereqError, XdpfwdError
from xdpfwd.kernel.rtnl import NetlinkError
from xdpfwd.model import DEFAULT_EGRESS, EgressSpec, Iface, PruneResult
from xdpfwd.ops import benchmark

from .commands import COMMANDS
from .fake_ops import FakeOps


def invoke(args, ops=None, env=None):
    ops = ops or FakeOps()
    result = CliRunner().invoke(cli, args, obj=ops, env=env or {}, catch_exceptions=False)
    return result, ops


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [list(path) for path, _ in COMMANDS], ids=" ".join)
def test_every_command_has_help_with_examples(command):
    result, _ = invoke([*command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.stdout
    assert "Examples:" in result.stdout


def test_add_passes_parsed_arguments_to_ops():
    args = [
        "add",
        "eth1",
        "eth2",
        "-b",
        "--table",
        "devmap",
        "--mode",
        "skb",
        "--on-miss",
        "drop",
        "--force",
        "--value",
        "ifindex",
        "--no-egress",
    ]
    result, ops = invoke(args)
    assert result.exit_code == 0, result.stderr
    name, (pins, ingress, egress), kwargs = ops.calls[0]
    assert name == "add"
    assert pins.path == "/sys/fs/bpf/xdpfwd"
    assert (ingress, egress) == (Iface(2, "eth1"), Iface(3, "eth2"))
    assert kwargs == {
        "bidirectional": True,
        "table": "devmap",
        "value": "ifindex",
        "mode": "generic",
        "on_miss": "drop",
        "force": True,
        "egress_spec": EgressSpec(program="none"),
    }
    assert "eth1 -> eth2" in result.stdout


def test_add_defaults():
    _, ops = invoke(["add", "eth1", "eth2"])
    assert ops.calls[0][2] == {
        "bidirectional": False,
        "table": None,
        "value": None,
        "mode": "auto",
        "on_miss": None,
        "force": False,
        "egress_spec": DEFAULT_EGRESS,
    }


@pytest.mark.parametrize(
    "options, spec",
    [
        (["--egress-prog", "f.c:my_fn"], EgressSpec("user", user_file="f.c", user_func="my_fn")),
        (["--egress-prog", "f.c"], EgressSpec("user", user_file="f.c")),
        (["--egress-prog", "/a:b/f.c"], EgressSpec("user", user_file="/a:b/f.c")),
        (
            ["--src-mac", "egress", "--dst-mac", "02:00:00:00:00:09"],
            EgressSpec(src_mac="egress", dst_mac="02:00:00:00:00:09"),
        ),
    ],
    ids=["file-and-function", "file-only", "colon-in-directory", "rewrite"],
)
def test_egress_options_build_the_spec(options, spec):
    result, ops = invoke(["add", "eth1", "eth2", *options])
    assert result.exit_code == 0, result.stderr
    assert ops.calls[0][2]["egress_spec"] == spec


def test_no_egress_conflicts_with_egress_features():
    result, ops = invoke(["add", "eth1", "eth2", "--no-egress", "--src-mac", "egress"])
    assert result.exit_code == 2 and "--no-egress" in one_error_line(result)
    assert ops.calls == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["add", "eth1", "eth1"], "same interface"),
        (["add", "nope", "eth2"], "no such interface: nope"),
        (["add", "eth1"], "Missing argument 'EGRESS..."),
        (["add", "eth1", "eth2", "--table", "array"], "'array' is not one of"),
        (["add", "eth1", "eth2", "--mode", "fast"], "'fast' is not one of"),
        (["del", "nope"], "no such interface: nope"),
        (["--pin-dir", "relative/dir", "list"], "must be an absolute path"),
        (["--pin-dir", "/sys/fs/bpf/a b", "list"], "must be an absolute path"),
        (["frobnicate"], "No such command"),
    ],
    ids=[
        "same-in-out",
        "unknown-iface",
        "missing-arg",
        "bad-table",
        "bad-mode",
        "del-unknown",
        "relative-pin-dir",
        "space-in-pin-dir",
        "unknown-command",
    ],
)
def test_usage_errors_are_one_line_exit_2_and_call_nothing(args, message):
    result, ops = invoke(args)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert ops.calls == []


@pytest.mark.parametrize(
    "error, code",
    [
        (XdpfwdError("eth1 has no xdpfwd entry"), 1),
        (AttachError("busy"), 3),
        (BpfError("compile failed"), 4),
        (PrereqError("needs root"), 5),
    ],
    ids=["state", "attach", "bpf", "prereq"],
)
def test_domain_errors_map_to_documented_exit_codes(error, code):
    result, _ = invoke(["add", "eth1", "eth2"], ops=FakeOps(fail_with=error))
    assert result.exit_code == code
    assert one_error_line(result) == f"error: {error}"


def test_interrupt_exits_130_with_one_line():
    result, _ = invoke(["add", "eth1", "eth2"], ops=FakeOps(fail_with=KeyboardInterrupt()))
    assert result.exit_code == 130
    # Exactly one line: click would print an empty one first.
    assert result.stderr == "error: interrupted; changes in progress were rolled back\n"


@pytest.mark.parametrize("answer", ["n\n", ""], ids=["no", "end of input"])
def test_a_broadcast_of_every_port_not_answered_yes_changes_nothing(monkeypatch, answer):
    # The runner's streams stand in for a terminal's.
    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    ops = FakeOps()
    result = CliRunner().invoke(cli, ["broadcast"], obj=ops, input=answer, env={})
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "error: nothing changed: the question was not answered yes"
    )
    assert not ops.calls


@pytest.mark.parametrize("args", [["--format", "table"], ["--format", "prometheus"]])
def test_stats_json_and_another_format_are_refused(args):
    result, ops = invoke(["stats", "--json", *args])
    assert result.exit_code == 2 and "ask for two formats" in one_error_line(result)
    assert invoke(["stats", "--json", "--format", "json"])[0].exit_code == 0


def test_stats_clear_of_some_ports_is_refused_and_clears_nothing():
    result, ops = invoke(["stats", "--clear", "--iface", "eth1"])
    assert result.exit_code == 2 and "it takes no --iface" in one_error_line(result)
    assert not ops.calls


def test_help_of_broadcast_del_is_broadcasts():
    result, _ = invoke(["help", "broadcast", "del"])
    assert result.exit_code == 0 and "broadcast del IFACE" in result.stdout


def test_help_of_no_such_command_points_to_the_top_help():
    result, _ = invoke(["help", "nosuch"])
    assert result.exit_code == 2
    line = one_error_line(result)  # the runner calls the top command "cli"
    assert line.startswith("error: no such command: nosuch (see `") and "help --help" not in line


def test_an_interrupt_held_until_down_finished_exits_130_after_it(monkeypatch):
    class DownInterrupted(FakeOps):
        def down(self, pins):
            monkeypatch.setattr(interrupts, "_deferred", True)  # SIGTERM mid-teardown
            monkeypatch.setattr(interrupts, "committed", True)
            return super().down(pins)

    result, _ = invoke(["down"], ops=DownInterrupted())
    assert result.exit_code == 130
    assert "interrupted after the change was made" in one_error_line(result)
    assert "detached from eth1" in result.stdout


def test_error_lines_escape_what_would_break_them():
    error = XdpfwdError("no such interface: a\nb " + os.fsdecode(b"\xff"))
    result, _ = invoke(["list"], ops=FakeOps(fail_with=error))
    assert one_error_line(result) == "error: no such interface: a\\nb \\udcff"


def test_unexpected_error_is_one_line_without_traceback():
    result, _ = invoke(["list"], ops=FakeOps(fail_with=RuntimeError("boom")))
    assert result.exit_code == 1
    assert "unexpected RuntimeError: boom" in one_error_line(result)
    assert "Traceback" not in result.stderr


def test_a_bpf_call_nothing_handled_is_a_bpf_error_not_a_bug():
    refused = OSError(22, "map lookup: Invalid argument")
    refused.bpf_call = "map lookup"  # as kernel/bpf/syscall.py raises them
    result, _ = invoke(["list"], ops=FakeOps(fail_with=refused))
    assert result.exit_code == 4
    assert one_error_line(result) == (
        "error: the kernel refused a BPF call (map lookup: Invalid argument)"
    )


def test_a_netlink_refusal_nothing_handled_is_an_error_not_a_bug():
    refused = NetlinkError(19)
    result, _ = invoke(["list"], ops=FakeOps(fail_with=refused))
    assert result.exit_code == 1
    assert one_error_line(result) == "error: the kernel refused a netlink request (No such device)"


def test_traceback_only_with_vv():
    result, _ = invoke(["-vv", "list"], ops=FakeOps(fail_with=RuntimeError("boom")))
    assert "Traceback" in result.stderr


def test_del_accepts_ifindex_of_a_gone_device():
    result, ops = invoke(["del", "17"])
    assert result.exit_code == 0
    assert ops.calls[0][1][1] == Iface(17, None)


def test_pin_dir_from_environment():
    _, ops = invoke(["list"], env={"XDPFWD_PIN_DIR": "/sys/fs/bpf/other"})
    assert ops.calls[0][1][0].path == "/sys/fs/bpf/other"


def test_list_json_is_stable_and_parseable():
    result, _ = invoke(["list", "--json"])
    data = json.loads(result.stdout)
    assert set(data) == {
        "schema_version",
        "time",
        "pin_dir",
        "netns",
        "table",
        "value",
        "prog_id",
        "loss_accounting",
        "multi_buffer",
        "entries",
        "groups",
        "multicast",
        "waiting",
    }
    first, gone = data["entries"]
    assert set(first) == {
        "ingress",
        "egress",
        "table",
        "value",
        "mode",
        "on_miss",
        "state",
        "egress_prog",
        "rewrite",
        "counters",
        "egress_counters",
        "group",
        "multicast",
        "problems",
        "balance",
        "forwarded_packets",
        "not_forwarded",
        "flood_copies_lost",
        "xmit_drop_packets",
        "redirect_error_packets",
    }
    assert first["ingress"] == {"ifname": "eth1", "ifindex": 2, "netns": None}
    assert first["counters"]["redirect_packets"] == 5
    assert first["counters"]["rx_packets"] == 5
    assert first["egress_prog"] == {"kind": "user", "id": 9, "name": "drop_arp", "source": None}
    assert first["rewrite"] == {"src_mac": "02:00:00:00:00:01", "dst_mac": None}
    assert first["egress_counters"]["egress_drop_packets"] == 1
    assert gone["ingress"] == {"ifname": None, "ifindex": 17, "netns": None}
    assert gone["egress"] is None and gone["egress_prog"] is None


def test_list_table_shows_gone_devices():
    result, _ = invoke(["list"])
    assert "eth1 (2)" in result.stdout
    assert "gone (17)" in result.stdout
    assert "device gone" in result.stdout
    assert "user drop_arp (9)" in result.stdout
    assert "user drop_arp (9)" in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no escape codes


def test_a_group_without_members_shows_no_ingress_setting():
    class MemberlessGroup(FakeOps):
        def list_ports(self, pins):
            listing = super().list_ports(pins)
            listing.groups[0] = dataclasses.replace(listing.groups[0], members=[], pairs=[])
            return listing

    result, _ = invoke(["list"], MemberlessGroup())
    row = next(line for line in result.stdout.splitlines() if line.startswith("cams"))
    assert row.split() == ["cams", "-"]


def test_piped_tables_keep_every_column():
    # Not a terminal: rich would assume 80 columns and elide the counter columns.
    result, _ = invoke(["list"])
    header = next(line for line in result.stdout.splitlines() if line.startswith("INGRESS"))
    assert header.split()[-3:] == ["FORWARDED", "MISSED", "LOST"]
    assert "…" not in result.stdout


def test_down_reports_what_it_did():
    result, _ = invoke(["down"])
    assert "detached from eth1" in result.stdout
    assert "removed /sys/fs/bpf/xdpfwd" in result.stdout


def test_signals_unwind_only_in_xdpfwds_own_process(monkeypatch):
    from xdpfwd import interrupts

    monkeypatch.setattr(interrupts, "_pending", False)
    handler = interrupts._handler(main_pid=os.getpid())
    interrupts.check()  # nothing pending
    with pytest.raises(KeyboardInterrupt):
        handler(15, None)
    # Even if that KeyboardInterrupt was swallowed (in a finalizer), check() raises again.
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()

    def fake_exit(status):  # like os._exit, never returns
        raise SystemExit(status)

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as exited:
        interrupts._handler(main_pid=os.getpid() + 1)(15, None)  # in a forked child
    assert exited.value.code == 128 + 15


@pytest.mark.parametrize(
    "args, call",
    [
        (
            ["broadcast", "eth1", "eth2", "--exclude-ingress"],
            (
                "broadcast",
                [Iface(2, "eth1"), Iface(3, "eth2")],
                {
                    "group": "default",
                    "exclude_ingress": True,
                    "table": None,
                    "mode": "auto",
                    "force": False,
                },
            ),
        ),
        (
            ["broadcast", "--all", "--group", "cams"],
            (
                "broadcast",
                None,
                {
                    "group": "cams",
                    "exclude_ingress": None,
                    "table": None,
                    "mode": "auto",
                    "force": False,
                },
            ),
        ),
        (
            ["broadcast", "del", "eth1", "17", "--group", "cams"],
            ("broadcast_del", [Iface(2, "eth1"), Iface(17, None)], "cams"),
        ),
    ],
    ids=["members", "bare", "del"],
)
def test_broadcast_parsing(args, call):
    result, ops = invoke(args)
    assert result.exit_code == 0, result.stderr
    name, recorded, kwargs = ops.calls[0]
    assert name == call[0]
    assert recorded[1] == call[1]
    assert (kwargs if name == "broadcast" else recorded[2]) == call[2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["broadcast", "del"], "broadcast del IFACE"),
        (["broadcast", "del", "eth1", "--exclude-ingress"], "broadcast del IFACE"),
        (["broadcast", "eth1", "nope"], "no such interface: nope"),
        (["broadcast"], "or --all for every port"),
        (["broadcast", "eth1", "--all"], "--all takes no IFACE"),
        (["broadcast", "del", "eth1", "--all"], "broadcast del IFACE"),
        (["broadcast", "eth1", "eth2", "eth1"], "IFACE: eth1 is named twice"),
        (["broadcast", "del", "eth2", "3"], "IFACE: ifindex 3 is named twice"),
    ],
    ids=[
        "del-without-ifaces",
        "del-with-flag",
        "unknown-iface",
        "bare, not on a terminal",
        "all with ifaces",
        "del all",
        "member twice",
        "del by name and ifindex",
    ],
)
def test_broadcast_usage_errors(args, message):
    result, ops = invoke(args)
    assert result.exit_code == 2 and message in one_error_line(result)
    assert ops.calls == []


@pytest.mark.parametrize(
    "args, call",
    [
        (
            ["multicast", "add", "239.1.1.1", "--from", "eth1", "--to", "eth2", "eth3"],
            (
                "multicast_add",
                "239.1.1.1",
                [Iface(3, "eth2"), Iface(4, "eth3")],
                [Iface(2, "eth1")],
                {"exclude_ingress": None, "table": None, "mode": "auto", "force": False},
            ),
        ),
        (
            ["multicast", "add", "ff3e::1:1", "--to", "eth1", "--to", "eth2", "--exclude-ingress"],
            (
                "multicast_add",
                "ff3e::1:1",
                [Iface(2, "eth1"), Iface(3, "eth2")],
                None,
                {"exclude_ingress": True, "table": None, "mode": "auto", "force": False},
            ),
        ),
        (
            ["multicast", "add", "239.1.1.1", "--from", "eth1", "eth2", "-m", "skb"],
            (
                "multicast_add",
                "239.1.1.1",
                [],
                [Iface(2, "eth1"), Iface(3, "eth2")],
                {"exclude_ingress": None, "table": None, "mode": "generic", "force": False},
            ),
        ),
        (
            ["multicast", "del", "239.1.1.1", "--to", "eth2", "17"],
            ("multicast_del", "239.1.1.1", [Iface(3, "eth2"), Iface(17, None)], [], {}),
        ),
        (["multicast", "del", "239.1.1.1"], ("multicast_del", "239.1.1.1", [], [], {})),
    ],
    ids=["feed", "bus", "sources-only", "del-receivers", "del-group"],
)
def test_multicast_parsing(args, call):
    result, ops = invoke(args)
    assert result.exit_code == 0, result.stderr
    name, recorded, kwargs = ops.calls[0]
    assert (name, *recorded[1:], kwargs) == call


@pytest.mark.parametrize(
    "args, message",
    [
        (["multicast", "add", "239.1.1.1"], "name receivers"),
        (["multicast", "add", "239.1.1.1", "--to", "eth1", "nope"], "no such interface: nope"),
        (["multicast", "add", "--to", "eth1"], "Missing argument 'GROUP'"),
        (["multicast", "add", "239.1.1.1", "--to", "eth1", "eth1"], "--to: eth1 is named twice"),
        (["multicast", "del", "239.1.1.1", "--from", "eth2", "eth2"], "--from: eth2 is named"),
    ],
    ids=["no-ports", "unknown-iface", "no-group", "receiver twice", "del source twice"],
)
def test_multicast_usage_errors(args, message):
    result, ops = invoke(args)
    assert result.exit_code == 2 and message in one_error_line(result)
    assert ops.calls == []


def test_multicast_list_shows_counters_and_json():
    result, _ = invoke(["multicast", "list"])
    row = next(line for line in result.stdout.splitlines() if line.startswith("239.1.1.1"))
    assert row.split()[-3:] == ["50", "98", "2"]  # in, copies out, lost
    data = json.loads(invoke(["multicast", "list", "--json"])[0].stdout)
    (group,) = data["groups"]
    assert (group["copies_out"], group["copies_lost"]) == (98, 2)
    assert group["receivers"][0] == {
        "port": {"ifname": "eth2", "ifindex": 3, "netns": None},
        "tx_packets": 50,
        "tx_bytes": 5300,
    }
    listing = json.loads(invoke(["list", "--json"])[0].stdout)
    assert listing["multicast"] == data["groups"]


def test_multicast_results_are_reported():
    result, _ = invoke(["multicast", "add", "239.1.1.1", "--from", "eth1", "--to", "eth2"])
    assert "multicast group 239.1.1.1 created" in result.stdout
    result, _ = invoke(["multicast", "del", "239.1.1.1"])
    assert "multicast group 239.1.1.1 was removed" in result.stdout


@pytest.mark.parametrize("columns", ["0", "-3", "wide"])
def test_a_columns_value_that_is_no_width_is_ignored(columns):
    result, _ = invoke(["list"], env={"COLUMNS": columns})
    assert "eth1 (2)" in result.stdout and "device gone" in result.stdout


def test_list_shows_groups():
    result, _ = invoke(["list"])
    assert "broadcast groups" in result.stdout and "cams" in result.stdout
    data = json.loads(invoke(["list", "--json"])[0].stdout)
    (group,) = data["groups"]
    assert group["exclude_ingress"] is True
    assert group["pairs"][0]["tx_packets"] == 7


# --- doctor, prune, save, apply, --netns -------------------------------------------------


def test_doctor_exit_code_follows_the_checks():
    result, ops = invoke(["doctor", "--no-compile"])
    assert result.exit_code == 0 and "privileges" in result.stdout
    assert ops.calls[0][2] == {"compile_test": False, "fix": False}
    _, ops = invoke(["doctor", "--fix"])
    assert ops.calls[0][2] == {"compile_test": True, "fix": True}
    failing = FakeOps()
    failing.doctor_status = "fail"
    result, _ = invoke(["doctor", "--json"], ops=failing)
    assert result.exit_code == 1
    assert one_error_line(result) == "error: 1 check(s) failed: port eth1"
    document = json.loads(result.stdout)
    assert document["failed"] == 1
    assert document["checks"][1] == {
        "id": "port",
        "check": "port eth1",
        "status": "fail",
        "detail": "up",
        "fix": "xdpfwd apply FILE",
        "port": {"ifname": "eth1", "ifindex": 2, "netns": None},
    }


def test_prune_reports_what_it_forgot():
    result, _ = invoke(["prune"])
    assert result.exit_code == 0
    assert "forgot ifindex 17" in result.stdout and "cams" in result.stdout


def test_save_writes_the_file_and_warns_on_stderr(tmp_path):
    out = tmp_path / "saved.json"
    result, ops = invoke(["save", "--format", "json", "--output", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert ops.calls[0][1][1] == "json"
    assert json.loads(out.read_text())["forward"] == [{"from": "eth1", "to": "eth2"}]
    assert "warning: ifindex 17 left out" in result.stderr


def test_save_to_dash_writes_standard_output_not_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result, _ = invoke(["save", "--format", "json", "-o", "-"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["forward"] == [{"from": "eth1", "to": "eth2"}]
    assert list(tmp_path.iterdir()) == []


def test_apply_passes_flags_and_prints_the_plan(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("version: 1\nforward:\n  - {from: eth1, to: eth2}\n")
    result, ops = invoke(["apply", str(path), "--dry-run", "--force"])
    assert result.exit_code == 0, result.stderr
    assert ops.calls[0][2] == {"dry_run": True, "force": True}
    assert "forward eth1 -> eth2" in result.stdout


def test_apply_refuses_a_bad_file_with_its_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("version: 1\nforward:\n  - {from: eth1}\n")
    result, _ = invoke(["apply", str(path)])
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {path}:3: a forward entry needs 'to'"


@pytest.mark.parametrize("name", ["", "a/b", "..", "a b", "x" * 300])
def test_netns_names_are_checked_before_anything_runs(name):
    result, ops = invoke(["--netns", name, "list"])
    assert result.exit_code == 2 and "--netns" in one_error_line(result)
    assert ops.calls == []


def test_an_unknown_netns_is_one_line():
    result, ops = invoke(["--netns", "xdpfwd-no-such-ns", "list"])
    assert result.exit_code == 2
    assert "xdpfwd-no-such-ns" in one_error_line(result)
    assert ops.calls == []


def test_demo_goes_through_the_operations_and_fails_when_pings_are_lost():
    result, ops = invoke(["demo", "--count", "3", "--mode", "generic"])
    assert result.exit_code == 0, result.stderr
    assert ops.calls[0][0] == "demo"
    assert ops.calls[0][2] == {"count": 3, "table": None, "mode": "generic"}
    failing = FakeOps()
    failing.demo_replies = 1
    result, _ = invoke(["demo"], ops=failing)
    assert result.exit_code == 1
    assert "did not all come back" in one_error_line(result)


def test_bench_goes_through_the_operations():
    result, ops = invoke(["bench", "--cpus", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    name, _, options = ops.calls[0]
    assert name == "bench" and options["cpus"] == 2
    assert json.loads(result.stdout)["rows"][0]["median"] == pytest.approx(3.1)


def test_bench_profile_shows_each_rows_programs_per_frame():
    result, ops = invoke(["bench", "--profile"])
    assert result.exit_code == 0, result.stderr
    assert ops.calls[0][2]["profile"] is True
    lines = result.stdout.splitlines()
    header = next(i for i, text in enumerate(lines) if "CPU NS/FRAME" in text)
    assert lines[header + 1].split() == [
        "baseline",
        "160.0",
        "xdpfwd_bench_fw",
        "1.000",
        "21.2",
        "21.2",
    ]
    result, _ = invoke(["bench"])
    assert "CPU NS/FRAME" not in result.stdout


def test_bench_warns_of_programs_others_left_on_the_xdp_tracepoints():
    result, _ = invoke(["bench"])
    assert result.exit_code == 0, result.stderr
    assert "warning: 1 program(s) not this bench's were on the XDP tracepoints" in result.stdout


# --- balanced entries and follow ----------------------------------------------------


def test_add_with_several_egress_ports_is_balanced():
    result, ops = invoke(["add", "eth1", "eth2", "eth3", "--weights", "2,1", "--hash", "l3"])
    assert result.exit_code == 0, result.stderr
    name, (pins, ingress, egress), kwargs = ops.calls[0]
    assert name == "add_balanced"
    assert (ingress, egress) == (Iface(2, "eth1"), [Iface(3, "eth2"), Iface(4, "eth3")])
    assert (kwargs["hash"], kwargs["weights"], kwargs["mode"]) == ("l3", [2, 1], "auto")
    assert kwargs["egress_spec"] == DEFAULT_EGRESS
    assert "eth1 -> eth2, eth3 (balanced, l3 hash)" in result.stdout
    assert "buckets: eth2 128, eth3 128 of 256" in result.stdout


def test_add_balanced_defaults_to_the_symmetric_hash_and_equal_weights():
    result, ops = invoke(["add", "eth1", "eth2", "eth3", "--no-egress"])
    assert result.exit_code == 0, result.stderr
    kwargs = ops.calls[0][2]
    assert (kwargs["hash"], kwargs["weights"]) == ("symmetric", None)
    assert kwargs["egress_spec"] == EgressSpec(program="none")


@pytest.mark.parametrize(
    "args, message",
    [
        (["add", "eth1", "eth2", "--hash", "l4"], "two or more EGRESS"),
        (["add", "eth1", "eth2", "--weights", "2"], "two or more EGRESS"),
        (["add", "eth1", "eth2", "eth3", "--weights", "2,1,1"], "3 weights for 2 ports"),
        (["add", "eth1", "eth2", "eth3", "--weights", "2;1"], "whole numbers"),
        (["add", "eth1", "eth2", "eth3", "--weights", "+1,2"], "whole numbers"),
        (["add", "eth1", "eth2", "eth3", "--weights", "\u0661,\u0662"], "whole numbers"),
        (["add", "eth1", "eth2", "eth2"], "named twice"),
        (["add", "eth1", "eth2", "eth1"], "same interface"),
        (["add", "eth1", "eth2", "eth3", "-b"], "--bidirectional takes one"),
        (["add", "eth1", "eth2", "eth3", "--hash", "l7"], "'l7' is not one of"),
    ],
    ids=[
        "hash",
        "weights",
        "count",
        "syntax",
        "plus",
        "arabic-indic",
        "twice",
        "ingress",
        "bidirectional",
        "bad-hash",
    ],
)
def test_balanced_usage_errors(args, message):
    result, ops = invoke(args)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert ops.calls == []


def test_follow_prints_a_line_per_action_and_ends_cleanly():
    result, ops = invoke(["follow"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1].endswith(" p1: 85 buckets moved")
    assert ops.calls[0][0] == "follow"


def test_prune_reports_the_steps_that_bound_devices_again():
    class Ops(FakeOps):
        def prune(self, pins):
            return PruneResult([], [], [], steps=("attach to eth1 (auto)",), skipped=("x",))

    result, _ = invoke(["prune"], ops=Ops())
    assert result.stdout == "attach to eth1 (auto)\n" and "warning: x" in result.stderr


def test_prune_that_left_something_out_does_not_say_there_was_nothing_to_do():
    class Ops(FakeOps):
        def prune(self, pins):
            return PruneResult([], [], [], skipped=("multicast group 239.1.1.1 not restored",))

    result, _ = invoke(["prune"], ops=Ops())
    assert result.stdout == "" and "not restored" in result.stderr


benchmark_refs = {
    "baseline": "baseline",
    "forward": "baseline",
    "broadcast_bare_4": "baseline",
    "broadcast_4": "broadcast_bare_4",
}


def test_bench_rows_come_with_the_rows_they_are_compared_with():
    rows = [(key, key, None, ref) for key, ref in benchmark_refs.items()]
    picked = [key for key, *_ in benchmark._selected(rows, ("broadcast_4",))]
    assert picked == ["baseline", "broadcast_bare_4", "broadcast_4"]
    assert [key for key, *_ in benchmark._selected(rows, ("baseline",))] == ["baseline"]


def test_an_unknown_bench_row_is_refused_before_anything_is_built():
    with pytest.raises(InputError, match=r"no bench row 'fast' \(rows: baseline, forward,"):
        benchmark.run(None, None, rows=("forward", "fast"))


def test_a_profile_of_control_plane_rows_only_is_refused_before_anything_is_built():
    with pytest.raises(InputError, match=r"--profile .* add_pinned times the control plane"):
        benchmark.run(None, None, rows=("add_pinned",), profile=True)


def test_a_pin_dir_of_another_namespace_is_refused_before_interfaces_are_resolved():
    class OtherNamespace(FakeOps):
        def check_pin_dir(self, pins, removing=False):
            raise InputError(f"{pins.path} serves the ports of network namespace red")

    for args in (["add", "nosuch", "eth2"], ["del", "eth1"], ["broadcast", "del", "eth9"]):
        result, ops = invoke(args, ops=OtherNamespace())
        assert result.exit_code == 2
        assert "serves the ports of network namespace red" in one_error_line(result)
        assert ops.calls == []


def test_closed_or_full_standard_output_is_one_clear_line():
    xdpfwd = os.path.join(os.path.dirname(sys.executable), "xdpfwd")
    closed = subprocess.run(
        [xdpfwd, "help"], preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE, text=True
    )
    assert (closed.returncode, closed.stderr) == (
        2,
        "error: standard output is closed; nothing done\n",
    )
    with open("/dev/full", "w") as full:
        result = subprocess.run([xdpfwd, "help"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 1
    assert result.stderr == "error: cannot write the output: No space left on device\n"
