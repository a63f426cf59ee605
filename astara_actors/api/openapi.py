"""The OpenAPI 3.1 document of the HTTP RPC API, built from the same route table as the app."""

from __future__ import annotations

import copy
from typing import Any

from astara_actors.api.routes import COMMAND_ROUTES, CommandRoute
from astara_actors.core import validate
from astara_actors.protocol import audit, listing
from astara_actors.protocol.control import CommandKind

__all__ = ["UUID_PATTERN", "openapi_document"]

UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
_UUID = {"type": "string", "pattern": UUID_PATTERN}
_WILDCARD_ID = {"anyOf": [_UUID, {"type": "string", "enum": ["*", "error"]}]}
_JSON = "application/json"
AGE_PATTERN = "^-?[0-9]{1,6} ?[smhdwSMHDW]( ago)?$"  # 30m, 2h, 7d, "-2h", "2h ago"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _object(
    properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), **extra}


_SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": {"type": "string"}}, ("error",)),
    "Accepted": _object(
        {
            "accepted": _object(
                {"command": {"type": "string", "enum": [str(k) for k in CommandKind]}},
                ("command",),
                description="the astara.command payload published",
            )
        },
        ("accepted",),
    ),
    "AnswerError": _object(
        {"host": {"type": "string"}, "error": {"type": "string"}}, ("host", "error")
    ),
    "RouterRow": _object(
        {
            "router_id": {"type": "string"},
            "tenant_id": {"type": "string"},
            "host": {"type": "string", "description": "the orchestrator that manages the router"},
            "name": {"type": "string"},
            "state": {"type": "string", "description": "the state machine's state"},
            "instance_state": {"type": "string", "description": "its service VM(s)' state"},
            "status": {
                "type": "string",
                "description": "what it is doing, in a word: ok, ERROR, waiting (backoff), "
                "booting, configuring, rebuilding… (the terminal browser's STATE)",
            },
            "vms": {
                "type": "array",
                "items": _object(
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "address": {"type": ["string", "null"]},
                        "status": {"type": "string"},
                    },
                    ("id", "name", "address", "status"),
                ),
            },
            "debug": _object(
                {
                    "on": {"type": "boolean"},
                    "reason": {
                        "type": "string",
                        "description": "which flag and why: 'router: <reason>', "
                        "'tenant: …', 'global: …' (several joined with '; ')",
                    },
                    "scope": {"type": "string", "description": "router, tenant, global or ''"},
                },
                ("on", "reason"),
            ),
            "last_healthy_poll": {
                "type": ["number", "null"],
                "description": "seconds ago; null if never",
            },
            "boot_attempts": {"type": "integer"},
            "restarts": {"type": "integer"},
            "last_transition": {
                "anyOf": [
                    _object(
                        {
                            "from": {"type": "string"},
                            "to": {"type": "string"},
                            "note": {"type": "string"},
                            "action": {"type": "string"},
                            "age": {"type": ["number", "null"], "description": "seconds ago"},
                        },
                        ("from", "to", "note", "age"),
                    ),
                    {"type": "null"},
                ]
            },
            "error": _object({"reason": {"type": "string"}}, ("reason",), description="in ERROR"),
        },
        ("router_id", "tenant_id", "host", "state", "instance_state", "debug"),
    ),
    "Routers": _object(
        {
            "routers": {"type": "array", "items": _ref("schemas", "RouterRow")},
            "total": {"type": "integer", "description": "routers matching the filters"},
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
            "counts": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "routers by instance state, over every router (unfiltered)",
            },
            "orchestrators": {"type": "array", "items": {"type": "string"}},
            "errors": {"type": "array", "items": _ref("schemas", "AnswerError")},
            "members": {
                "type": "array",
                "items": _object(
                    {
                        "host": {"type": "string"},
                        "routers": {"type": "integer"},
                        "tenants": {"type": "integer"},
                    },
                    ("host",),
                ),
            },
            "breaker": {
                "type": "object",
                "additionalProperties": {"type": "object"},
                "description": "each member's circuit breaker (rebuild guard), by host",
            },
            "storm": {
                "type": "object",
                "additionalProperties": {"type": "object"},
                "description": "each member's storm protection figures, by host",
            },
            "spares": {
                "type": "object",
                "additionalProperties": {"anyOf": [_ref("schemas", "Spares"), {"type": "null"}]},
                "description": "each member's hot-spare pool, by host (null: it keeps none)",
            },
        },
        (
            "routers",
            "total",
            "offset",
            "limit",
            "counts",
            "orchestrators",
            "errors",
            "members",
            "breaker",
            "storm",
            "spares",
        ),
    ),
    "Spares": _object(
        {
            "pool_size": {"type": "integer", "description": "ready spares kept ([spares])"},
            "ready": {"type": "integer", "description": "booted, answering, takeable"},
            "booting": {"type": "integer"},
            "silent": {"type": "integer", "description": "answered once, not since"},
            "claimed": {"type": "integer", "description": "taken, not yet renamed"},
            "taken_last_minute": {"type": "integer"},
            "taken_total": {"type": "integer"},
            "booted_total": {"type": "integer"},
            "boot_failures": {"type": "integer"},
            "lost_races": {"type": "integer", "description": "taken by another member first"},
            "misses": {"type": "integer", "description": "a router asked, none was ready"},
            "replaced": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "spares deleted and replaced, by reason",
            },
            "refills": {
                "type": "boolean",
                "description": "this member boots the missing spares (alone, or the cluster "
                "member owning the pool)",
            },
            "image": {"type": "string", "description": "the image spares are booted with"},
        },
        ("pool_size", "ready", "booting", "taken_last_minute", "refills"),
        description="one member's hot-spare pool",
    ),
    "Router": _object(
        {
            "host": {"type": "string"},
            "router": _object(
                {
                    "router_id": {"type": "string"},
                    "tenant_id": {"type": "string"},
                    "transitions": {
                        "type": "array",
                        "description": "its last 20 transitions, oldest first: source, target, "
                        "action, note, instance, repeat, age_s",
                    },
                    "pushed_config": {
                        "type": "object",
                        "description": "the config each VM last accepted, by server id",
                    },
                    "recent_commands": {
                        "type": "array",
                        "items": _ref("schemas", "AuditEntry"),
                        "description": "its last commands, oldest first, with those for its "
                        "tenant and every router (scope); absent without a store",
                    },
                },
                ("router_id",),
                description="state, instance, inbox, transitions, recent commands…",
            ),
        },
        ("host", "router"),
    ),
    "AuditEntry": _object(
        {
            "id": {"type": ["integer", "null"]},
            "at": {"type": "string", "description": "when it was recorded: UTC, ISO 8601"},
            "actor": {"type": "string", "description": "who, as the bus publisher said"},
            "who": {"type": "string", "description": "who, in words (login@host, API user)"},
            "command": {"type": "string"},
            "target": {"type": "string", "description": "the router or tenant, or '' for all"},
            "tenant_id": {"type": "string"},
            "reason": {"type": "string"},
            "payload": {},
            "message_id": {"type": ["string", "null"]},
            "scope": {
                "type": "string",
                "enum": ["router", "tenant", "all"],
                "description": "in a router's recent commands: what the command reached",
            },
        },
        ("at", "actor", "who", "command", "target", "reason"),
    ),
    "Audit": _object(
        {
            "audit": {
                "type": "array",
                "items": _ref("schemas", "AuditEntry"),
                "description": "oldest first, newest last",
            },
            "orchestrators": {"type": "array", "items": {"type": "string"}},
            "errors": {"type": "array", "items": _ref("schemas", "AnswerError")},
        },
        ("audit", "orchestrators", "errors"),
    ),
    "OrchestratorTree": _object(
        {"host": {"type": "string"}, "workers": {"type": "object"}}, ("host", "workers")
    ),
    "Workers": _object(
        {
            "orchestrators": {"type": "array", "items": _ref("schemas", "OrchestratorTree")},
            "errors": {"type": "array", "items": _ref("schemas", "AnswerError")},
        },
        ("orchestrators", "errors"),
    ),
    "WorkersDebug": {"allOf": [_ref("schemas", "Accepted"), _ref("schemas", "Workers")]},
    "Health": _object(
        {
            "status": {"type": "string", "enum": ["ok"]},
            "orchestrators": {"type": "array", "items": {"type": "string"}},
        },
        ("status", "orchestrators"),
    ),
}

