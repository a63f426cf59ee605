"""Serve the HTTP RPC API with gunicorn, in a process of its own.

gunicorn must own its main thread and forks its workers, so it never runs inside the
orchestrator: ``run_api`` starts it as a child (the orchestrator does so before it starts any
thread) and this module's ``main`` runs it standalone on any host that reaches the bus.

The child (:mod:`.master`) dies with the process that started it and records itself in
``<state_dir>/api.pid``; a start finding there an API whose starter is gone (a ``kill -9``
of the orchestrator on a system without the parent-death signal, a master that was stopped)
stops it first (:func:`replace_stale_api`). The workers are :class:`~.worker.BufferingWorker`:
slow clients cost no thread.

Run it as ``python -m astara_actors.api``.

Usage:
  astara-api --config-file=FILE
  astara-api (-h | --help)

Options:
  --config-file=FILE  The orchestrator's configuration file ([api] and [bus] are read).
  -h --help           Show this help.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astara_actors.api.errors import ApiError
from astara_actors.api.keystone import keystone_account
from astara_actors.config.loader import CONFIG_ENV, ApiSettings, Config, load_config
from astara_actors.errors import SettingsError
from astara_actors.log import install as safe_logs

__all__ = [
    "APP",
    "MODULE",
    "PARENT_ENV",
    "PIDFILE",
    "PIDFILE_ENV",
    "WORKER",
    "AddressUnavailable",
    "ApiStartError",
    "bind_address",
    "check_api_settings",
    "check_listen",
    "check_listens",
    "gunicorn_command",
    "main",
    "replace_stale_api",
    "run_api",
]

LOG = logging.getLogger(__name__)

APP = "astara_actors.api.app:get_app()"
WORKER = "astara_actors.api.worker.BufferingWorker"
THREADS = 4  # per worker: one slow query does not hold up the others
WORKER_TIMEOUT = 30  # seconds; far above [api] timeout, the longest a query waits
GRACEFUL_MIN = 5  # seconds a stopping API gives requests in flight, at least
PIDFILE = "api.pid"  # under [orchestrator] state_dir
STALE_STOP_TIMEOUT = 10.0  # seconds a stale API gets to stop on SIGTERM before SIGKILL
#: gunicorn run by :mod:`.master`; also what ``/proc/<pid>/cmdline`` of an API master holds
#: (how a stale one is recognised).
MODULE = "astara_actors.api.master"
#: The pid of the process the master must die with (the orchestrator, or astara-api).
PARENT_ENV = "ASTARA_API_PARENT"
#: Where the master records itself ("" = nowhere).
PIDFILE_ENV = "ASTARA_API_PIDFILE"


class ApiStartError(ApiError):
    """Raised when the API cannot be started (its address is in use or cannot be bound)."""


def bind_address(listen: str, port: int) -> str:
    """gunicorn's ``--bind``: ``[::]:44250`` for IPv6 (``::`` serves IPv4 too), ``host:port``."""
    host = listen.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_listen(listen: str, port: int) -> str:
    """The address to bind: ``listen``, or ``0.0.0.0`` for ``::`` on a host without IPv6.

    Raises :class:`ApiStartError` when the port is taken (gunicorn would retry for 5 s, then
    exit with a line in its log that is easy to miss).
    """
    host = listen.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if host == "::" and exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            LOG.warning("no IPv6 on this host: the API listens on 0.0.0.0 instead of [::]")
            return check_listen("0.0.0.0", port)
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            raise AddressUnavailable(
                f"cannot listen on {bind_address(host, port)}: {exc}"
            ) from None
        raise ApiStartError(f"cannot listen on {bind_address(host, port)}: {exc}") from None
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ApiStartError(
                    f"cannot listen on {bind_address(host, port)}: the address is already in use "
                    "(another astara API? a demo, make demo, may be running; stop it, or set "
                    "[api] port or listen)"
                ) from None
            if host == "::" and exc.errno == errno.EADDRNOTAVAIL:
                LOG.warning("no IPv6 on this host: the API listens on 0.0.0.0 instead of [::]")
                return check_listen("0.0.0.0", port)
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise AddressUnavailable(
                    f"cannot listen on {bind_address(host, port)}: {exc.strerror or exc}"
                ) from None
            raise ApiStartError(
                f"cannot listen on {bind_address(host, port)}: {exc.strerror or exc}"
            ) from None
    return host


class AddressUnavailable(ApiStartError):
    """The host has no such address (e.g. ``::1`` without IPv6)."""


def check_listens(api: ApiSettings) -> tuple[str, ...]:
    """:func:`check_listen` for each ``[api] listen`` address; one the host does not have
    (``::1`` without IPv6) is left out with a warning while another remains."""
    found: list[str] = []
    missing: list[AddressUnavailable] = []
    for address in api.addresses:
        try:
            found.append(check_listen(address, api.port))
        except AddressUnavailable as exc:
            missing.append(exc)
    if not found:
        raise missing[0]
    for unavailable in missing:
        LOG.warning("%s; the API listens on the other [api] listen addresses", unavailable)
    return tuple(dict.fromkeys(found))


def _has_control_socket() -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)


