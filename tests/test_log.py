"""Log lines that outside text can neither forge nor flood (issue 13, item 8)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astara_actors.actors.orchestrator import dump_lines
from astara_actors.core.validate import is_shown
from astara_actors.log import MAX_LINE, SafeLogFilter, install

FORGED = "ok\nERROR astara_actors.core.rebuild_guard: CIRCUIT BREAKER OPEN: forged"


class Captured:
    """A logger writing through a handler that carries the filter, as ``install`` sets up."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(SafeLogFilter(limit))
        self.logger = logging.getLogger(f"test_log.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


@pytest.fixture
def log() -> Iterator[Captured]:
    captured = Captured()
    yield captured
    captured.close()


def test_a_newline_in_an_argument_cannot_forge_a_line(log: Captured) -> None:
    log.logger.info("command router-debug (%s)", FORGED)
    assert log.lines == [
        "INFO " + log.logger.name + ": command router-debug "
        "(ok\\nERROR astara_actors.core.rebuild_guard: CIRCUIT BREAKER OPEN: forged)"
    ]


def test_control_characters_in_the_message_itself_are_escaped_too(log: Captured) -> None:
    log.logger.warning(f"router \x1b[31m{FORGED}\r\u202e")
    (line,) = log.lines
    assert "\\x1b[31m" in line and "\\n" in line and line.endswith("\\r\\u202e")
    assert all(map(is_shown, line))


def test_a_huge_argument_is_cut_with_the_count_of_what_was_left_out(log: Captured) -> None:
    log.logger.info("reason %s", "x" * 3_000_000)
    (line,) = log.lines
    message = line.split(": ", 1)[1]
    assert (
        message == "reason " + "x" * (MAX_LINE - 7) + f"… ({3_000_007 - MAX_LINE} more characters)"
    )


def test_an_exception_keeps_its_traceback_but_its_text_is_one_safe_line(log: Captured) -> None:
    try:
        raise ValueError(FORGED)
    except ValueError:
        log.logger.exception("handling %s failed", "x\ny")
    lines = log.lines
    assert lines[0].endswith("handling x\\ny failed") and lines[1].startswith("Traceback")
    assert lines[-1] == "ValueError: " + FORGED.replace("\n", "\\n")
    assert not any(line.startswith("ERROR astara_actors.core.rebuild_guard") for line in lines)


def test_arguments_that_do_not_fit_the_format_do_not_raise(log: Captured) -> None:
    log.logger.info("%d routers", "many\n")
    (line,) = log.lines
    assert "'%d routers' % ('many\\n',)" in line


def test_a_record_seen_by_two_handlers_is_escaped_once(log: Captured) -> None:
    second = io.StringIO()
    handler = logging.StreamHandler(second)
    handler.addFilter(SafeLogFilter())
    log.logger.addHandler(handler)
    try:
        log.logger.info("a %s", "b\nc")
    finally:
        log.logger.removeHandler(handler)
    assert second.getvalue() == "a b\\nc\n"


def test_install_puts_one_filter_on_each_handler_of_the_logger() -> None:
    logger = logging.getLogger("test_log.install")
    handlers = [logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        install(logger)
        install(logger)
        assert [sum(isinstance(f, SafeLogFilter) for f in h.filters) for h in handlers] == [1, 1]
    finally:
        for handler in handlers:
            logger.removeHandler(handler)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.lists(st.text() | st.integers() | st.binary(), max_size=3))
def test_any_message_becomes_one_bounded_line(message: str, args: list[object]) -> None:
    captured = Captured(limit=64)
    try:
        captured.logger.info(message.replace("%", "%%") + " %s" * len(args), *args)
    finally:
        captured.close()
    (line,) = captured.lines
    body = line.split(": ", 1)[1]
    shown, _, more = body.partition("… (")
    assert len(shown) <= 64 and all(map(is_shown, line))
    assert not more or more.endswith(" more characters)")


# --- the one legitimately long line: `workers debug`
def test_the_workers_debug_dump_is_logged_as_lines_that_fit_the_bound() -> None:
    router = {
        "router_id": "",
        "state": "CalcAction",
        "instance_state": "configured",
        "last_transition": {"note": "n" * 200},
        "tenant_id": "",
    }
    tenants = [
        {
            "tenant_id": f"{t:032x}",
            "debug": False,
            "restarts": 0,
            "routers": [
                dict(router, router_id=f"{t:08x}-0000-4000-8000-{r:012x}") for r in range(800)
            ],
        }
        for t in range(3)
    ]
    tree = {"host": "h", "tenant_count": 3, "router_count": 2400, "tenants": tenants}
    lines = dump_lines(tree)
    assert max(len(line) for line in lines) <= MAX_LINE
    assert json.loads(lines[0].split(": ", 1)[1]) == {
        "host": "h",
        "tenant_count": 3,
        "router_count": 2400,
    }
    listed = [
        r["router_id"]
        for line in lines
        if " routers [" in line
        for r in json.loads(line.split(" routers ", 1)[1])
    ]
    assert listed == [r["router_id"] for t in tenants for r in t["routers"]]
    assert sum('"router_count": 800' in line for line in lines) == 3