_ERRORS = {
    "BadRequest": ("400", "Malformed id, field or body (the error says which and why)"),
    "Unauthorized": ("401", "Missing or wrong credentials (see the security schemes)"),
    "Forbidden": ("403", "A valid Keystone token without the role the API requires"),
    "NotFound": ("404", "No orchestrator manages this router"),
    "ContentTooLarge": ("413", "The body is over 64 KiB"),
    "UnsupportedMediaType": ("415", "The body is neither JSON nor a form"),
    "NotImplemented": ("501", "Interactive command: use astara-ctl in a terminal"),
    "Unavailable": (
        "503",
        "No orchestrator answered within the timeout, the bus is unreachable, "
        "or Keystone could not validate the token",
    ),
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("schemas", "Error")}}}


def _ok(description: str, schema: str, status: str = "200") -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {_JSON: {"schema": _ref("schemas", schema)}},
        }
    }


def _errors(*names: str, auth: tuple[str, ...]) -> dict[str, Any]:
    """``names``' responses, plus ``auth``'s (those authentication may answer)."""
    chosen = dict.fromkeys((*names, *auth))
    return {_ERRORS[name][0]: _ref("responses", name) for name in sorted(chosen, key=_status_of)}


def _status_of(name: str) -> str:
    return _ERRORS[name][0]


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _command(route: CommandRoute, auth: tuple[str, ...]) -> dict[str, Any]:
    params = []
    if route.id_key:
        what = route.id_key.split("_")[0]
        schema = _WILDCARD_ID if route.wildcards else _UUID
        extra = " (or `*` for every router, `error` for those in error)" if route.wildcards else ""
        params.append(_path_param(route.id_key, schema, f"The {what}'s UUID{extra}"))
    properties = {
        "reason": {
            "type": "string",
            "maxLength": validate.MAX_REASON,
            "pattern": validate.reason_pattern(),
            "description": "Why (logged, shown in the router's dump): at most "
            f"{validate.MAX_REASON} characters, no control characters",
        },
        "image": {
            "type": "string",
            "maxLength": validate.MAX_IMAGE_REF,
            "pattern": validate.IMAGE_PATTERN,
            "description": "Rebuild from this Glance image id",
        },
    }
    fields = {name: properties[name] for name in route.fields}
    params += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": f"{schema['description']}; the body's field wins",
        }
        for name, schema in fields.items()
    ]
    errors = ["BadRequest", "ContentTooLarge", "UnsupportedMediaType", "Unavailable"]
    if route.targets_router:
        errors.append("NotFound")
    operation: dict[str, Any] = {
        "operationId": str(route.kind)
        + ("" if route.enabled is None else "-enable" if route.enabled else "-disable"),
        "summary": route.summary,
        "tags": ["commands"],
        "parameters": params,
        "responses": {
            **_ok("Published to every orchestrator", "Accepted", "202"),
            **_errors(*errors, auth=auth),
        },
    }
    if fields:
        operation["requestBody"] = {
            "required": False,
            "content": {_JSON: {"schema": _object(fields, additionalProperties=False)}},
        }
    return {"put": operation}


