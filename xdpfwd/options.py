"""Shared click pieces: the app context, the interface parameter type, common options."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import click

from .errors import InputError
from .model import EgressSpec
from .pins import PinDir


@dataclass
class App:
    """What every command gets: the operations to call (swappable in tests) and the pins."""

    ops: ModuleType | object
    pins: PinDir


class IfaceType(click.ParamType):
    """An interface name (or ifindex), resolved to an Iface while parsing."""

    name = "IFACE"

    def __init__(self, allow_gone: bool = False):
        self.allow_gone = allow_gone

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        app = ctx.find_object(App)
        try:
            return app.ops.resolve(value, allow_gone=self.allow_gone)
        except InputError as e:
            self.fail(str(e), param, ctx)


_MODE_ALIASES = {"skb": "generic", "drv": "native"}


def mode_option(fn):
    return click.option(
        "-m",
        "--mode",
        type=click.Choice(["native", "generic", "auto", "skb", "drv"]),
        default="auto",
        show_default=True,
        callback=lambda ctx, param, value: _MODE_ALIASES.get(value, value),
        help="XDP attach mode: native (driver), generic (skb, slower, works everywhere) "
        "or auto (native, falling back to generic). skb and drv are aliases.",
    )(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        fn
    )


def table_option(fn):
    return click.option(
        "--table",
        type=click.Choice(["devmap-hash", "devmap"]),
        default=None,
        help="Map type of the forwarding table, chosen when it is first created "
        "[default: devmap-hash]. A later different choice is an error.",
    )(fn)


def force_option(fn):
    return click.option(
        "--force", is_flag=True, help="Replace an XDP program that xdpfwd did not attach."
    )(fn)


def egress_spec(no_egress: bool, egress_prog: str | None, src_mac, dst_mac) -> EgressSpec:
    """The EgressSpec of add's options; FILE.c[:FUNCTION] split at its last colon."""
    if no_egress and (egress_prog or src_mac or dst_mac):
        raise click.UsageError("--no-egress cannot be combined with an egress program or rewrite")
    if egress_prog is None:
        return EgressSpec(program="none" if no_egress else "built-in", src_mac=src_mac,
                          dst_mac=dst_mac)  # fmt: skip
    path, _, func = egress_prog.rpartition(":")
    if not path or not func.isidentifier():
        path, func = egress_prog, None
    return EgressSpec(program="user", src_mac=src_mac, dst_mac=dst_mac, user_file=path,
                      user_func=func)  # fmt: skip
