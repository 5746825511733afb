"""The XDP C source ships inside the package and is compiled with checked cflags."""

from importlib import resources

import pytest

from xdpfwd.bpf import source


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
