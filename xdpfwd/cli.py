"""The xdpfwd command line: parse, call one operation, render. Nothing else lives here."""

from __future__ import annotations

import errno
import importlib
import logging
import os
import sys
import traceback

import click

from xdpfwd import __version__, interrupts, progress
from xdpfwd.errors import EXIT_INTERRUPTED, BpfError, InputError, XdpfwdError
from xdpfwd.kernel import files
from xdpfwd.kernel import netns as netns_module
from xdpfwd.kernel.rtnl import NetlinkError
from xdpfwd.options import (
    App,
    IfaceType,
    ListOptionsCommand,
    balance_options,
    bench_options,
    check_balance,
    complete_groups,
    complete_members,
    complete_netns,
    egress_spec,
    entry_options,
    force_option,
    format_option,
    json_option,
    mode_option,
    output_option,
    ports_option,
    row_options,
    table_option,
    watch_options,
)
from xdpfwd.state.pins import DEFAULT_PIN_DIR, PIN_DIR_ENV, PinDir

log = logging.getLogger("xdpfwd")


class _Imported:
    """A module imported when first used: `--help` and usage errors need neither
    netlink, nor BPF, nor the model, nor rich."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


lines = _Imported("xdpfwd.render.lines")
documents = _Imported("xdpfwd.render.documents")
tables = _Imported("xdpfwd.render.tables")


# The words iproute2 and xdp-tools users type for xdpfwd's commands.
ALIASES = {"unload": "del", "show": "list", "status": "list"}


class _Interrupted(Exception):
    """A KeyboardInterrupt (Ctrl-C, SIGTERM) that ended a command."""


class XdpfwdGroup(click.Group):
    """Turns every failure into one `error:` line on stderr and a documented exit code;
    takes the aliases of the top-level commands, which its help lists beside them."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            # click would print an empty line to stderr before its Abort; the line
            # that says what became of the change is the one line.
            raise _Interrupted from e

    def get_command(self, ctx: click.Context, cmd_name: str):
        if self is ctx.find_root().command:
            cmd_name = ALIASES.get(cmd_name, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        root = self is ctx.find_root().command
        commands = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                aliases = [alias for alias, target in ALIASES.items() if target == name and root]
                commands.append((", ".join([name, *aliases]), command))
        limit = formatter.width - 6 - max((len(label) for label, _ in commands), default=0)
        rows = [(label, command.get_short_help_str(limit)) for label, command in commands]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        code = self._run(*args, **kwargs)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, *args, **kwargs) -> int:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
            if interrupts.deferred():
                # It came while a step that cannot stop half-way (down) ran to its end.
                raise click.Abort
            return result if isinstance(result, int) else 0
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help())  # `xdpfwd` or `xdpfwd lab` alone asks for help
            return 0
        except click.UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
            lines.error(e.format_message() + hint)
            return e.exit_code
        except click.ClickException as e:
            lines.error(e.format_message())
            return e.exit_code
        except (click.Abort, KeyboardInterrupt, _Interrupted):
            if interrupts.committed:
                lines.error("interrupted after the change was made; it stays (see `xdpfwd list`)")
            else:
                lines.error("interrupted; changes in progress were rolled back")
            return EXIT_INTERRUPTED
        except XdpfwdError as e:
            _traceback_if_debug()
            lines.error(str(e) + _AFTER_COMMIT * interrupts.committed)
            return e.exit_code
        except Exception as e:  # a bug: say so in one line, the traceback is behind -vv
            _traceback_if_debug()
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EIO):
                if not getattr(e, "bpf_call", None):
                    # Standard output full or failing (`> /dev/full`), as any output
                    # file. (A reader gone, EPIPE: click exits 1, without a message.)
                    after = _AFTER_COMMIT * interrupts.committed
                    lines.error(f"cannot write the output: {e.strerror}{after}")
                    return XdpfwdError.exit_code
            if isinstance(e, OSError) and getattr(e, "bpf_call", None):
                # The kernel refused a BPF call that nothing expected to fail.
                message = f"the kernel refused a BPF call ({e.strerror})"
                lines.error(message + _AFTER_COMMIT * interrupts.committed)
                return BpfError.exit_code
            if isinstance(e, NetlinkError):
                message = f"the kernel refused a netlink request ({e.strerror})"
                lines.error(message + _AFTER_COMMIT * interrupts.committed)
                return XdpfwdError.exit_code
            lines.error(f"unexpected {type(e).__name__}: {e} (run with -vv for the traceback)")
            return 1


