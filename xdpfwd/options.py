"""Shared click pieces: the app context, the interface parameter type, common options."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from types import ModuleType

import click
import click.shell_completion

from xdpfwd.errors import InputError
from xdpfwd.kernel import files, netns
from xdpfwd.kernel.bpf.maps import PIN_GROUP_DIR
from xdpfwd.model import MODE_WORDS, MODES, EgressSpec
from xdpfwd.state.buckets import MAX_WEIGHT
from xdpfwd.state.pins import DEFAULT_PIN_DIR, PinDir


@dataclass
class App:
    """What every command gets: the operations to call (swappable in tests) and the pins."""

    ops: ModuleType | object
    pins: PinDir
    netns: str | None = None  # the namespace it works in (--netns)
    pin_dir_checked: bool = False

    def check_pin_dir(self) -> None:
        """Before the first interface is resolved: refuse a pin directory that serves
        another network namespace, where its ifindexes, and interface names, mean other
        devices (InputError). Without this, a name missing here would be the error."""
        if not self.pin_dir_checked:
            self.ops.check_pin_dir(self.pins)
            self.pin_dir_checked = True


# --- shell completion: what the user is most likely to type next ---------------------


def complete_ifaces(ctx, param, incomplete: str) -> list[str]:
    """Interface names in this namespace (the one xdpfwd runs in)."""
    from xdpfwd.kernel import netdev  # pyroute2: only when completing

    try:
        names = sorted(link.ifname for link in netdev.links().values())
    except OSError:
        return []
    return [name for name in names if name.startswith(incomplete)]


def complete_netns(ctx, param, incomplete: str) -> list[str]:
    return [name for name in netns.names() if name.startswith(incomplete)]


def complete_files(ctx, param, incomplete: str) -> list[click.shell_completion.CompletionItem]:
    return [click.shell_completion.CompletionItem(incomplete, type="file")]


def complete_groups(ctx, param, incomplete: str) -> list[str]:
    """The broadcast groups pinned in --pin-dir (given or defaulted)."""
    root = ctx.find_root().params
    try:
        pins = PinDir.parse(root.get("pin_dir") or DEFAULT_PIN_DIR)
        if root.get("netns"):
            pins = pins.for_netns(root["netns"])
        names = sorted(os.listdir(pins.pin(PIN_GROUP_DIR)))
    except (InputError, OSError):
        return []
    return [name for name in names if name.startswith(incomplete)]


def complete_members(ctx, param, incomplete: str) -> list[str]:
    """broadcast's arguments: `del` first, then interfaces."""
    words = ["del"] if not ctx.params.get(param.name) and "del".startswith(incomplete) else []
    return words + complete_ifaces(ctx, param, incomplete)


class IfaceType(click.ParamType):
    """An interface name (or ifindex), resolved to an Iface while parsing."""

    name = "IFACE"

    def __init__(self, allow_gone: bool = False):
        self.allow_gone = allow_gone

    def shell_complete(self, ctx, param, incomplete):
        return [
            click.shell_completion.CompletionItem(n)
            for n in complete_ifaces(ctx, param, incomplete)
        ]

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        app = ctx.find_object(App)
        app.check_pin_dir()
        try:
            return app.ops.resolve(value, allow_gone=self.allow_gone)
        except InputError as e:
            self.fail(str(e), param, ctx)


def mode_option(fn):
    return click.option(
        "-m",
        "--mode",
        "--xdp-mode",
        "mode",
        type=click.Choice([*MODES, *MODE_WORDS]),
        default="auto",
        show_default=True,
        callback=lambda ctx, param, value: MODE_WORDS.get(value, value),
        help="XDP attach mode: native (driver), generic (skb, slower, works everywhere) "
        "or auto (native, falling back to generic). As iproute2 and xdp-tools say them: "
        "drv and xdpdrv are native, skb and xdpgeneric are generic.",
    )(fn)


def json_option(fn):
    return click.option(
        "-j", "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
    )(fn)


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
        "--force",
        is_flag=True,
        help="Replace an XDP program that xdpfwd did not attach (with add, broadcast, "
        "multicast add and apply: also close a forwarding loop).",
    )(fn)


