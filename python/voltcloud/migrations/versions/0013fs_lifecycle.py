"""Vehicle and workforce lifecycle (issue 12): a vehicle's retirement time and reason; a mobile unit's regions
and home base

Revision ID: 0013fs
Revises: 0012e
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0013fs"
down_revision: str | Sequence[str] | None = "0012e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retired_at", UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("retire_reason", sa.String(length=200), nullable=True))
    with op.batch_alter_table("mobileunit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("regions", sa.String(length=1000), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("home_lat", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("home_lng", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mobileunit", schema=None) as batch_op:
        batch_op.drop_column("home_lng")
        batch_op.drop_column("home_lat")
        batch_op.drop_column("regions")
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        batch_op.drop_column("retire_reason")
        batch_op.drop_column("retired_at")
