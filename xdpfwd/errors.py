"""xdpfwd's errors; each class carries the process exit status the CLI uses for it."""


class XdpfwdError(Exception):
    """A runtime or state error the user can act on (exit 1)."""

    exit_code = 1


class InputError(XdpfwdError):
    """Bad input found past argument parsing (exit 2, like a usage error)."""

    exit_code = 2


class DeviceGone(InputError):
    """A device the command was to use went away while it ran; what it did is undone
    (exit 2, as for a device that does not exist)."""

    def __init__(self, message: str, gone: list[str]):
        super().__init__(message)
        self.gone = gone  # the names of the devices that went


class AttachError(XdpfwdError):
    """XDP attach or detach refused: a foreign program, or the kernel said no (exit 3)."""

    exit_code = 3

    def __init__(self, message: str, port: str | None = None):
        super().__init__(message)
        self.port = port  # the port whose attach failed, when one did


class BpfError(XdpfwdError):
    """Compiling, loading or pinning a program, or a map operation, failed (exit 4)."""

    exit_code = 4


class PrereqError(XdpfwdError):
    """Something the host must provide is missing: privileges, bpffs, BCC, headers (exit 5)."""

    exit_code = 5


EXIT_INTERRUPTED = 130
