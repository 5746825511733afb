"""Reports of the commands that are not about one port: doctor, save/apply, lab, demo,
bench. Plain data; the renderers show them."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from xdpfwd.model import AddResult, Iface, Listing


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass, warn, fail or skip
    detail: str
    fix: str = ""
    port: Iface | None = None  # the port it is about
    kind: str = ""  # its stable machine key, when the name's words are not one

    @property
    def key(self) -> str:
        return self.kind or re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")

    def as_dict(self) -> dict:
        return {
            "id": self.key,
            "check": self.name,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix or None,
            "port": self.port.as_dict() if self.port else None,
        }


@dataclass(frozen=True)
class SaveResult:
    text: str
    warnings: list[str]


@dataclass(frozen=True)
class ApplyResult:
    steps: list[str]
    dry_run: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabPort:
    port: str  # veth end in the current namespace: the port xdpfwd manages
    netns: str  # the host's namespace
    host_dev: str  # veth end inside the host's namespace
    address: str  # host address, CIDR
    ifindex: int | None = None  # of port, when read back from the kernel

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    def as_dict(self) -> dict:
        return {
            "port": {"ifname": self.port, "ifindex": self.ifindex},
            "host_netns": self.netns,
            "host_dev": self.host_dev,
            "address": self.address,
        }


@dataclass(frozen=True)
class Lab:
    prefix: str
    ports: list[LabPort]

    def as_dict(self) -> dict:
        return {"name": self.prefix, "ports": [p.as_dict() for p in self.ports]}


@dataclass(frozen=True)
class PingResult:
    source: LabPort
    target: LabPort
    sent: int
    received: int


@dataclass(frozen=True)
class DemoReport:
    lab: Lab
    added: AddResult
    pings: list[PingResult]
    listing: Listing

    @property
    def ok(self) -> bool:
        return all(p.received == p.sent > 0 for p in self.pings)


@dataclass(frozen=True)
class ProgramCost:
    """What one program cost a row, per frame the row delivered."""

    name: str
    runs_per_frame: float
    ns_per_run: float

    @property
    def ns_per_frame(self) -> float:
        return self.runs_per_frame * self.ns_per_run

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "runs_per_frame": self.runs_per_frame,
            "ns_per_run": self.ns_per_run,
            "ns_per_frame": self.ns_per_frame,
        }


@dataclass(frozen=True)
class RowProfile:
    """Where a row's CPU time went (`bench --profile`): the generator CPUs' time per
    frame delivered (the sample's length times their number: the generator keeps
    them busy), and the run's programs that ran, by the kernel's run statistics.
    What is left of the frame's time is the kernel's own work (the redirects, the
    drivers, the dispatch of each program), and anything else those CPUs ran."""

    cpu_ns_per_frame: float
    programs: list[ProgramCost]

    def as_dict(self) -> dict:
        return {
            "cpu_ns_per_frame": self.cpu_ns_per_frame,
            "programs": [p.as_dict() for p in self.programs],
        }


@dataclass(frozen=True)
class BenchRow:
    key: str  # a stable machine key (--json)
    name: str
    unit: str  # "Mpps" (higher is better) or "s" (lower is better)
    samples: list[float]
    reference: str | None = None  # the key of the row this one is compared with
    reference_samples: list[float] | None = None  # its samples, repeat by repeat
    profile: RowProfile | None = None  # with --profile, for rates

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def ratio(self) -> float | None:
        """Median over repeats of sample / the reference's sample of the same repeat.

        Paired samples were taken seconds apart, so the ratio shrugs off the drift a
        shared machine shows over a run, which a ratio of medians does not.
        """
        if not self.reference_samples:
            return None
        pairs = zip(self.samples, self.reference_samples, strict=True)
        return statistics.median(mine / theirs for mine, theirs in pairs)

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "samples": self.samples,
            "ratio": self.ratio,
            "ratio_to": self.reference,
            "profile": self.profile.as_dict() if self.profile else None,
        }


@dataclass(frozen=True)
class BenchReport:
    settings: dict
    machine: dict
    rows: list[BenchRow] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "settings": self.settings,
            "machine": self.machine,
            "rows": [row.as_dict() for row in self.rows],
        }


BASELINE = "baseline"  # the key of the row the others are compared with
