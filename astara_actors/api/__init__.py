"""The HTTP RPC API: astara-ctl's commands and the orchestrators' state over HTTP (Falcon).

A client of the control protocol on the bus, served by gunicorn in a process of its own:
``create_app(client_factory, api_settings)`` builds the app (tests), ``get_app()`` builds it
from ``$ASTARA_CONFIG_FILE`` (gunicorn), ``run_api(config_path)`` starts gunicorn.

- :mod:`.keystone`, :class:`.app.Auth`: who may call it (``[api] auth_strategy``: a static
  bearer token, Keystone tokens with a role, or nobody but loopback callers);
- :mod:`.master`: gunicorn's master, dying with the process that started it, with a pidfile;
- :mod:`.worker`: gunicorn workers that read whole requests before a thread serves them.
"""

from __future__ import annotations

from astara_actors.api.app import create_app, get_app
from astara_actors.api.errors import ApiError, OrchestratorFailed, UnknownRouter
from astara_actors.api.openapi import openapi_document
from astara_actors.api.server import ApiStartError, run_api

__all__ = [
    "ApiError",
    "ApiStartError",
    "OrchestratorFailed",
    "UnknownRouter",
    "create_app",
    "get_app",
    "openapi_document",
    "run_api",
]
