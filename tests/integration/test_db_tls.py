"""PostgreSQL connections: no TLS on loopback unless the URL asks for it (platform/db.py asyncpg_connect_args)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from voltcloud.platform.db import Database, asyncpg_connect_args


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+asyncpg://u@127.0.0.1:5432/db", {"ssl": False}),
        ("postgresql+asyncpg://u@localhost/db", {"ssl": False}),
        ("postgresql+asyncpg://u@[::1]:5432/db", {"ssl": False}),
        ("postgresql+asyncpg://u@/db?host=/var/run/postgresql", {"ssl": False}),
        ("postgresql+asyncpg://u@db.internal:5432/db", {}),
        ("postgresql+asyncpg://u@127.0.0.1:5432/db?ssl=require", {}),
        ("postgresql+asyncpg://u@127.0.0.1:5432/db?sslmode=verify-full", {}),
        ("sqlite+aiosqlite:///x.db", {}),
    ],
)
def test_only_a_server_on_this_host_named_without_a_tls_choice_is_reached_in_clear(
    url: str, expected: dict[str, object]
) -> None:
    assert asyncpg_connect_args(url) == expected


async def _uses_tls(url: str) -> bool:
    db = Database(url)
    try:
        async with db.transaction() as session:
            row = (await session.execute(sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))).one()
            return bool(row[0])
    finally:
        await db.dispose()


async def test_a_loopback_connection_is_clear_and_a_url_asking_for_tls_gets_it(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    host = sa.engine.make_url(database_url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the test database is not on loopback")
    assert await _uses_tls(database_url) is False
    asked = sa.engine.make_url(database_url).update_query_dict({"ssl": "require"})
    try:
        assert await _uses_tls(asked.render_as_string(hide_password=False)) is True
    except (OSError, ConnectionError) as error:  # the server may have TLS off; then there is nothing to ask for
        pytest.skip(f"the server offers no TLS: {error}")
