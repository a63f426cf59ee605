"""The API's command routes: the seed's ``curl -X PUT`` paths, in astara-ctl's words.

One table drives both the Falcon app and the OpenAPI document, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from astara_actors.protocol.control import CommandKind

__all__ = ["COMMAND_ROUTES", "MISSING_ID_ROUTES", "CommandRoute", "INTERACTIVE"]

_WILDCARD_KINDS = frozenset(
    {
        CommandKind.ROUTER_UPDATE,
        CommandKind.ROUTER_REBUILD,
        CommandKind.RESOURCE_UPDATE,
        CommandKind.RESOURCE_REBUILD,
    }
)

#: The interactive astara-ctl commands: they need a terminal, so the API answers 501.
INTERACTIVE = ("browse", "ssh")


@dataclass(frozen=True, slots=True)
class CommandRoute:
    """``PUT <path>`` publishes one ``astara.command`` of ``kind``."""

    path: str
    kind: CommandKind
    summary: str
    id_key: str = ""  # the path parameter, also the payload key: router_id/resource_id/tenant_id
    image_key: str = ""  # rebuild only: the payload key the ``image`` field fills
    enabled: bool | None = None  # global debug enable/disable

    @property
    def fields(self) -> tuple[str, ...]:
        """The request fields (JSON body or query string) this command takes."""
        if self.kind in (CommandKind.POLL, CommandKind.WORKERS_DEBUG, CommandKind.CONFIG_RELOAD):
            return ()
        return ("reason", "image") if self.image_key else ("reason",)

    @property
    def targets_router(self) -> bool:
        """Whether the router must exist (checked before the command is published)."""
        return self.id_key in ("router_id", "resource_id")

    @property
    def wildcards(self) -> bool:
        """Whether ``*`` (every router) and ``error`` (routers in error) are accepted ids."""
        return self.kind in _WILDCARD_KINDS


def _targeted() -> list[CommandRoute]:
    routes = []
    verbs = {
        "rebuild": "Rebuild the {what}'s service VM (optionally from another image)",
        "update": "Push the {what}'s configuration to its service VM again",
        "debug": "Put the {what} in debug mode: the orchestrator stops acting on it",
        "manage": "Take the {what} out of debug mode",
    }
    for noun, key in (("router", "router_id"), ("resource", "resource_id")):
        for verb, summary in verbs.items():
            routes.append(
                CommandRoute(
                    f"/{noun}/{verb}/{{{key}}}",
                    CommandKind(f"{noun}-{verb}"),
                    summary.format(what=noun),
                    id_key=key,
                    image_key=f"{noun}_image_uuid" if verb == "rebuild" else "",
                )
            )
    for verb, summary in (
        ("debug", "Put every router of the tenant in debug mode"),
        ("manage", "Take the tenant out of debug mode"),
    ):
        routes.append(
            CommandRoute(
                f"/tenant/{verb}/{{tenant_id}}",
                CommandKind(f"tenant-{verb}"),
                summary,
                id_key="tenant_id",
            )
        )
    return routes


COMMAND_ROUTES: tuple[CommandRoute, ...] = (
    CommandRoute("/poll", CommandKind.POLL, "Poll every router now"),
    CommandRoute(
        "/config/reload",
        CommandKind.CONFIG_RELOAD,
        "Make every orchestrator re-read its configuration file",
    ),
    CommandRoute(
        "/global/debug/enable",
        CommandKind.GLOBAL_DEBUG,
        "Global debug mode: the orchestrators stop acting on every router",
        enabled=True,
    ),
    CommandRoute(
        "/global/debug/disable", CommandKind.GLOBAL_DEBUG, "Leave global debug mode", enabled=False
    ),
    *_targeted(),
)

#: ``PUT /router/rebuild`` without an id: a 400 saying so (the original's argparse error).
MISSING_ID_ROUTES: tuple[tuple[str, str], ...] = tuple(
    (route.path.rsplit("/", 1)[0], route.id_key) for route in COMMAND_ROUTES if route.id_key
)
