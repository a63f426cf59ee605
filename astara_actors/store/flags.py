"""Debug flags that survive restarts, and the audit trail of operator commands.

The store holds the flags; the actor tree holds them in memory. At start-up the tree is told
what the store remembers; every debug/manage command is written to the store (and audited)
before the tree is told, so a crash between the two loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from astara_actors.protocol.control import Command, CommandKind
from astara_actors.protocol.messages import DebugGlobal, DebugRouter, DebugTenant

if TYPE_CHECKING:  # SQLAlchemy is loaded by whoever opens the store, not by this module
    from astara_actors.store.store import Store

__all__ = ["record_command", "restore_debug"]

LOG = logging.getLogger(__name__)

_WILDCARDS = ("", "*", "error")


def record_command(
    store: Store, command: Command, actor: str, *, message_id: str = "", tenant_id: str = ""
) -> None:
    """Persist what ``command`` changes in the debug flags, and audit it (once per
    ``message_id``, the bus message's id). ``tenant_id``: the tenant the command concerns when
    it does not say (a router command sent with ``*``: its router's tenant, where known)."""
    k = command.kind
    if k in (CommandKind.RESOURCE_DEBUG, CommandKind.ROUTER_DEBUG):
        store.set_router_debug(command.router_id, command.reason)
    elif k in (CommandKind.RESOURCE_MANAGE, CommandKind.ROUTER_MANAGE):
        store.clear_router_debug(command.router_id)
    elif k == CommandKind.TENANT_DEBUG:
        store.set_tenant_debug(command.tenant_id, command.reason)
    elif k == CommandKind.TENANT_MANAGE:
        store.clear_tenant_debug(command.tenant_id)
    elif k == CommandKind.GLOBAL_DEBUG:
        if command.enabled:
            store.set_global_debug(command.reason)
        else:
            store.clear_global_debug()
    target = command.router_id or command.tenant_id
    tenant = command.tenant_id if command.tenant_id not in _WILDCARDS else ""
    store.record(
        actor,
        str(k),
        target,
        command.reason,
        command.to_payload(),
        tenant_id=tenant or tenant_id,
        message_id=message_id or None,
    )


def restore_debug(
    store: Store, tell: Callable[[DebugGlobal | DebugTenant | DebugRouter], None]
) -> int:
    """Tell the tree every flag the store remembers; returns how many."""
    count = 0
    enabled, reason = store.global_debug()
    if enabled:
        tell(DebugGlobal(reason=reason))
        count += 1
    for tenant_id, (reason, _since) in store.tenants_in_debug().items():
        tell(DebugTenant(tenant_id, reason))
        count += 1
    for router_id, (reason, _since) in store.routers_in_debug().items():
        tell(DebugRouter(router_id, reason))
        count += 1
    if count:
        LOG.warning("restored %d debug flags from the store", count)
    return count
