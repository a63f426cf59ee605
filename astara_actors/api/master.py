"""gunicorn's master for the API, tied to the process that started it (``run_api``).

``python -m astara_actors.api.master [gunicorn options] APP`` is ``gunicorn`` with an arbiter
that

- asks Linux for ``SIGINT`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``, before any
  worker is forked): gunicorn's quick stop — the process it served is gone, so there is
  nothing to be graceful for, and the port must be free for the next start at once; then
  checks the parent is still the one that started it (it may have died before the ``prctl``);
- checks ``os.getppid()`` at every turn of its loop (about once a second) as a fallback where
  there is no ``prctl``: a re-parented master stops the same way;
- records itself in a pidfile (``$ASTARA_API_PIDFILE``: ``{"api": <its pid>, "parent": <the
  orchestrator's pid>, ...}``, owner-only) once it listens, and removes it when it exits, so
  that the next start can recognise and replace an API whose orchestrator is gone
  (:func:`~.server.replace_stale_api`).

Linux sends the parent-death signal when the *thread* that forked the child exits: ``run_api``
is called from threads that live as long as the API should (the orchestrator's main thread,
its API watcher).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.arbiter import Arbiter

# Not imported by the package (it runs as __main__): its settings live in .server.
from astara_actors.api.server import PARENT_ENV, PIDFILE_ENV

__all__ = ["ApiArbiter", "main", "set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class ApiArbiter(Arbiter):
    """gunicorn's arbiter, dying with its parent and keeping the pidfile."""

    parent = 0
    _orphaned = False
    _pidfile: Path | None = None

    def start(self) -> None:
        self.parent = int(os.environ.get(PARENT_ENV) or os.getppid())
        if not set_parent_death_signal(signal.SIGINT):
            self.log.warning(
                "no parent-death signal on this system: the API notices its "
                "parent is gone within a second or so instead"
            )
        if os.getppid() != self.parent:  # it died before the prctl: no signal will come
            self.log.error(
                "the process that started the API (pid %d) is gone: not starting", self.parent
            )
            sys.exit(1)
        super().start()
        self._write_pidfile()

    def wait_for_signals(self, timeout: float = 1.0) -> list[int]:
        signals: list[int] = super().wait_for_signals(timeout)
        if not self._orphaned and os.getppid() != self.parent:
            self._orphaned = True
            self.log.warning(
                "the process that started the API (pid %d) is gone: stopping", self.parent
            )
            signals.append(signal.SIGINT)
        return signals

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._remove_pidfile()  # in the master only: forked workers unwind through here

    # --- the pidfile
    def _write_pidfile(self) -> None:
        path = os.environ.get(PIDFILE_ENV, "")
        if not path:
            return
        record = {
            "api": os.getpid(),
            "parent": self.parent,
            "started": time.time(),
            "bind": [str(listener) for listener in self.LISTENERS],
        }
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(record, out)
            os.replace(temporary, target)
        except OSError as exc:
            self.log.warning(
                "cannot write the API's pidfile %s: %s (a later start cannot "
                "replace this API if it is left behind)",
                path,
                exc,
            )
            return
        self._pidfile = target
        self._master = os.getpid()

    def _remove_pidfile(self) -> None:
        path = self._pidfile
        if path is None or os.getpid() != getattr(self, "_master", -1):
            return
        try:
            if json.loads(path.read_text()).get("api") == os.getpid():
                path.unlink()
        except (OSError, ValueError, AttributeError):
            pass


class ApiApplication(WSGIApplication):
    """gunicorn's command line application, run by :class:`ApiArbiter`."""

    def run(self) -> None:
        try:
            ApiArbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr, flush=True)
            sys.exit(1)


def main(argv: list[str] | None = None) -> Any:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    ApiApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="astara-api").run()


if __name__ == "__main__":
    main()
