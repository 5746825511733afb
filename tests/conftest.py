"""Test layers: tests/unit needs nothing; tests/integration needs root and a real kernel."""

import os


def pytest_addoption(parser):
    parser.addoption(
        "--integration",
        action="store_true",
        help="fail, instead of skipping, integration tests whose prerequisites are missing "
        "(implied when CI is set)",
    )


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        if f"{os.sep}integration{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
