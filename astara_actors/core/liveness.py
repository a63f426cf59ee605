"""Whether a router's VMs answer: probes (blocking or asynchronous), the boot and dead-VM
timeouts' bookkeeping on each :class:`~astara_actors.core.vms.Vm`, and the rebuild guard's view.

One per router, owned by its :class:`~astara_actors.core.instance.InstanceManager`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from astara_actors.config.settings import Settings
from astara_actors.core.ports import Appliance, Clock
from astara_actors.core.rebuild_guard import RebuildGuard
from astara_actors.core.vms import Vm

__all__ = ["Liveness"]

_FRESH_PROBES = 2.0  # seconds: asynchronous probe answers stand in for the next check's probes


class Liveness:
    """Probes a router's VMs through the ``Appliance`` port and keeps the answers of the last
    asynchronous probes for the check that follows."""

    __slots__ = ("_appliance", "_clock", "_guard", "_log", "_probes", "_router_id", "_settings")

    def __init__(
        self,
        router_id: str,
        *,
        appliance: Appliance,
        settings: Settings,
        clock: Clock,
        log: logging.Logger | logging.LoggerAdapter[Any],
        guard: RebuildGuard | None,
    ) -> None:
        self._router_id = router_id
        self._appliance = appliance
        self._settings = settings
        self._clock = clock
        self._log = log
        self._guard = guard  # the rebuild guard shared by the process's routers (None: off)
        # The answers of the last asynchronous probes (address -> answered) and when they came.
        self._probes: tuple[dict[str, bool], float] | None = None

    def probe(self, vms: Iterable[Vm]) -> None:
        """Probe every ACTIVE VM with an address (``max_retries`` rounds for the silent ones);
        sets ``alive``, ``answered`` and ``lost`` on each."""
        vms = list(vms)
        pending = [vm for vm in vms if vm.address and vm.server.status == "ACTIVE"]
        for vm in vms:
            vm.alive = False
        # Answers of asynchronous probes (already retried) are final: not asked again.
        known, self._probes = self.known(), None
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

    def all_answer(self, vms: Iterable[Vm]) -> bool:
        """The poll's fast path: one probe per VM (or the fresh asynchronous answer), stopping
        at the first silent one; True if every VM answered."""
        timeout = self._settings.alive_timeout
        known = self.known()
        for vm in vms:
            alive = known.get(vm.address)
            if alive is None:
                alive = self._appliance.is_alive(vm.address, timeout)
            if not alive:
                return False
        self._probes = None
        if self._guard is not None:
            self._guard.observe(self._router_id, True)
        return True

    def start_async(self, vms: list[Vm], done: Callable[[Mapping[str, bool]], None]) -> bool:
        """Start the probes without blocking, if the appliance adapter can; False if not."""
        start = getattr(self._appliance, "probe_async", None)
        if start is None:
            return False
        start(
            [vm.address for vm in vms],
            self._settings.alive_timeout,
            max(1, self._settings.max_retries),
            done,
        )
        return True

    def keep(self, results: Mapping[str, bool]) -> None:
        """Keep the answers of :meth:`start_async` for the check that follows."""
        self._probes = (dict(results), self._clock())

    def known(self) -> dict[str, bool]:
        """The kept asynchronous answers, if fresh."""
        kept = self._probes
        if kept is None or self._clock() - kept[1] > _FRESH_PROBES:
            return {}
        return kept[0]

    def observe(self, vms: Iterable[Vm]) -> None:
        """Tell the rebuild guard whether this router, once answering, still answers."""
        if self._guard is None:
            return
        known = [vm for vm in vms if vm.answered or vm.lost]
        if known:
            self._guard.observe(self._router_id, any(vm.alive for vm in known))

    def may_replace(self, vm: Vm, why: str) -> bool:
        """Whether a silent VM may be deleted now (the breaker holds automatic rebuilds)."""
        if self._guard is None or self._guard.may_replace(self._router_id):
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

    def due_in(self, vms: Iterable[Vm]) -> float | None:
        """Seconds until a silent VM's timeout runs out, None if none is silent."""
        now, due = self._clock(), None
        for vm in vms:
            if vm.answered:
                continue
            left = max(0.0, vm.since + self.limit(vm) - now)
            due = left if due is None else min(due, left)
        return due

    def limit(self, vm: Vm) -> float:
        """A VM that answered once and went silent is judged sooner than a fresh boot."""
        return self._settings.dead_vm_timeout if vm.lost else self._settings.boot_timeout
