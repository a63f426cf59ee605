"""What the simulator's parts promise each other (Nova and the appliances need Neutron ports).

The simulated Neutron implements :class:`PortDirectory`; so does the adapter that lets the
simulated Nova run beside a real Neutron.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Caller", "Notify", "PortDirectory"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes an API request, from the token: their project, and whether they are admin."""

    user_id: str
    project_id: str
    is_admin: bool
    roles: tuple[str, ...] = ()
    user_name: str = ""
    project_name: str = ""


# notify(event_type, payload, caller): publish one Neutron-style notification.
Notify = Callable[[str, Mapping[str, Any], "Caller | None"], None]


class PortDirectory(Protocol):
    """The Neutron ports Nova plugs into servers."""

    def port(self, port_id: str) -> dict[str, Any] | None:
        """The port as Neutron shows it to an admin (a copy), or None if it does not exist."""
        ...

    def bind(self, port_id: str, device_id: str, device_owner: str, host: str) -> None:
        """Nova plugged the port into server ``device_id`` (sets binding:host_id, status ACTIVE)."""
        ...

    def unbind(self, port_id: str) -> None:
        """Nova unplugged the port (device_id/owner cleared, status DOWN); absent port: no-op."""
        ...

    def subnet_cidr(self, subnet_id: str) -> str:
        """The CIDR of a subnet (the appliance shows ``ip/prefixlen``)."""
        ...
