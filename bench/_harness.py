"""The processes the scenarios run: ``astara-sim`` and ``astara-orchestrator``, each from an ini
file, on their own RabbitMQ exchanges, talked to only through files, the bus, HTTP and /proc.

Nothing here reaches into the orchestrator's internals: what it did is read from the simulator's
trace (``/sim/trace``: probe, push, boot, delete and notification times), its control protocol
(the bus and the HTTP API) and ``/proc/<pid>`` (CPU ticks, VmRSS, threads).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from astara_actors.bus import BusSettings, ControlClient

ROOT = Path(__file__).resolve().parent.parent
# The source tree the orchestrator runs from (the simulator always runs from this one): set
# ASTARA_BENCH_SOURCE to another checkout (e.g. `git archive HEAD | tar -x -C /tmp/head`) to
# compare two versions of the orchestrator against the same simulator.
SOURCE = Path(os.environ.get("ASTARA_BENCH_SOURCE") or ROOT).resolve()
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- small helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FD_WANTED = 262_144  # the simulator listens on a socket per appliance: 50,000 and more


def raise_fd_limit(wanted: int = FD_WANTED) -> tuple[int, int]:
    """RLIMIT_NOFILE up to ``wanted`` (children inherit it): the hard limit too where we may
    (root), else the soft one up to the hard limit. Without it a simulator of 50,000 routers
    stops at the 20,000 open files a process gets by default here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        except (ValueError, OSError):
            pass  # not allowed to raise the hard limit: the soft one below
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """``predicate()``'s first truthy value, or None once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


@dataclass(frozen=True)
class ProcSample:
    """One look at ``/proc/<pid>``: CPU seconds used so far (user + system), RSS, threads."""

    at: float  # time.monotonic()
    cpu_s: float
    rss_kib: int
    threads: int


def proc_sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return ProcSample(time.monotonic(), cpu, rss, threads)


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    """CPU used between two samples, in % of one core."""
    return 100.0 * (after.cpu_s - before.cpu_s) / max(1e-9, after.at - before.at)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the API's gunicorn, for example)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


# ---------------------------------------------------------------------------- the bus
@dataclass
class Bus:
    """Exchanges and queue names of one benchmark run on the shared RabbitMQ (never the defaults,
    so that tests and other runs on the same broker see nothing of it)."""

    url: str = RABBIT_URL
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def notifications_exchange(self) -> str:
        return f"bench.neutron.{self.uid}"

    @property
    def control_exchange(self) -> str:
        return f"bench.control.{self.uid}"

    def queue(self, host: str) -> str:
        return f"bench.notifications.{self.uid}.{host}"

    def settings(self, host: str = "bench-client") -> BusSettings:
        return BusSettings(
            transport_url=self.url,
            host=host,
            notifications_exchange=self.notifications_exchange,
            control_exchange=self.control_exchange,
            queue_name=self.queue(host),
        )

    def client(self) -> ControlClient:
        return ControlClient(self.settings(f"bench-{self.uid}"))

    def cleanup(self, hosts: Iterable[str] = ()) -> None:
        import kombu

        try:
            with kombu.Connection(self.url, connect_timeout=5) as conn:
                for name in [self.queue(h) for h in hosts]:
                    try:
                        conn.channel().queue_delete(name)
                    except Exception:
                        pass
                for name in (self.notifications_exchange, self.control_exchange):
                    try:
                        conn.channel().exchange_delete(name)
                    except Exception:
                        pass
        except Exception as exc:  # the broker is not ours to fail on at the very end
            log(f"bus cleanup: {exc}")


# ---------------------------------------------------------------------------- astara-sim
class Sim:
    """``astara-sim`` in its own process with ``routers`` routers (``tenants`` tenants)."""

    def __init__(
        self,
        workdir: Path,
        bus: Bus,
        *,
        routers: int,
        routers_per_tenant: int = 100,
        boot_delay: float = 1.0,
        delete_delay: float = 0.5,
        trace_maxlen: int = 400_000,
        **extra: Any,
    ) -> None:
        self.workdir = workdir
        self.bus = bus
        self.port = free_port()
        # A management /16 and an appliance port of our own: tests running at the same time
        # use 127.100.0.0/16 and port 5000.
        self.management_cidr = f"127.{random.randrange(101, 250)}.0.0/16"
        self.appliance_port = free_port()
        per_tenant = max(1, min(routers_per_tenant, routers)) if routers else 0
        self.tenants = -(-routers // per_tenant) if routers else 1
        self.routers_per_tenant = per_tenant
        self.routers_wanted = routers
        self.trace_maxlen = trace_maxlen
        self.settings = {
            "port": self.port,
            "tenants": self.tenants,
            "routers_per_tenant": per_tenant,
            "boot_delay": boot_delay,
            "delete_delay": delete_delay,
            "management_cidr": self.management_cidr,
            "appliance_port": self.appliance_port,
            "transport_url": bus.url,
            "notifications_exchange": bus.notifications_exchange,
            "seed": 1,
            **extra,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.status_cache: dict[str, Any] = {}
        self._http = requests.Session()
        self._http.trust_env = False
        self._token: str | None = None
        self._dropped = 0

    def start(self, timeout: float = 900.0) -> Sim:
        ini = self.workdir / "sim.ini"
        ini.write_text("[sim]\n" + "".join(f"{k} = {v}\n" for k, v in self.settings.items()))
        log(
            f"astara-sim: {self.tenants} tenants x {self.routers_per_tenant} routers "
            f"(management {self.management_cidr}, appliances on port {self.appliance_port})"
        )
        # SIGUSR1 writes every thread's stack to sim.log (a simulator that stops answering).
        boot = (
            "import faulthandler, signal, sys; "
            "faulthandler.register(signal.SIGUSR1, all_threads=True); "
            "from astara_actors.sim.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot, "--config-file", str(ini)],
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "sim.log", "w"),
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(
            target=lambda: box.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        if not box or "serving on" not in box[0]:
            self.stop()
            raise RuntimeError(f"astara-sim did not start: {box[:1]} (see {self.workdir}/sim.log)")
        self.set_trace(maxlen=self.trace_maxlen)
        self.status_cache = self.status()
        # Trim the tenant overshoot (tenants x per tenant >= routers): nothing to do, the
        # scenarios read the router count from Neutron.
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # --- /sim
    def get(self, path: str, attempts: int = 8, **params: Any) -> Any:
        """GET ``path`` as JSON; a simulator swamped by the orchestrator may not accept or answer
        for a while: retried (``attempts`` × up to 60 s) before giving up."""
        for attempt in range(1, attempts + 1):
            try:
                answer = self._http.get(f"{self.url}{path}", params=params, timeout=(30, 60))
                answer.raise_for_status()
                return answer.json()
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == attempts or self.proc is None or self.proc.poll() is not None:
                    raise
                log(f"the simulator did not answer {path} ({type(exc).__name__}); retrying")
                time.sleep(min(10.0, attempt * 2.0))
        raise AssertionError("unreachable")

    def status(self) -> dict[str, Any]:
        return dict(self.get("/sim"))

    def post(self, path: str) -> Any:
        answer = self._http.post(f"{self.url}{path}", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def boot_vms(self, timeout: float = 600.0) -> int:
        """A VM per router, as a previous orchestrator run leaves them (unconfigured appliances);
        returns how many appliances listen once they are ACTIVE (or the timeout passed)."""
        answer = self._http.post(f"{self.url}/sim/vms", timeout=timeout)
        answer.raise_for_status()
        wanted = len(self.router_ids())
        got = wait_until(
            lambda: (lambda n: n if n >= wanted else 0)(self.status()["appliances"]["agents"]),
            timeout,
            0.5,
        )
        return int(got or self.status()["appliances"]["agents"])

    def set_trace(self, **settings: Any) -> dict[str, Any]:
        answer = self._http.put(f"{self.url}/sim/trace", json=settings, timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def clear_trace(self) -> None:
        self._http.delete(f"{self.url}/sim/trace", timeout=30).raise_for_status()

    def trace(
        self,
        since: float = 0.0,
        kinds: Iterable[str] = (),
        router: str = "",
        until: float | None = None,
    ) -> list[tuple[float, str, str, str, str]]:
        """``(time, kind, router, server, detail)`` events the simulator recorded."""
        params: dict[str, Any] = {"since": repr(since), "kinds": ",".join(kinds)}
        if router:
            params["router"] = router
        if until is not None:
            params["until"] = repr(until)
        got = self.get("/sim/trace", **params)
        if got.get("dropped", 0) > self._dropped:
            self._dropped = got["dropped"]
            log(
                f"warning: the simulator's trace dropped {got['dropped']} old events "
                f"(maxlen {got['maxlen']})"
            )
        return [tuple(e) for e in got["events"]]  # type: ignore[misc]

    def trace_summary(
        self, since: float, until: float | None = None, kinds: Iterable[str] = ()
    ) -> dict[str, dict[str, int]]:
        params: dict[str, Any] = {"since": repr(since), "kinds": ",".join(kinds), "summary": "1"}
        if until is not None:
            params["until"] = repr(until)
        return dict(self.get("/sim/trace", **params)["summary"])

    # --- the OpenStack APIs, as an admin with a plain HTTP client
    def token(self) -> str:
        if self._token is None:
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "admin",
                                "domain": {"name": "Default"},
                                "password": "admin-secret",
                            }
                        },
                    },
                    "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
                }
            }
            answer = self._http.post(f"{self.url}/identity/v3/auth/tokens", json=body, timeout=30)
            answer.raise_for_status()
            self._token = answer.headers["X-Subject-Token"]
        return self._token

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        session: requests.Session | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One Neutron/Nova request as admin (``path`` under the simulator's base URL)."""
        http = session or self._http
        answer = http.request(
            method,
            f"{self.url}{path}",
            json=body,
            params=params,
            headers={"X-Auth-Token": self.token()},
            timeout=60,
        )
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def router_ids(self) -> list[str]:
        return [
            r["id"]
            for r in self.api("GET", "/network/v2.0/routers", params={"fields": "id"})["routers"]
        ]

    def servers(self) -> list[dict[str, Any]]:
        """Every server (admin, all projects), each with ``id``, ``name``, ``status``,
        ``addresses``."""
        out: list[dict[str, Any]] = []
        marker = None
        while True:
            params: dict[str, Any] = {"all_tenants": 1, "limit": 1000}
            if marker:
                params["marker"] = marker
            page = self.api("GET", "/compute/v2.1/servers/detail", params=params)["servers"]
            out.extend(page)
            if len(page) < 1000:
                return out
            marker = page[-1]["id"]

    def management_addresses(self) -> dict[str, str]:
        """Router id -> the management address of its (first ACTIVE) VM."""
        prefix = self.management_cidr.split(".0.0/")[0] + "."
        out: dict[str, str] = {}
        for server in self.servers():
            if server["status"] != "ACTIVE" or not server["name"].startswith("ak-router-"):
                continue
            router = server["name"][len("ak-router-") :].rsplit("_", 1)[0]
            for addrs in server["addresses"].values():
                for a in addrs:
                    if a["addr"].startswith(prefix):
                        out.setdefault(router, a["addr"])
        return out


