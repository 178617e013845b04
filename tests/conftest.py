"""Shared fixtures: the database matrix and a real platform on an ephemeral port.

SQLite always; PostgreSQL too when VOLTCLOUD_TEST_POSTGRES_URL is set, each test session in a fresh
database of its own so concurrent runs never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from sqlalchemy.ext.asyncio import create_async_engine

POSTGRES_URL = os.environ.get("VOLTCLOUD_TEST_POSTGRES_URL")

# Property tests check behaviour, not speed: on a loaded 2-core CI machine generation and examples can be slow.
settings.register_profile("voltcloud", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("voltcloud")


def _database_params() -> list[object]:
    params: list[object] = [pytest.param("sqlite", id="sqlite")]
    if POSTGRES_URL:
        params.append(pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres))
    return params


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str | None]:
    """A throwaway PostgreSQL database for this session, dropped at the end."""
    if not POSTGRES_URL:
        yield None
        return
    base = sa.engine.make_url(POSTGRES_URL)
    name = f"vc_test_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
        await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_database: str | None) -> str:
    """Each test gets an empty schema: a new SQLite file, or the session's PostgreSQL database wiped."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'voltcloud.db'}"
    assert postgres_database is not None

    async def wipe() -> None:
        engine = create_async_engine(postgres_database, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA public"))
        await engine.dispose()

    asyncio.run(wipe())
    return postgres_database


@pytest.fixture(autouse=True)
async def no_stray_tasks() -> AsyncIterator[None]:
    """Cancels and briefly awaits tasks a test left behind (server streams, SQLAlchemy's aiosqlite
    connection-terminate tasks after Platform.stop(grace=0) cancelled a transaction), so the event loop of the
    next test starts clean and pytest-asyncio's loop teardown never waits on them."""
    yield
    current = asyncio.current_task()
    stray = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in stray:
        task.cancel()
    if stray:
        await asyncio.wait(stray, timeout=5)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `slow` (the drills) run only when asked for with `-m slow` (pyproject's marker promise)."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
