"""The pin directory: where it may live (bpffs), its lock, and its removal."""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from xdpfwd.errors import InputError, PrereqError

DEFAULT_PIN_DIR = "/sys/fs/bpf/xdpfwd"
BPFFS_DEFAULT_MOUNT = "/sys/fs/bpf"

# The path is compiled into the C source and into BCC section names ("maps/devmap:<path>").
_SAFE_PATH = re.compile(r"^(/[A-Za-z0-9_.@+-]+)+$")


@dataclass(frozen=True)
class PinDir:
    path: str

    @classmethod
    def parse(cls, path: str) -> PinDir:
        """Raises InputError for a path that cannot hold xdpfwd's pins."""
        path = os.path.normpath(path) if path else path
        if not path or not _SAFE_PATH.match(path):
            raise InputError(
                f"pin directory {path!r} must be an absolute path made of letters, "
                "digits and . _ - + @"
            )
        return cls(path)

    def for_netns(self, netns: str) -> PinDir:
        """The pin directory of the same name for work inside network namespace netns."""
        return PinDir.parse(f"{self.path}@{netns}")

    def scratch(self, purpose: str) -> PinDir:
        """A pin directory of this process's own beside this one (demo, bench)."""
        return PinDir.parse(f"{self.path}-{purpose}-{os.getpid()}")

    def pin(self, name: str) -> str:
        return os.path.join(self.path, name)

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def names(self) -> set[str]:
        try:
            return set(os.listdir(self.path))
        except FileNotFoundError:
            return set()

    def ensure_bpffs(self) -> None:
        """Make sure the pin directory can live on a bpffs, mounting the default one.

        Raises PrereqError when it cannot.
        """
        mount_point, fstype = _mount_of(self.path)
        if fstype == "bpf":
            return
        if self.path.startswith(BPFFS_DEFAULT_MOUNT + "/") and mount_point != BPFFS_DEFAULT_MOUNT:
            _mount_bpffs(BPFFS_DEFAULT_MOUNT)
            return
        raise PrereqError(
            f"{self.path} is not on a BPF filesystem ({mount_point} is {fstype}); mount one "
            f"first (`mount -t bpf bpf {BPFFS_DEFAULT_MOUNT}`) or choose another --pin-dir"
        )

    @contextmanager
    def locked(self, create: bool, shared: bool = False) -> Iterator[bool]:
        """Hold a flock on the directory; yield whether this call created it.

        Exclusive for the processes that change state, which it serialises; shared
        for readers, who then never see a change half made. A waiter whose directory
        was removed meanwhile (by `down`) starts over on a fresh one.
        """
        while True:
            created = False
            if create and not self.exists():
                try:
                    os.makedirs(self.path, mode=0o700)
                    created = True
                except FileExistsError:
                    pass
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                if create:
                    continue
                yield False
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:
                    continue
                yield created
                return
            finally:
                os.close(fd)

    def remove(self) -> None:
        """Unpin everything: the kernel frees each object once nothing else holds it."""
        shutil.rmtree(self.path, ignore_errors=False)

    def remove_if_empty(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def _mount_of(path: str, mountinfo: str | None = None) -> tuple[str, str]:
    """(mount point, fs type) of the mount holding path or its nearest existing parent."""
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    probe = os.path.realpath(probe)
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    best = ("/", "?")
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        mount_point = _unescape(left.split()[4])
        fstype = right.split()[0]
        inside = probe == mount_point or probe.startswith(mount_point.rstrip("/") + "/")
        # Later lines stack over earlier ones on the same mount point.
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, fstype)
    return best


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_bpffs(target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", target.encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise PrereqError(
            f"no BPF filesystem at {target} and mounting one failed ({os.strerror(err)}); "
            f"mount it first: `mount -t bpf bpf {target}`"
        )
