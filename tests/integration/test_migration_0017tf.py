"""Migration 0017tf: the per-reading history (vehicle_reading) moves into one row per frame (vehicle_frame) and
reads back reading for reading (raw beside value, flags, repair, reason; a metric without a column too); the
downgrade restores the same rows. SQLite and PostgreSQL (partitioned)."""

from __future__ import annotations

import asyncio
import datetime as dt

import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from voltcloud.platform.db import UtcDateTime, alembic_config, upgrade_database
from voltcloud.platform.enums import ReadingFlag
from voltcloud.telemetry import frames
from voltcloud.telemetry.frames import TrackRow

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=10)
SPIKE, RANGE, LATE = int(ReadingFlag.SPIKE), int(ReadingFlag.OUT_OF_RANGE), int(ReadingFlag.OUT_OF_ORDER)
# (vehicle, time, metric, value, raw, flags, repair, reason)
READINGS = [
    ("v1", T0, 1, 800, 800, 0, None, None),
    ("v1", T0, 8, 60_000, 60_000, 0, None, None),
    ("v1", T0, 99, 5, 5, 0, None, None),  # a metric without a column
    ("v1", T1, 1, 800, 200, SPIKE, "hold_last", "SOC jumped -600 permille in 10 s"),
    ("v1", T1, 10, None, 95_000_000, RANGE, "discard", "outside -90000000..90000000"),
    ("v1", T1, 9, 1_000, 1_000, 0, None, None),
    ("v2", T0, 1, 500, 500, LATE, None, "older than 2026-12-03T13:00:00+00:00"),
    ("v2", T0, 9, 7, 7, 0, "", ""),  # empty texts as an older writer stored them
]
READING = sa.table(
    "vehicle_reading",
    *(sa.column(n) for n in ("vehicle_id", "metric", "value", "raw_value", "flags", "repair", "reason")),
    sa.column("time", UtcDateTime()),
)
NAMES = ("vehicle_id", "time", "metric", "value", "raw_value", "flags", "repair", "reason")


async def test_readings_move_into_frames_and_back(database_url: str) -> None:
    await asyncio.to_thread(upgrade_database, database_url, "0016gt")
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(READING), [dict(zip(NAMES, r, strict=True)) for r in READINGS])
        await asyncio.to_thread(upgrade_database, database_url, "0017tf")
        async with engine.connect() as conn:
            rows = list(await conn.execute(sa.select(*(frames.TABLE.c[n] for n in frames.COLUMNS))))
            (version,) = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).one()
        assert version == "0017tf" and len(rows) == 3  # one row per (vehicle, time)
        read = {(row[0], r) for row in rows for r in frames.decode(row)}
        assert read == {(v, TrackRow(t, m, raw, value, f, rep, why)) for v, t, m, value, raw, f, rep, why in READINGS}
        assert {row[1]: row[frames.COLUMNS.index("soc_permille")] for row in rows if row[0] == "v1"} == {
            T0: 800,
            T1: 800,
        }
        await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0016gt")
        async with engine.connect() as conn:
            back = set(await conn.execute(sa.select(*(READING.c[n] for n in NAMES))))
        assert back == set(READINGS)
    finally:
        await engine.dispose()
