"""A bus peer for the cross-process bus tests (:class:`astara_actors.testing.bus.Peer`).

Run ``python -m astara_actors.testing.bus_peer ROLE SETTINGS_JSON [ARGS]`` with ROLE one of
``consume`` (prints ``got <message id>`` per message; ``--block`` never acks), ``serve`` (answers
queries with its pid) or ``command`` (sends the command ARGS[0] and prints ``sent``). It prints
``ready`` once consuming and stops cleanly when its stdin is closed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from astara_actors.bus import BusSettings, ControlClient, NotificationConsumer, QueryServer
from astara_actors.testing.bus import message_id
from astara_actors.testing.waiting import WAIT

__all__ = ["main"]


def main(role: str, settings_json: str, *args: str) -> int:
    settings = BusSettings(**json.loads(settings_json))
    out_lock = threading.Lock()

    def say(*words: object) -> None:
        with out_lock:
            print(*words, flush=True)

    if role == "command":
        with ControlClient(settings) as client:
            client.send_command(json.loads(args[0]))
        say("sent")
        return 0
    worker: NotificationConsumer | QueryServer
    if role == "consume":
        block = "--block" in args

        def handle(body: bytes, tag: str | int) -> None:
            say("got", message_id(body))
            if block:
                say("handling")
                threading.Event().wait()  # until the parent kills us, before any ack

        worker = NotificationConsumer(settings, handle)
    elif role == "serve":

        def answer(query: dict[str, Any]) -> dict[str, Any]:
            return {"pid": os.getpid(), "query": query}

        worker = QueryServer(settings, answer)
    else:
        raise SystemExit(f"unknown role {role!r}")
    worker.start()
    if not worker.wait_ready(WAIT):
        return 2
    say("ready")
    sys.stdin.read()  # until the parent closes our stdin
    return 0 if worker.stop() else 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
