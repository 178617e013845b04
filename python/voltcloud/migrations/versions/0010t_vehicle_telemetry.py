"""vehicle telemetry (issue 13): the reading history (partitioned by month on PostgreSQL), the live state,
driving alerts and a fleet's alert limits

On PostgreSQL `vehicle_reading` is PARTITION BY RANGE (time): a DEFAULT partition (so no reading is ever
refused) and monthly partitions from the month before the migration runs to 24 months after it;
`telemetry.store.ensure_partitions` adds further months at every platform start. On SQLite it is a plain
table whose primary key (vehicle_id, time, metric) is the (vehicle_id, time) index the track queries use.

Revision ID: 0010t
Revises: 0009fl
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0010t"
down_revision: str | Sequence[str] | None = "0009fl"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_AHEAD = 24


def _s(name: str, length: int, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _big(name: str, nullable: bool = True) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _readings() -> None:
    columns = [
        _s("vehicle_id", 64, False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("metric", sa.SmallInteger(), nullable=False),
        _big("value"),
        _big("raw_value", False),
        sa.Column("flags", sa.SmallInteger(), nullable=False, server_default="0"),
        _s("repair", 16),
        _s("reason", 200),
        sa.PrimaryKeyConstraint("vehicle_id", "time", "metric"),
    ]
    if op.get_bind().dialect.name != "postgresql":
        op.create_table("vehicle_reading", *columns)
        return
    op.create_table("vehicle_reading", *columns, postgresql_partition_by="RANGE (time)")
    op.execute("CREATE TABLE vehicle_reading_default PARTITION OF vehicle_reading DEFAULT")
    today = dt.datetime.now(dt.UTC)
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    for _ in range(MONTHS_AHEAD + 2):
        nxt = (year + (month == 12), month % 12 + 1)
        op.execute(
            f"CREATE TABLE vehicle_reading_{year:04d}{month:02d} PARTITION OF vehicle_reading "
            f"FOR VALUES FROM ('{year:04d}-{month:02d}-01') TO ('{nxt[0]:04d}-{nxt[1]:02d}-01')"
        )
        year, month = nxt


def upgrade() -> None:
    _readings()
    op.create_table(
        "vehicle_live_state",
        _s("vehicle_id", 64, False),
        sa.Column("reading_at", UtcDateTime(), nullable=False),
        _big("lat_microdeg"),
        _big("lng_microdeg"),
        sa.Column("position_at", UtcDateTime(), nullable=True),
        _big("speed_m_per_h", False),
        sa.Column("soc_permille", sa.Integer(), nullable=True),
        sa.Column("soc_at", UtcDateTime(), nullable=True),
        _big("odometer_m"),
        sa.Column("odometer_changed_at", UtcDateTime(), nullable=True),
        _big("voltage_mv"),
        _big("current_ma"),
        _big("max_temperature_milli_c"),
        _big("insulation_kohm"),
        sa.Column("charging", sa.Boolean(), nullable=False),
        sa.Column("alarm_level", sa.Integer(), nullable=False),
        _s("alarm_codes", 1000, False),
        _s("driver_id", 64),
        sa.Column("driving_since", UtcDateTime(), nullable=True),
        sa.Column("stopped_since", UtcDateTime(), nullable=True),
        sa.Column("suspect_soc", sa.Integer(), nullable=True),
        _big("suspect_lat"),
        _big("suspect_lng"),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        _big("version", False),
        sa.PrimaryKeyConstraint("vehicle_id"),
    )
    op.create_table(
        "vehicle_alert",
        _s("id", 64, False),
        _s("vehicle_id", 64, False),
        _s("fleet_id", 64),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        _s("open_key", 150),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("cleared_at", UtcDateTime(), nullable=True),
        _s("message", 200, False),
        sa.Column("detail", sa.String(), nullable=False),
        _s("driver_id", 64),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_vehicle_alert_vehicle_id", "vehicle_alert", ["vehicle_id"])
    op.create_index("ix_vehicle_alert_fleet_id", "vehicle_alert", ["fleet_id"])
    op.create_index("ix_vehicle_alert_open_key", "vehicle_alert", ["open_key"], unique=True)
    op.create_table(
        "fleet_alert_limits",
        _s("fleet_id", 64, False),
        sa.Column("speed_limit_m_per_h", sa.Integer(), nullable=True),
        sa.Column("fatigue_drive_s", sa.Integer(), nullable=True),
        sa.Column("fatigue_rest_s", sa.Integer(), nullable=True),
        sa.Column("low_soc_permille", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("fleet_id"),
    )


def downgrade() -> None:
    op.drop_table("fleet_alert_limits")
    op.drop_index("ix_vehicle_alert_open_key", table_name="vehicle_alert")
    op.drop_index("ix_vehicle_alert_fleet_id", table_name="vehicle_alert")
    op.drop_index("ix_vehicle_alert_vehicle_id", table_name="vehicle_alert")
    op.drop_table("vehicle_alert")
    op.drop_table("vehicle_live_state")
    op.drop_table("vehicle_reading")  # on PostgreSQL its partitions go with it
