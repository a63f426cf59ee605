"""Falcon helpers the simulated services share: token → :class:`Caller`, request ids, error bodies.

Install :class:`AuthMiddleware` once on the app (it maps ``X-Auth-Token`` to a caller and gives
every request an ``x-openstack-request-id``); resources then call :func:`require_caller`, which
answers 401 with keystonemiddleware's body when the token is missing or invalid.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import falcon

from astara_actors.sim.contracts import Caller
from astara_actors.sim.notifier import request_id_var

__all__ = [
    "AuthMiddleware",
    "JSONBodyError",
    "TokenValidator",
    "keystone_error",
    "neutron_error",
    "read_json",
    "require_caller",
]


class TokenValidator(Protocol):
    """Who holds a token (the simulated Keystone implements this)."""

    def caller(self, token: str) -> Caller | None:
        """The caller the token was issued to, or None if it is unknown or expired."""
        ...


class JSONBodyError(falcon.HTTPError):
    """An HTTP error whose JSON body is given verbatim (the services' own error shapes)."""

    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(falcon.code_to_http_status(status), headers=dict(headers or {}))
        self.body = dict(body)

    def to_dict(self, obj_type: type[Any] = dict) -> Any:
        obj = obj_type()
        obj.update(self.body)
        return obj


def neutron_error(status: int, type_: str, message: str, detail: str = "") -> JSONBodyError:
    """Neutron's error: ``{"NeutronError": {"type", "message", "detail"}}``."""
    return JSONBodyError(
        status, {"NeutronError": {"type": type_, "message": message, "detail": detail}}
    )


def keystone_error(status: int, title: str, message: str) -> JSONBodyError:
    """Keystone's (and keystonemiddleware's) error: ``{"error": {"code", "title", "message"}}``."""
    return JSONBodyError(status, {"error": {"code": status, "title": title, "message": message}})


def _unauthorized() -> JSONBodyError:
    return JSONBodyError(
        401,
        {
            "error": {
                "code": 401,
                "title": "Unauthorized",
                "message": "The request you have made requires authentication.",
            }
        },
        headers={"WWW-Authenticate": "Keystone uri=''"},
    )


class AuthMiddleware:
    """Resolves ``X-Auth-Token`` to ``req.context.caller`` and stamps a request id."""

    def __init__(self, validator: TokenValidator) -> None:
        self._validator = validator

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        token = req.get_header("X-Auth-Token")
        req.context.caller = self._validator.caller(token) if token else None
        request_id = f"req-{uuid.uuid4()}"
        req.context.request_id = request_id
        req.context.request_id_token = request_id_var.set(request_id)
        resp.set_header("x-openstack-request-id", request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        token = getattr(req.context, "request_id_token", None)
        if token is not None:
            request_id_var.reset(token)
            req.context.request_id_token = None


def require_caller(req: falcon.Request) -> Caller:
    """The request's caller; raises 401 (keystonemiddleware's body) without a valid token."""
    if not hasattr(req.context, "caller"):
        raise RuntimeError("AuthMiddleware is not installed on this Falcon app")
    caller: Caller | None = req.context.caller
    if caller is None:
        raise _unauthorized()
    return caller


def read_json(req: falcon.Request, malformed: JSONBodyError | None = None) -> Any:
    """The request body parsed as JSON (None when empty); raises ``malformed`` (default:
    Neutron's 400) when it is not JSON."""
    raw = req.bounded_stream.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise (
            malformed or neutron_error(400, "HTTPBadRequest", "Malformed request body")
        ) from None
