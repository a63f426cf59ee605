"""Neutron notifications off the bus: decode the oslo.messaging body, classify what changed.

Pure functions, no I/O. :func:`decode` turns an AMQP body (oslo v2 envelope or v1 plain
message) into a :class:`Notification`; :func:`classify` says which router-relevant
:class:`Change` it reports, or ``None``. Both raise only :class:`MalformedMessage`.
Turning a change into router events (which may need Neutron) is :mod:`astara_actors.core.resolve`.

Every id a :class:`Change` carries was checked by :mod:`astara_actors.core.validate` (Neutron ids
are UUIDs, project ids Keystone's): a message naming ``../../etc/passwd`` as its router is
malformed, and never reaches an actor, a URL or the store.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from astara_actors.core import validate
from astara_actors.core.events import Action, Change, PortBody, RouterBody
from astara_actors.core.models import (
    GATEWAY_OWNER,
    INTERFACE_OWNERS,
    STATUS_TAG_PREFIX,
    FixedIp,
    Port,
)
from astara_actors.errors import AstaraError
from astara_actors.protocol.control import COMMAND_EVENT_TYPE

__all__ = [
    "Change",
    "MalformedMessage",
    "Notification",
    "classify",
    "decode",
    "is_command",
]

# Payload sections whose owner is the notification's tenant, most specific first.
_TENANT_SECTIONS = (
    "router",
    "port",
    "subnet",
    "floatingip",
    "network",
    "router_interface",
    "router.interface",
)
_TENANT_KEYS = ("project_id", "tenant_id")
_CONTEXT_KEYS = ("project_id", "tenant_id", "project", "tenant")
# Ports we create ourselves (management, VRRP); reacting to them would loop on every boot.
_OWN_PORT_PREFIX = "ASTARA:"
# A port with one of these owners names its router in device_id.
_ROUTER_OWNERS = frozenset((*INTERFACE_OWNERS, GATEWAY_OWNER))
_META_LIMIT = 255  # message_id, publisher_id...: shown and audited, never routed on
# A carried body's text fields (names, device ids and owners): Neutron's own limit.
_TEXT_LIMIT = 255
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", re.ASCII)
_MAX_FIXED_IPS = 64  # more than any port has: a body with more is not used (read instead)
_MAX_ROUTES = 1024


class MalformedMessage(AstaraError):
    """Raised when a bus message cannot be decoded; says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Notification:
    """One decoded notification; ``tenant_id`` is ``""`` when the message names none.

    ``tenant_id`` is as received (a command's is ``"*"``): :func:`classify` checks it before a
    :class:`Change` carries it. The other metadata are escaped and cut to 255 characters.
    ``payload`` is the decoded JSON object, shared and not to be modified (it is typed
    ``Mapping``; a read-only proxy would make notifications impossible to copy or pickle).
    """

    event_type: str
    payload: Mapping[str, Any]
    tenant_id: str
    message_id: str
    timestamp: str
    publisher_id: str
    priority: str


# ---------------------------------------------------------------------------------- decode
def decode(body: bytes | str | Mapping[str, Any]) -> Notification:
    """Decode an AMQP body (oslo v2 envelope or v1 plain message); raises MalformedMessage."""
    message = _json_object(body, "body")
    if "oslo.message" in message:
        version = message.get("oslo.version")
        if version is not None and not (isinstance(version, str) and version.startswith("2.")):
            raise MalformedMessage(f"unsupported oslo.version {_short(version)}")
        inner = message["oslo.message"]
        if not isinstance(inner, str):
            raise MalformedMessage(
                f"oslo.message must be a JSON string, not {type(inner).__name__}"
            )
        message = _json_object(inner, "oslo.message")
        if "oslo.message" in message:
            raise MalformedMessage("oslo.message holds another envelope")
    event_type = message.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedMessage(f"event_type must be a non-empty string, not {_short(event_type)}")
    payload = message.get("payload")
    if not isinstance(payload, Mapping):
        raise MalformedMessage(
            f"{event_type[:80]}: payload must be an object, not {type(payload).__name__}"
        )
    return Notification(
        event_type=event_type,
        payload=payload,
        tenant_id=_tenant_id(message, payload),
        message_id=_meta(message, "message_id"),
        timestamp=_meta(message, "timestamp"),
        publisher_id=_meta(message, "publisher_id"),
        priority=_meta(message, "priority"),
    )


def is_command(n: Notification) -> bool:
    """True for the operator commands (``astara.command``) sent on the same exchange."""
    return n.event_type.startswith(COMMAND_EVENT_TYPE)


