"""Detach: a network removed from a router → our ``ASTARA:VRRP`` port on it gone → its tenant may
delete the network.

With M routers up and configured, ``--samples`` times, on one router after another, a tenant of
the simulator (``demo-0-user``, over the simulator's Neutron API like any tenant):

1. creates a network and a subnet and adds the subnet to the router as an interface, then waits
   until the router's appliance has a config with that network (the orchestrator hot-plugged a
   VRRP port into its VM there);
2. removes the interface (``PUT .../remove_router_interface``: Neutron publishes
   ``router.interface.delete`` on RabbitMQ) and at once deletes the network, again and again
   every ``--retry`` seconds while Neutron answers ``409 NetworkInUse`` (our VRRP port is still
   on it), as an impatient tenant's script would;
3. waits until the appliance's config no longer lists the network, then goes on.

From the simulator's trace: the time ``router.interface.delete`` was published and the time
Neutron answered the orchestrator's ``DELETE /v2.0/ports/<that VRRP port>`` (notification →
port gone, p50/p99); from the tenant's side, how long its network delete was refused (removal
answered → network deleted) and how many 409s it got.

With ``--api-latency`` (seconds added by the simulator to every Neutron and Nova request) the
same on a simulator as slow as a real cloud, where every call before the port delete counts.

    python -m bench.detach [--routers 10] [--samples 40] [--retry 0.01] [--api-latency 0.05]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import requests

from astara_actors.sim.trace import detail_template

from . import scale
from ._harness import Deployment, log, wait_until
from ._report import Figure, percentile, report_figures

INTERFACE_DELETE = "router.interface.delete"
TENANT = "demo-0"  # the simulator's first tenant: its user is <tenant>-user
TENANT_PASSWORD = "demo-secret"  # [sim] tenant_password's default


class Tenant:
    """One tenant's plain HTTP client of the simulator's Neutron (a project-scoped token)."""

    def __init__(self, url: str, name: str = TENANT, password: str = TENANT_PASSWORD) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False
        body: dict[str, Any] = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": f"{name}-user",
                            "domain": {"name": "Default"},
                            "password": password,
                        }
                    },
                },
                "scope": {"project": {"name": name, "domain": {"name": "Default"}}},
            }
        }
        answer = self.http.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=30)
        answer.raise_for_status()
        self.http.headers["X-Auth-Token"] = answer.headers["X-Subject-Token"]
        self.project_id = str(answer.json()["token"]["project"]["id"])

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.http.request(method, f"{self.url}/network/v2.0{path}", json=body, timeout=60)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.call(method, path, body)
        answer.raise_for_status()
        return answer.json() if answer.content else None


def appliance_networks(http: requests.Session, address: str, port: int) -> list[str] | None:
    """The networks of the config the appliance holds (None if it did not answer)."""
    try:
        answer = http.get(f"http://{address}:{port}/v1/system/config", timeout=5)
        answer.raise_for_status()
        config = answer.json().get("configuration") or {}
    except (requests.RequestException, ValueError):
        return None
    return [n.get("network_id") for n in config.get("networks", [])]


def vrrp_ports(dep: Deployment, router: str, network: str) -> list[str]:
    ports = dep.sim.api(
        "GET",
        "/network/v2.0/ports",
        params={"name": f"ASTARA:VRRP:{router}", "network_id": network},
    )["ports"]
    return [p["id"] for p in ports]


def one(
    dep: Deployment,
    tenant: Tenant,
    router: str,
    address: str,
    index: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One add → configured → remove + immediate network delete; what the trace and the tenant
    saw."""
    http = requests.Session()
    http.trust_env = False
    port = dep.sim.appliance_port
    net = tenant.ok("POST", "/networks", {"network": {"name": f"bench-detach-{index}"}})["network"]
    subnet = tenant.ok(
        "POST",
        "/subnets",
        {
            "subnet": {
                "network_id": net["id"],
                "ip_version": 4,
                "cidr": f"192.168.{index % 256}.0/24",
            }
        },
    )["subnet"]
    tenant.ok("PUT", f"/routers/{router}/add_router_interface", {"subnet_id": subnet["id"]})
    plugged = wait_until(
        lambda: net["id"] in (appliance_networks(http, address, port) or []),
        args.step_timeout,
        0.05,
    )
    out: dict[str, Any] = {"router": router, "network": net["id"], "plugged": bool(plugged)}
    if not plugged:
        log(f"detach #{index}: router {router[:8]} not configured with the network in time")
    ports = vrrp_ports(dep, router, net["id"])
    out["vrrp_ports"] = ports
    time.sleep(args.pause)  # a tenant's removal comes later than the push of its addition
    removed_at = time.time()
    tenant.ok("PUT", f"/routers/{router}/remove_router_interface", {"subnet_id": subnet["id"]})
    answered_at = time.time()
    refused = 0
    deadline = time.monotonic() + args.step_timeout
    while True:
        answer = tenant.call("DELETE", f"/networks/{net['id']}")
        if answer.status_code != 409 or time.monotonic() >= deadline:
            break
        refused += 1
        time.sleep(args.retry)
    deleted_at = time.time()
    out["network_deleted"] = answer.status_code == 204
    out["refused_409"] = refused
    out["delete_succeeded_after_s"] = round(deleted_at - answered_at, 4)
    if answer.status_code != 204:
        log(f"detach #{index}: network delete answered {answer.status_code}: {answer.text[:200]}")
    clean = wait_until(
        lambda: (lambda nets: nets is not None and net["id"] not in nets)(
            appliance_networks(http, address, port)
        ),
        args.step_timeout,
        0.05,
    )
    settled_at = time.time()
    out["config_clean"] = bool(clean)
    # The trace: when the notification went out, when our port's DELETE was answered.
    events = dep.sim.trace(since=removed_at, until=settled_at + 1)
    published = [
        e[0] for e in events if e[1] == "notify" and e[4] == INTERFACE_DELETE and e[2] == router
    ]
    gone = [
        e[0]
        for e in events
        if e[1] == "api"
        and any(e[4].startswith(f"DELETE /network/v2.0/ports/{p} 2") for p in ports)
    ]
    detached = [
        e[0]
        for e in events
        if e[1] == "api"
        and e[4].startswith("DELETE /compute/v2.1/servers/")
        and any(f"/os-interface/{p} " in e[4] for p in ports)
    ]
    pushes = [e[0] for e in events if e[1] == "push" and e[2] == router]
    t_pub = published[0] if published else None
    out["published"] = t_pub is not None
    if t_pub is not None and gone and len(gone) == len(ports):
        out["port_gone_s"] = round(max(gone) - t_pub, 4)
        # What the simulator answered meanwhile (the tenant's own network deletes left out).
        out["calls_before_port_gone"] = [
            f"{round(e[0] - t_pub, 4)} {detail_template(e[4])}"
            for e in events
            if t_pub <= e[0] <= max(gone)
            and e[1] in ("api", "probe", "interfaces", "push", "appliance")
            and not e[4].startswith(f"DELETE /network/v2.0/networks/{net['id']}")
        ]
    if t_pub is not None and detached:
        out["detach_after_s"] = round(min(detached) - t_pub, 4)
        out["detach_before_port_delete"] = bool(gone) and min(detached) < min(gone)
    if t_pub is not None and pushes and clean:
        out["config_without_network_s"] = round(pushes[-1] - t_pub, 4)
    out["removal_answered_to_port_gone_s"] = (
        round(max(gone) - answered_at, 4) if gone and len(gone) == len(ports) else None
    )
    return out


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=40, help="interfaces removed (N)")
    parser.add_argument(
        "--retry", type=float, default=0.01, help="seconds between the tenant's network deletes"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=1.0,
        help="seconds between the router configured with the network and its removal",
    )
    parser.add_argument(
        "--step-timeout", type=float, default=60.0, help="seconds allowed for each wait"
    )
    parser.add_argument(
        "--api-latency",
        type=float,
        default=0.0,
        help="[sim] latency_network and latency_compute: seconds added to every Neutron and "
        "Nova request (a real cloud's are tens of milliseconds)",
    )
    parser.add_argument(
        "--appliance-latency",
        type=float,
        default=0.0,
        help="[sim] appliance_latency: seconds before every appliance answer",
    )


