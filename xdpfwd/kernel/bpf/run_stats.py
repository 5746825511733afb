"""Every program's runs and run time, as the kernel counts them while run statistics
are enabled (`bench --profile`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from xdpfwd.errors import PrereqError
from xdpfwd.kernel.bpf import syscall as sc


@contextmanager
def enabled() -> Iterator[None]:
    """Run statistics on for the block, as they were after it (raises PrereqError)."""
    try:
        fd = sc.enable_run_time_stats()
    except OSError as e:
        raise PrereqError(
            f"cannot turn on BPF run statistics: {e.strerror} (BPF_ENABLE_STATS, Linux 5.8+)"
        ) from e
    try:
        yield
    finally:
        os.close(fd)


def read() -> dict[int, sc.ProgRuns]:
    """Every loaded program's runs so far, by program id."""
    runs = {}
    prog_id = 0
    while True:
        try:
            prog_id = sc.next_prog_id(prog_id)
        except FileNotFoundError:
            return runs
        try:
            fd = sc.prog_fd_by_id(prog_id)
        except FileNotFoundError:
            continue  # unloaded since
        try:
            runs[prog_id] = sc.prog_runs(fd)
        finally:
            os.close(fd)