# What a failure after the commit adds: the change itself is complete.
_AFTER_COMMIT = "; it came after the change was made, which stays (see `xdpfwd list`)"


def _traceback_if_debug() -> None:
    if log.isEnabledFor(logging.DEBUG):
        traceback.print_exc()


class _LogFormat(logging.Formatter):
    """A warning as every other warning line reads; the rest (-v) as xdpfwd's."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "warning: " if record.levelno == logging.WARNING else "xdpfwd: "
        return prefix + record.getMessage()


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=level, handlers=[handler], force=True)


@click.group(cls=XdpfwdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--pin-dir",
    envvar=PIN_DIR_ENV,
    default=DEFAULT_PIN_DIR,
    show_default=True,
    help="bpffs directory holding xdpfwd's pinned program and maps [env: XDPFWD_PIN_DIR].",
)
@click.option(
    "--netns",
    envvar="XDPFWD_NETNS",
    metavar="NAME",
    shell_complete=complete_netns,
    help="Work inside network namespace NAME (from `ip netns`), with pins of its own "
    "in PIN_DIR@NAME [env: XDPFWD_NETNS].",
)
@click.option("-v", "--verbose", count=True, help="More detail on stderr; -vv for debugging.")
@click.version_option(__version__, "--version")
@click.pass_context
def cli(ctx: click.Context, pin_dir: str, netns: str | None, verbose: int) -> None:
    """Forward frames port to port with XDP.

    State lives in the kernel and in bpffs pins under --pin-dir, so each call
    finds what earlier calls set up.
    """
    _setup_logging(verbose)
    try:
        pins = PinDir.parse(pin_dir)
        if netns is not None:
            netns_module.check_name(netns)
            pins = pins.for_netns(netns)
    except InputError as e:
        raise click.BadParameter(str(e), param_hint="--pin-dir/--netns") from None
    if netns is not None:
        # Devices, netlink and devmap entries resolve ifindexes in this namespace.
        try:
            netns_module.move(netns)
        except InputError as e:
            if netns_module.exists(netns) or not pins.exists():
                raise
            raise InputError(
                f"{e}; the pins xdpfwd had there stay in {pins.path}: "
                f"`{pins.command('down')}` removes them"
            ) from None
    ctx.obj = App(ops=ctx.obj or _Imported("xdpfwd.ops"), pins=pins, netns=netns)
    documents.json_context(pins.path, netns)


@cli.command(
    "help",
    epilog="\b\nExamples:\n  xdpfwd help\n  xdpfwd help add\n  xdpfwd help lab up\n",
)
@click.argument("command", nargs=-1, metavar="[COMMAND]...")
@click.pass_context
def help_cmd(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Show the help of xdpfwd, or of COMMAND (as COMMAND --help does)."""
    target, target_ctx = cli, ctx.find_root()
    if command == ("broadcast", "del"):
        command = ("broadcast",)  # `broadcast del` is broadcast's, which its help covers
    for name in command:
        found = target.get_command(target_ctx, name) if isinstance(target, click.Group) else None
        if found is None:
            raise click.UsageError(f"no such command: {' '.join(command)}", ctx.find_root())
        target_ctx = click.Context(found, info_name=found.name, parent=target_ctx)
        target = found
    click.echo(target.get_help(target_ctx))


