"""What `make install` and pip install: every package of the source tree."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_in_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = {p.strip() for p in config["options"]["packages"].split(",")}
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "xdpfwd").rglob("__init__.py")
    }
    assert found - listed == set(), "missing from setup.cfg [options] packages"
