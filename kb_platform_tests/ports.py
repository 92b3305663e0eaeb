"""Loopback ports for services a test starts itself."""

import socket


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free, else any free port."""
    for port in dict.fromkeys([preferred, 0]):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")
