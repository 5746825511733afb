"""The pinned programs and maps of one pin directory: open them, or create them."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

from xdpfwd.errors import BpfError, InputError, PrereqError, XdpfwdError
from xdpfwd.kernel.bpf import loader, maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.state.pins import PinDir

log = logging.getLogger(__name__)

DEFAULT_TABLE = "devmap-hash"
_BASE_PINS = (
    maps.PIN_PROG_INGRESS,
    maps.PIN_FWD,
    maps.PIN_PORTS,
    maps.PIN_GROUPS,
    maps.PIN_PORT_STATS,
    maps.PIN_PORT_STATS + maps.PIN_HI_SUFFIX,
)
_BALANCE_PINS = (
    maps.PIN_BALANCE,
    maps.PIN_BALANCE + maps.PIN_HI_SUFFIX,
    maps.PIN_BUCKETS,
)
# Only tables of bpf_devmap_val entries have egress programs.
_EGRESS_PINS = (
    maps.PIN_PROG_EGRESS,
    maps.PIN_PROG_REWRITE,
    maps.PIN_PROG_GROUP,
    maps.PIN_ENTRY_STATS,
    maps.PIN_ENTRY_STATS + maps.PIN_HI_SUFFIX,
    maps.PIN_PAIR_STATS,
    maps.PIN_REWRITE,
    maps.PIN_USER_PROGS,
)
_PROG_PINS = {
    maps.PIN_PROG_INGRESS: loader.XDP_INGRESS_FUNC,
    maps.PIN_PROG_EGRESS: loader.XDP_EGRESS_FUNC,
    maps.PIN_PROG_REWRITE: loader.XDP_REWRITE_FUNC,
    maps.PIN_PROG_GROUP: loader.XDP_GROUP_FUNC,
    maps.PIN_PROG_MCAST: loader.XDP_MCAST_FUNC,
}
# Multicast groups: pin dirs made before them have none of these, and still work.
_MCAST_PINS = (
    maps.PIN_MCAST_SOURCES,
    maps.PIN_MCAST_GROUPS,
    maps.PIN_MCAST_STATS,
    maps.PIN_MCAST_PORT_STATS,
    maps.PIN_MCAST_PORT_STATS + maps.PIN_HI_SUFFIX,
)
_MCAST_EGRESS_PINS = (maps.PIN_MCAST_COPIES, maps.PIN_PROG_MCAST)
# Tables whose entries below STATS_SLOTS the programs read from slots (maps._Mirrored).
_MIRRORED = (
    (maps.ForwardTable, maps.PIN_FWD, maps.PIN_FWD_SLOTS),
    (maps.PortTable, maps.PIN_PORTS, maps.PIN_PORT_SLOTS),
    (maps.GroupsTable, maps.PIN_GROUPS, maps.PIN_GROUP_SLOTS),
)


# The kernel hands out a map held by a map of maps only by its id, and opening a map
# by id takes CAP_SYS_ADMIN: reading who receives a group needs it.
NEEDS_SYS_ADMIN = (
    "reading the receivers of multicast groups needs CAP_SYS_ADMIN (the kernel opens a "
    "group's devmap by id only for it): run as root (sudo), see CAPABILITIES in xdpfwd(8)"
)


def devmap_members(devmap_id: int | None) -> tuple[list[int], int]:
    """The ports of a multicast group's devmap, and its size. Raises PrereqError
    without CAP_SYS_ADMIN."""
    if devmap_id is None:
        return [], 0
    try:
        devmap = maps.open_by_id(maps.GroupMap, devmap_id)
    except OSError as e:
        if e.errno != errno.EPERM:
            raise
        raise PrereqError(NEEDS_SYS_ADMIN) from None
    try:
        return list(devmap.members()), devmap.info.max_entries
    finally:
        devmap.close()


@dataclass
class Multicast:
    """The multicast maps of a pin directory (see state/multicast.py)."""

    sources: maps.McastSourceTable
    groups: maps.McastGroupsTable
    stats: maps.McastStatsTable
    port_stats: maps.SlottedStats  # per source port: frames replicated (McastPortStats)
    copies: maps.McastCopiesTable | None  # None: plain ifindex entries count no copies
    prog_fd: int = 0  # the receivers' egress program (0: none)
    ports: maps.McastPortsTable | None = None  # None: pins made before source marks

    def source_ports(self) -> set[int]:
        return {port for port, _ in self.sources.items()}

    def receivers(self) -> set[int]:
        """The ports some group's copies go to. Raises PrereqError (devmap_members)."""
        slots = {entry.slot for entry in self.sources.items().values()}
        return {p for slot in slots for p in devmap_members(self.groups.devmap_id(slot))[0]}


