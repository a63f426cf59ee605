"""astara-ctl: the operator's command line and terminal browser (clients of the control protocol).

Only :func:`main` is public; ``cli`` holds the usage, ``session`` the bus side, ``render`` the
text views, ``browse`` the full-screen browser and ``ssh`` the service-VM shell.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run astara-ctl (see :mod:`astara_actors.ctl.cli`)."""
    from astara_actors.ctl.cli import main as cli_main

    return cli_main(argv)
