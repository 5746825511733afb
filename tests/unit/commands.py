"""Every command of the CLI, walked from its tree (so a new command is never missed)."""

import click

from xdpfwd.cli import cli


def walk(group: click.Group = cli, path=()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


COMMANDS = list(walk())
