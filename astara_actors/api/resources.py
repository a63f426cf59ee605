"""The Falcon resources: commands are published (202), queries are asked and gathered.

Handlers only raise; :mod:`.errors` turns what they raise into a status and a JSON body.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import falcon
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from astara_actors.api._clients import ControlPort
from astara_actors.api.errors import OrchestratorFailed, UnknownRouter
from astara_actors.api.openapi import AGE_PATTERN
from astara_actors.api.routes import CommandRoute
from astara_actors.core import validate
from astara_actors.core.events import WILDCARD_ALL, WILDCARD_ERROR
from astara_actors.protocol import audit
from astara_actors.protocol.control import Command, CommandKind, InvalidCommand, Query, QueryKind
from astara_actors.protocol.listing import DEFAULT_LIMIT, Listing, merge

__all__ = [
    "AuditResource",
    "CommandResource",
    "Control",
    "HealthResource",
    "InteractiveSink",
    "METRICS_CONTENT_TYPE",
    "MetricsResource",
    "MissingIdResource",
    "RouterResource",
    "RoutersResource",
    "WorkersDebugResource",
    "WorkersResource",
    "merge_metrics",
    "merge_pages",
    "spare_figures",
]

LOG = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
#: The Prometheus text format that ``GET /metrics`` serves.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Control:
    """The control protocol as the resources use it: a client per thread, one timeout."""

    def __init__(self, clients: Callable[[], ControlPort], timeout: float, grace: float) -> None:
        self.clients = clients
        self.timeout = timeout
        self.grace = grace

    def ask(self, query: Query) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Every answer that came back, split into (good ones, ``{"host", "error"}`` ones)."""
        answers = self.clients().ask(query.to_payload(), self.timeout, grace=self.grace)
        good, bad = [], []
        for reply in answers:
            host = str(reply.get("host", ""))
            if reply.get("ok") and isinstance(reply.get("answer"), dict):
                good.append({"host": host, **reply["answer"]})
            else:
                bad.append({"host": host, "error": str(reply.get("error", "malformed answer"))})
        if not good:
            raise OrchestratorFailed([f"{b['host']}: {b['error']}" for b in bad])
        return good, bad

    def find_router(self, router_id: str, commands: int | None = None) -> dict[str, Any]:
        """``{"host", "router"}`` from the orchestrator that manages the router (the dump with
        its last ``commands`` commands, or the orchestrator's default)."""
        good, bad = self.ask(Query(QueryKind.ROUTER, router_id, limit=commands))
        for answer in good:
            if answer.get("found") and isinstance(answer.get("router"), dict):
                return {"host": answer["host"], "router": answer["router"]}
        if bad:  # the one that failed may be the one that manages it: not a 404
            raise OrchestratorFailed([f"{b['host']}: {b['error']}" for b in bad])
        raise UnknownRouter(router_id)

    def send(self, payload: dict[str, Any], client: str = "") -> dict[str, Any]:
        """Check and publish an ``astara.command`` payload for ``client`` (the HTTP peer, for
        the audit trail); returns what was published."""
        command = Command.from_payload(payload)
        if command.router_id and command.router_id not in (WILDCARD_ALL, WILDCARD_ERROR):
            self.find_router(command.router_id)
        published = command.to_payload()
        self.clients().send_command(published, on_behalf_of=client)
        LOG.info("published %s", published)
        return published


def _peer(req: falcon.Request) -> str:
    """The HTTP client as the audit trail names it: the Keystone user and project it
    authenticated as, if any, and its address (the socket's peer, not a forwarding header it
    could set itself)."""
    address = f"http client {req.remote_addr}"
    who = getattr(req.context, "who", "")
    return f"{who} via {address}" if who else address


