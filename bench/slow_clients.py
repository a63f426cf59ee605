"""Slow clients: does the HTTP API keep answering while slow connections are held open?

A slowloris holds connections open by sending its request head a byte every few seconds and
never finishing it. The scenario runs the orchestrator with its API (gunicorn, the default
``[api] workers``) against a small fleet and measures normal clients — ``--slow-clients``
threads, each with a keep-alive session, alternating ``GET /healthz`` and ``GET /routers`` —
for ``--slow-duration`` seconds:

- unloaded: nothing else connected;
- loaded: while ``--slow`` connections (200) each send a byte of a never-ending head every
  ``--slow-interval`` seconds; one the server closes is reopened at once (an attacker keeps
  its count up), and how often that happened is reported.

Figures: throughput lost under load, 100 % − loaded requests/s ÷ unloaded (≤ 50 %), p99 latency
of the normal clients under load (≤ 500 ms), and their requests that failed or timed out
(``--request-timeout``) under load.

    python -m bench.slow_clients [--slow 200] [--slow-interval 3] [--slow-duration 20]

The code before (stock ``gthread`` workers): ``ASTARA_BENCH_SOURCE=<other checkout>`` runs the
orchestrator, and so its API, from there (see bench/README.md).
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import threading
import time
from typing import Any

import requests

from ._harness import SOURCE, Deployment, Orchestrator, log
from ._report import Figure, percentile, report_figures

HEAD = b"GET /healthz HTTP/1.1\r\nHost: astara-api\r\nUser-Agent: slowloris\r\nX-Slow: "


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slow", type=int, default=200, help="slow connections held open")
    parser.add_argument(
        "--slow-interval",
        type=float,
        default=3.0,
        help="seconds between two bytes of a slow connection",
    )
    parser.add_argument(
        "--slow-duration",
        type=float,
        default=20.0,
        help="seconds each phase (unloaded, loaded) is measured",
    )
    parser.add_argument("--slow-clients", type=int, default=4, help="normal client threads")
    parser.add_argument("--slow-routers", type=int, default=20, help="routers in the fleet")
    parser.add_argument("--api-workers", type=int, default=2, help="[api] workers")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds a normal request may take before it counts as failed",
    )


class SlowLoris:
    """``count`` connections sending a never-ending request head, a byte per ``interval``."""

    def __init__(self, port: int, count: int, interval: float) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.socks: list[socket.socket] = []
        self.sent: dict[socket.socket, int] = {}
        self.reopened = 0  # connections the server closed (or refused), opened again
        self.connect_failures = 0
        self.open_samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.connect_failures += 1
            return None
        sock.setblocking(False)
        self.sent[sock] = 0
        return sock

    def start(self) -> SlowLoris:
        for _ in range(self.count):
            sock = self._open()
            if sock is not None:
                self.socks.append(sock)
        self._drip()
        self._thread.start()
        return self

    def _drip(self) -> None:
        for sock in list(self.socks):
            sent = self.sent[sock]
            byte = HEAD[sent : sent + 1] or b"a"
            try:
                sock.send(byte)
                self.sent[sock] = sent + 1
            except BlockingIOError:
                pass
            except OSError:
                self._replace(sock)

    def _replace(self, sock: socket.socket) -> None:
        self.socks.remove(sock)
        self.sent.pop(sock, None)
        sock.close()
        self.reopened += 1
        fresh = self._open()
        if fresh is not None:
            self.socks.append(fresh)

    def _reap(self) -> None:
        """Connections the server answered (408) or closed: reopened."""
        if not self.socks:
            return
        readable, _, _ = select.select(self.socks, [], [], 0)
        for sock in readable:
            try:
                sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                pass
            self._replace(sock)  # an answer means it is about to close, or closed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._reap()
            self._drip()
            while len(self.socks) < self.count and not self._stop.is_set():
                fresh = self._open()
                if fresh is None:
                    break
                self.socks.append(fresh)
            self.open_samples.append(len(self.socks))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(self.interval + 10)
        for sock in self.socks:
            sock.close()
        samples = self.open_samples or [len(self.socks)]
        return {
            "wanted": self.count,
            "open_min": min(samples),
            "open_max": max(samples),
            "reopened_after_server_close": self.reopened,
            "connect_failures": self.connect_failures,
        }


def normal_clients(base: str, threads: int, duration: float, timeout: float) -> dict[str, Any]:
    """``threads`` clients alternating GET /healthz and GET /routers for ``duration`` s."""
    results: list[tuple[str, float, bool]] = []
    lock = threading.Lock()
    end = time.monotonic() + duration

    def client() -> None:
        http = requests.Session()
        http.trust_env = False
        mine: list[tuple[str, float, bool]] = []
        paths = ("/healthz", "/routers")
        i = 0
        while time.monotonic() < end:
            path = paths[i % 2]
            i += 1
            started = time.perf_counter()
            try:
                ok = http.get(f"{base}{path}", timeout=timeout).status_code == 200
            except requests.RequestException:
                ok = False
                http.close()
                http = requests.Session()
                http.trust_env = False
            mine.append((path, time.perf_counter() - started, ok))
        with lock:
            results.extend(mine)

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(duration + timeout + 30)
    elapsed = time.monotonic() - started
    latencies = [r[1] for r in results]
    good = sum(1 for r in results if r[2])
    per_path = {
        path: {
            "n": sum(1 for r in results if r[0] == path),
            "ok": sum(1 for r in results if r[0] == path and r[2]),
            "p99_ms": round(percentile([r[1] for r in results if r[0] == path], 99) * 1000, 1),
        }
        for path in ("/healthz", "/routers")
    }
    return {
        "requests": len(results),
        "ok": good,
        "failed": len(results) - good,
        "seconds": round(elapsed, 2),
        "ok_per_s": round(good / max(elapsed, 1e-9), 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "paths": per_path,
    }


def _with_api_workers(orch: Orchestrator, workers: int) -> None:
    """The harness writes ``[api] workers = 1``; this scenario runs the shipped default."""
    write = orch.ini

    def ini() -> Any:
        path = write()
        path.write_text(path.read_text().replace("\nworkers = 1\n", f"\nworkers = {workers}\n"))
        return path

    orch.ini = ini  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    details: dict[str, Any] = {"source": str(SOURCE)}
    with Deployment(args.slow_routers, api=True, settings={"health_check_period": 60}) as dep:
        dep.start_sim()
        orch = dep.new_orchestrator()
        _with_api_workers(orch, args.api_workers)
        orch.start()
        assert dep.client is not None
        if orch.wait_answering(dep.client, 120) is None or not orch.wait_api(60):
            raise RuntimeError(f"the orchestrator or its API did not come up (see {orch.log_path})")
        base = orch.api_url
        log(f"slow_clients: unloaded, {args.slow_clients} clients for {args.slow_duration:.0f} s")
        details["unloaded"] = normal_clients(
            base, args.slow_clients, args.slow_duration, args.request_timeout
        )
        log(f"slow_clients: {args.slow} slow connections, a byte every {args.slow_interval:g} s")
        loris = SlowLoris(orch.api_port, args.slow, args.slow_interval).start()
        time.sleep(args.slow_interval + 0.5)  # every slow connection has sent a few bytes
        log(f"slow_clients: loaded, {args.slow_clients} clients for {args.slow_duration:.0f} s")
        details["loaded"] = normal_clients(
            base, args.slow_clients, args.slow_duration, args.request_timeout
        )
        details["slow"] = loris.stop()
        details["api_alive_after"] = orch.wait_api(30)
    unloaded, loaded, slow = details["unloaded"], details["loaded"], details["slow"]
    ratio = 100.0 * loaded["ok_per_s"] / unloaded["ok_per_s"] if unloaded["ok_per_s"] else None
    conditions = (
        f"{slow['wanted']} slow connections (held {slow['open_min']}–{slow['open_max']}, "
        f"{slow['reopened_after_server_close']} reopened after the server closed them), "
        f"a byte every {args.slow_interval:g} s"
    )
    figs = [
        Figure(
            "API requests/s, unloaded",
            unloaded["ok_per_s"],
            "req/s",
            note=f"{args.slow_clients} clients, GET /healthz and /routers; p99 "
            f"{unloaded['p99_ms']} ms",
        ),
        # "≥ 50 % of the unloaded throughput", as the report's targets are upper bounds:
        Figure(
            "API throughput lost under slow clients",
            None if ratio is None else round(100 - ratio, 1),
            "%",
            50.0,
            note=f"{loaded['ok_per_s']} req/s = {ratio or 0:.0f} % of unloaded; {conditions}",
        ),
        Figure(
            "API p99 under slow clients",
            loaded["p99_ms"],
            "ms",
            500.0,
            note=f"p50 {loaded['p50_ms']} ms, max {loaded['max_ms']} ms",
        ),
        Figure(
            "API requests failed under slow clients",
            loaded["failed"],
            "",
            0.0,
            note=f"of {loaded['requests']}; timeout {args.request_timeout:g} s per request",
        ),
    ]
    return figs, details


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "slow": args.slow,
        "interval": args.slow_interval,
        "duration": args.slow_duration,
        "clients": args.slow_clients,
        "routers": args.slow_routers,
        "api_workers": args.api_workers,
        "request_timeout": args.request_timeout,
        "source": str(SOURCE),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    args = parser.parse_args(argv)
    figs, details = run(args)
    report_figures("slow_clients", figs, params(args), details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
