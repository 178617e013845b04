"""Maintenance tables: alarms, work orders and their steps, SLA policies, the notification outbox and
recipients' preferences.

Enum-like columns use the protobuf numbers of voltcloud.v1 (AlarmLevel, AlarmState, WorkOrderState,
WorkOrderSource, AlarmSource). JSON lists are stored as text ("[]")."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
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
    acked_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    acked_by: str | None = Field(default=None, max_length=64)
    ack_note: str = Field(default="", max_length=1000)
    occurrences: int = Field(default=1)
    last_seen_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    flapping: bool = Field(default=False)
    # code|station|resource|vehicle|pack: "the same fault on the same equipment" for de-dup and flapping.
    dedup_key: str = Field(default="", index=True, max_length=400)
    cleared_by: str | None = Field(default=None, max_length=64)


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
    equipment_kind: str | None = Field(default=None, max_length=32)
    equipment_code: str | None = Field(default=None, max_length=128)
    fault_code: str | None = Field(default=None, max_length=64)
    required_skills: str = Field(default="[]", max_length=2000, description="JSON list")
    required_certificate: str | None = Field(default=None, max_length=64)
    reported_by: str | None = Field(default=None, max_length=64)
    assigned_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    accepted_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    on_site_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    diagnosed_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    resolved_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    closed_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    sla_breached: bool = Field(default=False)
    sla_warned: bool = Field(default=False)
    escalation_level: int = Field(default=0, description="0 none, 1 supervisor, 2 operator")
    reopen_count: int = Field(default=0)
    diagnosis: str = Field(default="", max_length=2000)
    resolution: str = Field(default="", max_length=2000)
    # The SLA timer: the next instant the scheduler must look at this order (warning or deadline); None when
    # nothing is due any more (closed, or every warning and escalation fired).
    sla_due_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True, index=True))
    # Which SLA events fired (bits, see sla.py); set with a compare-and-set so one replica fires each.
    sla_fired: int = Field(default=0)
    # Copied from the SLA policy when the order opens, so the timer needs no policy lookup.
    sla_warn_before_s: int = Field(default=0)
    sla_escalate_after_s: int = Field(default=0)


class WorkOrderStep(SQLModel, table=True):
    __tablename__ = "work_order_step"

    id: str = Field(primary_key=True, max_length=64)
    work_order_id: str = Field(index=True, max_length=64)
    at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    actor_id: str = Field(default="", max_length=64)
    actor_role: str = Field(default="", max_length=32)
    from_state: int = Field(default=0)
    to_state: int = Field(default=0)
    note: str = Field(default="", max_length=2000)
    reason: str = Field(default="", max_length=2000)
    conclusion: str = Field(default="", max_length=2000)
    lat_microdeg: int | None = Field(default=None)
    lng_microdeg: int | None = Field(default=None)
    attachments: str = Field(default="[]", max_length=50_000, description="JSON list of URIs")
    percent_complete: int | None = Field(default=None)


class SlaPolicy(SQLModel, table=True):
    """One operator's SLA for a level and an equipment kind ("" = every kind), and whether such alarms open a
    work order on their own. Missing rows fall back to `sla.DEFAULTS`."""

    __tablename__ = "sla_policy"
    __table_args__ = (sa.UniqueConstraint("operator_id", "equipment_kind", "level", name="uq_sla_policy"),)

    id: str = Field(primary_key=True, max_length=64)
    operator_id: str = Field(max_length=64)
    equipment_kind: str = Field(default="", max_length=32)
    level: int
    respond_s: int
    resolve_s: int
    warn_before_s: int
    escalate_after_s: int  # after the deadline: from the supervisor (level 1) to the operator (level 2)
    auto_work_order: bool = Field(default=True)
    updated_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    updated_by: str = Field(default="", max_length=64)


class Notification(SQLModel, table=True):
    """The notification outbox: one row per recipient and channel, written in the writer's transaction and
    delivered by the sender task (retries with backoff). `dedup_key` is unique: a second enqueue is a no-op."""

    __tablename__ = "notification"

    id: str = Field(primary_key=True, max_length=64)
    dedup_key: str = Field(max_length=300, sa_column_kwargs={"unique": True})
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    recipient_kind: str = Field(max_length=32)
    recipient_id: str = Field(max_length=64)
    channel: str = Field(max_length=16, description="email, sms, webhook, none")
    address: str = Field(default="", max_length=2048)
    topic: str = Field(max_length=64)
    subject: str = Field(max_length=300)
    body: str = Field(max_length=10_000)
    state: int = Field(default=1, description="1 pending, 2 sent, 3 failed (gave up), 4 skipped")
    attempts: int = Field(default=0)
    next_attempt_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    sent_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    last_error: str = Field(default="", max_length=1000)


class NotificationPreference(SQLModel, table=True):
    """A recipient's addresses and channels. recipient_kind: "staff" (a person of an operator, possibly a
    supervisor), "engineer", "operator" (the operator's contact)."""

    __tablename__ = "notification_preference"

    recipient_kind: str = Field(primary_key=True, max_length=32)
    recipient_id: str = Field(primary_key=True, max_length=64)
    operator_id: str | None = Field(default=None, index=True, max_length=64)
    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)
    webhook_url: str = Field(default="", max_length=2048)
    email_on: bool = Field(default=True)
    sms_on: bool = Field(default=True)
    webhook_on: bool = Field(default=True)
    supervisor: bool = Field(default=False)
    updated_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
