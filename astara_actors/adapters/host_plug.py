"""Plugging the orchestrator's management port into its host: the ``noop`` and ``linux`` drivers.

The port (:class:`~astara_actors.core.service_port.ServicePort`) reserves the orchestrator's
address in Neutron; for the service VMs to reach it, an interface of this host must carry the
port's MAC and address on the management network.

- ``noop``: the operator configures that interface (docs/service-port.md says how); the driver
  only logs what to configure, and warns while the address is not on this host.
- ``linux``: the driver configures it with the ``ip`` command: either a named interface that
  exists already (``interface``), or a veth pair it creates (``interface`` on this host, ``peer``
  its other end, put into ``bridge`` and/or ``peer_namespace`` if set). The interface gets the
  port's MAC, MTU and addresses and is brought up. Idempotent: what is already right is left
  alone (a plug of a correct interface only reads).

Every failure is a :class:`PlugError` of one line naming the interface (and, for a failed
``ip`` command, the command and its stderr).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from astara_actors.core.service_port import ServicePort
from astara_actors.errors import AstaraError

__all__ = [
    "DRIVERS",
    "HostPlug",
    "LinuxPlug",
    "NoopPlug",
    "PlugError",
    "ServicePortOptions",
    "address_is_local",
    "make_plug",
]

LOG = logging.getLogger(__name__)

DRIVERS = ("noop", "linux")
IP_TIMEOUT = 10.0  # seconds for one ``ip`` command
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")  # the kernel's IFNAMSIZ (16) less the NUL; no alias
_NETNS = re.compile(r"^[^\s/]{1,255}$")

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
IfAddress = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class PlugError(AstaraError):
    """The management port could not be plugged into (or unplugged from) this host."""


class PlugOptionError(PlugError, ValueError):
    """A bad option; the message starts with the option's name (``section_to`` reads it)."""


@dataclass(frozen=True, slots=True)
class ServicePortOptions:
    """How the management port reaches this host; the keys of an ini section as they are.

    ``driver``: ``noop`` or ``linux``. ``interface``: the interface that carries the port's
    MAC and address. ``peer`` (linux): create ``interface`` as a veth pair with this other
    end; empty: ``interface`` must exist. ``bridge`` (linux): put ``peer`` into this bridge.
    ``peer_namespace`` (linux): move ``peer`` into this network namespace (``bridge`` is then
    looked up there). ``member_grace``: seconds a cluster member may be out of the group
    before its port is removed.
    """

    driver: str = "noop"
    interface: str = "astara-mgt"
    peer: str = ""
    bridge: str = ""
    peer_namespace: str = ""
    member_grace: float = 3600.0

    def __post_init__(self) -> None:
        if self.driver not in DRIVERS:
            raise PlugOptionError(
                f"driver must be one of {', '.join(DRIVERS)}, not {self.driver!r}"
            )
        for key in ("interface", "peer", "bridge"):
            value = getattr(self, key)
            if (value or key == "interface") and not _IFNAME.match(value):
                raise PlugOptionError(
                    f"{key} must be an interface name of 1 to 15 characters without spaces, "
                    f"'/' or ':', not {value!r}"
                )
        if self.peer_namespace and not _NETNS.match(self.peer_namespace):
            raise PlugOptionError(
                f"peer_namespace must be a namespace name without spaces or '/', "
                f"not {self.peer_namespace!r}"
            )
        if (self.bridge or self.peer_namespace) and not self.peer:
            raise PlugOptionError(
                "peer must be set for bridge or peer_namespace (they apply to the veth's other end)"
            )
        if self.peer and self.peer == self.interface and not self.peer_namespace:
            raise PlugOptionError(f"peer must differ from interface ({self.interface!r})")
        if self.member_grace < 0:
            raise PlugOptionError(f"member_grace must be >= 0, not {self.member_grace}")


class HostPlug(Protocol):
    """A driver: makes (or tells the operator to make) the port's address live on this host."""

    def plug(self, port: ServicePort) -> None: ...

    def unplug(self, port: ServicePort) -> None:
        """Undo :meth:`plug` (the port is being removed); nothing plugged is not an error."""
        ...


def make_plug(options: ServicePortOptions, *, log: Log = LOG) -> HostPlug:
    """The driver ``options.driver`` names."""
    if options.driver == "linux":
        return LinuxPlug(options, log=log)
    if options.driver == "noop":
        return NoopPlug(options, log=log)
    # ServicePortOptions refuses other names; this is for options built around that check.
    raise PlugOptionError(f"driver must be one of {', '.join(DRIVERS)}, not {options.driver!r}")


