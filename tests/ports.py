"""Ports on 127.0.0.1 that a test may use: the system picks them, never the test."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free now (bound then released), for a server the test starts to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on, so connections to it are refused."""
    return free_port()
