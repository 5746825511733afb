"""The console entry point. It takes Ctrl-C and SIGTERM before the slow imports: an
interrupt that early has changed nothing, so it exits quietly with 130 instead of
printing an import traceback. cli.main installs the rolling-back handler after.

Once the command is over, both signals are blocked: Python's shutdown restores
their default action, and one arriving then would kill the process with the
signal (exit status 143 for SIGTERM) instead of the documented 130."""

import os
import signal
import sys


def _exit_quietly(signum, frame):
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _exit_quietly)
    signal.signal(signal.SIGTERM, _exit_quietly)
    from .cli import main as run

    try:
        try:
            run()
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        # It landed as the finished command was exiting (during the command, it
        # becomes a rollback and an error line): nothing to undo, nothing to say.
        sys.exit(130)
