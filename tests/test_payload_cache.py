"""The router's parsed subnets kept between pushes (``ParsedInputs``): the same payload, byte
for byte, as the code before the cache built, however the router's subnets, ports and gateway
change from one push to the next."""

from __future__ import annotations

import ipaddress
import json
import re
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.core.instance import InstanceManager
from astara_actors.core.models import FixedIp
from astara_actors.core.payload import (
    ParsedInputs,
    build_router_config,
    default_v4_gateway,
    packed_config,
)
from astara_actors.testing import FakeClock
from tests._payload_cases import cases

# Made by the code before the cache (commit 3926b0b) from tests/_payload_cases.py.
BEFORE = json.loads(
    (Path(__file__).parent / "fixtures" / "payloads" / "before-cache.json").read_text()
)


def test_every_case_is_built_as_the_code_before_the_cache_built_it() -> None:
    assert [name for name, _ in cases()] == list(BEFORE)
    for name, kwargs in cases():
        assert json.dumps(build_router_config(**kwargs)) == BEFORE[name], name


def test_a_cache_kept_over_changing_inputs_never_shows_a_stale_value() -> None:
    # One router's cache over every change of the cases, in order: the subnet shrinks, the
    # external gateway moves, the external address moves, a network comes, HA, no gateway...
    parsed = ParsedInputs()
    for name, kwargs in cases():
        assert json.dumps(build_router_config(**kwargs, parsed=parsed)) == BEFORE[name], name


def test_a_cache_shared_by_the_two_vms_of_a_pair_gives_each_its_own_payload() -> None:
    parsed = ParsedInputs()
    (_, base), *_ = cases()
    first = build_router_config(**base, ha_config={"peers": ["b"], "priority": 100}, parsed=parsed)
    second = build_router_config(**base, ha_config={"peers": ["a"], "priority": 50}, parsed=parsed)
    assert first["ha_config"] != second["ha_config"]
    assert {k: v for k, v in first.items() if k != "ha_config"} == {
        k: v for k, v in second.items() if k != "ha_config"
    }


def test_a_changed_cidr_is_parsed_again_and_a_bad_one_still_raises() -> None:
    parsed = ParsedInputs()
    assert parsed.prefixlen("10.0.0.0/24") == 24
    assert parsed.prefixlen("10.0.0.0/26") == 26
    assert parsed.prefixlen("10.0.0.5/24") == 24  # host bits set: not strict, as before
    for bad in ("10.0.0.0/33", "nonsense"):
        with pytest.raises(ValueError):
            parsed.prefixlen(bad)
        with pytest.raises(ValueError):  # not cached as anything
            parsed.prefixlen(bad)


def test_the_cache_stays_small_whatever_passes_through_it() -> None:
    parsed = ParsedInputs()
    for n in range(1000):
        assert parsed.prefixlen(f"10.{n // 256}.{n % 256}.0/24") == 24
    assert len(parsed) <= 256


def test_the_default_gateway_is_chosen_again_when_its_inputs_change() -> None:
    parsed = ParsedInputs()

    def ext(addresses: list[str], subnets: list[tuple[str, str]]) -> list[dict[str, object]]:
        return [
            {
                "network_type": "external",
                "interface": {"addresses": addresses},
                "subnets": [{"cidr": c, "gateway_ip": g} for c, g in subnets],
            }
        ]

    one = ext(["172.24.0.10/13"], [("172.24.0.0/13", "172.24.0.1")])
    assert default_v4_gateway(one, parsed) == "172.24.0.1" == default_v4_gateway(one)
    moved = ext(["172.24.0.10/13"], [("172.24.0.0/13", "172.24.0.254")])
    assert default_v4_gateway(moved, parsed) == "172.24.0.254"
    elsewhere = ext(["198.51.100.7/24"], [("172.24.0.0/13", "172.24.0.254")])
    assert default_v4_gateway(elsewhere, parsed) == ""
    assert default_v4_gateway(moved, parsed) == "172.24.0.254"
    assert default_v4_gateway([], parsed) == ""


@pytest.mark.parametrize("ip", ["10.0.0.1", "fd00::a:b", "2001:db8::1:0:0:1", "x.y:z"])
def test_a_hostname_replaces_dots_and_colons_as_the_regular_expression_did(ip: str) -> None:
    (_, base), *_ = cases()
    ports = base["network_ports"]["net-1"]
    guest = replace(ports[3], fixed_ips=(FixedIp("n1-v4", ip),))
    config = build_router_config(**{**base, "network_ports": {"net-1": [guest]}})
    (allocation,) = config["networks"][2]["allocations"]
    assert allocation["hostname"] == f"{re.sub(r'[:.]', '-', ip)}.local"


def test_a_pushed_config_is_kept_as_the_same_compact_json_deflated() -> None:
    for name, text in BEFORE.items():
        payload = json.loads(text)
        kept = zlib.decompress(packed_config(payload))
        assert kept == json.dumps(payload, separators=(",", ":"), default=str).encode(), name


# --- a router's pushes on the in-memory cloud: what changes in Neutron reaches the payload
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock)


def configured(cloud: MemoryCloud, clock: FakeClock, router_id: str) -> InstanceManager:
    im = InstanceManager(
        router_id,
        "tenant-1",
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        settings=cloud.settings(),
        clock=clock,
    )
    assert im.boot() is S.BOOTING
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    return im


def internal(config: dict[str, object]) -> list[dict[str, object]]:
    return [n for n in config["networks"] if n["network_type"] == "internal"]  # type: ignore[index, attr-defined]


def test_a_subnet_resized_in_neutron_is_pushed_with_its_new_prefix(cloud, clock) -> None:
    rid = cloud.add_router("tenant-1")
    im = configured(cloud, clock, rid)
    (net,) = internal(cloud.config_pushes[rid][-1])
    assert net["interface"]["addresses"][0].endswith("/24")
    subnet_id = net["subnets"][0]["id"]
    # When the subnet is resized (its gateway still in it) and the router pushed again
    cidr = ipaddress.ip_network(cloud.subnets[subnet_id]["cidr"])
    cloud.subnets[subnet_id]["cidr"] = str(cidr.supernet(new_prefix=23))
    clock.advance(5)
    assert im.configure() is S.CONFIGURED
    # Then the push shows the new prefix, not the one parsed for the last push
    (net,) = internal(cloud.config_pushes[rid][-1])
    assert net["interface"]["addresses"][0].endswith("/23")
    assert net["subnets"][0]["cidr"] == str(cidr.supernet(new_prefix=23))
    (shown,) = im.pushed_config().values()  # what GET /routers/{id} shows: that push
    assert shown == cloud.config_pushes[rid][-1]


def test_an_interface_added_and_removed_reaches_the_payload(cloud, clock) -> None:
    rid = cloud.add_router("tenant-1")
    im = configured(cloud, clock, rid)

    def push() -> dict[str, object]:
        clock.advance(5)  # not the router read by the last step
        if im.configure() is S.REPLUG:  # the VM's interfaces do not match the networks
            assert im.replug() is S.UP
            assert im.configure() is S.CONFIGURED
        return cloud.config_pushes[rid][-1]

    network_id = cloud.add_interface(rid)
    assert network_id in {n["network_id"] for n in internal(push())}
    cloud.remove_interface(rid, network_id)
    assert network_id not in {n["network_id"] for n in internal(push())}
