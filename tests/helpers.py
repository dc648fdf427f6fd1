"""Small helpers the test modules share."""
from __future__ import annotations

import socket
from typing import Iterable


def set_args(overrides: Iterable[str]) -> list[str]:
    """Config overrides as command-line arguments: ["a.b=1", ...] -> ["--set", "a.b=1", ...]."""
    return [arg for override in overrides for arg in ("--set", override)]


def free_ports(n: int) -> list[int]:
    """n distinct local TCP ports nothing listens on (bound together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
