"""The simulated Nova: servers that boot, fail and go away on an injected clock.

It refuses what Nova 34 refuses, with its messages (the REAL captures in
``tests/fixtures/nova-api`` are the reference): a boot must name a known flavor and image and
free ports that have a fixed IP; interfaces attach synchronously to an ACTIVE server and detach
asynchronously (``detach_delay`` seconds later, as Nova's compute service does it after the API
answered 202); the ports of a deleted server are kept, unbound. A port Neutron deletes while it
is plugged (its ``network-vif-deleted`` event) is unplugged as asynchronously. A server may be
renamed in any state (``PUT /servers/{id}``, :meth:`NovaModel.update`), as Nova allows it.

Status is evaluated lazily from the clock when a server is read (no thread or timer per
server); :meth:`NovaModel.tick` does the same for servers nobody reads, so the transition
callbacks (``on_active``, ``on_gone``, ``on_ports_changed``) fire even for them. The API layer
is :mod:`astara_actors.sim.nova.api`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from astara_actors.sim.contracts import Caller, PortDirectory

__all__ = [
    "NOVA_OWNER",
    "UNSET",
    "Flavor",
    "NovaFault",
    "NovaModel",
    "ServerCallback",
    "VifEvents",
]

NOVA_OWNER = "compute:nova"
ServerCallback = Callable[[dict[str, Any]], None]
_NO_VALID_HOST = "No valid host was found. "
# Neutron's ip_allocation values with which a port may boot without an address.
_IPLESS_ALLOCATIONS = frozenset({"deferred", "none"})
_VM_STATES = {"BUILD": "building", "ACTIVE": "active", "ERROR": "error"}


@runtime_checkable
class VifEvents(Protocol):
    """A port directory that reports deleted ports of servers (the simulated Neutron does)."""

    def on_vif_deleted(self, callback: Callable[[str, str], None]) -> None: ...


class _Unset:
    """The type of :data:`UNSET`: an argument not given (None means "no description")."""


UNSET = _Unset()


class NovaFault(Exception):
    """Raised when Nova refuses a request; ``code`` is the HTTP status it answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Flavor:
    """A flavor as servers embed it (microversion 2.47+); ``id`` is what ``flavorRef`` names."""

    id: str
    name: str
    vcpus: int = 1
    ram: int = 512
    disk: int = 1
    ephemeral: int = 0
    swap: int = 0
    extra_specs: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "vcpus": self.vcpus,
            "ram": self.ram,
            "disk": self.disk,
            "ephemeral": self.ephemeral,
            "swap": self.swap,
            "extra_specs": dict(self.extra_specs),
        }


@dataclass(slots=True)
class _Server:
    id: str
    name: str
    project_id: str
    user_id: str
    image_id: str
    flavor: Flavor
    config_drive: bool
    user_data: str | None
    metadata: dict[str, str]
    description: str | None
    hostname: str  # the guest's, derived from the name
    reservation_id: str
    port_ids: list[str]  # plugged, in plugging order (those being detached included)
    then_attach: list[str]  # plugged when the server becomes ACTIVE (a simulator shortcut)
    seq: int
    created_at: float  # self.clock() time
    created: str  # wall time, Nova's format
    updated: str
    fails: bool
    status: str = "BUILD"
    fault: dict[str, Any] | None = None
    deleting_at: float | None = None
    launched: str | None = None  # wall time it became ACTIVE
    detaching: dict[str, float] = field(default_factory=dict)  # port id -> clock() of the request
    announced: bool = field(default=False)  # on_active fired
    key_name: str | None = None  # the keypair it was booted with, and that key's public half
    key_data: str | None = None
    placed: bool = False  # a tenant's instance the simulator placed (see NovaModel.create)


_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")


class _Literal:
    """``re.compile(text).search`` for a ``text`` without regular-expression syntax."""

    def __init__(self, text: str) -> None:
        self.text = text

    def search(self, name: str) -> bool:
        return self.text in name


def _stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def sanitize_hostname(name: str, default: str) -> str:
    """The guest hostname Nova derives from a server name (``nova.utils.sanitize_hostname``)."""
    text = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    text = re.sub(r"[ _.]", "-", text)
    text = re.sub(r"[^\w.-]+", "", text).lower().strip(".-")
    return text or default[:63]


