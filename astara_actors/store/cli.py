"""astara-db: create and upgrade the store's schema (Alembic migrations).

Usage:
  astara-db --config-file FILE upgrade
  astara-db --config-file FILE current
  astara-db --config-file FILE history
  astara-db --config-file FILE stamp REV
  astara-db (-h | --help)

Options:
  --config-file FILE  The orchestrator's configuration file.
  -h --help           Show this help.

The database is [database] connection (an SQLAlchemy URL: sqlite:///PATH,
postgresql://USER@HOST/DB, mysql://USER@HOST/DB); empty or absent means
sqlite:///<[orchestrator] state_dir>/astara.db. The orchestrator also upgrades the
schema when it starts.

Exit status: 0 done; 1 the database refused or failed; 2 a usage error or a bad
configuration.
"""

from __future__ import annotations

import sys

from docopt import DocoptExit, docopt

from astara_actors.errors import AstaraError, SettingsError

__all__ = ["main", "database_url"]

EXIT_FAILED, EXIT_USAGE = 1, 2


def main(argv: list[str] | None = None) -> int:
    """Run one astara-db command; returns the exit status (see the usage)."""
    try:
        args = docopt(__doc__, sys.argv[1:] if argv is None else argv, default_help=False)
    except DocoptExit as exc:
        print(exc.usage, file=sys.stderr)
        return EXIT_USAGE
    if args["--help"]:
        print(__doc__.strip())
        return 0
    try:
        return _run(args)
    except AstaraError as exc:
        # One line, even when configparser's message spans several.
        print(f"astara-db: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SettingsError) else EXIT_FAILED


def database_url(config_file: str) -> str:
    """The store's URL from the configuration file ([database] connection, or the default)."""
    from astara_actors.config.ini import read_ini
    from astara_actors.store.store import default_url

    parser = read_ini(config_file)
    url = parser.get("database", "connection", fallback="").strip()
    if url:
        return url
    return default_url(parser.get("orchestrator", "state_dir", fallback="/var/lib/astara"))


def _run(args: dict) -> int:
    from astara_actors.store.store import Store

    url = database_url(args["--config-file"])
    try:
        store = Store(url)
    except AstaraError as exc:  # an unparsable URL or an unknown driver is the file's fault
        raise SettingsError("database", "connection", str(exc)) from None
    try:
        if args["history"]:
            _history()
        elif args["upgrade"]:
            store.upgrade()
            print(f"{store!r}: at revision {store.revision()} (head)")
        elif args["stamp"]:
            store.stamp(args["REV"])
            print(f"{store!r}: stamped {store.revision()}")
        else:
            print(_describe(store.revision()))
    finally:
        store.close()
    return 0


def _describe(revision: str | None) -> str:
    from alembic.script import ScriptDirectory

    from astara_actors.store.store import MIGRATIONS

    if revision is None:
        return "none (an empty database: run astara-db upgrade)"
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    return f"{revision} (head)" if revision == head else f"{revision} (head is {head})"


def _history() -> None:
    from alembic.script import ScriptDirectory

    from astara_actors.store.store import MIGRATIONS

    for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions():
        print(f"{script.down_revision or '<base>'} -> {script.revision}: {script.doc}")
