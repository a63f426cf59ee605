"""What each caller sees of a Neutron record, and list filtering as Neutron 29 does it.

Three views, as the real captures show them: ``show`` (GET, update responses, ``*.update.end``),
``create`` (POST responses and ``*.create.end``: networks add ``is_default``) and ``delete``
(``*.delete.end``: the core plugin's unfiltered dict for networks, subnets and ports, with
``standard_attr_id``, ``provider:*`` and ``binding:*``; routers and floating IPs as shown).
Non-admins never see ``provider:*``, the admin ``binding:*`` keys, or a router's ``ha`` and
``distributed``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from astara_actors.sim.contracts import Caller
from astara_actors.sim.neutron.base import bad_request

__all__ = [
    "CREATE",
    "DELETE",
    "PAGING_KEYS",
    "SHOW",
    "check_filters",
    "fip_view",
    "matches",
    "network_view",
    "port_view",
    "router_view",
    "select_fields",
    "subnet_view",
]

SHOW, CREATE, DELETE = "show", "create", "delete"

PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")
BINDING_ADMIN = ("binding:host_id", "binding:profile", "binding:vif_details", "binding:vif_type")
ROUTER_ADMIN = ("distributed", "ha")
_PAGING = {
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
}
PAGING_KEYS = frozenset(_PAGING)  # list parameters that are not attribute filters


_ATOMS = (str, int, float, bool, type(None))


def clone(value: Any) -> Any:
    """A deep copy of a record's value (JSON-like: dicts, lists, atoms) without the
    ``copy.deepcopy`` machinery, which was a fifth of the simulator's CPU while it listed
    40,000 ports; anything else falls back to ``copy.deepcopy``."""
    if isinstance(value, _ATOMS):
        return value
    if type(value) is dict:
        return {k: v if isinstance(v, _ATOMS) else clone(v) for k, v in value.items()}
    if type(value) is list:
        return [v if isinstance(v, _ATOMS) else clone(v) for v in value]
    return copy.deepcopy(value)


def _copy(record: Mapping[str, Any], hidden: Iterable[str]) -> dict[str, Any]:
    hidden = set(hidden)
    return {
        key: value if isinstance(value, _ATOMS) else clone(value)
        for key, value in record.items()
        if key not in hidden
    }


def network_view(record: Mapping[str, Any], caller: Caller, mode: str) -> dict[str, Any]:
    hidden = {"is_default"}
    if mode != DELETE:
        hidden.add("standard_attr_id")
        if not caller.is_admin:
            hidden.update(PROVIDER)
    view = _copy(record, hidden)
    if mode == CREATE or record["router:external"]:
        view["is_default"] = record["is_default"]
    return view


def subnet_view(
    record: Mapping[str, Any], network: Mapping[str, Any], mode: str, *, updated: bool = False
) -> dict[str, Any]:
    view = _copy(record, ("standard_attr_id", "segment_id"))
    view["router:external"] = network["router:external"]
    if mode == DELETE:
        view["shared"] = network["shared"]
        view["standard_attr_id"] = record["standard_attr_id"]
        # The capture shows segment_id in subnet.delete.end only for a subnet that had been
        # updated (073 vs 054); Neutron's reason is unknown, the observed shape is kept.
        if updated:
            view["segment_id"] = record["segment_id"]
    return view


def port_view(record: Mapping[str, Any], caller: Caller, mode: str) -> dict[str, Any]:
    if mode == DELETE:
        return _copy(record, ())
    hidden = {"standard_attr_id"}
    if not caller.is_admin:
        hidden.update(BINDING_ADMIN)
    return _copy(record, hidden)


def router_view(record: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
    hidden = {"standard_attr_id"}
    if not caller.is_admin:
        hidden.update(ROUTER_ADMIN)
    return _copy(record, hidden)


def fip_view(record: Mapping[str, Any], port: Mapping[str, Any] | None) -> dict[str, Any]:
    view = _copy(record, ("standard_attr_id",))
    view["port_details"] = (
        None
        if port is None
        else {
            key: port[key]
            for key in (
                "name",
                "network_id",
                "mac_address",
                "admin_state_up",
                "status",
                "device_id",
                "device_owner",
            )
        }
    )
    return view


def check_filters(filters: Mapping[str, Sequence[str]], attributes: Iterable[str]) -> None:
    """400 for a filter on an attribute the resource does not have (``filter-validation``)."""
    known = set(attributes) | _PAGING
    unknown = sorted(key for key in filters if key not in known)
    if unknown:
        raise bad_request(f"{unknown} is invalid attribute for filtering", "HTTPBadRequest")


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _fixed_ip_matches(fixed_ips: Sequence[Mapping[str, Any]], wanted: Sequence[str]) -> bool:
    for spec in wanted:  # "subnet_id=X" or "ip_address=Y" (repeats are OR)
        key, _, value = spec.partition("=")
        if any(_as_text(ip.get(key)) == value for ip in fixed_ips):
            return True
    return False


def matches(view: Mapping[str, Any], filters: Mapping[str, Sequence[str]]) -> bool:
    """Whether ``view`` passes every filter (repeated values of one filter are OR)."""
    for key, wanted in filters.items():
        if key in _PAGING - {"tags", "tags-any"}:
            continue
        if key in ("tags", "tags-any"):
            tags = set(view.get("tags", ()))
            words = {w for item in wanted for w in item.split(",")}
            if not (words <= tags if key == "tags" else words & tags):
                return False
            continue
        if key not in view:
            return False
        value = view[key]
        if key == "fixed_ips":
            if not _fixed_ip_matches(value, wanted):
                return False
            continue
        if isinstance(value, list):
            if not any(_as_text(item) in wanted for item in value):
                return False
            continue
        text = _as_text(value)
        if isinstance(value, bool):
            if text not in (w.lower() for w in wanted):
                return False
        elif text not in wanted:
            return False
    return True


def select_fields(view: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Only the ``fields=`` asked for (all when none)."""
    if not fields:
        return view
    return {key: value for key, value in view.items() if key in fields}
