"""Generated frames are valid Ethernet/IPv4/UDP; bench rows compute medians and ratios."""

import struct

import pytest

from xdpfwd.kernel import traffic
from xdpfwd.kernel.bpf import maps
from xdpfwd.model.reports import BenchRow


@pytest.mark.parametrize("size", [60, 64, 128, 1514])
def test_udp_frame_is_valid(size):
    frame = traffic.udp_frame(
        "02:00:00:00:00:01", "02:00:00:00:00:02", "198.18.0.1", "198.18.0.2", size
    )
    assert len(frame) == size
    assert frame[:6] == bytes.fromhex("020000000002") and frame[6:12] == bytes.fromhex(
        "020000000001"
    )
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert traffic._checksum(ip) == 0  # a correct header checksums to zero
    assert struct.unpack("!H", ip[2:4])[0] == size - 14
    assert ip[9] == 17
    sport, dport, udp_len, csum = struct.unpack("!HHHH", frame[34:42])
    assert (sport, dport, udp_len, csum) == (maps.BENCH_SRC_PORT, maps.BENCH_UDP_PORT, size - 34, 0)


@pytest.mark.parametrize("size", [59, 1515])
def test_udp_frame_size_limits(size):
    with pytest.raises(ValueError):
        traffic.udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "1.1.1.1", "2.2.2.2", size)


def test_row_median_and_paired_ratio():
    # The reference drifts down over the run; each repeat's pair still says 0.5.
    row = BenchRow(
        "x", "x", "Mpps", [3.0, 2.0, 1.0], reference="base", reference_samples=[6.0, 4.0, 2.0]
    )
    assert row.median == 2.0
    assert row.ratio == 0.5
    data = row.as_dict()
    assert (data["min"], data["max"], data["ratio"], data["ratio_to"]) == (1.0, 3.0, 0.5, "base")
    assert BenchRow("t", "t", "s", [0.2]).ratio is None
