"""Helpers for the simulated-cloud tests (Keystone and Neutron in this process).

- ``serve(app)`` serves a WSGI app over real HTTP on an ephemeral 127.0.0.1 port, each request
  on its own thread, and returns ``(base_url, stop)``.
- ``identity_and_network(notify)`` starts the simulated Keystone + Neutron that way (admin
  password and every user's password ``secret``, user ``realos-t1`` in project ``realos-t1``).
- ``Normaliser``, ``learn_ids`` and ``translate`` compare our answers with the REAL captures:
  run-specific values become placeholders numbered by first appearance; ``replay`` runs the
  captured 40-step notification scenario against a simulated cloud.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import falcon
import requests

from astara_actors.sim._http import AuthMiddleware
from astara_actors.sim.contracts import Notify
from astara_actors.sim.keystone.api import add_keystone_routes
from astara_actors.sim.keystone.model import KeystoneModel
from astara_actors.sim.neutron.api import add_neutron_routes
from astara_actors.sim.neutron.model import NeutronModel
from astara_actors.sim.notifier import Notification, RecordingNotifier
from astara_actors.sim.wsgi import WSGIServerThread
from astara_actors.testing.captures import capture
from astara_actors.testing.net import free_port

__all__ = [
    "Normaliser",
    "PASSWORD",
    "SimCloud",
    "Replayed",
    "capture",
    "free_port",
    "identity_and_network",
    "learn_ids",
    "replay",
    "serve",
    "token",
    "translate",
]

PASSWORD = "secret"


def serve(app: Callable[..., Any], host: str = "127.0.0.1") -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on ``host`` at an ephemeral port; returns ``(base_url, stop)``."""
    server = WSGIServerThread(app, host, 0).start()
    return server.url, server.stop


@dataclass
class SimCloud:
    """A running simulated Keystone + Neutron: ``url`` is the server's base URL."""

    url: str
    keystone: KeystoneModel
    neutron: NeutronModel

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity"


@contextmanager
def identity_and_network(notify: Notify | None = None) -> Iterator[SimCloud]:
    """Keystone under ``/identity`` and Neutron under ``/network`` on one real HTTP server."""
    keystone = KeystoneModel(admin_password=PASSWORD)
    keystone.add_user("realos-t1", PASSWORD, "realos-t1")
    neutron = NeutronModel(notify)
    app = falcon.App(middleware=[AuthMiddleware(keystone)])
    box: dict[str, str] = {}
    add_keystone_routes(
        app,
        keystone,
        endpoints=lambda: {
            "identity": f"{box['url']}/identity/v3/",
            "network": f"{box['url']}/network",
            "compute": f"{box['url']}/compute/v2.1",
        },
    )
    add_neutron_routes(app, neutron)
    box["url"], stop = serve(app)
    try:
        yield SimCloud(box["url"], keystone, neutron)
    finally:
        stop()


def token(cloud: SimCloud, user: str, project: str | None = None) -> str:
    """A token for ``user`` scoped to ``project`` (default: the project named like the user)."""
    return password_token(cloud.auth_url, user, project or user)


def password_token(auth_url: str, user: str, project: str, password: str = PASSWORD) -> str:
    """A Keystone token for ``user`` scoped to ``project``, from the Keystone at ``auth_url``
    (its ``/v3`` is added)."""
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }
    }
    answer = requests.post(f"{auth_url}/v3/auth/tokens", json=body, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Subject-Token"]


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
MAC = re.compile(r"fa:16:3e(:[0-9a-f]{2}){3}")
STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?")
# Neutron allocates addresses at random; the simulator first-free.
ALLOCATED_IP_KEYS = {"ip_address", "floating_ip_address", "fixed_ip_address"}
# Database sequences: their values depend on everything the database ever held.
DB_SEQUENCE_KEYS = {"standard_attr_id", "provider:segmentation_id"}


class Normaliser:
    """Replaces run-specific values by placeholders numbered in order of first appearance.

    Ids, MACs and allocated addresses become ``<id:N>``, ``<mac:N>``, ``<ip:N>`` (so a value
    that recurs must recur in the same places), timestamps ``<timestamp>``, database sequences
    ``<db-sequence>``; everything else (revision numbers included) is kept as it is.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], str] = {}

    def name(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self.seen:
            count = sum(1 for k in self.seen if k[0] == kind)
            self.seen[key] = f"<{kind}:{count}>"
        return self.seen[key]

    def __call__(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):  # sorted: the numbering must not depend on key order
            return {k: self(value[k], k) for k in sorted(value)}
        if isinstance(value, list):
            return [self(item, key) for item in value]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return "<db-sequence>" if key in DB_SEQUENCE_KEYS else value
        if isinstance(value, str):
            if key in ALLOCATED_IP_KEYS:
                return self.name("ip", value)
            if STAMP.fullmatch(value):
                return "<timestamp>"
            if MAC.fullmatch(value):
                return self.name("mac", value)
            return UUID.sub(lambda m: self.name("id", m.group()), value)
        return value


def learn_ids(captured: Any, ours: Any, ids: dict[str, str]) -> None:
    """Map the capture's ids to ours by walking two documents of the same shape side by side."""
    if isinstance(captured, dict) and isinstance(ours, dict):
        for key in captured.keys() & ours.keys():
            learn_ids(captured[key], ours[key], ids)
    elif isinstance(captured, list) and isinstance(ours, list):
        for a, b in zip(captured, ours, strict=False):
            learn_ids(a, b, ids)
    elif isinstance(captured, str) and isinstance(ours, str) and UUID.fullmatch(captured):
        ids.setdefault(captured, ours)


def translate(value: Any, ids: dict[str, str]) -> Any:
    """``value`` (JSON-able) with the capture's ids replaced by ours."""
    return json.loads(UUID.sub(lambda m: ids.get(m.group(), m.group()), json.dumps(value)))


@dataclass
class Replayed:
    """One replayed step: the capture's record, our answer, what we and Neutron emitted."""

    step: dict[str, Any]
    response: requests.Response
    emitted: list[Notification]
    expected: list[dict[str, Any]]  # the captured oslo messages

    @property
    def where(self) -> str:
        return f"step {self.step['step']} {self.step['action']}"


def replay(
    cloud: SimCloud, recorder: RecordingNotifier, ids: dict[str, str], last_step: int = 40
) -> Iterator[Replayed]:
    """Run the captured scenario's REST requests (ids translated) as the capture did.

    Steps 1-2 and those marked ``as_user: admin`` run as admin, the rest as ``realos-t1``;
    ``ids`` learns the capture's ids → ours from each step's notifications.
    """
    tokens = {user: token(cloud, user) for user in ("admin", "realos-t1")}
    for step in capture("neutron-notifications/index.json")[:last_step]:
        as_admin = step["step"] in (1, 2) or step.get("as_user") == "admin"
        request = step["request"]
        seen = len(recorder.notifications)
        response = requests.request(
            request["method"],
            f"{cloud.url}/network{translate(request['path'], ids)}",
            json=translate(request.get("body"), ids),
            headers={"X-Auth-Token": tokens["admin" if as_admin else "realos-t1"]},
            timeout=10,
        )
        emitted = recorder.notifications[seen:]
        expected = [
            capture(f"neutron-notifications/{e['file']}")["message"] for e in step["events"]
        ]
        for message, notification in zip(expected, emitted, strict=False):
            learn_ids(message["payload"], notification.payload, ids)
        yield Replayed(step, response, emitted, expected)
