"""Alembic migrations (run by `voltcloud db upgrade` and at first start)."""
