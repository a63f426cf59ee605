"""The service VM(s) of one router, driven through the ``Instance`` port (inventory §3.2–§3.3).

Fixes over the original: the boot timeout is enforced (a VM that never answers is replaced),
a dead HA member is deleted instead of only dropped, nothing waits for Nova, retries are
counted instead of looped, and status reaches Neutron only when it changes.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from astara_actors import metrics
from astara_actors.config.settings import Settings
from astara_actors.core.config_assembly import ConfigAssembler, RouterInputs
from astara_actors.core.events import NEUTRON_STATUS, Body, InstanceState
from astara_actors.core.liveness import Liveness
from astara_actors.core.metadata_index import MetadataIndex
from astara_actors.core.models import Interface, Port, Router
from astara_actors.core.network_cache import NetworkCache
from astara_actors.core.payload import config_digest, packed_config
from astara_actors.core.ports import Appliance, Clock, Compute, Network
from astara_actors.core.rebuild_guard import RebuildGuard
from astara_actors.core.seeds import Seed
from astara_actors.core.spares import SparePool
from astara_actors.core.vms import Vm, VmCloud, networks_of
from astara_actors.errors import CloudError, RouterGone
from astara_actors.log import router_logger

__all__ = ["InstanceManager", "pushed_config"]

# Every live instance manager by router (a restarted router's newer one replaces the older):
# how the one-router query reads the config last pushed without asking the busy actor.
_LIVE: weakref.WeakValueDictionary[str, InstanceManager] = weakref.WeakValueDictionary()


def warm_records() -> dict[str, dict[str, tuple[bytes, tuple[Interface, ...]]]]:
    """Every live router's :meth:`InstanceManager.warm_record` (what a clean stop keeps)."""
    records = {}
    for router_id, instance in list(_LIVE.items()):
        record = instance.warm_record()
        if record:
            records[router_id] = record
    return records


def pushed_config(router_id: str) -> dict[str, Any] | None:
    """The config each of the router's VMs last accepted, by server id (None: not here)."""
    instance = _LIVE.get(router_id)
    return None if instance is None else instance.pushed_config()


_REUSE_ROUTER = 1.0  # seconds: a push reuses the router its traversal's refresh just read
# Bodies of notifications waiting for the next push at most; a longer burst reads it all.
_MAX_BODIES = 1000
# A boot's cap slot is freed here.
_SLOT_ENDS = frozenset({InstanceState.CONFIGURED, InstanceState.ERROR, InstanceState.GONE})


