"""Every error the API can answer, mapped to HTTP in one place, always as ``{"error": "..."}``.

Bad input is a 4xx with the reason; an orchestrator that does not answer or a bus that cannot
be reached is a 503; anything else is a bug: 500, logged once with its traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

from astara_actors.bus.transport import BusError
from astara_actors.errors import AstaraError
from astara_actors.protocol.control import InvalidCommand

__all__ = [
    "ApiError",
    "KeystoneUnavailable",
    "OrchestratorFailed",
    "UnknownRouter",
    "install_error_handlers",
]

LOG = logging.getLogger(__name__)


class ApiError(AstaraError):
    """Raised for a request the API cannot carry out (the HTTP status says why)."""


class KeystoneUnavailable(ApiError):
    """Raised when Keystone cannot tell whether a token is valid (unreachable, or the API's own
    account is refused): 503, and nothing is cached."""


class UnknownRouter(ApiError):
    """Raised when no orchestrator that answered manages the router."""

    def __init__(self, router_id: str) -> None:
        super().__init__(f"unknown router {router_id}")
        self.router_id = router_id


class OrchestratorFailed(ApiError):
    """Raised when every orchestrator that answered a query answered with an error."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("no orchestrator could answer: " + "; ".join(errors))
        self.errors = errors


def install_error_handlers(app: falcon.App) -> None:
    """Map our errors (and falcon's own) to JSON responses."""
    app.set_error_serializer(_serialize)
    app.add_error_handler(InvalidCommand, _status(falcon.HTTP_400, logging.INFO))
    app.add_error_handler(UnknownRouter, _status(falcon.HTTP_404, logging.INFO))
    app.add_error_handler(OrchestratorFailed, _status(falcon.HTTP_503, logging.WARNING))
    app.add_error_handler(BusError, _status(falcon.HTTP_503, logging.WARNING))  # NoAnswer too
    app.add_error_handler(KeystoneUnavailable, _status(falcon.HTTP_503, logging.WARNING))
    app.add_error_handler(Exception, _unexpected)  # falcon's HTTPError handler stays more specific


def _status(status: str, level: int) -> Any:
    def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
        LOG.log(level, "%s %s: %s", req.method, req.path, exc)
        raise falcon.HTTPError(status, description=str(exc))

    return handle


def _unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    LOG.error("%s %s failed", req.method, req.path, exc_info=exc)
    raise falcon.HTTPInternalServerError(
        description=f"internal error ({type(exc).__name__}); the API's log has the details"
    )


def _serialize(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"error": _message(req, exc)}


def _message(req: falcon.Request, exc: falcon.HTTPError) -> str:
    if exc.description:
        return str(exc.description)
    if isinstance(exc, falcon.HTTPRouteNotFound):
        return f"unknown route {req.path}"
    if isinstance(exc, falcon.HTTPMethodNotAllowed):
        allowed = dict(exc.headers or {}).get("Allow", "")  # a mapping or (name, value) pairs
        return f"{req.method} is not allowed on {req.path} (allowed: {allowed})"
    return str(exc.title)
