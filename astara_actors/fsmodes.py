"""Owner-only state on disk: directories 0700, files 0600, whatever the umask.

The state directory holds the SQLite store (debug flags and the audit trail of every command),
the embedded bus (every notification and command, as files) and the API's pidfile: anyone who
can write there can forge commands or replace the database, anyone who can read there reads the
audit trail. So what we create there is created owner-only, with the mode set explicitly after
creation (a mode passed to ``mkdir``/``open`` is only ever narrowed by the umask, and an umask
such as 0277 would leave a file we cannot write), and a state directory that anyone may write
to is refused at start.

- :func:`secure_dir` — a directory (and its missing parents) 0700; the embedded bus calls it for
  its folders, the store for the database's folder.
- :func:`secure_file` — a file created (or, if ours, narrowed to) 0600 before a library opens it
  (SQLite then gives its ``-wal``/``-shm``/journal files the database file's mode).
- :func:`check_state_dir` — the start-up check: refuses a world-writable state directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from astara_actors.errors import SettingsError

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "check_state_dir", "secure_dir", "secure_file"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def secure_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` an owner-only directory: created 0700 if missing (so are its missing
    parents), narrowed to 0700 if it exists and is ours. Returns it as a ``Path``."""
    target = Path(path)
    missing: list[Path] = []
    for folder in (target, *target.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another process
            _narrow(folder, PRIVATE_DIR)
        else:
            os.chmod(folder, PRIVATE_DIR)  # the umask may have taken more than group and other
    if not missing:
        _narrow(target, PRIVATE_DIR)
    return target


def secure_file(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` an owner-only file: created empty with 0600 if missing (its folder with
    :func:`secure_dir`), narrowed to 0600 if it exists and is ours. Returns it."""
    target = Path(path)
    if not target.parent.exists():
        secure_dir(target.parent)
    try:
        fd = os.open(
            target,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
            PRIVATE_FILE,
        )
    except FileExistsError:
        _narrow(target, PRIVATE_FILE)
    else:
        try:
            os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken more than group and other
        finally:
            os.close(fd)
    return target


def check_state_dir(
    path: str | os.PathLike[str], section: str = "orchestrator", key: str = "state_dir"
) -> None:
    """Refuse a state directory that anyone may write to (one line, naming the fix). A missing
    one is fine: it is created 0700."""
    target = Path(path)
    try:
        info = target.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SettingsError(section, key, f"cannot read {target}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise SettingsError(section, key, f"{target} is not a directory")
    if info.st_mode & stat.S_IWOTH:
        raise SettingsError(
            section,
            key,
            f"{target} is world-writable (mode {stat.S_IMODE(info.st_mode):04o}): anyone could "
            f"replace the store or forge bus messages; make it owner-only (chmod 700 {target}) "
            "or choose another directory",
        )


def _narrow(path: Path, mode: int) -> None:
    """``chmod`` to ``mode`` a path we own and that is wider (someone else's is left alone)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return
    if stat.S_IMODE(info.st_mode) & ~mode:
        os.chmod(path, mode)
