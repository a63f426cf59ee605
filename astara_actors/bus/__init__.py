"""The message bus: Neutron notifications in, the control protocol (commands, queries) both ways.

kombu is used only inside this package; its exceptions become :class:`BusError` subclasses.
"""

from __future__ import annotations

from .consumer import Handler, NotificationConsumer
from .rpc import Answer, ControlClient, QueryServer
from .transport import (
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
