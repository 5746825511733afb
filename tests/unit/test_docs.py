"""The man page and README document every command and option the CLI has."""

import shutil
import subprocess
from pathlib import Path

import pytest

from xdpfwd.cli import cli

from .commands import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
MAN = (ROOT / "man" / "xdpfwd.8").read_text()
README = (ROOT / "README.md").read_text()
MAN_TEXT = MAN.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")


OPTIONS = sorted(
    {opt for _, cmd in COMMANDS for p in cmd.params for opt in p.opts if opt.startswith("--")}
    | {opt for p in cli.params for opt in p.opts if opt.startswith("--")}
)


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in COMMANDS])
def test_every_command_is_in_the_man_page_and_readme(path):
    assert f"xdpfwd {path}" in MAN_TEXT or path.split()[-1] in MAN_TEXT
    assert f"xdpfwd {path}" in README


@pytest.mark.parametrize("option", OPTIONS)
def test_every_long_option_is_in_the_man_page(option):
    assert option in MAN_TEXT


def test_exit_codes_are_documented():
    for code in ("0", "1", "2", "3", "4", "5", "130"):
        assert f"\n.B {code}\n" in MAN


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings():
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(ROOT / "man" / "xdpfwd.8")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_readme_starts_with_the_two_commands():
    commands = [line.strip() for line in README.split("```")[1].strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_systemd_unit_applies_the_saved_file_and_runs_real_commands():
    unit = (ROOT / "contrib" / "xdpfwd.service.in").read_text()
    execs = dict(line.split("=", 1) for line in unit.splitlines() if line.startswith("Exec"))
    assert all(line.startswith("@BINDIR@/xdpfwd ") for line in execs.values())
    assert execs["ExecStart"].split()[1:] == ["apply", "/etc/xdpfwd.yaml"]
    assert execs["ExecStop"].split()[1:] == ["down"]
    for line in execs.values():
        assert line.split()[1] in cli.commands


def test_the_follow_unit_runs_follow_and_restarts_it():
    unit = (ROOT / "contrib" / "xdpfwd-follow.service.in").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["ExecStart"] == "@BINDIR@/xdpfwd follow"
    assert settings["Type"] == "simple" and settings["Restart"] == "on-failure"
    assert "contrib/xdpfwd-follow.service.in" in README
