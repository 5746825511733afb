"""Test layers: tests/unit needs nothing; tests/integration needs root and a real kernel."""

import os
import signal


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


def _interrupt_in(main_pid: int):
    def interrupt(signum, frame):
        if os.getpid() != main_pid:
            # A forked copy of pytest (pyroute2's netns helper is one, and its parent
            # ends it with SIGTERM) must exit, not unwind into the test and run the
            # fixtures' teardown: that removed the running test's namespaces and bpffs.
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    return interrupt


def pytest_configure(config):
    # A run stopped with SIGTERM (a CI timeout, kill) still runs its fixtures'
    # teardown: otherwise a test's pins, tracepoint links and namespaces outlive it.
    signal.signal(signal.SIGTERM, _interrupt_in(os.getpid()))


def pytest_runtest_teardown(item):
    # A change made in this process (a test calling ops directly) marks it committed,
    # as the end of a CLI process would forget: the next test's errors must not read
    # as coming after a change.
    from xdpfwd import interrupts

    interrupts.next_change()
