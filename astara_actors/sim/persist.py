"""A simulated cloud kept across restarts: one JSON file, saved atomically, loaded at start.

:class:`CloudKeeper` owns the file (``<state_dir>/sim/cloud.json`` for the orchestrator's
embedded simulator, ``astara-sim --state-file``): :meth:`~CloudKeeper.load` reads it at start,
a thread saves the cloud a few seconds after it changed (never on a request's path: a request
meets at most the short copy under a model's lock), and :meth:`~CloudKeeper.stop` saves it a last
time. Each save writes a temporary file owner-only (0600), fsyncs it and renames it over the
previous one, so a crash leaves the old file or the new one, never half of one.

The file (version :data:`VERSION`) is a JSON object::

    {"format": "astara-sim cloud", "version": 1, "saved_at": "2025-01-31T12:00:00Z",
     "settings": {"management_cidr": "...", "external_cidr": "..."},
     "cloud": {...}, "keystone": {...}, "neutron": {...}, "nova": {...}, "appliances": [...]}

where each list of many records (Neutron's tables, Nova's servers, the topology, the
appliances) is a :class:`Table` on disk: ``[{"keys": [...], "rows": [[...], ...]}, ...]``, one
entry per set of keys, so a key is written once per table rather than once per record. A file
that is not JSON, not of this format or version, or made for another ``[sim] management_cidr`` or
``external_cidr`` is not used: a WARNING names it and why, it is moved aside to
``cloud.json.bad-<UTC time>``, and the simulator starts a fresh cloud.

At 10,000 routers (110,000 Neutron records, 20,000 servers, 10,000 appliance configurations of
2 KB) the file is 84 MB; a save takes 1.6 to 2.2 s of the keeper's thread on 2 busy cores (so
saves are at least ten times that apart), during which a request waits at most about 0.25 s
(the copy under Neutron's lock); loading it, with 10,000 appliances listening again, 8 s.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from astara_actors.fsmodes import PRIVATE_FILE, secure_dir
from astara_actors.sim.settings import SimSettings

__all__ = ["FORMAT", "VERSION", "CloudKeeper", "Table", "no_collector", "records"]

LOG = logging.getLogger(__name__)

FORMAT = "astara-sim cloud"
VERSION = 1
# The [sim] settings a kept cloud must have been made with (its addresses come from them).
MATCHING = ("management_cidr", "external_cidr")
SAVE_INTERVAL = 5.0  # seconds at least between two saves (longer when a save is slow)
_CHECK = 1.0  # seconds between two looks for a change
_CHUNK = 500  # rows encoded per json.dumps call: other threads run between two calls
_COMPACT = (",", ":")


class Table:
    """Records (dicts) written as ``[{"keys": [...], "rows": [[...], ...]}, ...]``."""

    __slots__ = ("records",)

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.records = list(records)


def records(groups: Any) -> list[dict[str, Any]]:
    """The records of a :class:`Table` as read back from the file (``ValueError`` if it is
    not one), in the order they were written within each set of keys."""
    if not isinstance(groups, list):
        raise ValueError("a table is not a list")
    out: list[dict[str, Any]] = []
    for group in groups:
        keys, rows = group["keys"], group["rows"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("a table's keys are not a list of strings")
        for row in rows:
            if not isinstance(row, list) or len(row) != len(keys):
                raise ValueError("a table's row does not match its keys")
            out.append(dict(zip(keys, row, strict=True)))
    return out


class CloudKeeper:
    """The file one simulated cloud is kept in; see the module's docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: SimSettings,
        *,
        interval: float = SAVE_INTERVAL,
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self.interval = interval
        self.last_save: tuple[float, int] | None = None  # (seconds, bytes) of the latest save
        self._snapshot: Callable[[], dict[str, Any]] | None = None
        self._changes: Callable[[], object] | None = None
        self._saved: object = None  # what _changes() said when the file was last written
        self._next = 0.0  # time.monotonic() before which no periodic save starts
        self._failing = ""  # why the latest save failed ("" if it did not)
        self._lock = threading.Lock()  # one save at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ loading
    def load(self) -> dict[str, Any] | None:
        """The kept cloud (the file's object) if there is one this configuration can use.
        None: there is none (a fresh cloud then), or it could not be used, which
        :meth:`reject` has said and moved aside."""
        self._remove_temporaries()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            LOG.info("no simulated cloud kept in %s: making a fresh one", self.path)
            return None
        except OSError as exc:
            self.reject(f"it cannot be read ({exc.strerror or exc})")
            return None
        try:
            doc = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self.reject(f"it is not valid JSON, truncated or corrupt ({exc})")
            return None
        reason = self._unusable(doc)
        if reason:
            self.reject(reason)
            return None
        return dict(doc)

    def _unusable(self, doc: Any) -> str:
        """Why this configuration cannot use ``doc`` ("" if it can)."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return f'it is not an astara-sim cloud file (no "format": "{FORMAT}")'
        if doc.get("version") != VERSION:
            return (
                f"it is in version {doc.get('version')!r} of the file format; this astara-sim"
                f" reads version {VERSION}"
            )
        made = doc.get("settings")
        if not isinstance(made, dict):
            return 'it has no "settings" object'
        for key in MATCHING:
            then, now = made.get(key), getattr(self.settings, key)
            if _network(then) != _network(now):
                return f"it was made with [sim] {key} = {then}, and the configuration says {now}"
        return ""

    def reject(self, reason: str) -> None:
        """Say why the kept cloud cannot be used and move its file aside
        (``<name>.bad-<UTC time>``) so that a fresh cloud is kept in its place."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.bad-{stamp}")
        for n in range(1, 100):
            if not aside.exists():
                break
            aside = self.path.with_name(f"{self.path.name}.bad-{stamp}-{n}")
        try:
            if self.path.is_dir():  # somebody's folder: left where it is
                raise IsADirectoryError(21, "it is a directory")
            os.replace(self.path, aside)
        except OSError as exc:
            where = f"it could not be moved aside to {aside} ({exc.strerror or exc})"
        else:
            where = f"moved aside to {aside}"
        LOG.warning(
            "the simulated cloud kept in %s cannot be used: %s; %s; starting a fresh cloud",
            self.path,
            reason,
            where,
        )

    # ------------------------------------------------------------------ saving
    def start(
        self,
        snapshot: Callable[[], dict[str, Any]],
        changes: Callable[[], object],
        *,
        saved: bool = False,
    ) -> None:
        """Keep the cloud from now on: ``snapshot()`` is what is written, ``changes()`` a
        value that differs whenever the cloud changed since (``saved``: the file already holds
        the cloud as it is, as after a load)."""
        self._snapshot, self._changes = snapshot, changes
        self._saved = changes() if saved else None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the periodic saves and save a last time if the cloud changed (nothing if
        :meth:`start` was not called: a simulator that never loaded overwrites nothing)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        if self.save():
            took, size = self.last_save or (0.0, 0)
            LOG.info("simulated cloud kept in %s (%d bytes, %.2f s)", self.path, size, took)
        elif not self._failing:  # (a failed save has said so)
            LOG.info("simulated cloud kept in %s (unchanged since its last save)", self.path)

    def save(self) -> bool:
        """Write the cloud now if it changed since the file was last written; True if it was."""
        snapshot, changes = self._snapshot, self._changes
        if snapshot is None or changes is None:
            return False
        with self._lock:
            mark = changes()
            if mark == self._saved:
                return False
            started = time.monotonic()
            try:
                with no_collector():
                    size = self.write(snapshot())
            except OSError as exc:
                reason = str(exc.strerror or exc)
                if reason != self._failing:
                    LOG.warning(
                        "cannot keep the simulated cloud in %s: %s; trying again", self.path, reason
                    )
                self._failing = reason
                self._next = time.monotonic() + self.interval
                return False
            took = time.monotonic() - started
            if self._failing:
                LOG.info("the simulated cloud is kept in %s again", self.path)
                self._failing = ""
            self._saved, self.last_save = mark, (took, size)
            self._next = time.monotonic() + max(self.interval, 10 * took)
            return True

    def write(self, state: Mapping[str, Any]) -> int:
        """Write ``state`` (with the format's header) to the file, atomically; its size."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": {key: getattr(self.settings, key) for key in MATCHING},
            **state,
        }
        folder = self.path.parent
        if not folder.exists():
            secure_dir(folder)  # a folder of ours is owner-only; an existing one is left as is
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, PRIVATE_FILE)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                _write(out, doc)
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _sync_folder(folder)
        return size

    def _run(self) -> None:
        while not self._stop.wait(_CHECK):
            if time.monotonic() < self._next:
                continue
            try:
                self.save()
            except Exception:  # a bug: said with its traceback, and the next save is tried
                LOG.exception("saving the simulated cloud to %s failed", self.path)
                self._next = time.monotonic() + self.interval

    def _remove_temporaries(self) -> None:
        """Temporary files of saves a crash interrupted."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


