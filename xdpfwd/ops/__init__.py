"""The use cases behind the commands, one module per command family, and this facade:
the one object the CLI calls (tests swap in a fake). No click and no printing here:
operations return model types and raise XdpfwdError subclasses.

What creates devices (the lab, demo and bench) is imported when called: it uses
pyroute2, whose import would cost every other command about 100 ms."""

from __future__ import annotations

import sys

from xdpfwd.kernel import prereqs
from xdpfwd.ops import following
from xdpfwd.ops.apply import apply, save
from xdpfwd.ops.apply import reconcile as prune
from xdpfwd.ops.balancing import add as add_balanced
from xdpfwd.ops.doctor import run as check_host
from xdpfwd.ops.forwarding import add, delete, down, list_ports, resolve
from xdpfwd.ops.groups import broadcast, broadcast_del
from xdpfwd.ops.lab import lab_down, lab_status, lab_up
from xdpfwd.ops.multicast import multicast_add, multicast_del, multicast_list
from xdpfwd.ops.stats import clear as stats_clear
from xdpfwd.ops.stats import read as stats_read
from xdpfwd.ops.stats import watch as stats_watch

__all__ = [
    "add",
    "add_balanced",
    "apply",
    "bench",
    "broadcast",
    "broadcast_del",
    "check_host",
    "delete",
    "demo",
    "down",
    "follow",
    "lab_down",
    "lab_status",
    "lab_up",
    "list_ports",
    "multicast_add",
    "multicast_del",
    "multicast_list",
    "prune",
    "resolve",
    "save",
    "stats_clear",
    "stats_read",
    "stats_watch",
]


def demo(pins, **options):
    """`xdpfwd demo` (see ops/demonstration.py), composed of this facade's operations."""
    from xdpfwd.ops import demonstration

    return demonstration.run(sys.modules[__name__], pins, **options)


def bench(pins, **options):
    """`xdpfwd bench` (see ops/benchmark.py), composed of this facade's operations."""
    from xdpfwd.ops import benchmark

    return benchmark.run(sys.modules[__name__], pins, **options)


def follow(pins, **options):
    """`xdpfwd follow` (see ops/following.py): this facade's prune on every link event.
    What it lacks to change the state is named at once, not at the first event."""
    prereqs.require_privileges("follow")
    return following.run(sys.modules[__name__], pins, **options)
