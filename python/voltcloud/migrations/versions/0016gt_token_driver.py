"""charging_token.driver_id: the fleet driver a fleet's card was issued to

A fleet card issued to a driver (IssueChargingToken with driver_id) must stop working when that driver is
suspended or removed from the fleet (issue 12): the authorisation rule needs to know whose card it is. Cards
issued for a vehicle only (no driver) keep NULL and answer to the vehicle alone.

Revision ID: 0016gt
Revises: 0015v
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016gt"
down_revision: str | Sequence[str] | None = "0015v"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("charging_token") as batch:
        batch.add_column(sa.Column("driver_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("charging_token") as batch:
        batch.drop_column("driver_id")