def gunicorn_command(api: ApiSettings, listen: Sequence[str] | None = None) -> list[str]:
    """The command line serving :data:`APP` for ``[api]`` (gunicorn, run by :mod:`.master`)
    on ``listen`` (default: the ``[api] listen`` addresses)."""
    binds = [
        arg
        for host in (listen or api.addresses)
        for arg in ("--bind", bind_address(host, api.port))
    ]
    argv = [
        sys.executable,
        "-m",
        MODULE,
        *binds,
        "--workers",
        str(api.workers),
        "--worker-class",
        WORKER,
        "--threads",
        str(THREADS),
        "--timeout",
        str(WORKER_TIMEOUT),
        # A stop waits this long for requests in flight (a query waits at most [api] timeout),
        # not gunicorn's 30 s: the port is free for the next start soon after.
        "--graceful-timeout",
        str(math.ceil(max(GRACEFUL_MIN, 2 * api.timeout))),
        "--name",
        "astara-api",
    ]
    if _has_control_socket():
        # gunicorn ≥ 25.1 opens one at a default path shared by every instance on the host.
        argv.append("--no-control-socket")
    return [*argv, APP]


def check_api_settings(config: Config) -> str:
    """Refuse what must not be served (raises :class:`SettingsError` naming the keys to set):
    an unauthenticated API beyond loopback without ``allow_unauthenticated``, Keystone
    authentication without a Keystone to ask. Returns the warning to log at every start
    when the operator chose to serve it open ("" otherwise)."""
    api = config.api
    warning = api.exposure()
    if api.strategy == "keystone":
        keystone_account(config)
    return warning


def api_pidfile(config: Config) -> Path | None:
    """``<state_dir>/api.pid``, its directory made if need be; None if it cannot be."""
    state_dir = Path(config.process.state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        LOG.warning(
            "no API pidfile in %s (%s): a stale API cannot be replaced at start",
            state_dir,
            exc.strerror or exc,
        )
        return None
    return state_dir.resolve() / PIDFILE


def run_api(config_path: str | os.PathLike[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start gunicorn serving the API for this config file; ``popen`` goes to ``Popen``.

    Raises :class:`~astara_actors.errors.SettingsError` for a bad file or settings that must
    not be served, and :class:`ApiStartError` when the address cannot be bound.
    """
    path = Path(config_path).resolve()
    config = load_config(path)
    warning = check_api_settings(config)
    if warning:
        LOG.warning("%s", warning)
    pidfile = api_pidfile(config)
    replaced = pidfile is not None and replace_stale_api(pidfile)
    listen = _bind_check(config.api, patience=5.0 if replaced else 0.0)
    env = {
        **os.environ,
        **popen.pop("env", {}),
        CONFIG_ENV: str(path),
        PARENT_ENV: str(os.getpid()),
        PIDFILE_ENV: str(pidfile or ""),
    }
    argv = gunicorn_command(config.api, listen)
    LOG.info(
        "starting the HTTP API on %s", ", ".join(bind_address(h, config.api.port) for h in listen)
    )
    return subprocess.Popen(argv, env=env, **popen)


def _bind_check(api: ApiSettings, patience: float) -> tuple[str, ...]:
    """:func:`check_listens`, retried for ``patience`` seconds while the address is in use
    (the workers of an API just stopped may still hold it for a moment)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return check_listens(api)
        except ApiStartError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


# --- a stale API: left running by an orchestrator that is gone
def replace_stale_api(pidfile: Path, timeout: float | None = None) -> bool:
    """Stop the API ``pidfile`` names if the process that started it is gone; True if one was.

    Only a live process whose command line is an API master (:data:`MODULE`) is
    stopped, and only when its recorded parent is dead or no longer its parent; a live API
    of a live orchestrator is left alone (the port check then says the address is in use).
    SIGTERM (gunicorn's graceful stop), then SIGKILL after ``timeout`` seconds.
    """
    try:
        record = json.loads(pidfile.read_text())
        pid, parent = int(record["api"]), int(record["parent"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        LOG.warning("ignoring the unreadable API pidfile %s: %s", pidfile, exc)
        return False
    if not _is_api_master(pid):  # gone, or its pid now belongs to another program
        _unlink(pidfile)
        return False
    if _alive(parent) and _ppid(pid) == parent:
        return False
    LOG.warning(
        "stopping the HTTP API left running (pid %d): the process that started it (pid %d) is gone",
        pid,
        parent,
    )
    _stop([pid, *_children(pid)], STALE_STOP_TIMEOUT if timeout is None else timeout)
    _unlink(pidfile)
    return True


def _proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _state_and_ppid(pid: int) -> tuple[str, int]:
    stat = _proc(pid, "stat")
    if not stat:
        return "", 0
    fields = stat.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _state_and_ppid(pid)[0] not in ("Z", "X")


def _ppid(pid: int) -> int:
    return _state_and_ppid(pid)[1]


def _is_api_master(pid: int) -> bool:
    return _alive(pid) and MODULE.encode() in _proc(pid, "cmdline").split(b"\0")


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    return [int(child) for task in tasks for child in _proc(pid, f"task/{task}/children").split()]


def _stop(pids: list[int], timeout: float) -> None:
    _signal(pids, signal.SIGTERM)
    left = _wait_gone(pids, timeout)
    if left:
        LOG.warning("the stale HTTP API did not stop on SIGTERM within %.0f s: SIGKILL", timeout)
        _signal(left, signal.SIGKILL)
        _wait_gone(left, 5.0)


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise ApiStartError(
                f"cannot stop the stale HTTP API (pid {pid}): it belongs to another user"
            ) from None


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    from docopt import docopt

    args = docopt(__doc__, argv=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    safe_logs()
    try:
        proc = run_api(args["--config-file"])
    except (SettingsError, ApiStartError, OSError) as exc:
        print(f"astara-api: {exc}", file=sys.stderr)
        return 1

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)  # gunicorn stops gracefully on SIGTERM and SIGINT

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    return proc.wait()
