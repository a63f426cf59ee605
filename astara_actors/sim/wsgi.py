"""A threaded WSGI server on its own thread (stdlib only), IPv4 or IPv6."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["WSGIServerThread"]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # bursts of connections from thousands of router actors


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class WSGIServerThread:
    """Serve ``app`` on ``host:port`` (port 0: any free port) from a background thread."""

    def __init__(self, app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0) -> None:
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        self.server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        self.host = host
        self.port = self.server.server_port
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"sim-http-{self.port}", daemon=True,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> WSGIServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
