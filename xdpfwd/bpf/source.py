"""The one place that finds the XDP C source shipped in bpf_src/ and builds its cflags."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

INGRESS_SOURCE = "xdpfwd_kern.c"
BENCH_SOURCE = "xdpfwd_bench.c"
COMMON_HEADER = "xdpfwd_common.h"


def bpf_source_dir() -> Path:
    """bpf_src/ of the package; XDPFWD_BPF_SRC overrides it for development."""
    override = os.environ.get("XDPFWD_BPF_SRC")
    if override:
        return Path(override)
    return Path(str(resources.files("xdpfwd.bpf_src")))


def read_source(name: str) -> str:
    return (bpf_source_dir() / name).read_text()


def cflags(**defines: str | int) -> list[str]:
    """-I for bpf_src and one -D per define; strings become C string literals."""
    flags = [f"-I{bpf_source_dir()}"]
    for name, value in defines.items():
        if isinstance(value, str):
            if any(c in value for c in '"\\\n'):
                raise ValueError(f"{name}: {value!r} cannot be a C string literal")
            flags.append(f'-D{name}="{value}"')
        else:
            flags.append(f"-D{name}={int(value)}")
    return flags
