"""The use cases behind the commands, one module per command family, and this facade:
the one object the CLI calls (tests swap in a fake). No click and no printing here:
operations return model types and raise XdpfwdError subclasses.

Each operation's module is imported when the operation is first looked up: what
creates devices (the lab, demo and bench) uses pyroute2, whose import would cost every
other command about 100 ms, and a command needs only its own family."""

from __future__ import annotations

import importlib
import sys

from xdpfwd.kernel import prereqs

# Each operation: the module of this package that does it, and its name there.
_OPERATIONS = {
    "add": ("forwarding", "add"),
    "add_balanced": ("balancing", "add"),
    "apply": ("applying", "apply"),
    "broadcast": ("groups", "broadcast"),
    "broadcast_del": ("groups", "broadcast_del"),
    "check_host": ("doctor", "run"),
    "delete": ("forwarding", "delete"),
    "down": ("forwarding", "down"),
    "lab_down": ("lab", "lab_down"),
    "lab_status": ("lab", "lab_status"),
    "lab_up": ("lab", "lab_up"),
    "list_ports": ("forwarding", "list_ports"),
    "multicast_add": ("multicast", "multicast_add"),
    "multicast_del": ("multicast", "multicast_del"),
    "multicast_list": ("multicast", "multicast_list"),
    "prune": ("applying", "reconcile"),
    "resolve": ("forwarding", "resolve"),
    "save": ("applying", "save"),
    "stats_clear": ("stats", "clear"),
    "stats_read": ("stats", "read"),
    "stats_watch": ("stats", "watch"),
}

__all__ = sorted([*_OPERATIONS, "bench", "check_pin_dir", "demo", "follow"])


def __getattr__(name: str):
    try:
        module, attr = _OPERATIONS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    operation = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = operation  # looked up once
    return operation


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
    from xdpfwd.ops import following

    prereqs.require_privileges("follow")
    # At once, not at the first run, whose error follow would retry for ever.
    pins.check_owned()
    pins.check_netns()
    return following.run(sys.modules[__name__], pins, **options)


def check_pin_dir(pins, removing: bool = False) -> None:
    """Refuse a pin directory that serves another network namespace's ports before a
    command resolves its interfaces here (see PinDir.check_netns); removing: for down."""
    pins.check_netns(removing)