def egress_spec(no_egress: bool, egress_prog: str | None, src_mac, dst_mac) -> EgressSpec:
    """The EgressSpec of add's options; FILE.c[:FUNCTION] split at its last colon."""
    if no_egress and (egress_prog or src_mac or dst_mac):
        raise click.UsageError("--no-egress cannot be combined with an egress program or rewrite")
    if egress_prog is None:
        return EgressSpec(
            program="none" if no_egress else "built-in", src_mac=src_mac, dst_mac=dst_mac
        )
    path, _, func = egress_prog.rpartition(":")
    if not path or not func.isidentifier():
        path, func = egress_prog, None
    return EgressSpec(
        program="user", src_mac=src_mac, dst_mac=dst_mac, user_file=path, user_func=func
    )


def compose(*decorators):
    """One decorator made of several, applied in the order they are listed."""

    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def format_option(choices: list[str], default: str, help: str = "Output format."):
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=default,
        show_default=True,
        help=help,
    )


def output_option(help: str):
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        callback=_check_output,
        help=help + " - is standard output. A regular file is replaced atomically (a "
        "temporary file, then a rename); a symbolic link, FIFO or character device is "
        "written in place.",
    )


def _check_output(ctx, param, value):
    if value == "-":  # standard output, as most tools take it
        return None
    if value is not None:
        try:
            files.check_output(value)
        except InputError as e:
            raise click.BadParameter(str(e), ctx, param) from None
    return value


# add: the entry's format, on-miss verdict and egress program.
entry_options = compose(
    click.option(
        "--value",
        type=click.Choice(["devmap-val", "ifindex"]),
        default=None,
        help="Entry format, chosen when the table is first created: devmap-val (egress "
        "ifindex and egress program, Linux 5.8+) or ifindex (older kernels, no egress "
        "programs) [default: devmap-val if the kernel has it].",
    ),
    mode_option,
    click.option(
        "--on-miss",
        type=click.Choice(["pass", "drop"]),
        default=None,
        help="Verdict for frames entering the port once it has no entry: pass them to the "
        "host stack or drop them [default: pass, or the port's current setting].",
    ),
    click.option(
        "--no-egress",
        is_flag=True,
        help="Write the entry without an egress program: the default (kept for scripts); "
        "a balanced entry's buckets then count no frames per port.",
    ),
    click.option(
        "--egress-prog",
        metavar="FILE.c[:FUNCTION]",
        shell_complete=complete_files,
        help="Compile FUNCTION of FILE.c with BCC as the entry's egress program; xdpfwd "
        "still counts its verdicts per pair.",
    ),
    click.option("--src-mac", metavar="egress|MAC", help="Rewrite the source MAC on egress."),
    click.option("--dst-mac", metavar="MAC", help="Rewrite the destination MAC on egress."),
)


def _weights(ctx, param, value):
    if value is None:
        return None
    words = value.split(",")
    if not all(w.isascii() and w.isdigit() for w in words):  # int() takes " +١" too
        raise click.BadParameter(
            f"give whole numbers from 1 to {MAX_WEIGHT} separated by commas, like 2,1,1"
        )
    # Out of range either way (the range is checked with the ports), without int()'s
    # refusal of thousands of digits.
    return [int(w) if len(w) <= 9 else 10**9 for w in words]


# add: how a balanced entry (several egress ports) spreads its flows.
balance_options = compose(
    click.option(
        "--hash",
        "hash_mode",
        type=click.Choice(["symmetric", "l4", "l3", "l2"]),
        default=None,
        help="With several EGRESS ports, what picks a flow's port: symmetric (addresses "
        "and TCP/UDP/SCTP ports, both directions of a flow alike), l4 (the same, as "
        "they come), l3 (addresses only) or l2 (MACs only) [default: symmetric].",
    ),
    click.option(
        "--weights",
        metavar="W1,W2,...",
        callback=_weights,
        help="With several EGRESS ports, each one's share of the flows, in their order "
        "[default: 1 each].",
    ),
)


