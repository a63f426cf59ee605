"""astara-debug-router: step one router's state machine under pdb against the configured cloud.

Usage:
  astara-debug-router --router-id=ID [--config-file=FILE] [--force] [--no-pdb] [--action=ACTION]
                      [--wait=SECONDS]
  astara-debug-router (-h | --help)

Options:
  --router-id=ID      The router to step.
  --config-file=FILE  The orchestrator's configuration [default: /etc/astara/orchestrator.ini].
  --action=ACTION     The event to step: update, rebuild, poll or delete [default: update].
  --force             Step it even if the running orchestrators do not have it in debug mode.
  --no-pdb            Run the traversal without stopping in the debugger.
  --wait=SECONDS      Follow the traversal through its waits (a VM being deleted, a boot) for
                      at most this long; 0 stops at the first wait [default: 600].
  -h --help           Show this help.

First put the router in debug mode so the running orchestrator leaves it alone:
  astara-ctl router debug <router-id> --reason "stepping it"
then step one traversal (CalcAction → … → CalcAction or Exit), following it through its waits
(a rebuild deletes the VM, waits for Nova, boots, waits for the appliance, pushes): each
transition is printed. Ctrl-C stops following.
The real cloud is used: a boot here boots a real VM.
"""

from __future__ import annotations

import dataclasses
import logging
import pdb
import re
import sys
import time
from typing import Any

from docopt import docopt

from astara_actors.errors import AstaraError, SettingsError

__all__ = ["main"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


class _PrintTransitions(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"  {record.getMessage()}", flush=True)


def _in_debug(config: Any, router_id: str) -> bool | None:
    """True/False from the running orchestrators; None if none answered."""
    from astara_actors.bus.rpc import ControlClient
    from astara_actors.bus.transport import BusError

    bus = dataclasses.replace(config.bus, host=f"{config.bus.host}-debug-router")
    try:
        with ControlClient(bus) as client:
            answers = client.ask({"query": "router", "router_id": router_id}, timeout=5)
    except BusError:
        return None
    dumps = [a["answer"]["router"] for a in answers if a.get("ok") and a["answer"].get("found")]
    return any(d.get("debug") for d in dumps) if dumps else False


def _cloud(config: Any) -> tuple[Any, Any]:
    """Settings and cloud access, for a real cloud or the demo's embedded simulator."""
    if not config.process.embedded_sim:
        return config.settings, config.cloud
    import requests

    from astara_actors.config.cloud import CloudSettings

    sim = config.sim
    host = f"[{sim.listen}]" if ":" in sim.listen else sim.listen
    url = sim.public_url.rstrip("/") or f"http://{host}:{sim.port}"
    try:
        status = requests.get(f"{url}/sim", timeout=5).json()
    except (requests.RequestException, ValueError) as exc:
        raise AstaraError(f"the demo's simulated cloud at {url} does not answer: {exc}") from None
    settings = dataclasses.replace(
        config.settings,
        management_network_id=status["management_network_id"],
        management_subnet_id=status["management_subnet_id"],
        router_image_id=sim.image_id,
        router_flavor_id=sim.flavor_id,
    )
    return settings, CloudSettings(
        auth_url=f"{url}/identity/v3",
        username=sim.admin_user,
        password=sim.admin_password,
        project_name=sim.admin_project,
    )


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    router_id = args["--router-id"].lower()
    if not _UUID.match(router_id):
        print(f"astara-debug-router: --router-id {router_id!r} is not a UUID", file=sys.stderr)
        return 2
    try:
        return _step(args, router_id)
    except (AstaraError, SettingsError) as exc:
        print(f"astara-debug-router: {exc}", file=sys.stderr)
        return 1


def _step(args: dict[str, Any], router_id: str) -> int:
    from astara_actors.adapters.appliance_http import HttpAppliance
    from astara_actors.adapters.openstack import open_cloud
    from astara_actors.config.loader import load_config
    from astara_actors.core.automaton import Automaton
    from astara_actors.core.events import Action
    from astara_actors.core.instance import InstanceManager
    from astara_actors.errors import RouterGone
    from astara_actors.log import ROUTER_LOGGER, router_logger

    try:
        action = Action(args["--action"])
    except ValueError:
        print(
            f"astara-debug-router: --action {args['--action']!r}: use update, rebuild, poll "
            "or delete",
            file=sys.stderr,
        )
        return 2
    try:
        patience = float(args["--wait"])
    except ValueError:
        patience = -1.0
    if not patience >= 0:
        print(
            f"astara-debug-router: --wait {args['--wait']!r}: seconds, 0 or more",
            file=sys.stderr,
        )
        return 2
    config = load_config(args["--config-file"])
    settings, cloud = _cloud(config)
    network, compute = open_cloud(cloud)
    try:
        router = network.get_router(router_id)
    except RouterGone:
        print(f"astara-debug-router: Neutron has no router {router_id}", file=sys.stderr)
        return 1
    debug = _in_debug(config, router_id)
    if not debug and not args["--force"]:
        why = (
            "no orchestrator answered, so it may be managing this router"
            if debug is None
            else "the running orchestrator manages it and would fight you"
        )
        print(
            f"astara-debug-router: router {router_id} is not in debug mode ({why}).\n"
            f"  Run: astara-ctl router debug {router_id} --reason '...'\n"
            "  or pass --force.",
            file=sys.stderr,
        )
        return 1
    # One boot at most, as the original tool did; and no boot timeout while you step.
    settings = dataclasses.replace(settings, reboot_error_threshold=1, boot_timeout=60_000.0)
    appliance = HttpAppliance(port=settings.appliance_port)
    handler = _PrintTransitions()
    ROUTER_LOGGER.addHandler(handler)
    ROUTER_LOGGER.setLevel(logging.DEBUG)
    log = router_logger(router_id)
    instance = InstanceManager(
        router_id,
        router.tenant_id,
        network=network,
        compute=compute,
        appliance=appliance,
        settings=settings,
        log=log,
    )
    sm = Automaton(router_id, router.tenant_id, instance, settings, log=log)
    instance.update_state()
    print(
        f"router {router_id} ({router.name or 'no name'}), tenant {router.tenant_id}: "
        f"instance {instance.state}; stepping {action}"
    )
    sm.send_message(action)
    if not args["--no-pdb"]:
        print("(Pdb) `s` steps into the traversal, `c` runs it")
        pdb.set_trace()  # noqa: T100 - the purpose of this tool
    outcome = sm.update()
    deadline = time.monotonic() + patience
    try:
        while outcome.wake_after is not None and not outcome.deleted:
            if time.monotonic() + outcome.wake_after > deadline:
                print(f"stopped following after --wait {patience:g} s")
                break
            print(
                f"  waiting {outcome.wake_after:.1f} s in {sm.state.name} "
                f"(instance {instance.state})"
            )
            time.sleep(outcome.wake_after)
            if not sm.wake(outcome.token):
                break
            outcome = sm.update()
    except KeyboardInterrupt:
        print("stopped following (Ctrl-C)")
    print(
        f"done: state {sm.state.name}, instance {instance.state}"
        + (f", wants a wake in {outcome.wake_after:.1f} s" if outcome.wake_after else "")
        + (", router deleted" if outcome.deleted else "")
    )
    appliance.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