@cli.command(
    epilog="""\b
Examples:
  xdpfwd add eth1 eth2                   # frames entering eth1 leave on eth2
  xdpfwd add eth1 eth2 --bidirectional   # and eth2 back to eth1
  xdpfwd add eth1 eth2 --on-miss drop    # eth1 drops frames once it has no entry
  xdpfwd add eth1 eth2 --mode generic    # skb mode, for drivers without native XDP
  xdpfwd add eth1 eth2 --src-mac egress --dst-mac 02:00:5e:00:53:01   # next hop
  xdpfwd add eth1 eth2 --egress-prog filter.c:drop_arp   # your egress program
  xdpfwd add eth1 eth2 eth3 eth4         # flows spread over three ports
  xdpfwd add eth1 eth2 eth3 --weights 2,1 --hash l4
"""
)
@click.argument("ingress", type=IfaceType())
@click.argument("egress", type=IfaceType(), nargs=-1, required=True)
@click.option("-b", "--bidirectional", is_flag=True, help="Also forward EGRESS to INGRESS.")
@table_option
@entry_options
@balance_options
@force_option
@click.pass_obj
def add(
    app: App,
    ingress,
    egress,
    bidirectional,
    table,
    value,
    mode,
    on_miss,
    no_egress,
    egress_prog,
    src_mac,
    dst_mac,
    hash_mode,
    weights,
    force,
) -> None:
    """Forward every frame that enters INGRESS out of EGRESS.

    Frames and bytes are counted per (ingress, egress) pair. An entry gets an egress
    program only when it does work: rewriting Ethernet addresses (--src-mac/--dst-mac)
    or yours (--egress-prog). Changing it on an existing entry swaps it atomically.

    With several EGRESS ports the entry is balanced: a hash of each frame's
    addresses picks one of 256 buckets, and each bucket one port, by --weights.
    Its buckets count frames per egress port with the built-in egress program
    (--no-egress: none, only the entry's total). `xdpfwd follow` moves the buckets
    of a port that goes down to the others.
    """
    check_balance(ingress, egress, bidirectional, hash_mode, weights)
    spec = egress_spec(no_egress, egress_prog, src_mac, dst_mac)
    options = dict(table=table, value=value, mode=mode, on_miss=on_miss, force=force)
    if len(egress) == 1 and not hash_mode and not weights:
        result = app.ops.add(
            app.pins, ingress, egress[0], bidirectional=bidirectional, egress_spec=spec, **options
        )
    else:
        result = app.ops.add_balanced(
            app.pins,
            ingress,
            list(egress),
            hash=hash_mode or "symmetric",
            weights=weights,
            egress_spec=spec,
            **options,
        )
    lines.add_result(result)


@cli.command(
    "del",
    epilog="""\b
Examples:
  xdpfwd del eth1      # stop forwarding what enters eth1
  xdpfwd del 17        # an entry whose device is gone, by ifindex
""",
)
@click.argument("ingress", type=IfaceType(allow_gone=True))
@click.pass_obj
def delete(app: App, ingress) -> None:
    """Remove the entry of INGRESS; detach from ports that no longer need xdpfwd."""
    lines.del_result(app.ops.delete(app.pins, ingress))


@cli.command(
    epilog="""\b
Examples:
  xdpfwd broadcast eth1 eth2 eth3 --exclude-ingress   # a hub of three ports
  xdpfwd broadcast eth4                    # one more member of group "default"
  xdpfwd broadcast eth5 eth6 --group cams  # a separate flood domain
  xdpfwd broadcast --all --exclude-ingress # every managed port floods to the others
  xdpfwd broadcast del eth4                # leave the group
""",
)
@click.argument("ifaces", nargs=-1, metavar="[del] [IFACE]...", shell_complete=complete_members)
@click.option(
    "--group", default=None, help="Group name [default: default].", shell_complete=complete_groups
)
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Every port xdpfwd manages joins (forwarding entries become membership).",
)
@click.option(
    "--exclude-ingress/--include-ingress",
    default=None,
    help="Never send a frame back out of the port it came in on [default: the group's "
    "setting; include for a new group].",
)
@table_option
@mode_option
@force_option
@click.pass_obj
def broadcast(app: App, ifaces, group, every, exclude_ingress, table, mode, force) -> None:
    """Flood every frame entering a member to all members of its group.

    IFACEs join the group (default "default"), which is created if needed; with
    --all, every port xdpfwd manages joins, forwarding ports included (their entries
    are removed). Each group is its own flood domain and a port is in one group at
    most, and does not also forward. `broadcast del IFACE...` takes members out; an
    emptied group is removed.
    """
    if ifaces[:1] == ("del",):
        if len(ifaces) < 2 or exclude_ingress is not None or table or force or every:
            raise click.UsageError("usage: xdpfwd broadcast del IFACE... [--group NAME]")
        members = _resolve_all(app, ifaces[1:], "IFACE", allow_gone=True)
        lines.broadcast_del_result(app.ops.broadcast_del(app.pins, members, group))
        return
    group = "default" if group is None else group  # "" is a bad name, not the default
    _check_every(ifaces, every, group)
    members = _resolve_all(app, ifaces, "IFACE") or None
    result = app.ops.broadcast(
        app.pins,
        members,
        group=group,
        exclude_ingress=exclude_ingress,
        table=table,
        mode=mode,
        force=force,
    )
    lines.broadcast_result(result)


