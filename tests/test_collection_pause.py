"""A cold start's pause of the cyclic garbage collector (jobs.heap_freezer.CollectionPause)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from astara_actors.jobs.heap_freezer import CollectionPause


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    assert gc.isenabled()
    yield
    gc.enable()  # whatever a failing test left


def test_the_collector_is_off_until_the_first_events_are_quiet_twice() -> None:
    pause = CollectionPause(cap=30.0, check=0.01)
    pause.start()
    assert not gc.isenabled() and pause.paused
    answers = iter([False, True, False, True, True])  # quiet twice in a row at the 4th/5th
    asked: list[int] = []
    ran = threading.Event()

    def quiet() -> bool:
        asked.append(1)
        return next(answers)

    thread = pause.resume_when(quiet, then=ran.set)
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    assert gc.isenabled() and not pause.paused
    assert len(asked) == 5 and ran.is_set()


def test_the_cap_resumes_it_while_never_quiet() -> None:
    pause = CollectionPause(cap=0.1, check=0.01)
    pause.start()
    thread = pause.resume_when(lambda: False)
    assert thread is not None
    thread.join(5)
    assert gc.isenabled() and not pause.paused


def test_resume_at_once_ends_the_watch_and_runs_then_once() -> None:
    pause = CollectionPause(cap=30.0, check=0.01)
    pause.start()
    calls: list[str] = []
    thread = pause.resume_when(lambda: False, then=lambda: calls.append("watch"))
    assert thread is not None
    assert pause.resume(then=lambda: calls.append("now"))
    thread.join(5)
    assert gc.isenabled() and calls == ["now"]
    assert not pause.resume()  # not paused any more: nothing to do


def test_a_collector_already_off_is_left_off() -> None:
    gc.disable()
    try:
        pause = CollectionPause(cap=30.0)
        pause.start()
        assert not pause.paused
        assert pause.resume_when(lambda: True) is None
        assert not pause.resume()
        assert not gc.isenabled()  # someone else turned it off: theirs to turn on
    finally:
        gc.enable()
