"""The one place that finds the XDP C source shipped in bpf_src/, assembles program
texts from it, and builds their cflags."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from xdpfwd.errors import PrereqError

STATS_SOURCE = "xdpfwd_stats.c"
INGRESS_SOURCE = "xdpfwd_kern.c"
PORTS_SOURCE = "xdpfwd_ports.c"
MCAST_SOURCE = "xdpfwd_mcast.c"
EGRESS_SOURCE = "xdpfwd_egress.c"
BENCH_SOURCE = "xdpfwd_bench.c"
TRACE_SOURCE = "xdpfwd_trace.c"
USER_SOURCE = "xdpfwd_user.c"
COMMON_HEADER = "xdpfwd_common.h"

_PRELUDE = '#include <uapi/linux/bpf.h>\n#include "xdpfwd_common.h"\n#include "xdpfwd_bcc.h"\n'
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_XDP_FUNCTION = re.compile(r"\bint\s+([A-Za-z_]\w*)\s*\(\s*struct\s+xdp_md\s*\*")


def bpf_source_dir() -> Path:
    """bpf_src/ of the package; XDPFWD_BPF_SRC overrides it for development.
    Raises PrereqError when the installation has none."""
    override = os.environ.get("XDPFWD_BPF_SRC")
    if override:
        return Path(override)
    try:
        return Path(str(resources.files("xdpfwd.bpf_src")))
    except ModuleNotFoundError:
        raise PrereqError(
            "xdpfwd's XDP source (the package xdpfwd.bpf_src) is not installed: reinstall "
            "xdpfwd, or point XDPFWD_BPF_SRC at its bpf_src directory"
        ) from None


def read_source(name: str) -> str:
    """A bpf_src file's text; raises PrereqError when it cannot be read."""
    path = bpf_source_dir() / name
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        where = "XDPFWD_BPF_SRC" if os.environ.get("XDPFWD_BPF_SRC") else "the installation"
        text = f"cannot read xdpfwd's XDP source {path} ({why}): check {where}"
        raise PrereqError(text) from None


def _part(name: str, text: str) -> str:
    # BCC rewrites map syntax only in its main text, so parts are concatenated
    # rather than #included; #line keeps compiler messages pointing at each file.
    return f'#line 1 "{name}"\n{text}\n'


def program_text(*names: str) -> str:
    """The named bpf_src files, concatenated into one BCC main text after the headers."""
    return _PRELUDE + "".join(_part(name, read_source(name)) for name in names)


def ingress_text(with_egress: bool) -> str:
    """The ingress program, and the built-in egress programs when entries can hold them."""
    names = [STATS_SOURCE, PORTS_SOURCE, MCAST_SOURCE, INGRESS_SOURCE]
    names += [EGRESS_SOURCE] if with_egress else []
    return program_text(*names)


def user_function(text: str) -> str | None:
    """The only `int NAME(struct xdp_md *...)` function in text, if there is exactly one."""
    names = xdp_functions(text)
    return names.pop() if len(names) == 1 else None


def xdp_functions(text: str) -> set[str]:
    """Every `int NAME(struct xdp_md *...)` function of text."""
    return set(_XDP_FUNCTION.findall(_without_comments(text)))


def mentions_function(text: str, func: str) -> bool:
    """Whether text calls or defines func (outside comments)."""
    return re.search(rf"\b{re.escape(func)}\s*\(", _without_comments(text)) is not None


_INVALID_EGRESS_VERDICTS = re.compile(r"\b(XDP_TX|XDP_REDIRECT|XDP_ABORTED)\b")


def invalid_egress_verdicts(text: str) -> list[str]:
    """The verdicts an egress program may not give that text names (outside comments)."""
    return sorted(set(_INVALID_EGRESS_VERDICTS.findall(_without_comments(text))))


def _without_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


WRAPPER = "xdpfwd-wrapper"  # the file name the compiler gives the code after a user's


def user_egress_text(user_text: str, file_name: str, func: str) -> str:
    """A program called func that runs the user's func inline and counts its verdict.

    The user's function gets a private name and a static inline declaration ahead
    of the user's file, so its own definition inherits internal linkage and is
    inlined into the wrapper (BCC cannot link calls between programs).
    """
    if not _C_IDENTIFIER.match(func):
        raise ValueError(f"{func!r} is not a C function name")
    shown = file_name if not any(c in file_name for c in '"\\\n') else "user.c"
    impl = f"__xdpfwd_user_{func}"
    return (
        program_text(STATS_SOURCE, USER_SOURCE)
        + '#include "xdpfwd_user.h"\n'
        + f"#define {func} {impl}\nstatic __always_inline int {impl}(struct xdp_md *ctx);\n"
        + _part(shown, user_text)
        + f'#undef {func}\n#line 1 "{WRAPPER}"\nXDPFWD_USER_EGRESS({func})\n'
    )


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
