"""Bad input and missing prerequisites: one line on stderr, a documented exit code, and no
change to the interfaces or the pins."""

import fcntl
import json
import os
import subprocess
import time

import pytest

from xdpfwd.errors import DeviceGone
from xdpfwd.model import EgressSpec, Iface
from xdpfwd.ops import forwarding
from xdpfwd.state import entries
from xdpfwd.state.pins import PinDir

from .net import XDPFWD, assert_fails, attach_foreign, in_netns, sh, snapshot

NO_BCC = {"PYTHONPATH": os.path.join(os.path.dirname(__file__), "no_bcc")}
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def private_mounts(script: str) -> tuple:
    """Run the command in a private mount namespace after a shell snippet."""
    return (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{script} && exec "$@"',
        "sh",
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["add", "nope", "p2"], "no such interface: nope"),
        (["add", "p1", "p1"], "same interface"),
        (["add", "p1", "lo"], "loopback"),
        (["del", "nope"], "no such interface"),
    ],
    ids=["unknown-interface", "same-in-out", "loopback", "del-unknown-interface"],
)
def test_bad_arguments_change_nothing(topo, pin_dir, args, needle):
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, *args), 2, needle)
    assert snapshot(topo, pin_dir) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["add", "p1", "p2"], "needs CAP_NET_ADMIN and CAP_SYS_ADMIN"),
        # Reading needs no capability, only access to the pins (root's, mode 0700/0600).
        (["list"], "no access"),
        (["down"], "needs CAP_NET_ADMIN"),
    ],
    ids=["add", "list", "down"],
)
def test_not_root(topo, pin_dir, args, needle):
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, *args, inner=AS_NOBODY), 5, needle, "root")
    assert snapshot(topo, pin_dir) == before


def test_bcc_not_importable(topo, pin_dir):
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "add", "p1", "p2", env=NO_BCC), 5, "python3-bpfcc")
    assert snapshot(topo, pin_dir) == before


def test_kernel_headers_missing(topo, pin_dir):
    before = snapshot(topo, pin_dir)
    hide_headers = private_mounts("mount -t tmpfs tmpfs /lib/modules")
    result = topo.xdpfwd(
        pin_dir, "add", "p1", "p2", outer=hide_headers, env={"BCC_KERNEL_SOURCE": ""}
    )
    assert_fails(result, 5, "kernel headers", "linux-headers-")
    assert snapshot(topo, pin_dir) == before


def test_an_xdp_source_directory_without_the_source(topo, pin_dir, tmp_path):
    before = snapshot(topo, pin_dir)
    result = topo.xdpfwd(pin_dir, "add", "p1", "p2", env={"XDPFWD_BPF_SRC": str(tmp_path)})
    assert_fails(result, 5, "cannot read xdpfwd's XDP source", "check XDPFWD_BPF_SRC")
    assert snapshot(topo, pin_dir) == before


def test_pin_dir_not_on_bpffs(topo, tmp_path):
    not_bpffs = str(tmp_path / "pins")
    assert_fails(topo.xdpfwd(not_bpffs, "add", "p1", "p2"), 2, "not on a BPF filesystem")
    os.makedirs(not_bpffs)
    assert_fails(topo.xdpfwd(not_bpffs, "add", "p1", "p2"), 2, "not on a BPF filesystem")
    os.rmdir(not_bpffs)
    assert not os.path.exists(not_bpffs) and topo.xdp("p1") is None


def test_bpffs_is_mounted_when_missing_where_the_mount_lasts(topo, tmp_path):
    # A container's view: a mount namespace without bpffs at /sys/fs/bpf, held by the
    # init of a pid namespace (its ancestors out of sight): add mounts one, which the
    # next commands there find. (Without the pid namespace, the shell's mount namespace
    # would end with it: refused, as under ip netns exec, test_ownership.)
    pin = "/sys/fs/bpf/xdpfwd-test-automount"
    xdpfwd = f"nsenter --net=/run/netns/{topo.fwd} {XDPFWD} --pin-dir {pin}"
    script = (
        f"(umount /sys/fs/bpf 2>/dev/null || true) && {xdpfwd} add p1 p2 -b && "
        f"{xdpfwd} list --json > {tmp_path}/list.json && {xdpfwd} down"
    )
    container = ("unshare", "--mount", "--propagation", "private", "--pid", "--fork")
    result = subprocess.run(
        [*container, "--mount-proc", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    listed = json.loads((tmp_path / "list.json").read_text())
    assert [e["ingress"]["ifname"] for e in listed["entries"]] == ["p1", "p2"]
    assert not os.path.exists(pin) and topo.xdp("p1") is None


def test_foreign_program_is_refused_without_force(topo, pin_dir):
    foreign = attach_foreign(topo, "p1")
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "add", "p1", "p2"), 3, "foreign_pass", "--force")
    assert snapshot(topo, pin_dir) == before
    assert topo.xdp("p1")["prog"]["id"] == foreign


