"""astara-ctl's side of the control protocol: queries and commands, errors as exit codes.

Every failure the operator can cause or fix (a bad id, an unknown router, no orchestrator
answering, an unreachable bus) becomes a :class:`CtlError` carrying the line to print and
the exit code, so ``main`` has one place that turns them into output.
"""

from __future__ import annotations

import getpass
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from astara_actors.bus.rpc import ControlClient
from astara_actors.bus.transport import BusError, BusSettings, NoAnswer
from astara_actors.core import validate
from astara_actors.errors import AstaraError
from astara_actors.protocol.audit import merge
from astara_actors.protocol.control import Command, InvalidCommand, Query, QueryKind
from astara_actors.protocol.listing import Listing
from astara_actors.protocol.listing import merge as merge_rows

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "CtlError",
    "Page",
    "Session",
    "check_command",
    "check_query",
    "storm_alert",
    "tenant_hint",
]

EXIT_FAILED = 1  # the orchestrators answered, but no: unknown router, a failed answer
EXIT_USAGE = 2  # the operator's input, the configuration, or nobody to talk to

# The router query answers quickly for an id nobody owns: a cheap "is anyone there?".
_PROBE_ID = "00000000-0000-0000-0000-000000000000"


class CtlError(AstaraError):
    """Raised when an astara-ctl command cannot be carried out; ``exit_code`` says how."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_command(payload: Mapping[str, Any]) -> Command:
    """The command for ``payload``, validated as the orchestrators will (ids, wildcards)."""
    try:
        return Command.from_payload(payload)
    except InvalidCommand as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


def tenant_hint(dump: Mapping[str, Any]) -> str:
    """The tenant to send with a router command: the router's, as its orchestrator reported
    it, or ``*`` (the orchestrator then finds it by the router) if that is no project id."""
    tenant_id = dump.get("tenant_id")
    return tenant_id if validate.is_tenant_id(tenant_id) else "*"  # type: ignore[return-value]


def check_query(payload: Mapping[str, Any]) -> Query:
    try:
        return Query.from_payload(payload)
    except InvalidCommand as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


@dataclass(slots=True)
class Page:
    """A page of the router list from every orchestrator that answered (``routers`` rows of
    the web console, each with its ``host``), with the figures over every router: ``total``
    (matching the filter), ``routers_count`` (all), ``statuses`` (by STATE word), ``in_debug``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    routers_count: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    in_debug: int = 0
    hosts: list[str] = field(default_factory=list)


