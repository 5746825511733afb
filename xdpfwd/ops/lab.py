"""`xdpfwd lab`: a throwaway lab of veth ports (see state/lab.py)."""

from __future__ import annotations

from xdpfwd.kernel import prereqs
from xdpfwd.model.reports import Lab
from xdpfwd.state import lab


def lab_up(name: str, nports: int) -> Lab:
    prereqs.require_privileges("lab up")
    return lab.up(name, nports)


def lab_down(name: str) -> list[str]:
    prereqs.require_privileges("lab down")
    return lab.down(name)


def lab_status(name: str) -> Lab:
    return lab.status(name)
