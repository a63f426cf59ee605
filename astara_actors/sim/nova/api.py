"""Nova v2.1 over Falcon: the calls openstacksdk makes, shaped per microversion as Nova 34's.

Mount with :func:`add_nova_routes`; requests under ``{prefix}/v2.1/...`` and the legacy
``{prefix}/v2.1/{project_id}/...`` form both work. Errors use Nova's bodies
(``{"itemNotFound": {"code": 404, "message": ...}}``); the REAL captures in
``tests/fixtures/nova-api`` are the reference for every document's keys.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlparse

import falcon

from astara_actors.sim.contracts import Caller
from astara_actors.sim.nova.model import UNSET, NovaFault, NovaModel

__all__ = ["MAX_MICROVERSION", "MIN_MICROVERSION", "add_nova_routes"]

Auth = Callable[[falcon.Request], Caller]
Version = tuple[int, int]
MIN_MICROVERSION: Version = (2, 1)
MAX_MICROVERSION: Version = (2, 100)

_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}
_PROGRESS_STATUSES = frozenset(
    {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}
)
_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})
# nova.utils.generate_password: no characters that look alike
_PASSWORD_SYMBOLS = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


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


def _version_headers(resp: falcon.Response, mv: Version) -> None:
    resp.set_header("OpenStack-API-Version", f"compute {_vstr(mv)}")
    resp.set_header("X-OpenStack-Nova-API-Version", _vstr(mv))
    resp.set_header("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")


def _fault(resp: falcon.Response, code: int, message: str) -> None:
    resp.status = code
    resp.content_type = "application/json; charset=UTF-8"
    name = _FAULT_NAMES.get(code, "computeFault")
    resp.text = json.dumps({name: {"code": code, "message": message}})


def _nova(fn: Callable[..., None]) -> Callable[..., None]:
    """Negotiate the microversion, authenticate, and turn ``NovaFault`` into Nova's body."""

    @functools.wraps(fn)
    def responder(
        self: _Resource, req: falcon.Request, resp: falcon.Response, **params: str
    ) -> None:
        params.pop("project_id", None)
        try:
            mv = _negotiate(req)
            _version_headers(resp, mv)
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


# PUT /servers/{id}: the properties of Nova's ``update`` schemas (schemas/servers.py), in their
# order (the order jsonschema reports errors in), with the microversion that added each.
_UPDATE_PROPERTIES: tuple[tuple[str, Version], ...] = (
    ("name", (2, 1)),
    ("OS-DCF:diskConfig", (2, 1)),
    ("accessIPv4", (2, 1)),
    ("accessIPv6", (2, 1)),
    ("description", (2, 19)),
    ("hostname", (2, 90)),
)
_UPDATED = frozenset({"name", "description"})  # the ones this simulator applies
_INVALID_NAME = (
    "An invalid 'name' value was provided. The name must be: printable characters. "
    "Can not start or end with whitespace."
)
# From this microversion on, PUT answers with the whole document GET shows (before: a subset).
_UPDATE_SHOWS_ALL: Version = (2, 75)


def _printable(char: str) -> bool:
    """``parameter_types._is_printable`` over the range Nova builds its regex from (the code
    points below U+FFFF: any other is refused, as Nova's regex refuses it)."""
    category = unicodedata.category(char)
    return (
        ord(char) < 0xFFFF
        and not category.startswith("C")
        and (not category.startswith("Z") or category == "Zs")
    )


def _valid_name(name: str) -> bool:
    """``parameter_types.valid_name_regex``: printable characters, no whitespace (nor anything
    unprintable) first or last; the empty string passes (``minLength`` refuses it)."""

    def edge(char: str) -> bool:
        return _printable(char) and unicodedata.category(char) != "Zs"

    return all(_printable(c) for c in name) and (not name or (edge(name[0]) and edge(name[-1])))


def _invalid(path: str, value: Any, message: str) -> NovaFault:
    """Nova's ``ValidationError`` for one body field (``validators._SchemaValidator``)."""
    return NovaFault(400, f"Invalid input for field/attribute {path}. Value: {value}. {message}")


def _unexpected(extras: list[str]) -> str:
    """jsonschema's ``additionalProperties`` message."""
    listed, verb = ", ".join(map(repr, extras)), "was" if len(extras) == 1 else "were"
    return f"Additional properties are not allowed ({listed} {verb} unexpected)"


