"""The simulated cloud assembled: Keystone, Neutron, Nova and the appliance agents, wired.

Nova tells us when a server becomes ACTIVE, is gone, or has its ports changed; we start, stop
or re-plug that server's appliance agent on its management address, with the MACs and
addresses of its Neutron ports (management NIC first, as the real appliance sees them).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from astara_actors.sim.appliances.agents import ApplianceServer
from astara_actors.sim.contracts import Caller, Notify, PortDirectory
from astara_actors.sim.keystone.model import KeystoneModel, Project
from astara_actors.sim.neutron.model import NeutronFault, NeutronModel
from astara_actors.sim.nova.model import Flavor, NovaFault, NovaModel
from astara_actors.sim.settings import SimSettings
from astara_actors.sim.trace import Trace

__all__ = ["SimCloud"]

LOG = logging.getLogger(__name__)


class SimCloud:
    """Every simulated service of one ``astara-sim`` process, and its topology helpers."""

    def __init__(
        self,
        settings: SimSettings,
        *,
        notify: Notify | None = None,
        clock: Any = time.monotonic,
        rng: random.Random | None = None,
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
            port=settings.appliance_port, latency=settings.appliance_latency, trace=self.trace
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
        )
        self.admin = Caller(
            user_id=self.keystone.admin_user.id,
            project_id=self.keystone.admin_project.id,
            is_admin=True,
            roles=("admin", "member", "reader"),
            user_name=settings.admin_user,
            project_name=settings.admin_project,
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
        self.pushes: dict[str, int] = {}  # router id -> config pushes its appliances accepted
        self.leftovers: list[tuple[str, str, Caller]] = []

    # --- lifecycle
    def start(self) -> SimCloud:
        self.appliances.start()
        if self.ssh is not None:
            self.ssh.start()
        return self

    def stop(self) -> None:
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
        """A router with a gateway, one network/subnet behind it, a VM port and a floating IP.

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
            "port",
            {
                "network_id": net["id"],
                "name": f"{name}-vm",
                "device_owner": "compute:nova",
                "device_id": f"vm-{router['id']}",
            },
            tenant,
        )
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
        }
        return str(router["id"])

    def boot_vms(self, router_ids: list[str] | None = None) -> list[str]:
        """A VM for each router (of ``router_ids``, default all) that has none, with the ports and
        name astara's orchestrator gives it (``ASTARA:MGT``/``ASTARA:VRRP`` ports,
        ``ak-router-<id>_0``), as a previous orchestrator run would have left it: benchmarks of
        restarts at scale start from there. Returns the routers that got one.

        Plugged as the orchestrator plugs them: booted with the management port only (Nova
        refuses a boot with the address-less VRRP ports), the VRRP ports attached once the
        server is ACTIVE."""
        model = self._model()
        have = {_router_of(s["name"]) for s in self.nova.servers(None, all_tenants=True)}
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
        self._model().delete("port", made["vm_port"], self.admin)  # a VM port: Nova's to delete
        self._model().remove_router_interface(router_id, {"subnet_id": made["subnet"]}, tenant)
        self._model().delete("router", router_id, tenant)
        # The orchestrator's VRRP port stays on the network until it has stopped the VM, and
        # Neutron refuses to delete a network in use: retry later, as a tenant would.
        self.leftovers.append((made["subnet"], made["network"], tenant))
        self.reap()

    def reap(self) -> int:
        """Delete the networks of deleted routers once nothing uses them; how many remain."""
        remaining = []
        for subnet_id, network_id, tenant in self.leftovers:
            try:
                self._model().delete("subnet", subnet_id, tenant)
                self._model().delete("network", network_id, tenant)
            except NeutronFault as exc:
                if exc.status != 404:
                    remaining.append((subnet_id, network_id, tenant))
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
        address, nics = found
        router = _router_of(server["name"])
        if router:
            self.boots[router] = self.boots.get(router, 0) + 1
        self.trace.record("active", router, server["id"], server["name"])
        try:
            self.appliances.add(server["id"], address, nics, router_id=router)
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
        found = self._nics(server)
        if found is not None:
            self.appliances.set_interfaces(server["id"], found[1])

    # --- faults
    def servers_for(self, ident: str) -> list[str]:
        """Server ids for a server id, or for a router id (its ``ak-router-<id>_<n>`` VMs)."""
        try:
            return [self.nova.get(ident)["id"]]
        except NovaFault:
            pass
        prefix = f"ak-router-{ident}_"
        return [
            s["id"]
            for s in self.nova.servers(None, all_tenants=True)
            if s["name"].startswith(prefix)
        ]

    def router_counters(self, router_id: str) -> dict[str, int]:
        """VMs booted for a router and config pushes its appliances accepted, ever."""
        live = 0
        for server_id in self.servers_for(router_id):
            try:
                live += self.appliances.pushes(server_id)
            except KeyError:
                pass
        return {
            "boots": self.boots.get(router_id, 0),
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


def _router_of(server_name: str) -> str:
    """``ak-router-<router id>_<n>`` -> the router id ("" for other names)."""
    if not server_name.startswith("ak-router-"):
        return ""
    return server_name[len("ak-router-") :].rsplit("_", 1)[0]
