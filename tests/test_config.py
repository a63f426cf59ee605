"""The appliance config payload, built from real Neutron responses (tests/fixtures/neutron-api)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from astara_actors.config.settings import Settings
from astara_actors.core.models import NetworkInfo, Port, Router
from astara_actors.core.payload import (
    build_router_config,
    build_user_data,
    default_v4_gateway,
)

FIXTURES = Path(__file__).parent / "fixtures" / "neutron-api"
ROUTER_ID = "7efa1155-0901-4e5e-aa82-7445b0091d00"
TENANT = "2f1f231e7cbe4028a87c725e401565c9"
INTERNAL_NET = "d17ea133-67f8-4e4f-98c1-2f0542150474"
PUBLIC_NET = "1b7016f1-24d4-487d-b573-6c405bb99e59"
MGT_NET = "mgt-net"
MGT_SUBNET = "mgt-subnet"


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())["body"]


@pytest.fixture
def router() -> Router:
    return Router.from_neutron(
        body("router.json")["router"],
        body("ports-by-router-admin-view.json")["ports"],
        body("floatingips.json")["floatingips"],
    )


@pytest.fixture
def management_port() -> Port:
    return Port.from_neutron(
        {
            "id": "mgt-port",
            "name": f"ASTARA:MGT:{ROUTER_ID}",
            "network_id": MGT_NET,
            "mac_address": "fa:16:3e:00:00:aa",
            "device_id": "server-1",
            "fixed_ips": [{"subnet_id": MGT_SUBNET, "ip_address": "127.100.0.2"}],
        }
    )


@pytest.fixture
def networks() -> dict[str, NetworkInfo]:
    mgt = NetworkInfo.from_neutron(
        {"id": MGT_NET, "name": "mgt", "mtu": None},
        [
            {
                "id": MGT_SUBNET,
                "network_id": MGT_NET,
                "ip_version": 4,
                "cidr": "127.100.0.0/16",
                "gateway_ip": None,
                "enable_dhcp": False,
            }
        ],
    )
    return {
        MGT_NET: mgt,
        INTERNAL_NET: NetworkInfo.from_neutron(
            body("network.json")["network"], [body("subnet.json")["subnet"]]
        ),
        PUBLIC_NET: NetworkInfo.from_neutron(
            body("network-public.json")["network"], [body("subnet-public.json")["subnet"]]
        ),
    }


@pytest.fixture
def settings() -> Settings:
    return Settings(
        host="orch-1",
        orchestrator_address="127.100.0.1",
        metadata_port=9697,
        provider_labels=(("ext", ("192.168.57.0/24",)),),
    )


@pytest.fixture
def network_ports() -> dict[str, list[Port]]:
    ports = body("ports-by-router-admin-view.json")["ports"] + [body("port-vm.json")["port"]]
    vrrp = {
        "id": "vrrp-1",
        "name": f"ASTARA:VRRP:{ROUTER_ID}",
        "network_id": INTERNAL_NET,
        "mac_address": "fa:16:3e:00:00:bb",
        "fixed_ips": [],
    }
    no_ip = {
        "id": "no-ip",
        "name": "",
        "network_id": INTERNAL_NET,
        "mac_address": "fa:16:3e:00:00:cc",
    }
    parsed = [Port.from_neutron(p) for p in [*ports, vrrp, no_ip]]
    return {INTERNAL_NET: [p for p in parsed if p.network_id == INTERNAL_NET]}


@pytest.fixture
def config(router, management_port, networks, network_ports, settings) -> dict[str, Any]:
    return build_router_config(
        router,
        management_port=management_port,
        networks=networks,
        network_ports=network_ports,
        iface_map={MGT_NET: "ge0", PUBLIC_NET: "ge1", INTERNAL_NET: "ge2"},
        settings=settings,
    )


def test_top_level_keys_are_exactly_those_of_the_original(config):
    assert set(config) == {
        "asn",
        "neighbor_asn",
        "default_v4_gateway",
        "networks",
        "labels",
        "floating_ips",
        "tenant_id",
        "hostname",
        "orchestrator",
        "ha_resource",
        "vpn",
    }


def test_scalar_fields_come_from_settings_and_router(config):
    assert config["asn"] == 64512
    assert config["neighbor_asn"] == 64512
    assert config["default_v4_gateway"] == "172.24.0.1"
    assert config["labels"] == {"ext": ["192.168.57.0/24"]}
    assert config["tenant_id"] == TENANT
    assert config["hostname"] == f"ak-{TENANT}"
    assert config["orchestrator"] == {
        "address": "127.100.0.1",
        "metadata_port": 9697,
        "host": "orch-1",
    }
    assert config["ha_resource"] is False
    assert config["vpn"] == {}


def test_floating_ip_pairs_come_from_neutron(config):
    assert config["floating_ips"] == [{"floating_ip": "172.24.1.224", "fixed_ip": "10.1.1.204"}]


def test_networks_are_management_then_external_then_internal(config):
    assert [n["network_type"] for n in config["networks"]] == ["management", "external", "internal"]
    assert [n["network_id"] for n in config["networks"]] == [MGT_NET, PUBLIC_NET, INTERNAL_NET]


def test_management_entry_has_the_management_address_and_no_mtu(config):
    assert config["networks"][0] == {
        "interface": {"ifname": "ge0", "addresses": ["127.100.0.2/16"]},
        "network_id": MGT_NET,
        "mtu": None,
        "v4_conf_service": "static",
        "v6_conf_service": "static",
        "network_type": "management",
        "subnets": [
            {
                "id": MGT_SUBNET,
                "cidr": "127.100.0.0/16",
                "dhcp_enabled": False,
                "dns_nameservers": [],
                "host_routes": [],
                "gateway_ip": "",
            }
        ],
        "allocations": [],
    }


def test_external_entry_carries_the_gateway_address_and_public_subnet(config):
    assert config["networks"][1] == {
        "interface": {"ifname": "ge1", "addresses": ["172.24.0.63/20"], "mtu": 1500},
        "network_id": PUBLIC_NET,
        "mtu": 1500,
        "v4_conf_service": "static",
        "v6_conf_service": "static",
        "network_type": "external",
        "subnets": [
            {
                "id": "d39ec11f-69b5-44de-8e6b-28a2191dcc9e",
                "cidr": "172.24.0.0/20",
                "dhcp_enabled": False,
                "dns_nameservers": [],
                "host_routes": [],
                "gateway_ip": "172.24.0.1",
            }
        ],
        "allocations": [],
    }


def test_internal_entry_has_router_address_subnet_and_vm_allocation(config):
    internal = config["networks"][2]
    assert internal["interface"] == {"ifname": "ge2", "addresses": ["10.1.1.1/24"], "mtu": 1450}
    assert internal["mtu"] == 1450
    assert internal["subnets"] == [
        {
            "id": "0cf33cf9-ef1a-4e10-804c-0cbb45ec86ef",
            "cidr": "10.1.1.0/24",
            "dhcp_enabled": True,
            "dns_nameservers": ["192.0.2.53"],
            "host_routes": [],
            "gateway_ip": "10.1.1.1",
        }
    ]
    # The router's own interface port and the VM port; VRRP and IP-less ports are skipped.
    assert internal["allocations"] == [
        {
            "ip_addresses": {"10.1.1.1": True},
            "device_id": ROUTER_ID,
            "hostname": "10-1-1-1.local",
            "mac_address": "fa:16:3e:3a:02:c9",
        },
        {
            "ip_addresses": {"10.1.1.204": True},
            "device_id": "7893964a-e49b-4d77-8e04-f4fdb269fd15",
            "hostname": "10-1-1-204.local",
            "mac_address": "fa:16:3e:ca:d0:e5",
        },
    ]


def test_ha_config_is_added_only_when_given(router, management_port, networks, settings):
    kwargs = dict(
        management_port=management_port,
        networks=networks,
        network_ports={},
        iface_map={MGT_NET: "ge0", PUBLIC_NET: "ge1", INTERNAL_NET: "ge2"},
        settings=settings,
    )
    ha = {"peers": ["127.100.0.3"], "priority": 100}
    assert build_router_config(router, ha_config=ha, **kwargs)["ha_config"] == ha
    assert "ha_config" not in build_router_config(router, **kwargs)


def test_payload_is_json_serialisable_and_deterministic(
    config, router, management_port, networks, network_ports, settings
):
    shuffled = {INTERNAL_NET: list(reversed(network_ports[INTERNAL_NET]))}
    again = build_router_config(
        router,
        management_port=management_port,
        networks=networks,
        network_ports=shuffled,
        iface_map={MGT_NET: "ge0", PUBLIC_NET: "ge1", INTERNAL_NET: "ge2"},
        settings=settings,
    )
    assert json.loads(json.dumps(config)) == config == again


def test_router_without_gateway_has_no_external_entry_and_no_default_gateway(
    router, management_port, networks, settings
):
    no_gw = Router(
        id=router.id,
        tenant_id=router.tenant_id,
        name="",
        admin_state_up=True,
        status="",
        ha=False,
        external_port=None,
        internal_ports=router.internal_ports,
        floating_ips=(),
    )
    config = build_router_config(
        no_gw,
        management_port=management_port,
        networks=networks,
        network_ports={},
        iface_map={MGT_NET: "ge0", INTERNAL_NET: "ge1"},
        settings=settings,
    )
    assert [n["network_type"] for n in config["networks"]] == ["management", "internal"]
    assert config["default_v4_gateway"] == ""


def test_default_gateway_is_empty_when_no_v4_subnet_contains_the_address():
    networks = [
        {
            "network_type": "external",
            "interface": {"addresses": ["2001:db8::5/64"]},
            "subnets": [{"cidr": "172.24.0.0/20", "gateway_ip": "172.24.0.1"}],
        }
    ]
    assert default_v4_gateway(networks) == ""


def test_slaac_subnets_are_not_dhcp_enabled(router, management_port, settings):
    v6 = NetworkInfo.from_neutron(
        {"id": INTERNAL_NET, "mtu": 1450},
        [
            {
                "id": "v6",
                "network_id": INTERNAL_NET,
                "ip_version": 6,
                "cidr": "2001:db8::/64",
                "gateway_ip": "2001:db8::1",
                "enable_dhcp": True,
                "ipv6_ra_mode": "slaac",
            }
        ],
    )
    mgt = NetworkInfo.from_neutron({"id": MGT_NET}, [])
    pub = NetworkInfo.from_neutron({"id": PUBLIC_NET}, [])
    config = build_router_config(
        router,
        management_port=management_port,
        networks={MGT_NET: mgt, PUBLIC_NET: pub, INTERNAL_NET: v6},
        network_ports={},
        iface_map={MGT_NET: "ge0", PUBLIC_NET: "ge1", INTERNAL_NET: "ge2"},
        settings=settings,
    )
    assert config["networks"][2]["subnets"][0]["dhcp_enabled"] is False


def test_allocation_hostname_uses_the_lowest_address():
    from astara_actors.core.payload import network_config

    net = NetworkInfo.from_neutron(
        {"id": "n", "mtu": None},
        [
            {
                "id": "s4",
                "network_id": "n",
                "ip_version": 4,
                "cidr": "10.0.0.0/24",
                "enable_dhcp": True,
            },
            {
                "id": "s6",
                "network_id": "n",
                "ip_version": 6,
                "cidr": "2001:db8::/64",
                "enable_dhcp": False,
            },
        ],
    )
    vm = Port.from_neutron(
        {
            "id": "p",
            "network_id": "n",
            "mac_address": "m",
            "device_id": "d",
            "fixed_ips": [
                {"subnet_id": "s6", "ip_address": "2001:db8::9"},
                {"subnet_id": "s4", "ip_address": "10.0.0.10"},
                {"subnet_id": "s4", "ip_address": "10.0.0.9"},
            ],
        }
    )
    entry = network_config(
        vm, network=net, ifname="ge1", network_type="internal", network_ports=[vm]
    )
    assert entry["allocations"][0]["hostname"] == "10-0-0-9.local"
    assert entry["allocations"][0]["ip_addresses"] == {
        "2001:db8::9": False,
        "10.0.0.10": True,
        "10.0.0.9": True,
    }


def test_user_data_configures_the_management_interface_and_the_astara_user(management_port):
    settings = Settings(
        ssh_public_key="ssh-ed25519 AAAA key\n", boot_command="astara-configure-management"
    )
    text = build_user_data(management_port, "127.100.0.0/16", settings)
    assert text.startswith("#cloud-config\n")
    assert (
        "  - /usr/local/bin/astara-configure-management fa:16:3e:00:00:aa 127.100.0.2/16\n" in text
    )
    assert "  - name: astara\n" in text
    assert "      - ssh-ed25519 AAAA key\n" in text
    assert "output: {all: '| tee -a /var/log/cloud-init-output.log'}" in text


def test_user_data_without_a_key_has_no_authorized_keys_entry(management_port):
    import yaml

    text = build_user_data(management_port, "127.100.0.0/16", Settings(ssh_public_key="  \n"))
    assert "ssh-authorized-keys" not in text
    assert "      - \n" not in text
    user = yaml.safe_load(text)["users"][0]
    assert user["name"] == "astara" and "ssh-authorized-keys" not in user


def test_user_data_authorizes_each_key_line_of_ssh_public_key(management_port):
    import yaml

    keys = "ssh-ed25519 AAAA one\n\nssh-rsa BBBB two\n"
    text = build_user_data(management_port, "127.100.0.0/16", Settings(ssh_public_key=keys))
    user = yaml.safe_load(text)["users"][0]
    assert user["ssh-authorized-keys"] == ["ssh-ed25519 AAAA one", "ssh-rsa BBBB two"]
