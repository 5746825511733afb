"""In-kernel traffic: UDP frames transmitted by BPF_PROG_TEST_RUN with live frames.

The generator program returns bpf_redirect(<device>), so each repetition of a test
run sends its frame out of that device; no packet generator is needed.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from xdpfwd.kernel import netns
from xdpfwd.kernel.bpf import maps
from xdpfwd.kernel.bpf import syscall as sc

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
_XDP_MD = struct.Struct("=6I")  # struct xdp_md: data, data_end, data_meta, ifindexes, queue
MIN_FRAME = 60  # Ethernet minimum without FCS
MAX_FRAME = 1514
_BATCH = 262144  # frames per test run call: short enough to stop on time


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, size: int) -> bytes:
    """A valid Ethernet/IPv4/UDP frame of size bytes (no FCS) to the benchmark port.

    Valid lengths and IP checksum matter: a bridge with netfilter drops bad frames.
    The UDP checksum is 0 (none), so the generator may rewrite the source port.
    """
    if not MIN_FRAME <= size <= MAX_FRAME:
        raise ValueError(f"frame size {size} is outside {MIN_FRAME}..{MAX_FRAME}")
    ip_len = size - 14
    udp_len = ip_len - 20
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        ip_len,
        0,
        0x4000,
        64,
        17,
        0,
        ipaddress.IPv4Address(src_ip).packed,
        ipaddress.IPv4Address(dst_ip).packed,
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", maps.BENCH_SRC_PORT, maps.BENCH_UDP_PORT, udp_len, 0)
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    frame = eth + b"\x08\x00" + ip + udp
    return frame + bytes(size - len(frame))


@contextmanager
def _on_cpu(cpu: int) -> Iterator[None]:
    """Pin the calling thread to one CPU for the body."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


class Generator:
    """Sends a frame through a generator program from inside a network namespace.

    The program's redirect target is an ifindex of that namespace. One thread per
    CPU in cpus, each pinned to its CPU (a multi-queue veth gives each its own ring).
    """

    def __init__(self, prog_fd: int, netns_name: str, frame: bytes, cpus: list[int]):
        self.prog_fd = prog_fd
        self.netns = netns_name
        self.frame = frame
        self.cpus = cpus
        self._ctx = _XDP_MD.pack(0, len(frame), 0, 0, 0, 0)

    def _run(self, repeat: int) -> None:
        sc.prog_test_run(
            self.prog_fd, self.frame, repeat, ctx=self._ctx, flags=BPF_F_TEST_XDP_LIVE_FRAMES
        )

    def send(self, count: int) -> None:
        """Send exactly count frames from the first CPU."""
        with netns.entered(self.netns), _on_cpu(self.cpus[0]):
            self._run(count)

    def run_for(self, seconds: float) -> tuple[int, float]:
        """Send on every CPU for about seconds; return (frames sent, elapsed seconds)."""
        sent = [0] * len(self.cpus)
        errors: list[BaseException] = []
        start = time.monotonic()
        deadline = start + seconds

        def worker(i: int, cpu: int) -> None:
            try:
                with netns.entered(self.netns), _on_cpu(cpu):
                    while time.monotonic() < deadline:
                        self._run(_BATCH)
                        sent[i] += _BATCH
            except BaseException as e:  # reported by the caller's thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(self.cpus)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return sum(sent), time.monotonic() - start
