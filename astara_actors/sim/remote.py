"""astara-sim beside a real Neutron: ports and tokens come from the real cloud.

The simulated Nova plugs the real Neutron's ports (:class:`RemotePorts`) and trusts the real
Keystone's tokens (:class:`RemoteTokens`), so an orchestrator can run against a real Neutron
with simulated compute (its ``[cloud] compute_endpoint`` pointing at this simulator).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from astara_actors.adapters._os_calls import quiet_sdk_warnings
from astara_actors.sim.contracts import Caller

__all__ = ["RemotePorts", "RemoteTokens"]

LOG = logging.getLogger(__name__)


class RemotePorts:
    """:class:`~.contracts.PortDirectory` over a real Neutron (openstacksdk, admin credentials)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._cidrs: dict[str, str] = {}
        quiet_sdk_warnings()

    def port(self, port_id: str) -> dict[str, Any] | None:
        import openstack

        try:
            port = self._conn.network.get_port(port_id)
        except openstack.exceptions.NotFoundException:
            return None
        return dict(port.to_dict(original_names=True, ignore_none=True, computed=False))

    def bind(self, port_id: str, device_id: str, device_owner: str, host: str) -> None:
        self._conn.network.update_port(
            port_id, device_id=device_id, device_owner=device_owner, binding_host_id=host
        )

    def unbind(self, port_id: str) -> None:
        import openstack

        try:
            self._conn.network.update_port(port_id, device_id="", device_owner="")
        except openstack.exceptions.NotFoundException:
            pass  # already deleted: nothing to unplug

    def subnet_cidr(self, subnet_id: str) -> str:
        if subnet_id not in self._cidrs:  # subnets never change their CIDR
            self._cidrs[subnet_id] = str(self._conn.network.get_subnet(subnet_id).cidr)
        return self._cidrs[subnet_id]


class RemoteTokens:
    """Validates callers' tokens with the real Keystone (``GET /v3/auth/tokens``), cached."""

    def __init__(
        self,
        auth_url: str,
        service_token: Callable[[], str | None],  # None: no token (keystoneauth's get_token)
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        self._url = auth_url.rstrip("/") + (
            "/auth/tokens" if auth_url.rstrip("/").endswith("/v3") else "/v3/auth/tokens"
        )
        self._service_token = service_token
        self._ttl = ttl
        self._clock = clock
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    def caller(self, token: str) -> Caller | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None and hit[0] > now:
                return hit[1]
        caller = self._validate(token)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + self._ttl, caller)
        return caller

    def _validate(self, token: str) -> Caller | None:
        try:
            service_token = self._service_token()
            # without a service token the header is left out (as requests drops a None one)
            headers = {} if service_token is None else {"X-Auth-Token": service_token}
            headers["X-Subject-Token"] = token
            resp = self._session.get(self._url, headers=headers, timeout=10)
        except requests.RequestException as exc:
            LOG.warning("cannot validate a token with %s: %s", self._url, exc)
            return None
        if resp.status_code != 200:
            return None
        body = resp.json().get("token", {})
        roles = tuple(r.get("name", "") for r in body.get("roles", ()))
        project = body.get("project") or {}
        user = body.get("user") or {}
        return Caller(
            user_id=user.get("id", ""),
            project_id=project.get("id", ""),
            is_admin="admin" in roles,
            roles=roles,
            user_name=user.get("name", ""),
            project_name=project.get("name", ""),
        )