def _get(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    errors: list[str],
    auth: tuple[str, ...],
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["state"],
            "parameters": params or [],
            "responses": {**ok, **_errors(*errors, auth=auth)},
        }
    }


def _listing_params() -> list[dict[str, Any]]:
    states = "|".join(listing.STATE_NAMES)
    return [
        _query_param(
            "offset",
            {"type": "integer", "minimum": 0, "maximum": listing.MAX_OFFSET},
            "Rows to skip (default 0)",
        ),
        _query_param(
            "limit",
            {"type": "integer", "minimum": 0, "maximum": listing.MAX_LIMIT},
            f"Rows to answer (default {listing.DEFAULT_LIMIT}; 0: only the totals and counts)",
        ),
        _query_param(
            "sort",
            {"type": "string", "enum": list(listing.SORT_KEYS)},
            "The order (default tenant_id; ties by tenant, then router id; last_transition: "
            "by when it happened)",
        ),
        _query_param("order", {"type": "string", "enum": list(listing.ORDERS)}, "asc or desc"),
        _query_param(
            "state",
            {"type": "string", "pattern": f"^({states})(,({states}))*$"},
            "Keep the routers in these states (comma-separated; an instance state such as "
            "configured or error, or a state-machine state such as CalcAction)",
        ),
        _query_param("tenant_id", _UUID, "Keep one project's routers (with or without hyphens)"),
        _query_param(
            "q",
            {
                "type": "string",
                "minLength": 1,
                "maxLength": listing.MAX_TEXT,
                "pattern": validate.reason_pattern(),
            },
            "Keep the routers whose name, id or tenant id holds this text (any case)",
        ),
        _query_param("debug", {"type": "boolean"}, "Keep the routers in debug mode (or not)"),
    ]


