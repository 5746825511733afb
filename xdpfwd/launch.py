"""The console entry point. It takes Ctrl-C and SIGTERM before the slow imports: an
interrupt that early has changed nothing, so it exits quietly with 130 instead of
printing an import traceback. cli.main installs the rolling-back handler after."""

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
        run()
    except KeyboardInterrupt:
        # It landed as the finished command was exiting (during the command, it
        # becomes a rollback and an error line): nothing to undo, nothing to say.
        sys.exit(130)
