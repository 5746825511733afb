"""The XDP C source ships inside the package and is compiled with checked cflags."""

from importlib import resources

import pytest

from xdpfwd.errors import PrereqError
from xdpfwd.kernel.bpf import source


def test_sources_are_package_data():
    files = resources.files("xdpfwd.bpf_src")
    for name in (source.INGRESS_SOURCE, source.COMMON_HEADER):
        assert files.joinpath(name).is_file(), name
    assert "xdpfwd_ingress" in source.read_source(source.INGRESS_SOURCE)


def test_cflags_quote_strings_and_include_the_source_dir():
    flags = source.cflags(XDPFWD_PIN_DIR="/sys/fs/bpf/x", LIMIT=3)
    assert flags[0] == f"-I{source.bpf_source_dir()}"
    assert '-DXDPFWD_PIN_DIR="/sys/fs/bpf/x"' in flags
    assert "-DLIMIT=3" in flags


@pytest.mark.parametrize("bad", ['/a"b', "/a\\b", "/a\nb"], ids=["quote", "backslash", "newline"])
def test_cflags_refuse_what_breaks_a_c_string(bad):
    with pytest.raises(ValueError):
        source.cflags(XDPFWD_PIN_DIR=bad)


def test_source_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("XDPFWD_BPF_SRC", str(tmp_path))
    assert source.bpf_source_dir() == tmp_path


def test_an_installation_without_the_source_package_is_a_prereq_error(monkeypatch):
    def missing(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.delenv("XDPFWD_BPF_SRC", raising=False)
    monkeypatch.setattr(source.resources, "files", missing)
    with pytest.raises(PrereqError, match="XDPFWD_BPF_SRC"):
        source.read_source(source.INGRESS_SOURCE)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("int only(struct xdp_md *ctx) { return XDP_PASS; }", "only"),
        (
            "static int helper(int x) { return x; }\nint main_fn(struct xdp_md *c) { return 2; }",
            "main_fn",
        ),
        ("int a(struct xdp_md *ctx) { return 2; }\nint b(struct xdp_md *ctx) { return 1; }", None),
        ("int nothing(void) { return 0; }", None),
    ],
    ids=["one", "one-among-helpers", "two", "none"],
)
def test_user_function_detection(text, expected):
    assert source.user_function(text) == expected


def test_user_egress_text_wraps_the_users_function():
    text = source.user_egress_text("int f(struct xdp_md *ctx) { return 1; }\n", "mine.c", "f")
    # The user's function gets a private, static inline name; the wrapper takes its name.
    assert "#define f __xdpfwd_user_f" in text
    assert "static __always_inline int __xdpfwd_user_f(struct xdp_md *ctx);" in text
    assert (
        text.index('#line 1 "mine.c"')
        < text.index("#undef f")
        < text.index("XDPFWD_USER_EGRESS(f)")
    )
    assert "count_egress" in text  # the entry counters are compiled in


def test_user_egress_text_refuses_a_bad_function_name():
    with pytest.raises(ValueError):
        source.user_egress_text("", "x.c", "not a name")


def test_every_tracepoint_program_is_in_the_trace_source():
    from xdpfwd.kernel.bpf import loader

    text = source.read_source(source.TRACE_SOURCE)
    for func in loader.TRACE_FUNCS.values():
        assert f"int {func}(u64 *ctx)" in text


@pytest.mark.parametrize(
    "text, func, found",
    [
        ("int f(struct xdp_md *ctx) { return XDP_PASS; }", "f", True),
        ("int f(struct xdp_md *ctx) { return XDP_PASS; }", "h", False),
        ("/* h(ctx) */ int f(struct xdp_md *ctx) { return 2; }", "h", False),
        ("static int h(int x);\nint f(struct xdp_md *c) { return h(2); }", "h", True),
    ],
    ids=["defined", "absent", "only-in-a-comment", "a-helper-it-calls"],
)
def test_a_named_function_must_be_in_the_file(text, func, found):
    assert source.mentions_function(text, func) is found


def test_verdicts_an_egress_program_cannot_give_are_found_outside_comments():
    text = "// not XDP_REDIRECT\nint f(struct xdp_md *c) { return c ? XDP_TX : XDP_ABORTED; }"
    assert source.invalid_egress_verdicts(text) == ["XDP_ABORTED", "XDP_TX"]
    assert source.invalid_egress_verdicts("int f(struct xdp_md *c) { return XDP_DROP; }") == []


def test_the_wrapper_counts_invalid_verdicts_apart():
    text = source.user_egress_text("int f(struct xdp_md *ctx) { return 1; }\n", "m.c", "f")
    assert text.index('#line 1 "xdpfwd_user.c"') < text.index('#line 1 "m.c"')
    assert "xdpfwd_entry_invalid" in text and "xdpfwd_user_verdict" in text


def test_a_source_that_cannot_be_read_is_a_prerequisite_error(monkeypatch, tmp_path):
    monkeypatch.setenv("XDPFWD_BPF_SRC", str(tmp_path))
    with pytest.raises(PrereqError) as e:
        source.ingress_text(with_egress=False)
    assert str(e.value) == (
        f"cannot read xdpfwd's XDP source {tmp_path / source.STATS_SOURCE} "
        "(No such file or directory): check XDPFWD_BPF_SRC"
    )


def test_a_compile_error_in_the_wrapper_is_said_with_the_users_line_that_caused_it():
    from xdpfwd.kernel.bpf import loader

    ours = f"{source.bpf_source_dir()}/xdpfwd_user.h:18:2: note: expanded from macro"
    unclosed = [
        "xdpfwd-wrapper:1:1: error: function definition is not allowed here",
        ours,
        "xdpfwd-wrapper:1:24: error: expected '}'",
        "e2.c:2:1: note: to match this '{'",
        "2 errors generated.",
    ]
    assert loader._first_error(unclosed) == (
        "xdpfwd-wrapper:1:24: error: expected '}' (e2.c:2:1: note: to match this '{')"
    )
    in_the_file = ["e2.c:4:9: error: use of undeclared identifier 'x'", "1 error generated."]
    assert loader._first_error(in_the_file) == in_the_file[0]
    assert loader._first_error(["warning: nothing"]) is None
