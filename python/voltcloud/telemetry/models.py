"""Tables of vehicle telemetry: the history, the live state, the alerts and a fleet's alert limits.

`vehicle_frame` is the history, one row per frame (vehicle, data time): every reading's value after
remediation, and for the readings remediation touched their raw value beside it (never overwritten). On
PostgreSQL it is partitioned by month of `time` (migration 0017tf; `store.ensure_partitions` adds months
ahead); on SQLite it is a plain table. Its key (vehicle, time) makes a frame reissued twice one row.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column


class VehicleFrame(SQLModel, table=True):
    """One row per frame: a vehicle's readings at one data time, each metric a column holding its value after
    remediation (NULL: not reported, or discarded). `flags`/`repair`/`reason` are what most of the frame's
    readings carry (usually nothing); `detail` (JSON, NULL when empty) holds, per metric, `[raw, value, flags,
    repair, reason]` for every reading that differs from that: a repaired or discarded reading keeps its raw
    value there, and a metric without a column (not one of `Metric`) lives only there. See `frames.py`."""

    __tablename__ = "vehicle_frame"

    vehicle_id: str = Field(primary_key=True, max_length=64)
    time: dt.datetime = Field(sa_column=utc_column(primary_key=True, nullable=False))
    received_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    soc_permille: int | None = Field(default=None, sa_type=sa.BigInteger)
    soh_permille: int | None = Field(default=None, sa_type=sa.BigInteger)
    temperature_milli_c: int | None = Field(default=None, sa_type=sa.BigInteger)
    voltage_mv: int | None = Field(default=None, sa_type=sa.BigInteger)
    current_ma: int | None = Field(default=None, sa_type=sa.BigInteger)
    power_w: int | None = Field(default=None, sa_type=sa.BigInteger)
    energy_wh: int | None = Field(default=None, sa_type=sa.BigInteger)
    speed_m_per_h: int | None = Field(default=None, sa_type=sa.BigInteger)
    odometer_m: int | None = Field(default=None, sa_type=sa.BigInteger)
    latitude_microdeg: int | None = Field(default=None, sa_type=sa.BigInteger)
    longitude_microdeg: int | None = Field(default=None, sa_type=sa.BigInteger)
    cell_voltage_max_mv: int | None = Field(default=None, sa_type=sa.BigInteger)
    cell_voltage_min_mv: int | None = Field(default=None, sa_type=sa.BigInteger)
    temperature_max_milli_c: int | None = Field(default=None, sa_type=sa.BigInteger)
    insulation_kohm: int | None = Field(default=None, sa_type=sa.BigInteger)
    site_power_w: int | None = Field(default=None, sa_type=sa.BigInteger)
    flags: int = Field(default=0, sa_type=sa.SmallInteger, description="ReadingFlag bits of most readings")
    repair: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=200)
    detail: str | None = Field(default=None, sa_type=sa.Text, description="JSON: the readings that differ")


class VehicleLiveState(SQLModel, table=True):
    """The newest known state of a vehicle. Moves only forward in reading time; `version` counts changes."""

    __tablename__ = "vehicle_live_state"

    vehicle_id: str = Field(primary_key=True, max_length=64)
    reading_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    lat_microdeg: int | None = Field(default=None, sa_type=sa.BigInteger)
    lng_microdeg: int | None = Field(default=None, sa_type=sa.BigInteger)
    position_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    speed_m_per_h: int = Field(default=0, sa_type=sa.BigInteger)
    soc_permille: int | None = Field(default=None)
    soc_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    odometer_m: int | None = Field(default=None, sa_type=sa.BigInteger)
    odometer_changed_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    voltage_mv: int | None = Field(default=None, sa_type=sa.BigInteger)
    current_ma: int | None = Field(default=None, sa_type=sa.BigInteger)
    max_temperature_milli_c: int | None = Field(default=None, sa_type=sa.BigInteger)
    insulation_kohm: int | None = Field(default=None, sa_type=sa.BigInteger)
    charging: bool = Field(default=False)
    alarm_level: int = Field(default=0)
    alarm_codes: str = Field(default="", max_length=1000, description="comma-separated GB/T alarm codes raised")
    driver_id: str | None = Field(default=None, max_length=64)
    # Fatigue: when the current stretch of driving began, and when the vehicle last stopped (None: moving).
    driving_since: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    stopped_since: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # Remediation: a rejected spike, kept so that a second reading at the new level confirms a real step.
    suspect_soc: int | None = Field(default=None)
    suspect_lat: int | None = Field(default=None, sa_type=sa.BigInteger)
    suspect_lng: int | None = Field(default=None, sa_type=sa.BigInteger)
    updated_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    version: int = Field(default=1, sa_type=sa.BigInteger)


class VehicleAlert(SQLModel, table=True):
    """A driving alert. `open_key` ("<vehicle>:<kind>[:<code>]") is set while open and unique, so there is
    one open alert per kind per vehicle (per code for vehicle alarms) until it clears."""

    __tablename__ = "vehicle_alert"

    id: str = Field(primary_key=True, max_length=64)
    vehicle_id: str = Field(index=True, max_length=64)
    fleet_id: str | None = Field(default=None, index=True, max_length=64)
    kind: int = Field(description="VehicleAlertKind")
    level: int = Field(description="AlarmLevel")
    open_key: str | None = Field(default=None, unique=True, max_length=150)
    opened_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    cleared_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    message: str = Field(default="", max_length=200)
    detail: str = Field(default="{}", description="JSON: speed, limit, driving_s, soc, code, power_up")
    driver_id: str | None = Field(default=None, max_length=64)


class FleetAlertLimits(SQLModel, table=True):
    """A fleet's own alert limits; a missing row or a None column takes the platform's default (Settings)."""

    __tablename__ = "fleet_alert_limits"

    fleet_id: str = Field(primary_key=True, max_length=64)
    speed_limit_m_per_h: int | None = Field(default=None)
    fatigue_drive_s: int | None = Field(default=None)
    fatigue_rest_s: int | None = Field(default=None)
    low_soc_permille: int | None = Field(default=None)
