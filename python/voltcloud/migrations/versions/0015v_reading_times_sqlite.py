"""vehicle_reading times on SQLite in SQLAlchemy's one text format

Until this revision the history insert handed SQLite a datetime through the driver, which stores a reading on
a whole second as 'YYYY-MM-DD HH:MM:SS' where every other write and every query use
'YYYY-MM-DD HH:MM:SS.ffffff'; the shorter text sorts before the longer one, so a track window starting on that
second missed the reading, and a reissue of it was not recognised as stored. This rewrites those rows. On
PostgreSQL (timestamptz) there is nothing to do.

Revision ID: 0015v
Revises: 0014fc
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015v"
down_revision: str | Sequence[str] | None = "0014fc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # OR IGNORE: a row whose long-format twin already exists stays as it was (never fails the upgrade)
    op.execute("UPDATE OR IGNORE vehicle_reading SET time = time || '.000000' WHERE length(time) = 19")


def downgrade() -> None:
    pass  # the long format is what SQLAlchemy reads and writes everywhere: nothing to undo
