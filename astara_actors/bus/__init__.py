"""The message bus: Neutron notifications in, the control protocol (commands, queries) both ways.

kombu is used only inside this package; its exceptions become :class:`BusError` subclasses.
"""

from __future__ import annotations

from astara_actors.bus.consumer import Handler, NotificationConsumer
from astara_actors.bus.rpc import Answer, ControlClient, QueryServer
from astara_actors.bus.transport import (
    BusError,
    BusSettings,
    BusUnavailable,
    NoAnswer,
    connect,
    embedded_url,
    notification_envelope,
    publish,
)

__all__ = [
    "Answer",
    "BusError",
    "BusSettings",
    "BusUnavailable",
    "ControlClient",
    "Handler",
    "NoAnswer",
    "NotificationConsumer",
    "QueryServer",
    "connect",
    "embedded_url",
    "notification_envelope",
    "publish",
]
