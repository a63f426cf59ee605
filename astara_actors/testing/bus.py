"""Helpers for the bus tests: per-test names on a real RabbitMQ, a RabbitMQ node of a test's
own, a recording handler, notifications to send, and bus peers in other OS processes.

The RabbitMQ fixtures themselves (``rabbit``, ``vhost``, ``private_rabbit``, ``memory_bus``) are
in ``tests/conftest.py``: they skip locally and FAIL under ``CI=true`` when RabbitMQ is missing.
A test that stops or restarts the broker runs a node of its own (:class:`PrivateRabbit`), never
the shared one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import kombu.transport.memory

from astara_actors.bus import BusSettings, connect, notification_envelope, publish
from astara_actors.bus.consumer import notifications_exchange
from astara_actors.testing.net import free_port
from astara_actors.testing.services import RABBIT_URL
from astara_actors.testing.waiting import WAIT, wait_for

__all__ = [
    "RABBIT_URL",
    "Peer",
    "PrivateRabbit",
    "Rabbit",
    "Recorder",
    "get_raw",
    "message_id",
    "notification",
    "rabbit_bin",
    "rabbit_reachable",
    "rabbitmqctl",
    "reset_memory_bus",
    "send",
]


def rabbit_reachable(url: str = RABBIT_URL) -> str | None:
    """None when RabbitMQ at ``url`` accepts a connection, else the reason."""
    conn = kombu.Connection(url, connect_timeout=2)
    try:
        conn.ensure_connection(max_retries=0)
        return None
    except Exception as exc:
        return f"RabbitMQ at {conn.as_uri()} is unreachable: {exc}"
    finally:
        conn.release()


def message_id(body: bytes) -> str:
    """The oslo ``message_id`` of a v2 envelope (or the raw text of anything else)."""
    try:
        return str(json.loads(json.loads(body)["oslo.message"])["message_id"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")


def notification(n: str) -> str:
    """A Neutron-like notification whose oslo message_id is ``n``."""
    ids: Iterator[Any] = iter([n, uuid.uuid4()])
    return notification_envelope(
        "router.update.end",
        {"router": {"id": n}},
        publisher_id="network.test",
        new_id=lambda: next(ids),
    )


def send(settings: BusSettings, *bodies: str, conn: kombu.Connection | None = None) -> None:
    """Publish ``bodies`` on the notifications exchange of ``settings`` (on ``conn`` if given)."""
    target = connect(settings) if conn is None else conn
    for body in bodies:
        publish(
            target,
            body,
            exchange=notifications_exchange(settings),
            routing_key=settings.notifications_routing_key,
            max_retries=10,
        )
    if conn is None:
        target.release()


class Rabbit:
    """Per-test names on a real RabbitMQ, and the clean-up of what the test declared."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.uid = uuid.uuid4().hex[:10]
        self.exchanges: set[str] = set()
        self.queues: set[str] = set()

    def settings(self, **overrides: Any) -> BusSettings:
        values: dict[str, Any] = {
            "transport_url": self.url,
            "host": f"test-{self.uid}",
            "notifications_exchange": f"test.neutron.{self.uid}",
            "queue_name": f"test.astara.notifications.{self.uid}",
            "control_exchange": f"test.astara.control.{self.uid}",
            "dead_letter_exchange": f"test.astara.dead.{self.uid}",
        }
        values.update(overrides)
        settings = BusSettings(**values)
        self.exchanges |= {settings.notifications_exchange, settings.control_exchange}
        self.queues.add(settings.queue_name)
        if settings.dead_letter_exchange:  # the exchange and its queue of the same name
            self.exchanges.add(settings.dead_letter_exchange)
            self.queues.add(settings.dead_letter_exchange)
        return settings

    def queue_depth(self, name: str) -> int:
        with kombu.Connection(self.url) as conn:
            return int(conn.default_channel.queue_declare(queue=name, passive=True).message_count)

    def cleanup(self) -> None:
        with kombu.Connection(self.url) as conn:
            for name in self.queues:
                _delete(conn, "queue_delete", name)
            for name in self.exchanges:
                _delete(conn, "exchange_delete", name)


