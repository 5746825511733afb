"""`xdpfwd demo`: forward between two ports of a throwaway lab, ping across, tear down."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import lab, ops
from .model import AddResult, Listing
from .pins import PinDir


@dataclass(frozen=True)
class DemoReport:
    lab: lab.Lab
    added: AddResult
    pings: list[lab.PingResult]
    listing: Listing

    @property
    def ok(self) -> bool:
        return all(p.received == p.sent > 0 for p in self.pings)


def run(pins: PinDir, count: int = 3, table: str | None = None, mode: str = "auto") -> DemoReport:
    """Build the lab, forward port 1 <-> port 2, ping both ways, and remove everything.

    pins must be a directory of the demo's own: it is removed at the end.
    """
    prefix = f"xd{os.getpid()}p"
    with lab.running(prefix, 2) as the_lab:
        one, two = the_lab.ports
        try:
            added = ops.add(
                pins,
                ops.resolve(one.port),
                ops.resolve(two.port),
                bidirectional=True,
                table=table,
                mode=mode,
            )
            pings = [lab.ping(one, two, count), lab.ping(two, one, count)]
            listing = ops.list_ports(pins)
        finally:
            ops.down(pins)
    return DemoReport(the_lab, added, pings, listing)
