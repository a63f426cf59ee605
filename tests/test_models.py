"""The Neutron parsers in models.py: real fixtures, and any valid dict with optional keys
missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from astara_actors.core.models import (
    GATEWAY_OWNER,
    FloatingIp,
    Interface,
    NetworkInfo,
    Port,
    Router,
    Subnet,
)

FIXTURES = Path(__file__).parent / "fixtures" / "neutron-api"

ids = st.uuids().map(str)
text = st.text(max_size=20)
ipv4 = st.ip_addresses(v=4).map(str)
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in b)
)
owners = st.sampled_from(
    ["", "compute:nova", GATEWAY_OWNER, "network:router_interface", "network:dhcp"]
)
fixed_ips = st.lists(st.fixed_dictionaries({"subnet_id": ids, "ip_address": ipv4}), max_size=3)


def optional(**keys: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts holding any subset of ``keys``, each value possibly None."""
    return st.fixed_dictionaries({}, optional={k: st.none() | v for k, v in keys.items()})


port_dicts = st.builds(
    lambda required, opt: {**required, **opt},
    st.fixed_dictionaries({"id": ids, "network_id": ids}),
    optional(
        name=text,
        mac_address=macs,
        device_id=ids,
        device_owner=owners,
        fixed_ips=fixed_ips,
        project_id=ids,
        tenant_id=ids,
    ),
)
subnet_dicts = st.builds(
    lambda required, opt: {**required, **opt},
    st.fixed_dictionaries(
        {
            "id": ids,
            "network_id": ids,
            "ip_version": st.sampled_from([4, 6, "4"]),
            "cidr": st.sampled_from(["10.0.0.0/24", "2001:db8::/64"]),
        }
    ),
    optional(
        name=text,
        gateway_ip=ipv4,
        enable_dhcp=st.booleans(),
        dns_nameservers=st.lists(ipv4, max_size=3),
        host_routes=st.lists(
            st.fixed_dictionaries({"destination": text, "nexthop": ipv4}), max_size=2
        ),
        ipv6_ra_mode=st.sampled_from(["slaac", "dhcpv6-stateful"]),
    ),
)
fip_dicts = st.builds(
    lambda required, opt: {**required, **opt},
    st.fixed_dictionaries({"id": ids, "floating_ip_address": ipv4}),
    optional(fixed_ip_address=ipv4, router_id=ids, port_id=ids),
)


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())["body"]


def test_router_from_fixture_has_gateway_interface_and_floating_ip():
    router = Router.from_neutron(
        body("router-admin-view.json")["router"],
        body("ports-by-router-admin-view.json")["ports"],
        body("floatingips.json")["floatingips"],
    )
    assert router.tenant_id == "2f1f231e7cbe4028a87c725e401565c9"
    assert router.ha is False
    assert router.external_port is not None
    assert router.external_port.fixed_ips[0].ip_address == "172.24.0.63"
    assert [p.fixed_ips[0].ip_address for p in router.internal_ports] == ["10.1.1.1"]
    assert router.ports == (router.external_port, *router.internal_ports)
    assert [(f.floating_ip_address, f.fixed_ip_address) for f in router.floating_ips] == [
        ("172.24.1.224", "10.1.1.204")
    ]


def test_a_router_shows_its_status_tag_and_how_many_there_are():
    raw = body("router-admin-view.json")["router"]
    assert Router.from_neutron({**raw, "tags": []}, []).status_tags == 0
    one = Router.from_neutron({**raw, "tags": ["owner:ops", "astara-status:ACTIVE"]}, [])
    assert (one.shown_status, one.status_tags) == ("ACTIVE", 1)
    two = Router.from_neutron({**raw, "tags": ["astara-status:BUILD", "astara-status:ACTIVE"]}, [])
    assert (two.shown_status, two.status_tags) == ("BUILD", 2)


def test_network_from_fixture_resolves_its_subnet():
    net = NetworkInfo.from_neutron(body("network.json")["network"], [body("subnet.json")["subnet"]])
    assert net.mtu == 1450
    assert net.subnets[0].dns_nameservers == ("192.0.2.53",)
    assert net.subnets[0].gateway_ip == "10.1.1.1"


@given(port_dicts)
def test_any_port_dict_parses_and_keeps_its_values(d):
    port = Port.from_neutron(d)
    assert port.id == d["id"]
    assert port.network_id == d["network_id"]
    assert port.name == (d.get("name") or "")
    assert port.mac_address == (d.get("mac_address") or "")
    assert port.device_owner == (d.get("device_owner") or "")
    assert [(f.subnet_id, f.ip_address) for f in port.fixed_ips] == [
        (f["subnet_id"], f["ip_address"]) for f in d.get("fixed_ips") or ()
    ]
    assert port.tenant_id == (d.get("project_id") or d.get("tenant_id") or "")
    hash(port)  # frozen values are hashable


@given(subnet_dicts)
def test_any_subnet_dict_parses_with_defaults_for_missing_keys(d):
    subnet = Subnet.from_neutron(d)
    assert subnet.ip_version == int(d["ip_version"])
    assert subnet.cidr == d["cidr"]
    assert subnet.gateway_ip == (d.get("gateway_ip") or None)
    assert subnet.enable_dhcp is bool(d.get("enable_dhcp"))
    assert subnet.dns_nameservers == tuple(d.get("dns_nameservers") or ())
    assert list(subnet.host_routes) == list(d.get("host_routes") or ())


@given(
    st.fixed_dictionaries(
        {"id": ids}, optional={"name": text, "mtu": st.none() | st.integers(68, 9000)}
    ),
    st.lists(subnet_dicts, max_size=3),
)
def test_network_keeps_its_subnets_in_order(d, subnets):
    net = NetworkInfo.from_neutron(d, subnets)
    assert [s.id for s in net.subnets] == [s["id"] for s in subnets]
    assert net.mtu == d.get("mtu")


@given(fip_dicts)
def test_any_floating_ip_dict_parses(d):
    fip = FloatingIp.from_neutron(d)
    assert fip.floating_ip_address == d["floating_ip_address"]
    assert fip.fixed_ip_address == d.get("fixed_ip_address")


@given(
    st.fixed_dictionaries(
        {"id": ids},
        optional={
            "project_id": ids,
            "name": text,
            "ha": st.booleans(),
            "admin_state_up": st.booleans(),
        },
    ),
    st.lists(port_dicts, max_size=5),
    st.lists(fip_dicts, max_size=3),
)
def test_router_sorts_ports_by_owner_and_drops_unassociated_fips(d, ports, fips):
    router = Router.from_neutron(d, ports, fips)
    owners = [p.get("device_owner") or "" for p in ports]
    assert len(router.internal_ports) == owners.count("network:router_interface")
    assert (router.external_port is not None) == (GATEWAY_OWNER in owners)
    assert len(router.floating_ips) == sum(1 for f in fips if f.get("fixed_ip_address"))
    assert router.ha is bool(d.get("ha", False))


@given(
    st.fixed_dictionaries(
        {"ifname": text},
        optional={
            "lladdr": st.none() | macs.map(str.upper),
            "addresses": st.lists(text, max_size=2),
        },
    )
)
def test_appliance_interfaces_have_lower_case_macs(d):
    iface = Interface.from_appliance(d)
    assert iface.lladdr == (d.get("lladdr") or "").lower()
    assert iface.addresses == tuple(d.get("addresses") or ())