def test_a_port_another_pin_dir_runs_on_is_left_to_it_by_every_command_without_force(
    make_topo, pin_dir, tmp_path
):
    topo = make_topo(3)
    other = f"{pin_dir}-other"  # beside it, on the same test bpffs, unmounted with it
    topo.ok(pin_dir, "add", "p1", "p3")
    topo.ok(other, "add", "p1", "p2", "-b", "--force")  # takes p1 over
    before = snapshot(topo, pin_dir), snapshot(topo, other)
    line = assert_fails(topo.xdpfwd(pin_dir, "add", "p1", "p3"), 3, "--force")
    assert f"p1 already runs the xdpfwd program of --pin-dir {other} " in line
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\nforward:\n- {from: p1, to: p3}\n")
    for dry_run in ("--dry-run",), ():  # the plan foresees the refusal
        applied = topo.xdpfwd(pin_dir, "apply", str(config), *dry_run)
        assert_fails(applied, 3, f"--pin-dir {other}")
    # prune (and follow, the same code) leaves it, where they had taken it back.
    pruned = topo.ok(pin_dir, "prune")
    assert "p1 runs another XDP program" in pruned.stdout + pruned.stderr
    assert (snapshot(topo, pin_dir), snapshot(topo, other)) == before
    assert topo.ping(1, topo.host(2).ip) == 3  # the other dir still forwards


@pytest.mark.parametrize("where", ["nested deeper", "on another bpffs"])
def test_a_port_a_pin_dir_anywhere_else_runs_on_is_not_taken_for_an_orphan(
    make_topo, pin_dir, tmp_path, where
):
    topo = make_topo(3)
    mount = tmp_path / "bpffs-other"
    if where == "nested deeper":
        os.mkdir(f"{pin_dir}-parent")
        other = f"{pin_dir}-parent/xdpfwd"
    else:
        mount.mkdir()
        sh("mount", "-t", "bpf", "bpf", str(mount))
        other = str(mount / "xdpfwd")
    try:
        topo.ok(pin_dir, "add", "p1", "p2", "-b")
        before = snapshot(topo, pin_dir)
        line = assert_fails(topo.xdpfwd(other, "add", "p1", "p3"), 3, "--force")
        assert f"p1 already runs the xdpfwd program of --pin-dir {pin_dir} " in line
        config = tmp_path / "config.yaml"
        config.write_text("version: 1\nforward:\n- {from: p1, to: p3}\n")
        assert_fails(topo.xdpfwd(other, "apply", str(config)), 3, f"--pin-dir {pin_dir}")
        doctor = json.loads(topo.xdpfwd(other, "doctor", "--json", "--no-compile").stdout)
        assert not [c for c in doctor["checks"] if "of no pin dir" in c["detail"]], doctor
        assert snapshot(topo, pin_dir) == before
        assert topo.ping(1, topo.host(2).ip) == 3
    finally:
        if mount.exists():
            subprocess.run(["umount", "-l", str(mount)], check=False)


def test_apply_dry_run_foresees_a_table_of_another_type(topo, pin_dir, tmp_path):
    topo.ok(pin_dir, "add", "p1", "p2", "--table", "devmap-hash")
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\ntable: devmap\nforward:\n- {from: p1, to: p2}\n")
    before = snapshot(topo, pin_dir)
    for dry_run in ("--dry-run",), ():
        applied = topo.xdpfwd(pin_dir, "apply", str(config), *dry_run)
        assert_fails(applied, 1, "holds devmap-hash (its table type: ", "cannot change to devmap")
    assert snapshot(topo, pin_dir) == before