def openapi_document(
    *,
    auth: bool = False,
    keystone: bool = False,
    metrics_open: bool = False,
    required_role: str = "admin",
) -> dict[str, Any]:
    """The document; with ``auth`` (the static bearer token) and/or ``keystone`` (a Keystone
    token with ``required_role``) every operation but the public ones needs one of them;
    ``metrics_open`` makes ``/metrics`` public too."""
    schemes: dict[str, Any] = {}
    if auth:
        schemes["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "The static token of [api] auth_token",
        }
    if keystone:
        schemes["keystone"] = {
            "type": "apiKey",
            "in": "header",
            "name": "X-Auth-Token",
            "description": f"A Keystone token holding the role {required_role} (validated "
            "with Keystone: 401 when it is not valid, 403 without the role)",
        }
    secured: tuple[str, ...] = ("Unauthorized",) if schemes else ()
    if keystone:
        secured += ("Forbidden", "Unavailable")
    auth_errors: tuple[str, ...] = secured
    paths: dict[str, Any] = {route.path: _command(route, auth_errors) for route in COMMAND_ROUTES}
    paths["/workers/debug"] = {
        "put": {
            "operationId": str(CommandKind.WORKERS_DEBUG),
            "tags": ["commands"],
            "summary": "Log every orchestrator's supervision tree, and return it",
            "responses": {
                **_ok("Published; the trees as the orchestrators answered", "WorkersDebug", "202"),
                **_errors(
                    "BadRequest",
                    "ContentTooLarge",
                    "UnsupportedMediaType",
                    "Unavailable",
                    auth=auth_errors,
                ),
            },
        }
    }
    paths["/routers"] = _get(
        "list-routers",
        "A page of the routers, filtered and sorted, with counts by state and each member's "
        "figures",
        _ok("The page, merged from every orchestrator that answered", "Routers"),
        ["BadRequest", "Unavailable"],
        auth_errors,
        _listing_params(),
    )
    paths["/routers/{router_id}"] = _get(
        "show-router",
        "One router's dump: state, instance, inbox, last transitions, recent commands",
        _ok("The router's dump", "Router"),
        ["BadRequest", "NotFound", "Unavailable"],
        auth_errors,
        [
            _path_param("router_id", _UUID, "The router's UUID"),
            _query_param(
                "limit",
                {"type": "integer", "minimum": 0, "maximum": audit.MAX_LIMIT},
                f"How many recent commands (default {audit.ROUTER_COMMANDS})",
            ),
        ],
    )
    paths["/audit"] = _get(
        "audit",
        "The audit trail of operator commands (who, what, why, when), oldest first",
        _ok("The last commands that match, each once, newest last", "Audit"),
        ["BadRequest", "Unavailable"],
        auth_errors,
        [
            _query_param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": audit.MAX_LIMIT},
                f"How many, the last ones (default {audit.DEFAULT_LIMIT})",
            ),
            _query_param("router_id", _UUID, "Only the commands aimed at this router"),
            _query_param(
                "tenant_id",
                _UUID,
                "Only the commands for this project (its debug and manage, and those aimed "
                "at its routers); 32 hex digits or a UUID",
            ),
            _query_param(
                "since",
                {
                    "anyOf": [
                        {"type": "string", "format": "date-time"},
                        {"type": "string", "format": "date"},
                        {"type": "string", "pattern": AGE_PATTERN},
                    ]
                },
                "Only the commands recorded since: an ISO 8601 date or time (UTC unless it "
                "says) or an age (30m, 2h, 7d)",
            ),
        ],
    )
    paths["/workers"] = _get(
        "show-workers",
        "Each orchestrator's supervision tree",
        _ok("The trees", "Workers"),
        ["BadRequest", "Unavailable"],
        auth_errors,
    )
    paths["/healthz"] = _get(
        "health",
        "Whether an orchestrator answers over the bus",
        _ok("At least one orchestrator answered", "Health"),
        ["BadRequest", "Unavailable"],
        (),
    )
    paths["/healthz"]["get"]["security"] = []
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "tags": ["state"],
            "parameters": [],
            "summary": "Every orchestrator's Prometheus metrics, each sample labelled orchestrator",
            "responses": {
                "200": {
                    "description": "The Prometheus text format, version 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors("BadRequest", "Unavailable", auth=() if metrics_open else auth_errors),
            },
        }
    }
    if metrics_open:
        paths["/metrics"]["get"]["security"] = []
    paths["/events"] = {
        "get": {
            "operationId": "events",
            "tags": ["state"],
            "parameters": [],
            "summary": "The live feed of router changes, as server-sent events",
            "description": "event: routers, data {routers: [rows that changed], removed: "
            "[router ids], counts} (at most every 250 ms); event: summary, data {members, "
            "breaker, storm, spares} when they change; a ': keep-alive' comment every 15 s; "
            "retry: 2000. Send the Authorization header (fetch() streaming; EventSource "
            "cannot).",
            "responses": {
                "200": {
                    "description": "The stream (open until the client leaves)",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors("BadRequest", "NotImplemented", "Unavailable", auth=auth_errors),
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {_JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    }
    paths["/browse"] = {
        "put": {
            "operationId": "browse",
            "summary": "Interactive: not over HTTP",
            "tags": ["commands"],
            "responses": _errors("NotImplemented", auth=auth_errors),
        }
    }
    paths["/ssh/{router_id}"] = {
        "put": {
            "operationId": "ssh",
            "summary": "Interactive: not over HTTP",
            "tags": ["commands"],
            "parameters": [_path_param("router_id", {"type": "string"}, "The router")],
            "responses": _errors("NotImplemented", auth=auth_errors),
        }
    }
    components: dict[str, Any] = {
        "schemas": copy.deepcopy(_SCHEMAS),
        "responses": {name: _error_response(text) for name, (_code, text) in _ERRORS.items()},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "astara-actors HTTP RPC API",
            "version": "1",
            "description": "astara-ctl's non-interactive commands (PUT, published to every "
            "orchestrator over the bus) and their state (GET).",
        },
        "paths": paths,
        "components": components,
    }
    if schemes:
        components["securitySchemes"] = schemes
        document["security"] = [{name: []} for name in schemes]  # any one of them
    return document
