"""FleetService (issue 12): accounts, payment modes and creation times of fleets and sub-fleets; vehicles'
plate and AC power; drivers' phone, sub-fleet, wallet and application status

Existing drivers are members (status 2, approved): the seed only ever wrote members.

Revision ID: 0009fl
Revises: 0008f
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from voltcloud.platform.db import UtcDateTime

revision: str = "0009fl"
down_revision: str | Sequence[str] | None = "0008f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("fleet", schema=None) as batch_op:
        batch_op.add_column(_id("account_id"))
        batch_op.add_column(sa.Column("created_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("subfleet", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_mode", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("credit_limit_minor", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(_id("account_id"))
        batch_op.add_column(sa.Column("created_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_ac_power_w", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("plate", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("created_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("driver", schema=None) as batch_op:
        batch_op.add_column(_id("sub_fleet_id"))
        batch_op.add_column(sa.Column("phone", sa.String(length=16), nullable=True))
        batch_op.add_column(_id("account_id"))
        batch_op.add_column(sa.Column("status", sa.Integer(), nullable=False, server_default="2"))
        batch_op.add_column(_id("applied_fleet_id"))
        batch_op.add_column(sa.Column("rejection_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("created_at", UtcDateTime(), nullable=True))
        batch_op.create_foreign_key("fk_driver_sub_fleet_id", "subfleet", ["sub_fleet_id"], ["id"])
        batch_op.create_foreign_key("fk_driver_applied_fleet_id", "fleet", ["applied_fleet_id"], ["id"])
        batch_op.create_index(batch_op.f("ix_driver_applied_fleet_id"), ["applied_fleet_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("driver", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_driver_applied_fleet_id"))
        batch_op.drop_constraint("fk_driver_applied_fleet_id", type_="foreignkey")
        batch_op.drop_constraint("fk_driver_sub_fleet_id", type_="foreignkey")
        for name in ("created_at", "rejection_reason", "applied_fleet_id", "status", "account_id", "phone"):
            batch_op.drop_column(name)
        batch_op.drop_column("sub_fleet_id")
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        for name in ("created_at", "plate", "max_ac_power_w"):
            batch_op.drop_column(name)
    with op.batch_alter_table("subfleet", schema=None) as batch_op:
        for name in ("created_at", "account_id", "credit_limit_minor", "payment_mode"):
            batch_op.drop_column(name)
    with op.batch_alter_table("fleet", schema=None) as batch_op:
        for name in ("created_at", "account_id"):
            batch_op.drop_column(name)
