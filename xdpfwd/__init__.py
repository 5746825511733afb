"""xdpfwd: port-to-port packet forwarding with XDP devmaps."""

__version__ = "0.1.0"