@dataclass(frozen=True)
class Layout:
    """How the forwarding table of a pin directory is (or will be) built."""

    table: str  # devmap-hash or devmap
    value_format: str  # devmap-val or ifindex

    @property
    def value_size(self) -> int:
        return maps.VALUE_FORMATS[self.value_format]

    @property
    def has_egress(self) -> bool:
        return self.value_format == "devmap-val"


class BrokenState(XdpfwdError):
    """Part of the pinned state is missing (removed by hand): `apply` rebuilds it."""


class Dataplane:
    """Open fds on the pinned objects; close() releases them (the pins stay)."""

    def __init__(self, pins: PinDir):
        self.pins = pins
        self._fds = ExitStack()
        impostors = pins.impostors()
        if impostors:
            raise InputError(
                f"--pin-dir {pins.path}: {', '.join(impostors)} is pinned under a name of "
                "xdpfwd's but is not xdpfwd's; remove it, or choose another --pin-dir"
            )
        try:
            self.prog_fd, self.prog_id = self._open_prog(maps.PIN_PROG_INGRESS)
            self.fwd = self._open(maps.ForwardTable, maps.PIN_FWD)
            self.ports = self._open(maps.PortTable, maps.PIN_PORTS)
            # The tail: the copies its floods should have made (flood_copies).
            self.stats = self._open_stats(maps.PIN_PORT_STATS, maps.PortStats, tail=1)
            self.layout = Layout(self.fwd.table_type, self.fwd.value_format)
            self.groups = self._open(maps.GroupsTable, maps.PIN_GROUPS)
            names = pins.names()
            tables = {
                maps.PIN_FWD: self.fwd,
                maps.PIN_PORTS: self.ports,
                maps.PIN_GROUPS: self.groups,
            }
            for _, name, slots in _MIRRORED:
                if slots in names:
                    tables[name].mirror(self._open(maps.PinnedMap, slots))
            recorded = maps.read_prog_flags(pins.pin(maps.PIN_PROG_FLAGS))
            # No record: made before xdpfwd loaded multi-buffer programs (flags 0).
            self.prog_flags = recorded or 0
            self.flags_recorded = recorded is not None
            self.entry_base: maps.EntryBaseTable | None = None
            if maps.PIN_ENTRY_BASE in names:
                self.entry_base = self._open(maps.EntryBaseTable, maps.PIN_ENTRY_BASE)
            self.retired: maps.RetiredTable | None = None
            if maps.PIN_RETIRED in names:
                self.retired = self._open(maps.RetiredTable, maps.PIN_RETIRED)
            self.tx_events: maps.TxEventsTable | None = None
            if maps.PIN_TX_EVENTS in names:
                self.tx_events = self._open(maps.TxEventsTable, maps.PIN_TX_EVENTS)
            self.egress_fd = self.egress_id = self.rewrite_fd = self.rewrite_id = 0
            self.group_prog_fd = self.group_prog_id = 0
            self.egress_stats: maps.SlottedStats | None = None
            self.pairs: maps.PairStatsTable | None = None
            self.rewrites: maps.RewriteTable | None = None
            self.user_progs: maps.UserProgTable | None = None
            self._invalid: maps.InvalidVerdictTable | None = None
            if self.layout.has_egress:
                self.egress_fd, self.egress_id = self._open_prog(maps.PIN_PROG_EGRESS)
                self.rewrite_fd, self.rewrite_id = self._open_prog(maps.PIN_PROG_REWRITE)
                self.group_prog_fd, self.group_prog_id = self._open_prog(maps.PIN_PROG_GROUP)
                self.egress_stats = self._open_stats(maps.PIN_ENTRY_STATS, maps.EgressStats)
                self.rewrites = self._open(maps.RewriteTable, maps.PIN_REWRITE)
                self.user_progs = self._open(maps.UserProgTable, maps.PIN_USER_PROGS)
            # Pairs: counted by the tracepoint programs (broadcast copies), which
            # make the map in pin dirs of plain ifindex entries, and by the built-in
            # egress programs (balanced entries).
            if maps.PIN_PAIR_STATS in names:
                self.pairs = self._open(maps.PairStatsTable, maps.PIN_PAIR_STATS)
            # Balanced entries: absent from pins set up before xdpfwd had them.
            self.balance: maps.BalanceTable | None = None
            self.buckets: maps.BucketTable | None = None
            if maps.PIN_BALANCE in pins.known_names():
                self.balance = self._open(maps.BalanceTable, maps.PIN_BALANCE)
                self.buckets = self._open(maps.BucketTable, maps.PIN_BUCKETS)
            self.mcast = self._open_mcast() if maps.PIN_MCAST_SOURCES in names else None
        except BaseException:
            self._fds.close()
            raise

    def _open_prog(self, name: str) -> tuple[int, int]:
        fd = sc.obj_get(self.pins.pin(name))
        self._fds.callback(os.close, fd)
        return fd, sc.prog_info(fd).id

    def _open(self, cls, name):
        pinned = cls(self.pins.pin(name))
        self._fds.callback(pinned.close)
        return pinned

    def _open_mcast(self) -> Multicast:
        egress = self.layout.has_egress
        return Multicast(
            self._open(maps.McastSourceTable, maps.PIN_MCAST_SOURCES),
            self._open(maps.McastGroupsTable, maps.PIN_MCAST_GROUPS),
            self._open(maps.McastStatsTable, maps.PIN_MCAST_STATS),
            self._open_stats(maps.PIN_MCAST_PORT_STATS, maps.McastPortStats),
            self._open(maps.McastCopiesTable, maps.PIN_MCAST_COPIES) if egress else None,
            self._open_prog(maps.PIN_PROG_MCAST)[0] if egress else 0,
            self._open(maps.McastPortsTable, maps.PIN_MCAST_PORTS)
            if maps.PIN_MCAST_PORTS in self.pins.names()
            else None,
        )

    def _open_stats(self, name: str, cls: type, tail: int = 0) -> maps.SlottedStats:
        stats = maps.SlottedStats(self.pins.pin(name), cls, tail)
        self._fds.callback(stats.close)
        return stats

    def close(self) -> None:
        self._fds.close()

    @property
    def frags(self) -> bool:
        """The pin dir's XDP programs handle multi-buffer frames (and must: they share
        devmaps, and so do the egress programs added later)."""
        return bool(self.prog_flags & sc.BPF_F_XDP_HAS_FRAGS)

    def forget_events(self, ingress: int) -> None:
        """Drop what the tracepoints counted for frames that entered ingress (a port
        new to xdpfwd, or one it forgets, starts from zero as its counters do)."""
        if self.tx_events is not None:
            for pair in self.tx_events.pairs():
                if pair[0] == ingress:
                    self.tx_events.forget(*pair)

    def invalid_verdicts(self) -> maps.InvalidVerdictTable | None:
        """The counts of user egress programs' invalid verdicts; None until the first
        user program compiled in this pin dir created them."""
        if self._invalid is None and self.layout.has_egress:
            try:
                self._invalid = self._open(maps.InvalidVerdictTable, maps.PIN_ENTRY_INVALID)
            except FileNotFoundError:
                return None
        return self._invalid

    def forget_invalid(self, ingress: int) -> None:
        """Drop an entry's invalid-verdict count (its program or pair is gone)."""
        invalid = self.invalid_verdicts()
        if invalid is not None:
            invalid.delete(ingress)

    def forget_entry_base(self, ingress: int) -> None:
        """Drop where ingress's entry began counting (the entry or the port is gone)."""
        if self.entry_base is not None:
            self.entry_base.delete(ingress)

    def group_names(self) -> list[str]:
        """The groups pinned here; not a swap pin a crash left (groups.py names those
        with a leading '_', which no group name has), nor what another tool put in the
        directory."""
        try:
            names = os.listdir(self.pins.pin(maps.PIN_GROUP_DIR))
        except (FileNotFoundError, NotADirectoryError):  # (another tool's pin)
            return []
        return sorted(n for n in names if not n.startswith("_") and self.pins.holds_group(n))

    def foreign_at(self, group: str) -> str | None:
        """What another tool put where group's pins go (the groups' directory, the
        group's pin, the swap pin groups.py renames over it), by its path; or None."""
        directory = self.pins.pin(maps.PIN_GROUP_DIR)
        if os.path.lexists(directory) and not os.path.isdir(directory):
            return directory
        for name in (group, f"_{group}"):
            path = self.group_path(name)
            if os.path.lexists(path) and not self.pins.holds_group(name):
                return path
        return None

    def group_path(self, name: str) -> str:
        return os.path.join(self.pins.pin(maps.PIN_GROUP_DIR), name)

    def open_group(self, name: str) -> maps.GroupMap:
        """The pinned devmap of a group (closed with the dataplane)."""
        return self._open(maps.GroupMap, os.path.join(maps.PIN_GROUP_DIR, name))

    def unpinned_members(self) -> list[int]:
        """Ports that flood through a group devmap that no pinned group lists them in:
        its pin was removed by hand, or a change stopped half way."""
        flooding = self.groups.ifindexes()
        if not flooding:
            return []
        pinned = {m for name in self.group_names() for m in self.open_group(name).members()}
        return sorted(set(flooding) - pinned)

    def remove_empty_groups(self) -> list[str]:
        """Unpin the groups left without members; return their names."""
        emptied = [name for name in self.group_names() if not self.open_group(name).members()]
        for name in emptied:
            os.unlink(self.group_path(name))
        return emptied

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def open(cls, pins: PinDir) -> Dataplane | None:
        """The pinned state, or None when nothing is set up in pins.

        Raises XdpfwdError when only part of it is pinned.
        """
        present = pins.known_names()
        if not present:
            return None
        required = list(_BASE_PINS)
        if maps.PIN_FWD in present and existing_layout(pins).has_egress:
            required += _EGRESS_PINS
        if maps.PIN_BALANCE in present:  # pins made since xdpfwd had balanced entries
            required += _BALANCE_PINS
        if present & set(_MCAST_PINS):
            required += _MCAST_PINS
            if maps.PIN_FWD in present and existing_layout(pins).has_egress:
                required += _MCAST_EGRESS_PINS
        missing = [name for name in required if name not in present]
        if missing:
            raise BrokenState(
                f"pinned state in {pins.path} is incomplete (missing {', '.join(missing)}); "
                f"run `{pins.command('down')}` and set it up again"
            )
        try:
            return cls(pins)
        except OSError as e:
            raise BpfError(f"opening the pins in {pins.path} failed: {e.strerror}") from e


