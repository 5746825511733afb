"""The lab removes only what it made: ports by alias, namespaces by record and inode."""

import json

import pytest

from xdpfwd.errors import XdpfwdError
from xdpfwd.kernel import devices as made
from xdpfwd.kernel import netdev, netns, offloads
from xdpfwd.state import lab


class FakeHost:
    """Devices of this namespace and named namespaces (name -> inode), in memory."""

    def __init__(self, monkeypatch, tmp_path, devices=(), namespaces=()):
        self.devices = {name: None for name in devices}  # name -> alias
        self.namespaces = {name: 1000 + i for i, name in enumerate(namespaces)}
        self.inodes = iter(range(5000, 6000))
        monkeypatch.setattr(lab, "RECORD_DIR", str(tmp_path / "lab"))
        monkeypatch.setattr(netdev, "links", self.links)
        monkeypatch.setattr(made, "delete_link", lambda name: self.devices.pop(name, 0) != 0)
        monkeypatch.setattr(made, "add_veth", lambda port, *a: self.devices.setdefault(port))
        monkeypatch.setattr(made, "set_alias", self.devices.__setitem__)
        monkeypatch.setattr(made, "configure", lambda *a, **k: None)
        monkeypatch.setattr(offloads, "change", lambda *a, **k: None)
        monkeypatch.setattr(netns, "names", lambda: sorted(self.namespaces))
        monkeypatch.setattr(netns, "exists", lambda name: name in self.namespaces)
        monkeypatch.setattr(netns, "create", self.create)
        monkeypatch.setattr(netns, "remove", lambda name: self.namespaces.pop(name))
        monkeypatch.setattr(netns, "entered", lambda name: _Nothing())
        monkeypatch.setattr(lab, "_namespace_inode", lambda name: self.namespaces.get(name))

    def links(self):
        return {
            i: netdev.Link(i, name, "veth", True, False, 1500, 0, None, alias=alias)
            for i, (name, alias) in enumerate(self.devices.items(), start=2)
        }

    def create(self, name):
        self.namespaces[name] = next(self.inodes)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_lab_down_never_touches_devices_it_did_not_make(monkeypatch, tmp_path):
    host = FakeHost(monkeypatch, tmp_path, devices=["eth0", "eth1"], namespaces=["eth5"])
    with pytest.raises(
        XdpfwdError, match="no lab named eth: eth0, eth1, eth5 exist but .* make them"
    ):
        lab.down("eth")
    assert set(host.devices) == {"eth0", "eth1"} and set(host.namespaces) == {"eth5"}
    assert lab.status("eth").ports == []


def test_a_lab_removes_what_it_made_and_leaves_its_namesakes(monkeypatch, tmp_path):
    host = FakeHost(monkeypatch, tmp_path, devices=["eth0"])
    made = lab.up("eth", 2)
    assert [p.port for p in made.ports] == ["eth1", "eth2"]
    assert host.devices == {"eth0": None, "eth1": "xdpfwd-lab:eth", "eth2": "xdpfwd-lab:eth"}
    record = json.loads((tmp_path / "lab" / "eth.json").read_text())
    assert record == {"namespaces": {"eth1": 5000, "eth2": 5001}}
    assert lab.down("eth") == ["eth1", "eth2"]
    assert host.devices == {"eth0": None} and host.namespaces == {}
    assert not (tmp_path / "lab").exists()  # the record went with the lab


def test_a_namespace_made_again_under_a_recorded_name_is_not_the_labs(monkeypatch, tmp_path):
    host = FakeHost(monkeypatch, tmp_path)
    lab.up("xl", 2)
    host.namespaces["xl2"] = 42  # removed by hand, then made again by someone else
    assert lab.down("xl") == ["xl1"]
    assert host.namespaces == {"xl2": 42}


def test_lab_up_refuses_names_that_are_taken_before_making_anything(monkeypatch, tmp_path):
    host = FakeHost(monkeypatch, tmp_path, namespaces=["xl2"])
    with pytest.raises(Exception, match="network namespace xl2 already exists"):
        lab.up("xl", 2)
    assert host.namespaces == {"xl2": 1000} and host.devices == {}
