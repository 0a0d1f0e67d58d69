"""Alembic migrations: the only source of the database schema (see service.db.upgrade)."""