@cli.group(
    epilog="""\b
Examples:
  xdpfwd multicast add 239.1.1.1 --from eth1 --to eth2 eth3   # a feed, fanned out
  xdpfwd multicast add ff3e::1:1 --to eth2 eth3 eth4 --exclude-ingress   # a bus
  xdpfwd multicast list
  xdpfwd multicast del 239.1.1.1 --to eth3
"""
)
def multicast() -> None:
    """Replicate frames by destination group address, from sources to receivers.

    GROUP is an IPv4 multicast address (224.0.0.0/4), an IPv6 one (ff00::/8) or a
    multicast MAC address. IP groups match the destination IP address, MAC groups
    the destination MAC. Frames to an address without a group, or entering a port
    that is no source of its group, take the port's usual path.
    """


@multicast.command(
    "add",
    cls=ListOptionsCommand,
    epilog="""\b
Examples:
  xdpfwd multicast add 239.1.1.1 --from eth1 --to eth2 eth3
  xdpfwd multicast add 239.1.1.1 --to eth4          # one more receiver
  xdpfwd multicast add 01:00:5e:00:00:fb --to eth1 eth2 eth3 --exclude-ingress
""",
)
@click.argument("group")
@ports_option("--to", "receivers", "Receivers: every copy leaves on each of them.")
@ports_option(
    "--from",
    "sources",
    "Sources: ports whose incoming frames to GROUP are copied [default: for a new "
    "group or a bus, the --to ports].",
)
@click.option(
    "--exclude-ingress/--include-ingress",
    default=None,
    help="Never send a copy back out of the port it came in on [default: the group's "
    "setting; include for a new group].",
)
@table_option
@mode_option
@force_option
@click.pass_obj
def mcast_add(app: App, group, receivers, sources, exclude_ingress, table, mode, force) -> None:
    """Copy frames to GROUP that enter a source to every receiver.

    Creates the group, or adds ports to an existing one. Without --from, a new
    group's --to ports are also its sources (a many-to-many bus), ports added to a
    bus join it as sources too, and ports added to another group only receive.
    Sources run xdpfwd's program; receivers need not. Changing a group compiles
    nothing and leaves other groups' traffic alone. A port may be a source of
    several groups, a receiver of others, and forward or flood as well.
    """
    if not receivers and not sources:
        raise click.UsageError("name receivers (--to IFACE...) or sources (--from IFACE...)")
    result = app.ops.multicast_add(
        app.pins,
        group,
        _resolve_all(app, receivers, "--to"),
        _resolve_all(app, sources, "--from") if sources else None,
        exclude_ingress=exclude_ingress,
        table=table,
        mode=mode,
        force=force,
    )
    lines.multicast_result(result)


@multicast.command(
    "del",
    cls=ListOptionsCommand,
    epilog="""\b
Examples:
  xdpfwd multicast del 239.1.1.1               # the whole group
  xdpfwd multicast del 239.1.1.1 --to eth3     # one receiver less
  xdpfwd multicast del 239.1.1.1 --from eth1   # one source less
""",
)
@click.argument("group")
@ports_option("--to", "receivers", "Receivers to take out.")
@ports_option("--from", "sources", "Sources to take out.")
@click.pass_obj
def mcast_del(app: App, group, receivers, sources) -> None:
    """Take receivers or sources out of GROUP; with neither, remove GROUP.

    A group left without receivers or sources is removed; ports that need xdpfwd
    no more are detached.
    """
    result = app.ops.multicast_del(
        app.pins,
        group,
        _resolve_all(app, receivers, "--to", allow_gone=True),
        _resolve_all(app, sources, "--from", allow_gone=True),
    )
    lines.multicast_del_result(result)


