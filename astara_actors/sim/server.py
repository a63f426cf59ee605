"""One HTTP server for Keystone, Neutron and Nova, plus the simulator's admin endpoint.

Routes: ``/identity`` (Keystone v3), ``/network`` (Neutron v2.0), ``/compute`` (Nova v2.1),
``/sim`` (faults and load at run time, the tenants' instances and their metadata fetches; see
:class:`_Admin`). The appliance agents listen on their own addresses (:mod:`.appliances`), Nova's
metadata API on a port of its own (:mod:`.nova.metadata`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import falcon

from astara_actors.sim._http import AuthMiddleware, require_caller
from astara_actors.sim.cloud import GuestError, SimCloud
from astara_actors.sim.keystone.api import add_keystone_routes
from astara_actors.sim.load import LoadDriver
from astara_actors.sim.neutron.api import add_neutron_routes
from astara_actors.sim.nova.api import add_nova_routes
from astara_actors.sim.trace import Trace
from astara_actors.sim.wsgi import WSGIServerThread

__all__ = ["SimServer", "build_app"]

LOG = logging.getLogger(__name__)

GUESTS_IN_STATUS = 100  # GET /sim lists this many guests at most (all: GET /sim/guests)
SERVICES = {"/identity": "identity", "/network": "network", "/compute": "compute"}
# Faults an operator may change at run time through PUT /sim/faults.
FAULTS = (
    "error_rate_identity",
    "error_rate_network",
    "error_rate_compute",
    "latency_identity",
    "latency_network",
    "latency_compute",
    "boot_failure_rate",
    "boot_delay",
    "appliance_latency",
    "load_rate",
)


class Faults:
    """The current fault settings, shared by the middleware, Nova and the load driver."""

    def __init__(self, cloud: SimCloud, rng: random.Random) -> None:
        self._cloud = cloud
        self._rng = rng
        self._lock = threading.Lock()
        s = cloud.settings
        self.values: dict[str, float] = {key: float(getattr(s, key)) for key in FAULTS}

    def update(self, changes: dict[str, Any]) -> dict[str, float]:
        unknown = sorted(set(changes) - set(FAULTS))
        if unknown:
            raise falcon.HTTPBadRequest(
                title="Unknown fault",
                description=f"unknown: {', '.join(unknown)}; known: {', '.join(FAULTS)}",
            )
        with self._lock:
            for key, value in changes.items():
                if not isinstance(value, int | float) or value < 0:
                    raise falcon.HTTPBadRequest(
                        title="Bad fault", description=f"{key} must be a number >= 0"
                    )
                if (key.startswith("error_rate") or key == "boot_failure_rate") and value > 1:
                    raise falcon.HTTPBadRequest(
                        title="Bad fault", description=f"{key} must be <= 1"
                    )
                self.values[key] = float(value)
            self._cloud.nova.boot_failure_rate = self.values["boot_failure_rate"]
            self._cloud.nova.boot_delay = self.values["boot_delay"]
            self._cloud.appliances.latency = self.values["appliance_latency"]
            return dict(self.values)

    def for_request(self, service: str) -> tuple[bool, float]:
        """(answer 503?, seconds of latency) for one request to ``service``."""
        with self._lock:
            rate = self.values.get(f"error_rate_{service}", 0.0)
            latency = self.values.get(f"latency_{service}", 0.0)
            return (rate > 0 and self._rng.random() < rate), latency


class _FaultMiddleware:
    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        prefix = "/" + req.path.split("/", 2)[1] if req.path.count("/") else req.path
        service = SERVICES.get(prefix)
        if service is None:
            return
        fail, latency = self._faults.for_request(service)
        if latency:
            time.sleep(latency)  # the injected latency itself, on this request's own thread
        if fail:
            raise falcon.HTTPServiceUnavailable(
                title="Service Unavailable", description=f"injected {service} fault"
            )


class _TraceMiddleware:
    """Records every answered Keystone, Neutron and Nova request in the cloud's trace."""

    def __init__(self, trace: Trace) -> None:
        self._trace = trace

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        prefix = "/" + req.path.split("/", 2)[1] if req.path.count("/") else req.path
        if prefix in SERVICES and self._trace.enabled:
            status = str(resp.status).split(" ", 1)[0]
            query = f"?{req.query_string}" if req.query_string else ""
            self._trace.record("api", detail=f"{req.method} {req.path}{query} {status}")


