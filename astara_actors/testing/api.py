"""Stand-ins and live servers for the API tests: a fake control client (the API in process)
and gunicorn started as ``astara-api`` starts it."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from astara_actors.actors.bus_bridge import router_summary
from astara_actors.actors.status_board import StatusBoard
from astara_actors.api.server import run_api
from astara_actors.bus.transport import BusUnavailable, NoAnswer
from astara_actors.protocol.listing import Listing
from astara_actors.testing.captures import ROOT
from astara_actors.testing.waiting import WAIT

__all__ = ["METRICS_TEXT", "R", "T", "FakeControl", "LiveApi", "dump", "page", "spares_dump"]

R = "7efa1155-0901-4e5e-aa82-7445b0091d00"
T = "2f1f231e7cbe4028a87c725e401565c9"


class FakeControl:
    """Stands in for ``ControlClient``: one orchestrator ("orch-1") managing ``routers``."""

    def __init__(
        self,
        routers: Mapping[str, dict[str, Any]] | None = None,
        *,
        others: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
        spares: Mapping[str, dict[str, Any] | None] | None = None,
    ) -> None:
        self.routers = dict(routers if routers is not None else {R: dump(R)})
        # More orchestrators (host -> their routers' dumps), answering the routers query too.
        self.others = {host: dict(routers) for host, routers in (others or {}).items()}
        # Each orchestrator's hot-spare pool (its dump) by host; None or absent: it keeps none.
        self.spares = dict(spares or {})
        self.mode = "answer"  # "answer" | "silent" | "bus-down" | "failing" | "crash" | "any"
        self.sent: list[dict[str, Any]] = []
        self.on_behalf_of: list[str] = []
        self.asked: list[dict[str, Any]] = []

    def send_command(self, payload: Mapping[str, Any], on_behalf_of: str = "") -> None:
        if self.mode == "bus-down":
            raise BusUnavailable("amqp://guest:pw@rabbit//", "Connection refused")
        self.sent.append(dict(payload))
        self.on_behalf_of.append(on_behalf_of)

    def ask(
        self,
        query: Mapping[str, Any],
        timeout: float,
        expect: int | None = None,
        grace: float = 0.05,
    ) -> list[dict[str, Any]]:
        self.asked.append(dict(query))
        match self.mode:
            case "silent":
                raise NoAnswer(query, timeout)
            case "bus-down":
                raise BusUnavailable("amqp://guest:pw@rabbit//", "Connection refused")
            case "failing":
                return [{"host": "orch-1", "ok": False, "error": "InvalidCommand: nope"}]
            case "crash":
                raise RuntimeError("a bug in the client")
        if query["query"] == "router":
            rid = query["router_id"]
            found = self.routers.get(rid) or (dump(rid) if self.mode == "any" else None)
            answer: dict[str, Any] = {"found": found is not None, "router": found}
        elif query["query"] == "routers":
            if "limit" in query:  # a page, as the orchestrators answer it (from a status board)
                return [
                    {
                        "host": host,
                        "correlation_id": "c",
                        "ok": True,
                        "answer": page(r, query, self.spares.get(host)),
                    }
                    for host, r in {"orch-1": self.routers, **self.others}.items()
                ]
            answer = {"routers": [router_summary(d) for d in self.routers.values()]}
        elif query["query"] == "metrics":
            answer = {"metrics": METRICS_TEXT}
        else:
            answer = {"workers": {"host": "orch-1", "tenants": [], "inbox": {"messages": {}}}}
            if self.spares.get("orch-1"):  # as the orchestrator's tree and summary carry it
                answer["workers"]["spares"] = self.spares["orch-1"]
        return [{"host": "orch-1", "correlation_id": "c", "ok": True, "answer": answer}]


METRICS_TEXT = """# HELP astara_boots_total Service VMs booted
# TYPE astara_boots_total counter
astara_boots_total 3.0
"""


def page(
    routers: Mapping[str, dict[str, Any]],
    query: Mapping[str, Any],
    spares: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An orchestrator's answer to a paged routers query over these routers' dumps (with
    ``spares``, its hot-spare pool's dump; None: it keeps no pool)."""
    board = StatusBoard(clock=lambda: 1000.0)
    for router_id, router_dump in routers.items():
        board.publish(router_id, router_dump, None)
    rows, total = board.rows(Listing.from_payload(query))
    return {
        "routers": rows,
        "total": total,
        "counts": board.counts(),
        "member": {"routers": len(board), "tenants": board.tenants()},
        "breaker": {"open": False, "silent_share": 0.0},
        "storm": {"root_mailbox": 0},
        "spares": spares,
    }


def spares_dump(**figures: Any) -> dict[str, Any]:
    """A hot-spare pool's dump (``SparePool.dump``): 3 of 5 ready, 2 booting, 4 taken in the
    last minute (12 in all), refilled by this member; ``figures`` override."""
    return {
        "pool_size": 5,
        "ready": 3,
        "booting": 2,
        "silent": 0,
        "claimed": 0,
        "taken_last_minute": 4,
        "taken_total": 12,
        "booted_total": 17,
        "boot_failures": 1,
        "lost_races": 0,
        "misses": 2,
        "replaced": {"died": 1},
        "refills": True,
        "image": "img-1",
        **figures,
    }


def dump(router_id: str) -> dict[str, Any]:
    return {
        "router_id": router_id,
        "tenant_id": T,
        "state": "CalcAction",
        "debug": False,
        "instance_state": "configured",
        "action": "poll",
        "boot_attempts": 0,
        "restarts": 0,
        "instance": {"router_name": "r1"},
        "transitions": [],
    }


class LiveApi:
    """gunicorn started by ``run_api``; ready once its log says it is listening."""

    def __init__(self, config: Path) -> None:
        self.proc = run_api(
            config, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait_for_log("Listening at:")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put("")  # EOF: gunicorn exited

    def wait_for_log(self, needle: str) -> str:
        while True:
            line = self.lines.get(timeout=WAIT)
            if not line:
                raise AssertionError("gunicorn exited:\n" + "".join(self.log))
            if needle in line:
                return line

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: gunicorn's graceful stop
        assert self.proc.wait(timeout=WAIT) == 0, "".join(self.log)