@multicast.command(
    "list",
    epilog="""\b
Examples:
  xdpfwd multicast list
  xdpfwd multicast list --json | jq '.groups[] | select(.copies_lost > 0)'
""",
)
@json_option
@click.pass_obj
def mcast_list(app: App, as_json: bool) -> None:
    """Show every multicast group: sources, receivers, frames in, copies out and lost."""
    tables.multicast_listing(app.ops.multicast_list(app.pins), as_json)


def _check_every(ifaces: tuple[str, ...], every: bool, group: str) -> None:
    """Turning every forwarding entry into membership is asked for, not assumed: --all,
    or a yes on a terminal."""
    if ifaces and every:
        raise click.UsageError("--all takes no IFACE")
    if ifaces or every:
        return
    question = (
        f"No IFACE: make every port xdpfwd manages a member of group {group}, turning "
        "forwarding entries into membership?"
    )
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise click.UsageError("name the interfaces to flood between, or --all for every port")
    try:
        yes = click.confirm(question, err=True)
    except click.Abort as e:
        if isinstance(e.__context__, KeyboardInterrupt):
            raise
        click.echo(err=True)  # end the prompt's line: no answer is no yes
        yes = False
    if not yes:
        raise XdpfwdError("nothing changed: the question was not answered yes")


def _resolve(app: App, name: str, allow_gone: bool = False):
    app.check_pin_dir()
    try:
        return app.ops.resolve(name, allow_gone=allow_gone)
    except InputError as e:
        raise click.BadParameter(str(e), param_hint="IFACE") from None


def _resolve_all(app: App, names, what: str, allow_gone: bool = False) -> list:
    """names resolved; a device named twice (also as a name and its ifindex) is a usage
    error, as add's EGRESS list says, where it was quietly taken once."""
    ports = [_resolve(app, name, allow_gone) for name in names]
    seen = set()
    for port in ports:
        device = port.ifindex or port.ifname  # a gone one (ifindex 0) by its name
        if device in seen:
            raise click.UsageError(f"{what}: {port.label} is named twice")
        seen.add(device)
    return ports


@cli.command(
    "list",
    epilog="""\b
Examples:
  xdpfwd list
  xdpfwd list --json | jq '.entries[] | select(.state != "ok")'
""",
)
@json_option
@click.pass_obj
def list_cmd(app: App, as_json: bool) -> None:
    """Show every port xdpfwd manages: entry, mode, state and frame counts."""
    tables.listing(app.ops.list_ports(app.pins), as_json)


@cli.command(
    epilog="""\b
Examples:
  xdpfwd stats                          # totals since the counters began
  xdpfwd stats --watch                  # live rates, every second
  xdpfwd stats -w --iface eth1 --sort rate
  xdpfwd stats -w --json --count 10     # ten JSON lines, one per second
  xdpfwd stats --format prometheus --output /var/lib/node_exporter/xdpfwd.prom
  xdpfwd stats --clear
"""
)
@watch_options
@format_option(["table", "json", "prometheus"], "table")
@json_option
@output_option("Write the json or prometheus output to FILE.")
@click.option("--clear", is_flag=True, help="Zero every counter first.")
@row_options
@click.pass_obj
def stats(app: App, watch, interval, count, fmt, as_json, output, clear, ifaces, sort) -> None:
    """Show per-port and per-pair counters, or watch their rates live.

    Ports count what entered them and what xdpfwd sent out of them; pairs count
    what went from one port to another. Every frame not forwarded has a reason,
    also the transmit failures the programs cannot see, which pinned tracepoint
    programs count (xdp:xdp_devmap_xmit, xdp_redirect_err) with or without --watch.
    """
    given = click.get_current_context().get_parameter_source("fmt")
    if as_json and fmt != "json" and given is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError(f"--json and --format {fmt} ask for two formats; give one")
    fmt = "json" if as_json else fmt
    if clear and ifaces:
        raise click.UsageError("--clear zeroes every port's counters; it takes no --iface")
    _check_stats_options(watch, interval, count, fmt, output)
    keep = _row_filter(app, ifaces)
    if clear:
        cleared = app.ops.stats_clear(app.pins)
        lines.note("counters cleared" if cleared else f"no xdpfwd state in {app.pins.path}")
    if watch:
        frames = app.ops.stats_watch(app.pins, interval, count)
        try:
            tables.watch(frames, app.pins.path, interval, fmt, sort, keep)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a watch ends
        finally:
            frames.close()
        return
    if clear and fmt == "table":
        return
    snapshot = app.ops.stats_read(app.pins)
    if snapshot is None and ifaces:  # (keep() needs a snapshot to find the ports in)
        raise XdpfwdError(f"{ifaces[0]} has no counters: no xdpfwd state in {app.pins.path}")
    kept = keep(snapshot) if snapshot else None
    if fmt == "table":
        tables.stats_table(kept, app.pins.path, sort)
        return
    text = documents.stats_text(kept, fmt)  # no rich import for a script's format
    if output:
        files.write_output(output, text)
    else:
        sys.stdout.write(text)


