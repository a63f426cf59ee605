"""The orchestrator's settings: read once into a frozen value and passed down."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Settings", "nova_url_problem"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable the core uses, with the original Astara's defaults where it had one."""

    # --- identity of this orchestrator
    host: str = field(default_factory=socket.gethostname)

    # --- state machine and instance manager (inventory §2.7, §2.10)
    reboot_error_threshold: int = 5  # boots without reaching "configured" before ERROR
    boot_timeout: float = 600.0  # a VM that has not answered after this long is replaced
    dead_vm_timeout: float = 5.0  # a VM that answered, then went silent this long, is replaced
    boot_check_interval: float = 2.0  # seconds between liveness checks of a booting VM
    error_state_cooldown: float = 30.0  # events ignored this long after entering ERROR
    error_retry_max: float = 900.0  # cap of the automatic retry backoff of an errored router
    alive_timeout: float = 3.0  # appliance GET /v1/firewall/rules timeout
    config_timeout: float = 90.0  # appliance PUT /v1/system/config timeout
    max_retries: int = 3  # liveness passes; failed config pushes before the VM is restarted
    retry_delay: float = 1.0  # first delay of a failed step's retry (grows exponentially)
    retry_max_delay: float = 60.0  # cap of a failed step's retry delay
    hotplug_timeout: float = 10.0  # wait for the appliance to show hot-plugged interfaces
    queue_warning_threshold: int = 100  # inbox length that logs a warning
    transition_history: int = 20  # transitions kept per router for dumps

    # --- health polling
    health_check_period: float = 8.0  # every router is polled once per period
    update_coalesce: float = 0.2  # UPDATEs within this of the last push wait for quiet
    config_check_polls: int = 0  # every Nth poll re-reads one router to compare configs (0: never)
    config_check_interval: float = 600.0  # a drift sweep lists the cloud this often (0: never)

    # --- the rebuild guard: boot cap and liveness circuit breaker
    # (astara_actors.core.rebuild_guard)
    rebuild_concurrency: int = 20  # boots in progress at once, per process
    breaker_threshold: float = 0.2  # share of routers failing liveness at once that opens it
    breaker_min_failures: int = 5  # ... and at least this many (small clouds still self-heal)

    # --- actor runtime (astara_actors.actors.pool)
    actor_threads: int = 8  # worker threads kept for the router and tenant actors
    actor_threads_max: int = 128  # ... grown to while actors wait on slow calls

    heap_freeze_interval: float = 60.0  # collect, then freeze long-lived objects (0: never)

    # --- supervision
    restart_limit: int = 5  # restarts of one actor allowed within restart_window
    restart_window: float = 60.0
    restart_backoff: float = 0.1  # first restart delay (grows exponentially, jittered)
    restart_backoff_max: float = 10.0
    ask_timeout: float = 5.0  # parents wait this long for a child's dump
    tenant_idle_grace: float = 300.0  # a tenant actor with no router stops after this (0: never)

    # --- service VM
    management_network_id: str = ""
    management_subnet_id: str = ""
    router_image_id: str = ""
    router_flavor_id: str = ""
    appliance_port: int = 5000
    ssh_public_key: str = ""  # contents installed for the "astara" user
    boot_command: str = "astara-configure-management"

    # --- config payload (inventory §3.8)
    asn: int = 64512
    neighbor_asn: int = 64512
    provider_labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    orchestrator_address: str = ""
    metadata_port: int = 9697

    # --- the metadata proxy (astara_actors.metadata): listens on orchestrator_address,
    # metadata_port; signs consistent requests and forwards them to Nova's metadata API
    metadata_proxy: bool = True
    nova_metadata_url: str = "http://127.0.0.1:8775"
    # Nova's [neutron] metadata_proxy_shared_secret: the key of X-Instance-ID-Signature
    metadata_proxy_shared_secret: str = field(default="", repr=False)
    metadata_connections: int = 32  # kept-alive connections to Nova at most; more requests wait
    metadata_timeout: float = 10.0  # seconds for Nova to answer one request (then 500)
    metadata_client_timeout: float = 60.0  # an appliance's idle or slow connection is closed

    def __post_init__(self) -> None:
        if not 0 < self.breaker_threshold <= 1:
            raise ValueError(f"breaker_threshold must be in (0, 1], not {self.breaker_threshold}")
        if not 1 <= self.actor_threads <= self.actor_threads_max:
            raise ValueError(
                f"need 1 <= actor_threads <= actor_threads_max, not "
                f"{self.actor_threads}, {self.actor_threads_max}"
            )
        if self.config_check_interval < 0:
            raise ValueError(
                f"config_check_interval must be >= 0, not {self.config_check_interval}"
            )
        if self.tenant_idle_grace < 0:
            raise ValueError(f"tenant_idle_grace must be >= 0, not {self.tenant_idle_grace}")
        if self.rebuild_concurrency < 1:
            raise ValueError(
                f"rebuild_concurrency must be at least 1, not {self.rebuild_concurrency}"
            )
        self._check_metadata()

    def _check_metadata(self) -> None:
        """The metadata proxy's keys; each problem a ValueError naming its key first."""
        if not 0 < self.metadata_port < 65536:
            raise ValueError(f"metadata_port must be between 1 and 65535, not {self.metadata_port}")
        problem = nova_url_problem(self.nova_metadata_url)
        if problem:
            raise ValueError(f"nova_metadata_url {problem}")
        if self.metadata_connections < 1:
            raise ValueError(
                f"metadata_connections must be at least 1, not {self.metadata_connections}"
            )
        for key in ("metadata_timeout", "metadata_client_timeout"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive, not {getattr(self, key)}")
        if any(c in self.metadata_proxy_shared_secret for c in "\r\n\0"):
            raise ValueError("metadata_proxy_shared_secret must be one line")


def nova_url_problem(url: str) -> str:
    """What is wrong with ``url`` as Nova's metadata API (``http://host[:port][/prefix]``),
    "" if nothing."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme != "http":
        return f"{url!r} must start with http:// (Nova's metadata API on a trusted network)"
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"{url!r} must be http://host[:port][/path], without user, query or fragment"
    if port == 0:
        return f"{url!r} has port 0"
    return ""
