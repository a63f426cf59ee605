"""kombu's filesystem transport, fixed for a bus shared by several processes.

Three defects of kombu 5.7 make it lose or duplicate messages between processes:

* one binding cache is shared by every filesystem connection of a process; a binding already
  in it is never written to the exchange file again, so a second connection (another bus
  folder, or a reconnect after a peer removed the binding) silently receives nothing;
* a message file is created, then written: a reader in another process can take it while it
  is still empty and fail to decode it. We write it under a name no reader matches and rename
  it into place, which is atomic;
* a binding is added to the exchange's file by checking that the file exists, then opening it
  (``wb`` when it did not, which truncates) and only then locking it: two processes that bind
  at once both find no file and the second truncates the first's binding away, so a fanout
  never reaches it (two orchestrators started together: one never answers a query). We open
  (creating, never truncating), lock, then read, add and rewrite;
* a message is deleted from the folder as soon as it is read: a consumer that dies before its
  ack loses it, and one that stops with unacked messages "restores" them by publishing them
  again to every queue bound with their routing key (other orchestrators get duplicates).

At least once, instead: reading a message renames its file to ``.claimed.<owner>.<name>`` (one
reader wins the rename); the ack or a reject deletes it; a requeue, or a channel closing with
the message unacked, renames it back, into its own queue at its place. A claim whose owner
process is dead (pid and start time, from ``/proc``) is renamed back by the next reader of the
folder, so a consumer killed while handling a message has it delivered again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from typing import Any

import kombu
import kombu.transport.filesystem
from kombu.exceptions import ChannelError
from kombu.transport import virtual
from kombu.transport.virtual import BrokerState
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from astara_actors.fsmodes import PRIVATE_FILE

__all__ = ["CLAIMED", "FilesystemTransport", "recover_claims"]

log = logging.getLogger(__name__)

CLAIMED = ".claimed."  # .claimed.<pid>-<start>.<original name>: no queue's reader matches it
CORRUPT = ".corrupt."  # a file that is no message: kept aside for a human, never read again
PARTIAL = ".partial-"  # a message being written (renamed into place when complete)
RECOVER_EVERY = 1.0  # seconds between two looks for dead owners' claims, per channel
PARTIAL_AGE = 60.0  # a half-written file this old belongs to a writer that died

_owner: tuple[int, str] | None = None


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc; None if it is not running,
    "" where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else ""
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22; the name in (...) may hold spaces


def owner_token() -> str:
    """This process, as claims name it: ``<pid>-<start time>`` (a reused pid is another owner)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:  # computed again after a fork
        _owner = (pid, f"{pid}-{_start_time(pid) or 0}")
    return _owner[1]


def _owner_alive(owner: str) -> bool:
    pid_text, _, start = owner.partition("-")
    try:
        pid = int(pid_text)
    except ValueError:
        return False  # not one of ours: treat as abandoned
    if owner == owner_token():
        return True
    now = _start_time(pid)
    if now is None:
        return False
    if now == "":  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return start in ("0", now)


def recover_claims(folder: str) -> int:
    """Put back the messages whose claiming process died; drop writers' leftovers. How many."""
    recovered = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(CLAIMED):
            owner, _, original = name[len(CLAIMED) :].partition(".")
            if not original or _owner_alive(owner):
                continue
            try:
                os.rename(path, os.path.join(folder, original))
            except OSError:
                continue  # another reader recovered it first
            recovered += 1
            log.warning(
                "message %s was being handled by process %s, which died: delivering it again",
                original,
                owner.partition("-")[0],
            )
        elif name.startswith(PARTIAL):
            try:
                if os.stat(path).st_mtime < time.time() - PARTIAL_AGE:
                    os.remove(path)
            except OSError:
                pass
    return recovered


