"""The pin directory: where it may live (bpffs), its lock, whose it is, and its removal.

A pin directory is xdpfwd's when it holds xdpfwd's marker (maps.PIN_OWNER), which
xdpfwd pins first in a directory it uses and removes last. A directory without one
is taken over only when it is empty or holds nothing but pins xdpfwd makes, by name
and kind (what earlier versions, which had no marker, left); any other directory is
refused. Removal takes only xdpfwd's pins by name and kind, never anything else.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from xdpfwd.errors import InputError, PrereqError
from xdpfwd.kernel import netdev, netns
from xdpfwd.kernel.bpf import loader, maps, netns_link
from xdpfwd.kernel.bpf import syscall as sc

DEFAULT_PIN_DIR = "/sys/fs/bpf/xdpfwd"
PIN_DIR_ENV = "XDPFWD_PIN_DIR"  # what --pin-dir defaults to when set
BPFFS_DEFAULT_MOUNT = "/sys/fs/bpf"

# The path is compiled into the C source and into BCC section names ("maps/devmap:<path>").
_SAFE_PATH = re.compile(r"^(/[A-Za-z0-9_.@+-]+)+$")
NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 1024  # xdpfwd's bound on the whole path: pins and group names go below it

# Every pin xdpfwd makes in a pin dir, with its kind (map or prog) and the prefix of
# the kernel object's name (BCC names objects after their C symbols).
_PROGS = (
    maps.PIN_PROG_INGRESS,
    maps.PIN_PROG_EGRESS,
    maps.PIN_PROG_REWRITE,
    maps.PIN_PROG_GROUP,
    maps.PIN_PROG_MCAST,
)
_MAPS = (
    maps.PIN_FWD,
    maps.PIN_PORTS,
    maps.PIN_GROUPS,
    maps.PIN_PORT_SLOTS,
    maps.PIN_GROUP_SLOTS,
    maps.PIN_FWD_SLOTS,
    maps.PIN_PORT_STATS,
    maps.PIN_PORT_STATS + maps.PIN_HI_SUFFIX,
    maps.PIN_ENTRY_STATS,
    maps.PIN_ENTRY_STATS + maps.PIN_HI_SUFFIX,
    maps.PIN_PAIR_STATS,
    maps.PIN_REWRITE,
    maps.PIN_USER_PROGS,
    maps.PIN_TX_EVENTS,
    maps.PIN_ENTRY_INVALID,
    maps.PIN_ENTRY_BASE,
    maps.PIN_RETIRED,
    maps.PIN_BALANCE,
    maps.PIN_BALANCE + maps.PIN_HI_SUFFIX,
    maps.PIN_BUCKETS,
    maps.PIN_INTENT,
    maps.PIN_PROG_FLAGS,
    # Multicast groups (their devmaps are held by mcast_groups, never pinned).
    maps.PIN_MCAST_SOURCES,
    maps.PIN_MCAST_GROUPS,
    maps.PIN_MCAST_STATS,
    maps.PIN_MCAST_COPIES,
    maps.PIN_MCAST_PORT_STATS,
    maps.PIN_MCAST_PORTS,
    maps.PIN_MCAST_PORT_STATS + maps.PIN_HI_SUFFIX,
)
KNOWN_PINS: dict[str, tuple[str, str]] = {
    **{name: ("prog", "xdpfwd_") for name in _PROGS},
    # Loss accounting: each tracepoint's raw tracepoint program (named after its C
    # function, loader.TRACE_FUNCS) and the bpf_link that keeps it attached (links have
    # no name; unpinning the link detaches the program).
    **{maps.PIN_TRACE_PROG_PREFIX + event: ("prog", "xdpfwd_tp_") for event in loader.TRACE_FUNCS},
    **{maps.PIN_TRACE_LINK_PREFIX + event: ("link", "") for event in loader.TRACE_FUNCS},
    # Earlier versions' TRACEPOINT_PROBE(xdp, event) programs, which BCC names
    # "xdp__<event>", cut to 15 bytes.
    **{maps.PIN_TRACE_LEGACY_PREFIX + event: ("prog", "xdp__") for event in loader.TRACE_FUNCS},
    **{name: ("map", "xdpfwd_") for name in _MAPS},
    # Told by its program's name and its kind, or an earlier version's map (netns_link).
    maps.PIN_NETNS: ("link", netns_link.PROG_NAME),
}
GROUP_PIN = ("map", "xg_")  # group/<name>: each broadcast group's devmap


@dataclass(frozen=True)
class Survey:
    """What a pin directory holds, as far as ownership goes."""

    exists: bool
    marked: bool = False  # holds xdpfwd's marker
    ours: tuple[str, ...] = ()  # xdpfwd's pins by name and kind (group/NAME included)
    foreign: tuple[str, ...] = ()  # anything else

    @property
    def empty(self) -> bool:
        return not (self.marked or self.ours or self.foreign)

    @property
    def owned(self) -> bool:
        """xdpfwd's: marked, or (made by a version without the marker) all its own."""
        return self.marked or (bool(self.ours) and not self.foreign)


