"""Tables of the mobile workforce's work: tasks and their steps (the units themselves are stations'
inventory: `stations.models.MobileUnit`)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column

_task_version = sa.Column("version", sa.Integer, nullable=False)


class Task(SQLModel, table=True):
    """A unit of work for a specialist or a van (TaskKind, TaskState as in dispatch.proto). Versioned like
    orders: a concurrent change of the same task fails with StaleDataError (ABORTED)."""

    __mapper_args__: ClassVar[Any] = {"version_id_col": _task_version}

    id: str = Field(primary_key=True, max_length=64)
    kind: int
    state: int = Field(index=True)
    order_id: str | None = Field(default=None, index=True, max_length=64)
    operator_id: str = Field(foreign_key="operator.id", index=True, max_length=64)
    unit_id: str | None = Field(default=None, index=True, max_length=64, description="Assigned specialist/van")
    vehicle_id: str | None = Field(default=None, max_length=64)
    energy_wh: int = 0
    notes: str = Field(default="", max_length=500)
    offered_to: str | None = Field(default=None, max_length=64)
    offer_expires_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    declined_by: str = Field(default="[]", sa_column=sa.Column(sa.Text(), nullable=False))
    attempts: int = 0
    version: int = Field(default=1, sa_column=_task_version)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class TaskStep(SQLModel, table=True):
    """One stop of a task's route with its outcome and proof references (photo URIs)."""

    task_id: str = Field(foreign_key="task.id", primary_key=True, max_length=64)
    index: int = Field(primary_key=True)
    kind: int
    lat: float
    lng: float
    station_id: str | None = Field(default=None, max_length=64)
    window_start: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    window_end: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    planned_arrival: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    service_s: int = 0
    status: int = 1
    status_time: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    note: str = Field(default="", max_length=500)
    proof_refs: str = Field(default="[]", sa_column=sa.Column(sa.Text(), nullable=False))
    energy_wh: int = 0
