"""Serve the HTTP RPC API with gunicorn, in a process of its own.

gunicorn must own its main thread and forks its workers, so it never runs inside the
orchestrator: ``run_api`` starts it as a child (the orchestrator does so before it starts any
thread) and this module's ``main`` runs it standalone on any host that reaches the bus.

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
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..conf import CONFIG_ENV, ApiSettings, load_config
from ..errors import SettingsError
from .errors import ApiError

__all__ = ["APP", "ApiStartError", "bind_address", "gunicorn_command", "main", "run_api"]

LOG = logging.getLogger(__name__)

APP = "astara_actors.api.app:get_app()"
THREADS = 4  # per worker: one slow query does not hold up the others
WORKER_TIMEOUT = 30  # seconds; far above [api] timeout, the longest a query waits


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
                    "(another astara API? set [api] port or listen)"
                ) from None
            if host == "::" and exc.errno == errno.EADDRNOTAVAIL:
                LOG.warning("no IPv6 on this host: the API listens on 0.0.0.0 instead of [::]")
                return check_listen("0.0.0.0", port)
            raise ApiStartError(f"cannot listen on {bind_address(host, port)}: "
                                f"{exc.strerror or exc}") from None
    return host


def _has_control_socket() -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)


def gunicorn_command(api: ApiSettings, listen: str | None = None) -> list[str]:
    """The gunicorn command line serving :data:`APP` for ``[api]``."""
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", bind_address(listen or api.listen, api.port),
        "--workers", str(api.workers),
        "--worker-class", "gthread",
        "--threads", str(THREADS),
        "--timeout", str(WORKER_TIMEOUT),
        "--name", "astara-api",
    ]
    if _has_control_socket():
        # gunicorn ≥ 25.1 opens one at a default path shared by every instance on the host.
        argv.append("--no-control-socket")
    return [*argv, APP]


def run_api(config_path: str | os.PathLike[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start gunicorn serving the API for this config file; ``popen`` goes to ``Popen``.

    Raises :class:`~astara_actors.errors.SettingsError` for a bad file and
    :class:`ApiStartError` when the address cannot be bound.
    """
    path = Path(config_path).resolve()
    config = load_config(path)
    listen = check_listen(config.api.listen, config.api.port)
    env = {**os.environ, **popen.pop("env", {}), CONFIG_ENV: str(path)}
    argv = gunicorn_command(config.api, listen)
    LOG.info("starting the HTTP API on %s", bind_address(listen, config.api.port))
    return subprocess.Popen(argv, env=env, **popen)


def main(argv: list[str] | None = None) -> int:
    from docopt import docopt

    args = docopt(__doc__, argv=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