def test_foreign_program_is_replaced_with_force_and_never_touched_by_down(make_topo, pin_dir):
    topo = make_topo(3)
    attach_foreign(topo, "p1")
    bystander = attach_foreign(topo, "p3", generic=True)
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--force")
    assert topo.xdp("p1")["prog"]["name"] == "xdpfwd_ingress"
    assert topo.ping(1, topo.host(2).ip) == 3
    topo.ok(pin_dir, "down")
    assert topo.xdp("p1") is None
    assert topo.xdp("p3")["prog"]["id"] == bystander
    # del and add of others never detach it either.
    topo.ok(pin_dir, "add", "p2", "p1")
    topo.ok(pin_dir, "del", "p2")
    assert topo.xdp("p3")["prog"]["id"] == bystander


def test_conflicting_table_type(topo, pin_dir):
    topo.ok(pin_dir, "add", "p1", "p2", "--table", "devmap")
    before = snapshot(topo, pin_dir)
    assert_fails(
        topo.xdpfwd(pin_dir, "add", "p2", "p1", "--table", "devmap-hash"), 1, "holds devmap", "down"
    )
    assert snapshot(topo, pin_dir) == before
    assert topo.list_json(pin_dir)["table"] == "devmap"


def test_another_mode_re_attaches_the_port_and_it_keeps_forwarding(topo, pin_dir):
    """`add A B -b` then `add A B --mode skb`: A moves to generic, B's entry still
    reaches it, and both directions forward (once said "del its entries first")."""
    topo.ok(pin_dir, "add", "p1", "p2", "-b", "--mode", "native")
    result = topo.ok(pin_dir, "add", "p1", "p2", "--mode", "skb")
    assert "p1: attached (generic mode)" in result.stdout
    modes = {row["ingress"]["ifname"]: row["mode"] for row in topo.list_json(pin_dir)["entries"]}
    assert modes == {"p1": "generic", "p2": "native"}
    assert topo.ping(1, topo.host(2).ip) == 3
    assert topo.ping(2, topo.host(1).ip) == 3


def test_del_without_entry(topo, pin_dir):
    assert_fails(topo.xdpfwd(pin_dir, "del", "p1"), 1, "p1 has no xdpfwd entry")
    topo.ok(pin_dir, "add", "p1", "p2")
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "del", "p2"), 1, "p2 has no xdpfwd entry", "xdpfwd list")
    assert snapshot(topo, pin_dir) == before


def bridge(topo, name: str = "xbr0") -> str:
    """A bridge in the forwarder namespace: a device without native XDP."""
    sh("ip", "-n", topo.fwd, "link", "add", name, "type", "bridge")
    sh("ip", "-n", topo.fwd, "link", "set", name, "up")
    return name


def test_failed_attach_rolls_everything_back(topo, pin_dir):
    # Native XDP on a bridge is refused: the second attach fails after the first port
    # was attached and the pins (loss accounting included) were created.
    br = bridge(topo)
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "add", "p1", br, "-b", "--mode", "native"), 3, br)
    assert snapshot(topo, pin_dir) == before
    assert not os.path.exists(pin_dir)


def test_failed_attach_keeps_an_existing_setup(make_topo, pin_dir):
    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    br = bridge(topo)
    before = snapshot(topo, pin_dir)
    assert_fails(topo.xdpfwd(pin_dir, "add", "p2", br, "-b", "--mode", "native"), 3, br)
    assert snapshot(topo, pin_dir) == before
    assert topo.ping(1, topo.host(2).ip) == 3