def _json_object(raw: object, where: str) -> Mapping[str, Any]:
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"{where} is not UTF-8: {exc.reason} at byte {exc.start}"
            raise MalformedMessage(reason) from None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, and ints over the digit limit
            raise MalformedMessage(f"{where} is not JSON: {str(exc)[:120]}") from None
        except RecursionError:
            raise MalformedMessage(f"{where} is nested too deeply") from None
    if not isinstance(raw, Mapping):
        raise MalformedMessage(f"{where} must be a JSON object, not {type(raw).__name__}")
    return raw


def _tenant_id(message: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    for section in _TENANT_SECTIONS:
        resource = payload.get(section)
        if isinstance(resource, Mapping) and (found := _first_text(resource, _TENANT_KEYS)):
            return found
    if found := _first_text(payload, _TENANT_KEYS):
        return found
    # v2 (and the original's v1) flatten the request context into _context_<key>.
    if found := _first_text(message, tuple(f"_context_{k}" for k in _CONTEXT_KEYS)):
        return found
    context = message.get("context")
    if isinstance(context, Mapping) and (found := _first_text(context, _CONTEXT_KEYS)):
        return found
    return ""


def _first_text(d: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = d.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _meta(message: Mapping[str, Any], key: str) -> str:
    return validate.label(message.get(key), _META_LIMIT)


def _short(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:60])
    if value is None or isinstance(value, bool | float):
        return repr(value)[:60]
    if isinstance(value, int):  # repr of a huge int raises (the int/str digit limit)
        return repr(value) if abs(value) < 10**30 else "a large int"
    return type(value).__name__


# -------------------------------------------------------------------------------- classify
def classify(n: Notification) -> Change | None:
    """The router-relevant change ``n`` reports, or None (``*.start``, commands, unknown...).

    Raises MalformedMessage when a known event type has a payload of the wrong shape.
    """
    parse = _PARSERS.get(n.event_type)
    return parse(n) if parse is not None else None


def _router(action: Action) -> Callable[[Notification], Change]:
    def parse(n: Notification) -> Change:
        where = f"{n.event_type}: payload"
        router = _section(n.payload, "router", where)
        router_id = _uuid(n.payload, "router_id", where)  # router.delete.end
        if router is not None:
            router_id = router_id or _uuid(router, "id", f"{where}.router")
        if router_id is None:
            raise MalformedMessage(f"{n.event_type}: payload names no router id")
        own_tenant = _own_tenant(router or {}, f"{where}.router")
        body = None
        if action == Action.UPDATE and router is not None:
            body = _router_body(router, router_id, own_tenant)
        return Change(
            kind="router",
            action=action,
            tenant_id=_tenant(n),
            event_type=n.event_type,
            operation=_operation(n.event_type),
            router_id=router_id,
            resource_id=router_id,
            resource_tenant_id=own_tenant,
            body=body,
        )

    return parse


def _router_interface(n: Notification) -> Change:
    where = f"{n.event_type}: payload"
    section = _section(n.payload, "router_interface", where)
    if section is None:  # the key before Neutron's notification payloads were renamed
        section = _section(n.payload, "router.interface", where)
    if section is None:
        raise MalformedMessage(f"{n.event_type}: payload.router_interface is missing")
    where = f"{where}.router_interface"
    router_id = _uuid(section, "id", where, required=True)
    subnet_ids = _ids(section, "subnet_ids", where)
    if not subnet_ids and (subnet_id := _uuid(section, "subnet_id", where)):
        subnet_ids = (subnet_id,)
    return Change(
        kind="router",
        action=Action.UPDATE,
        tenant_id=_tenant(n),
        event_type=n.event_type,
        operation="create" if n.event_type.endswith("create") else "delete",
        router_id=router_id,
        resource_id=_uuid(section, "port_id", where),
        resource_tenant_id=_own_tenant(section, where),
        network_id=_uuid(section, "network_id", where),
        subnet_ids=subnet_ids,
    )


def _resource(kind: str) -> Callable[[Notification], Change | None]:
    def parse(n: Notification) -> Change | None:
        where = f"{n.event_type}: payload"
        section = _section(n.payload, kind, where)
        resource_id = _uuid(n.payload, f"{kind}_id", where)  # *.delete.end carries both
        fields: dict[str, Any] = {}
        if section is not None:
            where = f"{where}.{kind}"
            resource_id = _uuid(section, "id", where) or resource_id
            fields["resource_tenant_id"] = _own_tenant(section, where)
            if kind == "port":
                name = _text(section, "name", where)
                if name is not None and name.startswith(_OWN_PORT_PREFIX):
                    return None
                owner = _text(section, "device_owner", where)
                device_id = _text(section, "device_id", where)
                if owner in _ROUTER_OWNERS and device_id is not None:
                    # Only then is device_id a router id that resolution routes on.
                    device_id = _uuid(section, "device_id", where)
                fields.update(
                    port_name=name,
                    network_id=_uuid(section, "network_id", where),
                    device_id=device_id,
                    device_owner=owner,
                    subnet_ids=_fixed_ip_subnets(section),
                )
                if owner not in _ROUTER_OWNERS and resource_id is not None:
                    # A router's own port changes its interfaces: that router reads it all.
                    port = _port_body(section, resource_id, fields)
                    if port is not None:
                        fields["body"] = PortBody(_operation(n.event_type), port)
            elif kind == "subnet":
                fields["network_id"] = _uuid(section, "network_id", where)
            elif kind == "floatingip":
                fields["floating_router_id"] = _uuid(section, "router_id", where)
        if resource_id is None:
            raise MalformedMessage(f"{n.event_type}: payload names no {kind} id")
        if kind == "network":
            fields["network_id"] = resource_id
        elif kind == "subnet":
            fields["subnet_ids"] = (resource_id,)
        return Change(
            kind=kind,
            action=Action.UPDATE,
            tenant_id=_tenant(n),
            event_type=n.event_type,
            operation=_operation(n.event_type),
            resource_id=resource_id,
            **fields,
        )

    return parse


# ----------------------------------------------------------------------- carried bodies
# What a router applies without reading Neutron again: every field checked here, and a body
# with anything unexpected is not used at all (the router then reads Neutron, as before).
def _port_body(section: Mapping[str, Any], port_id: str, fields: Mapping[str, Any]) -> Port | None:
    network_id = fields.get("network_id")
    if network_id is None:
        return None
    name, device_id, owner = (_plain(section.get(k)) for k in ("name", "device_id", "device_owner"))
    mac = section.get("mac_address")
    if mac is None or mac == "":
        mac = ""
    elif not (isinstance(mac, str) and _MAC.match(mac)):
        return None
    fixed_ips = _fixed_ips(section.get("fixed_ips"))
    if name is None or device_id is None or owner is None or fixed_ips is None:
        return None
    return Port(
        id=port_id,
        name=name,
        network_id=sys.intern(network_id),
        mac_address=mac.lower(),
        device_id=device_id,
        device_owner=sys.intern(owner),
        fixed_ips=fixed_ips,
        tenant_id=sys.intern(fields.get("resource_tenant_id") or ""),
        revision=_revision(section),
    )


def _router_body(router: Mapping[str, Any], router_id: str, tenant_id: str) -> RouterBody | None:
    if "external_gateway_info" not in router:
        return None  # the gateway cannot be checked against the ports last read
    usable, gateway = _gateway(router["external_gateway_info"])
    name, status = _plain(router.get("name")), _plain(router.get("status"))
    admin, ha = router.get("admin_state_up", True), router.get("ha")
    routes = _routes(router.get("routes"))
    tags = router.get("tags")
    if (
        not usable
        or name is None
        or status is None
        or not isinstance(admin, bool)
        or not (ha is None or isinstance(ha, bool))
        or routes is None
        or not (tags is None or isinstance(tags, list))
    ):
        return None
    shown = next(
        (
            t[len(STATUS_TAG_PREFIX) :]
            for t in tags or ()
            if isinstance(t, str) and t.startswith(STATUS_TAG_PREFIX)
        ),
        None,
    )
    if shown is not None and _plain(shown) is None:
        return None
    return RouterBody(
        router_id=router_id,
        tenant_id=tenant_id,
        name=name,
        admin_state_up=admin,
        status=status,
        ha=ha,
        gateway=gateway,
        routes=routes,
        shown_status=shown,
        revision=_revision(router),
    )


def _plain(value: object) -> str | None:
    """A carried text field: absent/null → ``""``; a bounded printable string as is; else None."""
    if value is None:
        return ""
    if isinstance(value, str) and len(value) <= _TEXT_LIMIT and value.isprintable():
        return value
    return None


def _address(value: object) -> str | None:
    """An IP address in Neutron's (canonical) form, else None."""
    if not isinstance(value, str) or len(value) > 45:
        return None
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        return None
    return value if str(parsed) == value else None


def _fixed_ips(value: object) -> tuple[FixedIp, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_FIXED_IPS:
        return None
    out = []
    for ip in value:
        if not isinstance(ip, Mapping) or not validate.is_uuid(ip.get("subnet_id")):
            return None
        address = _address(ip.get("ip_address"))
        if address is None:
            return None
        out.append(FixedIp(sys.intern(validate.neutron_id(ip["subnet_id"])), address))
    return tuple(out)


def _gateway(info: object) -> tuple[bool, tuple[str, tuple[tuple[str, str], ...]] | None]:
    """``external_gateway_info`` as RouterBody.gateway, and whether it can be used."""
    if info is None:
        return True, None
    if not isinstance(info, Mapping) or not validate.is_uuid(info.get("network_id")):
        return False, None
    fixed = _fixed_ips(info.get("external_fixed_ips"))
    if fixed is None:
        return False, None
    network_id = validate.neutron_id(info["network_id"])
    return True, (network_id, tuple(sorted((f.subnet_id, f.ip_address) for f in fixed)))


def _routes(value: object) -> tuple[tuple[tuple[str, str], ...], ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_ROUTES:
        return None
    out = []
    for route in value:
        if not isinstance(route, Mapping):
            return None
        items = []
        for key, text in route.items():
            if _plain(key) is None or not isinstance(text, str) or _plain(text) is None:
                return None
            items.append((key, text))
        out.append(tuple(items))
    return tuple(out)


def _revision(resource: Mapping[str, Any]) -> int:
    value = resource.get("revision_number")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _operation(event_type: str) -> str:
    return event_type.split(".")[1]  # "<kind>.<operation>.end"


def _section(d: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = d.get(key)
    if value is None or isinstance(value, Mapping):
        return value
    raise MalformedMessage(f"{where}.{key} must be an object, not {type(value).__name__}")


def _text(d: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    """A string field that drives routing: absent/null/empty → None, another type → error."""
    value = d.get(key)
    if isinstance(value, str) and value:
        return value
    if value is not None and not isinstance(value, str):
        raise MalformedMessage(f"{where}.{key} must be a string, not {type(value).__name__}")
    if required:
        raise MalformedMessage(f"{where}.{key} is missing")
    return None


def _uuid(d: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    """A Neutron id field: absent/null/empty → None, a UUID → its canonical form, else error."""
    value = _text(d, key, where, required=required)
    if value is None:
        return None
    try:
        return validate.neutron_id(value, f"{where}.{key}")
    except validate.InvalidValue as exc:
        raise MalformedMessage(str(exc)) from None


def _tenant(n: Notification) -> str:
    """The notification's tenant, checked: a Keystone project id, or "" when it names none."""
    if not n.tenant_id:
        return ""
    try:
        return validate.tenant_id(n.tenant_id, f"{n.event_type}: tenant id")
    except validate.InvalidValue as exc:
        raise MalformedMessage(str(exc)) from None


def _own_tenant(resource: Mapping[str, Any], where: str) -> str:
    """The resource's own project (``""`` for a gateway port), checked."""
    for key in _TENANT_KEYS:
        value = resource.get(key)
        if isinstance(value, str) and value:
            try:
                return validate.tenant_id(value, f"{where}.{key}")
            except validate.InvalidValue as exc:
                raise MalformedMessage(str(exc)) from None
    return ""


def _ids(d: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MalformedMessage(f"{where}.{key} must be a list of ids")
    try:
        return tuple(validate.neutron_id(v, f"{where}.{key}") for v in value)
    except validate.InvalidValue as exc:
        raise MalformedMessage(str(exc)) from None


def _fixed_ip_subnets(port: Mapping[str, Any]) -> tuple[str, ...]:
    # Informational only (resolution goes by network), so odd entries are skipped, not fatal.
    fixed_ips = port.get("fixed_ips")
    if not isinstance(fixed_ips, list):
        return ()
    found = (ip.get("subnet_id") for ip in fixed_ips if isinstance(ip, Mapping))
    return tuple(dict.fromkeys(validate.neutron_id(s) for s in found if validate.is_uuid(s)))


_PARSERS: dict[str, Callable[[Notification], Change | None]] = {
    "router.create.end": _router(Action.CREATE),
    "router.update.end": _router(Action.UPDATE),
    "router.delete.end": _router(Action.DELETE),
    "router.interface.create": _router_interface,
    "router.interface.delete": _router_interface,
    **{
        f"{kind}.{operation}.end": _resource(kind)
        for kind in ("port", "subnet", "network", "floatingip")
        for operation in ("create", "update", "delete")
    },
}
