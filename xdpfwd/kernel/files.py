"""The user's files: input read with a size bound (configuration, egress programs), and
output written atomically over a regular file, or in place through anything else.

Input is read only from regular files, opened without blocking (a FIFO without a
writer, a terminal), or from standard input when asked (-), and never past
MAX_INPUT_BYTES (/dev/zero, a growing file).
Output replaces a regular file (or creates a new one) with a rename, so readers see
the old file or the new one; a symbolic link, a FIFO or a character device (/dev/stdout,
/dev/null) is opened and written in place, never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile

from xdpfwd.errors import InputError, XdpfwdError

MAX_INPUT_BYTES = 4 << 20  # 4 MiB: configuration files and egress program sources


def shown(path: str) -> str:
    """A path as one printable line (its bytes that are not UTF-8 escaped)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def read_bounded(path: str, what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The contents of the regular file at path, at most limit bytes.

    Raises InputError (one line naming what and path) for anything else: a missing
    file, a directory, a FIFO, a device, a file over the limit, a read error.
    """
    label = f"{what} {shown(path)}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"cannot read {label}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"cannot read {label}: {_kind(mode)}, not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise InputError(f"cannot read {label}: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise InputError(f"{label} is larger than {limit >> 20} MiB; xdpfwd reads no more")
    return b"".join(chunks)


def read_stdin(what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """Standard input (a pipe or a redirected file), at most limit bytes. Raises
    InputError for a terminal (nothing would be piped in), a closed one, a read error
    or more than limit bytes."""
    stream = sys.stdin.buffer if sys.stdin is not None else None
    if stream is None or stream.closed:
        raise InputError(f"cannot read {what} from standard input: it is closed")
    if stream.isatty():
        raise InputError(f"standard input is a terminal: pipe the {what} in")
    try:
        data = stream.read(limit + 1)
    except OSError as e:
        raise InputError(f"cannot read {what} from standard input: {e.strerror}") from None
    if len(data) > limit:
        raise InputError(
            f"{what} on standard input is larger than {limit >> 20} MiB; xdpfwd reads no more"
        )
    return data


def decode_text(data: bytes, label: str) -> str:
    """data as UTF-8 text; raises InputError naming the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{label}:{line}: not UTF-8 text (at byte offset {e.start})") from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_output(path: str) -> None:
    """Raises InputError unless text can be written to path: found before any work.

    A new path needs its directory; an existing path must be a regular file, or
    something written in place (a symbolic link to an existing file, a FIFO, a
    character device). Directories, block devices and sockets are refused.
    """
    _output_kind(path)


def _output_kind(path: str) -> str:
    """'replace' (a regular file or a new path) or 'in place'; raises InputError."""
    label = shown(path)
    if not path:
        raise InputError("the output path is empty")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise InputError(f"{label}: directory {shown(directory)} does not exist") from None
        return "replace"
    except OSError as e:
        raise InputError(f"{label}: {e.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        return "replace"
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError as e:
            raise InputError(f"{label}: a symbolic link to nothing usable ({e.strerror})") from None
        if stat.S_ISREG(st.st_mode):
            return "in place"
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return "in place"
    raise InputError(f"{label}: {_kind(st.st_mode)}; give a file to write")


def write_output(path: str, text: str) -> None:
    """Write text to path: atomically (a temporary file renamed over it) when path is
    a regular file or new; in place, without replacing it, through a symbolic link,
    a FIFO or a character device. Raises InputError for a path that cannot take it,
    XdpfwdError when writing fails."""
    data = text.encode()
    if _output_kind(path) == "replace":
        replace_atomically(path, data)
    else:
        _write_in_place(path, data)


def replace_atomically(path: str, data: bytes) -> None:
    """path becomes data in one rename (a temporary file beside it, synced, with the old
    file's mode). Raises XdpfwdError naming the path."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    except OSError as e:
        raise XdpfwdError(f"cannot write {shown(path)}: {e.strerror}") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".xdpfwd-")
    except OSError as e:
        raise XdpfwdError(f"cannot write {shown(path)}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise XdpfwdError(f"cannot write {shown(path)}: {e.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_in_place(path: str, data: bytes) -> None:
    # No O_CREAT: what the path leads to exists (checked); O_NONBLOCK so that a FIFO
    # nobody reads is an error (ENXIO) rather than a wait without end.
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as e:
        reason = "no process reads it" if e.errno == errno.ENXIO else e.strerror
        raise XdpfwdError(f"cannot write {shown(path)}: {reason}") from None
    try:
        os.set_blocking(fd, True)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        raise XdpfwdError(f"cannot write {shown(path)}: {e.strerror}") from None
    finally:
        os.close(fd)
