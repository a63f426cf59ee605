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

from astara_actors.api._clients import ControlPort, PerThreadClients
from astara_actors.api.console import Console
from astara_actors.api.errors import install_error_handlers
from astara_actors.api.events import EVENTS_PATH, EventsResource
from astara_actors.api.keystone import (
    KeystoneTokens,
    KeystoneValidator,
    TokenSource,
    keystone_account,
    plausible_token,
)
from astara_actors.api.openapi import openapi_document
from astara_actors.api.resources import (
    AuditResource,
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
from astara_actors.api.routes import COMMAND_ROUTES, INTERACTIVE, MISSING_ID_ROUTES
from astara_actors.bus.rpc import ControlClient
from astara_actors.bus.transport import mask_url
from astara_actors.config.loader import CONFIG_ENV, ApiSettings, load_config
from astara_actors.log import install as safe_logs

__all__ = ["PUBLIC_PATHS", "Auth", "create_app", "get_app"]

LOG = logging.getLogger(__name__)

#: Paths served without authentication: a load balancer's probe and the API's description.
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})


class Auth:
    """Middleware: every request but the public paths needs the static bearer token
    (``Authorization: Bearer <token>``) or a Keystone token holding the required role
    (``X-Auth-Token``), whichever of the two is configured.

    401 (with a ``WWW-Authenticate`` challenge per accepted scheme) for missing or invalid
    credentials, 403 for a valid Keystone token without the role, 503 when Keystone cannot
    be asked. A Keystone caller's name goes to ``req.context.who`` for the audit trail.
    """

    def __init__(
        self,
        *,
        token: str = "",
        keystone: KeystoneValidator | None = None,
        required_role: str = "admin",
        public: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self._expected = f"Bearer {token}".encode() if token else b""
        self._keystone = keystone
        self._role = required_role
        self._public = public

    def _challenges(self) -> list[str]:
        challenges = []
        if self._expected:
            challenges.append('Bearer realm="astara"')
        if self._keystone is not None:
            challenges.append(f'Keystone uri="{self._keystone.uri}"')
        return challenges

    def _unauthorized(self, why: str) -> falcon.HTTPUnauthorized:
        return falcon.HTTPUnauthorized(description=why, challenges=self._challenges())

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.who = ""
        if req.path in self._public:
            return
        if self._expected:
            given = (req.get_header("Authorization") or "").encode("utf-8", "replace")
            if hmac.compare_digest(given, self._expected):
                return
        keystone = self._keystone
        subject = (req.get_header("X-Auth-Token") or "") if keystone is not None else ""
        if keystone is None or not subject:
            wanted = []
            if keystone is not None:
                wanted.append(f"X-Auth-Token: <a Keystone token with role {self._role}>")
            if self._expected:
                wanted.append("Authorization: Bearer <token>")
            raise self._unauthorized(f"missing or wrong credentials: send {' or '.join(wanted)}")
        if not plausible_token(subject):
            raise self._unauthorized("the X-Auth-Token is malformed")
        identity = keystone.identity(subject)
        if identity is None:
            raise self._unauthorized("the X-Auth-Token is not valid (unknown, expired or revoked)")
        if not identity.has_role(self._role):
            raise falcon.HTTPForbidden(
                description=f"{identity.who()} does not hold the role {self._role} this API "
                "requires"
            )
        req.context.who = identity.who()


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
    keystone: TokenSource | None = None,
) -> falcon.App:
    """The app; ``client_factory`` is called once per thread that serves a request.

    ``keystone`` asks Keystone about tokens (needed with ``auth_strategy = keystone``).
    """
    api = api_settings or ApiSettings()
    strategy = api.strategy
    middleware: list[Any] = []
    validator = None
    if strategy == "keystone":
        if keystone is None:
            raise ValueError("auth_strategy = keystone needs a TokenSource (keystone=...)")
        validator = KeystoneValidator(
            keystone, cache_time=api.token_cache_time, cache_size=api.token_cache_size
        )
    if strategy != "none":
        public = PUBLIC_PATHS | ({"/metrics"} if api.metrics_open else set())
        middleware.append(
            Auth(
                token=api.auth_token,
                keystone=validator,
                required_role=api.required_role,
                public=frozenset(public),
            )
        )
    middleware.insert(0, Console())  # the web console's files, ahead of auth: they hold no data
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
    app.add_route("/audit", AuditResource(control))
    app.add_route("/healthz", HealthResource(control))
    app.add_route("/metrics", MetricsResource(control))
    app.add_route(EVENTS_PATH, EventsResource())
    document = openapi_document(
        auth=bool(api.auth_token) and strategy != "none",
        keystone=strategy == "keystone",
        metrics_open=api.metrics_open,
        required_role=api.required_role,
    )
    app.add_route("/openapi.json", OpenApiResource(document))
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
    safe_logs()  # bounded, escaped log lines whoever configured the handlers
    bus = config.bus
    LOG.info("HTTP API (pid %d) on bus %s", os.getpid(), mask_url(bus.transport_url))
    api = config.api
    keystone = KeystoneTokens(keystone_account(config)) if api.strategy == "keystone" else None
    LOG.info("HTTP API authentication: %s", _describe(api))
    return create_app(lambda: ControlClient(bus, role="api"), api, keystone=keystone)


def _describe(api: ApiSettings) -> str:
    match api.strategy:
        case "none":
            return "none"
        case "token":
            return "the static bearer token"
        case _:
            extra = " or the static bearer token" if api.auth_token else ""
            return f"Keystone tokens with role {api.required_role}{extra}"
