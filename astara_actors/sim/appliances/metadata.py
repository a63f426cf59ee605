"""The appliance's per-network metadata forwarder, as astara-appliance's ``metadata_proxy``.

A guest asks ``169.254.169.254``; the appliance's forwarder for the guest's (internal) network
maps the guest's address to its instance through the ``allocations`` the orchestrator pushed
for that network (an address no allocation holds is forwarded with an empty instance id, as
the appliance does), and forwards the GET to ``http://<orchestrator.address>:<metadata_port>``
with ``X-Forwarded-For`` (the guest's address), ``X-Instance-ID``, ``X-Tenant-ID`` (the
config's ``tenant_id``) and ``X-Quantum-Network-ID``. The connection leaves from the
appliance's management address, as it would from the appliance's management NIC.

Unlike the 2015 appliance (which turned every 200 into ``text/plain`` and any status but 200,
404 and 500 into a 500), the guest gets the orchestrator's answer as it came: status, content
type and body, so that a refusal (403) shows. When the forwarder itself cannot forward (no
such network in the config, no orchestrator address, unreachable), it answers 502 (504 on a
timeout) with a text naming the cause.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import Any

from astara_actors.sim._asynchttp import HttpClientError, Reply, http_get, safe_header_value
from astara_actors.sim.appliances.http import Agent

__all__ = ["DEFAULT_METADATA_PORT", "forward", "instance_for"]

DEFAULT_METADATA_PORT = 9697  # astara-appliance's ORCHESTRATOR_METADATA_PORT
_TEXT = "text/plain; charset=utf-8"


def _fail(status: int, text: str) -> Reply:
    return status, _TEXT, text.encode()


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def instance_for(network: Mapping[str, Any], source: str) -> str:
    """The ``device_id`` of the allocation holding ``source`` on this network ("" if none)."""
    for allocation in network.get("allocations") or ():
        if not isinstance(allocation, Mapping):
            continue
        for ip in allocation.get("ip_addresses") or ():
            if _same_ip(str(ip), source):
                return str(allocation.get("device_id") or "")
    return ""


def _internal_network(config: Mapping[str, Any], network_id: str) -> Mapping[str, Any] | None:
    for network in config.get("networks") or ():
        if (
            isinstance(network, Mapping)
            and network.get("network_id") == network_id
            and network.get("network_type") == "internal"
        ):
            return network
    return None


async def forward(
    agent: Agent, network_id: str, source: str, target: str, *, timeout: float = 10.0
) -> Reply:
    """Forward a guest's ``GET target`` (path and query) that arrived from address ``source``
    on network ``network_id``, as the agent's forwarder for that network would. Runs on the
    agents' loop; answers what the guest gets (see the module's docstring)."""
    config = agent.config
    if config is None:
        return _fail(502, f"the appliance of server {agent.server_id} has no configuration yet")
    network = _internal_network(config, network_id)
    if network is None:
        return _fail(
            502,
            f"the appliance of server {agent.server_id} forwards no metadata for network"
            f" {network_id}: its configuration has no internal network with that id",
        )
    orchestrator = config.get("orchestrator") or {}
    address = str(orchestrator.get("address") or "") if isinstance(orchestrator, dict) else ""
    port = orchestrator.get("metadata_port", DEFAULT_METADATA_PORT) if address else 0
    try:
        upstream = ipaddress.ip_address(address)
    except ValueError:
        return _fail(
            502,
            f"the configuration pushed to the appliance of server {agent.server_id} has no"
            f" orchestrator address to forward metadata to (orchestrator.address {address!r})",
        )
    if not isinstance(port, int) or not 0 < port < 65536:
        return _fail(502, f"orchestrator.metadata_port {port!r} is not a port")
    if upstream.version != ipaddress.ip_address(agent.address).version:
        return _fail(
            502,
            f"the appliance's management address {agent.address} cannot reach the orchestrator"
            f" at {address} (another address family)",
        )
    instance = agent.lie if agent.lie is not None else instance_for(network, source)
    headers = (
        ("X-Forwarded-For", source),
        ("X-Instance-ID", instance),
        ("X-Tenant-ID", str(config.get("tenant_id") or "")),
        ("X-Quantum-Network-ID", network_id),
    )
    bad = [name for name, value in headers if not safe_header_value(value)]
    if bad or not target.startswith("/") or not safe_header_value(target) or " " in target:
        return _fail(502, f"cannot forward: unsafe {', '.join(bad) or 'path'}")
    try:
        async with asyncio.timeout(timeout):
            return await http_get(str(upstream), port, target, headers, local_address=agent.address)
    except TimeoutError:
        return _fail(504, f"the orchestrator at {address}:{port} did not answer in {timeout:g} s")
    except HttpClientError as exc:
        return _fail(502, f"the appliance cannot forward metadata requests: {exc}")
