"""The simulated cloud assembled: Keystone, Neutron, Nova and the appliance agents, wired.

Nova tells us when a server becomes ACTIVE, is gone, or has its ports changed; we start, stop
or re-plug that server's appliance agent on its management address, with the MACs and
addresses of its Neutron ports (management NIC first, as the real appliance sees them).

Behind every router :meth:`SimCloud.add_router` makes, a tenant's instance (a "guest") runs:
a real simulated Nova server of the tenant (image ``cirros``, a keypair, user data) on the
tenant network's port. Guests have no appliance and are never taken for service VMs (those
are the ``ak-router-<router id>_<n>`` servers, and the hot spares ``ak-spare-<token>``). Nova's
metadata API answers for every server (:mod:`.nova.metadata`, on ``[sim] listen``:
``nova_metadata_port``), and :meth:`SimCloud.guest_metadata` drives one guest's fetch through
its router's appliance.

A hot spare is an ACTIVE service VM like any other (its appliance listens on its management
address); a router takes one by renaming it (Nova's ``PUT /servers/{id}``), and from then on
the sim counts and traces it as that router's VM (see :meth:`SimCloud._server_renamed`).

With a ``cloud_file`` (and ``[sim] keep_cloud``), :meth:`SimCloud.load_or_bootstrap` loads the
cloud kept there instead of making a fresh one, and keeps it there from then on (see
:mod:`.persist`): every resource with its id, the tenants' instances and the service VMs, whose
appliances come back with the configuration they were last pushed, so a restarted orchestrator
adopts them.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import ipaddress
import itertools
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from astara_actors.sim.appliances.agents import ApplianceServer
from astara_actors.sim.contracts import Caller, Notify, PortDirectory
from astara_actors.sim.keystone.model import KeystoneModel, Project
from astara_actors.sim.neutron.core import ROUTER_PORT_OWNERS
from astara_actors.sim.neutron.model import NeutronFault, NeutronModel
from astara_actors.sim.nova.metadata import NovaMetadataServer
from astara_actors.sim.nova.model import Flavor, NovaFault, NovaModel
from astara_actors.sim.persist import CloudKeeper, Table, no_collector, records
from astara_actors.sim.settings import SimSettings
from astara_actors.sim.trace import Trace

__all__ = ["GUEST_FLAVOR", "GUEST_IMAGE", "SPARE_PREFIX", "GuestError", "SimCloud"]

LOG = logging.getLogger(__name__)

# The tenants' own instances: an image and flavor no boot through the API may name (the
# orchestrator's service VMs cannot be booted from it by mistake).
GUEST_IMAGE = "cirros"
GUEST_FLAVOR = "m1.tiny"
_SERVICE_VM = re.compile(r"^ak-router-(?P<router>.+)_\d+$")
# A hot spare: booted (management port ``ASTARA:SPARE:<token>`` only) before any router wants
# it; taking it renames it ``ak-router-<router id>_<n>`` (see :meth:`SimCloud._server_renamed`).
SPARE_PREFIX = "ak-spare-"
# A deleted router's network refused (still in use): first retry after, longest wait (s).
REAP_FIRST_WAIT = 1.0
REAP_MAX_WAIT = 30.0


class GuestError(Exception):
    """A guest's metadata fetch cannot be driven; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SimCloud:
    """Every simulated service of one ``astara-sim`` process, and its topology helpers."""

    def __init__(
        self,
        settings: SimSettings,
        *,
        notify: Notify | None = None,
        clock: Any = time.monotonic,
        rng: random.Random | None = None,
        cloud_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.settings = settings
        self.rng = rng or random.Random(settings.seed or None)
        self.trace = Trace()  # what the cloud saw, with times (GET/PUT/DELETE /sim/trace)
        self._notifier = notify  # closed by stop() if it has a close (a bus publisher does)
        if notify is not None:
            notify = _traced(notify, self.trace)
        self.keystone = KeystoneModel(admin_password=settings.admin_password)
        self.neutron: NeutronModel | None = None
        self.ports: PortDirectory
        self.tokens: Any = self.keystone
        network_name: Callable[[str], str | None]
        if settings.real_neutron:
            self.ports, self.tokens, network_name = _remote(settings)
        else:
            self.neutron = self.ports = NeutronModel(notify, rng=self.rng)
            network_name = self._network_name
        self._management = ipaddress.ip_network(settings.management_cidr)
        self.appliances = ApplianceServer(
            port=settings.appliance_port,
            latency=settings.appliance_latency,
            trace=self.trace,
            shared=settings.appliance_listen == "shared",
        )
        self.nova = NovaModel(
            self.ports,
            clock=clock,
            boot_delay=settings.boot_delay,
            delete_delay=settings.delete_delay,
            detach_delay=settings.detach_delay,
            boot_failure_rate=settings.boot_failure_rate,
            images=_image_ids(settings),
            flavors=[Flavor(settings.flavor_id, settings.flavor_id)],
            network_name=network_name,
            rng=self.rng.random,
            on_active=self._server_active,
            on_gone=self._server_gone,
            on_ports_changed=self._ports_changed,
            on_request=lambda kind, sid, name: self.trace.record(kind, _router_of(name), sid, name),
            on_renamed=self._server_renamed,
        )
        self.admin = Caller(
            user_id=self.keystone.admin_user.id,
            project_id=self.keystone.admin_project.id,
            is_admin=True,
            roles=("admin", "member", "reader"),
            user_name=settings.admin_user,
            project_name=settings.admin_project,
        )
        self.metadata = NovaMetadataServer(
            self.nova,
            host=settings.listen,
            # A simulator on any free port (tests) takes any free metadata port as well.
            port=settings.nova_metadata_port if settings.port else 0,
            secret=settings.metadata_secret,
        )
        self.ssh = None
        if settings.ssh_port:
            from astara_actors.sim.appliances.ssh import SshServer

            self.ssh = SshServer(settings.ssh_port, settings.ssh_dir)
        self.management_network_id = ""
        self.management_subnet_id = ""
        self.external_network_id = ""
        self.external_subnet_id = ""
        self._routers_made = 0
        self.topology: dict[str, dict[str, Any]] = {}  # router id -> what add_router made
        self.tenants: list[Caller] = []
        self.boots: dict[str, int] = {}  # router id -> VMs that became ACTIVE for it
        self.taken: dict[str, int] = {}  # router id -> hot spares renamed for it (no boot)
        self.pushes: dict[str, int] = {}  # router id -> config pushes its appliances accepted
        self.leftovers: list[tuple[str, str, Caller]] = []
        # network id -> (when the next try is due, the wait after it fails): a tenant retrying
        # a refused delete backs off; each try is a delete.start notification in Neutron.
        self._retry: dict[str, tuple[float, float]] = {}
        self.keeper: CloudKeeper | None = None  # where the cloud is kept across restarts
        if cloud_file and settings.keep_cloud:
            if self.neutron is None:
                LOG.info("beside a real cloud nothing is kept: %s is not used", cloud_file)
            else:
                self.keeper = CloudKeeper(cloud_file, settings)

    # --- lifecycle
    def start(self) -> SimCloud:
        self.appliances.start()
        if self.ssh is not None:
            self.ssh.start()
        self._start_metadata()
        return self

    def _start_metadata(self) -> None:
        try:
            self.metadata.start()
        except OSError as exc:
            host = self.settings.listen
            host = f"[{host}]" if ":" in host else host
            LOG.warning(
                "the simulated Nova metadata API cannot listen on %s:%d ([sim]"
                " nova_metadata_port): %s; is another astara-sim or demo running? Set [sim]"
                " nova_metadata_port (0: any free port). Guests' metadata fetches will fail.",
                host,
                self.metadata.port,
                exc.strerror or exc,
            )
        else:
            LOG.info("simulated Nova metadata API on %s", self.metadata.url)

    @property
    def nova_metadata_url(self) -> str | None:
        """``http://<listen>:<port>`` of the simulated Nova metadata API (None: not serving)."""
        return self.metadata.url if self.metadata.running else None

    @property
    def metadata_secret(self) -> str:
        """The shared secret it checks ``X-Instance-ID-Signature`` with (``[sim]
        metadata_secret``; an orchestrator's ``metadata_proxy_shared_secret``)."""
        return self.settings.metadata_secret

    def stop(self) -> None:
        if self.keeper is not None:  # first: the appliances' configurations are kept too
            self.keeper.stop()
        self.metadata.stop()
        if self.ssh is not None:
            self.ssh.stop()
        self.appliances.stop()
        close = getattr(self._notifier, "close", None)
        if close is not None:  # publish what is queued (bounded), then stop its thread
            close()

    # --- topology
    def _model(self) -> NeutronModel:
        if self.neutron is None:
            raise RuntimeError("beside a real Neutron, routers are made there, not by astara-sim")
        return self.neutron

    def load_or_bootstrap(self) -> bool:
        """The cloud kept in the ``cloud_file`` if there is one this configuration can use,
        else a fresh one (:meth:`bootstrap`); from then on it is kept there (saved a few
        seconds after a change, and at :meth:`stop`). True if the kept cloud was loaded.
        Call it after :meth:`start`: the appliances of the running service VMs come back."""
        keeper = self.keeper
        if keeper is None:
            self.bootstrap()
            return False
        install = None
        with no_collector():
            doc = keeper.load()
            if doc is not None:
                try:
                    install = self._prepare_restore(doc)
                except Exception as exc:  # whatever is wrong inside, nothing was changed yet
                    keeper.reject(f"its content is malformed ({type(exc).__name__}: {exc})")
            if install is not None:
                install()
        if install is None:
            self.bootstrap()
        else:
            LOG.info(
                "simulated cloud loaded from %s (saved %s): %d tenants, %d routers, %d servers,"
                " %d appliances",
                keeper.path,
                doc.get("saved_at") if doc else "?",
                len(self.keystone.projects()) - 1,
                len(self.topology),
                len(self.nova),
                self.appliances.stats()["agents"],
            )
        keeper.start(self.snapshot, self.changes, saved=install is not None)
        return install is not None

    def snapshot(self) -> dict[str, Any]:
        """Everything a restart keeps (see :mod:`.persist`), copied: encoding it needs no lock."""
        model = self._model()
        with self.nova.lock:  # Nova binds ports in Neutron under its lock: both as one
            nova = self.nova.snapshot()
            neutron = model.snapshot()
        neutron["tables"] = {kind: Table(rows) for kind, rows in neutron["tables"].items()}
        nova["servers"] = Table(nova["servers"])
        appliances = self.appliances.snapshot()
        return {
            "cloud": self._bookkeeping(),
            "keystone": self.keystone.snapshot(),
            "neutron": neutron,
            "nova": nova,
            "appliances": Table({"server_id": sid, **kept} for sid, kept in appliances.items()),
        }

    def changes(self) -> tuple[int, ...]:
        """Differs whenever the cloud has changed (what :meth:`snapshot` holds)."""
        return (
            self.keystone.changes,
            self._model().changes,
            self.nova.changes,
            self.appliances.changes(),
            self._routers_made,
            len(self.topology),
            len(self.leftovers),
            sum(self.boots.values()),
            sum(self.pushes.values()),
            sum(self.taken.values()),
        )

    def _bookkeeping(self) -> dict[str, Any]:
        """What :meth:`add_router` and the load driver remember, and the cloud's networks."""
        topology, leftovers = dict(self.topology), list(self.leftovers)
        callers = {t.project_id: t for t in self.tenants}
        rows = []
        for router_id, made in topology.items():
            tenant: Caller = made["tenant"]
            callers.setdefault(tenant.project_id, tenant)
            rows.append({"router": router_id, **made, "tenant": tenant.project_id})
        for _, _, tenant in leftovers:
            callers.setdefault(tenant.project_id, tenant)
        return {
            "management_network_id": self.management_network_id,
            "management_subnet_id": self.management_subnet_id,
            "external_network_id": self.external_network_id,
            "external_subnet_id": self.external_subnet_id,
            "routers_made": self._routers_made,
            "callers": [dataclasses.asdict(c) for c in callers.values()],
            "tenants": [t.project_id for t in self.tenants],
            "topology": Table(rows),
            "boots": dict(self.boots),
            "pushes": dict(self.pushes),
            "taken": dict(self.taken),
            "leftovers": [[subnet, network, t.project_id] for subnet, network, t in leftovers],
        }

    def _prepare_restore(self, doc: Mapping[str, Any]) -> Callable[[], None]:
        """Read a kept cloud (raising if anything in it is malformed, changing nothing); the
        function returned installs it and brings the running service VMs' appliances back."""
        keystone = self.keystone.prepare_restore(
            doc["keystone"], admin_password=self.settings.admin_password
        )
        neutron_doc = dict(doc["neutron"])
        neutron_doc["tables"] = {k: records(v) for k, v in dict(neutron_doc["tables"]).items()}
        neutron = self._model().prepare_restore(neutron_doc)
        nova_doc = dict(doc["nova"])
        nova_doc["servers"] = sorted(records(nova_doc["servers"]), key=lambda s: int(s["seq"]))
        nova, running = self.nova.prepare_restore(nova_doc)
        kept = {}
        for entry in records(doc["appliances"]):
            ifnames, config = dict(entry["ifnames"]), entry["config"]
            if not all(isinstance(v, str) for v in (*ifnames, *ifnames.values())):
                raise ValueError(f"appliance {entry['server_id']}: interface names not strings")
            if not (config is None or isinstance(config, dict)):
                raise ValueError(f"appliance {entry['server_id']}: a configuration not an object")
            kept[str(entry["server_id"])] = {
                "ifnames": ifnames,
                "config": config,
                "pushes": int(entry["pushes"]),
            }
        bookkeeping = self._prepare_bookkeeping(doc["cloud"])

        def install() -> None:
            keystone()
            neutron()
            nova()
            bookkeeping()
            self.admin = dataclasses.replace(
                self.admin,
                user_id=self.keystone.admin_user.id,
                project_id=self.keystone.admin_project.id,
            )
            for server_id in running:
                server = self.nova.get(server_id)
                found = self._nics(server)
                if found is not None:
                    self._start_agent(server, found, kept.get(server_id))

        return install

    def _prepare_bookkeeping(self, cloud: Mapping[str, Any]) -> Callable[[], None]:
        callers = {}
        for values in cloud["callers"]:
            caller = Caller(**{**values, "roles": tuple(values["roles"])})
            callers[caller.project_id] = caller
        tenants = [callers[project_id] for project_id in cloud["tenants"]]
        topology = {}
        for row in records(cloud["topology"]):
            made = {k: v for k, v in row.items() if k != "router"}
            made["tenant"] = callers[row["tenant"]]
            topology[str(row["router"])] = made
        leftovers = [(str(s), str(n), callers[p]) for s, n, p in cloud["leftovers"]]
        ids = [
            str(cloud[key])
            for key in (
                "management_network_id",
                "management_subnet_id",
                "external_network_id",
                "external_subnet_id",
            )
        ]
        routers_made = int(cloud["routers_made"])
        boots = {str(k): int(v) for k, v in dict(cloud["boots"]).items()}
        pushes = {str(k): int(v) for k, v in dict(cloud["pushes"]).items()}
        # Kept since hot spares (a file saved before has none: no spare was ever taken).
        taken = {str(k): int(v) for k, v in dict(cloud.get("taken") or {}).items()}

        def install() -> None:
            (
                self.management_network_id,
                self.management_subnet_id,
                self.external_network_id,
                self.external_subnet_id,
            ) = ids
            self._routers_made, self.tenants, self.topology = routers_made, tenants, topology
            self.leftovers, self.boots, self.pushes = leftovers, boots, pushes
            self._retry = {}  # the kept leftovers are tried at the next tick
            self.taken = taken

        return install

    def bootstrap(self) -> None:
        """The management and external networks, then the initial tenants and routers."""
        s = self.settings
        if self.neutron is None:
            return  # beside a real Neutron: its topology is the real one
        mgt = self._model().create("network", {"name": "mgt"}, self.admin)
        self.management_network_id = mgt["id"]
        self.management_subnet_id = self._model().create(
            "subnet",
            {
                "network_id": mgt["id"],
                "name": "mgt-subnet",
                "ip_version": 4,
                "cidr": s.management_cidr,
                "enable_dhcp": False,
                "gateway_ip": None,
            },
            self.admin,
        )["id"]
        public = self._model().create(
            "network", {"name": "public", "router:external": True}, self.admin
        )
        self.external_network_id = public["id"]
        self.external_subnet_id = self._model().create(
            "subnet",
            {
                "network_id": public["id"],
                "name": "public-subnet",
                "ip_version": 4,
                "cidr": s.external_cidr,
                "enable_dhcp": False,
            },
            self.admin,
        )["id"]
        for t in range(s.tenants):
            tenant = self.add_tenant(f"demo-{t}")
            self.tenants.append(tenant)
            for r in range(s.routers_per_tenant):
                self.add_router(tenant, f"demo-{t}-r{r}")

    def add_tenant(self, name: str) -> Caller:
        """A project with a member user ``<name>-user`` (password ``tenant_password``)."""
        project = self.keystone.add_project(name)
        user = self.keystone.add_user(f"{name}-user", self.settings.tenant_password, project)
        return self.tenant_caller(project, user.id, user.name)

    @staticmethod
    def tenant_caller(project: Project, user_id: str, user_name: str) -> Caller:
        return Caller(
            user_id=user_id,
            project_id=project.id,
            is_admin=False,
            roles=("member", "reader"),
            user_name=user_name,
            project_name=project.name,
        )

    def add_router(self, tenant: Caller, name: str, *, ha: bool = False) -> str:
        """A router with a gateway, one network/subnet behind it, and a tenant's instance
        ``<name>-vm`` (a guest: see :meth:`guests`) on a port there, with a floating IP.

        ``ha`` routers are created by the admin for the tenant, as Neutron's policy requires.
        """
        index = self._routers_made
        self._routers_made += 1
        cidr = f"10.{index // 256 % 256}.{index % 256}.0/24"  # 65,536 distinct tenant subnets
        net = self._model().create("network", {"name": f"{name}-net"}, tenant)
        subnet = self._model().create(
            "subnet",
            {
                "network_id": net["id"],
                "name": f"{name}-subnet",
                "ip_version": 4,
                "cidr": cidr,
            },
            tenant,
        )
        attrs: dict[str, Any] = {
            "name": name,
            "external_gateway_info": {"network_id": self.external_network_id},
        }
        if ha:
            attrs.update(ha=True, tenant_id=tenant.project_id)
        router = self._model().create("router", attrs, self.admin if ha else tenant)
        self._model().add_router_interface(router["id"], {"subnet_id": subnet["id"]}, tenant)
        vm_port = self._model().create(
            "port", {"network_id": net["id"], "name": f"{name}-vm"}, tenant
        )
        guest = self._boot_guest(tenant, f"{name}-vm", vm_port["id"])
        fip = self._model().create(
            "floatingip",
            {
                "floating_network_id": self.external_network_id,
                "port_id": vm_port["id"],
            },
            tenant,
        )
        self.topology[router["id"]] = {
            "tenant": tenant,
            "network": net["id"],
            "subnet": subnet["id"],
            "vm_port": vm_port["id"],
            "fip": fip["id"],
            "guest": guest,
            "guest_name": f"{name}-vm",
            "guest_address": vm_port["fixed_ips"][0]["ip_address"],
        }
        return str(router["id"])

    def _boot_guest(self, tenant: Caller, name: str, port_id: str) -> str:
        """The tenant's instance on ``port_id``, ACTIVE at once: Nova binds the port
        (``device_id`` = the server, ``device_owner`` ``compute:nova``); its id."""
        key_name, key_data = _keypair(tenant)
        user_data = f"#!/bin/sh\necho 'hello from {name}' > /tmp/astara-sim-guest\n"
        server = self.nova.create(
            tenant,
            name=name,
            image_id=GUEST_IMAGE,
            flavor_id=GUEST_FLAVOR,
            port_ids=[port_id],
            user_data=base64.b64encode(user_data.encode()).decode(),
            metadata={"role": "guest"},
            key_name=key_name,
            key_data=key_data,
            placed=True,
        )
        return str(server["id"])

    def boot_vms(self, router_ids: list[str] | None = None) -> list[str]:
        """A VM for each router (of ``router_ids``, default all) that has none, with the ports and
        name astara's orchestrator gives it (``ASTARA:MGT``/``ASTARA:VRRP`` ports,
        ``ak-router-<id>_0``), as a previous orchestrator run would have left it: benchmarks of
        restarts at scale start from there. Returns the routers that got one.

        Plugged as the orchestrator plugs them: booted with the management port only (Nova
        refuses a boot with the address-less VRRP ports), the VRRP ports attached once the
        server is ACTIVE."""
        model = self._model()
        have = {
            _router_of(s["name"])
            for s in self.nova.servers(None, all_tenants=True, name="ak-router-")
        }
        booted = []
        for router_id in self.topology if router_ids is None else router_ids:
            made = self.topology.get(router_id)
            if made is None or router_id in have:
                continue
            common = {"admin_state_up": True, "port_security_enabled": False, "security_groups": []}
            mgt = model.create(
                "port",
                {
                    **common,
                    "network_id": self.management_network_id,
                    "name": f"ASTARA:MGT:{router_id}",
                    "fixed_ips": [{"subnet_id": self.management_subnet_id}],
                },
                self.admin,
            )
            ports = [mgt["id"]]
            for network_id in (self.external_network_id, made["network"]):
                ports.append(
                    model.create(
                        "port",
                        {
                            **common,
                            "network_id": network_id,
                            "name": f"ASTARA:VRRP:{router_id}",
                            "fixed_ips": [],
                        },
                        self.admin,
                    )["id"]
                )
            self.nova.create(
                self.admin,
                name=f"ak-router-{router_id}_0",
                image_id=self.settings.image_id,
                flavor_id=self.settings.flavor_id,
                port_ids=ports[:1],
                then_attach=ports[1:],
                config_drive=True,
            )
            booted.append(router_id)
        return booted

    def update_router(self, router_id: str) -> None:
        """An ordinary tenant change: rename the router (router.update.start/end)."""
        made = self.topology[router_id]
        name = (
            f"{self._model().get('router', router_id, self.admin)['name'].split('~')[0]}"
            f"~{self.rng.randrange(10**6)}"
        )
        self._model().update("router", router_id, {"name": name}, made["tenant"])

    def delete_router(self, router_id: str) -> None:
        """Take down what :meth:`add_router` made, in the order Neutron requires."""
        made = self.topology.pop(router_id)
        tenant = made["tenant"]
        self._model().delete("floatingip", made["fip"], tenant)
        try:  # the tenant deletes its instance; its port goes at once (as Nova's would)
            self.nova.delete(made["guest"], tenant)
        except NovaFault:
            pass  # already deleted (through the Nova API)
        self._model().delete("port", made["vm_port"], self.admin)  # still bound: admin only
        self._model().remove_router_interface(router_id, {"subnet_id": made["subnet"]}, tenant)
        self._model().delete("router", router_id, tenant)
        # The orchestrator's VRRP port stays on the network until it has stopped the VM, and
        # Neutron refuses to delete a network in use: retry later, as a tenant would.
        self.leftovers.append((made["subnet"], made["network"], tenant))
        self.reap(time.monotonic())

    def reap(self, now: float | None = None) -> int:
        """Delete the networks of deleted routers once nothing uses them; how many remain.

        ``now`` (monotonic): try only those whose retry is due — a network refused waits
        ``REAP_FIRST_WAIT`` seconds before the next try, twice as long after each refusal up to
        ``REAP_MAX_WAIT``, as a tenant's script would (every try is a ``subnet.delete.start``
        and a ``network.delete.start`` on the bus: retrying them all ten times a second flooded
        the orchestrator under churn). ``None``: try every one now.
        """
        remaining = []
        for subnet_id, network_id, tenant in self.leftovers:
            due, wait = self._retry.get(network_id, (0.0, REAP_FIRST_WAIT / 2))
            if now is not None and now < due:
                remaining.append((subnet_id, network_id, tenant))
                continue
            # Each on its own: a subnet deleted by an earlier attempt answers 404 while its
            # network (refused then, still in use) must still go.
            try:
                for kind, item in (("subnet", subnet_id), ("network", network_id)):
                    try:
                        self._model().delete(kind, item, tenant)
                    except NeutronFault as exc:
                        if exc.status != 404:
                            raise
            except NeutronFault:
                remaining.append((subnet_id, network_id, tenant))
                wait = min(wait * 2, REAP_MAX_WAIT)
                self._retry[network_id] = ((time.monotonic() if now is None else now) + wait, wait)
            else:
                self._retry.pop(network_id, None)
        self.leftovers = remaining
        return len(remaining)

    def _network_name(self, network_id: str) -> str | None:
        """The name Nova labels a server's addresses on this network with."""
        try:
            return str(self._model().get("network", network_id)["name"])
        except NeutronFault:
            return None

    # --- Nova → appliance agents
    def _management_ip(self, port: Mapping[str, Any]) -> str | None:
        """The port's address on the management CIDR (how its NIC is recognised)."""
        for ip in port.get("fixed_ips") or ():
            if ipaddress.ip_address(ip["ip_address"]) in self._management:
                return str(ip["ip_address"])
        return None

    def _nics(self, server: Mapping[str, Any]) -> tuple[str, list[Any]] | None:
        from astara_actors.sim.appliances.http import Nic

        ports = [p for p in (self.ports.port(pid) for pid in server["port_ids"]) if p]
        ports.sort(key=lambda p: self._management_ip(p) is None)  # management NIC first
        address = self._management_ip(ports[0]) if ports else None
        if address is None:
            return None
        nics = [Nic(p["mac_address"], tuple(self._addresses(p))) for p in ports]
        return address, nics

    def _addresses(self, port: Mapping[str, Any]) -> list[str]:
        out = []
        for ip in port.get("fixed_ips") or ():
            prefix = ipaddress.ip_network(self.ports.subnet_cidr(ip["subnet_id"])).prefixlen
            out.append(f"{ip['ip_address']}/{prefix}")
        return out

    def _server_active(self, server: Mapping[str, Any]) -> None:
        found = self._nics(server)
        if found is None:
            LOG.info("server %s has no management port: no appliance agent", server["id"])
            return
        router = _router_of(server["name"])
        if router:
            self.boots[router] = self.boots.get(router, 0) + 1
        self.trace.record("active", router, server["id"], server["name"])
        self._start_agent(server, found)

    def _start_agent(
        self,
        server: Mapping[str, Any],
        found: tuple[str, list[Any]],
        kept: Mapping[str, Any] | None = None,
    ) -> None:
        """The appliance of an ACTIVE server (``kept``: what it kept across a restart)."""
        address, nics = found
        router = _router_of(server["name"])
        try:
            self.appliances.add(server["id"], address, nics, router_id=router, kept=kept)
            if self.ssh is not None:
                from astara_actors.sim.appliances.ssh import authorized_keys

                self.ssh.add(
                    server["id"],
                    address,
                    authorized_keys(server.get("user_data")),
                    functools.partial(self._shell, server["id"]),
                )
        except OSError as exc:
            LOG.warning("appliance of %s cannot listen on %s: %s", server["id"], address, exc)

    def _server_renamed(self, previous: str, server: Mapping[str, Any]) -> None:
        """Nova renamed a server (``PUT /servers/{id}``): what the sim knows of it by its name
        follows. Its appliance (if it has one) now traces its requests for the router the new
        name names, :meth:`servers_for` finds it by that router, and the trace records a
        ``rename`` (router: the new name's). A hot spare (``ak-spare-<token>``) renamed
        ``ak-router-<router>_<n>`` is *taken* by that router: counted in ``taken`` (the
        ``spares`` of :meth:`router_counters`), not in ``boots`` — its boot happened before,
        for no router. (A spare renamed before it was ACTIVE counts both: the router then
        waited for that boot.) Config pushes of a live VM count for the router it is named
        for when they are counted, so those a spare accepted before it was taken count for
        its router."""
        sid, name = str(server["id"]), str(server["name"])
        router, before = _router_of(name), _router_of(previous)
        self.trace.record("rename", router, sid, f"{previous} -> {name}")
        if router == before:
            return
        if self.appliances.state(sid) is not None:
            try:
                self.appliances.set_router(sid, router)
            except KeyError:
                pass  # its agent went away meanwhile (the server is gone)
        if router and previous.startswith(SPARE_PREFIX):
            self.taken[router] = self.taken.get(router, 0) + 1

    def _server_gone(self, server: Mapping[str, Any]) -> None:
        router = _router_of(server["name"])
        try:
            pushed = self.appliances.pushes(server["id"])
        except KeyError:
            pushed = 0
        if router:
            self.pushes[router] = self.pushes.get(router, 0) + pushed
        self.trace.record("gone", router, server["id"], server["name"])
        self.appliances.remove(server["id"])
        if self.ssh is not None:
            self.ssh.remove(server["id"])

    def _shell(self, server_id: str, command: str) -> tuple[int, str]:
        """What the simulated appliance answers to a command run over SSH."""
        try:
            config = self.appliances.config(server_id) or {}
        except KeyError:
            return 255, "connection to the appliance lost\n"
        words = command.split()
        if command in ("hostname", "cat /etc/hostname"):
            return 0, f"{config.get('hostname', server_id)}\n"
        if words[:1] == ["ip"] and "addr" in words:
            lines = [
                f"{n.get('interface', {}).get('ifname', '?')} UP "
                + " ".join(n.get("interface", {}).get("addresses", []))
                for n in config.get("networks", [])
            ]
            return 0, "\n".join(lines) + "\n"
        if words[:1] == ["echo"]:
            return 0, " ".join(words[1:]) + "\n"
        if command in ("true", ""):
            return 0, ""
        return 127, f"sh: 1: {words[0]}: not found\n"

    def _ports_changed(self, server: Mapping[str, Any]) -> None:
        if self.appliances.state(server["id"]) is None:
            return  # no appliance to re-plug (a guest, or a VM whose agent could not listen)
        found = self._nics(server)
        if found is not None:
            self.appliances.set_interfaces(server["id"], found[1])

    # --- faults
    def servers_for(self, ident: str) -> list[str]:
        """Server ids for a service VM's id (a hot spare's included), or for a router id (its
        ``ak-router-<id>_<n>`` VMs, a spare it took among them: they are found by their
        current name); a tenant's instance (a guest) is none of them."""
        try:
            server = self.nova.get(ident)
        except NovaFault:
            pass
        else:
            return [server["id"]] if _is_service_vm(server["name"]) else []
        prefix = f"ak-router-{ident}_"
        return [
            s["id"]
            for s in self.nova.servers(None, all_tenants=True, name=prefix)
            if s["name"].startswith(prefix) and _router_of(s["name"]) == ident
        ]

    def router_counters(self, router_id: str) -> dict[str, int]:
        """A router's VMs and pushes: ``boots``, VMs that became ACTIVE named for it, ever;
        ``spares``, hot spares it took (renamed for it: ready VMs, not boots), ever; ``vms``,
        its service VMs now (taken spares included); ``pushes``, config pushes its appliances
        accepted, ever (see :meth:`_server_renamed`)."""
        live = 0
        servers = self.servers_for(router_id)
        for server_id in servers:
            try:
                live += self.appliances.pushes(server_id)
            except KeyError:
                pass
        return {
            "boots": self.boots.get(router_id, 0),
            "spares": self.taken.get(router_id, 0),
            "vms": len(servers),
            "pushes": self.pushes.get(router_id, 0) + live,
        }

    def kill_random_appliance(self) -> str | None:
        """Kill one live appliance at random (the demo's occasional failure); its server id."""
        live = self.appliances.live_servers()
        if not live:
            return None
        victim = self.rng.choice(sorted(live))
        LOG.info("killing the appliance of server %s", victim)
        self.appliances.kill(victim)
        return victim

    def lie(self, ident: str, instance_id: str | None = None) -> tuple[list[str], str]:
        """The appliances of a router (or one service VM) claim ``instance_id`` for every guest
        from now on (default: a guest of another tenant); (their servers, the id claimed)."""
        servers = self.servers_for(ident)
        if instance_id is None:
            router = ident if ident in self.topology else ""
            if not router and servers:
                router = _router_of(self.nova.get(servers[0])["name"])
            instance_id = self._another_guest(router)
        for server_id in servers:
            self.appliances.lie(server_id, instance_id)
        return servers, instance_id

    def _another_guest(self, router_id: str) -> str:
        """A guest of another tenant than ``router_id``'s; else of another router; else an
        instance id nobody has."""
        made = self.topology.get(router_id)
        project = made["tenant"].project_id if made else None
        fallback = ""
        for other, entry in self.topology.items():
            if other == router_id:
                continue
            if entry["tenant"].project_id != project:
                return str(entry["guest"])
            fallback = fallback or str(entry["guest"])
        return fallback or str(uuid.uuid4())

    # --- the tenants' instances (guests) and their metadata
    def guests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The instances :meth:`add_router` made, oldest first: id, name, tenant, address,
        network and router (up to ``limit``)."""
        out = []
        for router_id, made in list(itertools.islice(self.topology.items(), limit)):
            tenant: Caller = made["tenant"]
            out.append(
                {
                    "id": made["guest"],
                    "name": made["guest_name"],
                    "tenant_id": tenant.project_id,
                    "tenant": tenant.project_name,
                    "address": made["guest_address"],
                    "network_id": made["network"],
                    "router_id": router_id,
                }
            )
        return out

    def guest_metadata(self, server_id: str, target: str) -> tuple[int, str, bytes]:
        """What guest ``server_id`` gets for ``GET http://169.254.169.254<target>``: the request
        goes from the guest's address on its network to a live appliance of the router on
        that network, whose forwarder sends it on (see :mod:`.appliances.metadata`).

        Raises :class:`GuestError` (404: no such guest; 503: no router, no live or no
        configured appliance on its network) naming what is missing.
        """
        try:
            server = self.nova.get(server_id)
        except NovaFault:
            raise GuestError(404, f"no server {server_id}") from None
        if _router_of(server["name"]):
            raise GuestError(
                404,
                f"server {server_id} is a service VM of router {_router_of(server['name'])},"
                " not a tenant's instance",
            )
        if _is_service_vm(server["name"]):
            raise GuestError(404, f"server {server_id} is a hot spare, not a tenant's instance")
        tried: list[str] = []
        for port_id in server["port_ids"]:
            port = self.ports.port(port_id)
            if port is None or not port.get("fixed_ips"):
                continue
            network_id = str(port["network_id"])
            source = str(port["fixed_ips"][0]["ip_address"])
            for router_id in self._routers_on(network_id):
                agent = self._appliance_of(router_id, tried)
                if agent is not None:
                    return self.appliances.fetch_metadata(agent, network_id, source, target)
            if not tried:
                tried.append(f"no router has an interface on network {network_id}")
        if not tried:
            raise GuestError(503, f"server {server_id} has no address on any network")
        raise GuestError(
            503, f"no appliance forwards server {server_id}'s request: " + "; ".join(tried)
        )

    def _routers_on(self, network_id: str) -> list[str]:
        if self.neutron is None:
            return []
        ports = self.neutron.list("port", self.admin, {"network_id": network_id})
        return sorted(
            {str(p["device_id"]) for p in ports if p["device_owner"] in ROUTER_PORT_OWNERS}
        )

    def _appliance_of(self, router_id: str, tried: list[str]) -> str | None:
        """A live, configured appliance of the router (its server id), or None after saying
        in ``tried`` why there is none."""
        servers = self.servers_for(router_id)
        states = {sid: self.appliances.state(sid) for sid in servers}
        for sid, state in states.items():
            if state and state["configured"] and not (state["dead"] or state["hung"]):
                return sid
        if not servers:
            tried.append(f"router {router_id} has no service VM")
        for sid, state in states.items():
            if state is None:
                tried.append(f"the service VM {sid} of router {router_id} is not ACTIVE")
            elif state["dead"] or state["hung"]:
                why = "dead" if state["dead"] else "hung"
                tried.append(f"the appliance of router {router_id} (server {sid}) is {why}")
            else:
                tried.append(
                    f"the appliance of router {router_id} (server {sid}) has no configuration yet"
                )
        return None


def _keypair(tenant: Caller) -> tuple[str, str]:
    """The tenant's keypair: its name and an OpenSSH ed25519 public key (derived from the
    project id: the same tenant always has the same key; nobody holds its private half)."""
    raw = hashlib.sha256(f"astara-sim guest key {tenant.project_id}".encode()).digest()
    kind = b"ssh-ed25519"
    blob = len(kind).to_bytes(4, "big") + kind + len(raw).to_bytes(4, "big") + raw
    owner = tenant.project_name or tenant.project_id
    return f"{owner}-key", f"ssh-ed25519 {base64.b64encode(blob).decode()} {owner}@astara-sim"


def _image_ids(settings: SimSettings) -> list[str]:
    """``image_id`` and the ``extra_image_ids``: the images the simulated Nova knows."""
    extra = (i.strip() for i in settings.extra_image_ids.split(","))
    return [settings.image_id, *(i for i in extra if i)]


def _remote(settings: SimSettings) -> tuple[PortDirectory, Any, Callable[[str], str | None]]:
    """Ports, token validation and network names from the real Neutron and Keystone."""
    from astara_actors.adapters.openstack import connect
    from astara_actors.config.cloud import CloudSettings
    from astara_actors.sim.remote import RemotePorts, RemoteTokens

    conn = connect(
        CloudSettings(
            auth_url=settings.neutron_auth_url,
            username=settings.neutron_username,
            password=settings.neutron_password,
            project_name=settings.neutron_project,
            user_domain_name=settings.neutron_user_domain,
            project_domain_name=settings.neutron_project_domain,
        )
    )
    tokens = RemoteTokens(settings.neutron_auth_url, conn.session.get_token)
    return RemotePorts(conn), tokens, lambda network_id: _remote_network_name(conn, network_id)


def _remote_network_name(conn: Any, network_id: str) -> str | None:
    import openstack

    try:
        return str(conn.network.get_network(network_id).name)
    except openstack.exceptions.NotFoundException:
        return None


def _traced(notify: Notify, trace: Trace) -> Notify:
    """``notify``, recording each notification once it is published (kind ``notify``)."""

    def publish(event_type: str, payload: Mapping[str, Any], caller: Caller | None) -> None:
        notify(event_type, payload, caller)
        trace.record("notify", _router_named(payload), "", event_type)

    return publish


def _router_named(payload: Mapping[str, Any]) -> str:
    """The router a Neutron notification payload names directly ("" if none)."""
    for section in ("router", "router_interface"):
        value = payload.get(section)
        if isinstance(value, Mapping) and isinstance(value.get("id"), str):
            return str(value["id"])
    router_id = payload.get("router_id")
    return router_id if isinstance(router_id, str) else ""


def _is_service_vm(server_name: str) -> bool:
    """A router's VM (``ak-router-<router id>_<n>``) or a hot spare (``ak-spare-<token>``)."""
    return bool(_router_of(server_name)) or server_name.startswith(SPARE_PREFIX)


def _router_of(server_name: str) -> str:
    """``ak-router-<router id>_<n>`` (a service VM) -> the router id ("" for other names)."""
    found = _SERVICE_VM.match(server_name)
    return found["router"] if found else ""
