"""The change feed (platform/feed.py) over real databases: what commits is delivered to every follower,
pushed (not found by a timer), what rolls back is never delivered, holes are waited for, a lost LISTEN
connection is repaired by catch-up, and pruning never reuses ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import sqlalchemy as sa

from voltcloud.platform import feed
from voltcloud.platform.db import Database, upgrade_database_async

PUSH_WAIT_S = 10.0  # generous: the test proves a push happened (the timer is set to an hour), not its speed


class Collector:
    def __init__(self) -> None:
        self.changes: list[feed.Change] = []
        self.arrived = asyncio.Event()

    def __call__(self, batch: list[feed.Change]) -> None:
        self.changes.extend(batch)
        self.arrived.set()

    async def until(self, predicate: Callable[[list[feed.Change]], bool]) -> None:
        async def wait() -> None:
            while not predicate(self.changes):
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), PUSH_WAIT_S)

    def keys(self) -> list[str]:
        return [c.key for c in self.changes]


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two replicas' database handles on one database."""
    await upgrade_database_async(database_url)
    a, b = Database(database_url), Database(database_url)
    yield a, b
    await a.dispose()
    await b.dispose()


async def publish(db: Database, key: str, topic: str = "test", **payload: object) -> None:
    async with db.transaction() as session:
        await feed.publish(session, topic, key, payload)


async def test_a_commit_reaches_every_follower_by_push_and_a_rollback_reaches_none(
    databases: tuple[Database, Database],
) -> None:
    a, b = databases
    writer, reader = feed.ChangeFeed(a, catch_up_s=3600), feed.ChangeFeed(b, catch_up_s=3600)
    mine, theirs, other_topic = Collector(), Collector(), Collector()
    writer.subscribe("test", mine)
    reader.subscribe("test", theirs)
    reader.subscribe("other", other_topic)
    await publish(a, "before-start")  # committed before the followers start: not theirs to deliver
    await writer.start()
    await reader.start()
    try:
        with pytest.raises(RuntimeError):
            async with a.transaction() as session:
                await feed.publish(session, "test", "rolled-back", {})
                raise RuntimeError("the work failed")
        await publish(a, "one", version=1)
        await publish(a, "two", version=2)
        await theirs.until(lambda got: len(got) >= 2)
        await mine.until(lambda got: len(got) >= 2)
        assert theirs.keys() == ["one", "two"] and mine.keys() == ["one", "two"]
        assert theirs.changes[1].payload == {"version": 2} and theirs.changes[0].origin == feed.ORIGIN
        assert theirs.changes[0].id < theirs.changes[1].id
        assert other_topic.changes == []
    finally:
        await writer.stop()
        await reader.stop()


async def test_a_failing_handler_does_not_stop_the_others(databases: tuple[Database, Database]) -> None:
    a, _ = databases
    follower = feed.ChangeFeed(a, catch_up_s=3600)

    def broken(_batch: list[feed.Change]) -> None:
        raise ValueError("handler bug")

    good = Collector()
    follower.subscribe("test", broken)
    follower.subscribe("test", good)
    await follower.start()
    try:
        await publish(a, "x")
        await publish(a, "y")
        await good.until(lambda got: len(got) >= 2)
        assert good.keys() == ["x", "y"]
    finally:
        await follower.stop()


async def test_pruning_deletes_old_changes_and_ids_are_never_reused(databases: tuple[Database, Database]) -> None:
    a, _ = databases
    follower = feed.ChangeFeed(a, catch_up_s=3600, retention_s=0)
    seen = Collector()
    follower.subscribe("test", seen)
    await follower.start()
    try:
        await publish(a, "old")
        await seen.until(lambda got: len(got) == 1)
        assert await follower.prune() == 1
        await publish(a, "new")
        await seen.until(lambda got: len(got) == 2)
        assert seen.changes[1].id > seen.changes[0].id
        async with a.transaction() as session:
            remaining = (
                await (await session.connection()).execute(sa.text("SELECT count(*) FROM change_event"))
            ).scalar_one()
        assert remaining == 1
    finally:
        await follower.stop()


@pytest.mark.postgres
async def test_a_hole_is_waited_for_and_delivered_when_its_transaction_commits(
    databases: tuple[Database, Database],
) -> None:
    a, b = databases
    if a.dialect != "postgresql":
        pytest.skip("SQLite serialises writers: no transaction can commit around another one")
    reader = feed.ChangeFeed(b, catch_up_s=0.05, gap_wait_s=30)
    seen = Collector()
    reader.subscribe("test", seen)
    await reader.start()
    try:
        async with a.transaction() as slow:
            await feed.publish(slow, "test", "slow", {})
            await slow.flush()  # takes its id now, commits last
            await publish(a, "fast")
            await seen.until(lambda got: got and got[-1].key == "fast")
            assert "slow" not in [c.key for c in seen.changes]
        await seen.until(lambda got: "slow" in [c.key for c in got])
        assert seen.keys() == ["fast", "slow"]
    finally:
        await reader.stop()


@pytest.mark.postgres
async def test_a_lost_listen_connection_is_repaired_and_nothing_is_missed(
    databases: tuple[Database, Database],
) -> None:
    a, b = databases
    if a.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    reader = feed.ChangeFeed(b, catch_up_s=3600)
    seen = Collector()
    reader.subscribe("test", seen)
    await reader.start()
    try:
        for _ in range(int(PUSH_WAIT_S / 0.01)):
            if reader.listening:
                break
            await asyncio.sleep(0.01)  # the follower exposes no event for this
        assert reader.listening
        async with a.transaction() as session:
            killed = (
                await (await session.connection()).execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE query LIKE 'LISTEN %' AND datname = current_database()"
                    )
                )
            ).scalar_one()
        assert killed == 1
        await publish(a, "while-away")
        await seen.until(lambda got: "while-away" in [c.key for c in got])
        await publish(a, "after")
        await seen.until(lambda got: "after" in [c.key for c in got])
        assert seen.keys() == ["while-away", "after"]
    finally:
        await reader.stop()


@pytest.mark.postgres
async def test_a_savepoint_rolled_back_after_a_publish_does_not_take_the_announcement_with_it(
    databases: tuple[Database, Database],
) -> None:
    a, b = databases
    if a.dialect != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's")
    reader = feed.ChangeFeed(b, catch_up_s=3600)
    seen = Collector()
    reader.subscribe("test", seen)
    await reader.start()
    try:
        async with a.transaction() as session:
            savepoint = await session.begin_nested()
            await feed.publish(session, "test", "undone", {})
            await session.flush()
            await savepoint.rollback()
            await feed.publish(session, "test", "kept", {})
        await seen.until(lambda got: "kept" in [c.key for c in got])
        assert seen.keys() == ["kept"]
    finally:
        await reader.stop()