def _check_stats_options(watch, interval, count, fmt, output) -> None:
    ctx = click.get_current_context()
    defaulted = lambda name: ctx.get_parameter_source(name).name == "DEFAULT"  # noqa: E731
    if not watch and (count is not None or not defaulted("interval")):
        raise click.UsageError("--interval and --count apply to --watch")
    if watch and fmt == "prometheus":
        raise click.UsageError("--format prometheus is for one-shot stats")
    if watch and output:
        raise click.UsageError("--output is for one-shot stats")
    if output and fmt == "table":
        raise click.UsageError("--output needs --format json or prometheus")


def _row_filter(app: App, ifaces):
    if not ifaces:
        return lambda snapshot: snapshot
    from xdpfwd.model.counters import select  # only stats needs it: --help stays light

    wanted_list = [_resolve(app, name, allow_gone=True) for name in ifaces]
    wanted = set(wanted_list)
    gone = next((port.ifname for port in wanted if not port.ifindex), None)
    if gone is not None:  # stats has no record to bind it: only gone ifindexes
        raise click.BadParameter(f"no such interface: {gone}", param_hint="IFACE")

    first_read = True
    # A port named (not given by ifindex) is followed by its name: a device made again
    # under it, with a new ifindex, is still the one watched.
    given = zip(wanted_list, ifaces, strict=True)
    names = {port.ifname for port, text in given if port.ifname == text}

    def keep(snapshot):
        # An empty table would pass for a port that counted nothing. Checked on the first
        # read only: a watched port whose device goes and comes back must not end it.
        nonlocal first_read
        unknown = [p for p in wanted if p.ifindex not in snapshot.ports]
        if first_read and unknown:
            raise XdpfwdError(
                f"{unknown[0].label} has no counters: xdpfwd does not forward from or to it "
                f"(see `{app.pins.command('list')}`)"
            )
        first_read = False
        ifindexes = {port.ifindex for port in wanted}
        ifindexes |= {i for i, p in snapshot.ports.items() if p.port.ifname in names}
        return select(snapshot, ifindexes)

    return keep


@cli.command(
    epilog="""\b
Examples:
  xdpfwd doctor
  xdpfwd doctor --fix                   # veth peers: tx off on senders, gro on receivers
  xdpfwd doctor --json | jq '.checks[] | select(.status == "fail")'
"""
)
@json_option
@click.option("--no-compile", is_flag=True, help="Skip the test compile (about a second).")
@click.option(
    "--fix",
    is_flag=True,
    help="Fix what is a setting of a managed port's veth peer: TX checksum offload (or "
    "TSO/GSO in generic mode) off on senders, GRO on for receivers. Nothing else changes.",
)
@click.pass_obj
def doctor(app: App, as_json: bool, no_compile: bool, fix: bool) -> None:
    """Check the host, probe the kernel's XDP features, and the managed ports.

    Each check passes, warns or fails, with a one-line fix; --fix applies the fixes
    that are veth peer settings and reports them as fixed. Exits 1 if one fails.
    """
    checks = app.ops.check_host(app.pins, compile_test=not no_compile, fix=fix)
    tables.doctor_report(checks, as_json)
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        raise XdpfwdError(f"{len(failed)} check(s) failed: {', '.join(failed)}")


