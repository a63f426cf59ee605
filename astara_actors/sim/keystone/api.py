"""Keystone v3 over Falcon: version discovery and password (or token) authentication.

Mount with :func:`add_keystone_routes`; with ``prefix="/identity"`` the auth URL is
``http://host:port/identity`` (or ``.../identity/v3``). The catalog comes from ``endpoints()``,
called per token because the server's address is known only at run time.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import falcon

from astara_actors.sim._http import keystone_error, read_json, require_caller
from astara_actors.sim.keystone.model import AuthenticationFailed, KeystoneModel, Token

__all__ = ["add_keystone_routes", "token_body"]

Endpoints = Callable[[], Mapping[str, str]]
BaseUrlOf = Callable[[falcon.Request], str]

_SERVICE_NAMES = {"identity": "keystone", "network": "neutron", "compute": "nova"}
_MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
_DOMAIN = {"id": "default", "name": "Default"}


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stable_id(*parts: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)).hex


def token_body(
    token: Token, keystone: KeystoneModel, endpoints: Mapping[str, str]
) -> dict[str, Any]:
    """The ``{"token": ...}`` document Keystone 30 returns for a project-scoped password token."""
    catalog = []
    for service_type, url in endpoints.items():
        catalog.append(
            {
                "endpoints": [
                    {
                        "id": _stable_id(service_type, interface, url),
                        "interface": interface,
                        "region": "RegionOne",
                        "region_id": "RegionOne",
                        "url": url,
                    }
                    for interface in ("public", "internal", "admin")
                ],
                "id": _stable_id(service_type),
                "name": _SERVICE_NAMES.get(service_type, service_type),
                "type": service_type,
            }
        )
    return {
        "token": {
            "audit_ids": [token.audit_id],
            "catalog": catalog,
            "expires_at": _iso(token.expires_at),
            "is_domain": False,
            "issued_at": _iso(token.issued_at),
            "methods": ["password"],
            "project": {
                "domain": dict(_DOMAIN),
                "id": token.project.id,
                "name": token.project.name,
            },
            "roles": [{"id": keystone.role_id(r), "name": r} for r in token.roles],
            "user": {
                "domain": dict(_DOMAIN),
                "id": token.user.id,
                "name": token.user.name,
                "password_expires_at": None,
            },
        }
    }


def _version(href: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": href}],
        "media-types": _MEDIA_TYPES,
    }


def _in_default_domain(entity: Mapping[str, Any]) -> bool:
    domain = entity.get("domain") or {}
    return domain.get("id", "default") == "default" and domain.get("name", "Default") == "Default"


class _Resource:
    def __init__(
        self, keystone: KeystoneModel, prefix: str, endpoints: Endpoints, base_url_of: BaseUrlOf
    ) -> None:
        self.keystone = keystone
        self.prefix = prefix
        self.endpoints = endpoints
        self.base_url_of = base_url_of

    def v3_url(self, req: falcon.Request) -> str:
        return f"{self.base_url_of(req)}{self.prefix}/v3/"


class _Versions(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_300
        resp.media = {"versions": {"values": [_version(self.v3_url(req))]}}


class _V3(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"version": _version(self.v3_url(req))}


class _Tokens(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, keystone_error(400, "Bad Request", "Malformed request body"))
        token = self._authenticate(body if isinstance(body, dict) else {})
        resp.status = falcon.HTTP_201
        resp.set_header("X-Subject-Token", token.id)
        resp.set_header("Vary", "X-Auth-Token")
        resp.media = token_body(token, self.keystone, self.endpoints())

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Validate ``X-Subject-Token`` as Keystone does: 401 without a valid X-Auth-Token,
        403 for a caller neither admin nor service nor the token's own user (the policy
        ``identity:validate_token``), 404 for an unknown or expired subject token."""
        caller = require_caller(req)
        token = self.keystone.validate(req.get_header("X-Subject-Token") or "")
        if not (
            caller.is_admin
            or "service" in caller.roles
            or (token is not None and token.user.id == caller.user_id)
        ):
            raise keystone_error(
                403,
                "Forbidden",
                "You are not authorized to perform the requested action: identity:validate_token.",
            )
        if token is None:
            raise keystone_error(404, "Not Found", "Could not find token.")
        resp.set_header("X-Subject-Token", token.id)
        body = token_body(token, self.keystone, self.endpoints())
        if "nocatalog" in req.params:
            del body["token"]["catalog"]
        resp.media = body

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.on_get(req, resp)
        resp.status = falcon.HTTP_200

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_caller(req)
        if not self.keystone.revoke(req.get_header("X-Subject-Token") or ""):
            raise keystone_error(404, "Not Found", "Could not find token.")
        resp.status = falcon.HTTP_204

    def _authenticate(self, body: Mapping[str, Any]) -> Token:
        auth = body.get("auth") or {}
        identity = auth.get("identity") or {}
        methods = identity.get("methods") or []
        scope = (auth.get("scope") or {}).get("project") or {}
        try:
            if "password" in methods:
                user = (identity.get("password") or {}).get("user") or {}
                if not _in_default_domain(user) or not _in_default_domain(scope):
                    raise AuthenticationFailed("unknown domain")
                return self.keystone.authenticate(
                    user.get("id") or user.get("name") or "",
                    str(user.get("password", "")),
                    scope.get("id") or scope.get("name") or "",
                )
            if "token" in methods:  # re-scope an existing token
                held = self.keystone.validate((identity.get("token") or {}).get("id", ""))
                if held is None:
                    raise AuthenticationFailed("invalid token")
                return self.keystone.authenticate(
                    held.user.id,
                    held.user.password,
                    scope.get("id") or scope.get("name") or held.project.id,
                )
        except AuthenticationFailed:
            raise keystone_error(
                401, "Unauthorized", "The request you have made requires authentication."
            ) from None
        raise keystone_error(400, "Bad Request", "Expecting to find password or token in auth.")


def add_keystone_routes(
    app: falcon.App,
    keystone: KeystoneModel,
    prefix: str = "/identity",
    *,
    endpoints: Endpoints,
    base_url_of: BaseUrlOf | None = None,
) -> None:
    """Serve ``keystone`` under ``prefix``.

    ``endpoints()`` returns the catalog's absolute URLs by service type
    (``{"identity": ..., "network": ..., "compute": ...}``); ``base_url_of(req)`` is the
    server's own ``scheme://host:port`` for discovery links (default: what the request used).
    """
    prefix = prefix.rstrip("/")
    args = (keystone, prefix, endpoints, base_url_of or (lambda req: req.prefix))
    app.add_route(prefix or "/", _Versions(*args))
    if prefix:
        app.add_route(f"{prefix}/", _Versions(*args))
    app.add_route(f"{prefix}/v3", _V3(*args))
    app.add_route(f"{prefix}/v3/", _V3(*args))
    app.add_route(f"{prefix}/v3/auth/tokens", _Tokens(*args))