def hold_program(resources: ExitStack, prog_id: int) -> int:
    """An fd on the program prog_id (0 for none), closed with resources. A program
    lives only while something holds it: a map entry about to be replaced or removed
    must not take the program its undo would put back with it."""
    if not prog_id:
        return 0
    fd = sc.prog_fd_by_id(prog_id)
    resources.callback(os.close, fd)
    return fd


@contextmanager
def reading(pins: PinDir) -> Iterator[Dataplane | None]:
    """The dataplane for reading (None when nothing is set up), under a shared lock
    so that no writer is half-way through a change meanwhile."""
    with _opened(pins, shared=True) as dp:
        yield dp


@contextmanager
def writing(pins: PinDir) -> Iterator[Dataplane | None]:
    """The dataplane for changing what exists (None when nothing is set up), under the
    exclusive lock. Changes that may create pins go through transaction.change()."""
    with _opened(pins, shared=False) as dp:
        yield dp


@contextmanager
def _opened(pins: PinDir, shared: bool) -> Iterator[Dataplane | None]:
    with pins.locked(create=False, shared=shared):
        survey = pins.check_owned()
        pins.check_netns()
        dp = Dataplane.open(pins)
        if dp is not None and not shared and not survey.marked:
            # Made by a version without the marker: mark it now, if this process can
            # create a map (stats --clear needs no capability; the directory stays
            # xdpfwd's by its contents meanwhile).
            with suppress(PrereqError):
                pins.claim()
        if dp is None:
            yield None
            return
        with dp:
            yield dp