def _reservation_id(server_id: str) -> str:
    """``r-`` and 8 characters, as Nova's; derived from the id, not drawn from the rng."""
    return "r-" + hashlib.sha1(server_id.encode(), usedforsecurity=False).hexdigest()[:8]


class NovaModel:
    """Servers, thread-safe; ports come from (and are bound through) a :class:`PortDirectory`.

    ``images`` and ``flavors`` are what a boot may name (None: anything, for unit tests that
    build a model by hand); ``network_name(network_id)`` labels a server's ``addresses`` as
    Nova does (None: keyed by network id).
    """

    def __init__(
        self,
        ports: PortDirectory,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        boot_delay: float = 0.0,
        delete_delay: float = 0.0,
        detach_delay: float = 0.0,
        boot_failure_rate: float = 0.0,
        images: Iterable[str] | None = None,
        flavors: Iterable[Flavor | str] | None = None,
        network_name: Callable[[str], str | None] | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        rng: Callable[[], float] = random.random,
        host: str = "sim-compute",
        on_active: ServerCallback | None = None,
        on_gone: ServerCallback | None = None,
        on_ports_changed: ServerCallback | None = None,
        on_request: Callable[[str, str, str], None] | None = None,
        on_renamed: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.ports = ports
        self.clock = clock
        self.wall = wall
        self.boot_delay = boot_delay
        self.delete_delay = delete_delay
        self.detach_delay = detach_delay
        self.boot_failure_rate = boot_failure_rate
        self.host = host
        self.on_active = on_active
        self.on_gone = on_gone
        self.on_ports_changed = on_ports_changed
        # ("boot" | "delete", server id, server name) when a create / delete is accepted
        self.on_request = on_request
        # (the previous name, the server) after a server was renamed (PUT /servers/{id})
        self.on_renamed = on_renamed
        self._images = None if images is None else frozenset(images)
        self._flavors = (
            None
            if flavors is None
            else {f.id: f for f in (Flavor(f, f) if isinstance(f, str) else f for f in flavors)}
        )
        self._network_name = network_name
        self._labels: dict[str, str] = {}  # network id -> name, as Nova's info cache keeps it
        self._new_id = new_id
        self._rng = rng
        self._lock = threading.RLock()
        self._fire_lock = threading.RLock()
        self._events: deque[tuple[ServerCallback | None, dict[str, Any]]] = deque()
        self._servers: dict[str, _Server] = {}
        self._pending: set[str] = set()  # BUILD, deleting or detaching: a transition is due
        self._seq = itertools.count()
        self._fail_next = 0
        # (server id, port id, clock()) of network-vif-deleted events not yet applied
        self._vifs_deleted: deque[tuple[str, str, float]] = deque()
        self.changes = 0  # bumped by every change of a server (a kept cloud is saved then)
        if isinstance(ports, VifEvents):  # the simulated Neutron tells us, as Neutron tells Nova
            ports.on_vif_deleted(self.port_deleted)

    # ------------------------------------------------------------------ faults
    def fail_next_boots(self, n: int) -> None:
        """The next ``n`` servers created go to ERROR ("No valid host was found")."""
        with self._lock:
            self._fail_next += n

    # ------------------------------------------------------------------ servers
    def create(
        self,
        caller: Caller,
        *,
        name: str,
        image_id: str,
        flavor_id: str,
        port_ids: Iterable[str] = (),
        config_drive: bool = False,
        user_data: str | None = None,
        metadata: Mapping[str, str] | None = None,
        description: str | None = None,
        then_attach: Iterable[str] = (),
        key_name: str | None = None,
        key_data: str | None = None,
        placed: bool = False,
    ) -> dict[str, Any]:
        """Accept a boot request (the server is BUILD, its ports bound) or refuse it as Nova does.

        ``then_attach`` is a simulator shortcut, not an API request: ports plugged the moment
        the server is ACTIVE, as an ``os-interface`` attach right then would (they may have no
        fixed IP, as such an attach allows). ``key_name``/``key_data``: the keypair (name and
        public key) the server was booted with, as Nova embeds it in the instance.

        ``placed`` is another shortcut, for the tenants' own instances: the server is ACTIVE at
        once (no boot delay, never failed), its image and flavor need not be ones a boot may
        name, and neither ``on_request`` nor ``on_active``/``on_gone`` fires for it (it is not
        a service VM: it has no appliance).
        """
        port_ids, later = list(port_ids), list(then_attach)
        with self._op():
            if placed:
                flavor = (self._flavors or {}).get(flavor_id) or Flavor(flavor_id, flavor_id)
                for pid in port_ids:
                    self._usable(pid, missing=400, needs_ip=True)
            else:
                flavor = self._check_boot(image_id, flavor_id, port_ids, later)
            now, sid = _stamp(self.wall()), self._new_id()
            server = _Server(
                id=sid,
                name=name,
                project_id=caller.project_id,
                user_id=caller.user_id,
                image_id=image_id,
                flavor=flavor,
                config_drive=config_drive,
                user_data=user_data,
                metadata=dict(metadata or {}),
                description=description,
                hostname=sanitize_hostname(name, f"Server-{sid}"),
                reservation_id=_reservation_id(sid),
                port_ids=port_ids,
                then_attach=later,
                seq=next(self._seq),
                created_at=self.clock(),
                created=now,
                updated=now,
                fails=False if placed else self._next_boot_fails(),
                key_name=key_name,
                key_data=key_data,
                placed=placed,
            )
            if placed:
                server.status, server.launched = "ACTIVE", now
            self._servers[server.id] = server
            self.changes += 1
            for pid in port_ids:
                self.ports.bind(pid, server.id, NOVA_OWNER, self.host)
            if placed:
                return self._view(server)
            self._pending.add(server.id)
            if self.on_request is not None:  # before its on_active (a zero boot delay)
                self.on_request("boot", server.id, name)
            self._advance(server)
            view = self._view(server)
        return view

    def get(self, server_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """The server as a dict (see :meth:`_view`); raises 404 ``NovaFault`` if not visible."""
        with self._op():
            view = self._view(self._visible(server_id, caller))
        return view

    def servers(
        self,
        caller: Caller | None = None,
        *,
        name: str | None = None,
        all_tenants: bool = False,
        project_id: str | None = None,
        status: str | None = None,
        marker: str | None = None,
        limit: int | None = None,
        brief: bool = False,
    ) -> list[dict[str, Any]]:
        """Servers newest first; ``name`` is a regular expression searched in the name.

        ``marker``/``limit`` page as Nova does: up to ``limit`` servers after ``marker``.
        ``brief``: ``id`` and ``name`` only (``GET /servers``), no view built.
        """
        pattern: re.Pattern[str] | _Literal | None
        try:
            pattern = re.compile(name) if name else None
        except re.error as e:
            raise NovaFault(400, f"Invalid regular expression for name: {e}") from None
        if name and not _REGEX_SYNTAX.intersection(name):
            pattern = _Literal(name)  # the same answer, several times faster over 10,000 servers
        scope = None
        if caller is not None and not (caller.is_admin and all_tenants):
            scope = caller.project_id
        elif project_id:
            scope = project_id
        with self._op():
            self._advance_pending()
            found = [
                s
                for s in reversed(self._servers.values())  # insertion order is age order
                if (scope is None or s.project_id == scope)
                and (pattern is None or pattern.search(s.name))
                and (status is None or s.status == status.upper())
            ]
            if marker is not None:
                ids = [s.id for s in found]
                if marker not in ids:
                    raise NovaFault(400, f"marker [{marker}] not found")
                found = found[ids.index(marker) + 1 :]
            if brief:
                return [{"id": s.id, "name": s.name} for s in found[:limit]]
            return [self._view(s) for s in found[:limit]]

    def update(
        self,
        server_id: str,
        caller: Caller | None = None,
        *,
        name: str | None = None,
        description: str | None | _Unset = UNSET,
    ) -> dict[str, Any]:
        """``PUT /servers/{id}``: a new name and/or description (the API layer has validated
        them), in any state, as Nova's ``update_instance`` allows; 404 when not visible.
        ``on_renamed(previous name, server)`` fires when the name changed."""
        with self._op():
            server = self._visible(server_id, caller)
            previous = server.name
            if name is not None:
                server.name = name
            if not isinstance(description, _Unset):
                server.description = description
            server.updated = _stamp(self.wall())
            self.changes += 1
            view = self._view(server)
            if name is not None and name != previous and self.on_renamed is not None:
                self._events.append((functools.partial(self.on_renamed, previous), view))
        return view

    def delete(self, server_id: str, caller: Caller | None = None) -> None:
        """Start deleting; the server disappears ``delete_delay`` seconds later."""
        with self._op():
            server = self._visible(server_id, caller)
            if server.deleting_at is None:
                server.deleting_at = self.clock()
                server.updated = _stamp(self.wall())
                self.changes += 1
                self._pending.add(server.id)
                if self.on_request is not None and not server.placed:
                    self.on_request("delete", server.id, server.name)
                self._advance(server)

    def tick(self) -> None:
        """Apply every transition that is due (for servers nobody has read) and fire callbacks."""
        with self._op():
            self._advance_pending()

    def __len__(self) -> int:
        with self._lock:
            return len(self._servers)

    def count(self, *, placed: bool) -> int:
        """How many servers are (or are not) ``placed`` tenant instances (see :meth:`create`)."""
        with self._lock:
            return sum(s.placed == placed for s in self._servers.values())

    # ------------------------------------------------------------------ interfaces
    def interfaces(self, server_id: str, caller: Caller | None = None) -> list[dict[str, Any]]:
        """The ports bound to the server, as Nova lists them from Neutron (by port id)."""
        with self._op():
            server = self._visible(server_id, caller)
            found = [self._attachment(pid) for pid in sorted(server.port_ids)]
            return [a for a in found if a is not None and a.pop("device_id") == server.id]

    def interface(
        self, server_id: str, port_id: str, caller: Caller | None = None
    ) -> dict[str, Any]:
        """One port of the server (``GET .../os-interface/{port_id}``), or Nova's 404."""
        with self._op():
            server = self._visible(server_id, caller)
            attachment = self._attachment(port_id)
            if attachment is None:
                raise NovaFault(404, f"Port id {port_id} could not be found.")
            if attachment.pop("device_id") != server.id:
                raise NovaFault(404, f"Instance {server_id} does not have a port with id {port_id}")
            return attachment

    def attach(self, server_id: str, port_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """Plug an existing port (with or without an address) into an ACTIVE server.

        Nova answers once it is plugged, so the port is bound when this returns.
        """
        with self._op():
            server = self._visible(server_id, caller)
            self._require_active(server, "attach_interface")
            self._usable(port_id, missing=404, needs_ip=False)
            self._plug(server, port_id)
            self._events.append((self.on_ports_changed, self._view(server)))
            attachment = self._attachment(port_id)
        assert attachment is not None
        attachment.pop("device_id")
        return attachment

    def detach(self, server_id: str, port_id: str, caller: Caller | None = None) -> None:
        """Start unplugging a port from an ACTIVE server, as Nova's API does (202, then a cast).

        The port stays plugged, listed and bound ``detach_delay`` seconds; then it is unbound
        and ``on_ports_changed`` fires. A port that is not attached changes nothing: Nova's
        compute service fails in the background after its API has answered 202.
        """
        with self._op():
            server = self._visible(server_id, caller)
            self._require_active(server, "detach_interface")
            if port_id in server.port_ids and port_id not in server.detaching:
                server.detaching[port_id] = self.clock()
                self.changes += 1
                self._pending.add(server.id)
                self._advance(server)

    def port_deleted(self, server_id: str, port_id: str) -> None:
        """Neutron deleted a port plugged into ``server_id`` (``network-vif-deleted``, which
        Neutron sends to ``os-server-external-events``): Nova's compute service unplugs the
        interface, ``detach_delay`` seconds later as for a detach, then ``on_ports_changed``
        fires. Never waits: it may be called with Neutron's lock held (the event is applied by
        the next operation or :meth:`tick`). An unknown server or port is ignored, as Nova does.
        """
        self._vifs_deleted.append((server_id, port_id, self.clock()))

    def _apply_vifs_deleted(self) -> None:
        while self._vifs_deleted:
            server_id, port_id, at = self._vifs_deleted.popleft()
            server = self._servers.get(server_id)
            if server is None or port_id not in server.port_ids:
                continue
            server.detaching.setdefault(port_id, at)
            self._pending.add(server.id)
            self.changes += 1

    # ------------------------------------------------------------------ boot checks
    def _check_boot(
        self, image_id: str, flavor_id: str, port_ids: list[str], later: list[str]
    ) -> Flavor:
        """Nova's checks of a boot, in Nova's order; the flavor it names."""
        seen: set[str] = set()
        for pid in port_ids + later:
            if pid in seen:
                raise NovaFault(
                    400,
                    f"Port ID '{pid}' was specified twice: you cannot attach "
                    "a port multiple times.",
                )
            seen.add(pid)
        flavor = self._flavor(flavor_id)
        if self._images is not None and image_id not in self._images:
            raise NovaFault(400, "Can not find requested image")
        for pid in port_ids:
            self._usable(pid, missing=400, needs_ip=True)
        for pid in later:
            self._usable(pid, missing=404, needs_ip=False)
        return flavor

    def _flavor(self, flavor_id: str) -> Flavor:
        if self._flavors is None:
            return Flavor(flavor_id, flavor_id)
        found = self._flavors.get(flavor_id)
        if found is None:
            raise NovaFault(400, f"Flavor {flavor_id} could not be found.")
        return found

    def _usable(self, port_id: str, *, missing: int, needs_ip: bool) -> None:
        """Refuse a port Nova would not plug: unknown, bound, or (at boot) without an address."""
        port = self.ports.port(port_id)
        if port is None:  # 400 at boot, 404 on attach
            raise NovaFault(missing, f"Port id {port_id} could not be found.")
        if port.get("device_id"):
            raise NovaFault(409, f"Port {port_id} is still in use.")
        if (
            needs_ip
            and not port.get("fixed_ips")
            and port.get("ip_allocation") not in _IPLESS_ALLOCATIONS
        ):
            raise NovaFault(400, f"Port {port_id} requires a FixedIP in order to be used.")

    def _next_boot_fails(self) -> bool:
        fails = self._fail_next > 0 or (
            self.boot_failure_rate > 0 and self._rng() < self.boot_failure_rate
        )
        self._fail_next = max(0, self._fail_next - 1)
        return fails

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _op(self) -> Iterator[None]:
        """Hold the lock for one operation, then fire the callbacks it queued (even on error)."""
        try:
            with self._lock:
                self._apply_vifs_deleted()
                yield
        finally:
            self._drain()

    def _visible(self, server_id: str, caller: Caller | None) -> _Server:
        server = self._servers.get(server_id)
        if server is not None:
            self._advance(server)
            server = self._servers.get(server_id)
        if server is None or (
            caller is not None and not caller.is_admin and server.project_id != caller.project_id
        ):
            raise NovaFault(404, f"Instance {server_id} could not be found.")
        return server

    def _require_active(self, server: _Server, action: str) -> None:
        """Nova's ``check_instance_state``: vm_state active, then no task in progress."""
        vm_state = _VM_STATES.get(server.status, server.status.lower())
        if vm_state != "active":
            attr, state = "vm_state", vm_state
        elif server.deleting_at is not None:
            attr, state = "task_state", "deleting"
        else:
            return
        raise NovaFault(
            409, f"Cannot '{action}' instance {server.id} while it is in {attr} {state}"
        )

    def _plug(self, server: _Server, port_id: str) -> None:
        self.ports.bind(port_id, server.id, NOVA_OWNER, self.host)
        server.port_ids.append(port_id)
        server.updated = _stamp(self.wall())
        self.changes += 1

    def _advance_pending(self) -> None:
        for sid in list(self._pending):
            server = self._servers.get(sid)
            if server is not None:
                self._advance(server)

    def _advance(self, server: _Server) -> None:
        """Apply the transitions the clock says are due; queue their callbacks."""
        now = self.clock()
        if server.status == "BUILD" and now >= server.created_at + self.boot_delay:
            self._finish_build(server)
        if server.detaching:
            self._finish_detaches(server, now)
        if server.deleting_at is not None and now >= server.deleting_at + self.delete_delay:
            self._remove(server)
        elif server.status != "BUILD" and server.deleting_at is None and not server.detaching:
            self._pending.discard(server.id)

    def _finish_build(self, server: _Server) -> None:
        server.updated = _stamp(self.wall())
        self.changes += 1
        if server.fails:
            server.status = "ERROR"
            server.fault = {"code": 500, "message": _NO_VALID_HOST, "created": server.updated}
            for pid in server.port_ids:  # a failed build deallocates its network
                self.ports.unbind(pid)
            return
        server.status = "ACTIVE"
        server.launched = server.updated
        server.announced = True
        self._events.append((self.on_active, self._view(server)))
        later, server.then_attach = server.then_attach, []
        if server.deleting_at is not None:
            return  # nobody attaches to a server being deleted (Nova answers 409)
        plugged = [pid for pid in later if self._free(pid)]
        for pid in plugged:
            self._plug(server, pid)
        if plugged:
            self._events.append((self.on_ports_changed, self._view(server)))

    def _free(self, port_id: str) -> bool:
        port = self.ports.port(port_id)
        return port is not None and not port.get("device_id")

    def _finish_detaches(self, server: _Server, now: float) -> None:
        due = [pid for pid, at in server.detaching.items() if now >= at + self.detach_delay]
        for pid in due:
            del server.detaching[pid]
            server.port_ids.remove(pid)
            self.ports.unbind(pid)
        if due:
            server.updated = _stamp(self.wall())
            self.changes += 1
            if server.deleting_at is None:
                self._events.append((self.on_ports_changed, self._view(server)))

    def _remove(self, server: _Server) -> None:
        """The server is gone; its ports are kept, unbound (they were not Nova's to delete)."""
        del self._servers[server.id]
        self._pending.discard(server.id)
        self.changes += 1
        for pid in server.port_ids:
            self.ports.unbind(pid)
        if server.announced:
            self._events.append((self.on_gone, self._view(server)))

    def _drain(self) -> None:
        # Callbacks run outside the model lock (they may call back into it) and in the order
        # the transitions happened, whichever thread observed them.
        with self._fire_lock:
            while self._events:
                callback, view = self._events.popleft()
                if callback is not None:
                    callback(view)

    def _attachment(self, port_id: str) -> dict[str, Any] | None:
        """Nova's ``interfaceAttachment`` of a port, plus its ``device_id`` (None: no port)."""
        port = self.ports.port(port_id)
        if port is None:
            return None
        return {
            "net_id": port.get("network_id"),
            "port_id": port_id,
            "mac_addr": port.get("mac_address"),
            "port_state": port.get("status"),
            "fixed_ips": [
                {"subnet_id": f.get("subnet_id"), "ip_address": f.get("ip_address")}
                for f in port.get("fixed_ips") or ()
            ],
            "device_id": port.get("device_id") or "",
        }

    def _label(self, network_id: str) -> str:
        """The network's name (Nova's ``addresses`` key); looked up once per network."""
        if self._network_name is None:
            return network_id
        label = self._labels.get(network_id)
        if label is None:
            label = self._network_name(network_id) or network_id
            self._labels[network_id] = label
        return label

    def _networks(self, server: _Server) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
        """``addresses`` by network name, and the security group names of the server's ports.

        Nova shows neither while the server is building (its ports are not yet plugged then),
        nor after a failed build (its network was deallocated).
        """
        addresses: dict[str, list[dict[str, Any]]] = {}
        groups: list[str] = []
        if server.status != "ACTIVE":
            return addresses, groups
        for pid in server.port_ids:
            port = self.ports.port(pid)
            if port is None:
                continue
            entries = addresses.setdefault(self._label(str(port.get("network_id", ""))), [])
            for fixed in port.get("fixed_ips") or ():
                ip = str(fixed.get("ip_address", ""))
                entries.append(
                    {
                        "version": 6 if ":" in ip else 4,
                        "addr": ip,
                        "OS-EXT-IPS:type": "fixed",
                        "OS-EXT-IPS-MAC:mac_addr": port.get("mac_address"),
                    }
                )
            groups.extend("default" for _ in port.get("security_groups") or ())
        return addresses, groups

    def _view(self, server: _Server) -> dict[str, Any]:
        """A plain dict of the server, with the state Nova shows for it."""
        addresses, groups = self._networks(server)
        active = server.status == "ACTIVE"
        if server.deleting_at is not None:
            task_state: str | None = "deleting"
        else:
            task_state = "scheduling" if server.status == "BUILD" else None
        return {
            "id": server.id,
            "name": server.name,
            "status": server.status,
            "project_id": server.project_id,
            "user_id": server.user_id,
            "image_id": server.image_id,
            "flavor_id": server.flavor.id,
            "flavor": server.flavor.as_dict(),
            "config_drive": server.config_drive,
            "user_data": server.user_data,
            "key_name": server.key_name,
            "key_data": server.key_data,
            "metadata": dict(server.metadata),
            "description": server.description,
            "port_ids": list(server.port_ids),
            "created": server.created,
            "updated": server.updated,
            "launched_at": server.launched,
            "vm_state": _VM_STATES.get(server.status, server.status.lower()),
            "task_state": task_state,
            "power_state": 1 if active else 0,
            "fault": dict(server.fault) if server.fault else None,
            "addresses": addresses,
            "security_groups": groups,
            "host": self.host if active else None,
            "hostname": server.hostname,
            "reservation_id": server.reservation_id,
            "instance_name": "" if server.status == "BUILD" else f"instance-{server.seq + 1:08x}",
        }

    # ------------------------------------------------------------------ what a restart keeps
    @property
    def lock(self) -> threading.RLock:
        """The model's lock: held, no server changes (nor, through it, any port binding)."""
        return self._lock

    def snapshot(self) -> dict[str, Any]:
        """Every server and the counters, as plain JSON values (see
        :mod:`astara_actors.sim.persist`). A transition in flight is kept as such (BUILD,
        deleting, detaching): a restore starts its delay again, as a rebooted host would."""
        with self._lock:
            self._apply_vifs_deleted()
            seq = next(self._seq)
            self._seq = itertools.count(seq)
            servers = [_kept(s) for s in self._servers.values()]
            return {"servers": servers, "next_seq": seq, "fail_next": self._fail_next}

    def prepare_restore(self, state: Mapping[str, Any]) -> tuple[Callable[[], None], list[str]]:
        """Read a :meth:`snapshot` (raising if it is malformed, changing nothing): the function
        that installs it, and the servers then running (ACTIVE, announced, not being deleted),
        whose appliances come back. No callback fires for them."""
        now = self.clock()
        servers: dict[str, _Server] = {}
        for kept in state["servers"]:
            server = _restored(kept, now)
            servers[server.id] = server
        seq, fail_next = int(state["next_seq"]), int(state["fail_next"])
        pending = {
            s.id
            for s in servers.values()
            if s.status == "BUILD" or s.deleting_at is not None or s.detaching
        }
        running = [
            s.id
            for s in servers.values()
            if s.status == "ACTIVE" and s.announced and s.deleting_at is None
        ]

        def install() -> None:
            with self._lock:
                self._servers, self._pending = servers, pending
                self._seq, self._fail_next = itertools.count(seq), fail_next
                self._labels.clear()
                self._vifs_deleted.clear()
                self.changes += 1

        return install, running


_DERIVED_ON_RESTORE = frozenset({"created_at", "deleting_at", "detaching", "flavor"})
_KEPT = tuple(f for f in _Server.__dataclass_fields__ if f not in _DERIVED_ON_RESTORE)


def _kept(server: _Server) -> dict[str, Any]:
    """A server as plain JSON values; clock times (which do not survive a restart) as flags."""
    kept = {name: getattr(server, name) for name in _KEPT}
    for name in ("port_ids", "then_attach", "metadata", "fault"):
        value = kept[name]
        kept[name] = value.copy() if value is not None else None
    kept["flavor"] = server.flavor.as_dict()
    kept["deleting"] = server.deleting_at is not None
    kept["detaching"] = list(server.detaching)
    return kept


def _restored(kept: Mapping[str, Any], now: float) -> _Server:
    """The server :func:`_kept` saved; a transition in flight starts again at ``now``."""
    values = {name: kept[name] for name in _KEPT}
    if not isinstance(values["id"], str) or values["status"] not in ("BUILD", "ACTIVE", "ERROR"):
        raise ValueError(f"a server with id {values['id']!r} and status {values['status']!r}")
    for name in ("port_ids", "then_attach"):
        values[name] = [str(p) for p in values[name]]
    values["metadata"] = {str(k): str(v) for k, v in dict(values["metadata"]).items()}
    flavor = dict(kept["flavor"])
    flavor["extra_specs"] = dict(flavor.get("extra_specs") or {})
    return _Server(
        **values,
        flavor=Flavor(**flavor),
        created_at=now,
        deleting_at=now if kept["deleting"] else None,
        detaching={str(port_id): now for port_id in kept["detaching"]},
    )
