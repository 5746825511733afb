"""Privilege, BCC and kernel header checks."""

import sys

import pytest

from xdpfwd.errors import PrereqError
from xdpfwd.kernel import prereqs

NET_ADMIN, SYS_ADMIN, BPF = 1 << 12, 1 << 21, 1 << 39


@pytest.mark.parametrize(
    "caps, allowed",
    [
        (0, False),
        (NET_ADMIN, False),
        (BPF, False),
        (NET_ADMIN | BPF, True),
        (NET_ADMIN | SYS_ADMIN, True),
        ((1 << 41) - 1, True),
    ],
    ids=["none", "net-admin-only", "bpf-only", "bpf+net-admin", "sys-admin+net-admin", "root"],
)
def test_require_privileges(monkeypatch, caps, allowed):
    monkeypatch.setattr(prereqs, "effective_caps", lambda: caps)
    if allowed:
        prereqs.require_privileges()
    else:
        with pytest.raises(PrereqError, match="needs root"):
            prereqs.require_privileges()


def test_missing_bcc_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(PrereqError, match="python3-bpfcc"):
        prereqs.require_bcc()


def test_headers_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    assert prereqs.kernel_headers_dir() == str(tmp_path)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "missing"))
    assert prereqs.kernel_headers_dir() is None
    with pytest.raises(PrereqError, match="linux-headers-"):
        prereqs.require_kernel_headers()
