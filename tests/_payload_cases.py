"""Inputs of ``build_router_config`` for the payload cache's tests: one router whose subnets,
ports and gateway change from one build to the next (models and settings only, so that the
payloads in ``fixtures/payloads/before-cache.json`` could be made by the code before the cache
with this very module: ``{name: json.dumps(build_router_config(**kwargs))}`` for each case,
run with that code's ``astara_actors`` first on the path)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from astara_actors.config.settings import Settings
from astara_actors.core.models import FixedIp, FloatingIp, NetworkInfo, Port, Router, Subnet

__all__ = ["cases"]

ROUTER = "7efa1155-0901-4e5e-aa82-7445b0091d00"
TENANT = "2f1f231e7cbe4028a87c725e401565c9"
MGT, EXT, NET1, NET2 = "mgt-net", "ext-net", "net-1", "net-2"


def _subnet(sid: str, net: str, cidr: str, gateway: str | None, **kw: Any) -> Subnet:
    return Subnet(
        id=sid,
        name=f"{sid}-name",
        network_id=net,
        ip_version=6 if ":" in cidr else 4,
        cidr=cidr,
        gateway_ip=gateway,
        enable_dhcp=kw.get("enable_dhcp", True),
        dns_nameservers=kw.get("dns", ()),
        host_routes=kw.get("routes", ()),
        ipv6_ra_mode=kw.get("ra_mode"),
    )


def _port(pid: str, net: str, *ips: tuple[str, str], name: str = "", device: str = "") -> Port:
    return Port(
        id=pid,
        name=name,
        network_id=net,
        mac_address=f"fa:16:3e:00:00:{len(pid):02x}",
        device_id=device or f"device-{pid}",
        device_owner="compute:nova",
        fixed_ips=tuple(FixedIp(subnet_id=s, ip_address=ip) for s, ip in ips),
        tenant_id=TENANT,
    )


def cases() -> list[tuple[str, dict[str, Any]]]:
    """``build_router_config`` keyword arguments, in the order the tests build them (each a
    change of the one before, so that a cache kept from one build to the next would show a
    stale value)."""
    settings = Settings(
        host="orch-1",
        orchestrator_address="127.100.0.1",
        metadata_port=9697,
        provider_labels=(("ext", ("192.168.57.0/24",)),),
    )
    mgt_subnet = _subnet("mgt-sub", MGT, "127.100.0.0/16", None, enable_dhcp=False)
    ext_v4 = _subnet("ext-v4", EXT, "172.24.0.0/13", "172.24.0.1", enable_dhcp=False)
    ext_v6 = _subnet("ext-v6", EXT, "2001:db8::/64", "2001:db8::1", enable_dhcp=False)
    net1_v4 = _subnet(
        "n1-v4",
        NET1,
        "10.0.1.0/24",
        "10.0.1.1",
        dns=("192.0.2.53",),
        routes=({"destination": "10.9.0.0/16", "nexthop": "10.0.1.254"},),
    )
    net1_v6 = _subnet("n1-v6", NET1, "fd00:1::/64", "fd00:1::1", ra_mode="slaac")
    net2 = _subnet("n2-v4", NET2, "10.0.2.5/24", "10.0.2.1")  # host bits set (strict=False)
    networks = {
        MGT: NetworkInfo(MGT, "mgt", None, (mgt_subnet,)),
        EXT: NetworkInfo(EXT, "public", 1500, (ext_v4, ext_v6)),
        NET1: NetworkInfo(NET1, "net-1", 1450, (net1_v4, net1_v6)),
        NET2: NetworkInfo(NET2, "net-2", 1450, (net2,)),
    }
    mgt_port = _port("mgt-port", MGT, ("mgt-sub", "127.100.0.5"), name=f"ASTARA:MGT:{ROUTER}")
    ext_port = _port("ext-port", EXT, ("ext-v4", "172.24.0.10"), ("ext-v6", "2001:db8::10"))
    if1 = _port("if-1", NET1, ("n1-v4", "10.0.1.1"), ("n1-v6", "fd00:1::1"), device=ROUTER)
    if2 = _port("if-2", NET2, ("n2-v4", "10.0.2.1"), device=ROUTER)
    net1_ports = [
        if1,
        _port("vrrp", NET1, ("n1-v4", "10.0.1.2"), name=f"ASTARA:VRRP:{ROUTER}"),
        _port("lb", NET1, ("n1-v4", "10.0.1.3"), name="ASTARA:LB:x"),
        _port("guest-a", NET1, ("n1-v4", "10.0.1.20")),
        _port("guest-b", NET1, ("n1-v6", "fd00:1::f"), ("n1-v4", "10.0.1.9")),
        _port("guest-c", NET1, ("n1-v6", "fd00:1::a:b")),
        _port("guest-d", NET1, ("gone-subnet", "10.7.0.3")),
        _port("guest-e", NET1),
        _port("guest-f", NET1, ("n1-v4", "not-an-address"), ("n1-v4", "10.0.1.30")),
    ]
    router = Router(
        id=ROUTER,
        tenant_id=TENANT,
        name="r",
        admin_state_up=True,
        status="ACTIVE",
        ha=False,
        external_port=ext_port,
        internal_ports=(if1,),
        floating_ips=(
            FloatingIp("fip-2", "172.24.0.99", "10.0.1.9", ROUTER, "guest-b"),
            FloatingIp("fip-1", "172.24.0.98", "10.0.1.20", ROUTER, "guest-a"),
        ),
    )
    iface_map = {MGT: "ge0", EXT: "ge1", NET1: "ge2", NET2: "ge3"}
    base: dict[str, Any] = {
        "router": router,
        "management_port": mgt_port,
        "networks": networks,
        "network_ports": {NET1: net1_ports},
        "iface_map": iface_map,
        "settings": settings,
    }
    out: list[tuple[str, dict[str, Any]]] = [("base", base), ("again", dict(base))]

    def changed(name: str, **kw: Any) -> dict[str, Any]:
        case = {**out[-1][1], **kw}
        out.append((name, case))
        return case

    # The tenant network's subnet shrinks: every address on it has a new prefix.
    net1_small = replace(net1_v4, cidr="10.0.1.0/26")
    changed(
        "subnet cidr changed",
        networks={**networks, NET1: replace(networks[NET1], subnets=(net1_small, net1_v6))},
    )
    # The external subnet's gateway moves.
    ext_v4_gw = replace(ext_v4, gateway_ip="172.24.0.254")
    changed(
        "external gateway changed",
        networks={
            **out[-1][1]["networks"],
            EXT: replace(networks[EXT], subnets=(ext_v4_gw, ext_v6)),
        },
    )
    # The external address moves to a v4 subnet of its own, without a gateway.
    ext_other = _subnet("ext-v4b", EXT, "198.51.100.0/24", None, enable_dhcp=False)
    changed(
        "external address moved",
        router=replace(router, external_port=_port("ext-port", EXT, ("ext-v4b", "198.51.100.7"))),
        networks={
            **out[-1][1]["networks"],
            EXT: replace(networks[EXT], subnets=(ext_v4_gw, ext_v6, ext_other)),
        },
    )
    # A second tenant network is plugged; a guest port comes and one goes.
    changed(
        "interface added, ports changed",
        router=replace(out[-1][1]["router"], internal_ports=(if1, if2)),
        network_ports={
            NET1: [p for p in net1_ports if p.id != "guest-a"]
            + [_port("guest-g", NET1, ("n1-v4", "10.0.1.40"))],
            NET2: [if2, _port("guest-h", NET2, ("n2-v4", "10.0.2.8"))],
        },
    )
    changed("ha", ha_config={"peers": ["127.100.0.9"], "priority": 100})
    changed("no gateway", router=replace(out[-1][1]["router"], external_port=None))
    changed("gateway back", router=router, network_ports={NET1: net1_ports}, ha_config=None)
    return out