@cli.command(
    epilog="""\b
Examples:
  xdpfwd save > /etc/xdpfwd.yaml
  xdpfwd save --output /etc/xdpfwd.json     # JSON, by its name
"""
)
@output_option("Write to FILE instead of stdout.")
@format_option(
    ["yaml", "json"], None, help="File format: json for an output file named *.json, else yaml."
)
@click.pass_obj
def save(app: App, output, fmt) -> None:
    """Write the running configuration as a file `apply` restores it from.

    Forwarding entries with their egress settings, balanced entries, broadcast and
    multicast groups, each port's mode and on-miss verdict, the table type and value
    format.
    """
    if fmt is None:
        fmt = "json" if output and output.lower().endswith(".json") else "yaml"
    result = app.ops.save(app.pins, fmt)
    for message in result.warnings:
        lines.warning(message)
    if output:
        files.write_output(output, result.text)
    else:
        sys.stdout.write(result.text)


@cli.command(
    epilog="""\b
Examples:
  xdpfwd apply /etc/xdpfwd.yaml --dry-run   # what would change
  xdpfwd apply /etc/xdpfwd.yaml
  xdpfwd save | ssh peer xdpfwd apply -     # - is standard input
  systemctl enable xdpfwd                   # contrib/xdpfwd.service: apply at boot
"""
)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@force_option
@click.pass_obj
def apply(app: App, file: str, dry_run: bool, force: bool) -> None:
    """Make the running configuration what FILE says (YAML or JSON, as `save` writes;
    - reads standard input).

    Creates what is missing, changes what differs and removes what FILE does not
    have, in one change: on any error, or Ctrl-C, the old configuration stays. An
    invalid FILE is refused with its line and reason before anything changes.
    Applying the same FILE again changes nothing. Restores forwarding after a reboot.
    """
    lines.apply_result(app.ops.apply(app.pins, file, dry_run=dry_run, force=force))


@cli.command(epilog="\b\nExamples:\n  xdpfwd prune\n")
@click.pass_obj
def prune(app: App) -> None:
    """Bring the running state back to the configuration last asked for, once.

    Forgets what deleted devices left behind (shown as "device gone" by list),
    binds devices re-created under a name the configuration of the last add, del,
    broadcast or apply has, moves the buckets of balanced entries off egress ports
    that are down or gone (and back to those that returned), and detaches from idle
    ports. `xdpfwd follow` does the same on every link event.
    """
    lines.prune_result(app.ops.prune(app.pins))


@cli.command(
    epilog="""\b
Examples:
  xdpfwd follow                         # until Ctrl-C or SIGTERM
  xdpfwd -v follow                      # and every link event it sees
  systemctl enable --now xdpfwd-follow  # the unit `make install` installs
"""
)
@click.pass_obj
def follow(app: App) -> None:
    """Keep the running state right while devices come and go (foreground).

    Listens to link events and does what `prune` does shortly after each: an
    egress port of a balanced entry that goes down or is deleted has its buckets
    moved to the live ports, and back when it returns; a device re-created under a
    name the last add or apply knows is bound again. One line per action; -v adds
    the events. Nothing is kept only in its memory: it can be restarted any time.
    """
    actions = app.ops.follow(app.pins)
    try:
        lines.follow(actions)
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM is how it ends
    finally:
        actions.close()


@cli.command(epilog="\b\nExamples:\n  xdpfwd down\n")
@click.pass_obj
def down(app: App) -> None:
    """Detach xdpfwd from every interface and remove all its pins."""
    lines.down_result(app.ops.down(app.pins), app.pins.path)


