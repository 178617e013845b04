"""The history as one row per frame (`vehicle_frame`): encoding a frame's remediated readings into a row,
decoding a row back into readings, and writing a batch's rows.

A frame is one vehicle's readings at one data time. Its row holds each metric's value after remediation in the
metric's column, and one `(flags, repair, reason)` that most of its readings carry (usually nothing, or the
frame's gap or out-of-order flag). Only the readings that differ from that (a repaired or discarded one with
its raw value, a reading flagged alone, a metric that has no column) are spelt out in `detail`, so a clean
frame is one row of integers, and every raw value and repair can still be read back exactly.

A frame stored before (reissued data, a batch replayed after a commit that was not acked) keeps what it held:
readings of metrics it lacked are added, readings it has are kept as they were.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from voltcloud.platform.enums import Metric
from voltcloud.telemetry.models import VehicleFrame

TABLE = VehicleFrame.__table__  # type: ignore[attr-defined]
METRICS: tuple[int, ...] = tuple(int(m) for m in Metric)
METRIC_COLUMNS: tuple[str, ...] = tuple(m.name.lower() for m in Metric)
COLUMNS: tuple[str, ...] = ("vehicle_id", "time", "received_at", *METRIC_COLUMNS, "flags", "repair", "reason", "detail")
_INDEX = {metric: i for i, metric in enumerate(METRICS)}
_FIRST_METRIC = 3  # position of the first metric column in a row
_CLEAN = (0, None, None)

Row = tuple[Any, ...]  # a vehicle_frame row, in COLUMNS order


class Reading(Protocol):
    """What a frame is made of (remediation's `Cleaned`, or a `TrackRow` read back)."""

    @property
    def metric(self) -> int: ...
    @property
    def raw_value(self) -> int: ...
    @property
    def value(self) -> int | None: ...
    @property
    def flags(self) -> int: ...
    @property
    def repair(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class TrackRow:
    """One reading as the history answers it (GetVehicleTrack)."""

    time: dt.datetime
    metric: int
    raw_value: int
    value: int | None
    flags: int = 0
    repair: str | None = None
    reason: str | None = None


def encode(vehicle_id: str, time: dt.datetime, received_at: dt.datetime, readings: Iterable[Reading]) -> Row:
    """The row of one frame. A metric reported twice at one time keeps its first reading (as the per-reading
    key did)."""
    unique: dict[int, Reading] = {}
    for r in readings:
        unique.setdefault(r.metric, r)
    default = _most_common(unique.values())
    values: list[int | None] = [None] * len(METRICS)
    detail: dict[str, list[Any]] = {}
    for metric, r in unique.items():
        index = _INDEX.get(metric)
        if index is not None:
            values[index] = r.value
        if index is None or r.value is None or r.raw_value != r.value or (r.flags, r.repair, r.reason) != default:
            detail[str(metric)] = [r.raw_value, r.value, r.flags, r.repair, r.reason]
    spelt = json.dumps(detail, separators=(",", ":")) if detail else None
    return (vehicle_id, time, received_at, *values, *default, spelt)


def encode_clean(vehicle_id: str, time: dt.datetime, received_at: dt.datetime, values: dict[int, int]) -> Row:
    """The row of a frame no rule touched (remediation's `clean_frame`): values only, no detail."""
    if not values.keys() <= _INDEX.keys():  # a metric without a column is spelt out in detail
        return encode(vehicle_id, time, received_at, [TrackRow(time, m, v, v) for m, v in values.items()])
    return (vehicle_id, time, received_at, *map(values.get, METRICS), *_CLEAN, None)


def _most_common(readings: Iterable[Reading]) -> tuple[int, str | None, str | None]:
    marks = [(r.flags, r.repair, r.reason) for r in readings]
    if all(m == _CLEAN for m in marks):
        return _CLEAN
    return collections.Counter(marks).most_common(1)[0][0]


def decode(row: Sequence[Any], metrics: Iterable[int] = ()) -> list[TrackRow]:
    """The readings of one row (in COLUMNS order), by metric; only `metrics` when given."""
    time = row[1]
    flags, repair, reason, detail = row[-4:]
    spelt: dict[str, list[Any]] = json.loads(detail) if detail else {}
    wanted = set(metrics)
    out = [
        TrackRow(time, metric, value, value, flags, repair, reason)
        for metric, value in zip(METRICS, row[_FIRST_METRIC : _FIRST_METRIC + len(METRICS)], strict=True)
        if value is not None and str(metric) not in spelt and (not wanted or metric in wanted)
    ]
    for key, (raw, value, f, rep, why) in spelt.items():
        if not wanted or int(key) in wanted:
            out.append(TrackRow(time, int(key), raw, value, f, rep, why))
    out.sort(key=lambda r: r.metric)
    return out


def merge(stored: Sequence[Any], new: Row) -> Row | None:
    """A stored frame with the new frame's readings of metrics it lacks; None when nothing is added."""
    kept = decode(stored)
    have = {r.metric for r in kept}
    added = [r for r in decode(new) if r.metric not in have]
    if not added:
        return None
    return encode(stored[0], stored[1], stored[2], [*kept, *added])


async def write(connection: AsyncConnection, fresh: list[Row], maybe_stored: list[Row]) -> None:
    """Writes a batch's frames. `fresh`: frames newer than anything their vehicle's live state has seen (as
    good as never stored): on PostgreSQL one COPY, on SQLite one executemany. `maybe_stored`: frames at or
    before it (reissued, out of order, a replayed batch), merged into what is stored."""
    if maybe_stored:
        await _merge_into(connection, maybe_stored)
    if not fresh:
        return
    if connection.dialect.name == "postgresql":
        await _copy(connection, fresh)
    else:
        await _insert_tuples(connection, fresh)


async def _copy(connection: AsyncConnection, rows: list[Row]) -> None:
    """COPY on the transaction's own asyncpg connection, inside a savepoint: a frame that was stored after all
    (a fully discarded frame never moves the live state, so its replay looks fresh) undoes only the COPY, and
    the rows are merged instead."""
    import asyncpg  # type: ignore[import-untyped]

    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    try:
        async with driver.transaction():
            await driver.copy_records_to_table(TABLE.name, records=rows, columns=COLUMNS)
    except asyncpg.UniqueViolationError:
        await _merge_into(connection, rows)


_MARKS = {
    "qmark": lambda n: ", ".join("?" * n),
    "numeric_dollar": lambda n: ", ".join(f"${i + 1}" for i in range(n)),
    "format": lambda n: ", ".join(["%s"] * n),
}


async def _insert_tuples(connection: AsyncConnection, rows: list[Row]) -> None:
    """SQLite: one driver-level executemany of plain tuples (SQLAlchemy's per-row parameter handling would be
    most of the cost). Times go through the column type's dialect implementation, so they are stored in the
    one text format every query binds."""
    dialect = connection.dialect
    to_db = TABLE.c.time.type.dialect_impl(dialect).bind_processor(dialect)
    if to_db is not None:
        converted: dict[dt.datetime, Any] = {}
        for t in {r[1] for r in rows} | {r[2] for r in rows}:
            converted[t] = to_db(t)
        rows = [(r[0], converted[r[1]], converted[r[2]], *r[3:]) for r in rows]
    sql = (
        f"INSERT INTO {TABLE.name} ({', '.join(COLUMNS)}) VALUES ({_MARKS[dialect.paramstyle](len(COLUMNS))}) "
        f"ON CONFLICT (vehicle_id, time) DO NOTHING"
    )
    await connection.exec_driver_sql(sql, rows)


async def _merge_into(connection: AsyncConnection, rows: list[Row]) -> None:
    """Rows that may exist: read the stored ones, add what they lack, insert the others (rare: reissued data)."""
    keys = [(r[0], r[1]) for r in rows]
    query = sa.select(*(TABLE.c[name] for name in COLUMNS)).where(sa.tuple_(TABLE.c.vehicle_id, TABLE.c.time).in_(keys))
    stored = {(r[0], r[1]): tuple(r) for r in await connection.execute(query)}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        key = (row[0], row[1])
        old = stored.get(key)
        if old is None:
            stored[key] = row
            inserts.append(dict(zip(COLUMNS, row, strict=True)))
        elif (merged := merge(old, row)) is not None:
            stored[key] = merged
            values = dict(zip(COLUMNS, merged, strict=True))
            values["b_vehicle_id"], values["b_time"] = values.pop("vehicle_id"), values.pop("time")
            updates.append(values)
    if inserts:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        await connection.execute(insert(TABLE).on_conflict_do_nothing(), inserts)
    if updates:
        stmt = TABLE.update().where(
            TABLE.c.vehicle_id == sa.bindparam("b_vehicle_id"), TABLE.c.time == sa.bindparam("b_time")
        )
        await connection.execute(stmt, updates)
