"""The simulated Neutron's filtered lists: the fast paths (indexes, raw pre-matching) answer
exactly what matching every record's view answers."""

from __future__ import annotations

from typing import Any

import pytest

from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.neutron import model as neutron_module
from astara_actors.sim.settings import SimSettings


@pytest.fixture(scope="module")
def cloud() -> SimCloud:
    # Never started and servers never leave BUILD: only the Neutron and Nova models are used.
    cloud = SimCloud(
        SimSettings(port=0, tenants=2, routers_per_tenant=3, boot_delay=3600.0, seed=5)
    )
    cloud.bootstrap()
    return cloud


def slow(
    cloud: SimCloud,
    kind: str,
    caller: Any,
    filters: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """The same list with every shortcut off: each record's view matched against the filters."""
    model = cloud.neutron
    assert model is not None
    with monkeypatch.context() as m:
        m.setattr(neutron_module, "_DERIVED", frozenset(filters) | neutron_module._DERIVED)
        m.setattr(model, "_by_device", _Everything(model._table("port")))
        m.setattr(model, "_by_network", _Everything(model._table("port")))
        return model.list(kind, caller, filters)


class _Everything(dict):  # type: ignore[type-arg]
    """An index that names every port for any key (so the full scan decides)."""

    def __init__(self, table: dict[str, Any]) -> None:
        super().__init__()
        self._ids = set(table)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._ids


def test_filtered_lists_equal_the_full_scan(
    cloud: SimCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = cloud.neutron
    assert model is not None
    router = next(iter(cloud.topology))
    made = cloud.topology[router]
    tenant = cloud.tenants[0]
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("port", cloud.admin, {"network_id": made["network"]}),
        ("port", cloud.admin, {"network_id": [made["network"], cloud.external_network_id]}),
        ("port", cloud.admin, {"device_id": router}),
        ("port", cloud.admin, {"device_id": router, "network_id": cloud.external_network_id}),
        ("port", tenant, {"network_id": made["network"], "fields": ["id", "name"]}),
        ("port", tenant, {"binding:host_id": ""}),  # hidden from tenants: nothing matches
        ("port", cloud.admin, {"name": "nope"}),
        ("subnet", cloud.admin, {"network_id": made["network"]}),
        ("subnet", cloud.admin, {"router:external": "true"}),
        ("floatingip", cloud.admin, {"router_id": router}),
        ("floatingip", tenant, {"port_id": made["vm_port"]}),
        ("router", tenant, {"name": cloud.neutron.get("router", router, cloud.admin)["name"]}),
        ("network", cloud.admin, {"router:external": "True"}),
    ]
    for kind, caller, filters in cases:
        fast = model.list(kind, caller, filters)
        assert fast == slow(cloud, kind, caller, filters, monkeypatch), (kind, filters)
    assert model.list("port", cloud.admin, {"network_id": made["network"]})  # not vacuous


def test_a_literal_server_name_filter_equals_the_regular_expression(cloud: SimCloud) -> None:
    routers = list(cloud.topology)[:3]
    cloud.boot_vms(routers)
    nova = cloud.nova
    for router in routers:
        literal = nova.servers(None, all_tenants=True, name=f"ak-router-{router}_")
        regex = nova.servers(None, all_tenants=True, name=f"ak-router-{router}_(?:)")
        assert [s["id"] for s in literal] == [s["id"] for s in regex] and len(literal) == 1
    assert len(nova.servers(None, all_tenants=True, name="ak-router-")) == 3
    assert nova.servers(None, all_tenants=True, name="nothing-like-it") == []
