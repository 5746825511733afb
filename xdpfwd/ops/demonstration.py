"""`xdpfwd demo`: forward between two ports of a throwaway lab, ping across, tear down."""

from __future__ import annotations

import os

from xdpfwd.kernel import prereqs
from xdpfwd.model.reports import DemoReport
from xdpfwd.state import lab
from xdpfwd.state.pins import PinDir


def run(
    ops, pins: PinDir, count: int = 3, table: str | None = None, mode: str = "auto"
) -> DemoReport:
    """Build the lab, forward port 1 <-> port 2, ping both ways, and remove everything.

    ops are the operations the demo composes (add, resolve, list_ports, down): the
    ops package passes itself. The demo works in a pin directory of its own, removed
    at the end.
    """
    prereqs.require_privileges("demo")
    pins = pins.scratch("demo")
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
