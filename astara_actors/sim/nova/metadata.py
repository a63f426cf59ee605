"""The simulated Nova's metadata API, as Nova serves it behind a metadata proxy.

Nova with ``[neutron] service_metadata_proxy = true`` answers a proxy, not the guest: the proxy
names the instance (``X-Instance-ID``), its project (``X-Tenant-ID``) and the guest's address
(``X-Forwarded-For``), and proves it holds the shared secret with ``X-Instance-ID-Signature``,
the HMAC-SHA256 hex digest of the instance id keyed with ``metadata_proxy_shared_secret``.
Like ``nova/api/metadata/handler.py``:

- ``/`` lists the EC2 versions to anyone; every other path needs the three headers above
  (a missing one: 400, naming it; ``X-Forwarded-For`` is not required);
- a signature that does not match: 403 and a WARNING naming the instance and the requester;
- an unknown instance, or one of another project than ``X-Tenant-ID``: 404 (a WARNING for
  the project mismatch, as Nova logs it);
- otherwise the instance's metadata: the OpenStack tree (``/openstack``,
  ``/openstack/<version>`` with ``meta_data.json``, ``user_data`` (404 when the server has
  none), ``password``, ``vendor_data.json``, ``vendor_data2.json``, ``network_data.json``) and
  the EC2 tree (``/<version>`` with ``meta-data/...`` and ``user-data``), rendered as Nova
  renders them.

Nova caches an instance's metadata for ``[api] metadata_cache_expiration`` (15 s); so does this
(``cache_seconds``). :class:`NovaMetadataServer` serves it on an asyncio loop thread of its own
(keep-alive HTTP/1.1, no thread per request): a cloud-init storm is thousands of requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import posixpath
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from astara_actors.sim._asynchttp import LoopServer, Reply, Request
from astara_actors.sim.nova.model import NovaFault, NovaModel

__all__ = ["MetadataService", "NovaMetadataServer", "sign"]

LOG = logging.getLogger(__name__)

EC2_VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)
# Folsom … Epoxy; versions dated in the future are not listed (but may be asked for).
OPENSTACK_VERSIONS = (
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
    "2025-04-04",
)
_GRIZZLY, _HAVANA, _LIBERTY, _NEWTON_ONE, _NEWTON_TWO, _VICTORIA = (
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2020-10-14",
)
TEXT = "text/plain"
JSON = "application/json"
AVAILABILITY_ZONE = "nova"
_CACHE_MAX = 20_000  # instances kept at most (the oldest go first)


def sign(secret: str, instance_id: str) -> str:
    """``X-Instance-ID-Signature`` for ``instance_id``: HMAC-SHA256 hex digest keyed with
    ``secret`` (Nova's ``metadata_proxy_shared_secret``)."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def _error(status: int, explanation: str = "") -> Reply:
    """webob's plain-text error body, as Nova's handler answers."""
    phrase = HTTPStatus(status).phrase
    default = {404: "The resource could not be found."}.get(status, "")
    text = f"{status} {phrase}\n\n{explanation or default}\n\n   "
    return status, "text/plain; charset=UTF-8", text.encode()


@dataclass(frozen=True, slots=True)
class _Instance:
    """What the metadata of one server is rendered from (read once, then cached)."""

    uuid: str
    name: str
    hostname: str
    project_id: str
    user_data: bytes | None
    key_name: str | None
    key_data: str | None
    meta: Mapping[str, str]
    ec2_id: str
    ami_id: str
    reservation_id: str
    flavor_name: str
    fixed_ips: tuple[str, ...]  # v4 first, as Nova's ec2 ip info lists them
    security_groups: tuple[str, ...]
    network_data: Mapping[str, Any]


class _NotFound(Exception):
    pass


class MetadataService:
    """The metadata API's answers, for the servers of ``nova`` (no sockets: see the server)."""

    def __init__(
        self,
        nova: NovaModel,
        secret: str,
        *,
        cache_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], str] = lambda: time.strftime("%Y-%m-%d", time.gmtime()),
    ) -> None:
        self.nova = nova
        self.secret = secret
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._today = today
        self._cache: dict[str, tuple[float, _Instance]] = {}
        self._lock = threading.Lock()
        self.counts: dict[int, int] = {}  # status -> answers

    # ------------------------------------------------------------------ the request
    def handle(self, req: Request) -> Reply:
        status, ctype, body = self.answer(req.target, req.headers)
        with self._lock:
            self.counts[status] = self.counts.get(status, 0) + 1
        return status, ctype, body

    def answers(self) -> dict[int, int]:
        """How many answers of each status it gave."""
        with self._lock:
            return dict(self.counts)

    def answer(self, target: str, headers: Mapping[str, str]) -> Reply:
        """The answer to ``GET target`` with ``headers`` (lower-case names)."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if "://" in path:  # the absolute form a proxy may send: http://host:port/path
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        path = posixpath.normpath("/" + "/".join(p for p in path.split("/") if p))
        if path == "/":
            return 200, TEXT, "\n".join((*EC2_VERSIONS, "latest")).encode()
        instance_id = headers.get("x-instance-id")
        tenant_id = headers.get("x-tenant-id")
        signature = headers.get("x-instance-id-signature")
        forwarded = headers.get("x-forwarded-for", "")
        if instance_id is None:
            return _error(400, "X-Instance-ID header is missing from request.")
        if signature is None:
            return _error(400, "X-Instance-ID-Signature header is missing from request.")
        if tenant_id is None:
            return _error(400, "X-Tenant-ID header is missing from request.")
        if "," in instance_id:
            return _error(400, "Multiple X-Instance-ID headers found within request.")
        if "," in tenant_id:
            return _error(400, "Multiple X-Tenant-ID headers found within request.")
        expected = sign(self.secret, instance_id).encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            if instance_id:
                LOG.warning(
                    "X-Instance-ID-Signature %.80r does not match the expected signature for"
                    " instance %.80r (request from %.80r): the proxy's shared secret is not"
                    " the simulated Nova's metadata_secret",
                    signature,
                    instance_id,
                    forwarded,
                )
            return _error(403, "Invalid proxy request signature.")
        instance = self._instance(instance_id)
        if instance is None:
            LOG.info("no metadata for instance %.80r: no such server", instance_id)
            return _error(404)
        if instance.project_id != tenant_id:
            LOG.warning(
                "Tenant_id %.80r does not match tenant_id of instance %s.", tenant_id, instance_id
            )
            return _error(404)
        try:
            return self._lookup(instance, path, forwarded)
        except _NotFound:
            return _error(404)

    # ------------------------------------------------------------------ the instance
    def _instance(self, instance_id: str) -> _Instance | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(instance_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            server = self.nova.get(instance_id)
        except NovaFault:
            return None
        instance = self._read(server)
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= _CACHE_MAX:
                    for key in list(self._cache)[: _CACHE_MAX // 10]:
                        del self._cache[key]
                self._cache.pop(instance_id, None)
                self._cache[instance_id] = (now + self.cache_seconds, instance)
        return instance

    def forget(self, instance_id: str | None = None) -> None:
        """Drop the cached metadata of one instance (``None``: of all)."""
        with self._lock:
            if instance_id is None:
                self._cache.clear()
            else:
                self._cache.pop(instance_id, None)

    def _read(self, server: Mapping[str, Any]) -> _Instance:
        fixed: list[str] = []
        links: list[dict[str, Any]] = []
        networks: list[dict[str, Any]] = []
        for port_id in server["port_ids"]:
            port = self.nova.ports.port(port_id)
            if port is None:
                continue
            link = f"tap{port_id}"[:14]
            links.append(
                {
                    "id": link,
                    "vif_id": port_id,
                    "type": "ovs",
                    "mtu": port.get("mtu") or 1500,
                    "ethernet_mac_address": port.get("mac_address"),
                }
            )
            for ip in port.get("fixed_ips") or ():
                address = ipaddress.ip_address(ip["ip_address"])
                fixed.append(str(address))
                try:
                    cidr = ipaddress.ip_network(self.nova.ports.subnet_cidr(ip["subnet_id"]))
                except (KeyError, ValueError):  # its subnet is being deleted
                    continue
                networks.append(
                    {
                        "id": f"network{len(networks)}",
                        "type": f"ipv{address.version}",
                        "link": link,
                        "ip_address": str(address),
                        "netmask": str(cidr.netmask),
                        "routes": [],
                        "network_id": port.get("network_id"),
                        "services": [],
                    }
                )
        fixed.sort(key=lambda ip: ":" in ip)  # v4 first
        user_data = None
        if server.get("user_data") is not None:
            try:
                user_data = base64.b64decode(server["user_data"])
            except (binascii.Error, ValueError):
                user_data = str(server["user_data"]).encode()
        instance_name = str(server.get("instance_name") or "")
        ec2 = instance_name.rsplit("-", 1)[-1] if instance_name else "00000000"
        image_digest = hashlib.sha1(str(server["image_id"]).encode(), usedforsecurity=False)
        return _Instance(
            uuid=server["id"],
            name=server["name"],
            hostname=server["hostname"],
            project_id=server["project_id"],
            user_data=user_data,
            key_name=server.get("key_name"),
            key_data=server.get("key_data"),
            meta=dict(server.get("metadata") or {}),
            ec2_id=f"i-{ec2}",
            ami_id=f"ami-{image_digest.hexdigest()[:8]}",
            reservation_id=server["reservation_id"],
            flavor_name=server["flavor"]["name"],
            fixed_ips=tuple(fixed),
            security_groups=tuple(server.get("security_groups") or ()) or ("default",),
            network_data={"links": links, "networks": networks, "services": []},
        )

    # ------------------------------------------------------------------ the trees
    def _lookup(self, instance: _Instance, path: str, forwarded: str) -> Reply:
        tokens = path.split("/")[1:]
        if tokens[0] not in ("ec2", "openstack"):
            tokens = ["ec2", *tokens]
        if len(tokens) == 1:
            if tokens[0] == "openstack":
                today = self._today()
                listed = [v for v in OPENSTACK_VERSIONS if v <= today]
                return 200, TEXT, "\n".join((*listed, "latest")).encode()
            return 200, TEXT, "\n".join((*EC2_VERSIONS, "latest")).encode()
        if tokens[0] == "openstack":
            return self._openstack(instance, tokens[1:])
        return self._ec2(instance, tokens[1:], forwarded)

    def _openstack(self, instance: _Instance, tokens: list[str]) -> Reply:
        version = OPENSTACK_VERSIONS[-1] if tokens[0] == "latest" else tokens[0]
        if version not in OPENSTACK_VERSIONS:
            raise _NotFound
        item = "/".join(tokens[1:])
        if not item:  # the version's listing
            names = ["meta_data.json"]
            if instance.user_data is not None:
                names.append("user_data")
            if version >= _GRIZZLY:
                names.append("password")
            if version >= _HAVANA:
                names.append("vendor_data.json")
            if version >= _LIBERTY:
                names.append("network_data.json")
            if version >= _NEWTON_TWO:
                names.append("vendor_data2.json")
            return 200, TEXT, "\n".join(names).encode()
        if item == "meta_data.json":
            return 200, JSON, json.dumps(self._meta_data(instance, version)).encode()
        if item == "user_data" and instance.user_data is not None:
            return 200, TEXT, instance.user_data
        if item == "password" and version >= _GRIZZLY:
            return 200, TEXT, b""
        if item == "vendor_data.json" and version >= _HAVANA:
            return 200, JSON, b"{}"  # the StaticJSON provider without a file
        if item == "vendor_data2.json" and version >= _NEWTON_TWO:
            return 200, JSON, b'{"static": {}}'
        if item == "network_data.json" and version >= _LIBERTY:
            return 200, JSON, json.dumps(instance.network_data).encode()
        raise _NotFound

    def _meta_data(self, instance: _Instance, version: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"uuid": instance.uuid}
        if instance.meta:
            doc["meta"] = dict(instance.meta)
        if instance.key_name and instance.key_data:
            doc["public_keys"] = {instance.key_name: instance.key_data}
            doc["keys"] = [{"name": instance.key_name, "type": "ssh", "data": instance.key_data}]
        doc.update(
            hostname=instance.hostname,
            name=instance.name,
            launch_index=0,
            availability_zone=AVAILABILITY_ZONE,
        )
        if version >= _GRIZZLY:
            doc["random_seed"] = base64.b64encode(os.urandom(512)).decode()
        if version >= _LIBERTY:
            doc["project_id"] = instance.project_id
        if version >= _NEWTON_ONE:
            doc["devices"] = []
        if version >= _VICTORIA:
            doc["dedicated_cpus"] = []
        return doc

    def _ec2(self, instance: _Instance, tokens: list[str], forwarded: str) -> Reply:
        version = EC2_VERSIONS[-1] if tokens[0] == "latest" else tokens[0]
        if version not in EC2_VERSIONS:
            raise _NotFound
        data: Any = {"meta-data": self._ec2_meta_data(instance, version, forwarded)}
        if instance.user_data is not None:
            data["user-data"] = instance.user_data
        for token in tokens[1:]:
            if not isinstance(data, dict) or token not in data:
                raise _NotFound
            data = data[token]
        return 200, TEXT, _ec2_print(data)

    def _ec2_meta_data(self, instance: _Instance, version: str, forwarded: str) -> dict[str, Any]:
        def since(first: str) -> bool:
            return EC2_VERSIONS.index(version) >= EC2_VERSIONS.index(first)

        v4 = [ip for ip in instance.fixed_ips if ":" not in ip]
        meta: dict[str, Any] = {
            "ami-id": instance.ami_id,
            "ami-launch-index": 0,
            "ami-manifest-path": "FIXME",
            "instance-id": instance.ec2_id,
            "hostname": instance.hostname,
            "local-ipv4": v4[0] if v4 else forwarded.split(",")[0].strip(),
            "reservation-id": instance.reservation_id,
            "security-groups": list(instance.security_groups),
        }
        if instance.key_name:
            # public-keys/ lists "0=<name>"; public-keys/0/ lists "openssh-key"
            meta["public-keys"] = {
                "0": {"_name": f"0={instance.key_name}", "openssh-key": instance.key_data or ""}
            }
        if since("2007-01-19"):
            meta.update(
                {
                    "local-hostname": instance.hostname,
                    "public-hostname": instance.hostname,
                    "public-ipv4": "",
                }
            )
        if since("2007-08-29"):
            meta["instance-type"] = instance.flavor_name
        if since("2007-12-15"):
            meta["block-device-mapping"] = {"ami": "vda", "root": "/dev/vda"}
        if since("2008-02-01"):
            meta["placement"] = {"availability-zone": AVAILABILITY_ZONE}
        if since("2008-09-01"):
            meta["instance-action"] = "none"
        return meta


def _ec2_print(data: Any) -> bytes:
    """Nova's ``ec2_md_print``: a dict lists its keys (``key/`` for a dict, or its ``_name``)."""
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            if key == "_name":
                continue
            value = data[key]
            if isinstance(value, dict):
                lines.append(str(value["_name"]) if "_name" in value else f"{key}/")
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(data, list):
        return "\n".join(str(x) for x in data).encode()
    if isinstance(data, bytes):
        return data
    return str(data).encode()


class NovaMetadataServer:
    """:class:`MetadataService` over HTTP on ``host:port`` (0: any free port; see ``port``)."""

    def __init__(
        self,
        nova: NovaModel,
        *,
        host: str = "127.0.0.1",
        port: int = 8775,
        secret: str,
        cache_seconds: float = 15.0,
    ) -> None:
        self.service = MetadataService(nova, secret, cache_seconds=cache_seconds)
        self._http = LoopServer(self.service.handle, host, port, name="sim-nova-metadata")

    @property
    def secret(self) -> str:
        return self.service.secret

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        """The port it listens on (the one bound, once started with port 0)."""
        return self._http.port

    @property
    def url(self) -> str:
        """``http://<host>:<port>``: what an orchestrator's ``nova_metadata_url`` names."""
        return self._http.url

    @property
    def running(self) -> bool:
        return self._http.running

    def start(self) -> NovaMetadataServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.url if self.running else None,
            "answers": {str(k): v for k, v in sorted(self.service.answers().items())},
        }
