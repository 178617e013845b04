"""settlement operations: order checks (abnormal orders) and offline-payment verification columns

Revision ID: 0002a
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import voltcloud.platform.db

revision: str = "0002a"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "order_check",
        sa.Column("order_id", _text(64), nullable=False),
        sa.Column("station_id", _text(64), nullable=False),
        sa.Column("connector_id", _text(64), nullable=False),
        sa.Column("vehicle_id", _text(64), nullable=False),
        sa.Column("external_session_id", _text(64), nullable=False),
        sa.Column("started_at", voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("charged_minor", sa.BigInteger(), nullable=False),
        sa.Column("expected_minor", sa.BigInteger(), nullable=False),
        sa.Column("fair_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", _text(3), nullable=False),
        sa.Column("rate_model_id", _text(64), nullable=False),
        sa.Column("rate_model_version", sa.Integer(), nullable=False),
        sa.Column("flags", _text(300), nullable=False),
        sa.Column("detail", _text(1000), nullable=False),
        sa.Column("checked_at", voltcloud.platform.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_index(op.f("ix_order_check_connector_id"), "order_check", ["connector_id"], unique=False)
    op.create_index(op.f("ix_order_check_vehicle_id"), "order_check", ["vehicle_id"], unique=False)
    op.create_index(op.f("ix_order_check_external_session_id"), "order_check", ["external_session_id"], unique=False)
    op.create_index(op.f("ix_order_check_started_at"), "order_check", ["started_at"], unique=False)
    with op.batch_alter_table("payment") as batch:
        batch.add_column(sa.Column("recorded_by", _text(120), server_default="", nullable=False))
        batch.add_column(sa.Column("verified_by", _text(120), server_default="", nullable=False))
        batch.add_column(sa.Column("verified_at", voltcloud.platform.db.UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("note", _text(300), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("payment") as batch:
        batch.drop_column("note")
        batch.drop_column("verified_at")
        batch.drop_column("verified_by")
        batch.drop_column("recorded_by")
    op.drop_index(op.f("ix_order_check_started_at"), table_name="order_check")
    op.drop_index(op.f("ix_order_check_external_session_id"), table_name="order_check")
    op.drop_index(op.f("ix_order_check_vehicle_id"), table_name="order_check")
    op.drop_index(op.f("ix_order_check_connector_id"), table_name="order_check")
    op.drop_table("order_check")
