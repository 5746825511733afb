"""Privilege, BCC and kernel header checks."""

import sys

import pytest

from xdpfwd.errors import PrereqError
from xdpfwd.kernel import prereqs

NET_ADMIN, SYS_ADMIN, BPF = 1 << 12, 1 << 21, 1 << 39


@pytest.mark.parametrize(
    "command, caps, missing",
    [
        ("add", 0, ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]),
        ("add", NET_ADMIN, ["CAP_SYS_ADMIN"]),
        # CAP_BPF is not enough: BCC adopts pinned maps by id (BPF_MAP_GET_FD_BY_ID).
        ("add", NET_ADMIN | BPF, ["CAP_SYS_ADMIN"]),
        ("add", NET_ADMIN | SYS_ADMIN, []),
        ("apply", NET_ADMIN | SYS_ADMIN, []),
        ("del", SYS_ADMIN, ["CAP_NET_ADMIN"]),
        ("down", NET_ADMIN, []),
        ("prune", NET_ADMIN, ["CAP_SYS_ADMIN"]),
        ("prune", NET_ADMIN | SYS_ADMIN, []),
        ("follow", NET_ADMIN, ["CAP_SYS_ADMIN"]),
        ("follow", NET_ADMIN | SYS_ADMIN, []),
        ("stats --watch", SYS_ADMIN, []),
        ("stats --watch", NET_ADMIN | BPF, ["CAP_SYS_ADMIN"]),
        ("--netns", NET_ADMIN, ["CAP_SYS_ADMIN"]),
        ("list", 0, []),
        ("stats", 0, []),
        ("save", 0, []),
        ("lab up", NET_ADMIN, ["CAP_SYS_ADMIN"]),
        ("add", (1 << 41) - 1, []),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_missing_capabilities_per_command(command, caps, missing):
    assert prereqs.missing_caps(command, caps) == missing


def test_require_privileges_names_the_missing_capabilities(monkeypatch):
    monkeypatch.setattr(prereqs, "effective_caps", lambda: NET_ADMIN | BPF)
    with pytest.raises(PrereqError) as refused:
        prereqs.require_privileges("add")
    message = str(refused.value)
    assert "xdpfwd add needs CAP_NET_ADMIN and CAP_SYS_ADMIN" in message
    assert "lacks CAP_SYS_ADMIN" in message and "root" in message
    monkeypatch.setattr(prereqs, "effective_caps", lambda: 0)
    prereqs.require_privileges("list")  # reading needs no capability


def test_missing_bcc_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(PrereqError, match="python3-bpfcc"):
        prereqs.require_bcc()


def test_headers_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    assert prereqs.kernel_headers_dir() == str(tmp_path)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "missing"))
    assert prereqs.kernel_headers_dir() is None
    with pytest.raises(PrereqError) as e:  # the headers that are there do not count
        prereqs.require_kernel_headers()
    assert str(e.value).startswith(f"BCC_KERNEL_SOURCE={tmp_path / 'missing'} is not a directory")