@cli.command(epilog="\b\nExamples:\n  xdpfwd demo\n  xdpfwd demo --count 10 --mode generic\n")
@click.option(
    "--count",
    default=3,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Pings in each direction.",
)
@table_option
@mode_option
@click.pass_obj
def demo(app: App, count: int, table, mode) -> None:
    """Forward between two ports of a throwaway lab and ping across.

    Builds two veth ports with a host namespace behind each, forwards between
    them with XDP (own pin directory), pings both ways, prints what happened
    and removes everything.
    """
    report = app.ops.demo(app.pins, count=count, table=table, mode=mode)
    tables.demo_report(report)
    if not report.ok:
        raise XdpfwdError("the demo's pings did not all come back")


@cli.command(
    epilog="""\b
Examples:
  xdpfwd bench                          # 3 s per sample, 3 samples per row
  xdpfwd bench --cpus 2 --size 1500     # two generator CPUs, full-size frames
  xdpfwd bench --duration 1 --repeat 1 --json
  xdpfwd bench --row forward --row broadcast_4   # with the rows they compare with
  xdpfwd bench --row forward --profile  # the programs' nanoseconds per frame
"""
)
@bench_options
@json_option
@click.pass_obj
def bench(app: App, duration, size, repeat, cpus, flows, rows, profile, as_json) -> None:
    """Measure forwarding rates on a throwaway lab, as ratios to a baseline.

    Frames from an in-kernel generator cross lab port 1 to port 2 through, in
    turn: a minimal bpf_redirect_map() program (the baseline), xdpfwd, and a Linux
    bridge; and port 1 flooding, spreading over or replicating to 2 and 4 ports.
    Each row is compared with the strictest program doing the same job (a bare
    redirect, broadcast or spread), measured in the same run.
    """
    report = app.ops.bench(
        app.pins,
        duration=duration,
        size=size,
        repeat=repeat,
        cpus=cpus,
        flows=flows,
        rows=rows,
        profile=profile,
        progress=lines.note,
    )
    tables.bench_report(report, as_json)


@cli.group(
    epilog="""\b
Examples:
  xdpfwd lab up --ports 3        # xlab1..xlab3, hosts 198.18.0.1..3 behind them
  xdpfwd add xlab1 xlab2 -b
  ip netns exec xlab1 ping 198.18.0.2
  xdpfwd lab down
"""
)
def lab() -> None:
    """A throwaway lab of veth ports with a host namespace behind each."""


def _lab_name_option(fn):
    return click.option(
        "--name",
        default="xlab",
        show_default=True,
        help="Lab name: prefix of its ports and namespaces.",
    )(fn)


@lab.command(
    "up", epilog="\b\nExamples:\n  xdpfwd lab up\n  xdpfwd lab up --ports 4 --name bench\n"
)
@click.option("--ports", "nports", default=2, show_default=True, type=int, help="Number of ports.")
@_lab_name_option
@click.pass_obj
def lab_up(app: App, nports: int, name: str) -> None:
    """Create the lab's ports and host namespaces."""
    tables.lab_status(app.ops.lab_up(name, nports), name, as_json=False)


@lab.command("down", epilog="\b\nExamples:\n  xdpfwd lab down\n  xdpfwd lab down --name bench\n")
@_lab_name_option
@click.pass_obj
def lab_down(app: App, name: str) -> None:
    """Remove the lab's ports and namespaces."""
    removed = app.ops.lab_down(name)
    lines.note(f"removed {len(removed)} lab namespaces" if removed else f"no lab named {name}")


@lab.command("status", epilog="\b\nExamples:\n  xdpfwd lab status\n  xdpfwd lab status --json\n")
@_lab_name_option
@json_option
@click.pass_obj
def lab_status(app: App, name: str, as_json: bool) -> None:
    """Show the lab's ports, host namespaces and addresses."""
    tables.lab_status(app.ops.lab_status(name), name, as_json)


def main() -> None:
    if sys.stdout is None or sys.stderr is None:
        # Closed by the caller (`>&-`): what it did could not be said, so do nothing.
        if sys.stderr is not None:
            sys.stderr.write("error: standard output is closed; nothing done\n")
        sys.exit(InputError.exit_code)
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # closed (`<&-`): a question gets no answer
    # SIGTERM unwinds like Ctrl-C, so a mutating command rolls back before it exits.
    interrupts.install()
    if sys.stderr.isatty():
        progress.install(tables.spinner)
    cli(prog_name="xdpfwd")