def _check_server_name(value: Any) -> str:
    """``parameter_types.name``: type, format, minLength, maxLength, checked in that order."""
    if not isinstance(value, str):
        raise _invalid("name", value, f"{value!r} is not of type 'string'")
    if not _valid_name(value):
        raise NovaFault(400, _INVALID_NAME)
    if not value:
        raise _invalid("name", value, "'' should be non-empty")
    if len(value) > 255:
        raise _invalid("name", value, f"{value!r} is too long")
    return value


def _check_description(value: Any) -> str | None:
    """``parameter_types.description``: a string of printable characters (any whitespace
    allowed), at most 255, or null."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid("description", value, f"{value!r} is not of type 'string', 'null'")
    if not all(_printable(c) for c in value):
        # Nova quotes its whole printable-characters regex here; this says what it means.
        raise _invalid("description", value, f"{value!r} does not match printable characters")
    if len(value) > 255:
        raise _invalid("description", value, f"{value!r} is too long")
    return value


def _update_body(req: falcon.Request, mv: Version) -> dict[str, Any]:
    """The ``server`` of a PUT body, validated as Nova's ``update`` schema of ``mv`` validates
    it (errors in jsonschema's order, Nova's messages); only the keys this simulator applies."""
    try:
        body = json.loads(req.bounded_stream.read() or b"{}")
    except ValueError:
        raise NovaFault(400, "Malformed request body") from None
    if not isinstance(body, dict):
        raise NovaFault(400, f"{body!r} is not of type 'object'")
    known = [key for key, since in _UPDATE_PROPERTIES if mv >= since]
    if "server" in body:
        server = body["server"]
        if not isinstance(server, dict):
            raise _invalid("server", server, f"{server!r} is not of type 'object'")
        if "name" in server:
            _check_server_name(server["name"])
        if "description" in server and "description" in known:
            _check_description(server["description"])
        extras = sorted((key for key in server if key not in known), key=str)
        if extras:
            raise _invalid("server", server, _unexpected(extras))
    else:
        raise NovaFault(400, "'server' is a required property")
    extras = sorted((key for key in body if key != "server"), key=str)
    if extras:
        raise NovaFault(400, _unexpected(extras))
    ignored = sorted(set(server) - _UPDATED)
    if ignored:
        raise NovaFault(
            400,
            f"The simulated Nova updates only a server's name and description, not {ignored}.",
        )
    return dict(server)


def _id_from_href(ref: Any) -> str:
    """``flavorRef``/``imageRef`` may be a URL: its last path segment is the id (as Nova's)."""
    return urlparse(str(ref)).path.rstrip("/").split("/")[-1] or str(ref)


def _last(value: str | list[str]) -> str:
    """A query parameter given more than once counts with its last value."""
    return value[-1] if isinstance(value, list) else value


def _all_tenants(params: Mapping[str, str]) -> bool:
    """``nova.api.openstack.common.is_all_tenants``: present and empty, or a true boolean."""
    if "all_tenants" not in params:
        return False
    value = str(params["all_tenants"])
    if not value or value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise NovaFault(
        400,
        f"Invalid input received: Unrecognized value '{value}', acceptable "
        "values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', "
        "'true', 'y', 'yes'",
    )


def _requested_ports(spec: Mapping[str, Any]) -> list[str]:
    networks = spec.get("networks", [])
    if networks in ("auto", "none"):
        return []
    if not isinstance(networks, list):
        raise NovaFault(400, "Invalid input for field/attribute networks.")
    ports = []
    for net in networks:
        if not isinstance(net, dict) or not net.get("port"):
            raise NovaFault(400, "The simulated Nova boots with existing ports only.")
        ports.append(str(net["port"]))
    return ports


def _check_user_data(user_data: Any) -> None:
    if user_data is None:
        return
    try:
        base64.b64decode(user_data, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise NovaFault(400, "User data needs to be valid base 64.") from None


def _password() -> str:
    return "".join(secrets.choice(_PASSWORD_SYMBOLS) for _ in range(12))


def _usage_stamp(stamp: str | None) -> str | None:
    """``OS-SRV-USG:launched_at`` is shown as ``2026-12-02T13:22:43.000000``."""
    return None if stamp is None else stamp.rstrip("Z") + ".000000"


def _attachment_doc(attachment: dict[str, Any], mv: Version) -> dict[str, Any]:
    doc = dict(attachment)
    if mv >= (2, 70):
        doc["tag"] = None
    return doc


class _ServerDocs:
    """Nova's server documents (``views/servers.py``) from :class:`NovaModel` views."""

    def __init__(self, base: str, mv: Version, caller: Caller) -> None:
        self.base, self.mv, self.caller = base, mv, caller

    def links(self, sid: str) -> list[dict[str, str]]:
        return [
            {"rel": "self", "href": f"{self.base}/v2.1/servers/{sid}"},
            {"rel": "bookmark", "href": f"{self.base}/servers/{sid}"},
        ]

    def show(self, s: dict[str, Any], *, listing: bool = False) -> dict[str, Any]:
        """One server as ``GET /servers/{id}`` (``listing``: as ``/servers/detail``) shows it."""
        doc = self.core(s)
        if s["fault"]:
            doc["fault"] = s["fault"]
        if s["status"] in _PROGRESS_STATUSES:
            doc["progress"] = 0
        doc.update(
            {
                "OS-EXT-AZ:availability_zone": "nova" if s["host"] else "",
                "config_drive": "True" if s["config_drive"] else "",
                "key_name": s.get("key_name"),
                "OS-SRV-USG:launched_at": _usage_stamp(s["launched_at"]),
                "OS-SRV-USG:terminated_at": None,
            }
        )
        if not listing and s["security_groups"]:
            doc["security_groups"] = [{"name": n} for n in s["security_groups"]]
        if self.caller.is_admin:
            doc.update(self.extended_attributes(s))
        doc.update(
            {
                "OS-EXT-STS:task_state": s["task_state"],
                "OS-EXT-STS:vm_state": s["vm_state"],
                "OS-EXT-STS:power_state": s["power_state"],
                "os-extended-volumes:volumes_attached": [],
            }
        )
        doc.update(self.microversion_fields(s, listing))
        if listing:  # the detail view adds these last, for all servers at once
            if self.mv >= (2, 16) and self.caller.is_admin:
                doc["host_status"] = "UP" if s["host"] else ""
            if s["security_groups"]:
                doc["security_groups"] = [{"name": n} for n in s["security_groups"]]
        return doc

    def core(self, s: dict[str, Any]) -> dict[str, Any]:
        host, project = s["host"], s["project_id"]
        return {
            "accessIPv4": "",
            "accessIPv6": "",
            "addresses": s["addresses"],
            "created": s["created"],
            "flavor": self.flavor(s["flavor"]),
            "hostId": hashlib.sha224((project + host).encode()).hexdigest() if host else "",
            "id": s["id"],
            "image": self.image(s["image_id"]),
            "links": self.links(s["id"]),
            "metadata": s["metadata"],
            "name": s["name"],
            "status": s["status"],
            "tenant_id": project,
            "user_id": s["user_id"],
            "updated": s["updated"],
            "OS-DCF:diskConfig": "MANUAL",
        }

    def flavor(self, flavor: dict[str, Any]) -> dict[str, Any]:
        if self.mv >= (2, 47):
            return {
                "vcpus": flavor["vcpus"],
                "ram": flavor["ram"],
                "disk": flavor["disk"],
                "ephemeral": flavor["ephemeral"],
                "swap": flavor["swap"],
                "original_name": flavor["name"],
                "extra_specs": flavor["extra_specs"],
            }
        return {
            "id": flavor["id"],
            "links": [{"rel": "bookmark", "href": f"{self.base}/flavors/{flavor['id']}"}],
        }

    def image(self, image_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": image_id,
            "links": [{"rel": "bookmark", "href": f"{self.base}/images/{image_id}"}],
        }
        if self.mv >= (2, 98):
            doc["properties"] = {}
        return doc

    def extended_attributes(self, s: dict[str, Any]) -> dict[str, Any]:
        """``OS-EXT-SRV-ATTR:*``, admin only (Nova's default policy)."""
        doc: dict[str, Any] = {
            "OS-EXT-SRV-ATTR:host": s["host"],
            "OS-EXT-SRV-ATTR:instance_name": s["instance_name"],
            "OS-EXT-SRV-ATTR:hypervisor_hostname": s["host"],
        }
        if self.mv >= (2, 3):
            doc.update(
                {
                    "OS-EXT-SRV-ATTR:hostname": s["hostname"],
                    "OS-EXT-SRV-ATTR:kernel_id": "",
                    "OS-EXT-SRV-ATTR:launch_index": 0,
                    "OS-EXT-SRV-ATTR:ramdisk_id": "",
                    "OS-EXT-SRV-ATTR:reservation_id": s["reservation_id"],
                    "OS-EXT-SRV-ATTR:root_device_name": "/dev/sda" if s["launched_at"] else None,
                    "OS-EXT-SRV-ATTR:user_data": s["user_data"],
                }
            )
        return doc

    def microversion_fields(self, s: dict[str, Any], listing: bool) -> dict[str, Any]:
        """The keys later microversions added, in the order Nova adds them."""
        mv, admin = self.mv, self.caller.is_admin
        doc: dict[str, Any] = {}
        if mv >= (2, 9):
            doc["locked"] = False
        if mv >= (2, 16) and admin and not listing:
            doc["host_status"] = "UP" if s["host"] else ""
        if mv >= (2, 19):
            doc["description"] = s["description"]
        if mv >= (2, 26):
            doc["tags"] = []
        if mv >= (2, 63):
            doc["trusted_image_certificates"] = None
        if mv >= (2, 71) and not listing:
            doc["server_groups"] = []
        if mv >= (2, 73):
            doc["locked_reason"] = None
        if mv >= (2, 90) and not admin:
            doc["OS-EXT-SRV-ATTR:hostname"] = s["hostname"]
        if mv >= (2, 96):
            doc["pinned_availability_zone"] = None
        if mv >= (2, 100):
            doc["scheduler_hints"] = {}
        return doc


class _Resource:
    def __init__(self, nova: NovaModel, auth: Auth, prefix: str, max_limit: int) -> None:
        self.nova = nova
        self.auth = auth
        self.prefix = prefix
        self.max_limit = max_limit

    def base(self, req: falcon.Request) -> str:
        return req.prefix + self.prefix

    def docs(self, req: falcon.Request, mv: Version, caller: Caller) -> _ServerDocs:
        return _ServerDocs(self.base(req), mv, caller)

    def version_doc(self, req: falcon.Request, *, listed: bool = False) -> dict[str, Any]:
        """v2.1's document; ``listed``: as the root's list shows it (self link only)."""
        doc: dict[str, Any] = {
            "id": "v2.1",
            "status": "CURRENT",
            "version": _vstr(MAX_MICROVERSION),
            "min_version": _vstr(MIN_MICROVERSION),
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{self.base(req)}/v2.1/"}],
        }
        if not listed:
            doc["links"].append(
                {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
            )
            doc["media-types"] = [
                {
                    "base": "application/json",
                    "type": "application/vnd.openstack.compute+json;version=2.1",
                }
            ]
        return doc


class _Root(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        legacy = {
            "id": "v2.0",
            "status": "DEPRECATED",
            "version": "",
            "min_version": "",
            "updated": "2025-07-04T12:00:00Z",
            "links": [{"rel": "self", "href": f"{self.base(req)}/v2/"}],
        }
        resp.media = {"versions": [legacy, self.version_doc(req, listed=True)]}


class _V21(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        """Unauthenticated, but already versioned: it answers with the microversion headers."""
        try:
            _version_headers(resp, _negotiate(req))
        except NovaFault as e:
            _fault(resp, e.code, e.message)
            return
        resp.media = {"version": self.version_doc(req)}


class _Servers(_Resource):
    def __init__(self, *args: Any, detail: bool) -> None:
        super().__init__(*args)
        self.detail = detail

    @_nova
    def on_get(
        self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version
    ) -> None:
        params = {key: _last(value) for key, value in req.params.items()}
        all_tenants = _all_tenants(params)
        if all_tenants and not caller.is_admin:
            view = "detail" if self.detail else "index"
            raise NovaFault(
                403,
                f"Policy doesn't allow os_compute_api:servers:{view}:"
                "get_all_tenants to be performed.",
            )
        try:
            limit = min(int(params.get("limit", self.max_limit)), self.max_limit)
        except ValueError:
            raise NovaFault(400, "limit must be an integer") from None
        page = self.nova.servers(
            caller,
            name=params.get("name"),
            all_tenants=all_tenants,
            status=params.get("status"),
            project_id=params.get("project_id") or params.get("tenant_id"),
            marker=params.get("marker"),
            limit=max(limit, 0),
            brief=not self.detail,
        )
        docs = self.docs(req, mv, caller)
        if self.detail:
            body: dict[str, Any] = {"servers": [docs.show(s, listing=True) for s in page]}
        else:
            body = {
                "servers": [
                    {"id": s["id"], "name": s["name"], "links": docs.links(s["id"])} for s in page
                ]
            }
        if page and len(page) == limit:
            query = {k: v for k, v in params.items() if k != "marker"}
            query.update(limit=str(limit), marker=page[-1]["id"])
            path = "/servers/detail" if self.detail else "/servers"
            body["servers_links"] = [
                {"rel": "next", "href": f"{self.base(req)}/v2.1{path}?{urlencode(query)}"}
            ]
        resp.media = body

    @_nova
    def on_post(
        self, req: falcon.Request, resp: falcon.Response, caller: Caller, mv: Version
    ) -> None:
        spec = _body(req, "server")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise NovaFault(400, "Invalid input for field/attribute name.")
        _check_user_data(spec.get("user_data"))
        if not spec.get("flavorRef"):
            raise NovaFault(
                400,
                f"Invalid input for field/attribute server. Value: {spec}. "
                "'flavorRef' is a required property",
            )
        if not spec.get("imageRef"):
            raise NovaFault(400, "Missing imageRef attribute")
        port_ids = _requested_ports(spec)
        drive = spec.get("config_drive", False)
        server = self.nova.create(
            caller,
            name=name,
            image_id=_id_from_href(spec["imageRef"]),
            flavor_id=_id_from_href(spec["flavorRef"]),
            port_ids=port_ids,
            user_data=spec.get("user_data"),
            metadata=spec.get("metadata") or {},
            config_drive=drive is True or str(drive).lower() == "true",
            description=spec.get("description") if mv >= (2, 19) else name,
        )
        links = self.docs(req, mv, caller).links(server["id"])
        resp.status = falcon.HTTP_202
        resp.location = links[0]["href"]
        resp.media = {
            "server": {
                "id": server["id"],
                "links": links,
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": spec.get("security_groups") or [{"name": "default"}],
                "adminPass": _password(),
            }
        }


class _Server(_Resource):
    @_nova
    def on_get(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        caller: Caller,
        mv: Version,
        server_id: str,
    ) -> None:
        server = self.nova.get(server_id, caller)
        resp.media = {"server": self.docs(req, mv, caller).show(server)}

    @_nova
    def on_put(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        caller: Caller,
        mv: Version,
        server_id: str,
    ) -> None:
        """Rename (and re-describe, from 2.19) a server in any state; 200 with the server as
        GET shows it from 2.75, Nova's shorter document before (no extended attributes, no
        availability zone, config drive, key, usage or volumes; addresses plain)."""
        spec = _update_body(req, mv)
        server = self.nova.update(
            server_id,
            caller,
            name=spec.get("name"),
            description=spec["description"] if "description" in spec else UNSET,
        )
        docs = self.docs(req, mv, caller)
        if mv >= _UPDATE_SHOWS_ALL:
            resp.media = {"server": docs.show(server)}
            return
        doc = docs.core(server)
        doc["addresses"] = {
            net: [{"version": a["version"], "addr": a["addr"]} for a in entries]
            for net, entries in server["addresses"].items()
        }
        if server["fault"]:
            doc["fault"] = server["fault"]
        if server["status"] in _PROGRESS_STATUSES:
            doc["progress"] = 0
        fields = docs.microversion_fields(server, listing=False)
        fields.pop("host_status", None)  # before 2.75 the update view never shows it
        doc.update(fields)
        resp.media = {"server": doc}

    @_nova
    def on_delete(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        caller: Caller,
        mv: Version,
        server_id: str,
    ) -> None:
        self.nova.delete(server_id, caller)
        resp.status = falcon.HTTP_204


class _Interfaces(_Resource):
    @_nova
    def on_get(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        caller: Caller,
        mv: Version,
        server_id: str,
    ) -> None:
        resp.media = {
            "interfaceAttachments": [
                _attachment_doc(a, mv) for a in self.nova.interfaces(server_id, caller)
            ]
        }

    @_nova
    def on_post(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        caller: Caller,
        mv: Version,
        server_id: str,
    ) -> None:
        spec = _body(req, "interfaceAttachment")
        port_id = spec.get("port_id")
        if port_id and spec.get("net_id"):
            raise NovaFault(400, "Must not input both network_id and port_id")
        if not port_id:
            raise NovaFault(400, "The simulated Nova attaches existing ports only (port_id).")
        attachment = self.nova.attach(server_id, str(port_id), caller)
        resp.media = {"interfaceAttachment": _attachment_doc(attachment, mv)}


class _Interface(_Resource):
    @_nova
    def on_get(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        caller: Caller,
        mv: Version,
        server_id: str,
        port_id: str,
    ) -> None:
        attachment = self.nova.interface(server_id, port_id, caller)
        resp.media = {"interfaceAttachment": _attachment_doc(attachment, mv)}

    @_nova
    def on_delete(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        caller: Caller,
        mv: Version,
        server_id: str,
        port_id: str,
    ) -> None:
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