# ---------------------------------------------------------------------------- the orchestrator
class Orchestrator:
    """``astara-orchestrator --config-file <ini>`` against ``sim`` on ``bus``.

    ``settings`` go into ``[orchestrator]`` (anything etc/orchestrator.ini documents); the
    defaults are the file's own defaults but for the identity of the cloud and the bus.
    """

    def __init__(
        self,
        workdir: Path,
        sim: Sim,
        bus: Bus,
        *,
        name: str = "bench",
        api: bool = False,
        settings: dict[str, Any] | None = None,
        cloud: dict[str, Any] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.sim = sim
        self.bus = bus
        self.name = name
        self.host = f"{name}-{bus.uid}"
        self.api_port = free_port() if api else 0
        self.settings = dict(settings or {})
        self.cloud = dict(cloud or {})  # extra [cloud] keys (e.g. status_mode)
        self.sections = dict(sections or {})  # other sections, e.g. {"spares": {"pool_size": 5}}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_wall = 0.0
        self.started_mono = 0.0
        self.log_path = workdir / f"{name}.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def ini(self) -> Path:
        status = self.sim.status_cache or self.sim.status()
        values = {
            "host": self.host,
            "state_dir": str(self.workdir / f"{self.name}-state"),
            "management_network_id": status["management_network_id"],
            "management_subnet_id": status["management_subnet_id"],
            "router_image_id": "astara-appliance",
            "router_flavor_id": "astara-router",
            "appliance_port": self.sim.appliance_port,
            "log_level": "INFO",
            **self.settings,
        }
        path = self.workdir / f"{self.name}.ini"
        path.write_text(
            "[orchestrator]\n"
            + "".join(f"{k} = {v}\n" for k, v in values.items())
            + f"[cloud]\nauth_url = {self.sim.url}/identity/v3\nusername = admin\n"
            "password = admin-secret\nproject_name = admin\n"
            + "".join(f"{k} = {v}\n" for k, v in self.cloud.items())
            + f"[bus]\ntransport_url = {self.bus.url}\n"
            f"notifications_exchange = {self.bus.notifications_exchange}\n"
            f"control_exchange = {self.bus.control_exchange}\n"
            f"queue_name = {self.bus.queue(self.host)}\n"
            f"[api]\nenabled = {'true' if self.api_port else 'false'}\nlisten = 127.0.0.1\n"
            f"port = {self.api_port or 44250}\nworkers = 1\ntimeout = 30\n"
            + "".join(
                f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                for name, keys in self.sections.items()
            )
        )
        return path

    def start(self) -> Orchestrator:
        ini = self.ini()
        self.started_wall, self.started_mono = time.time(), time.monotonic()
        env = dict(os.environ)
        if SOURCE != ROOT:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "astara_actors.daemon", "--config-file", str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "a"),
            cwd=SOURCE,
            env=env,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> ProcSample:
        return proc_sample(self.pid)

    def wait_answering(self, client: ControlClient, timeout: float = 120.0) -> float | None:
        """Seconds from start until the orchestrator answered a ``workers`` query on the bus."""

        def answered() -> float | None:
            if not self.alive():
                raise RuntimeError(
                    f"the orchestrator exited ({self.proc.returncode if self.proc else '?'}); "
                    f"see {self.log_path}"
                )
            try:
                client.ask({"query": "workers"}, timeout=5, expect=1)
            except Exception:
                return None
            return time.monotonic() - self.started_mono

        return wait_until(answered, timeout, 0.2)

    def wait_api(self, timeout: float = 60.0) -> bool:
        def up() -> bool:
            try:
                return requests.get(f"{self.api_url}/healthz", timeout=10).status_code == 200
            except requests.RequestException:
                return False

        return bool(wait_until(up, timeout, 0.3))

    def stop(self, timeout: float = 120.0) -> float:
        """SIGTERM, then SIGKILL after ``timeout``; seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"the orchestrator did not stop within {timeout:.0f} s: SIGKILL")
            for child in children(self.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - started

    def errors(self, limit: int = 5) -> list[str]:
        """The last ERROR/CRITICAL lines of its log (shown when a scenario falls short)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln for ln in lines if " ERROR " in ln or " CRITICAL " in ln or "Traceback" in ln][
            -limit:
        ]


