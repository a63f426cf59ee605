"""Nova v2.1 over Falcon: the calls openstacksdk makes, shaped per microversion.

Mount with :func:`add_nova_routes`; requests under ``{prefix}/v2.1/...`` and the legacy
``{prefix}/v2.1/{project_id}/...`` form both work. Errors use Nova's bodies
(``{"itemNotFound": {"code": 404, "message": ...}}``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import falcon

from .contracts import Caller
from .nova import NovaFault, NovaModel

__all__ = ["MAX_MICROVERSION", "MIN_MICROVERSION", "add_nova_routes"]

Auth = Callable[[falcon.Request], Caller]
Version = tuple[int, int]
MIN_MICROVERSION: Version = (2, 1)
MAX_MICROVERSION: Version = (2, 79)

_FAULT_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
    429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable",
}
_VM_STATES = {"BUILD": "building", "ACTIVE": "active", "ERROR": "error"}


def _vstr(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


def _negotiate(req: falcon.Request) -> Version:
    """The microversion asked for (headers new and legacy), 2.1 if none; 406 if unsupported."""
    asked = None
    for item in (req.get_header("OpenStack-API-Version") or "").split(","):
        service, _, value = item.strip().partition(" ")
        if service.lower() == "compute":
            asked = value.strip()
    if asked is None:
        asked = req.get_header("X-OpenStack-Nova-API-Version")
    if not asked:
        return MIN_MICROVERSION
    if asked.lower() == "latest":
        return MAX_MICROVERSION
    try:
        major, minor = (int(p) for p in asked.split("."))
    except ValueError:
        raise NovaFault(400, f"Invalid format for API version {asked!r}.") from None
    if not MIN_MICROVERSION <= (major, minor) <= MAX_MICROVERSION:
        raise NovaFault(
            406,
            f"Version {asked} is not supported by the API. Minimum is "
            f"{_vstr(MIN_MICROVERSION)} and maximum is {_vstr(MAX_MICROVERSION)}.",
        )
    return major, minor


def _fault(resp: falcon.Response, code: int, message: str) -> None:
    resp.status = code
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps({_FAULT_NAMES.get(code, "computeFault"): {"code": code, "message": message}})


def _nova(fn: Callable[..., None]) -> Callable[..., None]:
    """Negotiate the microversion, authenticate, and turn ``NovaFault`` into Nova's body."""

    @functools.wraps(fn)
    def responder(self: _Resource, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        params.pop("project_id", None)
        try:
            mv = _negotiate(req)
            resp.set_header("OpenStack-API-Version", f"compute {_vstr(mv)}")
            resp.set_header("X-OpenStack-Nova-API-Version", _vstr(mv))
            resp.set_header("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
            caller = self.auth(req)
            fn(self, req, resp, caller, mv, **params)
        except NovaFault as e:
            _fault(resp, e.code, e.message)

    return responder


def _body(req: falcon.Request, key: str) -> dict[str, Any]:
    try:
        data = json.loads(req.bounded_stream.read() or b"null")
    except ValueError:
        raise NovaFault(400, "Malformed request body") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise NovaFault(400, f"Invalid input for field/attribute {key}.")
    return data[key]


class _Resource:
    def __init__(self, nova: NovaModel, auth: Auth, prefix: str, max_limit: int) -> None:
        self.nova = nova
        self.auth = auth
        self.prefix = prefix
        self.max_limit = max_limit

    def base(self, req: falcon.Request) -> str:
        return req.prefix + self.prefix

    def version_doc(self, req: falcon.Request) -> dict[str, Any]:
        return {
            "id": "v2.1", "status": "CURRENT", "version": _vstr(MAX_MICROVERSION),
            "min_version": _vstr(MIN_MICROVERSION), "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{self.base(req)}/v2.1/"}],
            "media-types": [{
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }],
        }

    def server_doc(self, req: falcon.Request, s: dict[str, Any], mv: Version, caller: Caller) -> dict[str, Any]:
        base, sid, active = self.base(req), s["id"], s["status"] == "ACTIVE"
        links = [
            {"rel": "self", "href": f"{base}/v2.1/servers/{sid}"},
            {"rel": "bookmark", "href": f"{base}/servers/{sid}"},
        ]
        if mv >= (2, 47):
            flavor: dict[str, Any] = {
                "original_name": s["flavor_id"], "vcpus": 1, "ram": 512, "disk": 1,
                "ephemeral": 0, "swap": 0, "extra_specs": {},
            }
        else:
            flavor = {"id": s["flavor_id"], "links": [
                {"rel": "bookmark", "href": f"{base}/flavors/{s['flavor_id']}"}]}
        host = s["host"]
        doc: dict[str, Any] = {
            "id": sid, "name": s["name"], "status": s["status"], "links": links,
            "tenant_id": s["project_id"], "user_id": s["user_id"], "metadata": s["metadata"],
            "hostId": hashlib.sha224((s["project_id"] + host).encode()).hexdigest() if host else "",
            "image": {"id": s["image_id"], "links": [
                {"rel": "bookmark", "href": f"{base}/images/{s['image_id']}"}]},
            "flavor": flavor, "created": s["created"], "updated": s["updated"],
            "addresses": s["addresses"], "accessIPv4": "", "accessIPv6": "",
            "config_drive": "True" if s["config_drive"] else "", "key_name": None,
            "progress": 0, "OS-DCF:diskConfig": "MANUAL", "OS-EXT-AZ:availability_zone": "nova",
            "OS-EXT-STS:task_state": s["task_state"],
            "OS-EXT-STS:vm_state": _VM_STATES.get(s["status"], s["status"].lower()),
            "OS-EXT-STS:power_state": 1 if active else 0,
            "OS-SRV-USG:launched_at": s["updated"].rstrip("Z") + ".000000" if active else None,
            "OS-SRV-USG:terminated_at": None,
            "os-extended-volumes:volumes_attached": [],
            "security_groups": [{"name": "default"}],
        }
        if caller.is_admin:
            doc["OS-EXT-SRV-ATTR:host"] = host
            doc["OS-EXT-SRV-ATTR:hypervisor_hostname"] = host
            doc["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{sid[:8]}"
            if mv >= (2, 3):
                doc["OS-EXT-SRV-ATTR:user_data"] = s["user_data"]
                doc["OS-EXT-SRV-ATTR:hostname"] = s["name"]
        if mv >= (2, 9):
            doc["locked"] = False
        if mv >= (2, 19):
            doc["description"] = None
        if mv >= (2, 26):
            doc["tags"] = []
        if s["fault"]:
            doc["fault"] = s["fault"]
        return doc


class _Root(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"versions": [self.version_doc(req)]}


class _V21(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        resp.media = {"version": self.version_doc(req)}


class _Servers(_Resource):
    def __init__(self, *args: Any, detail: bool) -> None:
        super().__init__(*args)
        self.detail = detail

    @_nova
    def on_get(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version) -> None:
        params = req.params
        all_tenants = params.get("all_tenants", "0").lower() not in ("0", "false", "off", "no")
        try:
            limit = min(int(params.get("limit", self.max_limit)), self.max_limit)
        except ValueError:
            raise NovaFault(400, "limit must be an integer") from None
        page = self.nova.servers(
            caller, name=params.get("name"), all_tenants=all_tenants, status=params.get("status"),
            project_id=params.get("project_id") or params.get("tenant_id"),
            marker=params.get("marker"), limit=max(limit, 0),
        )
        key = "servers"
        if self.detail:
            body: dict[str, Any] = {key: [self.server_doc(req, s, mv, caller) for s in page]}
        else:
            body = {key: [{"id": s["id"], "name": s["name"],
                           "links": self.server_doc(req, s, mv, caller)["links"]} for s in page]}
        if page and len(page) == limit:
            query = {k: v for k, v in params.items() if k != "marker"}
            query.update(limit=str(limit), marker=page[-1]["id"])
            path = "/servers/detail" if self.detail else "/servers"
            body["servers_links"] = [{"rel": "next", "href":
                                      f"{self.base(req)}/v2.1{path}?{urlencode(query)}"}]
        resp.media = body

    @_nova
    def on_post(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version) -> None:
        spec = _body(req, "server")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise NovaFault(400, "Invalid input for field/attribute name.")
        for key in ("imageRef", "flavorRef"):
            if not spec.get(key):
                raise NovaFault(400, f"Missing {key} attribute")
        port_ids = []
        networks = spec.get("networks", [])
        if isinstance(networks, list):
            for net in networks:
                if not isinstance(net, dict) or not net.get("port"):
                    raise NovaFault(400, "The simulated Nova boots with existing ports only.")
                port_ids.append(net["port"])
        elif networks not in ("auto", "none"):
            raise NovaFault(400, "Invalid input for field/attribute networks.")
        user_data = spec.get("user_data")
        if user_data is not None:
            try:
                base64.b64decode(user_data, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise NovaFault(400, "User data needs to be valid base 64.") from None
        drive = spec.get("config_drive", False)
        server = self.nova.create(
            caller, name=name, image_id=str(spec["imageRef"]), flavor_id=str(spec["flavorRef"]),
            port_ids=port_ids, user_data=user_data, metadata=spec.get("metadata") or {},
            config_drive=drive is True or str(drive).lower() == "true",
        )
        links = self.server_doc(req, server, mv, caller)["links"]
        resp.status = falcon.HTTP_202
        resp.location = links[0]["href"]
        resp.media = {"server": {
            "id": server["id"], "links": links, "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": "default"}], "adminPass": secrets.token_urlsafe(9),
        }}


class _Server(_Resource):
    @_nova
    def on_get(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version,
               server_id: str) -> None:
        resp.media = {"server": self.server_doc(req, self.nova.get(server_id, caller), mv, caller)}

    @_nova
    def on_delete(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version,
                  server_id: str) -> None:
        self.nova.delete(server_id, caller)
        resp.status = falcon.HTTP_204


class _Interfaces(_Resource):
    @_nova
    def on_get(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version,
               server_id: str) -> None:
        resp.media = {"interfaceAttachments": self.nova.interfaces(server_id, caller)}

    @_nova
    def on_post(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version,
                server_id: str) -> None:
        port_id = _body(req, "interfaceAttachment").get("port_id")
        if not port_id:
            raise NovaFault(400, "The simulated Nova attaches existing ports only (port_id).")
        resp.media = {"interfaceAttachment": self.nova.attach(server_id, port_id, caller)}


class _Interface(_Resource):
    @_nova
    def on_get(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version,
               server_id: str, port_id: str) -> None:
        for attachment in self.nova.interfaces(server_id, caller):
            if attachment["port_id"] == port_id:
                resp.media = {"interfaceAttachment": attachment}
                return
        raise NovaFault(404, f"Port {port_id} is not attached")

    @_nova
    def on_delete(self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version,
                  server_id: str, port_id: str) -> None:
        self.nova.detach(server_id, port_id, caller)
        resp.status = falcon.HTTP_202


def add_nova_routes(
    app: falcon.App, nova: NovaModel, auth: Auth, prefix: str = "/compute", max_limit: int = 1000
) -> None:
    """Serve ``nova`` under ``prefix`` (the catalog URL is ``{prefix}/v2.1``).

    ``auth(req)`` returns the :class:`Caller` for the request's token or raises a Falcon error
    (401); ``max_limit`` caps a list page as Nova's ``[api] max_limit`` does.
    """
    prefix = prefix.rstrip("/")
    args = (nova, auth, prefix, max_limit)
    app.add_route(prefix or "/", _Root(*args))
    if prefix:
        app.add_route(f"{prefix}/", _Root(*args))
    app.add_route(f"{prefix}/v2.1", _V21(*args))
    app.add_route(f"{prefix}/v2.1/", _V21(*args))
    for base in (f"{prefix}/v2.1", f"{prefix}/v2.1/{{project_id}}"):
        app.add_route(f"{base}/servers", _Servers(*args, detail=False))
        app.add_route(f"{base}/servers/detail", _Servers(*args, detail=True))
        app.add_route(f"{base}/servers/{{server_id}}", _Server(*args))
        app.add_route(f"{base}/servers/{{server_id}}/os-interface", _Interfaces(*args))
        app.add_route(f"{base}/servers/{{server_id}}/os-interface/{{port_id}}", _Interface(*args))