def check_balance(ingress, egress, bidirectional: bool, hash_mode, weights) -> None:
    """Usage errors of add's EGRESS list and balance options."""
    if any(port.ifindex == ingress.ifindex for port in egress):
        raise click.UsageError(f"INGRESS and EGRESS are the same interface ({ingress.label})")
    if len({port.ifindex for port in egress}) != len(egress):
        raise click.UsageError("an EGRESS interface is named twice")
    if len(egress) == 1 and (hash_mode or weights):
        raise click.UsageError("--hash and --weights are for two or more EGRESS ports")
    if len(egress) > 1 and bidirectional:
        raise click.UsageError("--bidirectional takes one EGRESS port")
    if weights is not None and len(weights) != len(egress):
        raise click.UsageError(f"--weights gives {len(weights)} weights for {len(egress)} ports")


class Seconds(click.FloatRange):
    """A number of seconds in a range. click's FloatRange lets "nan" through (every
    comparison with NaN is false): `--interval nan` made the watch loop spin."""

    name = "seconds"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return number


# stats: refreshing live.
watch_options = compose(
    click.option(
        "-w", "--watch", is_flag=True, help="Refresh with rates until Ctrl-C (or --count)."
    ),
    click.option(
        "-i",
        "--interval",
        default=1.0,
        show_default=True,
        type=Seconds(0.1, 3600),
        help="Seconds between refreshes of --watch.",
    ),
    click.option(
        "--count", type=click.IntRange(1), default=None, help="Stop --watch after N refreshes."
    ),
)


# stats: which rows, in which order.
row_options = compose(
    click.option(
        "--iface",
        "ifaces",
        shell_complete=complete_ifaces,
        multiple=True,
        metavar="IFACE",
        help="Only rows of this interface (repeatable).",
    ),
    click.option(
        "--sort",
        type=click.Choice(["name", "rate"]),
        default="name",
        show_default=True,
        help="Row order: by ifindex, or busiest first (rate; totals without --watch).",
    ),
)


# bench: the traffic of each sample.
bench_options = compose(
    click.option(
        "--duration",
        default=3.0,
        show_default=True,
        type=Seconds(0.2, 600),
        help="Seconds of traffic per sample.",
    ),
    click.option(
        "--size",
        default=64,
        show_default=True,
        type=click.IntRange(60, 1514),
        help="Frame size in bytes, without FCS.",
    ),
    click.option(
        "--repeat",
        default=3,
        show_default=True,
        type=click.IntRange(1, 100),
        help="Samples per row; the table shows their median and range.",
    ),
    click.option(
        "--cpus",
        default=1,
        show_default=True,
        type=click.IntRange(1, 1024),
        help="Generator threads, one per CPU (multi-queue lab ports).",
    ),
    click.option(
        "--flows",
        default=1,
        show_default=True,
        type=click.IntRange(1, 65535),
        help="Distinct UDP source ports in the generated traffic.",
    ),
    click.option(
        "--row",
        "rows",
        multiple=True,
        metavar="KEY",
        help="Measure only this row (its key in --json), with its reference row (repeatable).",
    ),
    click.option(
        "--profile",
        is_flag=True,
        help="Also show what each row's programs cost a frame (kernel run statistics, "
        "which slow every row).",
    ),
)


def spread_values(args: list[str], names: tuple[str, ...]) -> list[str]:
    """`--to b c --from a` as click reads it: `--to b --to c --from a`. The options
    in names take every following word up to the next option (or `--`)."""
    spread: list[str] = []
    current = None
    for i, arg in enumerate(args):
        if arg == "--":
            return spread + args[i:]
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            current = name if name in names else None
            if current is not None and "=" in arg:
                spread += [current, arg.split("=", 1)[1]]
                continue
        elif current is not None and spread and spread[-1] != current:
            spread.append(current)
        spread.append(arg)
    return spread


class ListOptionsCommand(click.Command):
    """A command whose options in list_options take several values each (spread_values)."""

    list_options: tuple[str, ...] = ("--to", "--from")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_values(args, self.list_options))


def ports_option(name: str, dest: str, help: str):
    return click.option(
        name, dest, multiple=True, metavar="IFACE...", shell_complete=complete_ifaces, help=help
    )