# ---------------------------------------------------------------------------- a deployment
class Deployment:
    """A simulator with N routers and one orchestrator, in a temporary directory."""

    def __init__(
        self,
        routers: int,
        *,
        settings: dict[str, Any] | None = None,
        api: bool = False,
        boot_delay: float = 1.0,
        keep: bool = False,
        cloud: dict[str, Any] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
        **sim: Any,
    ) -> None:
        raise_fd_limit()
        self.bus = Bus()
        # ASTARA_BENCH_KEEP=1: the working directory (ini files, the processes' logs) is kept
        keep = keep or os.environ.get("ASTARA_BENCH_KEEP", "") not in ("", "0")
        self._tmp = tempfile.TemporaryDirectory(prefix="astara-bench-") if not keep else None
        self.workdir = (
            Path(self._tmp.name) if self._tmp else Path(tempfile.mkdtemp(prefix="astara-bench-"))
        )
        if keep:
            log(f"keeping {self.workdir} (logs and ini files)")
        self.routers = routers
        self.sim = Sim(self.workdir, self.bus, routers=routers, boot_delay=boot_delay, **sim)
        self.settings = dict(settings or {})
        self.cloud = dict(cloud or {})
        self.sections = dict(sections or {})
        self.api = api
        self.orchestrator: Orchestrator | None = None
        self.client: ControlClient | None = None
        self._hosts: list[str] = []
        self._generation = 0
        self._addresses: dict[str, str] | None = None
        self._servers: dict[str, set[str]] | None = None

    def start_sim(self) -> Deployment:
        started = time.monotonic()
        self.sim.start()
        self.router_ids = self.sim.router_ids()
        log(
            f"astara-sim up with {len(self.router_ids)} routers "
            f"in {time.monotonic() - started:.1f} s"
        )
        self.client = self.bus.client()
        return self

    def addresses(self, refresh: bool = False) -> dict[str, str]:
        """Router id -> management address of its VM, cached: read from Nova while the simulator
        is idle (after the VMs are booted), not while an orchestrator loads it."""
        if refresh or self._addresses is None:
            self._addresses = self.sim.management_addresses()
        return dict(self._addresses)

    def servers_of(self, refresh: bool = False) -> dict[str, set[str]]:
        """Router id -> ids of its VMs (cached like :meth:`addresses`)."""
        if refresh or self._servers is None:
            out: dict[str, set[str]] = {}
            for server in self.sim.servers():
                if server["name"].startswith("ak-router-"):
                    out.setdefault(
                        server["name"][len("ak-router-") :].rsplit("_", 1)[0], set()
                    ).add(server["id"])
            self._servers = out
        return {k: set(v) for k, v in self._servers.items()}

    def new_orchestrator(self, *, restart: bool = False, **overrides: Any) -> Orchestrator:
        """A new orchestrator process; ``restart``: the same host (name, state directory) as
        the last one, as an operator restarts the service."""
        if not restart or self.orchestrator is None:
            self._generation += 1
        settings = {**self.settings, **overrides}
        orch = Orchestrator(
            self.workdir,
            self.sim,
            self.bus,
            name=f"orch{self._generation}",
            api=self.api,
            settings=settings,
            cloud=self.cloud,
            sections=self.sections,
        )
        if orch.host not in self._hosts:
            self._hosts.append(orch.host)
        self.orchestrator = orch
        return orch

    def close(self) -> None:
        if self.orchestrator is not None:
            self.orchestrator.stop()
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        self.sim.stop()
        self.bus.cleanup(self._hosts)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- watching the simulator
    def watch(self, since: float, kinds: Iterable[str], **kw: Any) -> Watch:
        return Watch(self.sim, since, kinds, **kw)


