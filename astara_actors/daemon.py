"""astara-orchestrator: keep every Neutron router backed by a healthy, configured service VM.

Usage:
  astara-orchestrator [--config-file=FILE] [--debug]
  astara-orchestrator (-h | --help | --version)

Options:
  --config-file=FILE  The configuration file [default: /etc/astara/orchestrator.ini].
  --debug             Log at DEBUG (overrides [orchestrator] log_level).
  -h --help           Show this help.
  --version           Show the version.

Signals: SIGTERM/SIGINT stop (API, inbox, actors, in that order); SIGHUP re-reads the file;
SIGUSR1 writes every thread's stack to the log.
"""

from __future__ import annotations

import dataclasses
import errno
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from docopt import docopt

from astara_actors.config.loader import Config, load_config
from astara_actors.errors import AstaraError, SettingsError
from astara_actors.log import install as safe_logs

if TYPE_CHECKING:  # the parts are imported when started: ``--help`` must not load pykka & co.
    import os
    import subprocess
    from collections.abc import Callable

    from astara_actors.actors.bus_bridge import BusBridge
    from astara_actors.actors.runtime import Runtime
    from astara_actors.adapters.appliance_http import HttpAppliance
    from astara_actors.adapters.cluster import Coordinator
    from astara_actors.config.cloud import CloudSettings
    from astara_actors.config.settings import Settings
    from astara_actors.core.ports import Compute, Network
    from astara_actors.core.service_port import ServicePort
    from astara_actors.jobs.orphan_sweep import OrphanSweeper, SweepListing
    from astara_actors.metadata import MetadataProxy
    from astara_actors.sim.server import SimServer

    RunApi = Callable[[str | os.PathLike[str]], subprocess.Popen[Any]]

__all__ = ["Service", "main"]

LOG = logging.getLogger("astara_actors.orchestrator")
# Longest pause of the garbage collector at a cold start: the seeds' age, at most this long
# (a start that pushes every config, e.g. after a crash at 50,000 routers, takes ten minutes).
COLD_START_GC_CAP = 120.0
COLD_START_GC_MAX = 300.0
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s [%(threadName)s] %(message)s"


