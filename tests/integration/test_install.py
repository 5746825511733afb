"""`make install` into a temporary prefix: the command, its man page where man finds
it, completions the shells load, and the systemd units (apply at boot, follow) that
name the installed command."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args, **env):
    return subprocess.run(
        args, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_install_puts_everything_where_the_system_looks(tmp_path):
    prefix = tmp_path / "prefix"
    installed = run(str(ROOT / "scripts" / "install.sh"), str(prefix))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    xdpfwd = prefix / "bin" / "xdpfwd"
    assert run(str(xdpfwd), "--version").stdout.startswith("xdpfwd, version")
    assert "Examples:" in run(str(xdpfwd), "help", "add").stdout

    manpath = str(prefix / "share" / "man")
    found = run("man", "-w", "xdpfwd", MANPATH=manpath)
    assert found.stdout.strip() == f"{manpath}/man8/xdpfwd.8", found.stderr

    bash = prefix / "share/bash-completion/completions/xdpfwd"
    assert run("bash", "-n", str(bash)).returncode == 0
    assert "_XDPFWD_COMPLETE" in bash.read_text()
    assert (prefix / "share/zsh/site-functions/_xdpfwd").stat().st_size > 0
    assert (prefix / "share/fish/vendor_completions.d/xdpfwd.fish").stat().st_size > 0

    for name in ("xdpfwd.service", "xdpfwd-follow.service"):
        unit = prefix / "lib/systemd/system" / name
        execs = [line for line in unit.read_text().splitlines() if line.startswith("Exec")]
        assert execs and all(line.split("=", 1)[1].startswith(f"{xdpfwd} ") for line in execs)
        verified = run("systemd-analyze", "verify", str(unit), MANPATH=manpath)
        assert verified.returncode == 0, (name, verified.stderr)
    follow = (prefix / "lib/systemd/system/xdpfwd-follow.service").read_text()
    assert f"ExecStart={xdpfwd} follow\n" in follow
