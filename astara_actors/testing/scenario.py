"""The captured Neutron scenario (``tests/fixtures/neutron-notifications``) as an in-memory
cloud, with its real ids."""

from __future__ import annotations

import uuid
from collections import deque

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.models import GATEWAY_OWNER
from astara_actors.testing.captures import FIXTURES as CAPTURES

FIXTURES = CAPTURES / "neutron-notifications"
TENANT = "2f1f231e7cbe4028a87c725e401565c9"
ROUTER = "7efa1155-0901-4e5e-aa82-7445b0091d00"
GW_ROUTER = "cb672026-5807-482a-aec3-9587be26a6e7"
PUBLIC_NET = "1b7016f1-24d4-487d-b573-6c405bb99e59"
PUBLIC_SUBNET = "d39ec11f-69b5-44de-8e6b-28a2191dcc9e"
NET, SUBNET = "d17ea133-67f8-4e4f-98c1-2f0542150474", "0cf33cf9-ef1a-4e10-804c-0cbb45ec86ef"
X_NET, X_SUBNET = "52301c02-5bd6-462c-bf81-85eb660c19ce", "7d30a011-9a51-4356-9e21-fe0b988d44ef"
INTERFACE = "1f760c3b-ac06-4b43-90c8-f3183de7c469"
X_INTERFACE = "fb666c0a-22b3-47b0-8122-cd3c962efe21"
GATEWAY = "baf0849d-a552-4ebe-8221-e61081412e34"
VM_PORT, X_VM_PORT = "65f53299-12b7-43fe-8709-1f40ad864971", "a466dab6-4c7c-40e8-919c-9780cfe7d798"
FIP = "1d7d02bd-c8da-44d8-84ca-cfbb1fa54de6"
OWNER = "network:router_interface"


class QueuedIds:
    """A ``new_id`` for MemoryCloud that hands out queued ids first, then random ones."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()

    def __call__(self) -> str:
        return self.queue.popleft() if self.queue else str(uuid.uuid4())


def scenario_cloud() -> MemoryCloud:
    """The captured scenario's topology, with its ids, as it stood after step 24.

    Router 7efa1155 has a gateway on the public network 1b7016f1 and interfaces on d17ea133
    (subnet 0cf33cf9) and 52301c02 (subnet 7d30a011), each with a VM port; floating IP
    1d7d02bd is on VM port 65f53299. Ports go through ``make_port`` so the cloud's indexes
    stay right; the ids are queued just before each call.
    """
    ids = QueuedIds()
    cloud = MemoryCloud(new_id=ids)

    def add_network(net: str, subnet: str, name: str, cidr: str, **kw: object) -> None:
        ids.queue.extend((net, subnet))
        cloud.add_network(name, cidr=cidr, **kw)  # type: ignore[arg-type]

    def add_port(port_id: str, network_id: str, subnet_id: str, ip: str, **kw: str) -> None:
        ids.queue.append(port_id)
        cloud.make_port(network_id, subnet_id=subnet_id, ip_address=ip, **kw)

    add_network(
        PUBLIC_NET,
        PUBLIC_SUBNET,
        "public",
        "172.24.0.0/20",
        tenant_id="admin",
        external=True,
        enable_dhcp=False,
    )
    add_network(NET, SUBNET, "realos-t1-r1-net", "10.1.1.0/24", tenant_id=TENANT)
    add_network(X_NET, X_SUBNET, "realos-t1-r1-x-net", "10.1.101.0/24", tenant_id=TENANT)
    cloud.routers[ROUTER] = {
        "id": ROUTER,
        "name": "realos-t1-r1",
        "tenant_id": TENANT,
        "project_id": TENANT,
        "admin_state_up": True,
        "status": "ACTIVE",
        "external_gateway_info": {
            "network_id": PUBLIC_NET,
            "enable_snat": True,
            "external_fixed_ips": [{"subnet_id": PUBLIC_SUBNET, "ip_address": "172.24.0.63"}],
        },
        "routes": [],
    }
    # The gateway port belongs to no project, as in ports-by-router-admin-view.json.
    add_port(
        GATEWAY,
        PUBLIC_NET,
        PUBLIC_SUBNET,
        "172.24.0.63",
        device_id=ROUTER,
        device_owner=GATEWAY_OWNER,
    )
    add_port(
        INTERFACE, NET, SUBNET, "10.1.1.1", tenant_id=TENANT, device_id=ROUTER, device_owner=OWNER
    )
    add_port(
        X_INTERFACE,
        X_NET,
        X_SUBNET,
        "10.1.101.1",
        tenant_id=TENANT,
        name="realos-t1-r1-x-rif",
        device_id=ROUTER,
        device_owner=OWNER,
    )
    add_port(
        VM_PORT,
        NET,
        SUBNET,
        "10.1.1.204",
        tenant_id=TENANT,
        name="realos-t1-r1-vm",
        device_id="7893964a-e49b-4d77-8e04-f4fdb269fd15",
        device_owner="compute:nova",
    )
    add_port(
        X_VM_PORT,
        X_NET,
        X_SUBNET,
        "10.1.101.10",
        tenant_id=TENANT,
        name="realos-t1-r1-x-vm",
        device_id="f20b1023-a515-4301-8f6a-d3b1597a19ed",
        device_owner="compute:nova",
    )
    cloud.floatingips[FIP] = {
        "id": FIP,
        "tenant_id": TENANT,
        "project_id": TENANT,
        "floating_ip_address": "172.24.1.224",
        "floating_network_id": PUBLIC_NET,
        "router_id": ROUTER,
        "port_id": VM_PORT,
        "fixed_ip_address": "10.1.1.204",
        "status": "ACTIVE",
    }
    return cloud


# Every classified fixture, fed in capture order to one resolver over the seeded topology
# (which is static, so e.g. 006 already finds the router that step 6 attaches).
RESOLVED: dict[int, list[str]] = {
    2: [ROUTER],  # the external network: the router has its gateway there
    4: [ROUTER],
    6: [ROUTER],
    8: [ROUTER],
    10: [ROUTER],
    11: [ROUTER],
    13: [ROUTER],
    15: [ROUTER],
    17: [],
    19: [ROUTER],
    21: [ROUTER],
    23: [ROUTER],
    25: [ROUTER],
    27: [ROUTER],
    29: [ROUTER],
    31: [ROUTER],
    33: [ROUTER],
    34: [ROUTER],
    36: [ROUTER],
    38: [ROUTER],
    40: [ROUTER],
    42: [ROUTER],
    44: [ROUTER],
    46: [ROUTER],
    48: [ROUTER],
    51: [ROUTER],
    52: [ROUTER],
    54: [ROUTER],
    56: [ROUTER],
    58: [GW_ROUTER],
    60: [GW_ROUTER],
    62: [ROUTER],
    64: [],
    65: [ROUTER],
    67: [ROUTER],
    69: [ROUTER],
    71: [ROUTER],
    73: [ROUTER],
    75: [ROUTER],
}
