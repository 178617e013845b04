"""Care for drivers (issue 12): complaints, feedback, reminder settings on the customer profile; an order's
coupon code

Revision ID: 0014fc
Revises: 0013fs
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0014fc"
down_revision: str | Sequence[str] | None = "0013fs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _str(name: str, length: int, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "complaint",
        _str("id", 64),
        _str("order_id", 64),
        _str("filed_by", 128),
        _str("fleet_id", 64, nullable=True),
        _str("operator_id", 64, nullable=True),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence_uris", sa.Text(), nullable=False),
        sa.Column("refund_minor", sa.Integer(), nullable=False),
        _str("currency", 3),
        _str("refund_entry_id", 64, nullable=True),
        _str("review_reason", 500),
        _str("reviewed_by", 128, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("reviewed_at", UtcDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["powerup_order.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("order_id", "filed_by", "fleet_id", "operator_id", "state"):
        op.create_index(f"ix_complaint_{column}", "complaint", [column])
    op.create_table(
        "feedback",
        _str("id", 64),
        _str("submitted_by", 128),
        _str("operator_id", 64, nullable=True),
        _str("station_id", 64, nullable=True),
        _str("order_id", 64, nullable=True),
        _str("category", 100),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("submitted_by", "operator_id"):
        op.create_index(f"ix_feedback_{column}", "feedback", [column])
    with op.batch_alter_table("customerprofile", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("low_battery_reminder_permille", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("fatigue_limit_minutes", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("powerup_order", schema=None) as batch_op:
        batch_op.add_column(_str("coupon_code", 64, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("powerup_order", schema=None) as batch_op:
        batch_op.drop_column("coupon_code")
    with op.batch_alter_table("customerprofile", schema=None) as batch_op:
        batch_op.drop_column("fatigue_limit_minutes")
        batch_op.drop_column("low_battery_reminder_permille")
    op.drop_table("feedback")
    op.drop_table("complaint")