def get_raw(conn: kombu.Connection, queue: kombu.Queue, timeout: float = WAIT) -> kombu.Message:
    """The next message of ``queue``, body left undecoded (waits on the connection)."""
    got: list[kombu.Message] = []
    with kombu.Consumer(conn.default_channel, [queue], on_message=got.append, no_ack=True):
        conn.drain_events(timeout=timeout)
    return got[0]


def _delete(conn: kombu.Connection, method: str, name: str) -> None:
    try:
        getattr(conn.channel(), method)(name)
    except Exception:
        pass  # already gone


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def rabbit_bin(name: str) -> str | None:
    """A RabbitMQ script: the script itself, not Debian's /usr/sbin wrapper (which, run as root,
    switches to the rabbitmq user and its home: the shared node's cookie and directories)."""
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else shutil.which(name)


class PrivateRabbit:
    """A RabbitMQ node of the test's own, which it may stop and start: its node name
    (``astara-test-<id>@localhost``), AMQP and distribution ports, data, logs, empty plugin
    list and Erlang cookie (``HOME``) all under ``base``. The shared broker is never touched."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.node = f"astara-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.pid_file = base / "rabbit.pid"
        (base / "home").mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        ctl = rabbit_bin("rabbitmqctl")
        assert ctl is not None
        subprocess.run(
            [ctl, "-n", self.node, *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        server = rabbit_bin("rabbitmq-server")
        assert server is not None
        subprocess.run(
            [server, "-detached"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
            cwd=self.base,
        )
        self._ctl("wait", str(self.pid_file), "--timeout", "60")  # until it serves AMQP

    def stop(self) -> None:
        self._ctl("stop", str(self.pid_file))  # returns once the node's process has exited

    def close(self) -> None:
        """Stop the node if it runs (killing its own process if it will not stop)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            self.stop()
        except (OSError, subprocess.SubprocessError):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted((self.base / "log").glob("*.log"))
        if not logs:
            return "(no log)"
        return "\n".join(logs[0].read_text(errors="replace").splitlines()[-lines:])


def reset_memory_bus() -> None:
    """Empty kombu's memory transport (it keeps its queues on classes, across tests)."""
    kombu.transport.memory.Channel.queues.clear()
    kombu.transport.memory.Channel.events.clear()
    kombu.transport.memory.Transport.global_state.clear()


class Recorder:
    """A handler that records what it got and lets tests wait for it; may raise on demand."""

    def __init__(self, raise_for: Callable[[bytes], BaseException | None] = lambda _: None) -> None:
        self.bodies: list[bytes] = []
        self.tags: list[str | int] = []
        self._raise_for = raise_for
        self._changed = threading.Condition()

    def __call__(self, body: bytes, delivery_tag: str | int) -> None:
        with self._changed:
            self.bodies.append(body)
            self.tags.append(delivery_tag)
            self._changed.notify_all()
        error = self._raise_for(body)
        if error is not None:
            raise error

    def ids(self) -> list[str]:
        with self._changed:
            return [message_id(b) for b in self.bodies]

    def wait_for(
        self, predicate: Callable[[Recorder], bool], what: str = "", timeout: float = WAIT
    ) -> None:
        """Until ``predicate(self)`` holds, re-checked at every message recorded."""

        def holds() -> bool:
            with self._changed:
                return predicate(self)

        wait_for(holds, what, timeout, condition=self._changed)


class Peer:
    """A bus peer in another OS process (``python -m astara_actors.testing.bus_peer``)."""

    def __init__(self, role: str, settings: BusSettings, *args: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "astara_actors.testing.bus_peer",
                role,
                json.dumps(dataclasses.asdict(settings)),
                *args,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<eof>")

    def expect(self, prefix: str) -> str:
        """The next output line starting with ``prefix`` (waits on the pipe, at most WAIT)."""
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"peer printed no {prefix!r} within {WAIT} s") from None
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            if line == "<eof>":
                raise AssertionError(f"peer exited ({self.proc.wait()}) before {prefix!r}")

    def close(self) -> int:
        """Close stdin (the peer stops cleanly) and wait for its exit code."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(WAIT)
