"""Warm restart: what every router's VMs last accepted, kept across a clean stop.

A restarted orchestrator used to push every router's config again (10,000 pushes, each an
interfaces read and a config write on the appliance, which reloads its services): it could not
know what the appliances held. On a clean stop (SIGTERM) the runtime writes, for each router
of this process, each live VM's last accepted config digest and the interfaces its appliance
last reported; the next start of the same host reads it once (and deletes it) and hands each
router its VMs' entries with the cold start's listing (:class:`~astara_actors.core.seeds.Seed`).
The router's first push then builds the config from the listing as usual and writes it only to
a VM whose kept digest differs: a Neutron change made while we were down still reaches the
appliance, an unchanged router costs no call but its probe.

Kept at most ``max_age`` seconds (``[orchestrator] warm_restart_max_age``): an older file, a
file of another host, a file that cannot be read or a malformed one is ignored (logged), never
an error. After a crash (no clean stop) there is no file and every router is pushed as before.
The file is owner-only (``fsmodes``), written to a temporary name and renamed.

Format (JSON): ``{"version": 1, "host", "written_at" (epoch seconds), "routers": {router_id:
{server_id: {"digest": hex, "interfaces": [[ifname, lladdr, [address, ...]], ...]}}}}``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from astara_actors.core.models import Interface
from astara_actors.fsmodes import secure_dir

__all__ = ["FILE_NAME", "VmKept", "decode", "encode", "load", "save"]

LOG = logging.getLogger(__name__)

FILE_NAME = "warm-state.json"
VERSION = 1

# A VM's last accepted config digest and its appliance's interfaces as last read.
VmKept = tuple[bytes, tuple[Interface, ...]]


def encode(routers: Mapping[str, Mapping[str, VmKept]], host: str, now: float) -> bytes:
    """The file's bytes for ``routers`` (router id -> server id -> what its VM kept)."""
    return json.dumps(
        {
            "version": VERSION,
            "host": host,
            "written_at": now,
            "routers": {
                router_id: {
                    server_id: {
                        "digest": digest.hex(),
                        "interfaces": [[i.ifname, i.lladdr, list(i.addresses)] for i in ifaces],
                    }
                    for server_id, (digest, ifaces) in vms.items()
                }
                for router_id, vms in routers.items()
                if vms
            },
        },
        separators=(",", ":"),
    ).encode()


def decode(data: bytes, host: str, now: float, max_age: float) -> dict[str, dict[str, VmKept]]:
    """What ``data`` keeps for ``host``, if it is at most ``max_age`` seconds old; ``ValueError``
    naming what is wrong otherwise."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} warm state")
    if doc.get("host") != host:
        raise ValueError(f"written by host {doc.get('host')!r}, not {host!r}")
    written = doc.get("written_at")
    if not isinstance(written, int | float) or isinstance(written, bool):
        raise ValueError("no written_at time")
    age = now - written
    if not 0 <= age <= max_age:
        raise ValueError(f"{age:.0f} s old (kept at most {max_age:.0f} s)")
    routers = doc.get("routers")
    if not isinstance(routers, dict):
        raise ValueError("no routers")
    return {
        str(router_id): {str(sid): _vm(entry) for sid, entry in _items(vms)}
        for router_id, vms in routers.items()
    }


def save(
    state_dir: str | os.PathLike[str],
    routers: Mapping[str, Mapping[str, VmKept]],
    host: str,
    clock: Callable[[], float] = time.time,
) -> Path:
    """Write the file under ``state_dir`` (owner-only, atomically); ``OSError`` propagates."""
    folder = secure_dir(state_dir)
    path = folder / FILE_NAME
    tmp = folder / f".{FILE_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(encode(routers, host, clock()))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load(
    state_dir: str | os.PathLike[str],
    host: str,
    max_age: float,
    clock: Callable[[], float] = time.time,
) -> dict[str, dict[str, VmKept]]:
    """Read and delete the file under ``state_dir``: what it keeps for ``host``, or ``{}``
    (none, too old, another host's, unreadable or malformed: logged, never raised)."""
    path = Path(state_dir) / FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        LOG.warning("warm restart: cannot read %s (%s); every router is pushed", path, exc)
        return {}
    try:
        path.unlink()  # used once: a later crash must not bring back what it keeps
    except OSError as exc:
        LOG.warning("warm restart: cannot remove %s: %s", path, exc)
    try:
        kept = decode(data, host, clock(), max_age)
    except (ValueError, TypeError, KeyError) as exc:
        LOG.warning("warm restart: %s ignored: %s; every router is pushed", path, exc)
        return {}
    LOG.info("warm restart: what the VMs of %d routers last accepted, from %s", len(kept), path)
    return kept


def _items(value: Any) -> Sequence[tuple[Any, Any]]:
    if not isinstance(value, dict):
        raise ValueError("a router's entry is not an object")
    return list(value.items())


def _vm(entry: Any) -> VmKept:
    if not isinstance(entry, dict):
        raise ValueError("a VM's entry is not an object")
    digest = bytes.fromhex(str(entry["digest"]))
    interfaces = entry["interfaces"]
    if not isinstance(interfaces, list):
        raise ValueError("interfaces are not a list")
    kept = []
    for item in interfaces:
        ifname, lladdr, addresses = item
        if not isinstance(ifname, str) or not isinstance(lladdr, str):
            raise ValueError("an interface's name or address is not text")
        kept.append(Interface(ifname, lladdr.lower(), tuple(str(a) for a in addresses)))
    return digest, tuple(kept)
