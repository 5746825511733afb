"""The user's files: bounded input and output that replaces only regular files."""

import io
import os
import stat
import threading

import pytest

from xdpfwd.errors import InputError, XdpfwdError
from xdpfwd.kernel import files

from .test_cli import invoke, one_error_line

# --- input -------------------------------------------------------------------------------


def test_a_regular_file_is_read_whole(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_bytes(b"version: 1\n")
    assert files.read_bounded(str(path), "configuration file") == b"version: 1\n"


def test_a_file_over_the_limit_is_refused_after_reading_one_byte_more(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * 1001)
    assert files.read_bounded(str(path), "x", limit=1001) == b"#" * 1001
    with pytest.raises(InputError, match=r"big.yaml is larger than"):
        files.read_bounded(str(path), "x", limit=1000)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/dev/zero", "a character device, not a regular file"),
        ("/proc/self/mem", "Input/output error"),
        ("/nonexistent/f.yaml", "No such file or directory"),
    ],
    ids=["dev-zero", "proc-self-mem", "missing"],
)
def test_what_is_not_a_readable_regular_file_is_one_line(path, reason):
    with pytest.raises(InputError, match=reason) as refused:
        files.read_bounded(path, "configuration file")
    assert "\n" not in str(refused.value)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="a directory, not a regular file"):
        files.read_bounded(str(tmp_path), "configuration file")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()

    def read():
        with pytest.raises(InputError, match="a FIFO"):
            files.read_bounded(str(fifo), "configuration file")
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert done.wait(5), "reading a FIFO without a writer blocked"


class _Stdin:
    def __init__(self, data: bytes, tty: bool = False):
        self.buffer = io.BytesIO(data)
        self.buffer.isatty = lambda: tty


def test_standard_input_is_read_up_to_the_limit(monkeypatch):
    monkeypatch.setattr("sys.stdin", _Stdin(b"1234"))
    assert files.read_stdin("configuration file", limit=4) == b"1234"
    monkeypatch.setattr("sys.stdin", _Stdin(b"12345"))
    with pytest.raises(InputError, match="on standard input is larger than"):
        files.read_stdin("configuration file", limit=4)
    monkeypatch.setattr("sys.stdin", _Stdin(b"", tty=True))
    with pytest.raises(InputError, match="standard input is a terminal: pipe the"):
        files.read_stdin("configuration file")


def test_bytes_that_are_not_utf8_name_their_line():
    with pytest.raises(InputError, match=r"^f.c:2: not UTF-8 text \(at byte offset 3\)$"):
        files.decode_text(b"ok\n\xff\xfe", "f.c")


# --- output ------------------------------------------------------------------------------


def test_a_regular_file_is_replaced_atomically_keeping_its_mode(tmp_path):
    target = tmp_path / "xdpfwd.prom"
    target.write_text("old\n")
    target.chmod(0o640)
    files.write_output(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["xdpfwd.prom"]


def test_a_new_file_is_created(tmp_path):
    files.write_output(str(tmp_path / "new.json"), "{}\n")
    assert (tmp_path / "new.json").read_text() == "{}\n"


def test_a_symlink_is_written_through_and_stays_a_symlink(tmp_path):
    target, link = tmp_path / "real.yaml", tmp_path / "link.yaml"
    target.write_text("old, and longer than the new text\n")
    link.symlink_to(target)
    files.write_output(str(link), "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_a_fifo_with_a_reader_is_written_in_place(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    for _ in range(100):  # until the reader has it open
        try:
            files.write_output(str(fifo), "through\n")
            break
        except XdpfwdError:
            threading.Event().wait(0.02)
    reader.join(5)
    assert got == ["through\n"] and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_fifo_nobody_reads_is_an_error_not_a_wait(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(XdpfwdError, match="no process reads it"):
        files.write_output(str(fifo), "x\n")


def device(tmp_path, name: str, minor: int) -> str:
    """The memory device /dev/<name>: a node of its own in tmp_path when root can make
    one, so that a regression replaces that node, never the host's /dev."""
    if os.geteuid() != 0:
        return f"/dev/{name}"  # nobody else may replace it anyway
    path = str(tmp_path / name)
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return path


def test_character_devices_are_written_in_place_never_replaced(tmp_path):
    null, full = device(tmp_path, "null", 3), device(tmp_path, "full", 7)
    before = os.lstat(null)
    files.write_output(null, "gone\n")
    after = os.lstat(null)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    with pytest.raises(XdpfwdError, match="No space left on device"):
        files.write_output(full, "x\n")
    assert stat.S_ISCHR(os.lstat(full).st_mode)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: str(d / "missing" / "out.json"), "directory .*missing does not exist"),
        (lambda d: str(d), "a directory"),
        (lambda d: _dangling(d), "a symbolic link to nothing usable"),
    ],
    ids=["missing-directory", "directory", "dangling-symlink"],
)
def test_unusable_output_paths_are_refused_before_writing(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(InputError, match=reason):
        files.check_output(path)
    with pytest.raises(InputError, match=reason):
        files.write_output(path, "x\n")


def _dangling(directory):
    link = directory / "dangling"
    link.symlink_to(directory / "nothing")
    return str(link)


def test_the_cli_names_the_users_path_in_one_line_before_any_work(tmp_path):
    missing = str(tmp_path / "no" / "saved.yaml")
    result, ops = invoke(["save", "-o", missing])
    assert result.exit_code == 2
    assert missing in one_error_line(result) and "does not exist" in result.stderr
    assert ops.calls == []  # refused while parsing: save never ran


def test_shown_paths_are_one_printable_line():
    assert files.shown("/tmp/a\nb") == "/tmp/a\\nb"
    assert files.shown(os.fsdecode(b"/tmp/\xff.c")) == "/tmp/\\xff.c"
