"""Integration fixtures: root, BCC, bpffs and netns checks; per-test topologies and bpffs."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import secrets
import shutil
import subprocess
import tempfile

import pytest

from xdpfwd.kernel import prereqs

from .net import Topo, sh

RUN_ID = secrets.token_hex(2)
_counter = itertools.count(1)


@functools.lru_cache(maxsize=1)
def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root"
    if importlib.util.find_spec("bcc") is None:
        return "BCC is not importable (apt-get install python3-bpfcc; run `make setup`)"
    if prereqs.kernel_headers_dir() is None:
        return "kernel headers missing (run `make setup`)"
    for tool in ("ip", "ping", "ethtool", "nsenter", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run `make setup`)"
    probe = tempfile.mkdtemp(prefix="xdpfwd-bpffs-probe-")
    try:
        if subprocess.run(["mount", "-t", "bpf", "bpf", probe]).returncode != 0:
            return "cannot mount a bpffs"
        subprocess.run(["umount", probe], check=True)
    finally:
        os.rmdir(probe)
    return None


@pytest.fixture(autouse=True)
def _require_integration_prerequisites(request):
    reason = missing_prerequisite()
    if reason is None:
        return
    if os.environ.get("CI") or request.config.getoption("--integration"):
        pytest.fail(f"integration prerequisite missing: {reason}")
    pytest.skip(reason)


@pytest.fixture
def pin_dir(tmp_path):
    """A pin directory on a bpffs of the test's own, unmounted (pins and all) afterwards."""
    mount = tmp_path / "bpffs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(mount)], check=True)
    try:
        yield str(mount / "xdpfwd")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def make_topo():
    """Build topologies with unique names; every one is removed at teardown, pass or fail."""
    built: list[Topo] = []

    def make(nports: int = 2, gro: bool = True, prepared: bool = True) -> Topo:
        topo = Topo(f"{RUN_ID}{next(_counter)}", nports, gro, prepared)
        built.append(topo)
        return topo.build()

    try:
        yield make
    finally:
        for topo in built:
            topo.destroy()


@pytest.fixture
def scratch_ns():
    """A namespace standing in for the root one: xdpfwd's own lab builds its ports there."""
    name = f"xt{RUN_ID}s{next(_counter)}"
    sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def topo(make_topo) -> Topo:
    return make_topo(2)