class ClaimingQoS(virtual.QoS):
    """Settles the claim file with the message: deleted on ack/reject, renamed back on requeue."""

    channel: FilesystemChannel

    def ack(self, delivery_tag: Any) -> None:
        super().ack(delivery_tag)
        self.channel._settle(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue)  # a requeue goes through _restore
        if not requeue:
            self.channel._settle(delivery_tag)


class FilesystemChannel(kombu.transport.filesystem.Channel):
    QoS = ClaimingQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claims: dict[Any, tuple[str, str]] = {}  # delivery tag -> (claimed, original path)
        self._no_ack: dict[str, int] = {}  # queues consumed without acks (their claims: none)
        self._recovered_at = float("-inf")

    # kombu's two bases name the message differently (payload, message): no override fits both
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Same name scheme as kombu (ordering by milliseconds on the shared monotonic clock).
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"{PARTIAL}{uuid.uuid4()}")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
            with os.fdopen(fd, "wb") as f:  # owner-only, as the folder (fsmodes)
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"cannot add a message to {self.data_folder_out!r}") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        path = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        entry = [routing_key or "", pattern or "", queue or ""]
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
            with os.fdopen(fd, "r+b", buffering=0) as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
                raw = f.read()
                table = [list(row) for row in loads(bytes_to_str(raw))] if raw.strip() else []
                if entry in table:
                    return
                table.insert(0, entry)
                f.seek(0)
                f.truncate()
                f.write(str_to_bytes(dumps(table)))
        except OSError as exc:
            raise ChannelError(f"cannot bind {queue!r} in {str(path)!r}") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        # (kombu's signature; a folder is read at once, there is nothing to wait on)
        folder = self.data_folder_in
        now = time.monotonic()
        if now - self._recovered_at >= RECOVER_EVERY:
            self._recovered_at = now
            recover_claims(folder)
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != wanted:
                continue
            original = os.path.join(folder, name)
            claimed = os.path.join(folder, f"{CLAIMED}{owner_token()}.{name}")
            try:
                os.rename(original, claimed)
            except OSError:
                continue  # another consumer took it
            try:
                with open(claimed, "rb") as f:
                    payload = loads(bytes_to_str(f.read()))
                tag = payload["properties"]["delivery_tag"]
                self.Message(payload, channel=self)  # what kombu will do: it must not raise
            except Exception as exc:  # noqa: BLE001 - any file that is no message
                self._set_aside(claimed, name, exc)
                continue
            if queue in self._no_ack:
                _remove(claimed)
            else:
                self._claims[tag] = (claimed, original)
            return payload
        raise virtual.Empty()

    def _set_aside(self, claimed: str, name: str, exc: BaseException) -> None:
        log.warning("%s is not a message (%s): set aside as %s%s", name, exc, CORRUPT, name)
        try:
            os.rename(claimed, os.path.join(os.path.dirname(claimed), f"{CORRUPT}{name}"))
        except OSError:
            _remove(claimed)

    def _settle(self, delivery_tag: Any) -> None:
        claim = self._claims.pop(delivery_tag, None)
        if claim is not None:
            _remove(claim[0])

    def _restore(self, message: Any) -> None:
        claim = self._claims.pop(message.delivery_tag, None)
        if claim is None:
            super()._restore(message)
            return
        claimed, original = claim
        try:
            os.rename(claimed, original)  # back in its own queue, at its place
        except OSError as exc:
            raise ChannelError(f"cannot give {original!r} back to its queue") from exc

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack[queue] = self._no_ack.get(queue, 0) + 1
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag: Any) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue in self._no_ack:
            self._no_ack[queue] -= 1
            if self._no_ack[queue] <= 0:
                del self._no_ack[queue]
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._settle(message.delivery_tag)
        return message


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class FilesystemTransport(kombu.transport.filesystem.Transport):
    """kombu's filesystem transport with a per-connection binding cache, atomic writes and
    at-least-once delivery (claimed files)."""

    Channel = FilesystemChannel

    def __init__(self, client: kombu.Connection, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.state = BrokerState()
