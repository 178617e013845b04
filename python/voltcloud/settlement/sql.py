"""Small SQL helpers shared by the settlement modules (dialect-aware upserts, row locks)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from voltcloud.platform.db import dialect, insert_ignore


def for_update(stmt: Any) -> Any:
    """Locks the selected rows until commit (PostgreSQL; SQLite serialises writers) and refreshes any copy
    already in the session's identity map, so checks always see the latest committed values.

    FOR NO KEY UPDATE, not FOR UPDATE: inserting a row that references the locked one (a payment, a posting)
    takes a KEY SHARE lock on it, which FOR UPDATE would wait for, deadlocking two writers of one wallet."""
    return stmt.with_for_update(key_share=True).execution_options(populate_existing=True)


_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available


def is_lost_race(error: BaseException) -> bool:
    """Whether a database error means a concurrent writer won (retry the transaction): a PostgreSQL
    deadlock or serialization failure, or SQLite's busy/locked."""
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    orig = error.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state is None and orig is not None:
        state = getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if state in _RETRYABLE_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "deadlock detected" in text


__all__ = ["dialect", "for_update", "insert_ignore", "is_lost_race"]
