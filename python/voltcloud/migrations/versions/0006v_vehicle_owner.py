"""vehicle.owner_driver_id: the registered owner of a private car (issue 9, finding 3)

Existing private cars get the one driver registered to drive them (driver.vehicle_id) as their owner, which is
what the demo seed has always meant by a private car's driver.

Revision ID: 0006v
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006v"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_driver_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_vehicle_owner_driver_id"), ["owner_driver_id"], unique=False)
    op.execute(
        "UPDATE vehicle SET owner_driver_id = ("
        " SELECT MIN(driver.id) FROM driver WHERE driver.vehicle_id = vehicle.id AND driver.fleet_id IS NULL"
        ") WHERE vehicle.fleet_id IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("vehicle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vehicle_owner_driver_id"))
        batch_op.drop_column("owner_driver_id")