def address_is_local(address: str) -> bool:
    """Whether this host (this network namespace) has ``address``: a socket can bind to it."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return False
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def _manual_commands(port: ServicePort, interface: str) -> list[str]:
    commands = [f"ip link set dev {interface} address {port.mac_address}"]
    if port.mtu:
        commands.append(f"ip link set dev {interface} mtu {port.mtu}")
    commands.append(f"ip link set dev {interface} up")
    for cidr in port.addresses:
        v6 = ipaddress.ip_interface(cidr).version == 6
        commands.append(f"ip addr add {cidr} dev {interface}" + (" nodad" if v6 else ""))
    return commands


class NoopPlug:
    """The operator configures the address; this driver says what, and whether it is there."""

    def __init__(
        self,
        options: ServicePortOptions,
        *,
        log: Log = LOG,
        is_local: Callable[[str], bool] = address_is_local,
    ) -> None:
        self.options = options
        self._log = log
        self._is_local = is_local

    def plug(self, port: ServicePort) -> None:
        iface = self.options.interface
        self._log.info(
            "management port %s (plug driver noop): this host must carry MAC %s and %s on the "
            "management network (interface %s)",
            port.id,
            port.mac_address,
            ", ".join(port.addresses),
            iface,
        )
        if not self._is_local(port.address):
            self._log.warning(
                "management address %s is not configured on this host yet: the service VMs "
                "cannot reach the orchestrator there; configure it, e.g.: %s",
                port.address,
                "; ".join(_manual_commands(port, iface)),
            )

    def unplug(self, port: ServicePort) -> None:
        self._log.info(
            "management port %s removed (plug driver noop): remove %s from interface %s",
            port.id,
            ", ".join(port.addresses),
            self.options.interface,
        )


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class LinuxPlug:
    """Configures the interface with ``ip`` (iproute2, JSON output), as root.

    ``netns`` runs every host-side command in that network namespace (``ip -n``): tests give
    their own; the orchestrator leaves it empty (its own namespace, where it listens). ``run``
    runs one command (a list, never a shell) and returns its completed process.
    """

    def __init__(
        self,
        options: ServicePortOptions,
        *,
        netns: str = "",
        run: Runner = _run,
        log: Log = LOG,
    ) -> None:
        self.options = options
        self.netns = netns
        self._run = run
        self._log = log

    # --- public ------------------------------------------------------------------------------

    def plug(self, port: ServicePort) -> None:
        o = self.options
        iface = o.interface
        wanted = [ipaddress.ip_interface(a) for a in port.addresses]
        changed = False
        state = self._show(iface)
        if state is None:
            if not o.peer:
                raise PlugError(
                    f"linux plug: interface {iface} does not exist (create it, or set peer to "
                    f"have a veth pair created)"
                )
            self._create_veth(port)
            changed = True
            state = self._require(iface)
        elif o.peer and _kind(state) != "veth":
            raise PlugError(
                f"linux plug: interface {iface} exists and is not a veth, but peer {o.peer} is "
                f"set (unset peer to use {iface} as it is, or remove {iface})"
            )
        up = "UP" in state.get("flags", ())
        if str(state.get("address", "")).lower() != port.mac_address.lower():
            self._set_mac(iface, port.mac_address, up)
            changed = True
            state = self._require(iface)
            up = "UP" in state.get("flags", ())
        if port.mtu and state.get("mtu") != port.mtu:
            self._ip(iface, "link", "set", "dev", iface, "mtu", str(port.mtu))
            changed = True
        if not up:
            # Before the addresses: taking an interface down drops its IPv6 addresses.
            self._ip(iface, "link", "set", "dev", iface, "up")
            changed = True
            state = self._require(iface)
        changed |= self._set_addresses(iface, state, wanted)
        if o.peer:
            changed |= self._plug_peer(port)
        if changed:
            self._log.info(
                "management port %s plugged: %s has MAC %s and %s",
                port.id,
                iface,
                port.mac_address,
                ", ".join(port.addresses),
            )
        else:
            self._log.debug("management port %s: %s is already right", port.id, iface)

    def unplug(self, port: ServicePort) -> None:
        iface = self.options.interface
        state = self._show(iface)
        if state is None:
            return
        if self.options.peer and _kind(state) == "veth":  # ours: one end deleted, both go
            self._ip(iface, "link", "del", "dev", iface)
            self._log.info("management port %s unplugged: %s deleted", port.id, iface)
            return
        have = _addresses(state)
        for cidr in port.addresses:
            address = ipaddress.ip_interface(cidr)
            if address in have:
                self._ip(iface, "addr", "del", str(address), "dev", iface)
        self._log.info(
            "management port %s unplugged: %s removed from %s",
            port.id,
            ", ".join(port.addresses),
            iface,
        )

    # --- steps -------------------------------------------------------------------------------

    def _create_veth(self, port: ServicePort) -> None:
        o = self.options
        mtu = ["mtu", str(port.mtu)] if port.mtu else []
        netns = ["netns", o.peer_namespace] if o.peer_namespace else []
        self._ip(
            o.interface,
            "link",
            "add",
            o.interface,
            "address",
            port.mac_address,
            *mtu,
            "type",
            "veth",
            "peer",
            "name",
            o.peer,
            *mtu,
            *netns,
        )

    def _set_mac(self, iface: str, mac: str, up: bool) -> None:
        argv = self._argv(["link", "set", "dev", iface, "address", mac], None)
        done = self._exec(iface, argv)
        if done.returncode == 0:
            return
        if not (up and "busy" in (done.stderr or "").lower()):
            raise self._failed(iface, argv, done)
        # A driver that cannot change the MAC of a running interface (veth, bridge and most
        # NICs can): down, change, and up again below (which drops its IPv6 addresses).
        self._ip(iface, "link", "set", "dev", iface, "down")
        self._ip(iface, "link", "set", "dev", iface, "address", mac)

    def _set_addresses(self, iface: str, state: dict[str, Any], wanted: list[IfAddress]) -> bool:
        changed = False
        # An address in the management subnets that is not the port's is an earlier port's:
        # removed, before the new one is added (deleting an IPv4 subnet's primary address
        # deletes its secondaries with it). Others (the host's own, on a shared interface) and
        # those the kernel configured itself (SLAAC, privacy) are left alone.
        for address in _addresses(state, permanent_only=True):
            if address not in wanted and any(address.ip in w.network for w in wanted):
                self._ip(iface, "addr", "del", str(address), "dev", iface)
                changed = True
        have = _addresses(state)
        for address in wanted:
            if address not in have:
                nodad = ["nodad"] if address.version == 6 else []  # bind at once, no DAD wait
                self._ip(iface, "addr", "add", str(address), "dev", iface, *nodad)
                changed = True
        return changed

    def _plug_peer(self, port: ServicePort) -> bool:
        o = self.options
        ns = o.peer_namespace or self.netns
        state = self._show(o.peer, ns)
        if state is None:
            where = f"namespace {ns}" if ns else "this namespace"
            raise PlugError(
                f"linux plug: interface {o.interface}: its peer {o.peer} is not in {where} "
                f"(remove {o.interface} to have the pair created again)"
            )
        changed = False
        if port.mtu and state.get("mtu") != port.mtu:
            self._ip(o.peer, "link", "set", "dev", o.peer, "mtu", str(port.mtu), ns=ns)
            changed = True
        if o.bridge and state.get("master") != o.bridge:
            self._ip(o.peer, "link", "set", "dev", o.peer, "master", o.bridge, ns=ns)
            changed = True
        if "UP" not in state.get("flags", ()):
            self._ip(o.peer, "link", "set", "dev", o.peer, "up", ns=ns)
            changed = True
        return changed

    # --- the ip command ----------------------------------------------------------------------

    def _show(self, iface: str, ns: str | None = None) -> dict[str, Any] | None:
        """``ip -j -d addr show dev IFACE``; None if there is no such interface."""
        argv = self._argv(["-j", "-d", "addr", "show", "dev", iface], ns)
        done = self._exec(iface, argv)
        if done.returncode != 0:
            if "does not exist" in (done.stderr or ""):
                return None
            raise self._failed(iface, argv, done)
        try:
            found = json.loads(done.stdout or "[]")
        except ValueError:
            raise PlugError(
                f"linux plug: interface {iface}: `{' '.join(argv)}` printed no JSON "
                f"(iproute2 too old?): {_one_line(done.stdout or '')}"
            ) from None
        return next((d for d in found if d.get("ifname") == iface), None)

    def _require(self, iface: str) -> dict[str, Any]:
        state = self._show(iface)
        if state is None:
            raise PlugError(f"linux plug: interface {iface} vanished while it was configured")
        return state

    def _ip(self, iface: str, *args: str, ns: str | None = None) -> None:
        argv = self._argv(list(args), ns)
        done = self._exec(iface, argv)
        if done.returncode != 0:
            raise self._failed(iface, argv, done)

    def _argv(self, args: list[str], ns: str | None) -> list[str]:
        ns = self.netns if ns is None else ns
        return ["ip", *(["-n", ns] if ns else []), *args]

    def _exec(self, iface: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return self._run(argv)
        except subprocess.TimeoutExpired:
            raise PlugError(
                f"linux plug: interface {iface}: `{' '.join(argv)}` did not finish in "
                f"{IP_TIMEOUT:.0f}s"
            ) from None
        except OSError as exc:
            raise PlugError(
                f"linux plug: interface {iface}: cannot run `{argv[0]}` (is iproute2 "
                f"installed, and the orchestrator root or CAP_NET_ADMIN?): {exc}"
            ) from None

    @staticmethod
    def _failed(iface: str, argv: list[str], done: subprocess.CompletedProcess[str]) -> PlugError:
        why = _one_line(done.stderr or done.stdout or f"exit status {done.returncode}")
        return PlugError(f"linux plug: interface {iface}: `{' '.join(argv)}` failed: {why}")


def _kind(state: dict[str, Any]) -> str:
    info = state.get("linkinfo") or {}
    return str(info.get("info_kind", ""))


def _addresses(state: dict[str, Any], *, permanent_only: bool = False) -> list[IfAddress]:
    """The interface's global addresses (``permanent_only``: not configured by the kernel)."""
    found = []
    for info in state.get("addr_info", ()):
        if info.get("scope") != "global" or "local" not in info:
            continue
        if permanent_only and info.get("dynamic"):
            continue
        found.append(ipaddress.ip_interface(f"{info['local']}/{info.get('prefixlen', '')}"))
    return found
