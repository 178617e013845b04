"""vehicle telemetry history as one row per frame: vehicle_frame replaces vehicle_reading

A GB/T frame is ~15 readings at one time; storing each as a row made the history insert most of an ingest
batch's cost. `vehicle_frame` holds one row per (vehicle, time): each metric's value after remediation in its
own column, the flags/repair/reason most of the frame's readings carry, and `detail` (JSON) spelling out
`[raw, value, flags, repair, reason]` for each reading that differs (repaired, discarded, flagged, or a metric
without a column). The rows of `vehicle_reading` are moved here (their frame mark left clean, every reading
that is not spelt out in detail) and the table is dropped; `telemetry/frames.py` reads both shapes the same.
On PostgreSQL the table is PARTITION BY RANGE (time) as vehicle_reading was: a DEFAULT partition and monthly
ones from the month before the migration runs to 24 months after (`store.ensure_partitions` adds more).
`received_at` of a moved row is unknown: its data time stands in.

Revision ID: 0017tf
Revises: 0016gt
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0017tf"
down_revision: str | Sequence[str] | None = "0016gt"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_AHEAD = 24
# (Metric number, column) as of this revision: frozen here, the model may gain metrics later
METRICS = (
    (1, "soc_permille"), (2, "soh_permille"), (3, "temperature_milli_c"), (4, "voltage_mv"), (5, "current_ma"),
    (6, "power_w"), (7, "energy_wh"), (8, "speed_m_per_h"), (9, "odometer_m"), (10, "latitude_microdeg"),
    (11, "longitude_microdeg"), (12, "cell_voltage_max_mv"), (13, "cell_voltage_min_mv"),
    (14, "temperature_max_milli_c"), (15, "insulation_kohm"), (16, "site_power_w"),
)  # fmt: skip
_NAMES = ", ".join(name for _, name in METRICS)
_NUMBERS = ", ".join(str(number) for number, _ in METRICS)
# a reading the frame's clean mark (0, NULL, NULL) does not describe: spelt out in detail
_SPELT = (
    f"flags <> 0 OR repair IS NOT NULL OR reason IS NOT NULL OR value IS NULL OR value <> raw_value "
    f"OR metric NOT IN ({_NUMBERS})"
)


def _partitioned(table: str, *columns: sa.Column[object] | sa.PrimaryKeyConstraint) -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_table(table, *columns)
        return
    op.create_table(table, *columns, postgresql_partition_by="RANGE (time)")
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    today = dt.datetime.now(dt.UTC)
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    for _ in range(MONTHS_AHEAD + 2):
        nxt = (year + (month == 12), month % 12 + 1)
        op.execute(
            f"CREATE TABLE {table}_{year:04d}{month:02d} PARTITION OF {table} "
            f"FOR VALUES FROM ('{year:04d}-{month:02d}-01') TO ('{nxt[0]:04d}-{nxt[1]:02d}-01')"
        )
        year, month = nxt


def upgrade() -> None:
    _partitioned(
        "vehicle_frame",
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for _, name in METRICS),
        sa.Column("flags", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("repair", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("vehicle_id", "time"),
    )
    columns = ", ".join(f"MAX(CASE WHEN metric = {number} THEN value END)" for number, _ in METRICS)
    if op.get_bind().dialect.name == "postgresql":
        spelt = (
            "(jsonb_object_agg(metric::text, jsonb_build_array(raw_value, value, flags, repair, reason)) "
            f"FILTER (WHERE {_SPELT}))::text"
        )
    else:
        spelt = (
            "NULLIF(json_group_object(CAST(metric AS TEXT), json_array(raw_value, value, flags, repair, reason)) "
            f"FILTER (WHERE {_SPELT}), '{{}}')"
        )
    op.execute(
        f"INSERT INTO vehicle_frame (vehicle_id, time, received_at, {_NAMES}, flags, detail) "
        f"SELECT vehicle_id, time, time, {columns}, 0, {spelt} FROM vehicle_reading GROUP BY vehicle_id, time"
    )
    op.drop_table("vehicle_reading")  # on PostgreSQL its partitions go with it


def downgrade() -> None:
    _partitioned(
        "vehicle_reading",
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("metric", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=True),
        sa.Column("raw_value", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("repair", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("vehicle_id", "time", "metric"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    insert = "INSERT INTO vehicle_reading (vehicle_id, time, metric, value, raw_value, flags, repair, reason) "
    for number, name in METRICS:  # the readings the frame's mark describes
        unspelt = (
            f"(detail::jsonb -> '{number}') IS NULL" if postgres else f"json_extract(detail, '$.\"{number}\"') IS NULL"
        )
        op.execute(
            insert + f"SELECT vehicle_id, time, {number}, {name}, {name}, flags, repair, reason FROM vehicle_frame "
            f"WHERE {name} IS NOT NULL AND (detail IS NULL OR {unspelt})"
        )
    if postgres:
        op.execute(
            insert + "SELECT f.vehicle_id, f.time, j.key::smallint, (j.value ->> 1)::bigint, (j.value ->> 0)::bigint, "
            "(j.value ->> 2)::smallint, j.value ->> 3, j.value ->> 4 "
            "FROM vehicle_frame f, jsonb_each(f.detail::jsonb) j WHERE f.detail IS NOT NULL"
        )
    else:
        op.execute(
            insert + "SELECT f.vehicle_id, f.time, CAST(j.key AS INTEGER), json_extract(j.value, '$[1]'), "
            "json_extract(j.value, '$[0]'), json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'), "
            "json_extract(j.value, '$[4]') FROM vehicle_frame f, json_each(f.detail) j WHERE f.detail IS NOT NULL"
        )
    op.drop_table("vehicle_frame")
