"""The real services some tests need (RabbitMQ, Redis, PostgreSQL, MariaDB): where they are,
and what a test does when one is missing.

Such tests carry the ``services`` marker (``tests/conftest.py`` adds it to every test using a
service fixture); ``make test-unit`` leaves them out.
"""

from __future__ import annotations

import os
from typing import NoReturn

__all__ = ["MYSQL_URL", "PG_URL", "RABBIT_URL", "REDIS_URL", "unavailable"]

RABBIT_URL = os.environ.get("ASTARA_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("ASTARA_TEST_REDIS_URL", "redis://127.0.0.1:6379")
PG_URL = os.environ.get("ASTARA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("ASTARA_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def unavailable(reason: str) -> NoReturn:
    """Fail under ``CI=true`` (where every service must be there), skip on a developer's
    machine."""
    import pytest  # only ever called from a test

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)
