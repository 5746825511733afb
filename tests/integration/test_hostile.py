"""The real binary against hostile paths and names (symlinks, devices, FIFOs, directories,
pinned objects, very long names, bytes that are not UTF-8) in every slot that takes
one: --pin-dir, --output, apply FILE, --egress-prog, --netns, interfaces and ifindexes.

Whatever it is given, xdpfwd exits with a documented status, says what went wrong in
one line (never "unexpected"), and changes nothing but its own pin directory: the
bpffs, the links of its namespace and every file involved are as they were (an
--output it was asked to write may have new contents, but stays what it was: a
symlink, a FIFO, a device)."""

import hashlib
import json
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdpfwd.kernel.bpf import syscall as sc

from .conftest import RUN_ID
from .net import sh

DOCUMENTED = {0, 1, 2, 3, 4, 5}
# Read only, never a write target (outputs go to the sandbox's own device nodes).
READ_ONLY = ["/proc/self/mem"]


class Sandbox:
    """Hostile paths, made once per test, and a fingerprint of everything they touch."""

    def __init__(self, tmp_path, pin_dir: str, stale_netns: str):
        self.root = tmp_path / "sandbox"
        self.root.mkdir()
        self.bpffs = os.path.dirname(pin_dir)
        self.pin_dir = pin_dir
        victim = self.root / "victim.yaml"
        victim.write_text("someone's notes, not a configuration\n")
        (self.root / "dir").mkdir()
        (self.root / "link").symlink_to(victim)
        (self.root / "dangling").symlink_to(self.root / "nothing")
        (self.root / "devlink").symlink_to(self.root / "full")
        os.mkfifo(self.root / "fifo")
        # Device nodes of the sandbox's own (the host's /dev is never a target: a
        # regression would replace it): null, full and zero, and a /dev/stdout.
        for name, minor in (("null", 3), ("full", 7), ("zero", 5)):
            os.mknod(self.root / name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        (self.root / "stdout").symlink_to("/proc/self/fd/1")
        (self.root / "big.yaml").write_bytes(b"version: 1\n" + b"#" * (5 << 20))
        (self.root / "bad.c").write_bytes(b"int f(struct xdp_md *c) { return 2; } \xff\n")
        foreign = os.path.join(self.bpffs, "foreign")
        os.mkdir(foreign)
        fd = sc.map_create(sc.MAP_TYPE_ARRAY, 4, 4, 1, "st")
        sc.obj_pin(fd, os.path.join(foreign, "state"))
        os.close(fd)
        r = str(self.root)
        self.paths = [
            r,
            f"{r}/victim.yaml",
            f"{r}/dir",
            f"{r}/link",
            f"{r}/dangling",
            f"{r}/devlink",
            f"{r}/null",
            f"{r}/full",
            f"{r}/zero",
            f"{r}/stdout",
            f"{r}/fifo",
            f"{r}/big.yaml",
            f"{r}/bad.c",
            f"{r}/missing/x",
            f"{r}/" + "a" * 300,
            f"{r}/" + "/".join(["b" * 255] * 20),
            os.fsdecode(os.fsencode(r) + b"/\xff\xfe.c"),
            f"{r}/new\nline",
            "relative",
            "",
            "/",
            self.bpffs,
            foreign,
            os.path.join(foreign, "state"),
            os.path.join(foreign, "state", "x"),
            os.path.join(self.bpffs, "fresh"),
            *READ_ONLY,
        ]
        self.netns = [
            stale_netns,
            f"absent{RUN_ID}",
            "",
            "..",
            "a/b",
            "x" * 70,
            "new\nline",
            os.fsdecode(b"\xff"),
        ]
        self.ifaces = [
            "0",
            "4294967296",
            "2147483648",
            "99999",
            "-1",
            "lo",
            "p1/",
            "a" * 16,
            "",
            "\n",
            "١٧",
            os.fsdecode(b"p\xff"),
            "p1:0",
        ]

    def fingerprint(self, topo) -> tuple:
        files = {}
        for directory, dirs, names in os.walk(self.root):
            for name in dirs + names:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                content = None
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        content = hashlib.sha256(f.read()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    content = os.readlink(path)
                elif stat.S_ISCHR(st.st_mode):
                    content = st.st_rdev
                files[path] = (stat.S_IFMT(st.st_mode), st.st_ino, content)
        pins = sorted(
            os.path.relpath(os.path.join(d, n), self.bpffs)
            for d, dirs, names in os.walk(self.bpffs)
            for n in dirs + names
            if not n.endswith(".debug")
        )
        links = json.loads(sh("ip", "-n", topo.fwd, "-d", "-j", "link").stdout)
        for link in links:  # counters and timers move by themselves
            link.pop("stats64", None)
            link.pop("stats", None)
        return files, pins, links


@pytest.fixture
def stale_netns():
    """An entry in /run/netns that no namespace is bound to."""
    name = f"o{RUN_ID}stale"
    path = f"/run/netns/{name}"
    open(path, "w").close()
    try:
        yield name
    finally:
        os.unlink(path)


@pytest.fixture
def sandbox(topo, pin_dir, tmp_path, stale_netns):
    topo.ok(pin_dir, "add", "p1", "p2")  # a setup of xdpfwd's own to read, save and refuse
    return Sandbox(tmp_path, pin_dir, stale_netns)


def commands(box: Sandbox):
    path, netns, iface = (st.sampled_from(x) for x in (box.paths, box.netns, box.ifaces))
    good = ["--pin-dir", box.pin_dir]
    return st.one_of(
        st.tuples(
            st.just("pin-dir"),
            st.builds(
                lambda p, c: ["--pin-dir", p, *c],
                path,
                st.sampled_from([["list"], ["down"], ["save"], ["stats"], ["add", "p2", "p1"]]),
            ),
        ),
        st.tuples(
            st.just("output"),
            st.builds(
                lambda p, c: [*good, *c, p],
                path,
                st.sampled_from([["save", "-o"], ["stats", "--json", "--output"]]),
            ),
        ),
        st.tuples(
            st.just("input"),
            st.builds(
                lambda p, c: [*good, *c(p)],
                path,
                st.sampled_from(
                    [
                        lambda p: ["apply", p],
                        lambda p: ["apply", "--dry-run", p],
                        lambda p: ["add", "p2", "p1", "--egress-prog", p],
                        lambda p: ["add", "p2", "p1", "--egress-prog", f"{p}:f"],
                    ]
                ),
            ),
        ),
        st.tuples(st.just("netns"), st.builds(lambda n: [*good, "--netns", n, "list"], netns)),
        st.tuples(
            st.just("iface"),
            st.builds(
                lambda i, c: [*good, *c(i)],
                iface,
                st.sampled_from(
                    [
                        lambda i: ["del", i],
                        lambda i: ["add", i, "p2"],
                        lambda i: ["add", "p2", i],
                        lambda i: ["broadcast", i],
                        lambda i: ["broadcast", "del", i],
                        lambda i: ["stats", "--iface", i],
                    ]
                ),
            ),
        ),
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_paths_and_names_change_nothing_and_fail_in_one_line(topo, sandbox, data):
    slot, args = data.draw(commands(sandbox))
    before = sandbox.fingerprint(topo)
    # Relative paths land in the sandbox.
    result = topo.xdpfwd(args[1], *args[2:], outer=("env", "-C", str(sandbox.root)))
    lines = result.stderr.strip().splitlines()
    assert result.returncode in DOCUMENTED, (args, result.returncode, result.stderr)
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr, args
    if result.returncode != 0:
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    if slot == "pin-dir" and result.returncode == 0 and args[2:] == ["add", "p2", "p1"]:
        # A new directory became xdpfwd's: taking it down again restores everything.
        topo.ok(args[1], "down")
    after = sandbox.fingerprint(topo)
    if slot == "output" and result.returncode == 0:
        # Asked for: new contents at the output, which stays what it was (a symlink a
        # symlink, a device a device); a new path becomes a new regular file.
        before_files, after_files = before[0], after[0]
        target = os.path.join(sandbox.root, args[-1])
        if target in after_files and target not in before_files:
            assert after_files.pop(target)[0] == stat.S_IFREG, args
        for path in {target, os.path.realpath(target)}:
            if path in before_files and path in after_files:
                assert after_files[path][0] == before_files[path][0], (args, path)
                after_files[path] = before_files[path]
    assert after == before, args