class _Admin:
    """``/sim``: status, faults, appliance and server faults (``POST
    /sim/appliances/<router-or-server>/kill|hang|revive|forget|lie|honest``), load, the trace
    (:mod:`.trace`), the tenants' instances (``GET /sim/guests``) and one guest's metadata fetch
    through its router's appliance (``GET /sim/guests/<server-id>/metadata/<path>``)."""

    def __init__(self, cloud: SimCloud, faults: Faults, load: LoadDriver) -> None:
        self.cloud, self.faults, self.load = cloud, faults, load

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.status()

    def status(self) -> dict[str, Any]:
        c = self.cloud
        return {
            "neutron": "simulated" if c.neutron else c.settings.neutron_auth_url,
            # Counted, not listed: a bench polls this while 50,000 VMs boot.
            "routers": c.neutron.count("router") if c.neutron else None,
            "servers": c.nova.count(placed=False),  # the service VMs (guests are not counted)
            "appliances": c.appliances.stats(),
            "nova_metadata": c.metadata.stats(),
            "faults": dict(self.faults.values),
            "load": self.load.stats(),
            "management_network_id": c.management_network_id,
            "management_subnet_id": c.management_subnet_id,
            "external_network_id": c.external_network_id,
            "guests_total": c.nova.count(placed=True),
            # pick one: GET /sim/guests/<id>/metadata/openstack/latest/meta_data.json
            "guests": c.guests(limit=GUESTS_IN_STATUS),
        }

    def on_put_faults(self, req: falcon.Request, resp: falcon.Response) -> None:
        changes = _body(req)
        values = self.faults.update(changes)
        self.load.rate = values["load_rate"]
        resp.media = values

    def on_post_appliance(
        self, req: falcon.Request, resp: falcon.Response, ident: str, what: str
    ) -> None:
        actions: dict[str, Callable[[str], Any]] = {
            "kill": self.cloud.appliances.kill,
            "hang": self.cloud.appliances.hang,
            "revive": self.cloud.appliances.revive,
            "forget": self.cloud.appliances.forget_config,
            "honest": lambda server_id: self.cloud.appliances.lie(server_id, None),
        }
        if what == "lie":
            self._lie(req, resp, ident)
            return
        if what not in actions:
            raise falcon.HTTPNotFound(
                description=f"no appliance action {what!r}; use {', '.join(actions)}, lie"
            )
        servers = self.cloud.servers_for(ident)
        if not servers:
            raise falcon.HTTPNotFound(description=f"no server or router {ident!r}")
        for server_id in servers:
            actions[what](server_id)
        resp.media = {"servers": servers, "done": what}

    def _lie(self, req: falcon.Request, resp: falcon.Response, ident: str) -> None:
        """``lie``: the forwarder claims ``{"instance_id": ...}`` (default: another tenant's
        guest) for every guest; ``honest`` undoes it."""
        body = _body(req) if req.content_length else {}
        unknown = sorted(set(body) - {"instance_id"})
        claim = body.get("instance_id")
        if unknown or not (
            claim is None
            or (isinstance(claim, str) and 0 < len(claim) <= 255 and claim.isprintable())
        ):
            raise falcon.HTTPBadRequest(
                title="Bad body",
                description='expected {"instance_id": "<the instance id to claim>"} or nothing',
            )
        if not self.cloud.servers_for(ident):
            raise falcon.HTTPNotFound(description=f"no server or router {ident!r}")
        servers, claimed = self.cloud.lie(ident, claim)
        resp.media = {"servers": servers, "done": "lie", "instance_id": claimed}

    def on_get_guests(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The tenants' instances (guests): id, name, tenant, address, network, router."""
        resp.media = {"guests": self.cloud.guests()}

    def on_get_guest_metadata(
        self, req: falcon.Request, resp: falcon.Response, ident: str, path: str = ""
    ) -> None:
        """What the guest gets for ``GET http://169.254.169.254/<path>?<query>``, through its
        router's appliance: status, content type and body as they came."""
        target = "/" + quote(path, safe="/:@!$&'()*+,;=-._~")
        if req.query_string:
            target += f"?{req.query_string}"
        if not target.isprintable() or " " in target:
            raise falcon.HTTPBadRequest(title="Bad path", description="the path is not printable")
        try:
            status, ctype, body = self.cloud.guest_metadata(ident, target)
        except GuestError as exc:
            raise falcon.HTTPError(
                falcon.code_to_http_status(exc.status),
                title="Guest metadata fetch not possible",
                description=exc.message,
            ) from None
        except KeyError as exc:  # its appliance went away meanwhile
            raise falcon.HTTPServiceUnavailable(description=str(exc.args[0])) from None
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = ctype or "application/octet-stream"
        resp.data = body

    def on_get_trace(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The trace: ``?since=&until=&kinds=a,b&router=`` filter; ``summary=1`` counts only."""
        trace = self.cloud.trace
        try:
            since = float(req.get_param("since") or 0.0)
            until_param = req.get_param("until")
            until = float(until_param) if until_param else None
        except ValueError:
            raise falcon.HTTPBadRequest(
                title="Bad parameter", description="since and until are unix times"
            ) from None
        kinds = [k for k in (req.get_param("kinds") or "").split(",") if k] or None
        out: dict[str, Any] = trace.stats()
        if req.get_param_as_bool("summary", default=False):
            out["summary"] = trace.summary(since=since, until=until, kinds=kinds)
        else:
            out["events"] = trace.events(
                since=since, until=until, kinds=kinds, router=req.get_param("router") or None
            )
        resp.media = out

    def on_put_trace(self, req: falcon.Request, resp: falcon.Response) -> None:
        """``{"maxlen": N, "enabled": bool}`` (either)."""
        body = _body(req)
        unknown = sorted(set(body) - {"maxlen", "enabled"})
        maxlen, enabled = body.get("maxlen"), body.get("enabled")
        if (
            unknown
            or not (
                maxlen is None
                or (isinstance(maxlen, int) and not isinstance(maxlen, bool) and maxlen >= 1)
            )
            or not (enabled is None or isinstance(enabled, bool))
        ):
            raise falcon.HTTPBadRequest(
                title="Bad trace settings",
                description='expected {"maxlen": int >= 1, "enabled": bool}',
            )
        resp.media = self.cloud.trace.configure(maxlen=maxlen, enabled=enabled)

    def on_delete_trace(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.cloud.trace.clear()
        resp.media = self.cloud.trace.stats()

    def on_post_vms(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Boot a VM, as astara would, for every router (or ``{"routers": [...]}``) without one."""
        body = _body(req) if req.content_length else {}
        routers = body.get("routers")
        if routers is not None and not (
            isinstance(routers, list) and all(isinstance(r, str) for r in routers)
        ):
            raise falcon.HTTPBadRequest(
                title="Bad body", description="routers must be a list of ids"
            )
        resp.media = {"booted": self.cloud.boot_vms(routers)}

    def on_get_router(self, req: falcon.Request, resp: falcon.Response, ident: str) -> None:
        """How often the router was booted and configured (two drivers show as extra boots)."""
        resp.media = {"router_id": ident, **self.cloud.router_counters(ident)}

    def on_delete_server(self, req: falcon.Request, resp: falcon.Response, ident: str) -> None:
        """A server deleted behind the orchestrator's back."""
        servers = self.cloud.servers_for(ident)
        if not servers:
            raise falcon.HTTPNotFound(description=f"no server or router {ident!r}")
        for server_id in servers:
            self.cloud.nova.delete(server_id)
        resp.media = {"deleted": servers}


def _body(req: falcon.Request) -> dict[str, Any]:
    try:
        body = json.load(req.bounded_stream)
    except ValueError:
        raise falcon.HTTPBadRequest(
            title="Malformed JSON", description="the body must be JSON"
        ) from None
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(title="Bad body", description="the body must be a JSON object")
    return body


def build_app(
    cloud: SimCloud, faults: Faults, load: LoadDriver, base_url: Callable[[], str]
) -> falcon.App:
    """The Falcon app; ``base_url()`` is what the catalog advertises (known once bound)."""

    def endpoints() -> dict[str, str]:
        base = base_url()
        return {
            "identity": f"{base}/identity/v3/",
            "network": f"{base}/network",
            "compute": f"{base}/compute/v2.1",
        }

    # A tuple, not a list: the type checker matches each component to falcon's middleware types.
    app = falcon.App(
        middleware=(
            _TraceMiddleware(cloud.trace),
            _FaultMiddleware(faults),
            AuthMiddleware(cloud.tokens),
        )
    )
    if cloud.neutron is not None:  # beside a real Neutron, Keystone and Neutron are real
        add_keystone_routes(app, cloud.keystone, "/identity", endpoints=endpoints)
        add_neutron_routes(app, cloud.neutron, "/network")
    add_nova_routes(app, cloud.nova, require_caller, prefix="/compute")
    admin = _Admin(cloud, faults, load)
    app.add_route("/sim", admin)
    app.add_route("/sim/faults", admin, suffix="faults")
    app.add_route("/sim/trace", admin, suffix="trace")
    app.add_route("/sim/vms", admin, suffix="vms")
    app.add_route("/sim/appliances/{ident}/{what}", admin, suffix="appliance")
    app.add_route("/sim/servers/{ident}", admin, suffix="server")
    app.add_route("/sim/routers/{ident}", admin, suffix="router")
    app.add_route("/sim/guests", admin, suffix="guests")
    app.add_route("/sim/guests/{ident}/metadata", admin, suffix="guest_metadata")
    app.add_route("/sim/guests/{ident}/metadata/{path:path}", admin, suffix="guest_metadata")
    return app


class SimServer:
    """The whole simulator of one process: cloud, HTTP server and background drivers."""

    def __init__(self, cloud: SimCloud) -> None:
        self.cloud = cloud
        self.faults = Faults(cloud, cloud.rng)
        self.load = LoadDriver(cloud, rate=cloud.settings.load_rate)
        self.http = WSGIServerThread(
            lambda environ, start_response: self.app(environ, start_response),
            cloud.settings.listen,
            cloud.settings.port,
        )
        public = cloud.settings.public_url.rstrip("/")
        self.app = build_app(cloud, self.faults, self.load, lambda: public or self.http.url)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="sim-ticker", daemon=True)

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def nova_metadata_url(self) -> str | None:
        """The simulated Nova metadata API (None: not serving; see ``SimCloud``)."""
        return self.cloud.nova_metadata_url

    def start(self) -> SimServer:
        self.cloud.start()
        self.http.start()
        self.load.start()
        self._ticker.start()
        LOG.info("astara-sim serving on %s", self.url)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.load.stop()
        self.http.stop()
        if self._ticker.is_alive():  # nothing changes the cloud while it is kept a last time
            self._ticker.join(timeout=5)
        self.cloud.stop()

    def _tick(self) -> None:
        # Servers nobody reads still go ACTIVE/gone (their agents start/stop); and, if asked,
        # an appliance dies now and then.
        interval = self.cloud.settings.appliance_failure_interval
        next_failure = time.monotonic() + interval if interval else None
        while not self._stop.wait(0.1):
            self.cloud.nova.tick()
            if self.cloud.leftovers:
                self.cloud.reap(time.monotonic())
            if next_failure is not None and time.monotonic() >= next_failure:
                self.cloud.kill_random_appliance()
                next_failure = time.monotonic() + interval
