"""Every command line the README, the man page and the commands' own help show parses:
the documented commands, options and values are the ones the program takes."""

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

from xdpfwd.cli import cli
from xdpfwd.model import Iface
from xdpfwd.options import App
from xdpfwd.state.pins import PinDir

from .commands import COMMANDS

ROOT = Path(__file__).resolve().parents[2]


class AnyIface:
    """Examples name interfaces this machine does not have: take any name."""

    def check_pin_dir(self, pins, removing=False):
        pass

    def resolve(self, name, allow_gone=False):
        return Iface(int(name) if name.isdigit() else 100 + len(name), name)


def readme_examples() -> list[str]:
    """Lines of the README's code blocks (fenced, also indented in a list) that run xdpfwd."""
    found, inside = [], False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif inside and line.strip().startswith("xdpfwd "):
            found.append(line.strip())
    return found


def man_examples() -> list[str]:
    text = (ROOT / "man" / "xdpfwd.8").read_text().replace("\\-", "-")
    examples = text[text.index(".SH EXAMPLES") :]
    examples = examples[: examples.index("\n.SH ", 1)]
    return [line for line in examples.splitlines() if line.startswith("xdpfwd ")]


def help_examples() -> list[str]:
    lines = []
    for _, command in COMMANDS:
        for line in (command.epilog or "").splitlines():
            if line.strip().startswith("xdpfwd "):
                lines.append(line.strip())
    return lines


def words(line: str) -> list[str]:
    """The arguments of one example: no comment, pipe or redirection."""
    line = re.split(r"\s#\s|\s\|\s|\s>\s", line)[0]
    return shlex.split(line)[1:]


def remaining(ctx: click.Context) -> list[str]:
    """What a group left for its subcommand (click 9 will have it all in ctx.args)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*getattr(ctx, "protected_args", ()), *ctx.args]


def parse(args: list[str]) -> None:
    """Parse as xdpfwd would, down to the subcommand, without running anything."""
    app = App(ops=AnyIface(), pins=PinDir.parse("/sys/fs/bpf/xdpfwd"))
    ctx = cli.make_context("xdpfwd", list(args), obj=app)
    command: click.Command = cli
    rest = remaining(ctx)
    while isinstance(command, click.Group) and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx, obj=app)
        rest = remaining(ctx) if isinstance(command, click.Group) else []


EXAMPLES = sorted(
    {
        part.strip()
        for line in readme_examples() + man_examples() + help_examples()
        for part in line.split(";")
        if part.strip().startswith("xdpfwd ")
    }
)


def test_there_are_examples_from_every_source():
    assert readme_examples() and man_examples() and help_examples()


@pytest.mark.parametrize("line", EXAMPLES)
def test_every_documented_command_line_parses(line):
    try:
        parse(words(line))
    except click.BadParameter as e:
        # An example's output directory (/var/lib/node_exporter) need not exist here.
        assert e.param is not None and e.param.name == "output", e.format_message()
