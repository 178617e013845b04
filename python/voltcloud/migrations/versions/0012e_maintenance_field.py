"""Maintenance field work (issue 14, maint-field): engineers, certificates and their reminders, work-order
offers, site inspections (6S, daily reconciliation) and their items, safety incidents, battery retirement
thresholds; pack events gain the cycle count and charging power (battery health's model inputs).

Revision ID: 0012e
Revises: 0011m
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0012e"
down_revision: str | Sequence[str] | None = "0011m"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _s(name: str, length: int, nullable: bool = False, **kw: object) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), nullable=nullable, **kw)  # type: ignore[arg-type]


def _t(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, UtcDateTime(), nullable=nullable)


def _i(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "engineer",
        _s("id", 64, primary_key=True),
        _s("operator_id", 64),
        _s("name", 200),
        _s("phone", 32),
        _s("email", 200),
        _s("skills", 4000),
        _s("equipment_kinds", 1000),
        _s("regions", 8000),
        _s("shifts", 8000),
        sa.Column("home_lat", sa.Float(), nullable=False),
        sa.Column("home_lng", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lng", sa.Float(), nullable=True),
        _t("position_at", True),
        sa.Column("available", sa.Boolean(), nullable=False),
        _t("retired_at", True),
        _s("retire_reason", 200),
        _t("created_at"),
        _i("version"),
    )
    op.create_index("ix_engineer_operator_id", "engineer", ["operator_id"])
    op.create_table(
        "engineercertificate",
        _s("id", 64, primary_key=True),
        _s("engineer_id", 64),
        _s("operator_id", 64),
        _s("kind", 64),
        _s("number", 100),
        _t("issued_at"),
        _t("expires_at"),
        _t("created_at"),
    )
    op.create_index("ix_engineercertificate_engineer_id", "engineercertificate", ["engineer_id"])
    op.create_index("ix_engineercertificate_operator_id", "engineercertificate", ["operator_id"])
    op.create_table(
        "certificatereminder",
        _s("id", 64, primary_key=True),
        _s("certificate_id", 64),
        _s("engineer_id", 64),
        _s("operator_id", 64),
        _s("stage", 16),
        _t("expires_at"),
        _t("sent_at"),
        sa.UniqueConstraint("certificate_id", "stage", name="uq_certificatereminder_stage"),
    )
    op.create_index("ix_certificatereminder_certificate_id", "certificatereminder", ["certificate_id"])
    op.create_table(
        "workorderoffer",
        _s("id", 64, primary_key=True),
        _s("work_order_id", 64),
        _s("engineer_id", 64),
        _s("operator_id", 64),
        _t("offered_at"),
        _t("expires_at"),
        _i("travel_s"),
        _s("state", 16),
        _s("reason", 200),
        _t("answered_at", True),
    )
    for column in ("work_order_id", "engineer_id", "state"):
        op.create_index(f"ix_workorderoffer_{column}", "workorderoffer", [column])
    op.create_table(
        "siteinspection",
        _s("id", 64, primary_key=True),
        _s("operator_id", 64),
        _s("station_id", 64),
        _i("kind"),
        _s("business_date", 10),
        _i("score"),
        _i("max_score"),
        _s("inspector_subject", 128),
        _i("inspector_role"),
        _t("submitted_at"),
    )
    op.create_index("ix_siteinspection_operator_id", "siteinspection", ["operator_id"])
    op.create_index("ix_siteinspection_station_id", "siteinspection", ["station_id"])
    op.create_table(
        "siteinspectionitem",
        _s("id", 64, primary_key=True),
        _s("inspection_id", 64),
        _s("code", 64),
        _i("score"),
        _i("max_score"),
        sa.Column("passed", sa.Boolean(), nullable=False),
        _s("note", 200),
        _s("photo_uris", 25000),
        _s("work_order_id", 64, True),
    )
    op.create_index("ix_siteinspectionitem_inspection_id", "siteinspectionitem", ["inspection_id"])
    op.create_table(
        "safetyincident",
        _s("id", 64, primary_key=True),
        _s("operator_id", 64),
        _s("station_id", 64, True),
        _i("severity"),
        _t("occurred_at"),
        _s("description", 2000),
        _s("people", 4000),
        _s("actions", 12000),
        _s("photo_uris", 25000),
        _s("reporter_subject", 128),
        _i("reporter_role"),
        _t("reported_at"),
        _t("closed_at", True),
        _s("resolution", 2000),
        _s("closed_by", 128),
    )
    op.create_index("ix_safetyincident_operator_id", "safetyincident", ["operator_id"])
    op.create_table("batterypolicy", _s("operator_id", 64, primary_key=True), _i("retirement_soh_permille"))
    with op.batch_alter_table("packevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cycles", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("power_w", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("packevent", schema=None) as batch_op:
        batch_op.drop_column("power_w")
        batch_op.drop_column("cycles")
    for table in (
        "batterypolicy",
        "safetyincident",
        "siteinspectionitem",
        "siteinspection",
        "workorderoffer",
        "certificatereminder",
        "engineercertificate",
        "engineer",
    ):
        op.drop_table(table)