class Session:
    """One connection to the bus for one astara-ctl run (or one browse thread)."""

    def __init__(self, bus: BusSettings, timeout: float) -> None:
        self.bus = bus
        self.timeout = timeout
        self._client: ControlClient | None = None
        self.alerts: list[str] = []  # open circuit breakers seen by the last routers()

    @property
    def client(self) -> ControlClient:
        if self._client is None:
            try:
                # The audit trail names the operator's machine (login@host), not the
                # [orchestrator] host of the configuration file astara-ctl happens to read.
                self._client = ControlClient(self.bus, host=_machine())
            except BusError as exc:
                raise CtlError(str(exc), EXIT_USAGE) from None
        return self._client

    def ask(self, query: Query, expect: int | None = None) -> list[dict[str, Any]]:
        """Every orchestrator's reply to ``query``; raises :class:`CtlError` if none answered."""
        try:
            return self.client.ask(query.to_payload(), timeout=self.timeout, expect=expect)
        except NoAnswer:
            raise CtlError(
                f"no orchestrator answered within {self.timeout:g} s "
                f"(is astara-orchestrator running and using {self.bus.transport_url}?)",
                EXIT_USAGE,
            ) from None
        except BusError as exc:
            raise CtlError(str(exc), EXIT_USAGE) from None

    def probe(self) -> list[str]:
        """The hosts of the orchestrators that answer (at least one, or :class:`CtlError`)."""
        return [r["host"] for r in self.ask(Query(QueryKind.ROUTER, _PROBE_ID))]

    def routers(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Every router's summary, sorted by tenant and id, and the hosts that answered."""
        replies = self.ask(Query(QueryKind.ROUTERS))
        routers = [
            {**summary, "host": reply["host"]}
            for reply in _good(replies)
            for summary in reply["answer"].get("routers", [])
        ]
        routers.sort(key=lambda r: (str(r.get("tenant_id", "")), str(r.get("router_id", ""))))
        self.alerts = sorted(
            alert
            for reply in _good(replies)
            if (alert := storm_alert(reply["host"], reply["answer"].get("storm")))
        )
        return routers, sorted(r["host"] for r in replies)

    def page(self, listing: Listing) -> Page:
        """A page of the routers (filtered, sorted and cut by the orchestrators, merged here)
        and the figures over all of them; sets :attr:`alerts` as :meth:`routers` does."""
        replies = self.ask(Query(QueryKind.ROUTERS, listing=listing))
        good = _good(replies)
        pages = [
            [
                {**row, "host": reply["host"]}
                for row in reply["answer"].get("routers") or ()
                if isinstance(row, dict)
            ]
            for reply in good
        ]
        skipped = sum(int(r["answer"].get("skipped") or 0) for r in good)
        statuses: Counter[str] = Counter()
        for reply in good:
            statuses.update(reply["answer"].get("statuses") or {})
        self.alerts = sorted(
            alert
            for reply in good
            if (alert := breaker_alert(reply["host"], reply["answer"].get("breaker")))
        )
        return Page(
            rows=[dict(r) for r in merge_rows(pages, listing, skipped=skipped)],
            total=sum(int(r["answer"].get("total") or 0) for r in good),
            routers_count=sum(
                int((r["answer"].get("member") or {}).get("routers") or 0) for r in good
            ),
            statuses=dict(statuses),
            in_debug=sum(int(r["answer"].get("in_debug") or 0) for r in good),
            hosts=sorted(r["host"] for r in replies),
        )

    def router(self, router_id: str, commands: int | None = None) -> tuple[dict[str, Any], str]:
        """One router's dump (with its last ``commands`` commands, or the orchestrator's
        default) and the host that owns it; :class:`CtlError` (exit 1) if none does."""
        payload: dict[str, Any] = {"query": str(QueryKind.ROUTER), "router_id": router_id}
        if commands is not None:
            payload["limit"] = commands
        query = check_query(payload)
        replies = self.ask(query)
        for reply in _good(replies):
            if reply["answer"].get("found"):
                return reply["answer"]["router"], reply["host"]
        hosts = ", ".join(sorted(r["host"] for r in replies))
        raise CtlError(
            f"router {query.router_id} is not known to any orchestrator (asked: {hosts})"
        )

    def audit(self, query: Query) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        """The audit trail's entries for ``query`` from every orchestrator that answered, each
        command once, oldest first; the hosts that answered; ``"<host>: <error>"`` of those
        that could not (:class:`CtlError` if none could)."""
        replies = self.ask(query)
        good = _good(replies)
        entries = merge(
            (r["answer"].get("audit") or [] for r in good if isinstance(r.get("answer"), dict)),
            query.wanted,
        )
        failed = sorted(f"{r.get('host')}: {r.get('error')}" for r in replies if not r.get("ok"))
        return entries, sorted(r["host"] for r in good), failed

    def workers(self) -> list[tuple[str, dict[str, Any]]]:
        """Each orchestrator's supervision tree with its inbox counters, by host.

        In a cluster the members name each other: if some did not answer within the short
        gathering window, ask again and wait for as many answers as there are members.
        """
        replies = self.ask(Query(QueryKind.WORKERS))
        members = {
            m
            for r in _good(replies)
            for m in (r["answer"]["workers"].get("cluster") or {}).get("members", [])
        }
        if members - {r["host"] for r in replies}:
            replies = self.ask(Query(QueryKind.WORKERS), expect=len(members))
        return sorted((r["host"], r["answer"]["workers"]) for r in _good(replies))

    def send(self, command: Command) -> dict[str, Any]:
        """Fan ``command`` out to every orchestrator; returns the payload sent."""
        payload = command.to_payload()
        try:
            self.client.send_command(payload, on_behalf_of=_login())
        except BusError as exc:
            raise CtlError(str(exc), EXIT_USAGE) from None
        return payload

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def storm_alert(host: str, storm: Any) -> str:
    """One line when ``host``'s circuit breaker is open ("" otherwise)."""
    if not isinstance(storm, Mapping) or storm.get("breaker") != "open":
        return ""
    share = storm.get("failing_share") or 0
    return (
        f"{host}: CIRCUIT BREAKER OPEN for {storm.get('open_for_s', 0)} s: "
        f"{storm.get('failing', '?')} of {storm.get('monitored', '?')} routers fail liveness "
        f"({100 * share:.0f}%); automatic rebuilds held ({storm.get('rebuilds_held', 0)})"
    )


def breaker_alert(host: str, breaker: Any) -> str:
    """:func:`storm_alert` from a page's ``breaker`` figures (the console's names)."""
    if not isinstance(breaker, Mapping) or not breaker.get("open"):
        return ""
    return storm_alert(
        host,
        {
            "breaker": "open",
            "open_for_s": breaker.get("open_for_s") or 0,
            "failing": breaker.get("failing", "?"),
            "monitored": breaker.get("monitored", "?"),
            "failing_share": breaker.get("silent_share") or 0,
            "rebuilds_held": breaker.get("held_rebuilds", 0),
        },
    )


def _login() -> str:
    """The operator's login name for the audit trail ("" when the system cannot say)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no USER/LOGNAME and no passwd entry (some containers)
        return ""


def _machine() -> str:
    """This machine's host name ("" leaves the bus settings' host)."""
    try:
        return socket.gethostname()
    except OSError:
        return ""


def _good(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The successful replies; if every orchestrator failed, their errors as a :class:`CtlError`."""
    good = [r for r in replies if r.get("ok")]
    if not good and replies:
        errors = "; ".join(f"{r.get('host')}: {r.get('error')}" for r in replies)
        raise CtlError(f"the orchestrators could not answer: {errors}")
    return good
