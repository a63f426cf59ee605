"""Alembic migrations of the store (a package so that they install with it)."""
