"""The ports: one small protocol per outside system, with only the calls the core makes.

Adapters translate vendor exceptions into :mod:`astara_actors.errors` at the edge; every
method may raise the subsystem's :class:`~astara_actors.errors.CloudError` branch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from astara_actors.core.events import InstanceState
from astara_actors.core.models import FloatingIp, Interface, NetworkInfo, Port, Router, Server

__all__ = ["Appliance", "Clock", "Compute", "Instance", "Network"]

Clock = Callable[[], float]


class Network(Protocol):
    """Neutron."""

    def list_routers(self) -> list[tuple[str, str]]:
        """Every router as ``(router_id, tenant_id)``."""
        ...

    def get_router(self, router_id: str) -> Router:
        """The router with its gateway/interface ports and FIPs; raises ``RouterGone``."""
        ...

    def get_network(self, network_id: str) -> NetworkInfo: ...

    def list_ports(
        self,
        *,
        device_id: str | None = None,
        network_id: str | None = None,
        name: str | None = None,
        oldest_first: bool = False,
    ) -> list[Port]:
        """Ports matching every filter given.

        ``oldest_first`` orders them by creation (Neutron's ``created_at``, then id), so that
        processes that find the same duplicates agree on which one is the original.
        """
        ...

    def list_port_names(self) -> list[tuple[str, str]]:
        """Every port of the cloud as ``(port_id, name)`` and nothing more: what the orphan
        sweep reads (a fraction of the whole ports' decoding)."""
        ...

    def list_floating_ips(self, router_id: str) -> list[FloatingIp]: ...

    def create_port(
        self,
        *,
        name: str,
        network_id: str,
        tenant_id: str = "",
        subnet_id: str | None = None,
        device_id: str = "",
        device_owner: str = "",
    ) -> Port:
        """An admin-state-up port with port security off and no security groups.

        With ``subnet_id`` the port gets an address from that subnet (management ports);
        without, it gets no fixed IP (VRRP ports: the appliance owns the router's addresses).
        ``device_id``/``device_owner``, when given, are set at creation (the orchestrator's
        own ``ASTARA:RUG:SERVICE`` port: its host and ``network:astara``).
        """
        ...

    def update_port(self, port_id: str, *, name: str, if_revision: int | None = None) -> Port:
        """Rename a port. With ``if_revision``, only if its ``revision_number`` is still that
        one (Neutron's ``If-Match: revision_number=N``): ``RevisionConflict`` when it changed
        since it was read — how one writer among several wins (a hot spare is handed out by
        renaming its management port). A port that is gone raises ``NetworkError``."""
        ...

    def delete_port(self, port_id: str) -> None:
        """Delete a port; a port that is already gone is not an error."""
        ...

    def set_router_status(self, router_id: str, status: str, shown: str | None = None) -> None:
        """Show the router's status in Neutron (ACTIVE, BUILD, DOWN, ERROR); ``shown``: the
        status Neutron shows now as the caller last saw it ("" none; None: not known)."""
        ...


class Compute(Protocol):
    """Nova."""

    def create_server(
        self,
        *,
        name: str,
        image_id: str,
        flavor_id: str,
        port_ids: list[str],
        user_data: str,
        config_drive: bool = True,
    ) -> Server: ...

    def get_server(self, server_id: str) -> Server | None:
        """The server, or ``None`` once it no longer exists."""
        ...

    def list_servers(self, name_prefix: str) -> list[Server]:
        """Servers whose name starts with ``name_prefix`` (adopts VMs after a restart)."""
        ...

    def list_server_names(self, name_prefix: str) -> list[tuple[str, str]]:
        """Servers whose name starts with ``name_prefix`` as ``(server_id, name)``, deleted
        ones left out: Nova's short listing, what the orphan sweep reads."""
        ...

    def delete_server(self, server_id: str) -> None:
        """Ask Nova to delete the server; returns at once (deletion takes time)."""
        ...

    def rename_server(self, server_id: str, name: str) -> Server:
        """Give the server a new name (Nova's ``PUT /servers/{id}``); a taken hot spare is
        named for its router, so that adoption finds it."""
        ...

    def attach_interface(self, server_id: str, port_id: str) -> None: ...

    def detach_interface(self, server_id: str, port_id: str) -> None: ...


class Appliance(Protocol):
    """The REST agent in a service VM, reached on its management address."""

    def is_alive(self, address: str, timeout: float) -> bool:
        """``GET /v1/firewall/rules`` answered 200 within ``timeout``; never raises."""
        ...

    def get_interfaces(self, address: str, timeout: float) -> list[Interface]:
        """``GET /v1/system/interfaces``."""
        ...

    def put_config(self, address: str, config: Mapping[str, Any], timeout: float) -> None:
        """``PUT /v1/system/config`` as JSON; raises ``ApplianceError`` unless 200."""
        ...

    # Optional: ``probe_async(addresses, timeout, attempts, done)`` probes without blocking
    # the caller and calls ``done(address -> answered)`` once (HttpAppliance has it).


class Instance(Protocol):
    """The service VM(s) of one router, as the state machine drives them.

    Every call is bounded (its cloud calls have timeouts) and never waits for something that
    takes long: a VM that is still booting or still being deleted is reported as such and the
    state machine comes back later. Expected failures (``CloudError``) are handled inside and
    reflected in the returned state; anything else propagates and crashes the router's actor.
    """

    @property
    def state(self) -> InstanceState: ...

    @property
    def attempts(self) -> int:
        """Boots since the router was last configured (or the counter was reset)."""
        ...

    def update_state(self) -> InstanceState:
        """Refresh from Neutron, Nova and the appliance; GONE if the router was deleted.

        Enforces the boot timeout: a VM that has not answered ``boot_timeout`` seconds after
        it was booted (or first seen) is deleted and the state becomes DOWN.
        """
        ...

    def sync(self) -> InstanceState:
        """``update_state`` for a new (or restarted) actor before its first traversal; the
        traversal's own refresh right after it, within a second, reuses it (no second read)."""
        ...

    def check_alive(self) -> InstanceState:
        """The poll's fast path: a CONFIGURED router whose VMs all answer the probe stays
        CONFIGURED without reading Neutron or Nova; anything else is a full ``update_state``."""
        ...

    def due_in(self) -> float | None:
        """Seconds until the soonest timeout of a VM that does not answer runs out (its boot
        timeout, or dead_vm_timeout once it was lost); None when no VM waits on one."""
        ...

    def probe_async(self, done: Callable[[Mapping[str, bool]], None]) -> bool:
        """Start the probes ``check_alive`` would make, without blocking: ``done(address ->
        answered)`` is called once, from another thread, after the appliance's retries.
        False (and ``done`` never called) when the fast path does not apply or the appliance
        cannot probe asynchronously: the caller then checks the blocking way."""
        ...

    def probed(self, results: Mapping[str, bool]) -> None:
        """Hand over ``probe_async``'s answers: the next check (``check_alive``,
        ``update_state``) uses them, while fresh, instead of probing again."""
        ...

    def drifted(self, listing: Any) -> bool:
        """A drift sweep (``inventory.Seed`` of this router from a listing of the whole cloud):
        True if a CONFIGURED router's pushed config is not the one the listing implies, or the
        listing disagrees about its VMs. No Neutron or Nova call."""
        ...

    def boot(self, image_id: str | None = None) -> InstanceState:
        """Create the missing VM(s) with their ports; BOOTING, or DOWN if Nova refused."""
        ...

    def configure(self) -> InstanceState:
        """One config push to every live VM.

        CONFIGURED or DEGRADED on success; REPLUG if the VM's interfaces do not match the
        router's networks; UP if the push failed and should be retried later; RESTART after
        ``max_retries`` consecutive failed pushes; GONE or DOWN if the router or VM vanished.
        """
        ...

    def replug(self) -> InstanceState:
        """Hot-plug/unplug VRRP ports to match the router's networks.

        UP when the appliance shows the expected interfaces; REPLUG while waiting for it
        (the state machine retries); RESTART if it did not within ``hotplug_timeout``.
        """
        ...

    def unplug_stale(self) -> int:
        """Delete at once the VRRP ports on networks the router no longer has (an interface
        was removed), ahead of the replug and config push of the next traversal: a tenant may
        be waiting to delete such a network (Neutron answers 409 NetworkInUse while our port is
        on it). Reads the router's ports (one call); returns how many ports went. The port
        goes first, the VM's interface is tidied after (a detach Nova refuses is fine: it
        unplugs deleted ports itself); a port Neutron would not delete is logged and left to
        the replug."""
        ...

    def stop(self) -> InstanceState:
        """Delete the VM(s) and their ``ASTARA:*`` ports without waiting.

        DOWN (or GONE when the router was deleted) once every VM is gone; otherwise the
        current state, and the state machine calls ``stop`` again later.
        """
        ...

    def set_error(self, reason: str) -> InstanceState:
        """Enter ERROR (status pushed to Neutron)."""
        ...

    def clear_error(self) -> InstanceState:
        """Leave ERROR: boot counter reset, state DOWN."""
        ...

    def reset_boot_counter(self) -> None: ...

    def config_drifted(self) -> bool:
        """The config Neutron now implies differs from what the VM(s) last accepted."""
        ...

    def dump(self) -> dict[str, object]:
        """Servers, management addresses and counters, for ``router show``."""
        ...
