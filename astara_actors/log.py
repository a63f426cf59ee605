"""Logging: per-router loggers, and log lines that outside text can neither forge nor flood.

Ids, reasons, names and bodies from outside end up in log arguments. :class:`SafeLogFilter`,
put on the handlers by :func:`install` right after logging is configured, makes every record
one line (control characters in the message *and* its arguments written as ``\\n``, ``\\x1b``,
…) of at most :data:`MAX_LINE` characters, the rest replaced by "… (N more characters)". A
traceback keeps its lines, but each exception's own text is escaped and bounded the same way.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

from astara_actors.core.validate import one_line

__all__ = ["MAX_LINE", "RouterLog", "SafeLogFilter", "format_exception", "install", "router_logger"]

ROUTER_LOGGER = logging.getLogger("astara_actors.router")

MAX_LINE = 8192  # characters of one record's message, after escaping

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class RouterLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with ``[router <id>]``; cheaper than 10,000 named loggers."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[router {self.extra['router_id']}] {msg}", kwargs  # type: ignore[index]


def router_logger(router_id: str) -> RouterLog:
    return RouterLog(ROUTER_LOGGER, {"router_id": router_id})


class SafeLogFilter(logging.Filter):
    """Rewrites each record once: arguments merged into the message, escaped and bounded.

    It never drops a record; a message whose arguments do not fit its format is logged with
    its parts shown instead of raising into the caller's ``LOG`` call.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_astara_safe", False):
            return True  # a second handler sees the record already made safe
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format must not raise in the caller
            message = f"{record.msg!r} % {record.args!r} (the arguments do not fit the format)"
        record.msg = one_line(message, self.limit)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = format_exception(record.exc_info, self.limit)
        if record.stack_info:
            record.stack_info = "\n".join(
                one_line(line, self.limit) for line in record.stack_info.splitlines()
            )
        record._astara_safe = True
        return True


def format_exception(exc_info: _ExcInfo, limit: int = MAX_LINE) -> str:
    """The traceback as ``logging`` prints it, each exception's own text made one safe line."""
    text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    exc: BaseException | None = exc_info[1]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # the cause/context chain
        seen.add(id(exc))
        raw = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
        safe = one_line(raw, limit)
        if raw != safe:
            text = text.replace(raw, safe)
        exc = exc.__cause__ or exc.__context__
    return text


def install(logger: logging.Logger | None = None, limit: int = MAX_LINE) -> None:
    """Put a :class:`SafeLogFilter` on every handler of ``logger`` (the root by default).

    Call it right after ``logging.basicConfig``/``dictConfig``; calling it again is harmless.
    """
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, SafeLogFilter) for f in handler.filters):
            handler.addFilter(SafeLogFilter(limit))
