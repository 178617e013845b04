"""Autogenerates an Alembic revision against a scratch SQLite database upgraded to head.

Usage: python scripts/new_migration.py REV_ID "message"
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from voltcloud.platform.db import alembic_config, upgrade_database


def main() -> None:
    rev_id, message = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'scratch.db'}"
        upgrade_database(url)
        command.revision(alembic_config(url), message=message, autogenerate=True, rev_id=rev_id)


if __name__ == "__main__":
    main()
