"""Small SQL helpers shared by the settlement modules (dialect-aware upserts, row locks)."""

from __future__ import annotations

from typing import Any

from voltcloud.platform.db import dialect, insert_ignore, is_lost_race


def for_update(stmt: Any) -> Any:
    """Locks the selected rows until commit (PostgreSQL; SQLite serialises writers) and refreshes any copy
    already in the session's identity map, so checks always see the latest committed values.

    FOR NO KEY UPDATE, not FOR UPDATE: inserting a row that references the locked one (a payment, a posting)
    takes a KEY SHARE lock on it, which FOR UPDATE would wait for, deadlocking two writers of one wallet."""
    return stmt.with_for_update(key_share=True).execution_options(populate_existing=True)


__all__ = ["dialect", "for_update", "insert_ignore", "is_lost_race"]
