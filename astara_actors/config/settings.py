"""The orchestrator's settings: read once into a frozen value and passed down."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

__all__ = ["Settings"]


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
    health_check_period: float = 10.0  # every router is polled once per period
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
