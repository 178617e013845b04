"""Group commit (`Database.grouped`): concurrent units of work share one transaction, each in its own savepoint.

A member that fails rolls back only its own writes and gets its own error; the others commit; every caller is
answered only once its writes are committed; a group that fails as a whole runs its members again, alone.
SQLite and PostgreSQL (where group commit is off by default: asked for here)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.db import Database, is_lost_race

PROBE = sa.Table("group_probe", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("who", sa.Text))


class Refused(Exception):
    pass


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    # pool_size=1: one group transaction at a time on PostgreSQL too, so the tests can tell who waits for whom
    # group_commit=True: on PostgreSQL too (off there by default), so its savepoint semantics stay proven
    database = Database(database_url, pool_size=1, group_commit=True)
    async with database.engine.begin() as conn:
        await conn.run_sync(PROBE.metadata.create_all)
    commits: list[int] = []
    database.after_commit(lambda _info: commits.append(1))
    database.commits = commits  # type: ignore[attr-defined]
    yield database
    await database.dispose()


async def _ids(db: Database) -> set[int]:
    async with db.transaction() as session:
        return {row[0] for row in await (await session.connection()).execute(sa.select(PROBE.c.id))}


def _writer(n: int, *, refuse: bool = False) -> Any:
    async def work(session: AsyncSession) -> int:
        connection = await session.connection()
        await connection.execute(PROBE.insert(), [{"id": n * 10, "who": f"m{n}"}, {"id": n * 10 + 1, "who": f"m{n}"}])
        if refuse:
            raise Refused(f"member {n} refuses after writing")
        return n

    return work


async def test_a_refusing_member_rolls_back_alone_and_the_others_commit_in_one_transaction(db: Database) -> None:
    # One blocker first, so the others arrive while its transaction runs and are gathered into one group.
    gate = asyncio.Event()

    async def blocker(session: AsyncSession) -> str:
        await gate.wait()
        return "blocker"

    first = asyncio.create_task(db.grouped("t", blocker))
    await asyncio.sleep(0.05)
    members = [asyncio.create_task(db.grouped("t", _writer(n, refuse=(n == 3)))) for n in range(1, 7)]
    await asyncio.sleep(0.05)
    assert not any(m.done() for m in members)  # queued behind the running transaction
    commits_before = len(db.commits)  # type: ignore[attr-defined]
    gate.set()
    assert await first == "blocker"
    outcomes = await asyncio.gather(*members, return_exceptions=True)
    assert outcomes[:2] == [1, 2] and outcomes[3:] == [4, 5, 6]
    assert isinstance(outcomes[2], Refused) and "member 3" in str(outcomes[2])
    # the blocker's transaction, then one for the six members
    assert len(db.commits) - commits_before == 2  # type: ignore[attr-defined]
    assert await _ids(db) == {n * 10 + k for n in (1, 2, 4, 5, 6) for k in (0, 1)}


async def test_every_caller_is_answered_only_after_its_commit(db: Database) -> None:
    async def member(session: AsyncSession, n: int) -> int:
        await (await session.connection()).execute(PROBE.insert(), {"id": n, "who": "x"})
        return n

    answered: list[tuple[int, set[int]]] = []

    async def call(n: int) -> None:
        await db.grouped("t", lambda s: member(s, n))
        answered.append((n, await _ids(db)))  # read in another transaction, right after the answer

    await asyncio.gather(*(call(n) for n in range(1, 9)))
    assert len(answered) == 8
    assert all(n in ids for n, ids in answered)  # never an answer before the commit that holds it


async def test_a_group_that_fails_as_a_whole_runs_its_members_alone(db: Database) -> None:
    gate = asyncio.Event()

    async def blocker(session: AsyncSession) -> None:
        await gate.wait()

    async def broken(session: AsyncSession) -> None:
        # A database error that is not a lost race: the group cannot tell it from a broken connection.
        await (await session.connection()).execute(sa.text("SELECT no_such_column FROM group_probe"))

    first = asyncio.create_task(db.grouped("t", blocker))
    await asyncio.sleep(0.05)
    good = [asyncio.create_task(db.grouped("t", _writer(n))) for n in (1, 2)]
    bad = asyncio.create_task(db.grouped("t", broken))
    more = asyncio.create_task(db.grouped("t", _writer(4)))
    await asyncio.sleep(0.05)
    gate.set()
    await first
    assert await asyncio.gather(*good, more) == [1, 2, 4]
    with pytest.raises(sa.exc.DBAPIError):
        await bad
    assert await _ids(db) == {10, 11, 20, 21, 40, 41}


async def test_sqlite_write_lock_held_elsewhere_refuses_the_whole_group_once_as_a_lost_race(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("the file lock is SQLite's")
    holder = sqlite3.connect(str(sa.engine.make_url(db.url).database), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's writer, past the 5 s busy timeout
    try:
        gate = asyncio.Event()

        async def blocker(session: AsyncSession) -> None:
            await gate.wait()

        first = asyncio.create_task(db.grouped("t", blocker))  # waits for the lock itself
        await asyncio.sleep(0.05)
        members = [asyncio.create_task(db.grouped("t", _writer(n))) for n in range(1, 5)]
        gate.set()
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.gather(first, *members, return_exceptions=True)
        # two busy timeouts (the blocker's, then the group's), not one per member
        assert loop.time() - started < 14
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(isinstance(o, sa.exc.DBAPIError) and is_lost_race(o) for o in outcomes), outcomes
    assert await _ids(db) == set()


async def test_callers_that_come_straight_back_are_never_left_without_a_leader(db: Database) -> None:
    # Each answer wakes its caller before the finishing leader's bookkeeping runs: a caller that asks again
    # at once must still find (or start) a leader.
    async def member(session: AsyncSession, n: int) -> int:
        await (await session.connection()).execute(PROBE.insert(), {"id": n, "who": "loop"})
        return n

    async def caller(k: int) -> list[int]:
        return [await db.grouped("t", lambda s, n=n: member(s, n)) for n in range(k * 100, k * 100 + 30)]

    if db.dialect == "postgresql":
        db._max_leaders = 3  # several leaders finishing and starting while callers come back
    results = await asyncio.wait_for(asyncio.gather(*(caller(k) for k in range(4))), timeout=60)
    assert [len(r) for r in results] == [30] * 4
    assert len(await _ids(db)) == 120


async def test_without_group_commit_each_unit_of_work_is_its_own_transaction(database_url: str) -> None:
    database = Database(database_url, group_commit=False)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(PROBE.metadata.create_all)
        commits: list[int] = []
        database.after_commit(lambda _info: commits.append(1))
        outcomes = await asyncio.gather(
            *(database.grouped("t", _writer(n, refuse=(n == 2))) for n in (1, 2, 3)), return_exceptions=True
        )
        assert outcomes[0] == 1 and isinstance(outcomes[1], Refused) and outcomes[2] == 3
        assert len(commits) == 2  # one per unit of work that committed
        assert await _ids(database) == {10, 11, 30, 31}
    finally:
        await database.dispose()