class Watch:
    """Per router, the first trace event of ``kinds`` at or after ``since`` (unix time), read
    incrementally from the simulator; ``accept(event)`` may refuse some (e.g. an old server)."""

    def __init__(
        self,
        sim: Sim,
        since: float,
        kinds: Iterable[str],
        accept: Callable[[tuple[float, str, str, str, str]], bool] | None = None,
    ) -> None:
        self.sim = sim
        self.since = since
        self.kinds = tuple(kinds)
        self.accept = accept
        self.first: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._cursor = since
        self._seen: set[tuple[float, str, str, str, str]] = set()

    def poll(self) -> Watch:
        events = self.sim.trace(since=self._cursor, kinds=self.kinds)
        edge = {e for e in events if e[0] == self._cursor}
        for e in events:
            if e in self._seen or (self.accept is not None and not self.accept(e)):
                continue
            self.first.setdefault(e[2], e[0])
            self.counts[e[2]] = self.counts.get(e[2], 0) + 1
        if events:
            self._cursor = events[-1][0]
            self._seen = {e for e in events if e[0] == self._cursor} | (edge if edge else set())
        return self

    def wait_all(
        self,
        routers: Iterable[str],
        timeout: float,
        label: str,
        alive: Callable[[], bool] = lambda: True,
        interval: float = 1.0,
    ) -> bool:
        """Poll until every router of ``routers`` has its event, the timeout passed, or
        ``alive()`` turned false; logs progress every 10 s. True if all arrived."""
        want = set(routers)
        deadline = time.monotonic() + timeout
        last_log = time.monotonic()
        while True:
            self.poll()
            got = len(want & self.first.keys())
            if got == len(want):
                log(f"{label}: {got}/{len(want)} after {time.time() - self.since:.1f} s")
                return True
            if time.monotonic() >= deadline or not alive():
                log(
                    f"{label}: only {got}/{len(want)} after {time.time() - self.since:.1f} s "
                    f"({'timeout' if alive() else 'the orchestrator exited'})"
                )
                return False
            if time.monotonic() - last_log >= 10:
                log(f"{label}: {got}/{len(want)} after {time.time() - self.since:.0f} s")
                last_log = time.monotonic()
            time.sleep(interval)

    def delays(
        self, routers: Iterable[str], start: dict[str, float] | float | None = None
    ) -> list[float]:
        """Seconds from ``start`` (per router, or one time; default ``since``) to each router's
        first event, for the routers that have one."""
        out = []
        for r in routers:
            if r in self.first:
                t0 = (
                    start.get(r)
                    if isinstance(start, dict)
                    else (self.since if start is None else start)
                )
                if t0 is not None:
                    out.append(self.first[r] - t0)
        return out


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