def deployment(args: argparse.Namespace) -> Deployment:
    """:func:`scale.deployment`, with the simulator's injected latencies."""
    return Deployment(
        args.routers,
        settings=scale.orchestrator_settings(args),
        boot_delay=args.boot_delay,
        cloud=scale.cloud_settings(args),
        latency_network=args.api_latency,
        latency_compute=args.api_latency,
        appliance_latency=args.appliance_latency,
    )


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    addresses = dep.addresses()
    routers = sorted(addresses)
    tenant = Tenant(dep.sim.url)
    mine = [
        r
        for r in routers
        if dep.sim.api("GET", f"/network/v2.0/routers/{r}")["router"]["project_id"]
        == tenant.project_id
    ]
    if not mine:
        raise SystemExit(f"no router of tenant {TENANT} among {len(routers)}")
    samples = []
    for i in range(args.samples):
        router = mine[i % len(mine)]
        sample = one(dep, tenant, router, addresses[router], i, args)
        samples.append(sample)
        log(
            f"detach #{i}: port gone {sample.get('port_gone_s')} s after the notification, "
            f"network deleted after {sample['delete_succeeded_after_s']} s "
            f"({sample['refused_409']} × 409)"
        )
    gone = [s["port_gone_s"] for s in samples if "port_gone_s" in s]
    waited = [s["delete_succeeded_after_s"] for s in samples if s["network_deleted"]]
    refused = [s["refused_409"] for s in samples]
    configs = [s["config_without_network_s"] for s in samples if "config_without_network_s" in s]
    failed = [
        s
        for s in samples
        if not (s["plugged"] and s["network_deleted"] and s["config_clean"] and "port_gone_s" in s)
    ]
    detach_first = sum(1 for s in samples if s.get("detach_before_port_delete"))
    cond = (
        f"{len(gone)} of {len(samples)} removals over {len(mine)} routers; tenant retries every "
        f"{args.retry * 1000:.0f} ms"
    )
    if failed:
        cond += f"; {len(failed)} incomplete (see details)"
    figs = [
        Figure(
            "router.interface.delete → VRRP port gone (p50)",
            round(percentile(gone, 50), 4) if gone else None,
            "s",
            note=cond,
        ),
        Figure(
            "router.interface.delete → VRRP port gone (p99)",
            round(percentile(gone, 99), 4) if gone else None,
            "s",
            0.3,
            note=f"max {max(gone) if gone else '—'} s; Nova detach before the port delete in "
            f"{detach_first} of {len(samples)}",
        ),
        Figure(
            "tenant's immediate network delete refused (409) for (p50)",
            round(percentile(waited, 50), 4) if waited else None,
            "s",
            note=f"removal answered → network deleted; 409s per delete: p50 "
            f"{percentile(refused, 50) if refused else '—'}, max {max(refused, default=0)}",
        ),
        Figure(
            "tenant's immediate network delete refused (409) for (p99)",
            round(percentile(waited, 99), 4) if waited else None,
            "s",
            note=f"max {max(waited) if waited else '—'} s",
        ),
        Figure(
            "router.interface.delete → config without the network (p50)",
            round(percentile(configs, 50), 4) if configs else None,
            "s",
            note="waits for Nova to unplug the NIC ([sim] detach_delay) and the appliance to "
            "show it",
        ),
    ]
    return figs, {"routers": len(mine), "samples": samples, "incomplete": len(failed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser, routers=10)
    add_args(parser)
    args = parser.parse_args(argv)
    if args.routers > 100:
        raise SystemExit("--routers: at most 100 (one tenant of the simulator holds them)")
    with deployment(args) as dep:
        up = scale.bring_up_checked(dep, args)
        figs, details = run(dep, args)
    report_figures(
        "detach",
        figs,
        {
            **scale.params(args),
            "samples": args.samples,
            "retry": args.retry,
            "pause": args.pause,
            "api_latency": args.api_latency,
            "appliance_latency": args.appliance_latency,
        },
        {"bring_up": up, **details},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
