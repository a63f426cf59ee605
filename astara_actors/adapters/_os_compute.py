"""The Compute port over openstacksdk's compute proxy (Nova)."""

from __future__ import annotations

import base64
import datetime
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from astara_actors.adapters._os_calls import SdkCalls, get_all
from astara_actors.core.models import Server
from astara_actors.errors import ComputeError

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = ["OpenStackCompute"]


def _server(doc: dict[str, Any]) -> Server:
    """A Nova server document (``GET /servers/{id}``, ``/servers/detail``)."""
    image = doc.get("image")  # {"id": ...}, or "" when booted from a volume
    return Server(
        id=doc["id"],
        name=doc.get("name") or "",
        status=doc.get("status") or "",
        image_id=(image.get("id") if isinstance(image, dict) else None) or "",
        age=_age(doc.get("created")),
    )


def _age(created: Any) -> float | None:
    """Seconds since Nova's ``created`` (``2026-11-25T03:20:09Z``); None if absent or odd."""
    if not isinstance(created, str) or not created:
        return None
    try:
        when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (datetime.datetime.now(datetime.UTC) - when).total_seconds())


class OpenStackCompute:
    """Nova through ``conn.compute``; every failure surfaces as ``ComputeError``.

    Nova's server documents carry no port ids: ``Server.port_ids`` is filled in by
    ``create_server`` only (``get_server``/``list_servers`` leave it empty).
    """

    def __init__(
        self,
        conn: Connection,
        *,
        retries: int = 3,
        retry_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._conn = conn
        self._calls = SdkCalls(ComputeError, retries=retries, retry_delay=retry_delay, sleep=sleep)

    @property
    def _compute(self) -> Any:
        # Inside each call, never in __init__: building the proxy authenticates to Keystone.
        return self._conn.compute

    def create_server(
        self,
        *,
        name: str,
        image_id: str,
        flavor_id: str,
        port_ids: list[str],
        user_data: str,
        config_drive: bool = True,
    ) -> Server:
        created = self._calls.run(
            f"create server {name}",
            lambda: self._compute.create_server(
                name=name,
                image_id=image_id,
                flavor_id=flavor_id,
                networks=[{"port": p} for p in port_ids],
                config_drive=config_drive,
                # the proxy sends user_data as given; Nova wants base64
                user_data=base64.b64encode(user_data.encode()).decode("ascii"),
            ),
            idempotent=False,
        )
        # Nova's 202 holds little more than the id; the VM is building.
        return Server(
            id=created.id,
            name=name,
            status=created.status or "BUILD",
            image_id=image_id,
            port_ids=tuple(port_ids),
        )

    def get_server(self, server_id: str) -> Server | None:
        found = self._calls.run(
            f"get server {server_id}",
            lambda: get_all(self._compute, f"/servers/{quote(server_id, safe='')}", "server"),
            on_missing=lambda: None,
        )
        if found is None or found.get("status") == "DELETED":
            return None
        return _server(found)

    def list_servers(self, name_prefix: str) -> list[Server]:
        # Nova filters names by regex; re-check the prefix in case a cell ignores the filter.
        pattern = "^" + re.escape(name_prefix)
        found = self._calls.run(
            f"list servers named {name_prefix}*",
            lambda: get_all(
                self._compute,
                "/servers/detail",
                "servers",
                {"name": pattern, "all_tenants": "true"},
            ),
        )
        return [
            _server(s)
            for s in found
            if s.get("status") != "DELETED" and (s.get("name") or "").startswith(name_prefix)
        ]

    def list_server_names(self, name_prefix: str) -> list[tuple[str, str]]:
        # GET /servers (not /detail): id, name and links, about a tenth of a detailed server.
        pattern = "^" + re.escape(name_prefix)
        found = self._calls.run(
            f"list names of servers named {name_prefix}*",
            lambda: get_all(
                self._compute, "/servers", "servers", {"name": pattern, "all_tenants": "true"}
            ),
        )
        return [
            (s["id"], s["name"])
            for s in found
            if s.get("status") != "DELETED" and (s.get("name") or "").startswith(name_prefix)
        ]

    def delete_server(self, server_id: str) -> None:
        self._calls.run(
            f"delete server {server_id}",
            lambda: self._compute.delete_server(server_id, ignore_missing=True),
        )

    def rename_server(self, server_id: str, name: str) -> Server:
        """Nova's ``PUT /servers/{id}`` with the new name (repeatable: the same name twice is
        one rename); the server as Nova answers it. A server that is gone raises
        ``ComputeError``."""
        renamed = self._calls.run(
            f"rename server {server_id} to {name}",
            lambda: self._compute.update_server(server_id, name=name),
        )
        image = renamed.image  # an Image resource, or {} when booted from a volume
        return Server(
            id=renamed.id,
            name=renamed.name or "",
            status=renamed.status or "",
            image_id=getattr(image, "id", None) or "",
            age=_age(renamed.created_at),
        )

    def attach_interface(self, server_id: str, port_id: str) -> None:
        self._calls.run(
            f"attach port {port_id} to server {server_id}",
            lambda: self._compute.create_server_interface(server_id, port_id=port_id),
            idempotent=False,
        )

    def detach_interface(self, server_id: str, port_id: str) -> None:
        self._calls.run(
            f"detach port {port_id} from server {server_id}",
            lambda: self._compute.delete_server_interface(
                port_id, server=server_id, ignore_missing=False
            ),
        )
