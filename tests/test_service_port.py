"""The orchestrator's own management port against the in-memory cloud: create, adopt, duplicates,
errors, and the members' ports of a cluster (fake clock, no sleeps)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.models import FixedIp, Port
from astara_actors.core.service_port import (
    SERVICE_PORT_NAME,
    SERVICE_PORT_OWNER,
    MemberPortSweeper,
    ServicePort,
    ServicePortError,
    choose_address,
    ensure_service_port,
)
from astara_actors.errors import AstaraError, NetworkError
from astara_actors.jobs.orphan_sweep import OrphanSweeper
from astara_actors.testing import FakeClock

HOST = "orch-1"
GRACE = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock)


def ensure(cloud: MemoryCloud, host: str = HOST, **overrides: Any) -> ServicePort:
    kwargs: dict[str, Any] = {
        "host": host,
        "management_network_id": cloud.management_network_id,
        "management_subnet_id": cloud.management_subnet_id,
    }
    kwargs.update(overrides)
    return ensure_service_port(cloud.network, **kwargs)


def service_ports(cloud: MemoryCloud, host: str | None = None) -> list[dict[str, Any]]:
    return cloud.ports_where(name=SERVICE_PORT_NAME, device_id=host)


def add_service_port(cloud: MemoryCloud, host: str = HOST, **kw: Any) -> dict[str, Any]:
    kw.setdefault("subnet_id", cloud.management_subnet_id)
    return cloud.make_port(
        cloud.management_network_id,
        name=SERVICE_PORT_NAME,
        device_id=host,
        device_owner=SERVICE_PORT_OWNER,
        **kw,
    )


# --- create and adopt --------------------------------------------------------------------------


def test_the_first_start_creates_the_port_and_returns_its_address(cloud: MemoryCloud) -> None:
    port = ensure(cloud)
    [raw] = service_ports(cloud)
    assert raw["id"] == port.id
    assert raw["device_id"] == HOST
    assert raw["device_owner"] == SERVICE_PORT_OWNER
    assert raw["network_id"] == cloud.management_network_id
    assert raw["admin_state_up"] is True
    assert raw["port_security_enabled"] is False
    assert raw["fixed_ips"][0]["subnet_id"] == cloud.management_subnet_id
    assert port.mac_address == raw["mac_address"]
    assert port.address == raw["fixed_ips"][0]["ip_address"]
    assert port.address.startswith("127.100.")  # the demo's loopback management subnet
    assert port.prefixlen == 16
    assert port.cidr == f"{port.address}/16"
    assert port.addresses == (port.cidr,)
    assert port.mtu == 1500


def test_a_restart_adopts_the_same_port_without_creating_one(cloud: MemoryCloud, caplog) -> None:
    caplog.set_level(logging.INFO)
    first = ensure(cloud)
    second = ensure(cloud)
    assert second == first
    assert cloud.calls["create_port"] == 1
    assert len(service_ports(cloud)) == 1
    assert any("adopted this host's management port" in r.getMessage() for r in caplog.records)


def test_each_host_has_its_own_port(cloud: MemoryCloud) -> None:
    a = ensure(cloud, "orch-a")
    b = ensure(cloud, "orch-b")
    assert a.id != b.id and a.address != b.address
    assert {p["device_id"] for p in service_ports(cloud)} == {"orch-a", "orch-b"}
    assert ensure(cloud, "orch-a") == a


def test_ports_of_the_same_name_elsewhere_are_not_adopted(cloud: MemoryCloud) -> None:
    other_net, other_subnet = cloud.add_network("elsewhere")
    cloud.make_port(other_net, subnet_id=other_subnet, name=SERVICE_PORT_NAME, device_id=HOST)
    cloud.make_port(cloud.management_network_id, subnet_id=cloud.management_subnet_id, name="x",
                    device_id=HOST)  # fmt: skip
    port = ensure(cloud)
    assert port.network_id == cloud.management_network_id
    assert len(service_ports(cloud)) == 2  # ours, and the one on the other network, untouched


def test_duplicates_keep_the_oldest_and_delete_the_others(cloud: MemoryCloud, caplog) -> None:
    caplog.set_level(logging.INFO)
    oldest = add_service_port(cloud)
    newer = add_service_port(cloud)
    port = ensure(cloud)
    assert port.id == oldest["id"]
    assert [p["id"] for p in service_ports(cloud)] == [oldest["id"]]
    assert newer["id"] not in cloud.ports
    removals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(newer["id"] in m and "duplicate" in m for m in removals)


def test_a_port_without_an_address_on_the_management_subnet_is_replaced(
    cloud: MemoryCloud,
) -> None:
    stale = add_service_port(cloud, subnet_id=None)  # e.g. its subnet was changed since
    port = ensure(cloud)
    assert port.id != stale["id"]
    assert stale["id"] not in cloud.ports
    assert [p["id"] for p in service_ports(cloud)] == [port.id]


class Racing:
    """A Network whose create_port lets another process on the same host create one first."""

    def __init__(self, cloud: MemoryCloud) -> None:
        self._cloud = cloud

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cloud.network, name)

    def create_port(self, **kw: Any) -> Port:
        add_service_port(self._cloud)  # the other process's port: older than ours
        return self._cloud.network.create_port(**kw)


def test_two_processes_creating_at_once_both_end_with_the_older_port(
    cloud: MemoryCloud, caplog
) -> None:
    port = ensure_service_port(
        Racing(cloud),  # type: ignore[arg-type]
        host=HOST,
        management_network_id=cloud.management_network_id,
        management_subnet_id=cloud.management_subnet_id,
    )
    [kept] = service_ports(cloud)
    assert port.id == kept["id"]
    assert ensure(cloud) == port  # what the other process finds too
    assert any("at the same time" in r.getMessage() for r in caplog.records)


def test_a_duplicate_that_cannot_be_deleted_is_logged_not_raised(
    cloud: MemoryCloud, caplog
) -> None:
    oldest = add_service_port(cloud)
    add_service_port(cloud)
    cloud.inject("delete_port", NetworkError("delete port: HTTP 500"))
    assert ensure(cloud).id == oldest["id"]
    assert any("could not remove management port" in r.getMessage() for r in caplog.records)


# --- errors ------------------------------------------------------------------------------------


def test_a_missing_management_network_names_the_setting(cloud: MemoryCloud) -> None:
    with pytest.raises(ServicePortError) as err:
        ensure(cloud, management_network_id="no-such-net")
    assert "[orchestrator] management_network_id" in str(err.value)
    assert "no-such-net" in str(err.value)
    assert err.value.key == "management_network_id"
    assert isinstance(err.value, AstaraError)
    assert "\n" not in str(err.value)


def test_a_subnet_of_another_network_names_the_setting(cloud: MemoryCloud) -> None:
    with pytest.raises(ServicePortError) as err:
        ensure(cloud, management_subnet_id=cloud.external_subnet_id)
    message = str(err.value)
    assert "[orchestrator] management_subnet_id" in message
    assert cloud.management_subnet_id in message  # the subnets it could have been
    assert err.value.key == "management_subnet_id"


@pytest.mark.parametrize("key", ["host", "management_network_id", "management_subnet_id"])
def test_an_empty_setting_is_named(cloud: MemoryCloud, key: str) -> None:
    with pytest.raises(ServicePortError, match=rf"\[orchestrator\] {key}.* empty"):
        ensure(cloud, **{key: ""})
    assert cloud.calls["get_network"] == 0


def test_neutron_refusing_the_create_says_so(cloud: MemoryCloud) -> None:
    cloud.inject("create_port", NetworkError("create port ASTARA:RUG:SERVICE: HTTP 409: full"))
    with pytest.raises(ServicePortError) as err:
        ensure(cloud)
    message = str(err.value)
    assert "Neutron refused to create the orchestrator's management port" in message
    assert "HTTP 409: full" in message
    assert "management_subnet_id" in message


def test_a_full_subnet_is_a_clear_error(cloud: MemoryCloud) -> None:
    net, subnet = cloud.add_network("tiny", cidr="10.9.9.0/30")
    cloud.make_port(net, subnet_id=subnet)  # takes the last free address
    with pytest.raises(ServicePortError, match="no more addresses"):
        ensure(cloud, management_network_id=net, management_subnet_id=subnet)


def test_neutron_down_while_listing_is_a_service_port_error(cloud: MemoryCloud) -> None:
    cloud.inject("list_ports", NetworkError("list ports: connection refused"))
    with pytest.raises(ServicePortError, match="could not list .* connection refused"):
        ensure(cloud)


# --- which address -----------------------------------------------------------------------------


def _port(*ips: tuple[str, str]) -> Port:
    return Port(
        id="p",
        name=SERVICE_PORT_NAME,
        network_id="n",
        mac_address="fa:16:3e:00:00:01",
        device_id=HOST,
        device_owner=SERVICE_PORT_OWNER,
        fixed_ips=tuple(FixedIp(subnet_id=s, ip_address=a) for s, a in ips),
    )


def test_the_address_is_the_one_on_the_management_subnet() -> None:
    port = _port(("v6-slaac", "fdca:3ba5:a17a:acda::5"), ("mgt", "10.0.0.5"))
    assert choose_address(port, "mgt") == "10.0.0.5"
    assert choose_address(port, "v6-slaac") == "fdca:3ba5:a17a:acda::5"
    assert choose_address(port, "other") is None


def test_ipv6_first_then_the_lowest_among_several_on_the_subnet() -> None:
    port = _port(("mgt", "10.0.0.9"), ("mgt", "fd00::9"), ("mgt", "fd00::3"), ("mgt", "10.0.0.2"))
    assert choose_address(port, "mgt") == "fd00::3"


def test_every_address_on_the_management_network_is_plugged_the_chosen_one_first(
    cloud: MemoryCloud,
) -> None:
    port = ensure(cloud)
    raw = cloud.ports[port.id]
    # A second subnet of the management network (as an IPv6 SLAAC one would add).
    with cloud.lock:
        cloud.subnets["v6"] = dict(cloud.subnets[cloud.management_subnet_id], id="v6",
                                   cidr="fdca:3ba5:a17a:acda::/64", ip_version=6)  # fmt: skip
        cloud.networks[cloud.management_network_id]["subnets"].append("v6")
        raw["fixed_ips"].insert(0, {"subnet_id": "v6", "ip_address": "fdca:3ba5:a17a:acda::7"})
    again = ensure(cloud)
    assert again.address == port.address  # on management_subnet_id, which the VMs configure
    assert again.addresses == (port.cidr, "fdca:3ba5:a17a:acda::7/64")


# --- cluster members ---------------------------------------------------------------------------


class Members:
    def __init__(self, *hosts: str) -> None:
        self.now = frozenset(hosts)

    def __call__(self) -> frozenset[str]:
        return self.now


def sweeper(cloud: MemoryCloud, clock: FakeClock, members: Members, **kw: Any) -> MemberPortSweeper:
    kw.setdefault("grace", GRACE)
    return MemberPortSweeper(
        cloud.network,
        host="orch-a",
        management_network_id=cloud.management_network_id,
        members=members,
        clock=clock,
        **kw,
    )


def hosts_with_ports(cloud: MemoryCloud) -> set[str]:
    return {p["device_id"] for p in service_ports(cloud)}


def test_a_members_port_is_removed_only_after_it_was_away_for_the_grace(
    cloud: MemoryCloud, clock: FakeClock, caplog
) -> None:
    caplog.set_level(logging.INFO)
    for host in ("orch-a", "orch-b", "orch-c"):
        ensure(cloud, host)
    members = Members("orch-a", "orch-b", "orch-c")
    s = sweeper(cloud, clock, members)
    assert s.sweep().removed == ()
    members.now = frozenset({"orch-a", "orch-b"})  # orch-c stops
    clock.advance(10)
    report = s.sweep()
    assert report.removed == () and report.pending == ("orch-c",)
    assert any("which is not in the group" in r.getMessage() for r in caplog.records)
    clock.advance(GRACE - 20)  # orch-c was last seen GRACE - 10 ago
    assert s.sweep().removed == ()
    clock.advance(10)
    report = s.sweep()
    [removed] = report.removed
    assert hosts_with_ports(cloud) == {"orch-a", "orch-b"}
    assert removed not in cloud.ports
    assert any("out of the group for" in r.getMessage() for r in caplog.records)
    clock.advance(GRACE)
    report = s.sweep()
    assert report.removed == () and report.pending == () and not report.skipped
    assert "orch-c" not in s.last_seen  # no port, not a member: forgotten


def test_a_member_that_restarts_within_the_grace_keeps_its_port(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    for host in ("orch-a", "orch-b"):
        ensure(cloud, host)
    b_port = ensure(cloud, "orch-b")
    members = Members("orch-a", "orch-b")
    s = sweeper(cloud, clock, members)
    s.sweep()
    for _ in range(3):  # three restarts, each shorter than the grace, longer together
        members.now = frozenset({"orch-a"})
        clock.advance(GRACE * 0.6)
        assert s.sweep().pending == ("orch-b",)
        members.now = frozenset({"orch-a", "orch-b"})
        assert ensure(cloud, "orch-b") == b_port  # the restarted member adopts it
        s.sweep()
    assert hosts_with_ports(cloud) == {"orch-a", "orch-b"}


def test_observe_records_membership_between_sweeps(cloud: MemoryCloud, clock: FakeClock) -> None:
    ensure(cloud, "orch-a")
    ensure(cloud, "orch-b")
    members = Members("orch-a")
    s = sweeper(cloud, clock, members)
    s.observe({"orch-a", "orch-b"})  # on_change saw orch-b in the group ...
    clock.advance(GRACE + 1)  # ... and it has been away since
    assert len(s.sweep().removed) == 1
    assert hosts_with_ports(cloud) == {"orch-a"}


def test_a_member_that_joins_while_the_ports_are_listed_keeps_its_port(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    ensure(cloud, "orch-a")
    ensure(cloud, "orch-b")
    members = Members("orch-a")
    s = sweeper(cloud, clock, members)
    s.sweep()
    clock.advance(GRACE * 2)
    answers = iter([{"orch-a"}, {"orch-a", "orch-b"}])  # orch-b is back as the sweep lists
    s.members = lambda: next(answers)
    assert s.sweep().removed == ()
    assert hosts_with_ports(cloud) == {"orch-a", "orch-b"}


def test_a_host_never_seen_gets_the_whole_grace_from_the_first_sweep(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    ensure(cloud, "orch-a")
    ensure(cloud, "orch-gone")
    s = sweeper(cloud, clock, Members("orch-a"))
    assert s.sweep().pending == ("orch-gone",)
    clock.advance(GRACE - 1)
    assert s.sweep().removed == ()
    clock.advance(1)
    assert len(s.sweep().removed) == 1


@pytest.mark.parametrize("members", [(), ("orch-b",)], ids=["fenced", "not-yet-joined"])
def test_nothing_is_swept_while_this_member_is_not_in_the_group(
    cloud: MemoryCloud, clock: FakeClock, members: tuple[str, ...]
) -> None:
    ensure(cloud, "orch-a")
    ensure(cloud, "orch-b")
    s = sweeper(cloud, clock, Members(*members))
    listed = cloud.calls["list_ports"]
    for _ in range(3):
        report = s.sweep()
        assert report.skipped and report.removed == ()
        clock.advance(GRACE)
    assert hosts_with_ports(cloud) == {"orch-a", "orch-b"}
    assert cloud.calls["list_ports"] == listed  # not even a listing


def test_a_failed_delete_is_retried_by_the_next_sweep(
    cloud: MemoryCloud, clock: FakeClock, caplog
) -> None:
    ensure(cloud, "orch-a")
    ensure(cloud, "orch-b")
    s = sweeper(cloud, clock, Members("orch-a"))
    s.sweep()
    clock.advance(GRACE)
    cloud.inject("delete_port", NetworkError("delete port: HTTP 503"))
    report = s.sweep()
    assert report.failures == 1 and report.removed == ()
    assert any("will retry" in r.getMessage() for r in caplog.records)
    assert len(s.sweep().removed) == 1


def test_a_failed_listing_skips_the_sweep(cloud: MemoryCloud, clock: FakeClock) -> None:
    s = sweeper(cloud, clock, Members("orch-a"))
    cloud.inject("list_ports", NetworkError("list ports: HTTP 503"))
    report = s.sweep()
    assert "could not list ports" in report.skipped


def test_this_members_own_port_gone_from_neutron_is_an_error_in_the_log(
    cloud: MemoryCloud, clock: FakeClock, caplog
) -> None:
    own = ensure(cloud, "orch-a")
    s = sweeper(cloud, clock, Members("orch-a"), own_port_id=own.id)
    assert s.sweep().own_port_missing is False
    cloud.drop_port(own.id)
    assert s.sweep().own_port_missing is True
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(own.id in m and "restart the orchestrator" in m for m in errors)


def test_the_orphan_sweep_alone_never_touches_service_ports(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    ensure(cloud, "orch-a")
    ensure(cloud, "orch-departed")
    sweeper_alone = OrphanSweeper(cloud.network, cloud.compute, grace=0.0, clock=clock)
    for _ in range(3):
        report = sweeper_alone.sweep()
        clock.advance(GRACE * 10)
        assert report.ports_removed == () and report.service_ports_removed == ()
    assert hosts_with_ports(cloud) == {"orch-a", "orch-departed"}


def test_the_orphan_sweep_runs_the_member_sweep_in_a_cluster(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    ensure(cloud, "orch-a")
    gone = ensure(cloud, "orch-b")
    members = sweeper(cloud, clock, Members("orch-a"))
    orphans = OrphanSweeper(
        cloud.network, cloud.compute, grace=300.0, clock=clock, member_ports=members
    )
    assert orphans.sweep().service_ports_removed == ()
    clock.advance(GRACE)
    assert orphans.sweep().service_ports_removed == (gone.id,)
    assert hosts_with_ports(cloud) == {"orch-a"}


def test_a_negative_grace_is_refused(cloud: MemoryCloud, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="grace"):
        sweeper(cloud, clock, Members(), grace=-1)
