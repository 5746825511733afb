"""User egress programs are read and checked before BCC runs."""

import os

import pytest

from xdpfwd.errors import InputError
from xdpfwd.kernel.bpf import maps
from xdpfwd.model import EgressSpec
from xdpfwd.state import entries

PROGRAM = "int f(struct xdp_md *ctx) { return XDP_PASS; }\n"


def spec(path, func=None):
    return EgressSpec(program="user", user_file=str(path), user_func=func)


def test_a_program_and_its_only_function(tmp_path):
    path = tmp_path / "f.c"
    path.write_text(PROGRAM)
    assert entries.read_user_program(spec(path)) == (PROGRAM, "f")
    assert entries.read_user_program(spec(path, "f")) == (PROGRAM, "f")


def test_a_function_the_file_does_not_have_is_a_usage_error(tmp_path):
    path = tmp_path / "f.c"
    path.write_text(PROGRAM)
    with pytest.raises(InputError, match=r"f.c has no function h \(its XDP functions: f\)"):
        entries.read_user_program(spec(path, "h"))
    assert InputError.exit_code == 2


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: _write(d / "f.c", b"int f(struct xdp_md *c) { return 2; } // \xff\n"), "UTF-8"),
        (lambda d: "/dev/zero", "a character device"),
        (lambda d: _fifo(d / "p.c"), "a FIFO"),
        (lambda d: _write(d / ("x" * 250) / "f.c", PROGRAM.encode()), "bytes long"),
        (lambda d: _write(d / os.fsdecode(b"\xff.c"), PROGRAM.encode()), "is not UTF-8"),
    ],
    ids=["invalid-utf8", "dev-zero", "fifo", "path-too-long", "path-not-utf8"],
)
def test_unusable_programs_are_refused_in_one_line(tmp_path, make, reason):
    with pytest.raises(InputError, match=reason) as refused:
        entries.read_user_program(spec(make(tmp_path), "f"))
    assert "\n" not in str(refused.value)


def test_a_function_name_longer_than_the_record_is_refused(tmp_path):
    path = tmp_path / "f.c"
    long_name = "f" * (maps.USER_PROG_FUNC_MAX + 1)
    path.write_text(f"int {long_name}(struct xdp_md *ctx) {{ return 2; }}\n")
    with pytest.raises(InputError, match="longer than"):
        entries.read_user_program(spec(path, long_name))


def test_a_warning_for_verdicts_an_egress_program_cannot_give():
    text = "int tx(struct xdp_md *ctx) { return XDP_TX; }"
    (warning,) = entries.verdict_warnings(text, "tx.c", "tx")
    assert "tx.c mentions XDP_TX" in warning and "invalid verdict" in warning
    assert entries.verdict_warnings(PROGRAM, "f.c", "f") == []


def _write(path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _fifo(path) -> str:
    os.mkfifo(path)
    return str(path)
