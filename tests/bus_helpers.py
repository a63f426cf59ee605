"""Shared helpers for the bus tests: RabbitMQ fixture bodies (each test module wraps them in
``@pytest.fixture``), a recording handler, peer processes.

RabbitMQ tests use ``ASTARA_TEST_RABBIT_URL`` (default the local guest account) and unique
exchange/queue names per test, deleted afterwards. When RabbitMQ is unreachable they skip
locally and FAIL when ``CI=true``. A test that stops or restarts the broker runs a node of its
own (:class:`PrivateRabbit`): never the shared one.

Run as ``python -m tests.bus_helpers ROLE SETTINGS_JSON`` this module is a peer process for the
cross-process tests (roles: consume, serve, command); it prints ``ready`` once consuming and
stops cleanly when its stdin is closed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
import kombu.transport.memory
import pytest

from astara_actors.bus import BusSettings, ControlClient, NotificationConsumer, QueryServer

RABBIT_URL = os.environ.get("ASTARA_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672//")
ROOT = Path(__file__).resolve().parent.parent
# Every wait is on an event or a condition; this bound only turns a hang into a failure.
WAIT = 15.0


def unavailable(reason: str) -> None:
    """Fail under CI (where the broker must be there), skip on a developer's machine."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


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
                _ignore(lambda n=name: conn.channel().queue_delete(n))
            for name in self.exchanges:
                _ignore(lambda n=name: conn.channel().exchange_delete(n))


def get_raw(conn: kombu.Connection, queue: kombu.Queue, timeout: float = WAIT) -> kombu.Message:
    """The next message of ``queue``, body left undecoded (waits on the connection)."""
    got: list[kombu.Message] = []
    with kombu.Consumer(conn.default_channel, [queue], on_message=got.append, no_ack=True):
        conn.drain_events(timeout=timeout)
    return got[0]


def _ignore(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception:
        pass  # already gone


def rabbit_names() -> Iterator[Rabbit]:
    """Fixture body: unique names on the real RabbitMQ, deleted afterwards."""
    reason = rabbit_reachable()
    if reason:
        unavailable(reason)
    r = Rabbit(RABBIT_URL)
    yield r
    r.cleanup()


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def rabbit_vhost() -> Iterator[Rabbit]:
    """Fixture body: a throwaway vhost, so a test may close every connection in it from the broker side."""
    reason = rabbit_reachable()
    if reason:
        unavailable(reason)
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not installed")
    name = f"astara-test-{uuid.uuid4().hex[:10]}"
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot create a RabbitMQ vhost: {exc}")
    yield Rabbit(urlunsplit(urlsplit(RABBIT_URL)._replace(path=f"/{name}")))
    rabbitmqctl("delete_vhost", name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rabbit_bin(name: str) -> str | None:
    # The scripts themselves, not Debian's /usr/sbin wrapper (which, run as root, switches to
    # the rabbitmq user and its home: the shared node's cookie and directories).
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
        ctl = _rabbit_bin("rabbitmqctl")
        assert ctl is not None
        subprocess.run([ctl, "-n", self.node, *args], env=self.env, check=True,
                       capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        server = _rabbit_bin("rabbitmq-server")
        assert server is not None
        subprocess.run([server, "-detached"], env=self.env, check=True, capture_output=True,
                       timeout=60, cwd=self.base)
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


def private_rabbit(base: Path) -> Iterator[PrivateRabbit]:
    """Fixture body: a RabbitMQ node of the test's own, started (skips locally, FAILS under
    ``CI=true`` when RabbitMQ is not installed or will not start)."""
    if _rabbit_bin("rabbitmq-server") is None or _rabbit_bin("rabbitmqctl") is None:
        unavailable("rabbitmq-server is not installed")
    node = PrivateRabbit(base)
    try:
        node.start()
    except (OSError, subprocess.SubprocessError) as exc:
        tail = node.log_tail()
        node.close()
        unavailable(f"a private RabbitMQ node did not start: {exc}\n{tail}")
    try:
        yield node
    finally:
        node.close()


def fresh_memory_bus() -> Iterator[None]:
    """Fixture body: kombu's memory transport keeps its queues on classes: start and end each test empty."""
    _reset_memory()
    yield
    _reset_memory()


def _reset_memory() -> None:
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

    def wait_for(self, predicate: Callable[[Recorder], bool], what: str = "") -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), WAIT):
                raise AssertionError(f"timed out after {WAIT} s waiting for {what or predicate}")


class Peer:
    """A bus peer in another OS process (``python -m tests.bus_helpers``)."""

    def __init__(self, role: str, settings: BusSettings, *args: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bus_helpers", role,
             json.dumps(dataclasses.asdict(settings)), *args],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
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
                return line[len(prefix):].strip()
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


def _main(role: str, settings_json: str, *args: str) -> int:
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
    sys.exit(_main(*sys.argv[1:]))
