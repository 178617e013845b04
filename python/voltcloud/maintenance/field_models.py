"""Maintenance field tables (issue 14, migration 0012e): engineers and their certificates, certificate
reminders, work-order offers to engineers, site inspections (6S, daily reconciliation), safety incidents and
the operators' battery retirement thresholds.

JSON lists are stored as text (one column, read and written whole): skills, equipment kinds, regions
([south, west, north, east] boxes), shifts ([start ISO, end ISO] windows), people, actions, photo URIs.
Enum-like columns use the protobuf numbers of voltcloud.v1."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column


class Engineer(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    operator_id: str = Field(index=True, max_length=64)
    name: str = Field(max_length=200)
    phone: str = Field(default="", max_length=32)
    email: str = Field(default="", max_length=200)
    skills: str = Field(default="[]", max_length=4000)
    equipment_kinds: str = Field(default="[]", max_length=1000)
    regions: str = Field(default="[]", max_length=8000)
    shifts: str = Field(default="[]", max_length=8000)
    home_lat: float = 0.0
    home_lng: float = 0.0
    lat: float | None = None  # last reported by the app
    lng: float | None = None
    position_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    available: bool = True
    retired_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    retire_reason: str = Field(default="", max_length=200)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    version: int = 1


class EngineerCertificate(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    engineer_id: str = Field(index=True, max_length=64)
    operator_id: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=64)
    number: str = Field(max_length=100)
    issued_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    expires_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class CertificateReminder(SQLModel, table=True):
    """One reminder per certificate and stage ("30d", "7d", "lapsed"): the unique pair makes the scheduled
    check idempotent across replicas and restarts."""

    __table_args__ = (sa.UniqueConstraint("certificate_id", "stage", name="uq_certificatereminder_stage"),)

    id: str = Field(primary_key=True, max_length=64)
    certificate_id: str = Field(index=True, max_length=64)
    engineer_id: str = Field(max_length=64)
    operator_id: str = Field(max_length=64)
    stage: str = Field(max_length=16)
    expires_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    sent_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class WorkOrderOffer(SQLModel, table=True):
    """A work order offered to an engineer: pending until accepted, declined, expired or withdrawn. The
    declined and expired ones are never offered to the same engineer again (re-dispatch skips them)."""

    id: str = Field(primary_key=True, max_length=64)
    work_order_id: str = Field(index=True, max_length=64)
    engineer_id: str = Field(index=True, max_length=64)
    operator_id: str = Field(default="", max_length=64)
    offered_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    expires_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    travel_s: int = 0
    state: str = Field(default="pending", index=True, max_length=16)
    reason: str = Field(default="", max_length=200)
    answered_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class SiteInspection(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    operator_id: str = Field(index=True, max_length=64)
    station_id: str = Field(index=True, max_length=64)
    kind: int = Field(description="SiteInspectionKind")
    business_date: str = Field(default="", max_length=10)
    score: int = 0
    max_score: int = 0
    inspector_subject: str = Field(default="", max_length=128)
    inspector_role: int = 0
    submitted_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class SiteInspectionItem(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    inspection_id: str = Field(index=True, max_length=64)
    code: str = Field(max_length=64)
    score: int = 0
    max_score: int = 0
    passed: bool = True
    note: str = Field(default="", max_length=200)
    photo_uris: str = Field(default="[]", max_length=25000)
    work_order_id: str | None = Field(default=None, max_length=64)


class SafetyIncident(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    operator_id: str = Field(index=True, max_length=64)
    station_id: str | None = Field(default=None, max_length=64)
    severity: int = Field(description="IncidentSeverity")
    occurred_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    description: str = Field(max_length=2000)
    people: str = Field(default="[]", max_length=4000)
    actions: str = Field(default="[]", max_length=12000)
    photo_uris: str = Field(default="[]", max_length=25000)
    reporter_subject: str = Field(default="", max_length=128)
    reporter_role: int = 0
    reported_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    closed_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    resolution: str = Field(default="", max_length=2000)
    closed_by: str = Field(default="", max_length=128)


class BatteryPolicy(SQLModel, table=True):
    """An operator's pack retirement threshold (SOH permille); 800 when the operator has no row."""

    operator_id: str = Field(primary_key=True, max_length=64)
    retirement_soh_permille: int = 800
