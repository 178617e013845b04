"""Maintenance (issue 14): alarm de-dup/ack/flapping columns, the work order's closed loop (steps, timestamps,
SLA flags), SLA policies, the notification outbox and recipients' preferences.

Existing alarms get their de-dup key from their columns; existing work orders keep their states (1..6 mean
what they meant; IN_PROGRESS is read as ON_SITE).

Revision ID: 0011m
Revises: 0009fl
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0011m"
down_revision: str | Sequence[str] | None = "0009fl"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _str(name: str, length: int, *, nullable: bool = True, default: str | None = None) -> sa.Column[str]:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=nullable, server_default=default)


def _int(name: str, default: str = "0") -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False, server_default=default)


def _bool(name: str, default: bool = False) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true() if default else sa.false())


def _at(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, UtcDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.add_column(_at("acked_at"))
        batch_op.add_column(_str("acked_by", 64))
        batch_op.add_column(_str("ack_note", 1000, nullable=False, default=""))
        batch_op.add_column(_int("occurrences", "1"))
        batch_op.add_column(_at("last_seen_at"))
        batch_op.add_column(_bool("flapping"))
        batch_op.add_column(_str("dedup_key", 400, nullable=False, default=""))
        batch_op.add_column(_str("cleared_by", 64))
        batch_op.create_index(batch_op.f("ix_alarm_dedup_key"), ["dedup_key"], unique=False)
    op.execute(
        "UPDATE alarm SET last_seen_at = raised_at, dedup_key = code || '|' || coalesce(station_id, '') || '|' || "
        "coalesce(resource_id, '') || '|' || coalesce(vehicle_id, '') || '|' || coalesce(pack_id, '')"
    )
    with op.batch_alter_table("workorder", schema=None) as batch_op:
        batch_op.add_column(_str("equipment_kind", 32))
        batch_op.add_column(_str("equipment_code", 128))
        batch_op.add_column(_str("fault_code", 64))
        batch_op.add_column(_str("required_skills", 2000, nullable=False, default="[]"))
        batch_op.add_column(_str("required_certificate", 64))
        batch_op.add_column(_str("reported_by", 64))
        for name in ("assigned_at", "accepted_at", "on_site_at", "diagnosed_at", "resolved_at", "closed_at"):
            batch_op.add_column(_at(name))
        batch_op.add_column(_bool("sla_breached"))
        batch_op.add_column(_bool("sla_warned"))
        batch_op.add_column(_int("escalation_level"))
        batch_op.add_column(_int("reopen_count"))
        batch_op.add_column(_str("diagnosis", 2000, nullable=False, default=""))
        batch_op.add_column(_str("resolution", 2000, nullable=False, default=""))
        batch_op.add_column(_at("sla_due_at"))
        batch_op.add_column(_int("sla_fired"))
        batch_op.add_column(_int("sla_warn_before_s"))
        batch_op.add_column(_int("sla_escalate_after_s"))
        batch_op.create_index(batch_op.f("ix_workorder_sla_due_at"), ["sla_due_at"], unique=False)
    op.create_table(
        "work_order_step",
        _str("id", 64, nullable=False),
        _str("work_order_id", 64, nullable=False),
        _at("at", nullable=False),
        _str("actor_id", 64, nullable=False),
        _str("actor_role", 32, nullable=False),
        sa.Column("from_state", sa.Integer(), nullable=False),
        sa.Column("to_state", sa.Integer(), nullable=False),
        _str("note", 2000, nullable=False),
        _str("reason", 2000, nullable=False),
        _str("conclusion", 2000, nullable=False),
        sa.Column("lat_microdeg", sa.Integer(), nullable=True),
        sa.Column("lng_microdeg", sa.Integer(), nullable=True),
        _str("attachments", 50_000, nullable=False),
        sa.Column("percent_complete", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_work_order_step_work_order_id"), "work_order_step", ["work_order_id"], unique=False)
    op.create_table(
        "sla_policy",
        _str("id", 64, nullable=False),
        _str("operator_id", 64, nullable=False),
        _str("equipment_kind", 32, nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("respond_s", sa.Integer(), nullable=False),
        sa.Column("resolve_s", sa.Integer(), nullable=False),
        sa.Column("warn_before_s", sa.Integer(), nullable=False),
        sa.Column("escalate_after_s", sa.Integer(), nullable=False),
        sa.Column("auto_work_order", sa.Boolean(), nullable=False),
        _at("updated_at", nullable=False),
        _str("updated_by", 64, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("operator_id", "equipment_kind", "level", name="uq_sla_policy"),
    )
    op.create_table(
        "notification",
        _str("id", 64, nullable=False),
        _str("dedup_key", 300, nullable=False),
        _str("operator_id", 64),
        _str("recipient_kind", 32, nullable=False),
        _str("recipient_id", 64, nullable=False),
        _str("channel", 16, nullable=False),
        _str("address", 2048, nullable=False),
        _str("topic", 64, nullable=False),
        _str("subject", 300, nullable=False),
        _str("body", 10_000, nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _at("next_attempt_at", nullable=False),
        _at("created_at", nullable=False),
        _at("sent_at"),
        _str("last_error", 1000, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    op.create_index(op.f("ix_notification_operator_id"), "notification", ["operator_id"], unique=False)
    op.create_index(op.f("ix_notification_next_attempt_at"), "notification", ["next_attempt_at"], unique=False)
    op.create_table(
        "notification_preference",
        _str("recipient_kind", 32, nullable=False),
        _str("recipient_id", 64, nullable=False),
        _str("operator_id", 64),
        _str("email", 254, nullable=False),
        _str("phone", 32, nullable=False),
        _str("webhook_url", 2048, nullable=False),
        sa.Column("email_on", sa.Boolean(), nullable=False),
        sa.Column("sms_on", sa.Boolean(), nullable=False),
        sa.Column("webhook_on", sa.Boolean(), nullable=False),
        sa.Column("supervisor", sa.Boolean(), nullable=False),
        _at("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("recipient_kind", "recipient_id"),
    )
    op.create_index(
        op.f("ix_notification_preference_operator_id"), "notification_preference", ["operator_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("notification_preference")
    op.drop_table("notification")
    op.drop_table("sla_policy")
    op.drop_table("work_order_step")
    with op.batch_alter_table("workorder", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workorder_sla_due_at"))
        names = "sla_escalate_after_s sla_warn_before_s sla_fired sla_due_at resolution diagnosis reopen_count"
        names += " escalation_level sla_warned sla_breached closed_at resolved_at diagnosed_at on_site_at accepted_at"
        names += (
            " assigned_at reported_by required_certificate required_skills fault_code equipment_code equipment_kind"
        )
        for name in names.split():
            batch_op.drop_column(name)
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_dedup_key"))
        for name in ("cleared_by", "dedup_key", "flapping", "last_seen_at", "occurrences", "ack_note", "acked_by",
                     "acked_at"):  # fmt: skip
            batch_op.drop_column(name)