def existing_layout(pins: PinDir) -> Layout:
    fd = sc.obj_get(pins.pin(maps.PIN_FWD))
    try:
        info = sc.map_info(fd)
        return Layout(maps.table_type_name(info.map_type), maps.value_format_name(info.value_size))
    except ValueError as e:
        raise BpfError(f"{pins.pin(maps.PIN_FWD)} is not an xdpfwd forwarding table: {e}") from e
    finally:
        os.close(fd)


def planned_layout(pins: PinDir, table: str | None, value_format: str | None) -> Layout:
    """The layout an add will use: the existing one, or the one asked for.

    Without a value format, a new table holds bpf_devmap_val entries when the kernel
    supports them. Raises XdpfwdError when a choice conflicts with the existing table.
    """
    if maps.PIN_FWD not in pins.names():
        if value_format is None:
            value_format = "devmap-val" if maps.devmap_val_supported() else "ifindex"
            if value_format == "ifindex":
                log.warning("this kernel has no bpf_devmap_val entries: using plain ifindexes")
        return Layout(table or DEFAULT_TABLE, value_format)
    existing = existing_layout(pins)
    # Named as both option and file key: a command or a file may ask for it.
    for asked, have, what in (
        (table, existing.table, "table type: --table, or table: in a file"),
        (value_format, existing.value_format, "value format: --value, or value: in a file"),
    ):
        if asked is not None and asked != have:
            raise XdpfwdError(
                f"the forwarding table in {pins.path} holds {have} (its {what}); it cannot "
                f"change to {asked} while it exists (`{pins.command('down')}` removes it)"
            )
    return existing


