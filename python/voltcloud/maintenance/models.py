"""Minimal maintenance tables: alarms and work orders (opened by station inspections and alarms).

Enum-like columns use the protobuf numbers of voltcloud.v1 (AlarmLevel, AlarmState, WorkOrderState,
WorkOrderSource, AlarmSource)."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column


class Alarm(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    source: int = Field(description="AlarmSource")
    level: int = Field(description="AlarmLevel")
    state: int = Field(default=1, description="AlarmState: 1 raised")
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    station_id: str | None = Field(default=None, index=True, max_length=64)
    resource_id: str | None = Field(default=None, max_length=64)
    vehicle_id: str | None = Field(default=None, max_length=64)
    pack_id: str | None = Field(default=None, index=True, max_length=64)
    code: str = Field(default="", max_length=64)
    message: str = Field(default="", max_length=1000)
    raised_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    cleared_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    work_order_id: str | None = Field(default=None, max_length=64)


class WorkOrder(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    source: int = Field(description="WorkOrderSource")
    level: int = Field(description="AlarmLevel")
    state: int = Field(default=1, description="WorkOrderState: 1 open")
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    station_id: str | None = Field(default=None, index=True, max_length=64)
    resource_id: str | None = Field(default=None, max_length=64)
    pack_id: str | None = Field(default=None, index=True, max_length=64)
    alarm_id: str | None = Field(default=None, max_length=64)
    engineer_id: str | None = Field(default=None, max_length=64)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    respond_by: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    resolve_by: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    version: int = Field(default=1)
