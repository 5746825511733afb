"""Multi-buffer programs and loss accounting, the parts that need no kernel: the BTF
reader, verifier messages, the flood and single-buffer deciders, legacy layouts."""

import struct
from dataclasses import replace
from types import SimpleNamespace

import pytest

from xdpfwd.kernel import netdev
from xdpfwd.kernel.bpf import btf, loader, maps
from xdpfwd.kernel.bpf import syscall as sc
from xdpfwd.model import Attachment, Iface
from xdpfwd.state import health, ports, tracing
from xdpfwd.state.pins import PinDir

from .test_maps import FakeKernel, key

# --- btf ----------------------------------------------------------------------------


class BtfBuilder:
    """A little-endian BTF blob made of INT, STRUCT, UNION and TYPEDEF types."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def _name(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def _add(self, data: bytes) -> int:
        self.types += data
        self.count += 1
        return self.count

    def int(self, name: str, size: int) -> int:
        return self._add(
            struct.pack("<III", self._name(name), 1 << 24, size) + struct.pack("<I", size * 8)
        )

    def composite(self, kind: int, name: str, size: int, members) -> int:
        head = struct.pack("<III", self._name(name), kind << 24 | len(members), size)
        body = b"".join(struct.pack("<III", self._name(m), t, off * 8) for m, t, off in members)
        return self._add(head + body)

    def typedef(self, name: str, target: int) -> int:
        return self._add(struct.pack("<III", self._name(name), btf.KIND_TYPEDEF << 24, target))

    def func(self, name: str) -> int:
        return self._add(struct.pack("<III", self._name(name), btf.KIND_FUNC << 24, 0))

    def enum(self, values: dict[str, int], wide: bool = False) -> int:
        kind, size = (btf.KIND_ENUM64, 8) if wide else (btf.KIND_ENUM, 4)
        body = b""
        for name, value in values.items():
            if wide:
                body += struct.pack("<III", self._name(name), value & 0xFFFFFFFF, value >> 32)
            else:
                body += struct.pack("<Ii", self._name(name), value)
        return self._add(struct.pack("<III", 0, kind << 24 | len(values), size) + body)

    def blob(self) -> bytes:
        header = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return header + self.types + self.strings


@pytest.fixture
def kernel_btf() -> btf.Btf:
    b = BtfBuilder()
    u32 = b.int("unsigned int", 4)
    ns_common = b.composite(
        btf.KIND_STRUCT, "ns_common", 32, [("stashed", u32, 0), ("inum", u32, 24)]
    )
    ns_t = b.typedef("ns_common_t", ns_common)
    anon = b.composite(btf.KIND_STRUCT, "", 8, [("pad", u32, 0), ("ifindex", u32, 4)])
    group = b.composite(btf.KIND_UNION, "", 8, [("", anon, 0)])
    b.composite(
        btf.KIND_STRUCT,
        "net_device",
        300,
        [("name", u32, 0), ("", group, 216), ("nd_net", u32, 264)],
    )
    b.composite(btf.KIND_STRUCT, "net", 400, [("x", u32, 0), ("ns", ns_t, 152)])
    b.enum({"XDP_FLAGS_HAS_FRAGS": 1, "XDP_FLAGS_FRAGS_PF_MEMALLOC": 2})
    b.enum({"BIG": 1 << 40}, wide=True)
    b.func("bpf_cast_to_kern_ctx")
    b.composite(btf.KIND_STRUCT, "xdp_buff", 56, [("data", u32, 0), ("flags", u32, 52)])
    return btf.Btf(b.blob())


@pytest.mark.parametrize(
    "struct_name, path, offset",
    [
        ("net_device", "nd_net", 264),
        ("net_device", "ifindex", 220),
        ("net", "ns.inum", 176),
        ("ns_common", "inum", 24),
    ],
    ids=["direct", "inside anonymous members", "member of a typedef'd member", "plain"],
)
def test_btf_offsets(kernel_btf, struct_name, path, offset):
    assert kernel_btf.offset(struct_name, path) == offset


@pytest.mark.parametrize(
    "struct_name, path", [("nope", "x"), ("net", "ns.nope"), ("net_device", "nd_net.x")]
)
def test_btf_names_what_is_missing(kernel_btf, struct_name, path):
    with pytest.raises(btf.BtfError):
        kernel_btf.offset(struct_name, path)


def test_btf_functions_and_enumerators(kernel_btf):
    b = BtfBuilder()
    b.int("unsigned int", 4)
    func = b.func("bpf_cast_to_kern_ctx")
    assert btf.Btf(b.blob()).func_id("bpf_cast_to_kern_ctx") == func == 2
    assert kernel_btf.enumerator("XDP_FLAGS_FRAGS_PF_MEMALLOC") == 2
    assert kernel_btf.enumerator("BIG") == 1 << 40
    with pytest.raises(btf.BtfError, match="no function"):
        kernel_btf.func_id("bpf_nope")
    with pytest.raises(btf.BtfError, match="no enumerator"):
        kernel_btf.enumerator("NOPE")


def test_btf_refuses_what_is_not_btf():
    with pytest.raises(btf.BtfError):
        btf.Btf(bytes(64))


def test_trace_offsets_without_btf_is_a_prerequisite_error(monkeypatch):
    def no_btf():
        raise btf.BtfError("cannot read /sys/kernel/btf/vmlinux: No such file or directory")

    monkeypatch.setattr(btf, "vmlinux", no_btf)
    with pytest.raises(loader.PrereqError, match="CONFIG_DEBUG_INFO_BTF"):
        loader.trace_offsets()


# --- loading ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "log, reason",
    [
        (
            "0: R1=ctx()\ninvalid mem access 'scalar'\nprocessed 9 insns (limit 1000000)",
            "invalid mem access 'scalar'",
        ),
        ("processed 272 insns (limit 1000000) max_states_per_insn 3 total_states 20", None),
        ("", None),
        (
            "12: (65) if r2 s> 0xffffffff goto pc-5        ; R2=1\n"
            "infinite loop detected at insn 8\n"
            "cur state: R1=1 R2=1 R6=ctx() R10=fp0 fp-8=????1\n"
            "old state: R1=P1 R2=1 R6=ctx() R10=fp0 fp-8=????1\n"
            "processed 19 insns (limit 1000000) max_states_per_insn 0 total_states 1",
            "infinite loop detected at insn 8",
        ),
        (
            "from 4 to 6: R0=1 R10=fp0\n6: R0=1 R10=fp0\n; return XDP_TX;\n"
            "R2 !read_ok\nprocessed 7 insns (limit 1000000)",
            "R2 !read_ok",
        ),
    ],
    ids=["verifier error", "refused after verification", "no log", "endless loop", "trace"],
)
def test_verifier_reason(log, reason):
    assert sc.ProgLoadError(22, "load program x", log).reason() == reason


def test_a_refusal_after_verification_names_the_flags():
    e = sc.ProgLoadError(22, "load program x", "processed 5 insns (limit 1000000)")
    assert "BPF_F_XDP_HAS_FRAGS" in loader._load_reason(e)
    assert loader._load_reason(sc.ProgLoadError(1, "load", "")) == "Operation not permitted"


def test_multi_buffer_programs_test_the_frags_flag_when_the_kernel_has_the_kfunc(
    monkeypatch, kernel_btf
):
    monkeypatch.setattr(btf, "vmlinux", lambda: kernel_btf)
    assert loader.frags_defines(False) == {"XDPFWD_FRAGS": 0}
    assert loader.frags_defines(True) == {
        "XDPFWD_FRAGS": 1,
        "XDPFWD_KERN_CTX": 1,
        "XDPFWD_KERN_CTX_CALL": loader.KERN_CTX_CALL,
        "XDPFWD_XDP_BUFF_FLAGS_OFF": 52,
        "XDPFWD_XDP_FLAGS_HAS_FRAGS": 1,
    }


def test_multi_buffer_programs_call_the_helper_on_older_kernels(monkeypatch):
    b = BtfBuilder()
    b.composite(btf.KIND_STRUCT, "xdp_buff", 56, [("flags", b.int("unsigned int", 4), 52)])
    monkeypatch.setattr(btf, "vmlinux", lambda: btf.Btf(b.blob()))  # no kfunc: before 6.2
    assert loader.frags_defines(True) == {"XDPFWD_FRAGS": 1}


def test_placeholder_calls_become_kfunc_calls(monkeypatch, kernel_btf):
    monkeypatch.setattr(btf, "vmlinux", lambda: kernel_btf)
    helper_call = sc.insn(0x85, imm=65)  # bpf_xdp_get_buff_len stays as it is
    insns = sc.insn(0xBF, dst=6, src=1) + sc.insn(0x85, imm=loader.KERN_CTX_CALL) + helper_call
    patched = loader._with_kfunc_calls(insns)
    assert patched[:8] == insns[:8] and patched[16:] == helper_call
    kfunc = kernel_btf.func_id("bpf_cast_to_kern_ctx")
    assert patched[8:16] == sc.insn(0x85, src=2, imm=kfunc)  # BPF_PSEUDO_KFUNC_CALL


def test_prog_flags_follow_the_frags_decision():
    assert loader.xdp_prog_flags(True) == sc.BPF_F_XDP_HAS_FRAGS == 32
    assert loader.xdp_prog_flags(False) == 0


def test_prog_flags_record(monkeypatch):
    kernel = FakeKernel(
        monkeypatch, {"/pins/prog_flags": sc.MapInfo(sc.MAP_TYPE_ARRAY, 1, 4, 4, 1, "x")}
    )
    kernel.stores["/pins/prog_flags"][key(0)] = struct.pack("=I", 32)
    assert maps.read_prog_flags("/pins/prog_flags") == 32

    def absent(path):
        raise FileNotFoundError(2, path)

    monkeypatch.setattr(sc, "obj_get", absent)
    assert maps.read_prog_flags("/pins/prog_flags") is None


@pytest.mark.parametrize(
    "value_size, too_big", [(64, 0), (80, 7)], ids=["older pin dir", "current"]
)
def test_port_stats_of_either_layout(monkeypatch, value_size, too_big):
    kernel = FakeKernel(
        monkeypatch,
        {
            "/s": sc.MapInfo(sc.MAP_TYPE_PERCPU_ARRAY, 2, 4, value_size, maps.STATS_SLOTS, "x"),
            "/s_hi": sc.MapInfo(sc.MAP_TYPE_PERCPU_HASH, 3, 4, value_size, maps.MAX_PORTS, "x"),
        },
    )
    fields = [10, 1000, 0, 0, 0, 0, 0, 0] + ([too_big, too_big * 8000] if value_size == 80 else [])
    per_cpu = struct.pack(f"={len(fields)}Q", *fields)
    kernel.stores["/s"][key(5)] = per_cpu + bytes(value_size)
    stats = maps.SlottedStats("/s", maps.PortStats).read(5)
    assert stats.redirect_packets == 10 and stats.too_big_packets == too_big
    assert stats.rx_packets == 10 + too_big


# --- deciders -----------------------------------------------------------------------


def link(mtu, name="p1"):
    return netdev.Link(2, name, "veth", True, False, mtu, 0, None)


@pytest.mark.parametrize(
    "frags, mtu, warned",
    [
        (True, 1500, False),
        (True, netdev.SINGLE_BUFFER_MTU, False),
        (True, netdev.SINGLE_BUFFER_MTU + 1, True),
        (True, 9000, True),
        (False, 9000, False),
    ],
    ids=["small MTU", "one page exactly", "one byte over", "jumbo", "single-buffer programs"],
)
def test_flood_problem(frags, mtu, warned):
    found = health.flood_problems([2], {2: link(mtu)}, frags)
    assert bool(found) == warned
    if warned:
        (problem,) = found
        assert problem.kind == "too_big_to_flood" and problem.warn_only
        assert (problem.ifindex, problem.port) == (2, "p1")
        assert "too big to flood" in problem.text and f"MTU {mtu}" in problem.text
        assert str(netdev.SINGLE_BUFFER_MTU) in problem.fix
        assert problem.line == f"{problem.text} (fix: {problem.fix})"


def test_flood_warnings_skip_gone_members():
    links = {2: link(9000)}
    assert len(health.flood_warnings([2, 7], links, frags=True)) == 1


def test_single_buffer_page_arithmetic():
    # A 4 KB page: 4096 - 256 headroom - 320 skb_shared_info - 14 Ethernet header.
    if netdev.os.sysconf("SC_PAGE_SIZE") == 4096:
        assert netdev.SINGLE_BUFFER_MTU == 3506


@pytest.mark.parametrize(
    "frags, recorded_supported, mtu, hint",
    [
        (True, True, 9000, False),
        (False, True, 9000, True),
        (False, True, 1500, False),
        (False, False, 9000, False),
    ],
    ids=[
        "multi-buffer dir",
        "single-buffer dir, jumbo port",
        "single-buffer dir, small MTU",
        "kernel without frags",
    ],
)
def test_single_buffer_hint(monkeypatch, frags, recorded_supported, mtu, hint):
    monkeypatch.setattr(sc, "frags_supported", lambda: recorded_supported)
    monkeypatch.delenv("XDPFWD_PIN_DIR", raising=False)
    dp = SimpleNamespace(frags=frags, pins=PinDir("/sys/fs/bpf/x"))
    found = ports.single_buffer_hint(dp, link(mtu))
    assert (found is not None) == hint
    if hint:
        assert "xdpfwd --pin-dir /sys/fs/bpf/x down" in found


def test_attachment_warns_only_when_it_fell_back():
    port = Iface(2, "p1")
    assert Attachment(port, "native", True).warning is None
    text = Attachment(port, "generic", True, fallback="veth: Peer MTU is too large").warning
    assert text == "p1: native XDP refused (veth: Peer MTU is too large); using generic mode"


def test_loss_accounting_is_attached_only_with_every_link(tmp_path):
    pins = PinDir(str(tmp_path))
    every = {tracing.link_pin(e) for e in tracing.EVENTS}
    assert tracing.is_attached(pins, every | {"fwd"})
    assert not tracing.is_attached(pins, every - {tracing.link_pin("xdp_exception")})
    assert set(tracing.EVENTS) == {"xdp_devmap_xmit", "xdp_redirect_err", "xdp_exception"}
    assert all(len(name) <= 15 for name in loader.TRACE_FUNCS.values())  # kernel name limit


def test_add_says_why_auto_chose_generic():
    from .fake_ops import FakeOps
    from .test_cli import invoke

    class Fallback(FakeOps):
        def add(self, pins, ingress, egress, **kwargs):
            result = super().add(pins, ingress, egress, **kwargs)
            refused = Attachment(ingress, "generic", True, fallback="veth: Peer MTU is too large")
            return replace(result, attachments=[refused], warnings=("loss accounting is off",))

    result, _ = invoke(["add", "eth1", "eth2"], ops=Fallback())
    assert result.exit_code == 0
    assert "eth1: attached (generic mode)" in result.stdout
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "warning: eth1: native XDP refused (veth: Peer MTU is too large); using generic mode"
    )
    assert lines[1] == "warning: loss accounting is off"
