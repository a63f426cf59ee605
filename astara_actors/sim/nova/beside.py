"""astara-sim beside a real Nova: only the appliance agents that Nova's fake virt driver lacks.

With Nova's fake virt driver, service VMs go ACTIVE but run nothing, so no appliance answers
the orchestrator. :class:`NovaWatcher` reads the real Nova's ``ak-router-`` servers (and the
hot spares, ``ak-spare-``, which are renamed ``ak-router-`` when a router takes one) and their
Neutron ports every few seconds and keeps one simulated appliance agent per running VM, on the
VM's management address (its port's loopback address), with the VM's NICs in the order the
appliance's kernel would name them: the management NIC first, hot-plugged ones after.

Reads only (Nova and Neutron are never changed here), raw JSON through openstacksdk's proxies
as the orchestrator's adapters do. A round that fails changes nothing: agents keep running and
the next round retries, so an API hiccup never stops an appliance the orchestrator is driving.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from astara_actors.adapters._os_calls import SdkCalls, get_all
from astara_actors.errors import CloudError
from astara_actors.sim.appliances.agents import ApplianceServer
from astara_actors.sim.appliances.http import Nic
from astara_actors.sim.settings import SimSettings

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = ["SERVER_PREFIX", "SPARE_PREFIX", "NovaWatcher", "Wanted", "connect_real"]

LOG = logging.getLogger(__name__)

SERVER_PREFIX = "ak-router-"  # the orchestrator's service VMs: ak-router-<router id>_<n>
SPARE_PREFIX = "ak-spare-"  # its hot spares: ak-spare-<token>, renamed when a router takes one
_PREFIXES = (SERVER_PREFIX, SPARE_PREFIX)
# The guest runs in these states (a live migration keeps it running); any other (BUILD,
# ERROR, SHUTOFF, REBOOT, ...) or a deletion under way means no appliance answers.
_RUNNING = frozenset({"ACTIVE", "MIGRATING"})
_BATCH = 40  # ids per filtered Neutron list: the URL stays far below the usual 8 KB limit
_PORT_FIELDS = ("id", "device_id", "mac_address", "fixed_ips")


@dataclass(frozen=True, slots=True)
class Wanted:
    """The agent one running VM should have: where it listens and the NICs it reports."""

    name: str
    address: str
    nics: tuple[Nic, ...]

    @property
    def router_id(self) -> str:
        """The router the name names ("" for a hot spare: it serves no router yet)."""
        if not self.name.startswith(SERVER_PREFIX):
            return ""
        return self.name[len(SERVER_PREFIX) :].rsplit("_", 1)[0]


def connect_real(settings: SimSettings) -> Connection:
    """A lazy connection to the real cloud with the ``neutron_*`` account of ``settings``."""
    from astara_actors.adapters.openstack import connect
    from astara_actors.config.cloud import CloudSettings

    return connect(
        CloudSettings(
            auth_url=settings.neutron_auth_url,
            username=settings.neutron_username,
            password=settings.neutron_password,
            project_name=settings.neutron_project,
            user_domain_name=settings.neutron_user_domain,
            project_domain_name=settings.neutron_project_domain,
            api_timeout=10.0,  # a hung API delays one round, not the agents
        )
    )


class NovaWatcher:
    """Keeps ``appliances`` in step with the running ``ak-router-`` and ``ak-spare-`` VMs of the
    real Nova; a renamed VM keeps its agent, which then serves the router of its new name."""

    def __init__(self, conn: Connection, appliances: ApplianceServer, *, interval: float = 1.0):
        self._conn = conn
        self._appliances = appliances
        self._interval = interval
        self._calls = SdkCalls(CloudError, retries=0)  # the next round is the retry
        self._running: dict[str, Wanted] = {}  # server id -> the agent started for it
        self._cidrs: dict[str, str] = {}  # subnet id -> CIDR (never changes)
        self._no_agent: set[str] = set()  # servers already reported as unservable
        self._start_errors: dict[str, str] = {}  # server id -> why its agent did not start
        self._failing = ""  # the error of the last round, "" after a good one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> NovaWatcher:
        """Poll in a daemon thread until :meth:`stop`; the first round starts at once."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sim-nova-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (the agents stay until their ApplianceServer stops)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def running(self) -> dict[str, Wanted]:
        """The agents started so far, by server id (a copy)."""
        return dict(self._running)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self._interval)

    # ------------------------------------------------------------------ one round
    def poll_once(self) -> bool:
        """Read Nova and Neutron, then start, stop and re-plug agents; False when the cloud
        could not be read (nothing changed then). Never raises: the watcher must outlive
        any error of the cloud or of this code."""
        try:
            wanted, why_not = self._read()
        except CloudError as exc:
            self._report(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - an odd answer must not end the watcher
            error = f"unexpected {type(exc).__name__}: {exc}"
            if error != self._failing:  # the traceback once, not every round
                LOG.exception("reading the real Nova and Neutron failed (agents unchanged)")
            self._failing = error
            return False
        if self._failing:
            LOG.warning("the real Nova and Neutron answer again")
            self._failing = ""
        try:
            self._apply(wanted, why_not)
        except Exception:  # noqa: BLE001 - e.g. the agents' loop stopped under us
            LOG.exception("updating the appliance agents failed")
        return True

    def _report(self, error: str) -> None:
        """Log an API error once, not every round while it lasts."""
        if error != self._failing:
            LOG.warning(
                "cannot read the real cloud (agents unchanged, retrying every %.1fs): %s",
                self._interval,
                error,
            )
        self._failing = error

    def _read(self) -> tuple[dict[str, Wanted], dict[str, str]]:
        """The agents the cloud calls for, and why each other service VM has none."""
        servers = self._calls.run(
            f"list the {SERVER_PREFIX} and {SPARE_PREFIX} servers", self._list_servers
        )
        why_not = {s["id"]: _not_running(s) for s in servers}
        running = [s for s in servers if not why_not[s["id"]]]
        ports = self._ports_of([s["id"] for s in running])
        self._learn_cidrs({ip["subnet_id"] for p in ports for ip in _fixed_ips(p)})
        by_server: dict[str, list[Mapping[str, Any]]] = {}
        for port in ports:
            by_server.setdefault(port.get("device_id") or "", []).append(port)
        wanted: dict[str, Wanted] = {}
        for server in running:
            found = self._wanted(server, by_server.get(server["id"], []))
            if found is None:
                why_not[server["id"]] = "no port with a loopback (management) address"
            else:
                wanted[server["id"]] = found
        return wanted, why_not

    def _list_servers(self) -> list[dict[str, Any]]:
        # Nova filters names by regex (fixture 009; an alternation is understood by every
        # database's regex: MySQL REGEXP, PostgreSQL ~, SQLite's Python re); the prefixes are
        # re-checked in case a cell ignores the filter.
        pattern = "^(" + "|".join(re.escape(p) for p in _PREFIXES) + ")"
        found = get_all(
            self._conn.compute,
            "/servers/detail",
            "servers",
            {"all_tenants": "1", "name": pattern},
        )
        return [s for s in found if (s.get("name") or "").startswith(_PREFIXES)]

    def _ports_of(self, server_ids: Sequence[str]) -> list[Mapping[str, Any]]:
        """The Neutron ports bound to these servers, a few dozen servers per request."""
        ports: list[Mapping[str, Any]] = []
        for ids in _batches(server_ids):
            query = urlencode(
                [("device_id", i) for i in ids] + [("fields", f) for f in _PORT_FIELDS]
            )
            ports.extend(self._neutron_list("list the ports of the servers", "ports", query))
        return ports

    def _learn_cidrs(self, subnet_ids: Iterable[str]) -> None:
        """Fetch the CIDRs of subnets not seen before (for the NICs' ``ip/prefixlen``)."""
        unknown = sorted(set(subnet_ids) - set(self._cidrs))
        for ids in _batches(unknown):
            query = urlencode([("id", i) for i in ids] + [("fields", "id"), ("fields", "cidr")])
            subnets = self._neutron_list("list the subnets of the ports", "subnets", query)
            self._cidrs.update({s["id"]: s["cidr"] for s in subnets})

    def _neutron_list(self, what: str, kind: str, query: str) -> list[Mapping[str, Any]]:
        """``GET /<kind>?<query>``, every page; the query holds repeated keys (id=a&id=b)."""
        found = self._calls.run(what, lambda: get_all(self._conn.network, f"/{kind}?{query}", kind))
        return list(found)

    def _wanted(self, server: Mapping[str, Any], ports: list[Mapping[str, Any]]) -> Wanted | None:
        """The agent of one running server: on its first loopback address, the port holding
        it as the first NIC, the NICs it already had kept in their order, new ones after."""
        address, mgt = "", None
        for port in ports:
            address = next((a for a in _addresses_of(port) if _is_loopback(a)), "")
            if address:
                mgt = port
                break
        if mgt is None:
            return None
        known = self._running.get(server["id"])
        order = {nic.mac: n for n, nic in enumerate(known.nics)} if known else {}
        others = sorted(
            (p for p in ports if p is not mgt),
            key=lambda p: order.get(p.get("mac_address", ""), len(order)),
        )
        nics = tuple(self._nic(p) for p in (mgt, *others))
        return Wanted(server["name"], address, nics)

    def _nic(self, port: Mapping[str, Any]) -> Nic:
        addresses = []
        for ip in _fixed_ips(port):
            cidr = self._cidrs.get(ip["subnet_id"])
            host = ipaddress.ip_address(ip["ip_address"])
            prefix = ipaddress.ip_network(cidr).prefixlen if cidr else host.max_prefixlen
            addresses.append(f"{host}/{prefix}")
        return Nic(str(port["mac_address"]), tuple(addresses))

    # ------------------------------------------------------------------ agents
    def _apply(self, wanted: Mapping[str, Wanted], why_not: Mapping[str, str]) -> None:
        """Stop what should not run, then start or re-plug what should."""
        for server_id in [s for s in self._running if s not in wanted]:
            self._stop_agent(server_id, why_not.get(server_id) or "gone from Nova")
        for server_id, want in wanted.items():
            have = self._running.get(server_id)
            if have is not None and have.address != want.address:
                self._stop_agent(server_id, f"management address now {want.address}")
                have = None
            if have is None:
                self._start_agent(server_id, want)
                continue
            if have.nics != want.nics and not self._replug(server_id, want):
                continue
            if have.name != want.name:
                self._rename(server_id, have, want)
        self._no_agent &= set(why_not)  # forget deleted servers
        for server_id in set(self._start_errors) - set(wanted):
            del self._start_errors[server_id]
        for server_id, reason in why_not.items():
            self._note_unservable(server_id, reason)

    def _start_agent(self, server_id: str, want: Wanted) -> None:
        try:
            self._appliances.add(server_id, want.address, want.nics, router_id=want.router_id)
        except (OSError, ValueError) as exc:  # e.g. the address is in use: next round again
            if self._start_errors.get(server_id) != str(exc):
                LOG.warning(
                    "cannot start the appliance agent of %s on %s:%d (retrying): %s",
                    want.name,
                    want.address,
                    self._appliances.port,
                    exc,
                )
            self._start_errors[server_id] = str(exc)
            return
        self._running[server_id] = want
        self._start_errors.pop(server_id, None)
        LOG.info(
            "started the appliance agent of %s (server %s) on %s:%d, NICs %s",
            want.name,
            server_id,
            want.address,
            self._appliances.port,
            _macs(want.nics),
        )

    def _stop_agent(self, server_id: str, reason: str) -> None:
        gone = self._running.pop(server_id)
        self._appliances.remove(server_id)
        LOG.info(
            "stopped the appliance agent of %s (server %s) on %s: %s",
            gone.name,
            server_id,
            gone.address,
            reason,
        )

    def _replug(self, server_id: str, want: Wanted) -> bool:
        try:
            self._appliances.set_interfaces(server_id, want.nics)
        except KeyError:  # the agent vanished under us: start it again next round
            self._running.pop(server_id, None)
            return False
        self._running[server_id] = want
        LOG.info(
            "re-plugged the appliance agent of %s (server %s): NICs %s",
            want.name,
            server_id,
            _macs(want.nics),
        )
        return True

    def _rename(self, server_id: str, have: Wanted, want: Wanted) -> None:
        """The VM was renamed (a hot spare taken by a router): same agent, new router."""
        if have.router_id != want.router_id:
            try:
                self._appliances.set_router(server_id, want.router_id)
            except KeyError:  # the agent vanished under us: start it again next round
                self._running.pop(server_id, None)
                return
        self._running[server_id] = want
        LOG.info(
            "the appliance agent of server %s now serves %s (was %s)",
            server_id,
            want.name,
            have.name,
        )

    def _note_unservable(self, server_id: str, reason: str) -> None:
        """Say once why a running server gets no agent (a management subnet off loopback)."""
        if reason.startswith("no port") and server_id not in self._no_agent:
            self._no_agent.add(server_id)
            LOG.warning(
                "server %s: %s, so no appliance agent (is the management subnet on 127.0.0.0/8?)",
                server_id,
                reason,
            )


def _not_running(server: Mapping[str, Any]) -> str:
    """Why no appliance runs on this server ("" when one does)."""
    if server.get("OS-EXT-STS:task_state") == "deleting":
        return "deleting"
    status = str(server.get("status") or "")
    return "" if status in _RUNNING else f"status {status or 'unknown'}"


def _fixed_ips(port: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        ip for ip in port.get("fixed_ips") or () if ip.get("ip_address") and ip.get("subnet_id")
    ]


def _addresses_of(port: Mapping[str, Any]) -> list[str]:
    return [str(ip["ip_address"]) for ip in _fixed_ips(port)]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _batches(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]


def _macs(nics: Iterable[Nic]) -> str:
    return ", ".join(nic.mac for nic in nics) or "none"
