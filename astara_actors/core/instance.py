"""The service VM(s) of one router, driven through the ``Instance`` port (inventory §3.2–§3.3).

Fixes over the original: the boot timeout is enforced (a VM that never answers is replaced),
a dead HA member is deleted instead of only dropped, nothing waits for Nova, retries are
counted instead of looped, and status reaches Neutron only when it changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from astara_actors import metrics
from astara_actors.config.settings import Settings
from astara_actors.core.events import NEUTRON_STATUS, InstanceState
from astara_actors.core.models import Interface, NetworkInfo, Router
from astara_actors.core.network_cache import NetworkCache
from astara_actors.core.payload import build_router_config, config_digest
from astara_actors.core.ports import Appliance, Clock, Compute, Network
from astara_actors.core.rebuild_guard import StormGuard
from astara_actors.core.seeds import Seed
from astara_actors.core.vms import Vm, VmCloud, networks_of
from astara_actors.errors import CloudError, RouterGone
from astara_actors.log import router_logger

__all__ = ["INTERFACES_TIMEOUT", "InstanceManager"]

INTERFACES_TIMEOUT = 30.0  # GET /v1/system/interfaces, as the original's client
S = InstanceState
_REUSE_ROUTER = 1.0  # seconds: a push reuses the router its traversal's refresh just read
_FRESH_PROBES = 2.0  # seconds: asynchronous probe answers stand in for the next check's probes
_SLOT_ENDS = frozenset({S.CONFIGURED, S.ERROR, S.GONE})  # a boot's cap slot is freed here


class InstanceManager:
    """The ``Instance`` of one router: 1 VM, or 2 when ``router.ha``."""

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
        guard: StormGuard | None = None,
        shared_networks: NetworkCache | None = None,
        seed: Seed | None = None,
    ) -> None:
        self.router_id = router_id
        self.tenant_id = tenant_id
        self._network = network
        self._compute = compute
        self._appliance = appliance
        self._settings = settings
        self._clock = clock
        self._log = log or router_logger(router_id)
        self._guard = guard  # storm protection shared by the process's routers (None: off)
        self._shared_networks = shared_networks  # management/external networks, read once
        self._seed = seed  # what a cold start read for us: used by the first refresh and push
        # The router read by the last refresh, and when: the step right after it (a push, a
        # boot, a drift check) uses it once instead of reading it again.
        self._refreshed: tuple[Router, float] | None = None
        self._cloud = VmCloud(
            router_id, network=network, compute=compute, settings=settings, log=self._log
        )
        self._state = S.DOWN
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
        self._synced_at: float | None = None  # when sync() refreshed, for the next refresh
        # The answers of the last asynchronous probes (address -> answered) and when they came.
        self._probes: tuple[dict[str, bool], float] | None = None
        self._neutron_status: str | None = None
        self._name = ""
        metrics.track_instance(self)  # astara_routers{state} reads .state when scraped

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
            return self._set(S.GONE)
        try:
            self._refresh(servers_fresh=just_adopted)
        except CloudError as exc:
            self._log.warning("could not refresh the VMs from Nova: %s", exc)
            return self._state
        self._plug_new(router)
        self._probe()
        now = self._clock()
        self._observe_liveness()
        for vm in list(self._vms.values()):
            # A VM that answered once and went silent is judged sooner than a fresh boot.
            limit = self._settings.dead_vm_timeout if vm.lost else self._settings.boot_timeout
            if not vm.answered and now - vm.since >= limit:
                why = "did not come back" if vm.lost else "did not answer"
                if not self._may_replace(vm, f"{why} within {limit:.0f}s"):
                    continue
                self._log.warning("VM %s %s within %.0fs; deleting it", vm.name, why, limit)
                self._replace(vm, "dead_vm" if vm.lost else "boot_timeout")
        vms = list(self._vms.values())
        if not vms:
            return self._set(S.DOWN)
        lost = [vm for vm in vms if vm.answered and not vm.alive]
        if not any(vm.alive for vm in vms):
            for vm in lost:
                # It gets dead_vm_timeout to come back before it is replaced.
                self._log.warning("VM %s stopped answering", vm.name)
                vm.answered, vm.since, vm.lost = False, now, True
            return self._set(S.DOWN if lost else S.BOOTING)
        for vm in lost:
            if not self._may_replace(vm, "stopped answering (HA member)"):
                continue
            self._log.warning("HA member %s stopped answering; deleting it", vm.name)
            self._replace(vm, "ha_member")
        if len(self._vms) < self._required:
            return self._set(S.DEGRADED)
        if not all(vm.alive for vm in self._vms.values()):
            return self._set(S.BOOTING)
        if self._state is S.CONFIGURED:
            self._attempts = 0
            return self._set(S.CONFIGURED)
        return self._set(S.UP)

    def check_alive(self) -> InstanceState:
        """Poll fast path (see the ``Instance`` port): one probe per VM, no Neutron/Nova."""
        vms = list(self._vms.values())
        if self._state is not S.CONFIGURED or len(vms) < self._required or not all(
            vm.alive and vm.address for vm in vms
        ):
            return self.update_state()
        timeout = self._settings.alive_timeout
        known = self._known_probes()
        for vm in vms:
            alive = known.get(vm.address)
            if alive is None:
                alive = self._appliance.is_alive(vm.address, timeout)
            if not alive:
                return self.update_state()  # retries, Nova, the timeouts: the full path
        self._probes = None
        if self._guard is not None:
            self._guard.observe(self.router_id, True)
        return S.CONFIGURED

    def due_in(self) -> float | None:
        """Seconds until a silent VM's timeout runs out (see the ``Instance`` port)."""
        now, due = self._clock(), None
        for vm in self._vms.values():
            if vm.answered:
                continue
            limit = self._settings.dead_vm_timeout if vm.lost else self._settings.boot_timeout
            left = max(0.0, vm.since + limit - now)
            due = left if due is None else min(due, left)
        return due

    def probe_async(self, done: Callable[[Mapping[str, bool]], None]) -> bool:
        """Start the poll's probes without blocking (see the ``Instance`` port)."""
        start = getattr(self._appliance, "probe_async", None)
        vms = list(self._vms.values())
        if start is None or self._state is not S.CONFIGURED or len(vms) < self._required or not all(
            vm.alive and vm.address for vm in vms
        ):
            return False
        start([vm.address for vm in vms], self._settings.alive_timeout,
              max(1, self._settings.max_retries), done)
        return True

    def probed(self, results: Mapping[str, bool]) -> None:
        """Keep the answers of :meth:`probe_async` for the check that follows."""
        self._probes = (dict(results), self._clock())

    def boot(self, image_id: str | None = None) -> InstanceState:
        """Create the missing VM(s) and their ports; BOOTING, or DOWN if the cloud refused."""
        router = self._fetch_router(reuse=True)
        if router is None or not self._adopt():
            return self._set(S.DOWN)
        if isinstance(router, RouterGone):
            return self._set(S.GONE)
        missing = self._required - len(self._vms)
        if missing > 0 and self._guard is not None and not self._guard.take_slot(self.router_id):
            self._log.info("boot waits: %d boots already in progress (rebuild_concurrency)",
                           self._guard.concurrency)
            return self._set(S.DOWN)
        image = image_id or self._settings.router_image_id
        self._image_id = image
        if self._state is not S.DEGRADED:
            self._attempts += 1
        self._push_failures, self._replug_started = 0, None
        missing = self._required - len(self._vms)
        for _ in range(missing):
            try:
                vm = self._cloud.boot(self._next_index, image, self._clock())
                self._next_index += 1
                self._vms[vm.id] = vm
                metrics.BOOTS.inc()
            except CloudError as exc:
                metrics.BOOT_FAILURES.inc()
                self._log.warning("boot from image %s failed: %s", image, exc)
                return self._set(S.DOWN)
        self._log.info("booting %d VM(s) from image %s, attempt %d", missing, image, self._attempts)
        return self._set(S.BOOTING)

    def configure(self) -> InstanceState:
        """Push the config once to every live VM (see the ``Instance`` port for results)."""
        if not self._adopt():
            return self._state
        router = self._fetch_router(reuse=True)
        if router is None:
            return self._push_failed("Neutron did not answer")
        if isinstance(router, RouterGone):
            return self._set(S.GONE)
        live = [vm for vm in self._members() if vm.alive and vm.address]
        if not live:
            return self._set(S.DOWN)
        try:
            payloads = self._payloads(router, live)
        except CloudError as exc:
            return self._push_failed(str(exc))
        if payloads is None:
            return self._set(S.REPLUG)
        pushed = 0
        for vm in live:
            payload = payloads.get(vm.id)
            if payload is None:
                continue
            try:
                self._appliance.put_config(vm.address, payload, self._settings.config_timeout)
            except CloudError as exc:
                metrics.CONFIG_PUSH_FAILURES.inc()
                self._log.warning("config push to %s failed: %s", vm.name, exc)
                continue
            metrics.CONFIG_PUSHES.inc()
            self._pushed[vm.id] = config_digest(payload)
            pushed += 1
        if not pushed:
            return self._push_failed("no VM took the config")
        self._push_failures = 0
        if pushed == len(self._vms) >= self._required:
            return self._set(S.CONFIGURED)
        return self._set(S.DEGRADED)

    def replug(self) -> InstanceState:
        """Hot-plug/unplug VRRP ports to match the router's networks."""
        now = self._clock()
        if self._replug_started is None:
            self._replug_started = now
        router = self._fetch_router()
        if router is not None and self._adopt():
            if isinstance(router, RouterGone):
                self._replug_started = None
                return self._set(S.GONE)
            wanted = networks_of(router)
            try:
                for vm in self._vms.values():
                    self._cloud.plug(vm, wanted)
            except CloudError as exc:
                self._log.warning("hot-plug failed: %s", exc)
                self._replug_started = None
                return self._set(S.RESTART)
            live = [vm for vm in self._vms.values() if vm.alive and vm.address]
            try:
                ok = bool(live) and all(self._matches(vm, wanted, self._ifaces(vm)) for vm in live)
            except CloudError:
                ok = False
            if ok:
                self._log.info("interfaces match the router's networks")
                self._replug_started = None
                return self._set(S.UP)
        if now - self._replug_started >= self._settings.hotplug_timeout:
            waited = now - self._replug_started
            self._log.warning("interfaces still wrong %.0fs after replug", waited)
            self._replug_started = None
            return self._set(S.RESTART)
        return self._set(S.REPLUG)

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
        return self._set(S.GONE if isinstance(router, RouterGone) else S.DOWN)

    def set_error(self, reason: str) -> InstanceState:
        self._error_reason = reason
        self._log.warning("entering ERROR: %s", reason)
        return self._set(S.ERROR)

    def clear_error(self) -> InstanceState:
        self._error_reason = ""
        self._attempts = 0
        return self._set(S.DOWN)

    def reset_boot_counter(self) -> None:
        self._attempts = 0

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
    @property
    def pushed_digests(self) -> Mapping[str, bytes]:
        """The digest of the last payload each VM accepted, by server id (payloads themselves
        are not kept: a few KiB per router, times 10,000)."""
        return dict(self._pushed)

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
        if router is None or self._state is not S.CONFIGURED:
            return False
        if {s.id for s in listing.servers} != set(self._vms):
            return True
        live = [vm for vm in self._members() if vm.alive and vm.address]
        return bool(live) and self._differs(router, live, listing)

    def _differs(self, router: Router, live: list[Vm], listing: Seed | None = None) -> bool:
        """The config ``router`` implies for the ``live`` VMs is not the one they accepted (or
        their interfaces need a replug); an unreadable input claims nothing."""
        try:
            # On the poll path: a hung appliance must not hold the router for INTERFACES_TIMEOUT.
            desired = self._payloads(router, live, self._settings.alive_timeout, listing=listing)
        except CloudError as exc:
            self._log.info("config not compared: %s", exc)
            return False
        if desired is None:
            return True
        return any(self._pushed.get(sid) != config_digest(payload)
                   for sid, payload in desired.items())

    # ------------------------------------------------------------------ helpers
    @property
    def _required(self) -> int:
        return 2 if self._ha else 1

    def _set(self, state: InstanceState) -> InstanceState:
        self._state = state
        if self._guard is not None and state in _SLOT_ENDS:
            self._guard.free_slot(self.router_id)
            if state is S.GONE:
                self._guard.forget(self.router_id)
        status = NEUTRON_STATUS.get(state)
        if status is None or status == self._neutron_status:
            return state
        if state is S.UP and self._neutron_status == "ACTIVE":
            return state  # answering, its config being (re)pushed: it still routes, as shown
        try:
            self._network.set_router_status(self.router_id, status)
        except CloudError as exc:
            self._log.warning("could not show status %s in Neutron: %s", status, exc)
        else:
            self._neutron_status = status
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
        if self._neutron_status is None and router.shown_status:
            # Neutron already shows a status (set by a previous run): pushed only if it changes.
            self._neutron_status = router.shown_status
        if refresh:
            self._refreshed = (router, self._clock())
        return router

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

    def _probe(self) -> None:
        pending = [vm for vm in self._vms.values() if vm.address and vm.server.status == "ACTIVE"]
        for vm in self._vms.values():
            vm.alive = False
        # Answers of asynchronous probes (already retried) are final: not asked again.
        known, self._probes = self._known_probes(), None
        for _ in range(max(1, self._settings.max_retries)):
            for vm in pending:
                alive = known.get(vm.address)
                if alive is None:
                    alive = self._appliance.is_alive(vm.address, self._settings.alive_timeout)
                vm.alive = alive
                vm.answered = vm.answered or vm.alive
                vm.lost = vm.lost and not vm.alive
            pending = [vm for vm in pending if not vm.alive and vm.address not in known]
            if not pending:
                break

    def _known_probes(self) -> dict[str, bool]:
        kept = self._probes
        if kept is None or self._clock() - kept[1] > _FRESH_PROBES:
            return {}
        return kept[0]

    def _observe_liveness(self) -> None:
        """Tell the storm guard whether this router, once answering, still answers."""
        if self._guard is None:
            return
        known = [vm for vm in self._vms.values() if vm.answered or vm.lost]
        if known:
            self._guard.observe(self.router_id, any(vm.alive for vm in known))

    def _may_replace(self, vm: Vm, why: str) -> bool:
        """Whether a silent VM may be deleted now (the breaker holds automatic rebuilds)."""
        if self._guard is None or self._guard.may_replace(self.router_id):
            if vm.held:
                # Held while the breaker was open, which has just closed: the network is
                # back, so it gets a whole timeout again to answer before it is replaced.
                vm.held, vm.since = False, self._clock()
                self._log.info("VM %s: breaker closed, judged again from now", vm.name)
                return False
            return True
        if not vm.held:
            vm.held = True
            self._log.warning("VM %s %s; replacement held: circuit breaker open", vm.name, why)
        return False

    def _ifaces(self, vm: Vm, timeout: float = INTERFACES_TIMEOUT, cached: bool = False
                ) -> list[Interface]:
        """The VM's interfaces from its appliance; ``cached``: as last read, if ever (they
        change only when we plug or unplug, and a push then reads them again)."""
        if cached and vm.interfaces is not None:
            return vm.interfaces
        vm.interfaces = self._appliance.get_interfaces(vm.address, timeout)
        return vm.interfaces

    @staticmethod
    def _matches(vm: Vm, wanted: Sequence[str], interfaces: Sequence[Interface]) -> bool:
        return {p.network_id for p in vm.ports} == set(wanted) and {
            i.lladdr.lower() for i in interfaces
        } == vm.macs

    def _payloads(
        self, router: Router, live: list[Vm], timeout: float = INTERFACES_TIMEOUT,
        listing: Seed | None = None,
    ) -> dict[str, dict[str, Any]] | None:
        """Each reachable live VM's payload; None if one's interfaces need a replug.

        ``listing``: a drift sweep's reads (networks, their ports) and the VMs' interfaces as
        last read stand in for every call."""
        wanted = networks_of(router)
        ifaces: dict[str, list[Interface]] = {}
        for vm in live:
            try:
                ifaces[vm.id] = self._ifaces(vm, timeout, cached=listing is not None)
            except CloudError as exc:
                self._log.warning("could not read interfaces of %s: %s", vm.name, exc)
                continue
            if not self._matches(vm, wanted, ifaces[vm.id]):
                self._log.info("interfaces of %s do not match the router", vm.name)
                return None
        mgt_id = self._settings.management_network_id
        shared = {mgt_id, router.external_port.network_id if router.external_port else mgt_id}
        seed = listing
        if seed is None:
            seed, self._seed = self._seed, None  # the cold start's reads serve one push at most
        known = seed.networks if seed is not None else {}
        known_ports = seed.network_ports if seed is not None else {}
        networks = {n: known.get(n) or self._get_network(n, n in shared) for n in [mgt_id, *wanted]}
        network_ports = {
            p.network_id: known_ports[p.network_id] if p.network_id in known_ports
            else self._network.list_ports(network_id=p.network_id)
            for p in router.internal_ports
        }
        members = self._members()
        payloads = {}
        for vm in live:
            if vm.id not in ifaces or vm.management_port is None:
                continue
            by_mac = {i.lladdr.lower(): i.ifname for i in ifaces[vm.id]}
            iface_map = {p.network_id: by_mac[p.mac_address.lower()] for p in vm.ports}
            iface_map[mgt_id] = by_mac[vm.management_port.mac_address.lower()]
            ha = None
            if router.ha:
                peers = [m.address for m in members if m is not vm and m.address]
                ha = {"peers": peers, "priority": 100 if vm is members[0] else 50}
            payloads[vm.id] = build_router_config(
                router, management_port=vm.management_port, networks=networks,
                network_ports=network_ports, iface_map=iface_map, settings=self._settings,
                ha_config=ha,
            )
        return payloads

    def _get_network(self, network_id: str, shared: bool) -> NetworkInfo:
        if shared and self._shared_networks is not None:
            return self._shared_networks.get(network_id)
        return self._network.get_network(network_id)

    def _push_failed(self, why: str) -> InstanceState:
        self._push_failures += 1
        if self._push_failures >= self._settings.max_retries:
            self._log.warning(
                "config push failed %d times (%s); restarting", self._push_failures, why
            )
            self._push_failures = 0
            return self._set(S.RESTART)
        return self._set(S.UP)

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
