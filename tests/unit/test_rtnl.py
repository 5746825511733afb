"""The netlink client's encoding and decoding: attributes, replies, the kernel's errors
(with and without an extended ack message)."""

import errno
import struct

import pytest

from xdpfwd.kernel import rtnl


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """As the kernel puts one: its length says the unpadded size, padding follows."""
    unpadded = rtnl.HEADER.pack(rtnl.HEADER.size + len(body), kind, flags, seq, 0) + body
    return unpadded + bytes(-len(unpadded) % 4)


def test_attributes_are_padded_and_read_back_with_flag_bits_cleared():
    data = (
        rtnl.string(3, "p1") + rtnl.nested(43, rtnl.u32(3, 4), rtnl.s32(1, -1)) + rtnl.u32(4, 9000)
    )
    assert len(rtnl.string(3, "p1")) == 8  # 4 of header, "p1\0", one byte of padding
    attrs = rtnl.parse_attrs(data)
    assert set(attrs) == {3, 43, 4}
    assert rtnl.as_str(attrs[3]) == "p1" and rtnl.as_int(attrs[4]) == 9000
    xdp = rtnl.parse_attrs(attrs[43])
    assert rtnl.as_int(xdp[3]) == 4 and rtnl.as_int(xdp[1], signed=True) == -1


def test_a_datagram_holds_several_messages():
    data = message(16, 0x2, 7, b"abc") + message(rtnl.NLMSG_DONE, 0, 7, b"\0" * 4)
    assert [(kind, seq, body) for kind, _, seq, body in rtnl.messages(data)] == [
        (16, 7, b"abc"),
        (rtnl.NLMSG_DONE, 7, b"\0" * 4),
    ]


def error_body(code: int, request: bytes, flags: int, text: str | None) -> bytes:
    echoed = request[: rtnl.HEADER.size] if flags & rtnl.NLM_F_CAPPED else request
    tlvs = rtnl.string(rtnl.NLMSGERR_ATTR_MSG, text) if text else b""
    return struct.pack("=i", -code if code else 0) + echoed + tlvs


REQUEST = message(rtnl.RTM_SETLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, 1, b"x" * 23)


def test_an_ack_is_no_error():
    assert rtnl._error(0, error_body(0, REQUEST, 0, None)) is None


@pytest.mark.parametrize("capped", [False, True], ids=["echoed-whole", "capped"])
def test_the_kernels_message_comes_with_its_errno(capped):
    flags = rtnl.NLM_F_ACK_TLVS | (rtnl.NLM_F_CAPPED if capped else 0)
    body = error_body(errno.EINVAL, REQUEST, flags, "Only one XDP mode flag can be set")
    error = rtnl._error(flags, body)
    assert error.errno == errno.EINVAL
    assert error.message == "Only one XDP mode flag can be set" == error.strerror


def test_without_a_message_the_error_is_the_errnos():
    error = rtnl._error(0, error_body(errno.ENODEV, REQUEST, 0, None))
    assert error.errno == errno.ENODEV and error.message is None
    assert error.strerror == "No such device"


class ScriptedSocket:
    """Answers each request with the next of its scripted dumps (replies' flags)."""

    def __init__(self, *dumps):
        self.dumps, self.sent = list(dumps), []

    def send(self, data):
        self.sent.append(data)

    def recv(self, size):
        seq = rtnl.HEADER.unpack_from(self.sent[-1])[3]
        flags, body = self.dumps.pop(0)
        done = message(rtnl.NLMSG_DONE, 0, seq, b"\0" * 4)
        return message(rtnl.RTM_NEWLINK, flags, seq, body) + done


def scripted(*dumps) -> tuple[rtnl.Socket, ScriptedSocket]:
    sock = rtnl.Socket.__new__(rtnl.Socket)
    sock.sock, sock._seq = ScriptedSocket(*dumps), 0
    return sock, sock.sock


def test_a_dump_the_kernel_marks_inconsistent_is_asked_again():
    sock, fake = scripted((0x2 | rtnl.NLM_F_DUMP_INTR, b"stale"), (0x2, b"fresh"))
    assert sock.request(rtnl.RTM_GETLINK, rtnl.NLM_F_DUMP, b"") == [(rtnl.RTM_NEWLINK, b"fresh")]
    assert len(fake.sent) == 2


def test_a_request_that_is_no_dump_is_never_sent_twice():
    sock, fake = scripted((rtnl.NLM_F_DUMP_INTR, b"once"), (0, b"twice"))
    assert sock.request(rtnl.RTM_GETLINK, 0, b"") == [(rtnl.RTM_NEWLINK, b"once")]
    assert len(fake.sent) == 1