class InstanceManager:
    """The ``Instance`` of one router: 1 VM, or 2 when ``router.ha``.

    Its lifecycle (adopt, refresh, boot, push, replug, stop) is here; whether the VMs answer
    is its :class:`~astara_actors.core.liveness.Liveness`, what config they should have its
    :class:`~astara_actors.core.config_assembly.ConfigAssembler`, the Nova and Neutron calls
    for the VMs its :class:`~astara_actors.core.vms.VmCloud`."""

    def __init__(
        self,
        router_id: str,
        tenant_id: str,
        *,
        network: Network,
        compute: Compute,
        appliance: Appliance,
        settings: Settings,
        clock: Clock = time.monotonic,
        log: logging.Logger | logging.LoggerAdapter | None = None,  # type: ignore[type-arg]
        guard: RebuildGuard | None = None,
        shared_networks: NetworkCache | None = None,
        seed: Seed | None = None,
        metadata_index: MetadataIndex | None = None,
        spares: SparePool | None = None,
    ) -> None:
        self.router_id = router_id
        self.tenant_id = tenant_id
        self._network = network
        self._compute = compute
        self._appliance = appliance
        self._settings = settings
        self._clock = clock
        self._log = log or router_logger(router_id)
        self._guard = guard  # the rebuild guard shared by the process's routers (None: off)
        self._seed = seed  # what a cold start read for us: used by the first refresh and push
        # Hot spares, taken before booting (None or an empty pool: every VM is booted).
        self._spares = spares if spares is not None and spares.enabled else None
        # What the metadata proxy checks guests' requests against: learned at each push,
        # forgotten when the VMs or the router go (None: no proxy in this process).
        self._index = metadata_index
        self._index_token = metadata_index.token() if metadata_index is not None else 0
        # The router read by the last refresh, and when: the step right after it (a push, a
        # boot, a drift check) uses it once instead of reading it again.
        self._refreshed: tuple[Router, float] | None = None
        # What the last full read gave the config (the router, its internal networks and their
        # ports), changed since by what notifications carried; None: the next push reads it all.
        self._inputs: RouterInputs | None = None
        # What notifications carried since the last push, for it to apply; or read it all.
        self._bodies: list[Body] = []
        self._read_all = False
        self._gone_ports: dict[str, None] | None = None  # ids of deleted ports seen (if any)
        self.reads_saved = 0  # pushes built from the kept inputs, with no Neutron read
        # This process's routers by network (how a tenant's port finds its routers).
        self._routers = shared_networks.routers if shared_networks is not None else None
        self._routers_token = self._routers.token() if self._routers is not None else 0
        self._cloud = VmCloud(
            router_id, network=network, compute=compute, settings=settings, log=self._log
        )
        self._liveness = Liveness(
            router_id,
            appliance=appliance,
            settings=settings,
            clock=clock,
            log=self._log,
            guard=guard,
        )
        self._assembler = ConfigAssembler(
            network=network,
            appliance=appliance,
            settings=settings,
            log=self._log,
            shared_networks=shared_networks,
        )
        self._state = InstanceState.DOWN
        self._attempts = 0
        self._vms: dict[str, Vm] = {}
        self._adopted = False
        self._ha = False
        self._next_index = 0
        self._image_id: str | None = None
        self._error_reason = ""
        self._push_failures = 0
        self._replug_started: float | None = None
        self._pushed: dict[str, bytes] = {}  # server id -> digest of the config it accepted
        self._warm: dict[str, bytes] = {}  # ... as a clean stop kept it (store.warm_state)
        # server id -> that config, JSON deflated (about 1 KiB; shown by the web console)
        self._payloads: dict[str, bytes] = {}
        self._synced_at: float | None = None  # when sync() refreshed, for the next refresh
        self._neutron_status: str | None = None
        # The status Neutron shows as last read or set ("" none, None unknown): the tag
        # method then needs no read of the router's tags before it sets one.
        self._shown: str | None = None
        self._name = ""
        metrics.track_instance(self)  # astara_routers{state} reads .state when scraped
        _LIVE[router_id] = self

    # ------------------------------------------------------------------ protocol
    @property
    def state(self) -> InstanceState:
        return self._state

    @property
    def attempts(self) -> int:
        return self._attempts

    def sync(self) -> InstanceState:
        """A new actor's first refresh (see the ``Instance`` port)."""
        state = self.update_state()
        self._synced_at = self._clock()
        return state

    def update_state(self) -> InstanceState:
        """Refresh from Neutron, Nova and the appliance; enforce the boot timeout."""
        synced, self._synced_at = self._synced_at, None
        if synced is not None and self._clock() - synced <= _REUSE_ROUTER:
            return self._state  # the actor's sync just read everything: once is enough
        if self._seed is not None and self._seed.router is None:
            self._seed = None  # a second refresh: the cold start's reads are stale now
        router = self._fetch_router(refresh=True)
        just_adopted = not self._adopted
        if router is None or not self._adopt():
            return self._state
        if isinstance(router, RouterGone):
            return self._set(InstanceState.GONE)
        try:
            self._refresh(servers_fresh=just_adopted)
        except CloudError as exc:
            self._log.warning("could not refresh the VMs from Nova: %s", exc)
            return self._state
        self._plug_new(router)
        self._liveness.probe(self._vms.values())
        now = self._clock()
        self._liveness.observe(self._vms.values())
        for vm in self._vms.values():
            if not vm.alive:
                vm.interfaces = None  # it may come back rebooted: read them again then
        for vm in list(self._vms.values()):
            limit = self._liveness.limit(vm)
            if not vm.answered and now - vm.since >= limit:
                why = "did not come back" if vm.lost else "did not answer"
                if not self._liveness.may_replace(vm, f"{why} within {limit:.0f}s"):
                    continue
                self._log.warning("VM %s %s within %.0fs; deleting it", vm.name, why, limit)
                self._replace(vm, "dead_vm" if vm.lost else "boot_timeout")
        vms = list(self._vms.values())
        if not vms:
            return self._set(InstanceState.DOWN)
        lost = [vm for vm in vms if vm.answered and not vm.alive]
        if not any(vm.alive for vm in vms):
            for vm in lost:
                # It gets dead_vm_timeout to come back before it is replaced.
                self._log.warning("VM %s stopped answering", vm.name)
                vm.answered, vm.since, vm.lost = False, now, True
            return self._set(InstanceState.DOWN if lost else InstanceState.BOOTING)
        for vm in lost:
            if not self._liveness.may_replace(vm, "stopped answering (HA member)"):
                continue
            self._log.warning("HA member %s stopped answering; deleting it", vm.name)
            self._replace(vm, "ha_member")
        if len(self._vms) < self._required:
            return self._set(InstanceState.DEGRADED)
        if not all(vm.alive for vm in self._vms.values()):
            return self._set(InstanceState.BOOTING)
        if self._state is InstanceState.CONFIGURED:
            self._attempts = 0
            return self._set(InstanceState.CONFIGURED)
        return self._set(InstanceState.UP)

    def check_alive(self) -> InstanceState:
        """Poll fast path (see the ``Instance`` port): one probe per VM, no Neutron/Nova."""
        if not self._all_up():
            return self.update_state()
        if not self._liveness.all_answer(self._vms.values()):
            return self.update_state()  # retries, Nova, the timeouts: the full path
        return InstanceState.CONFIGURED

    def due_in(self) -> float | None:
        """Seconds until a silent VM's timeout runs out (see the ``Instance`` port)."""
        return self._liveness.due_in(self._vms.values())

    def probe_async(self, done: Callable[[Mapping[str, bool]], None]) -> bool:
        """Start the poll's probes without blocking (see the ``Instance`` port)."""
        return self._all_up() and self._liveness.start_async(list(self._vms.values()), done)

    def probed(self, results: Mapping[str, bool]) -> None:
        """Keep the answers of :meth:`probe_async` for the check that follows."""
        self._liveness.keep(results)

    def _all_up(self) -> bool:
        """CONFIGURED with every VM it needs answering at an address: the poll's fast path."""
        vms = self._vms.values()
        return (
            self._state is InstanceState.CONFIGURED
            and len(vms) >= self._required
            and all(vm.alive and vm.address for vm in vms)
        )

    def boot(self, image_id: str | None = None) -> InstanceState:
        """Create the missing VM(s) and their ports; BOOTING, or DOWN if the cloud refused."""
        router = self._fetch_router(reuse=True)
        if router is None or not self._adopt():
            return self._set(InstanceState.DOWN)
        if isinstance(router, RouterGone):
            return self._set(InstanceState.GONE)
        image = image_id or self._settings.router_image_id
        missing = self._required - len(self._vms)
        taken = self._take_spares(missing, image) if missing > 0 else 0
        if taken:
            # The actor's first refresh (sync) saw no VM: the check right after this boot must
            # look again, not reuse it (a spare answers at once, no boot to wait for).
            self._synced_at = None
        missing -= taken
        if missing > 0 and self._guard is not None and not self._guard.take_slot(self.router_id):
            self._log.info(
                "boot waits: %d boots already in progress (rebuild_concurrency)",
                self._guard.concurrency,
            )
            if not taken:
                return self._set(InstanceState.DOWN)
            missing = 0  # an HA pair: one member from a spare now, the other boots later
        self._image_id = image
        # Only a boot made (or a spare taken) is an attempt: waiting for a silent VM
        # (dead_vm_timeout) is not, or a long wait would reach reboot_error_threshold with
        # nothing booted.
        if (missing > 0 or taken) and self._state is not InstanceState.DEGRADED:
            self._attempts += 1
        self._push_failures, self._replug_started = 0, None
        for _ in range(missing):
            try:
                vm = self._cloud.boot(self._next_index, image, self._clock())
                self._next_index += 1
                self._vms[vm.id] = vm
                metrics.BOOTS.inc()
            except CloudError as exc:
                metrics.BOOT_FAILURES.inc()
                self._log.warning("boot from image %s failed: %s", image, exc)
                return self._set(InstanceState.BOOTING if taken else InstanceState.DOWN)
        if missing > 0:
            self._log.info(
                "booting %d VM(s) from image %s, attempt %d", missing, image, self._attempts
            )
        elif taken:
            self._log.info("took %d hot spare(s), attempt %d", taken, self._attempts)
        else:  # e.g. a VM that stopped answering: it gets dead_vm_timeout before a new boot
            self._log.info(
                "no VM to boot: waiting for %s to answer",
                ", ".join(vm.name for vm in self._members()),
            )
        return self._set(InstanceState.BOOTING)

    def _take_spares(self, wanted: int, image: str) -> int:
        """Take up to ``wanted`` ready spares of ``image`` as this router's VMs; how many."""
        if self._spares is None:
            return 0
        taken = 0
        for _ in range(wanted):
            name = f"{self._cloud.prefix}{self._next_index}"
            got = self._spares.take(self.router_id, name, image)
            if got is None:
                break
            server, port = got
            now = self._clock()
            self._vms[server.id] = Vm(server, self._next_index, now, now, port, [])
            self._next_index += 1
            taken += 1
        return taken

    def note_change(self, body: Body | None) -> None:
        """A change for the next push: what a notification carried (applied to the inputs
        kept from the last read, see :meth:`configure`), or None: read everything again."""
        if body is None or self._read_all:
            self._read_all, self._bodies = True, []
            return
        self._bodies.append(body)
        if len(self._bodies) > _MAX_BODIES:
            self._read_all, self._bodies = True, []

    def configure(self) -> InstanceState:
        """Push the config once to every live VM (see the ``Instance`` port for results).

        When everything that changed since the last push came with what its notification
        carried (:meth:`note_change`) and it all applies to the inputs kept from the last read
        (a tenant's port on one of the router's networks, the router's own fields), the config
        is rebuilt from those with no Neutron read; otherwise (anything uncertain) it reads
        the router, its networks and their ports again, as always."""
        if not self._adopt():
            return self._state
        bodies, self._bodies = self._bodies, []
        read_all, self._read_all = self._read_all, False
        live = [vm for vm in self._members() if vm.alive and vm.address]
        inputs = self._inputs
        if (
            read_all
            or not bodies
            or inputs is None
            or self._state is not InstanceState.CONFIGURED
            or not live
            or not all(vm.id in self._pushed and vm.interfaces is not None for vm in live)
            or not self._apply(inputs, bodies)
        ):
            inputs = None
        router: Router | RouterGone | None
        if inputs is not None:
            router = inputs.router
            self._name = router.name
            self.reads_saved += 1
        else:
            # Read it all: what was kept is stale until that read succeeds, whatever happens.
            self._inputs = None
            router = self._fetch_router(reuse=True)
        if router is None:
            return self._push_failed("Neutron did not answer")
        if isinstance(router, RouterGone):
            return self._set(InstanceState.GONE)
        live = [vm for vm in self._members() if vm.alive and vm.address]
        if not live:
            return self._set(InstanceState.DOWN)
        network_ports: dict[str, Sequence[Port]] = {}
        seed = self._take_seed() if inputs is None else None
        try:
            if inputs is None:
                inputs = self._read_inputs(router, seed)
            payloads = self._assembler.payloads(
                router,
                live,
                self._members(),
                seed,
                cached=True,
                network_ports_out=network_ports if self._index is not None else None,
                inputs=inputs,
            )
        except CloudError as exc:
            return self._push_failed(str(exc))
        if payloads is None:
            return self._set(InstanceState.REPLUG)
        warm, self._warm = self._warm, {}  # what a clean stop kept serves the first push only
        pushed = 0
        for vm in live:
            payload = payloads.get(vm.id)
            if payload is None:
                continue
            digest = config_digest(payload)
            if warm.get(vm.id) == digest:  # a warm restart: the VM accepted this one already
                metrics.CONFIG_PUSHES_KEPT.inc()
            else:
                try:
                    self._appliance.put_config(vm.address, payload, self._settings.config_timeout)
                except CloudError as exc:
                    metrics.CONFIG_PUSH_FAILURES.inc()
                    self._log.warning("config push to %s failed: %s", vm.name, exc)
                    continue
                metrics.CONFIG_PUSHES.inc()
            self._pushed[vm.id] = digest
            self._payloads[vm.id] = packed_config(payload)
            pushed += 1
        if not pushed:
            return self._push_failed("no VM took the config")
        if self._index is not None:
            self._index.learn(
                self.router_id, self._index_token, self._configured_addresses(), network_ports
            )
        self._push_failures = 0
        if pushed == len(self._vms) >= self._required:
            return self._set(InstanceState.CONFIGURED)
        return self._set(InstanceState.DEGRADED)

    def replug(self) -> InstanceState:
        """Hot-plug/unplug VRRP ports to match the router's networks."""
        now = self._clock()
        if self._replug_started is None:
            self._replug_started = now
        router = self._fetch_router()
        if router is not None and self._adopt():
            if isinstance(router, RouterGone):
                self._replug_started = None
                return self._set(InstanceState.GONE)
            wanted = networks_of(router)
            try:
                for vm in self._vms.values():
                    self._cloud.plug(vm, wanted)
            except CloudError as exc:
                self._log.warning("hot-plug failed: %s", exc)
                self._replug_started = None
                return self._set(InstanceState.RESTART)
            live = [vm for vm in self._vms.values() if vm.alive and vm.address]
            try:
                ok = bool(live) and all(
                    self._assembler.matches(vm, wanted, self._assembler.interfaces(vm))
                    for vm in live
                )
            except CloudError:
                ok = False
            if ok:
                self._log.info("interfaces match the router's networks")
                self._replug_started = None
                return self._set(InstanceState.UP)
        if now - self._replug_started >= self._settings.hotplug_timeout:
            waited = now - self._replug_started
            self._log.warning("interfaces still wrong %.0fs after replug", waited)
            self._replug_started = None
            return self._set(InstanceState.RESTART)
        return self._set(InstanceState.REPLUG)

    def unplug_stale(self) -> int:
        """Delete at once the VRRP ports on networks the router left (see the ``Instance``
        port); the replug and push that follow are the state machine's."""
        if not self._vms:
            return 0  # nothing adopted yet: the first traversal's refresh sees to it
        wanted = self._cloud.router_networks()
        if wanted is None:
            return 0  # Neutron did not answer (logged): the traversal's replug sees to it
        return sum(self._cloud.unplug(vm, wanted) for vm in list(self._vms.values()))

    def stop(self) -> InstanceState:
        """Delete the VM(s) and ``ASTARA:*`` ports; DOWN/GONE once Nova has removed them."""
        adopted = self._adopt()
        router = self._fetch_router()
        for vm in list(self._vms.values()):
            if self._cloud.delete_server(vm):
                self._forget(vm)
        ports_deleted = self._cloud.delete_named_ports()
        if not adopted or not ports_deleted or self._vms or self._cloud.still_deleting():
            return self._state
        self._push_failures, self._replug_started = 0, None
        return self._set(
            InstanceState.GONE if isinstance(router, RouterGone) else InstanceState.DOWN
        )

    def set_error(self, reason: str) -> InstanceState:
        self._error_reason = reason
        self._log.warning("entering ERROR: %s", reason)
        return self._set(InstanceState.ERROR)

    def clear_error(self) -> InstanceState:
        self._error_reason = ""
        self._attempts = 0
        return self._set(InstanceState.DOWN)

    def reset_boot_counter(self) -> None:
        self._attempts = 0

    def release(self) -> None:
        """The router's actor stopped (its tenant moved to another orchestrator, or this one
        stops): the metadata proxy no longer vouches for its VMs. The VMs stay as they are."""
        if self._index is not None:
            self._index.forget(self.router_id, self._index_token)
        if self._routers is not None:
            self._routers.forget(self.router_id, self._routers_token)

    def dump(self) -> dict[str, object]:
        now = self._clock()
        return {
            "router_id": self.router_id,
            "router_name": self._name,
            "state": str(self._state),
            "attempts": self._attempts,
            "image_id": self._image_id,
            "error": self._error_reason,
            "neutron_status": self._neutron_status,
            "push_failures": self._push_failures,
            "vms": [
                {
                    "id": vm.id,
                    "name": vm.name,
                    "status": vm.server.status,
                    "image_id": vm.server.image_id,
                    "management_address": vm.address,
                    "alive": vm.alive,
                    "age": round(now - vm.booted_at, 1),
                    "configured": vm.id in self._pushed,
                }
                for vm in self._members()
            ],
            "deleting": sorted(self._cloud.deleting),
        }

    # ------------------------------------------------------------------ drift
    def warm_record(self) -> dict[str, tuple[bytes, tuple[Interface, ...]]]:
        """What a clean stop keeps of this router (:mod:`astara_actors.store.warm_state`):
        each live VM's last accepted config digest and its appliance's interfaces."""
        return {
            vm.id: (self._pushed[vm.id], tuple(vm.interfaces))
            for vm in list(self._vms.values())
            if vm.alive and vm.interfaces is not None and vm.id in self._pushed
        }

    @property
    def pushed_digests(self) -> Mapping[str, bytes]:
        """The digest of the last payload each VM accepted, by server id (payloads themselves
        are not kept: a few KiB per router, times 10,000)."""
        return dict(self._pushed)

    def pushed_config(self) -> dict[str, Any]:
        """The config each VM last accepted, by server id (kept deflated; read from any
        thread: each entry is replaced whole)."""
        return {
            vm_id: json.loads(zlib.decompress(data)) for vm_id, data in list(self._payloads.items())
        }

    def config_drifted(self) -> bool:
        """True when Neutron now implies another config than the live VMs last accepted.

        Interfaces that no longer match the router's networks count as drift (a replug is due).
        If Neutron or the appliance cannot be read, nothing is claimed: the next check decides.
        """
        router = self._fetch_router(reuse=True)  # the poll's refresh read it
        live = [vm for vm in self._members() if vm.alive and vm.address]
        if not isinstance(router, Router) or not live:
            return False
        return self._differs(router, live)

    def drifted(self, listing: Seed) -> bool:
        """Whether a drift sweep's ``listing`` of this router implies another config than the
        live VMs last accepted (see the ``Instance`` port). Makes no call unless a VM's
        interfaces were never read; a listing that disagrees about the VMs counts as drift (the
        full path that follows sorts it out)."""
        router = listing.router
        if router is None or self._state is not InstanceState.CONFIGURED:
            return False
        if {s.id for s in listing.servers} != set(self._vms):
            return True
        live = [vm for vm in self._members() if vm.alive and vm.address]
        return bool(live) and self._differs(router, live, listing)

    def _differs(self, router: Router, live: list[Vm], listing: Seed | None = None) -> bool:
        """The config ``router`` implies for the ``live`` VMs is not the one they accepted (or
        their interfaces need a replug); a drift sweep's ``listing`` stands in for the reads."""
        seed = listing if listing is not None else self._take_seed()
        drifted = self._assembler.differs(
            router, live, self._members(), self._pushed, seed, cached=listing is not None
        )
        if drifted:
            self._inputs = None  # what was kept led astray: the push that follows reads it all
        return drifted

    def _apply(self, inputs: RouterInputs, bodies: list[Body]) -> bool:
        gone = self._gone_ports if self._gone_ports is not None else {}
        applied = inputs.apply(bodies, gone)
        if gone and self._gone_ports is None:
            self._gone_ports = gone
        return applied

    def _read_inputs(self, router: Router, seed: Seed | None) -> RouterInputs:
        """Read what the router's config is built from, and keep it for the next pushes."""
        self._inputs = None  # while reading: a failed read leaves nothing stale behind
        inputs = self._assembler.read_inputs(router, seed)
        self._inputs = inputs
        return inputs

    def _take_seed(self) -> Seed | None:
        """The cold start's reads, which serve one push (or drift check) at most."""
        seed, self._seed = self._seed, None
        return seed

    # ------------------------------------------------------------------ helpers
    @property
    def _required(self) -> int:
        return 2 if self._ha else 1

    def _set(self, state: InstanceState) -> InstanceState:
        self._state = state
        if self._guard is not None and state in _SLOT_ENDS:
            self._guard.free_slot(self.router_id)
            if state is InstanceState.GONE:
                self._guard.forget(self.router_id)
        if state is InstanceState.GONE:
            if self._index is not None:
                self._index.forget(self.router_id, self._index_token)
            if self._routers is not None:
                self._routers.forget(self.router_id, self._routers_token)
            self._inputs = None
        status = NEUTRON_STATUS.get(state)
        if status is None or status == self._neutron_status:
            return state
        if state is InstanceState.UP and self._neutron_status == "ACTIVE":
            return state  # answering, its config being (re)pushed: it still routes, as shown
        try:
            self._network.set_router_status(self.router_id, status, shown=self._shown)
        except CloudError as exc:
            self._shown = None  # half done, perhaps: read the tags at the next one
            self._log.warning("could not show status %s in Neutron: %s", status, exc)
        else:
            self._neutron_status = self._shown = status
        return state

    def _fetch_router(
        self, reuse: bool = False, refresh: bool = False
    ) -> Router | RouterGone | None:
        """The router, ``RouterGone`` if deleted, None if Neutron failed (logged).

        ``refresh`` (update_state) keeps what it read; ``reuse`` takes that once, if it was
        read within ``_REUSE_ROUTER`` seconds: the push that follows a refresh in one traversal
        reads the router once, not twice."""
        kept, self._refreshed = self._refreshed, None
        if reuse and kept is not None and self._clock() - kept[1] <= _REUSE_ROUTER:
            return kept[0]
        seeded = self._seed.router if self._seed is not None else None
        try:
            if seeded is not None:
                assert self._seed is not None
                router, self._seed.router = seeded, None
            else:
                router = self._network.get_router(self.router_id)
        except RouterGone as exc:
            # Kept by the callers as a value: a fresh one, not the raised one, whose traceback
            # (and context's) holds their own frames, and so the exception itself: a reference
            # cycle per deleted router that only the cyclic collector frees.
            return RouterGone(exc.router_id)
        except CloudError as exc:
            self._log.warning("could not read the router: %s", exc)
            return None
        self._ha = router.ha
        self._name = router.name
        self._learn(router)
        if self._neutron_status is None and router.shown_status:
            # Neutron already shows a status (set by a previous run): pushed only if it changes.
            self._neutron_status = router.shown_status
        # What the next status change replaces, as read; several status tags: read them then.
        self._shown = (router.shown_status or "") if router.status_tags <= 1 else None
        if refresh:
            self._refreshed = (router, self._clock())
        return router

    def _learn(self, router: Router) -> None:
        """A router read from Neutron: the resolver's index of our routers by network learns
        its networks, and the inputs kept for the config take it if its ports and floating IPs
        are those they were read with (else the next push reads it all)."""
        if self._routers is not None:
            ext = router.external_port
            self._routers.learn(
                self.router_id,
                router.tenant_id or self.tenant_id,
                self._routers_token,
                (p.network_id for p in router.internal_ports),
                ext.network_id if ext is not None else "",
            )
        if self._inputs is not None and not self._inputs.refresh(router):
            self._inputs = None

    def _adopt(self) -> bool:
        """Track the VMs already in Nova (once): a restarted actor rebuilds its state."""
        if self._adopted:
            return True
        now = self._clock()
        seed = self._seed
        try:
            if seed is not None:
                vms = self._cloud.adopt(now, seed.servers, seed.ports_by_device)
            else:
                vms = self._cloud.adopt(now)
        except CloudError as exc:
            self._log.warning("could not look up existing VMs: %s", exc)
            return False
        self._vms = {vm.id: vm for vm in vms}
        self._next_index = max((vm.index + 1 for vm in vms), default=0)
        self._adopted = True
        for vm in vms:  # a warm restart: what each VM last accepted, and its interfaces
            kept = seed.warm.get(vm.id) if seed is not None else None
            if kept is not None:
                self._warm[vm.id] = kept[0]
                vm.interfaces = list(kept[1])
        if vms:
            self._log.info("adopted %s", ", ".join(vm.name for vm in vms))
        return True

    def _members(self) -> list[Vm]:
        return sorted(self._vms.values(), key=lambda vm: (vm.booted_at, vm.index))

    def _refresh(self, servers_fresh: bool = False) -> None:
        """Re-read the VMs from Nova (``servers_fresh``: adoption just listed them)."""
        self._cloud.still_deleting()
        for vm in list(self._vms.values()):
            server = vm.server if servers_fresh else self._compute.get_server(vm.id)
            if server is None or server.status == "DELETED":
                self._log.info("VM %s vanished from Nova", vm.name)
                self._forget(vm)
                self._cloud.delete_ports(vm)
                continue
            vm.server = server
            if server.status == "ERROR":
                self._log.warning("VM %s is in ERROR in Nova; deleting it", server.name)
                self._destroy(vm)
            elif vm.management_port is None:
                self._cloud.load_ports(vm)
        for vm in self._members()[self._required :]:
            self._log.warning("deleting extra VM %s", vm.name)
            self._destroy(vm)

    def _plug_new(self, router: Router) -> None:
        """Hot-plug the VRRP ports of VMs that Nova has made ACTIVE and that were never
        configured (they boot with their management port alone; see ``VmCloud.boot``). A
        failed attach is logged and tried again by the next check; a configured VM whose
        networks changed goes through REPLUG instead."""
        wanted = networks_of(router)
        for vm in self._vms.values():
            if vm.id in self._pushed or not self._cloud.needs_plug(vm, wanted):
                continue
            try:
                self._cloud.plug(vm, wanted)
            except CloudError as exc:
                self._log.warning("could not plug %s into the router's networks: %s", vm.name, exc)

    def _push_failed(self, why: str) -> InstanceState:
        self._push_failures += 1
        if self._push_failures >= self._settings.max_retries:
            self._log.warning(
                "config push failed %d times (%s); restarting", self._push_failures, why
            )
            self._push_failures = 0
            return self._set(InstanceState.RESTART)
        return self._set(InstanceState.UP)

    def _replace(self, vm: Vm, reason: str) -> None:
        """Delete a VM that failed liveness; the router boots its replacement."""
        self._destroy(vm)
        metrics.REBUILDS.labels(reason=reason).inc()
        if self._guard is not None:
            self._guard.forget(self.router_id)  # rebuilding, no longer "failing liveness"

    def _destroy(self, vm: Vm) -> None:
        if self._cloud.delete_server(vm):
            self._forget(vm)
            self._cloud.delete_ports(vm)

    def _forget(self, vm: Vm) -> None:
        self._vms.pop(vm.id, None)
        self._pushed.pop(vm.id, None)
        self._payloads.pop(vm.id, None)
        if self._index is not None:
            self._index.keep_addresses(
                self.router_id, self._index_token, self._configured_addresses()
            )

    def _configured_addresses(self) -> list[str]:
        """The management addresses of the VMs that took a config (the metadata proxy's
        valid sources for this router)."""
        return [vm.address for vm in self._members() if vm.id in self._pushed and vm.address]
