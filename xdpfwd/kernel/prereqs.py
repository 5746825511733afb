"""Checks of what the host must provide, made before anything is changed."""

from __future__ import annotations

import os

from xdpfwd.errors import PrereqError

CAP_DAC_READ_SEARCH = 2
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
CAP_NAMES = {
    CAP_DAC_READ_SEARCH: "CAP_DAC_READ_SEARCH",
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
    CAP_PERFMON: "CAP_PERFMON",
    CAP_BPF: "CAP_BPF",
}

# The capabilities each command needs, measured on Linux 6.18 (see CAPABILITIES in
# xdpfwd(8)). CAP_NET_ADMIN: XDP attach and detach (RTM_SETLINK), veths. CAP_SYS_ADMIN:
# BPF_{PROG,MAP}_GET_FD_BY_ID (BCC adopting pinned maps, the undo of map changes),
# setns() and mount() (namespaces, bpffs); the kernel also takes it in place
# of CAP_BPF and CAP_PERFMON. Reading and zeroing counters needs none: only access to
# the pins, which belong to whoever created them (root: mode 0600).
_CHANGE = (CAP_NET_ADMIN, CAP_SYS_ADMIN)
COMMAND_CAPS: dict[str, tuple[int, ...]] = {
    "add": _CHANGE,
    "del": _CHANGE,
    "broadcast": _CHANGE,
    "broadcast del": _CHANGE,
    "multicast add": _CHANGE,
    "multicast del": _CHANGE,
    "apply": _CHANGE,
    "prune": _CHANGE,  # it may bind devices again and move buckets, as apply does
    "follow": _CHANGE,  # prune on every link event (netlink events need none)
    "down": (CAP_NET_ADMIN,),
    "stats --watch": (CAP_SYS_ADMIN,),  # only to attach loss accounting (older pin dirs)
    "lab up": _CHANGE,
    "lab down": _CHANGE,
    "demo": _CHANGE,
    "bench": _CHANGE,
    "--netns": (CAP_SYS_ADMIN,),
    "list": (),
    "stats": (),
    "save": (),
    "lab status": (),
    "doctor": (),
    # A group's receivers are in a devmap the kernel opens by id only (map of maps).
    "multicast list": (CAP_SYS_ADMIN,),
}


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_caps(command: str, caps: int | None = None) -> list[str]:
    """The capabilities command needs that caps (default: this process's) lack."""
    caps = effective_caps() if caps is None else caps
    return [CAP_NAMES[cap] for cap in COMMAND_CAPS[command] if not caps >> cap & 1]


def require_privileges(command: str) -> None:
    """Raises PrereqError naming the capabilities command needs and lacks."""
    missing = missing_caps(command)
    if missing:
        needed = " and ".join(CAP_NAMES[cap] for cap in COMMAND_CAPS[command])
        raise PrereqError(
            f"xdpfwd {command} needs {needed}; this process lacks {', '.join(missing)}: "
            "run it as root (sudo), or grant them (see CAPABILITIES in xdpfwd(8))"
        )


INSTALL_BCC = (
    "install BCC's Python bindings from your distribution "
    "(Debian/Ubuntu: `apt-get install python3-bpfcc`; the PyPI package `bcc` is a "
    "different project); a virtualenv needs --system-site-packages to see them"
)


def require_bcc() -> None:
    """Raises PrereqError when BCC's Python module cannot be imported (absent or broken)."""
    try:
        import bcc  # noqa: F401  (only called on the way to compiling, which imports it anyway)
    except (ImportError, OSError) as e:
        raise PrereqError(
            f"BCC is not importable ({e}), and it compiles xdpfwd's program: {INSTALL_BCC}"
        ) from e


def kernel_headers_dir() -> str | None:
    """Where BCC will find kernel headers, following BCC's own search; None if nowhere."""
    override = os.environ.get("BCC_KERNEL_SOURCE")
    if override:
        return override if os.path.isdir(override) else None
    build = f"/lib/modules/{os.uname().release}/build"
    if os.path.isdir(build):
        return build
    # CONFIG_IKHEADERS: BCC unpacks /sys/kernel/kheaders.tar.xz itself.
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return "/sys/kernel/kheaders.tar.xz"
    return None


def require_kernel_headers() -> None:
    if kernel_headers_dir() is None:
        raise PrereqError(missing_headers_message())


def missing_headers_message() -> str:
    release = os.uname().release
    override = os.environ.get("BCC_KERNEL_SOURCE")
    if override:  # BCC looks nowhere else
        return (
            f"BCC_KERNEL_SOURCE={override} is not a directory of kernel headers, and BCC "
            "needs them to compile: point it at one, or unset it"
        )
    return (
        f"kernel headers for {release} not found (/lib/modules/{release}/build), and BCC "
        f"needs them to compile: install them (Debian/Ubuntu: `apt-get install "
        f"linux-headers-{release}`), or set BCC_KERNEL_SOURCE to a headers directory"
    )
