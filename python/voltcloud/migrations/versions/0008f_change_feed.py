"""the change feed's outbox (issue 11): one row per committed change other replicas must know

Revision ID: 0008f
Revises: 0004, 0005t, 0006v, 0007i
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0008f"
down_revision: str | Sequence[str] | None = ("0004", "0005t", "0006v", "0007i")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("topic", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("payload", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("origin", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_change_event_created_at", "change_event", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_change_event_created_at", table_name="change_event")
    op.drop_table("change_event")