def prog_flags_for_new_programs() -> int:
    """The prog_flags of a new pin dir's programs: multi-buffer when the kernel can."""
    return loader.xdp_prog_flags(sc.frags_supported())


def ensure_pinned(pins: PinDir, layout: Layout, rollback: ExitStack) -> bool:
    """Create whatever is not pinned yet; return True when the programs were compiled.

    One decision per pin dir: its XDP programs are all loaded with the prog_flags
    recorded before the first of them (a devmap keeps the flags of the first program
    that uses it and refuses others). Pins created here are removed by rollback.
    Raises PrereqError or BpfError.
    """
    present = pins.names()
    compiling = maps.PIN_PROG_INGRESS not in present
    if compiling and pins.known_names() - {maps.PIN_OWNER, maps.PIN_NETNS, maps.PIN_PROG_FLAGS}:
        # A first change killed half way, or the program's pin removed by hand: what
        # is pinned cannot be completed here (apply rebuilds it).
        Dataplane.open(pins)  # raises BrokenState, naming what is missing
    try:
        if compiling and maps.PIN_PROG_FLAGS not in present:
            path = pins.pin(maps.PIN_PROG_FLAGS)
            maps.create_pinned_prog_flags(path, prog_flags_for_new_programs())
            rollback.callback(os.unlink, path)
        if maps.PIN_FWD not in present and layout.table == "devmap-hash":
            maps.create_pinned_devmap_hash(pins.pin(maps.PIN_FWD), value_size=layout.value_size)
            rollback.callback(os.unlink, pins.pin(maps.PIN_FWD))
        if maps.PIN_GROUPS not in present:
            path = pins.pin(maps.PIN_GROUPS)
            maps.create_pinned_groups_table(path, layout.table, layout.value_size)
            rollback.callback(os.unlink, path)
        # Also for a pin dir an older xdpfwd made: its next change creates it.
        if maps.PIN_ENTRY_BASE not in present:
            maps.create_pinned_entry_base(pins.pin(maps.PIN_ENTRY_BASE))
            rollback.callback(os.unlink, pins.pin(maps.PIN_ENTRY_BASE))
        if maps.PIN_RETIRED not in present:
            maps.create_pinned_retired(pins.pin(maps.PIN_RETIRED))
            rollback.callback(os.unlink, pins.pin(maps.PIN_RETIRED))
        if maps.PIN_USER_PROGS not in present and layout.has_egress:
            maps.create_pinned_user_progs(pins.pin(maps.PIN_USER_PROGS))
            rollback.callback(os.unlink, pins.pin(maps.PIN_USER_PROGS))
    except OSError as e:
        raise BpfError(f"creating xdpfwd's maps failed: {e.strerror}") from e
    if not compiling:
        return False
    try:
        # The configuration asked for is recorded from the start of a new pin dir
        # (pins of an older xdpfwd get it with their next apply).
        if maps.PIN_FWD not in present and maps.PIN_INTENT not in present:
            maps.create_pinned_intent(pins.pin(maps.PIN_INTENT))
            rollback.callback(os.unlink, pins.pin(maps.PIN_INTENT))
        if maps.PIN_BUCKETS not in present:
            maps.create_pinned_devmap_hash(
                pins.pin(maps.PIN_BUCKETS),
                "xdpfwd_buckets",
                layout.value_size,
                maps.BUCKETS_MAX_ENTRIES,
            )
            rollback.callback(os.unlink, pins.pin(maps.PIN_BUCKETS))
    except OSError as e:
        raise BpfError(f"creating xdpfwd's maps failed: {e.strerror}") from e
    try:
        for name in maps.create_pinned_slots(pins.path, layout.table, layout.value_size):
            rollback.callback(os.unlink, pins.pin(name))
        _copy_to_slots(pins)
    except OSError as e:
        raise BpfError(f"creating xdpfwd's slot maps failed: {e.strerror}") from e
    recorded = maps.read_prog_flags(pins.pin(maps.PIN_PROG_FLAGS)) or 0
    frags = bool(recorded & sc.BPF_F_XDP_HAS_FRAGS)
    # Whatever BCC pins (the maps it creates) belongs to this call until it succeeds.
    rollback.callback(_unpin_new, pins, pins.known_names())
    try:
        maps.create_pinned_mcast_maps(pins.path, layout.table, layout.value_size)
    except OSError as e:
        raise BpfError(f"creating xdpfwd's multicast maps failed: {e.strerror}") from e
    fds = loader.compile_ingress(pins.path, layout.value_size, frags)
    try:
        for pin, func in _PROG_PINS.items():
            if func in fds:
                sc.obj_pin(fds[func], pins.pin(pin))
    except OSError as e:
        raise BpfError(f"pinning the programs in {pins.path} failed: {e.strerror}") from e
    finally:
        for fd in fds.values():
            os.close(fd)
    log.info(
        "compiled and pinned xdpfwd's programs in %s (%s)",
        pins.path,
        "multi-buffer" if frags else "single-buffer",
    )
    return True


def _copy_to_slots(pins: PinDir) -> None:
    """Copy what the tables hold into their new slots: the program about to be
    compiled reads the slots (tables pinned before, their program pin removed)."""
    present = pins.names()
    with ExitStack() as opened:
        for cls, name, slots in _MIRRORED:
            if name in present:
                table = cls(pins.pin(name))
                opened.callback(table.close)
                table.mirror(maps.PinnedMap(pins.pin(slots)))
                opened.callback(table.slots.close)
                table.copy_to_slots()


def _unpin_new(pins: PinDir, keep: set[str]) -> None:
    for name in pins.known_names() - keep:
        os.unlink(pins.pin(name))
