"""The simulator's WSGI server: a fixed pool of workers serves a burst of connections."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import requests

from astara_actors.sim.wsgi import WSGIServerThread


def test_a_burst_of_connections_is_served_by_the_pool_and_the_pool_stops_with_the_server() -> None:
    busy = {"now": 0, "most": 0}
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            busy["now"] += 1
            busy["most"] = max(busy["most"], busy["now"])
        time.sleep(0.02)
        with lock:
            busy["now"] -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = WSGIServerThread(app, "127.0.0.1", 0).start()
    workers = list(server.server._workers)  # this server's own (other tests run servers too)
    try:

        def get(i: int) -> str:
            return requests.get(f"{server.url}/r{i}", timeout=30).text

        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(get, range(300)))
        assert answers == [f"/r{i}" for i in range(300)]
        assert 1 < busy["most"] <= server.server.workers  # concurrent, but never more than the pool
        assert len(workers) == server.server.workers and all(t.is_alive() for t in workers)
    finally:
        server.stop()
    for worker in workers:
        worker.join(5)
    assert not any(t.is_alive() for t in workers), "the pool outlived its server"