@pytest.mark.parametrize(
    "args",
    [
        ["add", "p1", "p4"],
        ["add", "p1", "p2", "p4"],
        ["multicast", "add", "239.1.1.1", "--from", "p1", "--to", "p4"],
    ],
    ids=["entry", "balanced", "multicast"],
)
def test_a_port_to_send_to_deleted_while_the_lock_is_awaited_is_refused(make_topo, pin_dir, args):
    topo = make_topo(4)
    topo.ok(pin_dir, "add", "p3", "p2")
    before = topo.ok(pin_dir, "save").stdout
    fd = os.open(pin_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another writer holds it
        waiting = topo.start(pin_dir, *args)
        time.sleep(1.5)  # it resolved p4 by now, and waits for the lock
        sh("ip", "-n", topo.fwd, "link", "del", "p4")
    finally:
        os.close(fd)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 2, err
    assert err == "error: no such interface: p4 (it went away meanwhile)\n"
    assert topo.ok(pin_dir, "save").stdout == before and topo.xdp("p1") is None


def test_apply_resolves_its_file_against_the_devices_there_are_under_the_lock(make_topo, pin_dir):
    topo = make_topo(4)
    balanced = topo.config_file({"forward": [{"from": "p1", "to": ["p2", "p4"]}]})
    single = topo.config_file({"forward": [{"from": "p3", "to": "p4"}]})
    topo.ok(pin_dir, "add", "p3", "p2")
    fd = os.open(pin_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another writer holds it
        applies = [topo.start(pin_dir, "apply", path) for path in (balanced, single)]
        time.sleep(1.5)  # they read the file's devices by now, and wait for the lock
        sh("ip", "-n", topo.fwd, "link", "del", "p4")
    finally:
        os.close(fd)
    (out, err), (_, err2) = (proc.communicate(timeout=60) for proc in applies)
    assert applies[0].returncode == 0, err  # p4, a balanced entry's port, is taken as down
    assert "p4 does not exist: taken as down" in err and "balance p1 over p2, p4" in out
    assert applies[1].returncode == 2, err2  # an entry's egress: the file names no device
    assert f"{single}:" in err2 and "no such interface: p4" in err2
    (row,) = topo.list_json(pin_dir)["entries"]
    ports = {p["name"]: p["buckets"] for p in row["balance"]["ports"]}
    assert row["ingress"]["ifname"] == "p1" and ports == {"p2": 256, "p4": 0}
    # Its ingress deleted and made again meanwhile: the file names it, and it is there.
    fd = os.open(pin_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        again = topo.start(pin_dir, "apply", balanced)
        time.sleep(1.5)
        sh("ip", "-n", topo.fwd, "link", "del", "p1")
        topo.plug(topo.host(1))
    finally:
        os.close(fd)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0 and "attach to p1" in out, err
    assert topo.udp_arrives(1, 2, 10) == 10


def test_a_device_deleted_while_add_compiles_is_said_and_nothing_changes(
    make_topo, pin_dir, tmp_path, monkeypatch
):
    topo = make_topo(3)
    topo.ok(pin_dir, "add", "p3", "p2")
    program = tmp_path / "pass_a.c"
    program.write_text("int pass_a(struct xdp_md *ctx)\n{\n\treturn XDP_PASS;\n}\n")
    before = topo.ok(pin_dir, "save").stdout
    compile_it = entries.prog_fd

    def deleted_while_compiling(c, spec, user):
        sh("ip", "-n", topo.fwd, "link", "del", "p2")
        return compile_it(c, spec, user)  # then the entry to p2 is refused: EINVAL

    monkeypatch.setattr(entries, "prog_fd", deleted_while_compiling)
    spec = EgressSpec(program="user", user_file=str(program))
    p1, p2 = (Iface(ifindex_of(topo, name), name) for name in ("p1", "p2"))
    with in_netns(topo.fwd), pytest.raises(DeviceGone) as gone:
        forwarding.add(PinDir.parse(pin_dir), p1, p2, egress_spec=spec)
    monkeypatch.undo()
    assert str(gone.value) == "p2 went away during the change: undone"
    assert topo.xdp("p1") is None
    assert "p1" not in topo.ok(pin_dir, "save").stdout and before.count("p3") == 1


def ifindex_of(topo, name: str) -> int:
    return json.loads(sh("ip", "-n", topo.fwd, "-j", "link", "show", name).stdout)[0]["ifindex"]


def test_a_down_cut_short_leaves_pins_the_next_down_removes(make_topo, pin_dir, monkeypatch):
    # Cut short after the namespace link went: it was unpinned in any order, and the pins
    # left were said to be "tied to no network namespace (made by an earlier xdpfwd ...)".
    topo = make_topo(2)
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    unlink = os.unlink

    def killed_after_the_netns_link(path):
        unlink(path)
        if os.path.basename(path) == "netns":
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "unlink", killed_after_the_netns_link)
    with in_netns(topo.fwd), pytest.raises(KeyboardInterrupt):
        forwarding.down(PinDir.parse(pin_dir))
    monkeypatch.undo()
    assert topo.ok(pin_dir, "list").stdout.startswith("no forwarding entries")
    topo.ok(pin_dir, "add", "p1", "p2", "-b")
    assert topo.ping(1, topo.host(2).ip) == 3
    topo.ok(pin_dir, "down")
    assert not os.path.exists(pin_dir)
