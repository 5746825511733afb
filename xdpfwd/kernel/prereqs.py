"""Checks of what the host must provide, made before anything is changed."""

from __future__ import annotations

import os

from xdpfwd.errors import PrereqError

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39

INSTALL_BCC = (
    "install BCC's Python bindings from your distribution "
    "(Debian/Ubuntu: `apt-get install python3-bpfcc`; the PyPI package `bcc` is a "
    "different project); a virtualenv needs --system-site-packages to see them"
)


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_privileges() -> None:
    """Raises PrereqError unless the process may load BPF and attach XDP programs."""
    caps = effective_caps()
    has = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    if has(CAP_NET_ADMIN) and (has(CAP_BPF) or has(CAP_SYS_ADMIN)):
        return
    raise PrereqError(
        "xdpfwd needs root (or CAP_BPF and CAP_NET_ADMIN) to load and attach XDP programs; "
        "run it with sudo"
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
    return (
        f"kernel headers for {release} not found (/lib/modules/{release}/build), and BCC "
        f"needs them to compile: install them (Debian/Ubuntu: `apt-get install "
        f"linux-headers-{release}`), or set BCC_KERNEL_SOURCE to a headers directory"
    )
