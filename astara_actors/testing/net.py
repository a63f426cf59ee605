"""Ports for servers a test starts."""

from __future__ import annotations

import socket

__all__ = ["free_port", "require_ipv6_loopback"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` (IPv4 or IPv6) right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def require_ipv6_loopback() -> None:
    """For a test that needs ``::1``: skip on a developer's machine without it, fail under
    ``CI=true`` (where IPv6 on loopback is part of the machine)."""
    from astara_actors.testing.services import unavailable

    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
            return
        except OSError:
            pass
    unavailable("there is no IPv6 loopback (::1) on this host")
