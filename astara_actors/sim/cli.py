"""astara-sim: a simulated OpenStack (Keystone, Neutron, Nova, one appliance per VM) over real HTTP.

Usage:
  astara-sim [--config-file=FILE] [--listen=ADDR] [--port=PORT] [--routers=N]
             [--state-file=FILE] [--verbose]
  astara-sim (-h | --help)

Options:
  --config-file=FILE  An ini file with a [sim] section (see etc/sim.ini for every key).
  --listen=ADDR       Override [sim] listen (IPv4 or IPv6 address).
  --port=PORT         Override [sim] port (0: any free port).
  --routers=N         Override [sim] routers_per_tenant.
  --state-file=FILE   Keep the cloud in FILE across restarts ([sim] keep_cloud): loaded at
                      start when it is there, saved while running and at exit.
  --verbose           Log every request and appliance change (INFO).
  -h --help           Show this help.

It serves Keystone at <url>/identity/v3, Neutron at <url>/network, Nova at <url>/compute/v2.1
and the simulator's own controls at <url>/sim (GET for status, PUT /sim/faults to change
faults, POST /sim/appliances/<router-or-server>/kill|hang|revive|forget|lie|honest, GET|PUT|DELETE
/sim/trace for the timestamped probes, pushes, boots, notifications and API requests it saw,
GET /sim/guests for the tenants' instances and GET /sim/guests/<id>/metadata/<path> for what
one of them gets from 169.254.169.254 through its router's appliance), until Ctrl-C. Nova's
metadata API listens on [sim] nova_metadata_port. With --state-file it is the same cloud after
a restart (same ids, the appliances with their last configuration); to start afresh, remove the
file.

With [sim] real_nova = true (a devstack whose Nova runs the fake virt driver) it serves none of
that: Keystone, Neutron and Nova are the real ones at [sim] neutron_auth_url, and it serves only
an appliance agent on the management address of every ak-router- (and ak-spare-) VM the real
Nova runs.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from docopt import docopt

from astara_actors.config.ini import read_ini, section_to
from astara_actors.errors import SettingsError
from astara_actors.log import install as safe_logs
from astara_actors.sim.settings import SimSettings

__all__ = ["load_settings", "main"]

LOG = logging.getLogger("astara_actors.sim")


def load_settings(args: dict[str, Any]) -> SimSettings:
    overrides: dict[str, Any] = {}
    try:
        if args["--listen"]:
            overrides["listen"] = args["--listen"]
        if args["--port"] is not None:
            overrides["port"] = int(args["--port"])
        if args["--routers"] is not None:
            overrides["routers_per_tenant"] = int(args["--routers"])
    except ValueError as exc:
        raise SettingsError("command line", "--port/--routers", f"not an integer ({exc})") from None
    if args["--config-file"]:
        return section_to(read_ini(args["--config-file"]), "sim", SimSettings, overrides=overrides)
    return SimSettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    logging.basicConfig(
        level=logging.INFO if args["--verbose"] else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    safe_logs()
    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"astara-sim: {exc}", file=sys.stderr)
        return 2
    state_file = args["--state-file"]
    if state_file and (settings.real_nova or settings.real_neutron or not settings.keep_cloud):
        why = "[sim] keep_cloud is false" if not settings.keep_cloud else "the cloud is a real one"
        print(f"astara-sim: --state-file: nothing is kept ({why})", file=sys.stderr)
        return 2
    if settings.real_nova:
        return _serve_agents_only(settings)
    from astara_actors.sim.cloud import SimCloud
    from astara_actors.sim.server import SimServer

    notify = None
    if settings.transport_url:
        from astara_actors.bus.transport import BusSettings
        from astara_actors.sim.notifier import KombuNotifier

        notify = KombuNotifier(
            BusSettings(
                transport_url=settings.transport_url,
                notifications_exchange=settings.notifications_exchange,
            )
        )
    cloud = SimCloud(settings, notify=notify, cloud_file=state_file)
    try:
        server = SimServer(cloud)
    except OSError as exc:
        print(
            f"astara-sim: cannot listen on {settings.listen}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    server.start()
    try:
        restored = cloud.load_or_bootstrap()
    except Exception as exc:  # a bad CIDR or too many routers for it: say it, stop cleanly
        server.stop()
        print(f"astara-sim: cannot create the initial topology: {exc}", file=sys.stderr)
        return 1
    stop = _stop_on_signal()
    _banner(server, settings)
    if state_file:
        how = "loaded from" if restored else "a fresh cloud, kept in"
        print(f"  kept:    {how} {state_file} (remove it to start afresh)", flush=True)
    _wait(stop)
    server.stop()
    return 0


def _stop_on_signal() -> threading.Event:
    """An event SIGINT and SIGTERM (Ctrl-C, systemd, kill) set, instead of killing us."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _wait(stop: threading.Event) -> None:
    stop.wait()
    print("astara-sim: stopping", file=sys.stderr)


def _serve_agents_only(settings: SimSettings) -> int:
    """``real_nova``: an agent per ``ak-router-`` or ``ak-spare-`` VM of the real Nova, nothing
    else."""
    from astara_actors.errors import CloudError
    from astara_actors.sim.appliances.agents import ApplianceServer
    from astara_actors.sim.nova.beside import LOG as WATCHER_LOG
    from astara_actors.sim.nova.beside import NovaWatcher, connect_real

    WATCHER_LOG.setLevel(logging.INFO)  # the agents it starts and stops are this mode's output
    try:
        conn = connect_real(settings)
    except CloudError as exc:
        print(f"astara-sim: {exc}", file=sys.stderr)
        return 1
    stop = _stop_on_signal()  # before any agent answers: a signal then stops us cleanly
    appliances = ApplianceServer(port=settings.appliance_port, latency=settings.appliance_latency)
    appliances.start()
    watcher = NovaWatcher(conn, appliances, interval=settings.watch_interval).start()
    _agents_banner(settings)
    _wait(stop)
    watcher.stop()
    appliances.stop()
    return 0


def _agents_banner(s: SimSettings) -> None:
    print(
        f"astara-sim: serving only the appliance agents of the real Nova's service VMs\n"
        f"  cloud:   the real Keystone, Neutron and Nova of {s.neutron_auth_url}"
        f" (user {s.neutron_username}, project {s.neutron_project}),"
        f" read every {s.watch_interval:g} s\n"
        f"  agents:  one per ACTIVE ak-router- or ak-spare- VM, on its management (loopback)"
        f" address,"
        f" port {s.appliance_port}\n"
        f"  off:     the simulated Keystone, Neutron and Nova, and the /sim controls",
        flush=True,
    )


def _banner(server: Any, s: SimSettings) -> None:
    url = server.url
    tenants, routers = len(server.cloud.tenants), len(server.cloud.topology)
    print(
        f"astara-sim: serving on {url} ({tenants} tenants, {routers} routers)\n"
        f"  admin:   {s.admin_user} / {s.admin_password} (project {s.admin_project})\n"
        f"  tenants: demo-N-user / {s.tenant_password} (project demo-N)\n"
        f"  metadata: Nova's at {server.nova_metadata_url or '(not serving)'}"
        f" (secret [sim] metadata_secret); guests: {url}/sim/guests\n"
        f"  try:     openstack --os-auth-url {url}/identity/v3 --os-username {s.admin_user}"
        f" --os-password {s.admin_password} --os-project-name {s.admin_project}"
        f" --os-user-domain-name Default --os-project-domain-name Default router list",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
