"""`xdpfwd lab`: a throwaway lab of veth ports (see state/lab.py).

state.lab is imported when called: it creates devices with pyroute2 (see ops/__init__)."""

from __future__ import annotations

from xdpfwd.kernel import prereqs
from xdpfwd.model.reports import Lab


def lab_up(name: str, nports: int) -> Lab:
    prereqs.require_privileges("lab up")
    from xdpfwd.state import lab

    return lab.up(name, nports)


def lab_down(name: str) -> list[str]:
    prereqs.require_privileges("lab down")
    from xdpfwd.state import lab

    return lab.down(name)


def lab_status(name: str) -> Lab:
    from xdpfwd.state import lab

    return lab.status(name)
