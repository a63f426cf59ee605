"""What a metadata request claims, read from its headers and checked at the edge.

The appliance's per-network forwarder sends ``X-Instance-ID`` (the guest's server), ``X-Tenant-ID``
(its project), ``X-Forwarded-For`` (the guest's address) and ``X-Quantum-Network-ID`` (the
network it came in on; ``X-Neutron-Network-ID`` is accepted too). Each value is checked before it
reaches the index, a log line or Nova:

- instance ids: a UUID (with or without hyphens, any case) or an id of at most
  :data:`MAX_ID` letters, digits, ``.``, ``_`` and ``-`` starting with a letter or digit
  (the simulated cloud's);
- network ids: a UUID (Neutron's), as :func:`astara_actors.core.validate.neutron_id`;
- tenant ids: a Keystone project id, as :func:`astara_actors.core.validate.tenant_id`;
- the guest's address: one IPv4 or IPv6 address.

A missing ``X-Instance-ID`` is :class:`NoInstance` (404, as the original); anything else
missing or malformed is :class:`BadClaim` (400), whose message names the header.
"""

from __future__ import annotations

import re

from astara_actors.core import validate
from astara_actors.core.metadata_index import Claim, canonical_address
from astara_actors.metadata.http import Request

__all__ = ["MAX_ID", "BadClaim", "NoInstance", "claim_of"]

MAX_ID = 64
_MAX_VALUE = 255  # characters of any claimed header value, before parsing
_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID - 1}}}", re.ASCII)
NETWORK_HEADERS = ("x-quantum-network-id", "x-neutron-network-id")
_CLAIMED = ("x-instance-id", "x-tenant-id", "x-forwarded-for", *NETWORK_HEADERS)


class BadClaim(ValueError):
    """A claimed header is missing, repeated or malformed (400); the message says which."""


class NoInstance(LookupError):
    """No ``X-Instance-ID``: the original answered 404."""


def claim_of(request: Request, peer: str) -> Claim:
    """The claim of ``request``, received from ``peer`` (a canonical address)."""
    headers = request.headers
    if "x-instance-id" not in headers:
        raise NoInstance("no X-Instance-ID")
    for name in _CLAIMED:
        if name in request.repeated:
            raise BadClaim(f"{_shown_name(name)} is repeated")
        if len(headers.get(name, "")) > _MAX_VALUE:
            raise BadClaim(f"{_shown_name(name)} is longer than {_MAX_VALUE} characters")
    instance = headers["x-instance-id"]
    if validate.is_uuid(instance):
        instance = validate.neutron_id(instance)
    elif not _ID.fullmatch(instance):
        raise BadClaim(f"X-Instance-ID {validate.shown(instance)} is not an instance id")
    networks = {headers[n] for n in NETWORK_HEADERS if n in headers}
    if not networks:
        raise BadClaim("X-Quantum-Network-ID (or X-Neutron-Network-ID) is missing")
    if len(networks) > 1:
        raise BadClaim("X-Quantum-Network-ID and X-Neutron-Network-ID differ")
    try:
        network = validate.neutron_id(networks.pop(), "X-Quantum-Network-ID")
        tenant = validate.tenant_id(_required(headers, "x-tenant-id"), "X-Tenant-ID")
    except validate.InvalidValue as exc:
        raise BadClaim(str(exc)) from None
    forwarded = _required(headers, "x-forwarded-for").strip()
    try:
        if "%" in forwarded:
            raise ValueError(forwarded)
        address = canonical_address(forwarded)
    except ValueError:
        raise BadClaim(
            f"X-Forwarded-For {validate.shown(forwarded)} is not one IP address"
        ) from None
    return Claim(peer, network, address, instance, tenant)


def _required(headers: dict[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise BadClaim(f"{_shown_name(name)} is missing")
    return value


def _shown_name(name: str) -> str:
    return "-".join("ID" if part == "id" else part.capitalize() for part in name.split("-"))
