"""kombu's filesystem transport, fixed for a bus shared by several processes.

Two defects of kombu 5.7 make it lose messages between processes:

* one binding cache is shared by every filesystem connection of a process; a binding already
  in it is never written to the exchange file again, so a second connection (another bus
  folder, or a reconnect after a peer removed the binding) silently receives nothing;
* a message file is created, then written: a reader in another process can take it while it
  is still empty and fail to decode it. We write it under a name no reader matches and rename
  it into place, which is atomic.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import kombu
import kombu.transport.filesystem
from kombu.exceptions import ChannelError
from kombu.transport.virtual import BrokerState
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

__all__ = ["FilesystemTransport"]


class FilesystemChannel(kombu.transport.filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # Same name scheme as kombu (ordering by milliseconds on the shared monotonic clock).
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"cannot add a message to {self.data_folder_out!r}") from exc


class FilesystemTransport(kombu.transport.filesystem.Transport):
    """kombu's filesystem transport with a per-connection binding cache and atomic writes."""

    Channel = FilesystemChannel

    def __init__(self, client: kombu.Connection, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.state = BrokerState()