def check_params(req: falcon.Request, allowed: tuple[str, ...] = ()) -> None:
    """Refuse query parameters the route does not take (a typo must not be ignored silently)."""
    unknown = sorted(set(req.params) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "none"
        raise InvalidCommand(
            f"unknown query parameter(s) {', '.join(map(repr, unknown))} (this route takes {takes})"
        )


def request_fields(req: falcon.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The command's fields from the query string, overridden by a JSON (or form) body."""
    check_params(req, allowed)
    fields: dict[str, Any] = {name: req.get_param(name) for name in allowed}
    fields = {name: value for name, value in fields.items() if value is not None}
    body = _body(req)
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no fields"
        raise InvalidCommand(
            f"unknown field(s) {', '.join(map(repr, unknown))}: this command takes {takes}"
        )
    for name, value in body.items():
        if not isinstance(value, str):
            raise InvalidCommand(f"{name} must be a string, not {_json_type(value)}")
    # Each value given is checked, the one the body overrides too: a bad one is a mistake.
    for name, value in (*fields.items(), *body.items()):
        _check_field(name, value)
    fields.update(body)
    return fields


_FIELD_CHECKS = {"reason": validate.reason, "image": validate.image_ref}


def _check_field(name: str, value: str) -> None:
    check = _FIELD_CHECKS.get(name)
    if check is None:
        return
    try:
        check(value, name)
    except validate.InvalidValue as exc:
        raise InvalidCommand(str(exc)) from None


def _body(req: falcon.Request) -> dict[str, Any]:
    raw = req.bounded_stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise falcon.HTTPContentTooLarge(description=f"the body is over {MAX_BODY} bytes")
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if not raw:
        return {}
    if not raw.strip() and media_type == falcon.MEDIA_JSON:
        # Declared JSON but only whitespace: not JSON (an empty body is fine, this is not).
        raise InvalidCommand("the body is declared JSON but holds no JSON value")
    if not raw.strip():
        return {}
    # `curl -d '{...}'` says form-urlencoded although it sends JSON: trust what the body is.
    if media_type == falcon.MEDIA_URLENCODED and not raw.lstrip().startswith(b"{"):
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
        except ValueError as exc:
            raise InvalidCommand(f"the form body is malformed: {exc}") from None
    if media_type not in ("", falcon.MEDIA_JSON, falcon.MEDIA_URLENCODED):
        raise falcon.HTTPUnsupportedMediaType(
            description=f"send the body as {falcon.MEDIA_JSON}, not {media_type}"
        )
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCommand(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidCommand(f"the body must be a JSON object, not {_json_type(body)}")
    return body


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


class CommandResource:
    """``PUT`` one of :data:`~.routes.COMMAND_ROUTES`: 202 ``{"accepted": <payload>}``."""

    def __init__(self, control: Control, route: CommandRoute) -> None:
        self.control = control
        self.route = route

    def on_put(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        route = self.route
        fields = request_fields(req, route.fields)
        payload: dict[str, Any] = {"command": str(route.kind)}
        if "reason" in route.fields:
            payload["reason"] = fields.get("reason", "")
        if route.id_key:
            payload[route.id_key] = params[route.id_key]
        if route.image_key and fields.get("image"):
            payload[route.image_key] = fields["image"]
        if route.enabled is not None:
            payload["enabled"] = 1 if route.enabled else 0
        resp.status = falcon.HTTP_202
        resp.media = {"accepted": self.control.send(payload, _peer(req))}


class WorkersDebugResource:
    """``PUT /workers/debug``: the orchestrators log their tree; the API returns each one's
    summary (routers, tenants, counts by state, breaker, storm, hot spares, inbox counters),
    not the tree of every router (``GET /workers`` has it)."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        request_fields(req, ())
        good, bad = self.control.ask(Query(QueryKind.WORKERS, summary=True))
        accepted = self.control.send({"command": str(CommandKind.WORKERS_DEBUG)}, _peer(req))
        resp.status = falcon.HTTP_202
        resp.media = {"accepted": accepted, "orchestrators": _trees(good), "errors": bad}


class MissingIdResource:
    """``PUT /router/rebuild`` without an id: 400, as the original's argument parser."""

    def __init__(self, id_key: str) -> None:
        self.id_key = id_key

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise InvalidCommand(
            f"{req.path}: the {self.id_key} is missing (PUT {req.path}/<{self.id_key}>)"
        )


class InteractiveSink:
    """``/browse`` and ``/ssh/...`` need a terminal: 501 (405 for anything but PUT)."""

    def __call__(self, req: falcon.Request, resp: falcon.Response, **_: Any) -> None:
        if req.method != "PUT":
            raise falcon.HTTPMethodNotAllowed(["PUT"])
        command = req.path.strip("/").split("/", 1)[0]
        raise falcon.HTTPNotImplemented(
            description=f"{command} is interactive: run `astara-ctl {command}` in a terminal"
        )


class RoutersResource:
    """``GET /routers``: a page of the routers of every orchestrator that answered, filtered
    and sorted server-side (see :mod:`astara_actors.protocol.listing`), with the figures the
    console shows above it: counts by state, members, circuit breakers, storm protection, hot
    spares."""

    PARAMS = ("offset", "limit", "sort", "order", "state", "tenant_id", "q", "debug")

    def __init__(self, control: Control) -> None:
        self.control = control

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        check_params(req, self.PARAMS)
        payload: dict[str, Any] = {"query": str(QueryKind.ROUTERS), "limit": DEFAULT_LIMIT}
        for name in ("offset", "limit"):
            if (number := _int_param(req, name)) is not None:
                payload[name] = number
        for name in ("sort", "order", "tenant_id"):
            if (text := _text_param(req, name)) is not None:
                payload[name] = text
        if (states := _text_param(req, "state")) is not None:
            payload["state"] = states.split(",")
        if (text := req.get_param("q")) is not None:
            if not text:
                raise InvalidCommand("q is empty: give some text to look for, or leave q out")
            payload["q"] = text
        if (debug := req.get_param("debug")) is not None:
            if debug not in ("true", "false"):
                raise InvalidCommand(f"debug must be true or false, not {validate.shown(debug)}")
            payload["debug"] = debug == "true"
        query = Query.from_payload(payload)
        listing = query.listing
        assert listing is not None
        good, bad = self.control.ask(query)
        resp.media = merge_pages(good, bad, listing)


def merge_pages(
    good: list[dict[str, Any]], bad: list[dict[str, str]], listing: Listing
) -> dict[str, Any]:
    """The members' pages (``{"host", "routers", "total", "counts", "member", "breaker",
    "storm", "spares"}``) as one: the page of the merged order, totals and counts summed,
    figures by member (``spares`` null for a member that keeps no hot-spare pool)."""
    pages = [
        [{**row, "host": a["host"]} for row in a.get("routers") or () if isinstance(row, dict)]
        for a in good
    ]
    counts: Counter[str] = Counter()
    for answer in good:
        for state, n in (answer.get("counts") or {}).items():
            if isinstance(n, int):
                counts[str(state)] += n
    return {
        "routers": merge(
            pages,
            listing,
            skipped=sum(
                a["skipped"]
                for a in good
                if isinstance(a.get("skipped"), int) and not isinstance(a.get("skipped"), bool)
            ),
        ),
        "total": sum(int(a.get("total") or 0) for a in good),
        "offset": listing.offset,
        "limit": listing.limit,
        "counts": dict(sorted(counts.items())),
        "orchestrators": sorted(a["host"] for a in good),
        "errors": bad,
        "members": sorted(
            ({"host": a["host"], **(a.get("member") or {})} for a in good),
            key=lambda m: str(m["host"]),
        ),
        "breaker": {a["host"]: a.get("breaker") or {} for a in good},
        "storm": {a["host"]: a.get("storm") or {} for a in good},
        "spares": {a["host"]: spare_figures(a.get("spares")) for a in good},
    }


class RouterResource:
    """``GET /routers/{router_id}[?limit=N]``: the router's dump from the orchestrator that
    manages it, with its last N commands (``recent_commands``, the orchestrator's default 10)."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def on_get(self, req: falcon.Request, resp: falcon.Response, router_id: str) -> None:
        check_params(req, ("limit",))
        payload: dict[str, Any] = {"query": str(QueryKind.ROUTER), "router_id": router_id}
        if (limit := _int_param(req, "limit")) is not None:
            payload["limit"] = limit
        query = Query.from_payload(payload)
        resp.media = self.control.find_router(query.router_id, query.limit)


# RFC 3339 (JSON Schema's date-time) or full-date, as the document's "since" says.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))?"
)


class AuditResource:
    """``GET /audit``: the audit trail of operator commands, oldest first, newest last (the
    last ``limit``), filtered by ``router_id``, ``tenant_id`` and ``since``."""

    PARAMS = ("limit", "router_id", "tenant_id", "since")

    def __init__(self, control: Control, clock: Callable[[], datetime] | None = None) -> None:
        self.control = control
        self.clock = clock or (lambda: datetime.now(UTC))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        check_params(req, self.PARAMS)
        payload: dict[str, Any] = {"query": str(QueryKind.AUDIT)}
        if (limit := _int_param(req, "limit")) is not None:
            payload["limit"] = limit
        for name in ("router_id", "tenant_id"):
            if (value := _text_param(req, name)) is not None:
                payload[name] = value
        if (since := _text_param(req, "since")) is not None:
            # Over HTTP exactly the forms the document names (RFC 3339, a date, an age), so
            # that what the document refuses the server refuses too; astara-ctl is kinder.
            if not (_RFC3339.fullmatch(since) or re.fullmatch(AGE_PATTERN, since)):
                raise InvalidCommand(
                    f"since: {validate.shown(since)} is not a time: give an RFC 3339 time "
                    "(2025-01-31T12:00:00Z), a date (2025-01-31) or an age (30m, 2h, 7d)"
                )
            try:
                payload["since"] = audit.when(audit.parse_since(since, self.clock()))
            except audit.TimeError as exc:
                raise InvalidCommand(f"since: {exc}") from None
        query = Query.from_payload(payload)
        good, bad = self.control.ask(query)
        lists: list[list[Any]] = [a["audit"] for a in good if isinstance(a.get("audit"), list)]
        entries = audit.merge(lists, query.wanted)
        resp.media = {
            "audit": entries,
            "orchestrators": sorted(a["host"] for a in good),
            "errors": bad,
        }


def _text_param(req: falcon.Request, name: str) -> str | None:
    """A query parameter as given (None when absent); empty or padded is a mistake."""
    text = req.get_param(name)
    if text is not None and (not text or text != text.strip()):
        raise InvalidCommand(f"{name} is empty or has blanks around it: {validate.shown(text)}")
    return text


def _int_param(req: falcon.Request, name: str) -> int | None:
    """A whole-number query parameter (None when absent); the protocol checks its range."""
    text = _text_param(req, name)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 12):
        raise InvalidCommand(f"{name} must be a whole number, not {validate.shown(text)}")
    return int(text)


class WorkersResource:
    """``GET /workers``: each orchestrator's supervision tree."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        check_params(req)
        good, bad = self.control.ask(Query(QueryKind.WORKERS))
        resp.media = {"orchestrators": _trees(good), "errors": bad}


class HealthResource:
    """``GET /healthz``: 200 when an orchestrator answers over the bus within the timeout."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        check_params(req)
        good, _bad = self.control.ask(Query(QueryKind.WORKERS))
        resp.media = {"status": "ok", "orchestrators": sorted(a["host"] for a in good)}


class MetricsResource:
    """``GET /metrics``: every orchestrator's Prometheus metrics, labelled ``orchestrator``."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        check_params(req)
        good, bad = self.control.ask(Query(QueryKind.METRICS))
        resp.content_type = METRICS_CONTENT_TYPE
        resp.text = merge_metrics(good, bad)


class _Families:
    """A collector of already-built families, for ``generate_latest``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge_metrics(good: list[dict[str, Any]], bad: list[dict[str, str]]) -> str:
    """One exposition of the orchestrators' answers (``{"host", "metrics": <text>}``): one
    HELP/TYPE per family, every sample with an ``orchestrator="<host>"`` label, and
    ``astara_orchestrator_up`` (0 for one that answered with an error or unreadable text)."""
    families: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "astara_orchestrator_up",
        "1 if the orchestrator answered the scrape with its metrics, 0 if it answered an error",
        labels=["orchestrator"],
    )
    for answer in sorted(good, key=lambda a: a["host"]):
        host = answer["host"]
        try:
            parsed = list(text_string_to_metric_families(answer["metrics"]))
        except (KeyError, TypeError, ValueError) as exc:
            LOG.warning("orchestrator %s answered unreadable metrics: %s", host, exc)
            up.add_metric([host], 0)
            continue
        up.add_metric([host], 1)
        for family in parsed:
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            if merged.type != family.type:  # another version disagrees: keep the first
                continue
            merged.samples.extend(
                sample._replace(labels={**sample.labels, "orchestrator": host})
                for sample in family.samples
            )
    for answer in bad:
        up.add_metric([answer["host"]], 0)
    families[up.name] = up
    return generate_latest(_Families(families.values())).decode("utf-8")


def spare_figures(figures: Any) -> dict[str, Any] | None:
    """A member's hot-spare figures as its answer (or its change feed) gave them; None when
    it keeps no pool (or is older than hot spares)."""
    return figures if isinstance(figures, dict) and figures else None


def _trees(good: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"host": a["host"], "workers": a.get("workers")} for a in good]
