"""The CLI's parsing, exit codes and messages, with the operations faked."""

import json

import pytest
from click.testing import CliRunner

from xdpfwd.cli import cli
from xdpfwd.errors import AttachError, BpfError, PrereqError, XdpfwdError
from xdpfwd.model import Iface

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


COMMANDS = [
    ["add"],
    ["del"],
    ["list"],
    ["down"],
    ["demo"],
    ["lab"],
    ["lab", "up"],
    ["lab", "down"],
    ["lab", "status"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_examples(command):
    result, _ = invoke([*command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.stdout
    assert "Examples:" in result.stdout


def test_add_passes_parsed_arguments_to_ops():
    result, ops = invoke(
        [
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
        ]
    )
    assert result.exit_code == 0, result.stderr
    name, (pins, ingress, egress), kwargs = ops.calls[0]
    assert name == "add"
    assert pins.path == "/sys/fs/bpf/xdpfwd"
    assert (ingress, egress) == (Iface(2, "eth1"), Iface(3, "eth2"))
    assert kwargs == {
        "bidirectional": True,
        "table": "devmap",
        "mode": "generic",
        "on_miss": "drop",
        "force": True,
    }
    assert "eth1 -> eth2" in result.stdout


def test_add_defaults():
    _, ops = invoke(["add", "eth1", "eth2"])
    assert ops.calls[0][2] == {
        "bidirectional": False,
        "table": None,
        "mode": "auto",
        "on_miss": None,
        "force": False,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["add", "eth1", "eth1"], "same interface"),
        (["add", "nope", "eth2"], "no such interface: nope"),
        (["add", "eth1"], "Missing argument 'EGRESS'"),
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
    assert "interrupted" in result.stderr


def test_unexpected_error_is_one_line_without_traceback():
    result, _ = invoke(["list"], ops=FakeOps(fail_with=RuntimeError("boom")))
    assert result.exit_code == 1
    assert "unexpected RuntimeError: boom" in one_error_line(result)
    assert "Traceback" not in result.stderr


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
    assert set(data) == {"pin_dir", "table", "prog_id", "entries"}
    first, gone = data["entries"]
    assert set(first) == {"ingress", "egress", "table", "mode", "on_miss", "state", "counters"}
    assert first["ingress"] == {"ifname": "eth1", "ifindex": 2}
    assert first["counters"]["redirect_packets"] == 5
    assert first["counters"]["rx_packets"] == 5
    assert gone["ingress"] == {"ifname": None, "ifindex": 17}
    assert gone["egress"] is None


def test_list_table_shows_gone_devices():
    result, _ = invoke(["list"])
    assert "eth1 (2)" in result.stdout
    assert "gone (17)" in result.stdout
    assert "device gone" in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no escape codes


def test_down_reports_what_it_did():
    result, _ = invoke(["down"])
    assert "detached from eth1" in result.stdout
    assert "removed /sys/fs/bpf/xdpfwd" in result.stdout
