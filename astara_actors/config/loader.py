"""The orchestrator's configuration file: every section read once into frozen settings.

``etc/orchestrator.ini`` documents every key with its default. Sections:

* ``[orchestrator]`` — :class:`~astara_actors.config.settings.Settings` (state machine, polling,
  supervision, the service VM, the config payload) plus ``state_dir``;
* ``[cloud]`` — :class:`~astara_actors.config.cloud.CloudSettings` (how to reach OpenStack);
* ``[bus]`` — :class:`~astara_actors.bus.transport.BusSettings` (``transport_url`` …);
* ``[api]`` — :class:`ApiSettings` (the HTTP RPC API);
* ``[sim]`` — :class:`~astara_actors.sim.settings.SimSettings`, only read when
  ``[orchestrator] embedded_sim = true`` (the demo: the simulated cloud runs in-process).
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astara_actors.adapters.host_plug import ServicePortOptions
from astara_actors.bus.transport import BusSettings, embedded_url
from astara_actors.config.cloud import CloudSettings
from astara_actors.config.ini import read_ini, section_to
from astara_actors.config.settings import Settings
from astara_actors.core.spares import SpareSettings
from astara_actors.errors import SettingsError

__all__ = [
    "AUTH_STRATEGIES",
    "ApiSettings",
    "Config",
    "CoordinationSettings",
    "DatabaseSettings",
    "ProcessSettings",
    "load_config",
    "CONFIG_ENV",
]

CONFIG_ENV = "ASTARA_CONFIG_FILE"  # how the API's gunicorn workers find the file


#: ``[api] auth_strategy``: who may call the API (see :class:`ApiSettings`).
AUTH_STRATEGIES = ("none", "token", "keystone")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """``[api]``: the HTTP RPC API, served by gunicorn in its own process.

    Authentication (``auth_strategy``): ``none``; ``token`` (``Authorization: Bearer
    <auth_token>``); ``keystone`` (``X-Auth-Token`` validated against Keystone with the
    ``[cloud]`` account, holding ``required_role``; with ``auth_token`` also set, the static
    bearer token is accepted too, e.g. for Prometheus). Empty means ``token`` when
    ``auth_token`` is set, else ``none``. Unauthenticated, the API serves loopback only unless
    ``allow_unauthenticated`` says otherwise (:meth:`exposure`).
    """

    enabled: bool = True  # start the API with the orchestrator
    # Comma-separated addresses; loopback in both families by default. "::" = every address
    # (IPv4 and IPv6), which needs authentication.
    listen: str = "127.0.0.1, ::1"
    port: int = 44250
    workers: int = 2  # gunicorn worker processes
    auth_strategy: str = ""  # none | token | keystone; "" = token if auth_token is set, else none
    auth_token: str = ""  # the static bearer token ("Authorization: Bearer <token>")
    allow_unauthenticated: bool = False  # serve without auth beyond loopback (warned at start)
    required_role: str = "admin"  # keystone: the role a token must hold (else 403)
    token_cache_time: float = 300.0  # keystone: seconds a validation (valid or not) is reused
    token_cache_size: int = 10000  # keystone: validations kept per API worker process
    metrics_open: bool = False  # serve GET /metrics without authentication (Prometheus)
    timeout: float = 5.0  # seconds to wait for the orchestrators' answers to a query
    client_timeout: float = 10.0  # seconds a client has to send its request (408 after)
    # GET /events (server-sent events) streams served at once by each worker process (503 after)
    max_event_streams: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError("api", "port", "must be between 1 and 65535")
        if self.workers < 1:
            raise SettingsError("api", "workers", "must be at least 1")
        if not self.addresses:
            raise SettingsError("api", "listen", "needs at least one address")
        if self.auth_strategy not in ("", *AUTH_STRATEGIES):
            raise SettingsError(
                "api",
                "auth_strategy",
                f"{self.auth_strategy!r} is not one of {', '.join(AUTH_STRATEGIES)}",
            )
        token = self.auth_token
        if token and (len(token) > 1024 or not all(33 <= ord(c) < 127 for c in token)):
            raise SettingsError(
                "api",
                "auth_token",
                "must be printable ASCII without spaces "
                "(at most 1024 characters): it travels in an HTTP header",
            )
        if self.auth_strategy == "token" and not token:
            raise SettingsError("api", "auth_token", "is required with auth_strategy = token")
        if self.auth_strategy == "none" and token:
            raise SettingsError(
                "api", "auth_token", "is set but auth_strategy = none: remove one of the two"
            )
        if not self.required_role.strip() or any(c.isspace() for c in self.required_role):
            raise SettingsError("api", "required_role", "must be one Keystone role name")
        for key in ("timeout", "client_timeout", "token_cache_time"):
            if getattr(self, key) <= 0:
                raise SettingsError("api", key, "must be positive")
        if self.token_cache_size < 1:
            raise SettingsError("api", "token_cache_size", "must be at least 1")
        if self.max_event_streams < 0:
            raise SettingsError("api", "max_event_streams", "must not be negative")

    @property
    def strategy(self) -> str:
        """The effective ``auth_strategy``: ``none``, ``token`` or ``keystone``."""
        return self.auth_strategy or ("token" if self.auth_token else "none")

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses of ``listen``, without brackets: ``("127.0.0.1", "::1")``."""
        return tuple(a.strip().strip("[]") for a in self.listen.split(",") if a.strip())

    @property
    def loopback_only(self) -> bool:
        """Whether every ``listen`` address is a loopback one (only this host can connect)."""
        return all(_is_loopback(host) for host in self.addresses)

    def exposure(self) -> str:
        """ "" when serving as configured is safe; a warning when it is not but the operator
        said so (``allow_unauthenticated``); raises :class:`SettingsError` (naming the keys to
        set) for an unauthenticated API on a non-loopback address."""
        if self.strategy != "none" or self.loopback_only:
            return ""
        where = f"{self.listen}:{self.port}"
        if not self.allow_unauthenticated:
            raise SettingsError(
                "api",
                "listen",
                f"{', '.join(a for a in self.addresses if not _is_loopback(a))} is not a "
                "loopback address and the API has no authentication: "
                "set [api] auth_strategy = keystone (or auth_token = <secret>), or listen = "
                "127.0.0.1, or allow_unauthenticated = true to serve it open anyway",
            )
        return (
            f"the HTTP API on {where} serves ANYONE who can reach it without "
            "authentication ([api] allow_unauthenticated = true): they can change the fleet"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume it is reachable


@dataclass(frozen=True, slots=True)
class CoordinationSettings:
    """``[coordination]``: several orchestrators sharing the routers (tooz membership)."""

    enabled: bool = False
    url: str = "redis://127.0.0.1:6379"  # a tooz backend: redis://, etcd3+http://, zookeeper://
    group: str = "astara.orchestrator"
    heartbeat: float = 1.0  # seconds between heartbeats; ownership is given up when they fail


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``[database]``: where debug flags and the command audit live."""

    connection: str = ""  # SQLAlchemy URL; "" = sqlite:///<state_dir>/astara.db


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class ProcessSettings:
    """``[orchestrator]`` keys that concern the process rather than the routers."""

    state_dir: str = "/var/lib/astara"  # the embedded bus and the store live here
    embedded_sim: bool = False  # run astara-sim in this process and use it as the cloud
    provider_rules_path: str = "/etc/astara/provider_rules.json"  # labels for the appliance
    log_level: str = "INFO"
    orphan_sweep_period: float = 300.0  # seconds between sweeps for leaked VMs/ports (0 = off)
    orphan_grace: float = 300.0  # an orphan is removed once seen orphaned this long
    # A clean stop keeps what each VM last accepted; a start within this many seconds pushes
    # only what changed meanwhile (0 = never: every router is pushed at start).
    warm_restart_max_age: float = 900.0

    def __post_init__(self) -> None:
        if self.warm_restart_max_age < 0:
            raise ValueError(f"warm_restart_max_age must be >= 0, not {self.warm_restart_max_age}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(
                f"log_level must be one of {', '.join(LOG_LEVELS)} (any case), "
                f"not {self.log_level!r}"
            )


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    settings: Settings
    process: ProcessSettings
    cloud: CloudSettings | None  # None with the embedded simulator
    bus: BusSettings
    api: ApiSettings
    database_url: str = ""
    coordination: CoordinationSettings = CoordinationSettings()
    sim: Any = None  # SimSettings with the embedded simulator
    service_port: ServicePortOptions = ServicePortOptions()
    spares: SpareSettings = SpareSettings()
    warnings: tuple[str, ...] = field(default=())


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the whole file; raises :class:`SettingsError` naming the first problem."""
    parser = read_ini(path)
    warnings: list[str] = []
    known = {f.name for f in dataclasses.fields(Settings)} | {
        f.name for f in dataclasses.fields(ProcessSettings)
    }
    orchestrator = dict(parser.items("orchestrator")) if parser.has_section("orchestrator") else {}
    for key in orchestrator:
        if key not in known or key == "provider_labels":
            warnings.append(f"[orchestrator] {key}: unknown option, ignored")
    process = _shared(parser, "orchestrator", ProcessSettings)
    settings = _settings(parser, process)
    for section in parser.sections():
        if section not in (
            "orchestrator",
            "cloud",
            "bus",
            "api",
            "sim",
            "database",
            "coordination",
            "service_port",
            "spares",
        ):
            warnings.append(f"[{section}]: unknown section, ignored")
    bus_overrides: dict[str, Any] = {"host": settings.host}
    if not (parser.get("bus", "transport_url", fallback="") or "").strip():
        bus_overrides["transport_url"] = embedded_url(process.state_dir)  # no broker needed
    bus = section_to(parser, "bus", BusSettings, overrides=bus_overrides, warn=warnings.append)
    api = section_to(parser, "api", ApiSettings, warn=warnings.append)
    database = section_to(parser, "database", DatabaseSettings, warn=warnings.append)
    coordination = section_to(parser, "coordination", CoordinationSettings, warn=warnings.append)
    service_port = section_to(parser, "service_port", ServicePortOptions, warn=warnings.append)
    spares = section_to(parser, "spares", SpareSettings, warn=warnings.append)
    database_url = (
        database.connection or f"sqlite:///{Path(process.state_dir).resolve() / 'astara.db'}"
    )
    cloud = sim = None
    if process.embedded_sim:
        from astara_actors.sim.settings import SimSettings

        sim = section_to(parser, "sim", SimSettings, warn=warnings.append)
    else:
        if not parser.has_section("cloud"):
            raise SettingsError(
                "cloud",
                "-",
                "missing: say how to reach OpenStack (or set "
                "[orchestrator] embedded_sim = true for the demo)",
            )
        cloud = section_to(parser, "cloud", CloudSettings, warn=warnings.append)
        for key in (
            "management_network_id",
            "management_subnet_id",
            "router_image_id",
            "router_flavor_id",
        ):
            if not getattr(settings, key):
                raise SettingsError("orchestrator", key, "is required")
    return Config(
        str(path),
        settings,
        process,
        cloud,
        bus,
        api,
        database_url,
        coordination,
        sim,
        service_port,
        spares,
        tuple(warnings),
    )


def _shared(parser: Any, section: str, cls: type, exclude: frozenset[str] = frozenset()) -> Any:
    """The keys of ``cls`` in a section it shares with another dataclass.

    Unknown keys are not warned about here: ``load_config`` checks the section as a whole.
    """
    names = {f.name for f in dataclasses.fields(cls)} - exclude
    if not parser.has_section(section):
        return cls()
    subset = configparser.ConfigParser(interpolation=None, default_section="__no_defaults__")
    subset.optionxform = parser.optionxform  # type: ignore[method-assign]
    subset.add_section(section)
    for key, value in parser.items(section):
        if key in names:
            subset.set(section, key, value)
    return section_to(subset, section, cls, warn=lambda _msg: None)


def _settings(parser: Any, process: ProcessSettings) -> Settings:
    base = _shared(parser, "orchestrator", Settings, frozenset({"provider_labels"}))
    labels = _labels(process.provider_rules_path)
    host = base.host or socket.gethostname()
    return dataclasses.replace(base, provider_labels=labels, host=host)


def _labels(path: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``labels`` of the provider rules file; none if it is absent (as the original)."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as exc:
        raise SettingsError("orchestrator", "provider_rules_path", f"{path}: {exc}") from None
    labels = doc.get("labels", {}) if isinstance(doc, dict) else None
    if not isinstance(labels, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in labels.values()
    ):
        raise SettingsError(
            "orchestrator",
            "provider_rules_path",
            f"{path}: 'labels' must map names to lists of CIDRs",
        )
    return tuple((name, tuple(cidrs)) for name, cidrs in sorted(labels.items()))