class Service:
    """The orchestrator of one process: started in dependency order, stopped in reverse."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sim: SimServer | None = None
        self.runtime: Runtime | None = None
        self.inbox: BusBridge | None = None
        self.api: subprocess.Popen[Any] | None = None  # the gunicorn process
        self.appliance: HttpAppliance | None = None
        self.coordinator: Coordinator | None = None
        self.metadata: MetadataProxy | None = None
        self.service_port: ServicePort | None = None  # ours, unless the address is configured
        self.stopping = threading.Event()
        self._populated = threading.Event()
        self._gc_pause: Any = None  # a cold start's CollectionPause, while it may be paused

    def start(self) -> Service:
        from astara_actors.actors.bus_bridge import BusBridge
        from astara_actors.actors.runtime import Runtime
        from astara_actors.adapters.appliance_http import HttpAppliance
        from astara_actors.adapters.openstack import open_cloud

        config = self.config
        Path(config.process.state_dir).mkdir(parents=True, exist_ok=True)
        settings, cloud = config.settings, config.cloud
        if config.process.embedded_sim:
            settings, cloud = self._start_sim()
        assert cloud is not None
        # One kept connection per actor worker that may call at once: no connection churn.
        network, compute = open_cloud(cloud, pool_size=max(64, settings.actor_threads_max))
        settings = self._management_port(settings, network)
        self.appliance = HttpAppliance(port=settings.appliance_port)
        from astara_actors.store import Store
        from astara_actors.store.flags import restore_debug

        store = Store(config.database_url)
        store.upgrade()  # the schema is always current before anything reads it
        owns = claim = release = None
        if config.coordination.enabled:
            from astara_actors.adapters.cluster import Coordinator

            c = config.coordination
            self.coordinator = Coordinator(
                c.url,
                settings.host,
                c.group,
                heartbeat=c.heartbeat,
                on_change=lambda members: self._members_changed(members, network, compute),
            )
            owns = self.coordinator.owns
            claim, release = self.coordinator.claim, self.coordinator.release
        self.runtime = Runtime(
            settings,
            network=network,
            compute=compute,
            appliance=self.appliance,
            owns=owns,
            claim=claim,
            release=release,
            spares=config.spares,
        ).start()
        if self.coordinator is not None:
            self.coordinator.start()
        restore_debug(store, self.runtime.tell)
        # The cold start's read of the cloud (seconds at 10,000 routers) goes on while the bus,
        # the API and the metadata proxy start: the routers' debug flags are restored already.
        threading.Thread(
            target=self._populate, args=(network, compute), name="populate", daemon=True
        ).start()
        cluster = None
        if self.coordinator is not None:
            coordinator = self.coordinator
            cluster = lambda: {
                "member": settings.host,  # noqa: E731 - a tiny view
                "members": sorted(coordinator.members()),
            }
        self.inbox = BusBridge(
            self.runtime,
            config.bus,
            network=network,
            on_config_reload=self.reload,
            store=store,
            cluster=cluster,
        ).start(wait=10.0)
        if config.api.enabled:
            self._start_api()
        if config.process.orphan_sweep_period > 0:
            self._start_orphan_sweep(network, compute)
        self._start_metadata()
        LOG.info(
            "astara-orchestrator %s started (bus %s)",
            settings.host,
            _masked(config.bus.transport_url),
        )
        return self

    def stop(self) -> None:
        self.stopping.set()
        LOG.info("stopping")
        began = time.monotonic()
        phases: list[str] = []

        def took(name: str, since: float) -> float:
            now = time.monotonic()
            phases.append(f"{name} {now - since:.2f} s")
            return now

        if self._gc_pause is not None:
            self._gc_pause.resume()  # a stop during a cold start: the collector on again
        mark = began
        if self.metadata is not None:
            self.metadata.stop()
            mark = took("metadata proxy", mark)
        if self.api is not None:
            self.api.terminate()
            try:
                self.api.wait(timeout=10)
            except Exception:
                self.api.kill()
            mark = took("API", mark)
        if self.inbox is not None:
            self.inbox.stop()
            mark = took("bus", mark)
        if self.runtime is not None:
            # The root gives each tenant's lease back once its subtree stopped.
            self.runtime.stop(keep_warm=self._keep_warm if self._warm_restart else None)
            mark = took("routers", mark)
        if self.coordinator is not None:
            self.coordinator.stop()  # then leave the group: the others adopt our tenants
            mark = took("cluster", mark)
        if self.appliance is not None:
            self.appliance.close()
        if self.sim is not None:
            self.sim.stop()
            mark = took("simulator", mark)
        # Where a slow stop spent its time (SIGTERM must end a large fleet within seconds).
        LOG.info("stopped in %.2f s (%s)", time.monotonic() - began, ", ".join(phases) or "-")

    @property
    def _warm_restart(self) -> bool:
        return self.config.process.warm_restart_max_age > 0

    def _keep_warm(self, routers: dict[str, Any]) -> None:
        """A clean stop: what each router's VMs last accepted, for the next start."""
        from astara_actors.store import warm_state

        assert self.runtime is not None
        path = warm_state.save(self.config.process.state_dir, routers, self.runtime.settings.host)
        LOG.info("stopping: what the VMs of %d routers accepted is kept in %s", len(routers), path)

    def reload(self) -> None:
        """Re-read the file: report what changed; apply the log level (the rest at restart)."""
        try:
            fresh = load_config(self.config.path)
        except SettingsError as exc:
            LOG.error("config reload refused, keeping the running configuration: %s", exc)
            return
        changed = [
            f"[{name}] {key}"
            for name in ("settings", "process", "bus", "api", "cloud")
            for key, old, new in _diff(getattr(self.config, name), getattr(fresh, name))
        ]
        logging.getLogger().setLevel(fresh.process.log_level.upper())
        LOG.warning(
            "config reloaded from %s; changed: %s (log level applied now, the rest at restart)",
            self.config.path,
            ", ".join(changed) or "nothing",
        )

    # --- parts
    def _start_sim(self) -> tuple[Settings, CloudSettings]:
        from astara_actors.bus.transport import BusSettings
        from astara_actors.config.cloud import CloudSettings
        from astara_actors.sim.cloud import SimCloud
        from astara_actors.sim.notifier import KombuNotifier
        from astara_actors.sim.server import SimServer

        bus = self.config.bus
        notify = KombuNotifier(
            BusSettings(
                transport_url=bus.transport_url,
                host="sim",
                notifications_exchange=bus.notifications_exchange,
                notifications_routing_key=bus.notifications_routing_key,
            )
        )
        # The appliances' host key and a known_hosts naming it live beside the demo's own key,
        # where astara-ctl ssh looks with the embedded simulator (SshOptions.defaults).
        sim_settings = self.config.sim
        if not sim_settings.ssh_dir:
            ssh_dir = str(Path(self.config.process.state_dir) / "ssh")
            sim_settings = dataclasses.replace(sim_settings, ssh_dir=ssh_dir)
        # The simulated cloud is kept beside the store, whose debug flags and audit trail name
        # its routers: a restart finds the same cloud (make demo-fresh removes both).
        cloud_file = Path(self.config.process.state_dir) / "sim" / "cloud.json"
        cloud = SimCloud(
            sim_settings, notify=notify, cloud_file=cloud_file if sim_settings.keep_cloud else None
        )
        try:
            self.sim = SimServer(cloud).start()
        except OSError as exc:
            cloud.stop()
            if exc.errno != errno.EADDRINUSE:
                raise
            sim = self.config.sim
            host = f"[{sim.listen}]" if ":" in sim.listen else sim.listen
            raise AstaraError(
                f"the embedded simulator cannot listen on {host}:{sim.port} ([sim] port): the "
                "address is already in use; is another astara-orchestrator (make demo) or "
                "astara-sim running? Stop it, or set [sim] port"
            ) from None
        if cloud.load_or_bootstrap():
            how = f"the cloud kept in {cloud_file}"
        elif cloud.keeper is not None:
            how = f"a fresh cloud, kept in {cloud_file}"
        else:
            how = "a fresh cloud, not kept: [sim] keep_cloud = false"
        LOG.info(
            "embedded astara-sim on %s: %d routers (%s)", self.sim.url, len(cloud.topology), how
        )
        settings = dataclasses.replace(
            self.config.settings,
            ssh_public_key=self.config.settings.ssh_public_key or _demo_key(self.config),
            management_network_id=cloud.management_network_id,
            management_subnet_id=cloud.management_subnet_id,
            router_image_id=self.config.sim.image_id,
            router_flavor_id=self.config.sim.flavor_id,
        )
        # The metadata proxy forwards to the simulated Nova's metadata API, with its secret
        # (None: it could not listen, as the simulator has logged).
        if cloud.nova_metadata_url:
            settings = dataclasses.replace(
                settings,
                nova_metadata_url=cloud.nova_metadata_url,
                metadata_proxy_shared_secret=cloud.metadata_secret,
            )
        s = self.config.sim
        return settings, CloudSettings(
            auth_url=f"{self.sim.url}/identity/v3",
            username=s.admin_user,
            password=s.admin_password,
            project_name=s.admin_project,
        )

    def _management_port(self, settings: Settings, network: Network) -> Settings:
        """``settings`` with the address of this host's ``ASTARA:RUG:SERVICE`` port on the
        management network (created or adopted, then plugged by the [service_port] driver): the
        address every pushed config names and the metadata proxy listens on. An address set in
        [orchestrator] orchestrator_address is used as it is, and no port is managed.

        Before the coordinator joins: a member back after more than [service_port]
        member_grace may see its port swept by another member meanwhile; it logs that, and a
        restart makes a new one (docs/service-port.md)."""
        from astara_actors.adapters.host_plug import make_plug
        from astara_actors.core.service_port import ensure_service_port

        if settings.orchestrator_address:
            LOG.info(
                "orchestrator address %s as configured ([orchestrator] orchestrator_address); "
                "no ASTARA:RUG:SERVICE port managed",
                settings.orchestrator_address,
            )
            return settings
        options = self.config.service_port
        port = ensure_service_port(
            network,
            host=settings.host,
            management_network_id=settings.management_network_id,
            management_subnet_id=settings.management_subnet_id,
        )
        make_plug(options).plug(port)
        self.service_port = port
        LOG.info(
            "management port %s: %s (MAC %s), plugged by the %s driver ([service_port] driver)",
            port.id,
            port.cidr,
            port.mac_address,
            options.driver,
        )
        return dataclasses.replace(settings, orchestrator_address=port.address)

    def _start_metadata(self) -> None:
        """The metadata proxy on the orchestrator's management address (see
        :mod:`astara_actors.metadata`). Not serving it is an ERROR in the log, not a failed
        start: the routers are still driven; the guests get no metadata until it serves."""
        from astara_actors.metadata import MetadataProxy, MetadataProxyError

        assert self.runtime is not None
        settings = self.runtime.settings
        if not settings.metadata_proxy:
            LOG.info("metadata proxy off ([orchestrator] metadata_proxy = false)")
            return
        if not settings.orchestrator_address:
            LOG.warning(
                "metadata proxy not started: [orchestrator] orchestrator_address is empty; "
                "guests behind our routers get no metadata (no ssh keys, no user data)"
            )
            return
        proxy = MetadataProxy(settings, self.runtime.metadata_index)
        try:
            self.metadata = proxy.start(stopping=self.stopping)
        except MetadataProxyError as exc:
            LOG.error(
                "metadata proxy not started: %s; routers are still driven, but guests get no "
                "metadata until it serves (restart once fixed)",
                exc,
            )

    def _start_api(self) -> None:
        """gunicorn in its own process (it must own its main thread), watched and restarted.

        It dies with this process (parent-death signal, from this thread: the main one) and
        replaces an API a previous, killed orchestrator left on the port (see api.server)."""
        from astara_actors.api.server import ApiStartError, run_api

        try:
            self.api = run_api(self.config.path)
        except ApiStartError as exc:
            LOG.error("HTTP API not started: %s (the bus and astara-ctl still work)", exc)
            return
        threading.Thread(
            target=self._watch_api, args=(run_api,), name="api-watch", daemon=True
        ).start()

    def _watch_api(self, run_api: RunApi) -> None:
        from astara_actors.core.backoff import backoff

        restarts = 0
        while not self.stopping.is_set():
            api = self.api
            assert api is not None  # watched once started; a failed restart keeps the old one
            code = api.wait()
            if self.stopping.is_set():
                return
            restarts += 1
            delay = backoff(restarts, 1.0, 30.0)
            LOG.error("the HTTP API exited (code %s); restarting it in %.0f s", code, delay)
            if self.stopping.wait(delay):
                return
            try:
                self.api = run_api(self.config.path)
            except Exception as exc:  # noqa: BLE001 - keep watching; the next try may succeed
                LOG.error("HTTP API restart failed: %s", exc)

    def _members_changed(self, members: frozenset[str], network: Network, compute: Compute) -> None:
        """On the coordinator's thread: hand over lost tenants, then adopt the gained ones."""
        from astara_actors.protocol.messages import Rebalance

        if self.runtime is None:
            return
        self.runtime.tell(Rebalance(members))
        if self._populated.is_set():  # the start-up population covers the first view
            threading.Thread(
                target=self._populate, args=(network, compute), name="repopulate", daemon=True
            ).start()

    def _start_orphan_sweep(self, network: Network, compute: Compute) -> None:
        """Leaked VMs and ASTARA ports of deleted routers are removed (after a grace): the
        sweep rides along with the drift sweeper, which hands it its listing of the cloud when
        both fall due together; without a drift sweeper, on a thread of its own."""
        from astara_actors.jobs.orphan_sweep import SweepListing

        sweeper = self._orphan_sweeper(network, compute)
        period = self.config.process.orphan_sweep_period
        drift = self.runtime.drift if self.runtime is not None else None
        if drift is None:
            threading.Thread(
                target=self._sweep, args=(sweeper,), name="orphan-sweep", daemon=True
            ).start()
            return
        drift.ride(
            "orphan sweep",
            period,
            lambda listing: self._sweep_once(
                sweeper, None if listing is None else SweepListing.of(listing)
            ),
        )

    def _orphan_sweeper(self, network: Network, compute: Compute) -> OrphanSweeper:
        from astara_actors.jobs.orphan_sweep import OrphanSweeper

        process = self.config.process
        member_ports = None
        if self.coordinator is not None and self.runtime is not None:  # alone: ours is kept
            from astara_actors.core.service_port import MemberPortSweeper

            member_ports = MemberPortSweeper(
                network,
                host=self.runtime.settings.host,
                management_network_id=self.runtime.settings.management_network_id,
                members=self.coordinator.members,
                grace=self.config.service_port.member_grace,
                own_port_id=self.service_port.id if self.service_port else None,
            )
        return OrphanSweeper(
            network, compute, grace=process.orphan_grace, member_ports=member_ports
        )

    def _sweep(self, sweeper: OrphanSweeper) -> None:
        while not self.stopping.wait(self.config.process.orphan_sweep_period):
            try:
                self._sweep_once(sweeper)
            except Exception:  # noqa: BLE001 - a bug here must not stop the sweeping
                LOG.exception("orphan sweep failed")

    def _sweep_once(self, sweeper: OrphanSweeper, listing: SweepListing | None = None) -> None:
        report = sweeper.sweep(listing)
        if report.servers_removed or report.ports_removed:
            LOG.warning(
                "orphan sweep removed %d VMs and %d ports of deleted routers",
                len(report.servers_removed),
                len(report.ports_removed),
            )
        if report.service_ports_removed:
            LOG.warning(
                "orphan sweep removed the management ports of members gone for more than "
                "%.0f s ([service_port] member_grace): %s",
                self.config.service_port.member_grace,
                ", ".join(report.service_ports_removed),
            )

    def _populate(self, network: Network, compute: Compute) -> None:
        """Every router in Neutron gets an actor and a first POLL; retried while Neutron is down.

        The cloud is read once for all routers (``inventory``); each router's first refresh
        and push use that instead of their own reads. If the bulk read fails, routers are
        listed and each reads for itself."""
        from astara_actors.core.backoff import backoff
        from astara_actors.core.events import Action, Event
        from astara_actors.core.seeds import read_inventory
        from astara_actors.errors import CloudError
        from astara_actors.jobs.heap_freezer import CollectionPause

        assert self.runtime is not None
        warm = None
        if self._warm_restart:
            from astara_actors.store import warm_state

            warm = warm_state.load(
                self.config.process.state_dir,
                self.runtime.settings.host,
                self.config.process.warm_restart_max_age,
            )
        pause = self._gc_pause = CollectionPause(cap=COLD_START_GC_CAP)
        attempt = 0
        while not self.stopping.is_set():
            pause.start()  # the read and the first events: no collection (see CollectionPause)
            try:
                try:
                    inventory = read_inventory(
                        network, compute, self.runtime.settings.management_network_id, warm=warm
                    )
                except CloudError as exc:
                    LOG.warning(
                        "cold start: the bulk read failed (%s); each router reads for itself", exc
                    )
                    routers = network.list_routers()
                else:
                    self.runtime.inventory = inventory
                    routers = inventory.routers()
                break
            except CloudError as exc:
                pause.resume()
                attempt += 1
                delay = backoff(attempt, 1.0, 15.0)
                LOG.warning("cannot list routers yet (%s); retrying in %.0f s", exc, delay)
                if self.stopping.wait(delay):
                    return
            except BaseException:
                pause.resume()
                raise
        else:
            pause.resume()
            return
        for router_id, tenant_id in routers:
            self.runtime.deliver(Event(router_id, tenant_id, Action.POLL, reason="start-up"))
        LOG.info("populated %d routers from Neutron", len(routers))
        if self.runtime.inventory is not None:
            pause.cap = min(self.runtime.inventory.max_age, COLD_START_GC_MAX)
        heap = getattr(self.runtime, "heap", None)
        runtime = self.runtime
        # Then the heap freezer's collect and freeze, in its own thread (it runs one at a time).
        pause.resume_when(lambda: _pool_quiet(runtime), heap.wake if heap is not None else None)
        if self.runtime.inventory is not None:  # seeds nobody took (another member's tenants)
            timer = threading.Timer(self.runtime.inventory.max_age, self.runtime.inventory.clear)
            timer.daemon = True
            timer.start()
        self._populated.set()


