"""Pin directory validation and bpffs detection."""

import pytest

from xdpfwd.errors import InputError, PrereqError
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


def test_pin_dir_outside_bpffs_is_a_prereq_error(tmp_path):
    # tmp_path is never on bpffs, and xdpfwd only mounts bpffs at /sys/fs/bpf.
    with pytest.raises(PrereqError, match="not on a BPF filesystem"):
        pins.PinDir.parse(str(tmp_path / "pins")).ensure_bpffs()
    assert not (tmp_path / "pins").exists()
