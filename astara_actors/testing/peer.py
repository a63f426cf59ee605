"""An orchestrator on an in-memory cloud, attached to a bus: the far end of cross-process tests.

Run ``python -m astara_actors.testing.peer --transport-url URL [options]``. It creates
``--routers`` routers, starts the actor tree and the inbox, prints ``ready <router-id> ...``
once every router has an actor, then one line ``acted <reason> <unix-time>`` each time a router
enters debug mode (how benchmarks time a command end to end). It stops when stdin closes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.bus.transport import BusSettings
from astara_actors.core.events import Action, Event
from astara_actors.log import install as safe_logs
from astara_actors.testing.waiting import WAIT

__all__ = ["CtlPeer", "PeerProcess", "ctl_config", "main"]


class _ActedLog(logging.Handler):
    """Prints a line for every 'debug mode (router)' log record of a router."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lock_out = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        marker = "debug mode (router): "
        if marker in text:
            with self._lock_out:
                print(f"acted {text.split(marker, 1)[1]} {record.created:.6f}", flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="astara_actors.testing.peer", description=__doc__)
    parser.add_argument("--transport-url", required=True)
    parser.add_argument("--host", default="peer")
    parser.add_argument("--exchange", default="neutron")
    parser.add_argument("--control-exchange", default="astara.control")
    parser.add_argument("--queue", default="")
    parser.add_argument("--routers", type=int, default=1)
    parser.add_argument("--tenants", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    safe_logs()
    router_log = logging.getLogger("astara_actors.router")
    router_log.setLevel(logging.INFO)
    router_log.addHandler(_ActedLog())
    cloud = MemoryCloud()
    routers = [
        (
            cloud.add_router(f"tenant-{i % max(1, args.tenants)}"),
            f"tenant-{i % max(1, args.tenants)}",
        )
        for i in range(args.routers)
    ]
    runtime = Runtime(
        cloud.settings(host=args.host),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    bus = BusSettings(
        transport_url=args.transport_url,
        host=args.host,
        notifications_exchange=args.exchange,
        control_exchange=args.control_exchange,
        queue_name=args.queue,
    )
    inbox = BusBridge(runtime, bus, network=cloud.network).start()
    try:
        for router_id, tenant_id in routers:
            runtime.deliver(Event(router_id, tenant_id, Action.CREATE))
        tree: dict[str, Any] = runtime.dump()
        while tree["router_count"] < len(routers):
            tree = runtime.dump()
        print("ready " + " ".join(r for r, _ in routers), flush=True)
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        inbox.stop()
        runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())


class PeerProcess:
    """Run :func:`main` in a child process on ``bus``; the far end of cross-process tests.

    ``routers`` are the ids it printed when ready; :meth:`acted` returns the next
    ``(reason, unix time)`` a router entered debug mode with (how commands are timed).
    """

    def __init__(
        self,
        bus: BusSettings,
        *,
        routers: int = 1,
        tenants: int = 1,
        host: str = "",
        timeout: float = 30.0,
    ) -> None:
        import queue
        import subprocess

        self.timeout = timeout
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "astara_actors.testing.peer",
                "--transport-url",
                bus.transport_url,
                "--host",
                host or f"peer-{bus.host}",
                "--exchange",
                bus.notifications_exchange,
                "--control-exchange",
                bus.control_exchange,
                "--queue",
                "" if host else bus.queue_name,
                "--routers",
                str(routers),
                "--tenants",
                str(tenants),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.stop()
            raise RuntimeError(f"the peer orchestrator did not start: {line}")
        self.routers = line[1:]
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def acted(self, reason: str | None = None) -> tuple[str, float]:
        """The next 'entered debug mode' report (for ``reason``, when given)."""
        while True:
            line = self.lines.get(timeout=self.timeout)
            if not line.startswith("acted "):
                continue
            got, at = line[len("acted ") :].rsplit(" ", 1)  # a reason may hold spaces
            if reason is None or got == reason:
                return got, float(at)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=self.timeout)


def ctl_config(state_dir: Path, extra: str = "") -> Path:
    """A configuration of the embedded bus under ``state_dir`` (what ``astara-ctl`` reads);
    ``extra`` goes on after ``[orchestrator]``."""
    path = state_dir / "ctl.ini"
    path.write_text(f"[orchestrator]\nstate_dir = {state_dir}\nembedded_sim = true\n{extra}")
    return path


class CtlPeer(PeerProcess):
    """A peer orchestrator on the embedded bus under ``state_dir`` (host ``peer-ctl``, two
    tenants), and the configuration ``astara-ctl`` needs to reach it (``.config``)."""

    def __init__(self, state_dir: Path, routers: int = 3) -> None:
        super().__init__(
            BusSettings.embedded(state_dir, host="peer-ctl"),
            routers=routers,
            tenants=2,
            host="peer-ctl",
            timeout=WAIT,
        )
        self.config = ctl_config(state_dir)

    def wait_acted(self, reason: str) -> None:
        """Until the peer reports a router entering debug mode for ``reason``."""
        self.acted(reason)