def _pool_quiet(runtime: Any) -> bool:
    """No actor of the runtime's pool runs or waits to run (a thread per actor: no router
    has events waiting)."""
    pool = getattr(runtime, "pool", None)
    if pool is None:
        board = getattr(runtime, "status_board", None)
        return board is None or bool(board.pending() == (0, 0))
    stats = pool.stats()
    return not (stats["running"] or stats["runnable_urgent"] or stats["runnable_routine"])


def _secure_state_dir(config: Config) -> None:
    """Refuse a world-writable state directory (a SettingsError, one line); create a missing
    one owner-only (0700). What is created in it is owner-only too (see ``fsmodes``)."""
    from astara_actors.fsmodes import check_state_dir, secure_dir

    check_state_dir(config.process.state_dir)
    if not Path(config.process.state_dir).exists():
        try:
            secure_dir(config.process.state_dir)
        except OSError as exc:
            raise SettingsError(
                "orchestrator",
                "state_dir",
                f"cannot create {config.process.state_dir}: {exc.strerror or exc}",
            ) from None


def _demo_key(config: Config) -> str:
    """The demo's key pair under state_dir/ssh (made once): its public half goes in the VMs."""
    import paramiko

    private = Path(config.process.state_dir) / "ssh" / "id_ecdsa"
    if not private.exists():
        private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        paramiko.ECDSAKey.generate().write_private_key_file(str(private))
    key = paramiko.ECDSAKey.from_private_key_file(str(private))
    return f"{key.get_name()} {key.get_base64()} astara-demo"


