"""The Network port over openstacksdk's network proxy (Neutron)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from astara_actors.adapters._os_calls import SdkCalls, get_all, raise_for_status
from astara_actors.config.cloud import STATUS_MODES
from astara_actors.core.models import STATUS_TAG_PREFIX, FloatingIp, NetworkInfo, Port, Router
from astara_actors.errors import NetworkError, RevisionConflict, RouterGone

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = ["STATUS_EXTENSION", "STATUS_TAG_PREFIX", "OpenStackNetwork", "wire"]

LOG = logging.getLogger(__name__)

STATUS_EXTENSION = "dhrouterstatus"  # the astara-neutron plugin's extension alias
TAG_EXTENSION = "standard-attr-tag"


LIST_PAGE = 1000  # items per page of a whole-cloud list (Nova's default page, osapi_max_limit)


def wire(resource: Any) -> dict[str, Any]:
    """An SDK resource as the Neutron JSON it was read from.

    ``original_names`` gives the wire names (``admin_state_up``, not ``is_admin_state_up``);
    ``ignore_none`` drops what the server did not send, so parsers see their own defaults
    (the SDK would report a missing ``admin_state_up`` as ``None``, i.e. down).
    """
    return resource.to_dict(original_names=True, ignore_none=True, computed=False)


def _gone(router_id: str) -> NoReturn:
    raise RouterGone(router_id)


class OpenStackNetwork:
    """Neutron through ``conn.network``; every failure surfaces as ``NetworkError``."""

    def __init__(
        self,
        conn: Connection,
        *,
        status_mode: str = "auto",
        retries: int = 3,
        retry_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if status_mode not in STATUS_MODES:
            raise ValueError(f"status_mode must be one of {STATUS_MODES}, not {status_mode!r}")
        self._conn = conn
        self._status_mode = status_mode
        self._status_via: str | None = None  # "extension", "tag" or "none" once detected
        self._status_lock = threading.Lock()  # thousands of routers ask at once at start-up
        self._calls = SdkCalls(NetworkError, retries=retries, retry_delay=retry_delay, sleep=sleep)

    @property
    def _net(self) -> Any:
        # Inside each call, never in __init__: building the proxy authenticates to Keystone.
        return self._conn.network

    def list_routers(self) -> list[tuple[str, str]]:
        # Raw, like the reads below: the SDK's resource objects cost ~1 ms of CPU per router,
        # seconds for every orphan sweep at 10,000 routers.
        routers = self._calls.run("list routers", lambda: self._list("/routers", "routers"))
        return [(r["id"], r.get("project_id") or r.get("tenant_id") or "") for r in routers]

    # The reads made for every push and poll go through the proxy's raw GET: the JSON as
    # Neutron sent it, parsed by our models, without the SDK's resource objects (about half the
    # client CPU of a read). Writes and rare reads keep the SDK's resource layer.
    def get_router(self, router_id: str) -> Router:
        router = self._calls.run(
            f"get router {router_id}",
            lambda: self._get(f"/routers/{router_id}", "router"),
            on_missing=lambda: _gone(router_id),
        )
        ports = self._calls.run(
            f"list ports of router {router_id}",
            lambda: self._get("/ports", "ports", device_id=router_id),
        )
        fips = self._calls.run(
            f"list floating IPs of router {router_id}",
            lambda: self._get("/floatingips", "floatingips", router_id=router_id),
        )
        return Router.from_neutron(router, ports, fips)

    def snapshot(
        self, before_routers: Callable[[], object] | None = None
    ) -> tuple[list[Router], dict[str, NetworkInfo], list[Port]]:
        """Every router (with its ports and FIPs), network (with its subnets) and port, in
        five list calls: what a cold start reads instead of a dozen calls per router.
        ``before_routers`` is called (and may raise) before the routers are listed."""
        # Routers last: whatever a port or floating IP listed belongs to is in the list (the
        # orphan sweep, given this listing by a drift sweep, must not take a new router's port
        # for an orphan's).
        ports = self._calls.run("list ports", lambda: self._list("/ports", "ports"))
        fips = self._calls.run(
            "list floating IPs", lambda: self._list("/floatingips", "floatingips")
        )
        nets = self._calls.run("list networks", lambda: self._list("/networks", "networks"))
        subnets = self._calls.run("list subnets", lambda: self._list("/subnets", "subnets"))
        if before_routers is not None:
            before_routers()
        routers = self._calls.run("list routers", lambda: self._list("/routers", "routers"))
        ports_of: dict[str, list[Any]] = {}
        for p in ports:
            ports_of.setdefault(p.get("device_id") or "", []).append(p)
        fips_of: dict[str, list[Any]] = {}
        for f in fips:
            fips_of.setdefault(f.get("router_id") or "", []).append(f)
        subnets_of: dict[str, list[Any]] = {}
        for s in subnets:
            subnets_of.setdefault(s.get("network_id") or "", []).append(s)
        return (
            [
                Router.from_neutron(r, ports_of.get(r["id"], []), fips_of.get(r["id"], []))
                for r in routers
            ],
            {n["id"]: NetworkInfo.from_neutron(n, subnets_of.get(n["id"], [])) for n in nets},
            [Port.from_neutron(p) for p in ports],
        )

    def get_network(self, network_id: str) -> NetworkInfo:
        network = self._calls.run(
            f"get network {network_id}", lambda: self._get(f"/networks/{network_id}", "network")
        )
        subnets = self._calls.run(
            f"list subnets of network {network_id}",
            lambda: self._get("/subnets", "subnets", network_id=network_id),
        )
        return NetworkInfo.from_neutron(network, subnets)

    def list_ports(
        self,
        *,
        device_id: str | None = None,
        network_id: str | None = None,
        name: str | None = None,
        oldest_first: bool = False,
    ) -> list[Port]:
        given = {"device_id": device_id, "network_id": network_id, "name": name}
        query = {k: v for k, v in given.items() if v is not None}
        read = self._get if query else self._list  # every port of the cloud comes in pages
        ports = self._calls.run("list ports", lambda: read("/ports", "ports", **query))
        if oldest_first:
            # Sorted here rather than with Neutron's sort_key: not every deployment allows
            # sorting on created_at, and the lists that ask for it are a few ports long.
            # created_at has whole seconds; the id breaks ties the same way for every reader.
            ports = sorted(ports, key=lambda p: (p.get("created_at") or "", p["id"]))
        return [Port.from_neutron(p) for p in ports]

    def list_port_names(self) -> list[tuple[str, str]]:
        ports = self._calls.run(
            "list port names",
            lambda: get_all(
                self._net, "/ports", "ports", {"fields": ["id", "name"], "limit": str(LIST_PAGE)}
            ),
        )
        return [(p["id"], p.get("name") or "") for p in ports]

    def list_floating_ips(self, router_id: str) -> list[FloatingIp]:
        fips = self._calls.run(
            f"list floating IPs of router {router_id}",
            lambda: self._get("/floatingips", "floatingips", router_id=router_id),
        )
        return [FloatingIp.from_neutron(f) for f in fips]

    def create_port(
        self,
        *,
        name: str,
        network_id: str,
        tenant_id: str = "",
        subnet_id: str | None = None,
        device_id: str = "",
        device_owner: str = "",
    ) -> Port:
        attrs: dict[str, Any] = {
            "name": name,
            "network_id": network_id,
            "is_admin_state_up": True,
            "is_port_security_enabled": False,
            "security_group_ids": [],
            "fixed_ips": [{"subnet_id": subnet_id}] if subnet_id else [],
        }
        if tenant_id:
            attrs["project_id"] = tenant_id
        if device_id:
            attrs["device_id"] = device_id
        if device_owner:
            attrs["device_owner"] = device_owner
        port = self._calls.run(
            f"create port {name}",
            lambda: wire(self._net.create_port(**attrs)),
            idempotent=False,
        )
        return Port.from_neutron(port)

    def update_port(self, port_id: str, *, name: str, if_revision: int | None = None) -> Port:
        """Rename a port; with ``if_revision``, as Neutron's compare-and-swap (``If-Match:
        revision_number=N``): its 412 raises ``RevisionConflict``. A conditional rename is
        retried on a 503 only (Neutron did not take it): after another 5xx or a timeout it may
        have been applied, and a repeat would see our own new revision as someone else's and
        report a race we won as lost. A port that is gone raises ``NetworkError``."""
        what = f"rename port {port_id} to {name}"
        if if_revision is not None:
            what += f" if at revision {if_revision}"

        def call() -> Any:
            from openstack import exceptions

            try:
                return wire(self._net.update_port(port_id, if_revision=if_revision, name=name))
            except exceptions.PreconditionFailedException as exc:
                raise RevisionConflict(f"{what}: {exc.details or exc}") from None

        port = self._calls.run(what, call, idempotent=if_revision is None)
        return Port.from_neutron(port)

    def delete_port(self, port_id: str) -> None:
        self._calls.run(
            f"delete port {port_id}", lambda: self._net.delete_port(port_id, ignore_missing=True)
        )

    def set_router_status(self, router_id: str, status: str, shown: str | None = None) -> None:
        via = self._status_method()
        if via == "extension":
            body = {"routerstatus": {"status": status}}
            self._calls.run(
                f"set status of router {router_id}",
                lambda: self._put(f"/{STATUS_EXTENSION}/{router_id}", body),
                on_missing=lambda: _gone(router_id),
            )
        elif via == "tag":
            self._tag_status(router_id, status, shown)

    def _status_method(self) -> str:
        """How status reaches Neutron, from the extensions the cloud offers (asked once: the
        first router asks, the others wait for its answer instead of all asking at once)."""
        if self._status_via is not None:
            return self._status_via
        with self._status_lock:
            if self._status_via is None:
                if self._status_mode == "none":
                    self._status_via = "none"
                else:
                    aliases = self._calls.run(
                        "list extensions", lambda: {e.alias for e in self._net.extensions()}
                    )
                    self._status_via = _choose_status_method(self._status_mode, aliases)
                    LOG.info("router status goes to Neutron via: %s", self._status_via)
            return self._status_via

    def _tag_status(self, router_id: str, status: str, shown: str | None = None) -> None:
        """Keep exactly one ``astara-status:<S>`` tag, adding the new one before the old go.

        The tags are read raw and alone (``fields=tags``): through the SDK's resource layer the
        read cost more CPU than the rest of a router's configuration together, and every
        request through it waited on keystoneauth's lock to learn the project (profiled at
        3,000 routers: 63 % of the bring-up's samples were in this method)."""
        if shown is None:  # not known: read the tags (else the caller saw them, or set them)
            router = self._calls.run(
                f"get router {router_id}",
                lambda: self._get(f"/routers/{router_id}", "router", fields="tags"),
                on_missing=lambda: _gone(router_id),
            )
            tags = router.get("tags") or []
        else:
            tags = [STATUS_TAG_PREFIX + shown] if shown else []
        new = STATUS_TAG_PREFIX + status
        path = f"/routers/{router_id}/tags/"
        if new not in tags:
            self._calls.run(
                f"tag router {router_id}",
                lambda: self._put(path + quote(new, safe=":"), None),
                on_missing=lambda: _gone(router_id),
            )
        for old in tags:
            if old.startswith(STATUS_TAG_PREFIX) and old != new:
                self._calls.run(
                    f"untag router {router_id}",
                    functools.partial(self._delete, path + quote(old, safe=":")),
                    on_missing=lambda: None,
                )

    def _get(self, path: str, key: str, **params: str) -> Any:
        """``GET path`` raw; the ``key`` member, every page of a list (see ``get_all``)."""
        return get_all(self._net, path, key, params)

    def _list(self, path: str, key: str, **params: str) -> Any:
        """A whole-cloud list, ``LIST_PAGE`` items a request: each page is decoded on its own
        and the GIL is let go between pages, so a listing of 10,000 routers' ports never holds
        the actors' threads for the seconds one 40,000-port answer takes to decode."""
        return get_all(self._net, path, key, {**params, "limit": str(LIST_PAGE)})

    def _put(self, path: str, body: dict[str, Any] | None) -> None:
        raise_for_status(self._net.put(path, json=body))

    def _delete(self, path: str) -> None:
        raise_for_status(self._net.delete(path))


def _choose_status_method(mode: str, aliases: set[str]) -> str:
    if mode in ("auto", "extension") and STATUS_EXTENSION in aliases:
        return "extension"
    if mode in ("auto", "tag") and TAG_EXTENSION in aliases:
        return "tag"
    if mode != "auto":
        LOG.warning("status_mode %s: Neutron lacks the extension; status is not pushed", mode)
    return "none"
