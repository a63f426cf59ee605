"""astara-sim at scale: N routers, each with a booted VM whose appliance answers.

Measures, in one process (as astara-sim runs): the time to create the routers (Neutron model:
network, subnet, router with gateway, interface, VM port, floating IP each), the time to boot a
VM per router (management + VRRP ports, Nova) and have every appliance agent listening, the
appliance round trip (``HttpAppliance.is_alive`` and ``put_config`` over real sockets, from a
pool of threads as the orchestrator's actors would) and the process's memory.

    python -m bench.sim_scale [--routers 10000] [--probes 20000] [--threads 16]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import resource
import sys
import time

from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.settings import SimSettings

from ._report import report, summary_ms


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def boot_all(cloud: SimCloud) -> list[tuple[str, str]]:
    """A VM per router, as the orchestrator boots it; (server id, management address)."""
    admin, neutron, nova = cloud.admin, cloud.neutron, cloud.nova
    out = []
    for router_id, made in cloud.topology.items():
        mgt = neutron.create(
            "port",
            {
                "network_id": cloud.management_network_id,
                "name": f"ASTARA:MGT:{router_id}",
                "fixed_ips": [{"subnet_id": cloud.management_subnet_id}],
                "port_security_enabled": False,
            },
            admin,
        )
        ports = [mgt["id"]]
        for network_id in (cloud.external_network_id, made["network"]):
            ports.append(
                neutron.create(
                    "port",
                    {
                        "network_id": network_id,
                        "name": f"ASTARA:VRRP:{router_id}",
                        "fixed_ips": [],
                        "port_security_enabled": False,
                    },
                    admin,
                )["id"]
            )
        server = nova.create(
            admin,
            name=f"ak-router-{router_id}_0",
            image_id="astara-appliance",
            flavor_id="astara-router",
            port_ids=ports[:1],
            then_attach=ports[1:],
            config_drive=True,
        )  # VRRP ports plugged once ACTIVE, as we do
        out.append((server["id"], mgt["fixed_ips"][0]["ip_address"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--routers", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    tenants = max(1, args.routers // 100)
    settings = SimSettings(
        port=0,
        tenants=tenants,
        routers_per_tenant=args.routers // tenants,
        boot_delay=0.0,
        delete_delay=0.0,
        seed=1,
    )
    rss_start = rss_mib()
    cloud = SimCloud(settings).start()
    try:
        started = time.perf_counter()
        cloud.bootstrap()
        create_s = time.perf_counter() - started
        routers = len(cloud.topology)
        started = time.perf_counter()
        vms = boot_all(cloud)
        cloud.nova.tick()  # BUILD -> ACTIVE: every agent starts listening
        agents = cloud.appliances.stats()["agents"]
        boot_s = time.perf_counter() - started
        rss_loaded = rss_mib()
        client = HttpAppliance(port=settings.appliance_port)
        config = {"tenant_id": "t", "hostname": "ak-t", "asn": 64512, "networks": []}

        def probe(i: int) -> tuple[float, float]:
            _server, address = vms[i % len(vms)]
            t0 = time.perf_counter()
            alive = client.is_alive(address, 5.0)
            t1 = time.perf_counter()
            client.put_config(address, config, 5.0)
            t2 = time.perf_counter()
            assert alive
            return t1 - t0, t2 - t1

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
            results = list(pool.map(probe, range(args.probes)))
        probe_s = time.perf_counter() - started
        client.close()
        alive, push = summary_ms([r[0] for r in results]), summary_ms([r[1] for r in results])
    finally:
        cloud.stop()
    row = {
        "routers": routers,
        "agents_listening": agents,
        "create_routers_s": round(create_s, 1),
        "boot_vms_s": round(boot_s, 1),
        "alive_p50_ms": alive["p50_ms"],
        "alive_p99_ms": alive["p99_ms"],
        "push_p50_ms": push["p50_ms"],
        "push_p99_ms": push["p99_ms"],
        "probes_per_s": round(2 * args.probes / probe_s),
        "rss_mib": round(rss_loaded - rss_start, 1),
        "rss_per_router_kib": round((rss_loaded - rss_start) * 1024 / max(1, routers), 1),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    report(
        "sim_scale",
        [row],
        {"routers": args.routers, "probes": args.probes, "threads": args.threads},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
