"""The pinned ingress program and maps of one pin directory: open them, or create them."""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack

from .bpf import loader, maps
from .bpf import syscall as sc
from .errors import BpfError, XdpfwdError
from .pins import PinDir

log = logging.getLogger(__name__)

DEFAULT_TABLE = "devmap-hash"
_REQUIRED_PINS = (
    maps.PIN_PROG_INGRESS,
    maps.PIN_FWD,
    maps.PIN_PORTS,
    maps.PIN_PORT_STATS,
    maps.PIN_PORT_STATS_HI,
)


class Dataplane:
    """Open fds on the pinned objects; close() releases them (the pins stay)."""

    def __init__(self, pins: PinDir):
        self.pins = pins
        self._fds = ExitStack()
        try:
            self.prog_fd = sc.obj_get(pins.pin(maps.PIN_PROG_INGRESS))
            self._fds.callback(os.close, self.prog_fd)
            self.prog_id = sc.prog_info(self.prog_fd).id
            self.fwd = self._open(maps.ForwardTable, maps.PIN_FWD)
            self.ports = self._open(maps.PortTable, maps.PIN_PORTS)
            self.stats = maps.PortStatsTable(
                pins.pin(maps.PIN_PORT_STATS), pins.pin(maps.PIN_PORT_STATS_HI)
            )
            self._fds.callback(self.stats.close)
        except BaseException:
            self._fds.close()
            raise

    def _open(self, cls, name):
        pinned = cls(self.pins.pin(name))
        self._fds.callback(pinned.close)
        return pinned

    def close(self) -> None:
        self._fds.close()

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def open(cls, pins: PinDir) -> Dataplane | None:
        """The pinned state, or None when nothing is set up in pins.

        Raises XdpfwdError when only part of it is pinned.
        """
        present = pins.names()
        if not present:
            return None
        missing = [name for name in _REQUIRED_PINS if name not in present]
        if missing:
            raise XdpfwdError(
                f"pinned state in {pins.path} is incomplete (missing {', '.join(missing)}); "
                "run `xdpfwd down` and set it up again"
            )
        try:
            return cls(pins)
        except OSError as e:
            raise BpfError(f"opening the pins in {pins.path} failed: {e.strerror}") from e


def planned_table(pins: PinDir, table: str | None) -> str:
    """The forwarding table type an add will use; raises XdpfwdError on a conflict."""
    if maps.PIN_FWD not in pins.names():
        return table or DEFAULT_TABLE
    existing = existing_table_type(pins)
    if table is not None and table != existing:
        raise XdpfwdError(
            f"the forwarding table in {pins.path} is a {existing}; it cannot change "
            f"to {table} while it exists (`xdpfwd down` removes it)"
        )
    return existing


def ensure_pinned(pins: PinDir, table: str, rollback: ExitStack) -> bool:
    """Create whatever is not pinned yet; return True when the program was compiled.

    Pins created here are removed by rollback. Raises PrereqError or BpfError.
    """
    present = pins.names()
    if maps.PIN_FWD not in present and table == "devmap-hash":
        try:
            maps.create_pinned_devmap_hash(pins.pin(maps.PIN_FWD))
        except OSError as e:
            raise BpfError(f"creating the forwarding table failed: {e.strerror}") from e
        rollback.callback(os.unlink, pins.pin(maps.PIN_FWD))
    if maps.PIN_PROG_INGRESS in present:
        return False
    # Whatever BCC pins (the maps it creates) belongs to this call until it succeeds.
    rollback.callback(_unpin_new, pins, pins.names())
    prog_fd = loader.compile_ingress(pins.path)
    try:
        sc.obj_pin(prog_fd, pins.pin(maps.PIN_PROG_INGRESS))
    except OSError as e:
        raise BpfError(f"pinning the program in {pins.path} failed: {e.strerror}") from e
    finally:
        os.close(prog_fd)
    log.info("compiled and pinned the ingress program in %s", pins.path)
    return True


def existing_table_type(pins: PinDir) -> str:
    fd = sc.obj_get(pins.pin(maps.PIN_FWD))
    try:
        return maps.table_type_name(sc.map_info(fd).map_type)
    except ValueError as e:
        raise BpfError(f"{pins.pin(maps.PIN_FWD)} is not a devmap: {e}") from e
    finally:
        os.close(fd)


def _unpin_new(pins: PinDir, keep: set[str]) -> None:
    for name in pins.names() - keep:
        os.unlink(pins.pin(name))
