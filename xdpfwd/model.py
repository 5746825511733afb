"""Plain results that the operations return and the renderers show."""

from __future__ import annotations

from dataclasses import dataclass, field

from .bpf.maps import PortStats


@dataclass(frozen=True)
class Iface:
    """An interface as xdpfwd knows it; ifname is None when the device is gone."""

    ifindex: int
    ifname: str | None

    @property
    def label(self) -> str:
        return self.ifname if self.ifname else f"ifindex {self.ifindex}"

    def as_dict(self) -> dict:
        return {"ifname": self.ifname, "ifindex": self.ifindex}


@dataclass(frozen=True)
class Attachment:
    port: Iface
    mode: str  # native or generic
    changed: bool  # False when xdpfwd's program was already there


@dataclass(frozen=True)
class AddResult:
    entries: list[tuple[Iface, Iface]]
    attachments: list[Attachment]
    table: str
    prog_id: int
    compiled: bool
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DelResult:
    removed: Iface
    egress: Iface
    detached: list[Iface]


@dataclass(frozen=True)
class DownResult:
    detached: list[Iface]
    removed_pins: bool


# States of a row in `xdpfwd list`.
STATE_OK = "ok"
STATE_DEVICE_GONE = "device gone"
STATE_NOT_ATTACHED = "program not attached"
STATE_NO_ENTRY = "no entry"


@dataclass(frozen=True)
class PortRow:
    """One port running (or meant to run) the ingress program, with its entry if any."""

    ingress: Iface
    egress: Iface | None
    table: str
    mode: str | None
    on_miss: str
    state: str
    counters: PortStats

    def as_dict(self) -> dict:
        return {
            "ingress": self.ingress.as_dict(),
            "egress": self.egress.as_dict() if self.egress else None,
            "table": self.table,
            "mode": self.mode,
            "on_miss": self.on_miss,
            "state": self.state,
            "counters": self.counters.as_dict(),
        }


@dataclass(frozen=True)
class Listing:
    pin_dir: str
    table: str | None
    prog_id: int | None
    rows: list[PortRow]

    def as_dict(self) -> dict:
        return {
            "pin_dir": self.pin_dir,
            "table": self.table,
            "prog_id": self.prog_id,
            "entries": [row.as_dict() for row in self.rows],
        }
