"""Migration 0015v: history rows stored on SQLite in the driver's short time format (a whole second without
'.ffffff') are rewritten to SQLAlchemy's format, so track windows starting on that second find them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from voltcloud.platform.db import upgrade_database

ROW = "INSERT INTO vehicle_reading (vehicle_id, time, metric, value, raw_value, flags, repair, reason) VALUES "


def test_short_times_are_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    upgrade_database(f"sqlite+aiosqlite:///{path}", "0014fc")
    with sqlite3.connect(path) as db:
        db.execute(ROW + "('v', '2026-12-03 12:00:00', 1, 800, 800, 0, '', '')")
        db.execute(ROW + "('v', '2026-12-03 12:00:01.500000', 1, 790, 790, 0, '', '')")
    upgrade_database(f"sqlite+aiosqlite:///{path}", "0015v")
    with sqlite3.connect(path) as db:
        times = [t for (t,) in db.execute("SELECT time FROM vehicle_reading ORDER BY time")]
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert times == ["2026-12-03 12:00:00.000000", "2026-12-03 12:00:01.500000"] and version == "0015v"
