"""The HTTP RPC API as a Falcon app: ``create_app(deps)`` for tests, ``get_app()`` for gunicorn.

gunicorn runs ``astara_actors.api.app:get_app()`` in each worker (after the fork); the config
file is named by ``$ASTARA_CONFIG_FILE``. Every request reaches the orchestrators over the bus,
through a :class:`~astara_actors.bus.rpc.ControlClient` of the worker thread's own.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from typing import Any

import falcon

from ..bus.rpc import ControlClient
from ..bus.transport import mask_url
from ..conf import CONFIG_ENV, ApiSettings, load_config
from ._clients import ControlPort, PerThreadClients
from .errors import install_error_handlers
from .openapi import openapi_document
from .resources import (
    CommandResource,
    Control,
    HealthResource,
    InteractiveSink,
    MetricsResource,
    MissingIdResource,
    RouterResource,
    RoutersResource,
    WorkersDebugResource,
    WorkersResource,
)
from .routes import COMMAND_ROUTES, INTERACTIVE, MISSING_ID_ROUTES

__all__ = ["PUBLIC_PATHS", "create_app", "get_app"]

LOG = logging.getLogger(__name__)

#: Paths served without the bearer token: a load balancer's probe and the API's description.
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})


class BearerAuth:
    """Middleware: every request but :data:`PUBLIC_PATHS` needs ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in PUBLIC_PATHS:
            return
        given = (req.get_header("Authorization") or "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._expected):
            raise falcon.HTTPUnauthorized(
                description="missing or wrong bearer token (Authorization: Bearer <token>)",
                challenges=['Bearer realm="astara"'],
            )


class OpenApiResource:
    """``GET /openapi.json``: the OpenAPI 3.1 document of this app."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


def create_app(
    client_factory: Callable[[], ControlPort],
    api_settings: ApiSettings | None = None,
    *,
    grace: float = 0.1,
) -> falcon.App:
    """The app; ``client_factory`` is called once per thread that serves a request."""
    api = api_settings or ApiSettings()
    middleware = [BearerAuth(api.auth_token)] if api.auth_token else []
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True  # `/poll/` as in the seed, and `/poll`
    app.req_options.auto_parse_form_urlencoded = False  # resources read the body themselves
    install_error_handlers(app)
    control = Control(PerThreadClients(client_factory), api.timeout, grace)
    for route in COMMAND_ROUTES:
        app.add_route(route.path, CommandResource(control, route))
    for path, id_key in MISSING_ID_ROUTES:
        app.add_route(path, MissingIdResource(id_key))
    app.add_route("/workers/debug", WorkersDebugResource(control))
    app.add_route("/routers", RoutersResource(control))
    app.add_route("/routers/{router_id}", RouterResource(control))
    app.add_route("/workers", WorkersResource(control))
    app.add_route("/healthz", HealthResource(control))
    app.add_route("/metrics", MetricsResource(control))
    app.add_route("/openapi.json", OpenApiResource(openapi_document(auth=bool(api.auth_token))))
    app.add_sink(InteractiveSink(), prefix=rf"^/({'|'.join(INTERACTIVE)})(/.*)?$")
    return app


def get_app() -> falcon.App:
    """The production app, configured from the file named by ``$ASTARA_CONFIG_FILE``."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"set {CONFIG_ENV} to the orchestrator's configuration file")
    config = load_config(path)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=config.process.log_level.upper(),
            format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        )
    bus = config.bus
    LOG.info("HTTP API (pid %d) on bus %s", os.getpid(), mask_url(bus.transport_url))
    return create_app(lambda: ControlClient(bus, role="api"), config.api)