def _diff(old: object, new: object) -> list[tuple[str, object, object]]:
    if old is None or new is None or not dataclasses.is_dataclass(old):
        return [] if old == new else [("*", old, new)]
    return [
        (f.name, getattr(old, f.name), getattr(new, f.name))
        for f in dataclasses.fields(old)
        if getattr(old, f.name) != getattr(new, f.name)
    ]


def _masked(url: str) -> str:
    from astara_actors.bus.transport import mask_url

    return mask_url(url)


def main(argv: list[str] | None = None) -> int:
    from astara_actors import __version__

    args = docopt(__doc__, argv=argv, version=f"astara-orchestrator {__version__}")
    try:
        config = load_config(args["--config-file"])
        if config.api.enabled:  # refused before anything starts: an API that must not serve
            from astara_actors.api.server import check_api_settings

            check_api_settings(config)
        _secure_state_dir(config)
    except SettingsError as exc:
        print(f"astara-orchestrator: {exc}", file=sys.stderr)
        return 2
    level = "DEBUG" if args["--debug"] else config.process.log_level.upper()
    logging.basicConfig(level=level, format=FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    safe_logs()  # ids and reasons from outside are escaped and bounded in every line
    for warning in config.warnings:
        LOG.warning("%s: %s", config.path, warning)
    from astara_actors.jobs.heap_freezer import limit_arenas

    limit_arenas()  # before any thread: see jobs/heap_freezer.py
    service = Service(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=service.reload).start())
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    try:
        service.start()
    except (AstaraError, OSError) as exc:
        LOG.error("cannot start: %s", exc)
        service.stop()
        return 1
    stop.wait()
    service.stop()
    return 0


def run() -> NoReturn:
    """The command (``astara-orchestrator``): :func:`main`, then out at once, without the
    interpreter's teardown — every part was stopped by then (the routers' state kept, the
    bus, API and cluster membership let go), the logs are flushed here, and freeing a large
    fleet's objects one by one only delays the exit (12 s at 50,000 routers)."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
