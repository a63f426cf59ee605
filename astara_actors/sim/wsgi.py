"""A WSGI server on its own thread with a pool of request workers (stdlib only), IPv4 or IPv6."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["WSGIServerThread"]


class _ThreadingWSGIServer(WSGIServer):
    """Connections are accepted at once and served by a fixed pool of worker threads, as an
    OpenStack API service does (an accept loop and a pool of ``wsgi_default_pool_size`` = 100
    green threads): a burst from thousands of router actors waits in the queue instead of
    starting a thread per connection, which starves the accept loop of the GIL."""

    allow_reuse_address = True
    # As deep as a real API service's (oslo.service's `backlog` defaults to 4096; the kernel
    # caps it at net.core.somaxconn).
    request_queue_size = 4096
    workers = 64

    def server_activate(self) -> None:
        super().server_activate()
        self._queue: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"sim-http-worker-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for worker in self._workers:
            worker.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._queue.put((request, client_address))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one bad request must not end the worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        for _ in getattr(self, "_workers", ()):
            self._queue.put(None)


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class WSGIServerThread:
    """Serve ``app`` on ``host:port`` (port 0: any free port) from a background thread."""

    def __init__(self, app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0) -> None:
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        self.server = make_server(
            host, port, app, server_class=server_class, handler_class=_QuietHandler
        )
        self.host = host
        self.port = self.server.server_port
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-http-{self.port}",
            daemon=True,
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
