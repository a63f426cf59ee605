"""Per-router logging: one shared logger, every line prefixed with the router id."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["RouterLog", "router_logger"]

ROUTER_LOGGER = logging.getLogger("astara_actors.router")


class RouterLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes messages with ``[router <id>]``; cheaper than 10,000 named loggers."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[router {self.extra['router_id']}] {msg}", kwargs  # type: ignore[index]


def router_logger(router_id: str) -> RouterLog:
    return RouterLog(ROUTER_LOGGER, {"router_id": router_id})