@contextlib.contextmanager
def no_collector() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile: a snapshot and its encoding (or a
    load) make hundreds of thousands of containers and no cycle, and each full collection
    they trigger walks the whole heap for nothing (at 10,000 routers: 3.6 s for a save
    instead of 1.3 s). Back on after, if it was on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _network(value: Any) -> str | None:
    try:
        return str(ipaddress.ip_network(str(value)))
    except ValueError:
        return None


def _write(out: IO[str], value: Any) -> None:
    """``value`` as JSON: a :class:`Table` in columns, a big one in several calls."""
    if isinstance(value, Table):
        _write_table(out, value.records)
    elif isinstance(value, dict) and any(isinstance(v, Table | dict) for v in value.values()):
        out.write("{")
        for n, (key, item) in enumerate(value.items()):
            out.write(("," if n else "") + json.dumps(str(key)) + ":")
            _write(out, item)
        out.write("}")
    else:
        out.write(json.dumps(value, separators=_COMPACT))


def _write_table(out: IO[str], rows_of: list[Mapping[str, Any]]) -> None:
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for record in rows_of:
        groups.setdefault(tuple(record), []).append(list(record.values()))
    out.write("[")
    for n, (keys, rows) in enumerate(groups.items()):
        out.write(("," if n else "") + '{"keys":' + json.dumps(list(keys)) + ',"rows":[')
        for start in range(0, len(rows), _CHUNK):
            chunk = json.dumps(rows[start : start + _CHUNK], separators=_COMPACT)
            out.write(("," if start else "") + chunk[1:-1])
        out.write("]}")
    out.write("]")


def _sync_folder(folder: Path) -> None:
    """fsync the folder, so that the rename itself survives a crash."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
