"""astara-sim's settings: the ``[sim]`` section, read once into a frozen value."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from astara_actors.errors import SettingsError

__all__ = ["SimSettings"]

_SERVICES = ("identity", "network", "compute")


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Every knob of the simulated cloud, with the defaults ``etc/sim.ini`` documents."""

    # --- where it listens
    listen: str = "127.0.0.1"  # IPv4 or IPv6 address of the API server
    port: int = 9900  # Keystone, Neutron and Nova share it (/identity /network /compute); 0 = any
    public_url: str = ""  # base URL advertised in the catalog ("" = http://<listen>:<port>)
    region: str = "RegionOne"
    # --- accounts
    admin_user: str = "admin"
    admin_password: str = "admin-secret"
    admin_project: str = "admin"
    tenant_password: str = "demo-secret"  # password of every tenant's user "<tenant>-user"
    # --- networks
    management_cidr: str = "127.100.0.0/16"  # on loopback: each VM's appliance listens here
    external_cidr: str = "172.24.0.0/13"  # the public network routers get their gateway on
    appliance_port: int = 5000
    # per-address: each appliance listens on its management address (a stopped one refuses
    # connections); shared: one socket on the wildcard address serves them all, by the address
    # a connection reached (a stopped one resets it) — for more appliances than the open-files
    # limit allows sockets (about 19,900 with a hard limit of 20,000).
    appliance_listen: str = "per-address"
    ssh_port: int = 0  # each appliance also answers SSH on its management address (0 = off)
    # The appliances' SSH host key and a known_hosts naming it for every listener are kept in
    # this folder ("" = a new host key per run, known to no client). The demo: <state_dir>/ssh.
    ssh_dir: str = ""
    # --- initial load
    tenants: int = 2  # tenants "demo-0" ... created at start
    routers_per_tenant: int = 2  # each with one network, subnet, VM port and floating IP
    # Keep the cloud across restarts: embedded in astara-orchestrator in <state_dir>/sim/cloud.json,
    # astara-sim in its --state-file; a kept cloud is loaded instead of the initial load above.
    keep_cloud: bool = True
    # --- Nova
    boot_delay: float = 2.0  # seconds a server stays in BUILD
    delete_delay: float = 1.0  # seconds a deleted server stays visible
    detach_delay: float = 1.0  # seconds a detached interface stays plugged (Nova detaches async)
    boot_failure_rate: float = 0.0  # share of boots that end in ERROR (0..1)
    image_id: str = "astara-appliance"  # a boot naming another image is refused, as by Nova
    flavor_id: str = "astara-router"  # likewise the only flavor
    extra_image_ids: str = ""  # more images a boot may name, comma separated (rebuild --image)
    # --- Nova's metadata API (on listen), where an orchestrator's metadata proxy forwards to
    nova_metadata_port: int = 8775  # 0 = any free port (so is it whenever port is 0)
    metadata_secret: str = "astara-sim-metadata-secret"  # Nova's metadata_proxy_shared_secret
    # --- faults of the APIs (per service) and of the appliances
    error_rate_identity: float = 0.0  # share of requests answered 503 (0..1)
    error_rate_network: float = 0.0
    error_rate_compute: float = 0.0
    latency_identity: float = 0.0  # seconds added to every request
    latency_network: float = 0.0
    latency_compute: float = 0.0
    appliance_latency: float = 0.0  # seconds before every appliance answer
    appliance_failure_interval: float = 0.0  # an appliance dies every N seconds (0 = never)
    # --- beside a real Neutron: when neutron_auth_url is set, Keystone and Neutron are the real
    # ones (not served here); the simulated Nova plugs the real ports, trusts the real tokens.
    neutron_auth_url: str = ""  # the real Keystone, e.g. http://controller:5000/v3
    neutron_username: str = ""  # an admin account that may read and bind ports
    neutron_password: str = ""
    neutron_project: str = ""
    neutron_user_domain: str = "Default"
    neutron_project_domain: str = "Default"
    # --- beside a real Nova (one running the fake virt driver): Keystone, Neutron and Nova are
    # the real ones at neutron_auth_url; only the appliance agents of their VMs are served here.
    real_nova: bool = False  # true: only an agent per ak-router-/ak-spare- VM the real Nova runs
    watch_interval: float = 1.0  # seconds between two readings of the real Nova's servers
    # --- notifications (Neutron's) and load
    transport_url: str = ""  # bus to publish Neutron notifications on ("" = none)
    notifications_exchange: str = "neutron"
    load_rate: float = 0.0  # router creates/updates/deletes per second (0 = none)
    seed: int = 0  # random seed of faults and load (0 = random)

    def __post_init__(self) -> None:
        for cidr_key in ("management_cidr", "external_cidr"):
            try:
                ipaddress.ip_network(getattr(self, cidr_key))
            except ValueError as exc:
                raise SettingsError("sim", cidr_key, str(exc)) from None
        if not ipaddress.ip_network(self.management_cidr).is_loopback:
            raise SettingsError(
                "sim", "management_cidr", "must be on loopback (e.g. 127.100.0.0/16)"
            )
        for key in ("boot_failure_rate", *(f"error_rate_{s}" for s in _SERVICES)):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise SettingsError("sim", key, "must be between 0 and 1")
        if not 0 <= self.port < 65536:
            raise SettingsError("sim", "port", "must be between 0 (any free port) and 65535")
        if not 0 <= self.nova_metadata_port < 65536:
            raise SettingsError(
                "sim", "nova_metadata_port", "must be between 0 (any free port) and 65535"
            )
        if not self.metadata_secret:
            raise SettingsError(
                "sim",
                "metadata_secret",
                "must not be empty (it is the key of X-Instance-ID-Signature: without it any"
                " request could read any instance's metadata)",
            )
        if not all(" " <= c <= "~" for c in self.metadata_secret):
            raise SettingsError("sim", "metadata_secret", "must be printable ASCII characters")
        if self.neutron_auth_url:
            for key in ("neutron_username", "neutron_password", "neutron_project"):
                if not getattr(self, key):
                    raise SettingsError("sim", key, "is required with neutron_auth_url")
        if self.real_nova and not self.neutron_auth_url:
            raise SettingsError(
                "sim",
                "real_nova",
                "requires neutron_auth_url (and neutron_username,"
                " neutron_password, neutron_project): the real Keystone to find"
                " Nova and Neutron with",
            )
        if not self.watch_interval > 0:
            raise SettingsError("sim", "watch_interval", "must be a positive number of seconds")
        if self.appliance_listen not in ("per-address", "shared"):
            raise SettingsError(
                "sim",
                "appliance_listen",
                f"must be per-address or shared, not {self.appliance_listen!r}",
            )
        if not 0 < self.appliance_port < 65536:
            raise SettingsError("sim", "appliance_port", "must be between 1 and 65535")

    @property
    def real_neutron(self) -> bool:
        return bool(self.neutron_auth_url)

    def error_rate(self, service: str) -> float:
        return float(getattr(self, f"error_rate_{service}", 0.0))

    def latency(self, service: str) -> float:
        return float(getattr(self, f"latency_{service}", 0.0))