@dataclass(frozen=True)
class PinDir:
    path: str

    @classmethod
    def parse(cls, path: str) -> PinDir:
        """Raises InputError for a path that cannot hold xdpfwd's pins."""
        path = os.path.normpath(path) if path else path
        if not path or not _SAFE_PATH.match(path):
            raise InputError(
                f"pin directory {_short(path)!r} must be an absolute path made of letters, "
                "digits and . _ - + @"
            )
        if len(path) > PATH_MAX or any(len(part) > NAME_MAX for part in path.split("/")):
            raise InputError(
                f"pin directory {_short(path)!r} is too long: at most {PATH_MAX} bytes, and "
                f"{NAME_MAX} in each name"
            )
        return cls(path)

    def for_netns(self, netns: str) -> PinDir:
        """The pin directory of the same name for work inside network namespace netns.
        Raises InputError for one that already is (its own would be a new, empty one)."""
        if self.path.endswith(f"@{netns}"):
            raise InputError(
                f"--pin-dir {self.path} is already the directory of --netns {netns}: give "
                f"--pin-dir {self.path.removesuffix(f'@{netns}')}"
            )
        return PinDir.parse(f"{self.path}@{netns}")

    def scratch(self, purpose: str) -> PinDir:
        """A pin directory of this process's own beside this one (demo, bench)."""
        return PinDir.parse(f"{self.path}-{purpose}-{os.getpid()}")

    def pin(self, name: str) -> str:
        return os.path.join(self.path, name)

    def command(self, words: str, netns_name: str | None = None) -> str:
        """The command line that runs `xdpfwd words` on this directory, for hints: one
        without its --pin-dir (and --netns) would act on another directory. It leaves
        --pin-dir out only for the default directory with XDPFWD_PIN_DIR unset, which
        sudo and other shells would not pass on. netns_name: the named namespace it
        serves (default: the one this runs in)."""
        path, options = self.path, ""
        base, _, suffix = path.rpartition("@")
        if base and (suffix == netns_name if netns_name else netns.is_current(suffix)):
            path, options = base, f" --netns {suffix}"  # made by --netns NAME
        if path != DEFAULT_PIN_DIR or os.environ.get(PIN_DIR_ENV, path) != path:
            options = f" --pin-dir {path}{options}"
        return f"xdpfwd{options} {words}"

    def rebuild_hint(self) -> str:
        """The commands that rebuild the directory's pins with this xdpfwd."""
        steps = (self.command(words) for words in ("save -o FILE", "down", "apply FILE"))
        return f"`{' && '.join(steps)}`"

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def names(self) -> set[str]:
        try:
            return set(os.listdir(self.path))
        except FileNotFoundError:
            return set()

    def known_names(self) -> set[str]:
        """The names in the directory that xdpfwd's pins have (the kind unchecked)."""
        return self.names() & set(KNOWN_PINS)

    def ensure_bpffs(self) -> None:
        """Make sure the pin directory can live on a bpffs, mounting the default one.

        Raises PrereqError when it cannot mount it, InputError for a path off bpffs.
        """
        mount_point, fstype = _mount_of(self.path)
        if fstype == "bpf":
            if not _seen_from_outside(mount_point):
                raise PrereqError(
                    f"the bpffs at {mount_point} was mounted in this process's own mount "
                    "namespace (as under `ip netns exec`), which ends with its last "
                    "process, pins and all, and would leave its programs attached: use "
                    f"`{self._from_outside()}`, or a bpffs mounted where it lasts"
                )
            return
        if self.path.startswith(BPFFS_DEFAULT_MOUNT + "/") and mount_point != BPFFS_DEFAULT_MOUNT:
            if not mounts_last():
                raise PrereqError(
                    f"no BPF filesystem at {BPFFS_DEFAULT_MOUNT}, and this process has a mount "
                    "namespace of its own (as `ip netns exec` makes), where one mounted now "
                    "would vanish with its last process, pins and all, and leave its programs "
                    "attached: use "
                    f"`{self._from_outside()}`, or mount one first (`mount -t bpf bpf "
                    f"{BPFFS_DEFAULT_MOUNT}`) where it lasts"
                )
            _mount_bpffs(BPFFS_DEFAULT_MOUNT)
            return
        raise self._not_on_bpffs(mount_point, fstype)

    def _not_on_bpffs(self, mount_point: str, fstype: str) -> InputError:
        # A path the user chose off bpffs is bad usage, whether it exists yet or not
        # (only the default mount point is xdpfwd's to mount).
        return InputError(
            f"--pin-dir {self.path} is not on a BPF filesystem ({mount_point} is {fstype}); "
            f"choose a directory on one (such as under {BPFFS_DEFAULT_MOUNT})"
        )

    def _from_outside(self) -> str:
        """What reaches this directory's namespace from a shell outside `ip netns exec`:
        --netns with the namespace's name (pins then go to PIN_DIR@NAME)."""
        name = netns.current_name() or "NAME"
        served = self if self.path.endswith(f"@{name}") else PinDir(f"{self.path}@{name}")
        return served.command("...", netns_name=name)

    def _check_hidden(self) -> None:
        """Raises PrereqError when the directory may exist where this process cannot
        see it: the default bpffs is not mounted in a mount namespace of this process's
        own (as `ip netns exec` makes, with a fresh /sys), where "nothing set up" would
        be a wrong answer (and `save` an empty backup)."""
        mount_point, fstype = _mount_of(self.path)
        if fstype == "bpf" and not _seen_from_outside(mount_point):
            raise PrereqError(
                f"the bpffs at {mount_point} was mounted in this process's own mount "
                f"namespace (as under `ip netns exec`), so {self.path} as it lasts cannot "
                f"be seen: use `{self._from_outside()}` instead"
            )
        if not self.path.startswith(BPFFS_DEFAULT_MOUNT + "/"):
            return
        if mount_point != BPFFS_DEFAULT_MOUNT and not mounts_last():
            raise PrereqError(
                f"no BPF filesystem at {BPFFS_DEFAULT_MOUNT} in this process's own mount "
                f"namespace (as `ip netns exec` makes), so {self.path} cannot be seen: use "
                f"`{self._from_outside()}` instead"
            )

    def check_path(self) -> bool:
        """Whether the directory exists; raises InputError when the path cannot be a pin
        directory (not a directory, a symbolic link, a mount point, not on a bpffs)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            self._check_hidden()
            self._check_parent()
            return False
        except PermissionError as e:
            raise _no_access(self.path, e) from None
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                raise InputError(
                    f"--pin-dir {self.path}: part of the path is not a directory"
                ) from None
            raise InputError(f"--pin-dir {self.path}: {e.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise InputError(
                f"--pin-dir {self.path} is a symbolic link; give the directory it leads to"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise InputError(
                f"--pin-dir {self.path} is not a directory (a pinned object or a file); "
                "choose another --pin-dir"
            )
        if os.path.ismount(self.path):
            raise InputError(
                f"--pin-dir {self.path} is a mount point (such as the bpffs root, which "
                f"every BPF tool shares); give a directory of xdpfwd's own inside it, "
                f"e.g. {self.pin('xdpfwd')}"
            )
        mount_point, fstype = _mount_of(self.path)
        if fstype != "bpf":
            raise self._not_on_bpffs(mount_point, fstype)
        return True

    def _check_parent(self) -> None:
        """Raises InputError (as the first change would) when the
        directory, which does not exist, could not be made: xdpfwd makes only the last
        component, on a bpffs (or below the default mount point, where the first change
        mounts one)."""
        parent = os.path.dirname(self.path)
        if not _is_dir(parent):
            raise InputError(f"--pin-dir {self.path}: its parent directory {parent} does not exist")
        mount_point, fstype = _mount_of(parent)
        if fstype != "bpf" and parent != BPFFS_DEFAULT_MOUNT:
            raise self._not_on_bpffs(mount_point, fstype)

    def survey(self, full: bool = False) -> Survey:
        """What the directory holds. With a marker and without full, the rest is not
        looked at. Raises InputError (check_path), PrereqError (no access)."""
        if not self.check_path():
            return Survey(exists=False)
        names = self._listdir(self.path)
        marked = maps.PIN_OWNER in names and _is_marker(self.pin(maps.PIN_OWNER))
        if marked and not full:
            return Survey(exists=True, marked=True)
        ours, foreign = [], []
        for name in sorted(names - ({maps.PIN_OWNER} if marked else set())):
            if name == maps.PIN_GROUP_DIR and _is_dir(self.pin(name)):
                for group in sorted(self._listdir(self.pin(name))):
                    relative = f"{name}/{group}"
                    (ours if _is_pin(self.pin(relative), GROUP_PIN) else foreign).append(relative)
                if not self._listdir(self.pin(name)):
                    ours.append(name)
            elif name == maps.PIN_NETNS:
                (ours if self._netns_pin_is_ours() else foreign).append(name)
            elif name in KNOWN_PINS and _is_pin(self.pin(name), KNOWN_PINS[name]):
                ours.append(name)
            else:
                foreign.append(name)
        return Survey(True, marked, tuple(ours), tuple(foreign))

    def impostors(self) -> tuple[str, ...]:
        """Pins under names xdpfwd gives its own that hold another kind of object or
        one of another name: made by something else, not to be read or written."""
        return tuple(
            name
            for name in sorted(self._listdir(self.path))
            if name in KNOWN_PINS
            and name != maps.PIN_NETNS  # its own check: an earlier version's is a map
            and not _is_pin(self.pin(name), KNOWN_PINS[name])
        )

    def holds_group(self, name: str) -> bool:
        """Whether group/<name> is one of xdpfwd's broadcast group devmaps: a pin or
        directory someone else put there is no group, and is not to be touched."""
        return _is_pin(self.pin(f"{maps.PIN_GROUP_DIR}/{name}"), GROUP_PIN)

    def _netns_pin_is_ours(self) -> bool:
        try:
            return netns_link.read(self.pin(maps.PIN_NETNS)).kind in ("link", "earlier")
        except PermissionError as e:
            raise _no_access(self.pin(maps.PIN_NETNS), e) from None

    def _listdir(self, path: str) -> set[str]:
        try:
            return set(os.listdir(path))
        except FileNotFoundError:
            return set()
        except PermissionError as e:
            raise _no_access(path, e) from None

    def check_owned(self, survey: Survey | None = None) -> Survey:
        """The survey, unless the directory is someone else's: raises InputError when
        it holds anything and is not xdpfwd's (nor made by an earlier xdpfwd)."""
        survey = survey or self.survey()
        if survey.exists and not survey.owned and not survey.empty:
            raise InputError(foreign_message(self.path, survey.foreign))
        return survey

    def claim(self) -> bool:
        """Make the directory xdpfwd's, with the lock held: pin the marker unless it is
        there; return True if this call pinned it. Raises InputError (someone else's
        directory), PrereqError, or BpfError."""
        survey = self.check_owned()
        if survey.marked:
            return False
        try:
            maps.create_pinned_owner(self.pin(maps.PIN_OWNER))
        except FileExistsError:
            raise InputError(foreign_message(self.path, (maps.PIN_OWNER,))) from None
        except OSError as e:
            raise PrereqError(f"marking {self.path} as xdpfwd's failed: {e.strerror}") from e
        return True

    def record_netns(self, undo) -> None:
        """Tie the directory to this thread's network namespace unless it is tied; with
        the lock held, after check_netns() (undo removes a new link). The map an earlier
        version recorded the namespace in is replaced (it could not tell when that
        namespace was gone), and so is a link detached by hand."""
        path = self.pin(maps.PIN_NETNS)
        pinned = netns_link.read(path)
        if pinned.kind == "link" and pinned.inode:
            return
        if pinned.kind in ("link", "earlier"):  # (a link detached by hand reads 0)
            os.unlink(path)
        try:
            if not netns_link.pin(path):
                return  # a kernel without namespace links: the directory stays unchecked
        except OSError as e:
            if e.errno == errno.E2BIG:
                raise PrereqError(
                    f"recording the namespace of {self.path} failed: this network namespace "
                    f"has the kernel's maximum of {netns_link.MAX_PER_NETNS} sk_lookup "
                    "programs already"
                ) from e
            raise PrereqError(f"recording the namespace of {self.path} failed: {e.strerror}") from e
        undo.callback(os.unlink, path)

    def check_netns(self, removing: bool = False) -> None:
        """Raises InputError unless the directory serves the ports of this thread's
        network namespace: its ifindexes name other devices elsewhere. Removing it
        (down) is let through once that namespace is gone, unless its program still
        runs on a device of another namespace xdpfwd can see. A directory of an
        earlier version, tied to no namespace, is taken as this one's when its program
        runs here or it has none. Raises PrereqError when the directory is out of
        sight (check_path)."""
        if not os.path.lexists(self.path):
            self._check_hidden()
            return
        try:
            if not self.check_path():  # (which refuses a path that cannot be a pin dir)
                return
            pinned = netns_link.read(self.pin(maps.PIN_NETNS))
            prog_id = self.prog_id() if pinned.kind != "link" else None
        except (PermissionError, PrereqError):
            return  # not this process's to read: what it lacks is named where it acts
        here = netns.current_inode()
        if pinned.kind == "foreign":
            raise InputError(
                f"{self.pin(maps.PIN_NETNS)} is not xdpfwd's namespace link: something else "
                "was pinned there; remove it, or choose another --pin-dir"
            )
        if pinned.kind == "link":
            if pinned.inode == here:
                return
            if pinned.inode:
                raise InputError(
                    f"{self.path} serves the ports of {netns.describe(pinned.inode)}, and this "
                    "command runs in "
                    f"{netns.describe(here)}: {self._how_to_reach(pinned.inode)}, or choose "
                    "another --pin-dir"
                )
            # Gone with its namespace, or detached by hand (then a change here re-links).
            if self.running_prog_ids(netdev.links()):
                if not removing:  # (down detaches it everywhere)
                    self._check_runs_nowhere_else(self.prog_id())
                return
            if not removing:
                raise InputError(
                    f"{self.path} served the ports of a network namespace that is gone: "
                    f"`{self.command('down')}` removes its pins"
                )
            self._check_runs_nowhere_else(self.prog_id())
            return
        if pinned.kind == "earlier" and pinned.inode == here:
            if pinned.cookie in (0, netns.current_cookie()):
                return
        if prog_id is None and not self._set_up():
            return  # nothing set up yet: any namespace's
        if self.running_prog_ids(netdev.links()):
            return  # provably this namespace's: its program runs here
        if not removing:
            why = "is not pinned" if prog_id is None else "runs on no device of this one"
            raise InputError(
                f"{self.path} is tied to no network namespace (made by an earlier xdpfwd, "
                f"or pins removed by hand), and its program {why}: run xdpfwd where its "
                f"ports are, or `{self.command('down')}` removes its pins"
            )
        self._check_runs_nowhere_else(prog_id)

    def open_prog(self) -> int | None:
        """An fd of the pinned ingress program; None when none is pinned."""
        try:
            return sc.obj_get(self.pin(maps.PIN_PROG_INGRESS))
        except FileNotFoundError:
            return None

    def prog_id(self) -> int | None:
        """The id of the pinned ingress program; None when none is pinned."""
        fd = self.open_prog()
        if fd is None:
            return None
        try:
            return sc.prog_info(fd).id
        finally:
            os.close(fd)

    def _set_up(self) -> bool:
        """Whether the directory records a configuration or ports it was set up on."""
        if os.path.lexists(self.pin(maps.PIN_INTENT)):
            return True
        try:
            fd = sc.obj_get(self.pin(maps.PIN_PORTS))
        except FileNotFoundError:
            return False
        try:
            return bool(sc.map_keys(fd, 4))
        finally:
            os.close(fd)

    def running_prog_ids(self, links: dict[int, netdev.Link]) -> set[int]:
        """The ids of this directory's ingress program on these links."""
        return self._own({link.xdp_prog_id for link in links.values() if link.xdp_prog_id})

    def _own(self, prog_ids: set[int]) -> set[int]:
        """Those of prog_ids that are this directory's ingress program: the pinned one,
        or, when its pin was removed by hand, any that uses a map pinned here (which
        nothing but its programs do)."""
        pinned = self.prog_id()
        if pinned is not None or not prog_ids:
            return prog_ids & {pinned}
        ours = self._map_ids()
        return {prog for prog in prog_ids if ours.intersection(_maps_of(prog))}

    def holder(self, prog_id: int) -> PinDir | None:
        """The other xdpfwd pin directory whose ingress program prog_id is (pinned
        there, or using maps pinned there), on any bpffs mounted in sight, those beside
        this one first; None when none is: its pins were removed by hand, or live out
        of sight (in another mount namespace)."""
        for path in _pin_dirs_in_sight(os.path.dirname(self.path)):
            other = PinDir(path)
            if other.path == self.path:
                continue
            try:
                if other._own({prog_id}):
                    return other
            except (OSError, PrereqError):
                continue  # not ours to read
        return None

    def _map_ids(self) -> set[int]:
        """The ids of the maps pinned in the directory."""
        found = set()
        for name in self._listdir(self.path):
            try:
                fd = sc.obj_get(self.pin(name))
            except OSError:
                continue  # not a pin (the group directory), or gone meanwhile
            try:
                if sc.fd_kind(fd) == "map":
                    found.add(sc.map_info(fd).id)
            finally:
                os.close(fd)
        return found

    def _how_to_reach(self, inode: int) -> str:
        """How to run a command in the live namespace of inode, for a refusal."""
        if inode == netns.INIT_NET_INODE:
            initial = netns.initial_path() or "/proc/1/ns/net"
            return f"run `nsenter --net={initial} xdpfwd --pin-dir {self.path} ...`"
        name = netns.name_of(inode)
        if name is None:
            return "run xdpfwd in that namespace (`lsns -t net` shows who holds it)"
        if self.path.endswith(f"@{name}"):  # made by --netns NAME
            return f"run `{self.command('...', name)}`"
        return f"run `nsenter --net={netns.path(name)} xdpfwd --pin-dir {self.path} ...`"

    def _check_runs_nowhere_else(self, prog_id: int | None) -> None:
        """Raises InputError when the directory's program still runs on a device of a
        named namespace other than this one (or the initial one): a namespace link
        detached by hand reads as gone, and a physical port goes back to the initial
        namespace when its own ends, its program still attached."""
        if prog_id is None:
            return
        for there in netdev.links_elsewhere():
            running = [link.ifname for link in there.links.values() if link.xdp_prog_id == prog_id]
            if running:
                raise InputError(
                    f"{self.path}'s program still runs on {', '.join(running)} in network "
                    f"namespace {there.label}: `nsenter --net={there.path} xdpfwd --pin-dir "
                    f"{self.path} down` there detaches it and removes the pins"
                )

    def unmark(self) -> None:
        """Remove the marker (undo of a claim() whose change failed)."""
        try:
            os.unlink(self.pin(maps.PIN_OWNER))
        except FileNotFoundError:
            pass

    @contextmanager
    def locked(self, create: bool, shared: bool = False) -> Iterator[bool]:
        """Hold a flock on the directory; yield whether this call created it.

        Exclusive for the processes that change state, which it serialises; shared
        for readers, who then never see a change half made. A waiter whose directory
        was removed meanwhile (by `down`) starts over on a fresh one. Only the last
        component is created: its parent must exist. Raises InputError for a path
        that cannot be a pin directory (check_path).
        """
        while True:
            created = False
            if create and not self.check_path():
                try:
                    os.mkdir(self.path, mode=0o700)
                    created = True
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    raise InputError(
                        f"--pin-dir {self.path}: its parent directory "
                        f"{os.path.dirname(self.path)} does not exist"
                    ) from None
                except PermissionError as e:
                    raise _no_access(os.path.dirname(self.path), e) from None
                except OSError as e:
                    raise InputError(f"--pin-dir {self.path}: {e.strerror}") from None
            if not create and not self.check_path():
                yield False
                return
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except FileNotFoundError:
                if create:
                    continue
                yield False
                return
            except PermissionError as e:
                raise _no_access(self.path, e) from None
            except OSError as e:
                raise InputError(f"--pin-dir {self.path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:
                    continue
                yield created
                return
            finally:
                os.close(fd)

    def remove_owned(self) -> tuple[str, ...]:
        """Unpin xdpfwd's pins (by name and kind), then the marker, then the directory
        if nothing else is left in it; return what is left (not xdpfwd's). The kernel
        frees each object once nothing else holds it. Call with the lock held."""
        survey = self.survey(full=True)
        if not survey.exists:
            return ()
        # Deepest first: a group's pin before the group directory. The namespace link
        # last: what a down cut short leaves is still tied here, for the next down.
        for name in sorted(survey.ours, key=lambda n: (-n.count("/"), n == maps.PIN_NETNS)):
            path = self.pin(name)
            try:
                if name == maps.PIN_GROUP_DIR:
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                if name != maps.PIN_GROUP_DIR or e.errno != errno.ENOTEMPTY:
                    raise
        group_dir = self.pin(maps.PIN_GROUP_DIR)
        if any(n.startswith(maps.PIN_GROUP_DIR + "/") for n in survey.ours):
            try:
                os.rmdir(group_dir)
            except OSError:
                pass  # something else is in it: left with it
        if survey.foreign:
            return survey.foreign
        self.unmark()
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
            return tuple(sorted(self.names()))  # pinned meanwhile by someone else
        return ()

    def remove_if_empty(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def unlink_if_there(path: str) -> None:
    """Remove the pin at path; one already gone is no error (an undo may find it so)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def foreign_message(path: str, foreign: tuple[str, ...]) -> str:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return (
        f"--pin-dir {path} is not xdpfwd's: it holds {shown}, which xdpfwd did not make; "
        "choose another --pin-dir (xdpfwd uses only directories it created)"
    )


def _short(path: str) -> str:
    return path if len(path) <= 80 else path[:60] + "..." + path[-12:]


def _maps_of(prog_id: int) -> list[int]:
    """The ids of the maps a program uses ([] where this process may not open it)."""
    try:
        fd = sc.prog_fd_by_id(prog_id)
    except OSError:
        return []
    try:
        return sc.prog_map_ids(fd)
    finally:
        os.close(fd)


# Bounds on the walk of every bpffs for pin directories: other tools' trees can be big.
_WALK_DEPTH = 6
_WALK_DIRS = 4096
# A directory holding one of these may be a pin directory (one whose marker or
# program pin was removed by hand still has its maps).
_PIN_DIR_SIGNS = frozenset({maps.PIN_OWNER, maps.PIN_PROG_INGRESS, maps.PIN_PORTS})


def _pin_dirs_in_sight(beside: str) -> Iterator[str]:
    """The directories that may be xdpfwd pin directories: beside's and its own
    subdirectories first, then those on every bpffs mounted in this mount namespace,
    breadth first, to a bounded depth and count. Walked anew on each call: `follow`
    runs for long, and a pin dir made meanwhile must be found."""
    found: set[str] = set()
    mounts = [mount_point for mount_point, fstype in _mounts() if fstype == "bpf"]
    for root, depth in ((beside, 1), *((mount, _WALK_DEPTH) for mount in mounts)):
        for path in _walk(root, depth):
            if path not in found:
                found.add(path)
                yield path


def _walk(root: str, depth: int) -> Iterator[str]:
    """The directories from root down to depth that hold one of _PIN_DIR_SIGNS."""
    level, visited = [root], 0
    while level and depth >= 0 and visited < _WALK_DIRS:
        below = []
        for path in level[: _WALK_DIRS - visited]:
            visited += 1
            try:
                with os.scandir(path) as it:
                    entries = list(it)
            except OSError:
                continue
            if _PIN_DIR_SIGNS.intersection(e.name for e in entries):
                yield path
            below += sorted(e.path for e in entries if e.is_dir(follow_symlinks=False))
        level, depth = below, depth - 1


def _no_access(path: str, e: OSError) -> PrereqError:
    return PrereqError(
        f"no access to {path} ({e.strerror}): run as root, or as the user that owns the pins"
    )


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_marker(path: str) -> bool:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return maps.is_owner_marker(path)
    except FileNotFoundError:
        return False
    except PermissionError as e:
        raise _no_access(path, e) from None


def _is_pin(path: str, kind: tuple[str, str]) -> bool:
    """Whether path holds a BPF object of this kind (map or prog) and name prefix."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        found, name = sc.pinned_kind(path)
    except FileNotFoundError:
        return False
    except PermissionError as e:
        raise _no_access(path, e) from None
    except OSError:
        return False
    return found == kind[0] and name.startswith(kind[1])


def _mount_of(path: str, mountinfo: str | None = None) -> tuple[str, str]:
    """(mount point, fs type) of the mount holding path or its nearest existing parent."""
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    probe = os.path.realpath(probe)
    best = ("/", "?")
    for mount_point, fstype in _mounts(mountinfo):
        inside = probe == mount_point or probe.startswith(mount_point.rstrip("/") + "/")
        # Later lines stack over earlier ones on the same mount point.
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, fstype)
    return best


def _mounts(mountinfo: str | None = None) -> list[tuple[str, str]]:
    """(mount point, fs type) of each line of mountinfo (this mount namespace's)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        found.append((_unescape(left.split()[4]), right.split()[0]))
    return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


UNSURE = -1  # _outside_ancestor(): an ancestor that cannot be read, or just gone


def mounts_last() -> bool:
    """Whether a mount made by this process outlives it: not when its mount namespace
    is not that of every ancestor this process may look at, up to pid 1, as `ip netns
    exec` unshares one for the command it runs (maybe a shell that runs xdpfwd), nor
    when that cannot be told."""
    return _outside_ancestor() is None


def mounts_surely_vanish() -> bool:
    """Whether an ancestor in sight is surely in another mount namespace than this
    process (as under `ip netns exec`), so that a mount made here goes with it. Unlike
    not mounts_last(), an ancestor that cannot be read counts as no proof."""
    return _outside_ancestor() not in (None, UNSURE)


def _outside_ancestor() -> int | None:
    """The nearest ancestor, up to pid 1, in another mount namespace than this
    process's; None when every one in sight shares it; UNSURE."""
    try:
        ours = os.stat("/proc/self/ns/mnt").st_ino
        if os.readlink("/proc/self") != str(os.getpid()):
            return UNSURE  # /proc is another pid namespace's: its pids are not ours
    except OSError:
        return UNSURE
    pid = os.getppid()  # 0 where the parent is out of sight (a container's init)
    while pid >= 1:  # pid 1 too: a command whose parent exited has it as its parent
        try:
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino != ours:
                return pid
            pid = _parent_of(pid) if pid > 1 else 0
        except (OSError, ValueError):
            return UNSURE
    return None


def _seen_from_outside(mount_point: str) -> bool:
    """Whether the filesystem mounted at mount_point is the one the nearest ancestor
    in another mount namespace sees there: a bpffs mounted inside a namespace that
    ends with its last process is not, and its pins would go with it."""
    outside = _outside_ancestor()
    if outside is None or outside == UNSURE:
        return True
    try:
        return os.stat(mount_point).st_dev == os.stat(f"/proc/{outside}/root{mount_point}").st_dev
    except OSError:
        return False


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def _mount_bpffs(target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", target.encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise PrereqError(
            f"no BPF filesystem at {target} and mounting one failed ({os.strerror(err)}); "
            f"mount it first: `mount -t bpf bpf {target}`"
        )
