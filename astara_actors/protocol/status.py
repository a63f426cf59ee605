"""What a router is doing, in one word: the STATE of the terminal browser and of the web
console, from a router's summary or dump (its instance state, the automaton's state, its last
transition). Pure, shared by the orchestrator (the console's rows carry the word) and the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ORDER", "STATUSES", "error_reason", "last_transition", "status_word"]

# Every word, in the header's order (healthy, in trouble, on the way: on a narrow screen the
# trouble is not what gets cut), with what it means (the browser's help, the README).
STATUSES: tuple[tuple[str, str], ...] = (
    ("ok", "configured, and its VM answers the polls"),
    (
        "ERROR",
        "gave up (boot attempts all failed, or its actor crashed too often), the reason "
        "after it: retries by itself after a cooldown",
    ),
    (
        "waiting (backoff)",
        "a boot Nova refused or the boot cap held back, or a config push that failed: "
        "tried again after a growing, jittered delay",
    ),
    ("unavailable", "its actor did not answer (restarting or busy)"),
    ("degraded", "an HA pair short of a member, which is being booted"),
    ("starting", "new (or restarted): it has not looked at the cloud yet"),
    ("booting", "a VM is booting, or is given time to answer again"),
    ("configuring", "its VM answers: the config is about to be pushed"),
    ("replugging", "waiting for its VM's interfaces to match its networks"),
    ("rebuilding", "deleting the old VM before booting the new (router rebuild)"),
    ("deleting VM", "the router was deleted, or its VM is being replaced"),
    ("deleted", "the router is gone, and so are its VM and ports"),
    ("debug, <word>", "debug mode, left alone by the orchestrator; <word> as above"),
)
ORDER = {word: i for i, (word, _) in enumerate(STATUSES)}  # the header's order


def status_word(summary: Mapping[str, Any]) -> str:
    """What a router is doing, as one word of :data:`STATUSES` (without debug or reason).

    From its summary (or its dump): the instance state says where its VM stands; the
    automaton's state says which step it is parked in (deleting a VM); a router at rest with
    no VM, or whose config push failed, waits out a backoff before trying again.
    """
    if "unavailable" in summary:
        return "unavailable"
    instance = str(summary.get("instance_state") or "")
    state = str(summary.get("state") or "")
    if instance == "error":
        return "ERROR"
    if state == "Exit" or summary.get("deleted"):
        return "deleted"
    if state == "RebuildInstance":
        return "rebuilding"
    if state == "StopInstance" or instance in ("gone", "restart"):
        return "deleting VM"
    simple = {"booting": "booting", "replug": "replugging", "degraded": "degraded"}
    if instance in simple:
        return simple[instance]
    last = last_transition(summary)
    failed = str(last.get("note") or "").startswith("failed:")
    if instance == "up":  # at rest only after a failed push (PushUpdate waits, then retries)
        return (
            "waiting (backoff)" if failed or last.get("source") == "PushUpdate" else "configuring"
        )
    if instance == "down":  # at rest only when the boot did not happen (refused, capped)
        return "waiting (backoff)" if last else "starting"
    if instance == "configured":
        return "ok"
    return instance or "?"


def error_reason(summary: Mapping[str, Any]) -> str:
    """Why the router is in ERROR: the summary's ``error`` (or the dump's), else the note of
    the transition into ERROR (an orchestrator that does not send ``error``)."""
    error = summary.get("error")
    if error:
        return str(error.get("reason") or error) if isinstance(error, Mapping) else str(error)
    note = str(last_transition(summary).get("note") or "")
    return note.removeprefix("error: ") if note.startswith("error: ") else ""


def last_transition(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    last = summary.get("last_transition")  # a summary's; a dump has its history
    if last is None and summary.get("transitions"):
        last = list(summary["transitions"])[-1]
    return last if isinstance(last, Mapping) else {}
