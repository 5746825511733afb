"""Pin directory validation, bpffs detection and ownership."""

import pytest

from xdpfwd.errors import InputError
from xdpfwd.kernel.bpf import maps
from xdpfwd.state import pins

MOUNTINFO = """\
22 1 0:21 / / rw - ext4 /dev/vda rw
23 22 0:22 / /sys rw - sysfs sysfs rw
24 23 0:23 / /sys/fs/bpf rw - bpf bpf rw
25 22 0:24 / /tmp rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/sys/fs/bpf/xdpfwd", ("/sys/fs/bpf", "bpf")),
        ("/sys/fs/bpf", ("/sys/fs/bpf", "bpf")),
        ("/sys/kernel", ("/sys", "sysfs")),
        ("/tmp/pins/deeper", ("/tmp", "tmpfs")),
    ],
    ids=["under-bpffs", "bpffs-root", "sysfs", "missing-dirs-under-tmpfs"],
)
def test_mount_of_finds_the_innermost_mount(path, expected):
    assert pins._mount_of(path, MOUNTINFO) == expected


def test_mount_of_without_bpffs_points_at_sysfs():
    without_bpffs = "\n".join(line for line in MOUNTINFO.splitlines() if " bpf " not in line)
    assert pins._mount_of("/sys/fs/bpf/xdpfwd", without_bpffs) == ("/sys", "sysfs")


@pytest.mark.parametrize(
    "path",
    ["relative", "", "/with space", "/colon:x", '/quote"', "/sys/fs/bpf/a\nb"],
    ids=["relative", "empty", "space", "colon", "quote", "newline"],
)
def test_unusable_pin_dirs_are_input_errors(path):
    with pytest.raises(InputError):
        pins.PinDir.parse(path)


def test_pin_dir_is_normalised():
    assert pins.PinDir.parse("/sys/fs/bpf//x/").path == "/sys/fs/bpf/x"


def test_pin_dir_outside_bpffs_is_an_input_error(tmp_path):
    # tmp_path is never on bpffs, and xdpfwd only mounts bpffs at /sys/fs/bpf.
    with pytest.raises(InputError, match="not on a BPF filesystem"):
        pins.PinDir.parse(str(tmp_path / "pins")).ensure_bpffs()
    assert not (tmp_path / "pins").exists()


@pytest.mark.parametrize(
    "path",
    ["/sys/fs/bpf/" + "a" * 256, "/sys/fs/bpf/" + "/".join(["a" * 200] * 6)],
    ids=["name-over-255-bytes", "path-over-1024-bytes"],
)
def test_pin_dirs_too_long_for_the_kernel_are_refused(path):
    with pytest.raises(InputError, match="too long") as refused:
        pins.PinDir.parse(path)
    assert len(str(refused.value)) < 300  # the path is shortened in the message


def test_a_netns_pin_dir_is_checked_again():
    with pytest.raises(InputError, match="too long"):
        pins.PinDir.parse("/sys/fs/bpf/" + "a" * 250).for_netns("n" * 10)


@pytest.mark.parametrize(
    "survey, owned, empty",
    [
        (pins.Survey(exists=True), False, True),
        (pins.Survey(True, marked=True), True, False),
        (pins.Survey(True, ours=("fwd", "prog_ingress")), True, False),
        (pins.Survey(True, ours=("fwd",), foreign=("state",)), False, False),
        (pins.Survey(True, foreign=("state",)), False, False),
        (pins.Survey(True, marked=True, ours=("fwd",), foreign=("state",)), True, False),
    ],
    ids=["empty", "marked", "earlier-version", "mixed", "foreign", "marked-with-intruder"],
)
def test_whose_a_directory_is(survey, owned, empty):
    assert survey.owned is owned and survey.empty is empty


def test_every_pin_xdpfwd_makes_is_known_by_name_and_kind():
    known = pins.KNOWN_PINS
    assert known[maps.PIN_PROG_INGRESS] == ("prog", "xdpfwd_")
    assert known[maps.PIN_FWD] == ("map", "xdpfwd_")
    assert known[maps.PIN_TRACE_LEGACY_PREFIX + "xdp_exception"] == ("prog", "xdp__")
    assert known[maps.PIN_TRACE_PROG_PREFIX + "xdp_exception"] == ("prog", "xdpfwd_tp_")
    assert known[maps.PIN_TRACE_LINK_PREFIX + "xdp_devmap_xmit"] == ("link", "")
    assert known[maps.PIN_PROG_FLAGS] == ("map", "xdpfwd_")
    assert maps.PIN_OWNER not in known  # the marker is checked on its own


def test_the_message_for_someone_elses_directory_names_what_is_there():
    message = pins.foreign_message("/sys/fs/bpf/t", ("a", "b", "c", "d", "e"))
    assert "/sys/fs/bpf/t is not xdpfwd's: it holds a, b, c and 2 more" in message


def test_a_netns_directory_given_with_its_netns_again_is_refused():
    with pytest.raises(InputError, match="give --pin-dir /sys/fs/bpf/lab$"):
        pins.PinDir("/sys/fs/bpf/lab@red").for_netns("red")
    assert pins.PinDir("/sys/fs/bpf/lab@red").for_netns("blue").path.endswith("@red@blue")


@pytest.fixture
def in_netns_named(monkeypatch):
    """Pretend this process runs in a namespace of these names (none: an unnamed one)."""
    monkeypatch.delenv(pins.PIN_DIR_ENV, raising=False)

    def run_in(*names):
        monkeypatch.setattr(pins.netns, "is_current", lambda name: name in names)

    return run_in


@pytest.mark.parametrize(
    "path, netns_names, env, expected",
    [
        (pins.DEFAULT_PIN_DIR, (), None, "xdpfwd down"),
        (pins.DEFAULT_PIN_DIR, (), pins.DEFAULT_PIN_DIR, "xdpfwd down"),
        ("/sys/fs/bpf/lab", (), None, "xdpfwd --pin-dir /sys/fs/bpf/lab down"),
        # sudo and other shells would not pass the variable on
        ("/sys/fs/bpf/lab", (), "/sys/fs/bpf/lab", "xdpfwd --pin-dir /sys/fs/bpf/lab down"),
        (pins.DEFAULT_PIN_DIR, (), "/sys/fs/bpf/lab", "xdpfwd --pin-dir /sys/fs/bpf/xdpfwd down"),
        (f"{pins.DEFAULT_PIN_DIR}@red", ("red",), None, "xdpfwd --netns red down"),
        (
            "/sys/fs/bpf/lab@red",
            ("red",),
            None,
            "xdpfwd --pin-dir /sys/fs/bpf/lab --netns red down",
        ),
        (
            "/sys/fs/bpf/lab@al",
            ("red", "al"),
            None,
            "xdpfwd --pin-dir /sys/fs/bpf/lab --netns al down",
        ),
        ("/sys/fs/bpf/lab@red", ("blue",), None, "xdpfwd --pin-dir /sys/fs/bpf/lab@red down"),
        ("/sys/fs/bpf/a@b", (), None, "xdpfwd --pin-dir /sys/fs/bpf/a@b down"),
    ],
    ids=[
        "default",
        "default, set in the environment",
        "another",
        "another, set in the environment",
        "default, another in the environment",
        "default, --netns",
        "another, --netns",
        "--netns by its second name",
        "@ of another namespace",
        "@ in an unnamed namespace",
    ],
)
def test_a_hint_names_the_directory_unless_the_command_reaches_it_alone(
    monkeypatch, in_netns_named, path, netns_names, env, expected
):
    in_netns_named(*netns_names)
    if env:
        monkeypatch.setenv(pins.PIN_DIR_ENV, env)
    assert pins.PinDir(path).command("down") == expected


def test_the_rebuild_hint_names_the_directory_in_each_step(in_netns_named):
    in_netns_named()
    xdpfwd = "xdpfwd --pin-dir /sys/fs/bpf/lab"
    assert pins.PinDir("/sys/fs/bpf/lab").rebuild_hint() == (
        f"`{xdpfwd} save -o FILE && {xdpfwd} down && {xdpfwd} apply FILE`"
    )
