"""The change feed: the live data plane every replica follows instead of polling domain tables.

A writer records what another process must know (a connector's status, a rate model's new version, an order
event, a twin update, a station command, an alarm) as an outbox row in the SAME transaction as the change
(`publish`), so a change is announced if and only if it committed. Announcement:

- PostgreSQL: `pg_notify` inside the transaction, which PostgreSQL delivers only at commit, to every replica's
  LISTEN connection;
- SQLite: an in-process wake-up after the commit, and, for other processes on the same file (`serve
  --workers`), SQLite's own `PRAGMA data_version`, which changes when another connection commits (an in-memory
  check of the file's header, not a query of any table).

The notification carries nothing: each follower reads the outbox by its monotonically increasing id from the
last id it has seen, so a lost notification, a reconnect or a restart is repaired by the same read (catch-up).
Ids are taken before commit, so a transaction holding a lower id may commit after a higher one is read; the
follower remembers such holes and re-reads them for `gap_wait_s` before deciding that their transaction rolled
back. Delivery is at least once and, holes aside, in id order: handlers are idempotent and compare versions.

Rows older than `retention_s` are pruned; a follower that has been away longer reloads its state from the
domain tables (as at start) rather than from the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.db import NOTIFY_AT_COMMIT, Database, asyncpg_connect_args, utc_column
from voltcloud.platform.tracing import meter

log = logging.getLogger(__name__)

CHANNEL = "voltcloud_feed"
MAX_GAP_IDS = 10_000  # a hole wider than this is not one transaction in flight: give it up at once

DELIVERY_LAG = meter.create_histogram(
    "voltcloud.feed.delivery_lag",
    unit="ms",
    description="From the change's commit (its outbox row's timestamp) to its delivery to this process's handlers",
)


class ChangeEvent(SQLModel, table=True):
    """One committed change, announced to every replica (the outbox)."""

    __tablename__ = "change_event"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused, even after pruning the newest

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    )
    topic: str = Field(max_length=64)
    key: str = Field(max_length=200)
    payload: str  # JSON object
    origin: str = Field(max_length=100)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False, index=True))


@dataclass(frozen=True)
class Change:
    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    origin: str
    at: dt.datetime


Handler = Callable[[list[Change]], Awaitable[None] | None]

# The process's identity as a writer: lets a handler tell its own changes (already applied after the commit)
# from other replicas'.
ORIGIN = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_OUTBOX: sa.Table = ChangeEvent.__table__  # type: ignore[attr-defined]
_INSERT = sa.insert(_OUTBOX)


async def publish(session: AsyncSession, topic: str, key: str, payload: Mapping[str, Any]) -> int:
    """Records a change in the caller's transaction; it is announced when (and only if) that commits.
    Returns the outbox row's id (`republish` rewrites its payload before the commit).

    One Core INSERT, at once: no ORM instance or flush (the outbox is on every writer's path), and a savepoint
    rolled back after it takes the row with it."""
    values = {
        "topic": topic,
        "key": key,
        "payload": encode(payload),
        "origin": ORIGIN,
        "created_at": dt.datetime.now(dt.UTC),
    }
    result = await (await session.connection()).execute(_INSERT, values)
    session.info[NOTIFY_AT_COMMIT] = CHANNEL  # PostgreSQL: `Database.transaction` notifies just before commit
    key_of_row: Any = result.inserted_primary_key
    return int(key_of_row[0])


async def republish(session: AsyncSession, change_id: int, payload: Mapping[str, Any]) -> bool:
    """Replaces the payload of a change this transaction published (a later state of the same thing); False
    when the row is gone (a savepoint rolled back since): publish again."""
    stmt = sa.update(_OUTBOX).where(_OUTBOX.c.id == change_id).values(payload=encode(payload))
    result: Any = await (await session.connection()).execute(stmt)
    return bool(result.rowcount)


def encode(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    raise TypeError(f"cannot publish a {type(value).__name__}")


class ChangeFeed:
    """This process's follower of the feed: reads what committed since it last looked, hands it to handlers."""

    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 2000,
        catch_up_s: float = 1.0,
        gap_wait_s: float = 5.0,
        retention_s: float = 3600.0,
        prune_every_s: float = 60.0,
        sqlite_check_s: float = 0.025,
        sqlite_idle_check_s: float = 0.075,
    ) -> None:
        self.db = db
        self.batch_size = batch_size
        self.catch_up_s = catch_up_s
        self.gap_wait_s = gap_wait_s
        self.retention_s = retention_s
        self.prune_every_s = prune_every_s
        self.sqlite_check_s = sqlite_check_s
        self.sqlite_idle_check_s = max(sqlite_idle_check_s, sqlite_check_s)
        self._active = False  # a change was seen since the SQLite watcher last looked
        self.position = 0  # the highest id delivered (holes below it are in `_gaps`)
        self.delivered = 0
        self._handlers: dict[str, list[Handler]] = {}
        self._gaps: dict[int, float] = {}  # missing id -> when first missed (monotonic)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reading = asyncio.Lock()
        self._listening = False
        self._stopping = False
        db.after_commit(self._on_commit)

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    @property
    def listening(self) -> bool:
        """True while this process hears commits as they happen (LISTEN connected, or SQLite)."""
        return self._listening

    async def start(self) -> None:
        """Takes the current end of the feed as the position: call before loading state from the tables, so
        nothing committed between the two is missed (a change both loaded and delivered is applied twice,
        which handlers tolerate)."""
        async with self.db.transaction("feed.position") as session:
            connection = await session.connection()
            last = (await connection.execute(sa.select(sa.func.max(ChangeEvent.__table__.c.id)))).scalar_one_or_none()  # type: ignore[attr-defined]
        self.position = int(last or 0)
        self._stopping = False
        self._tasks.append(asyncio.create_task(self._follow(), name="feed.follow"))
        self._tasks.append(asyncio.create_task(self._prune_loop(), name="feed.prune"))
        if self.db.dialect == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen_postgres(), name="feed.listen"))
        else:
            self._listening = True
            path = sa.engine.make_url(self.db.url).database
            if path and path != ":memory:":
                self._tasks.append(asyncio.create_task(self._watch_sqlite(path), name="feed.sqlite"))

    async def stop(self) -> None:
        # Python 3.11's wait_for can swallow a cancellation that arrives as its awaitable completes (a commit
        # woke the follower just as we stop): the flag ends the loop then.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._listening = False

    def wake(self) -> None:
        self._wake.set()

    def _on_commit(self, info: Mapping[str, Any]) -> None:
        if info.get(NOTIFY_AT_COMMIT):  # this transaction published
            self._active = True
            self._wake.set()

    async def catch_up(self) -> int:
        """Delivers everything committed so far; returns how many changes were delivered."""
        async with self._reading:
            total = 0
            while True:
                rows = await self._read()
                if rows:
                    await self._deliver(rows)
                    total += len(rows)
                if len(rows) < self.batch_size:
                    return total

    async def _read(self) -> list[Change]:
        table = ChangeEvent.__table__  # type: ignore[attr-defined]
        now = time.monotonic()
        for missing, since in list(self._gaps.items()):
            if now - since > self.gap_wait_s:
                del self._gaps[missing]  # its transaction rolled back (or is far too slow to wait for)
        condition = table.c.id > self.position
        if self._gaps:
            condition = sa.or_(condition, table.c.id.in_(sorted(self._gaps)))
        query = sa.select(table).where(condition).order_by(table.c.id).limit(self.batch_size)
        async with self.db.transaction("feed.read") as session:
            rows = (await (await session.connection()).execute(query)).all()
        changes: list[Change] = []
        for row in rows:
            if row.id in self._gaps:
                del self._gaps[row.id]
            elif row.id > self.position:
                self._note_gaps(row.id, now)
                self.position = row.id
            else:
                continue  # already delivered
            changes.append(Change(row.id, row.topic, row.key, json.loads(row.payload), row.origin, row.created_at))
        return changes

    def _note_gaps(self, next_id: int, now: float) -> None:
        if next_id - self.position - 1 > MAX_GAP_IDS:
            log.warning("feed: ids %d..%d never seen; not waiting for them", self.position + 1, next_id - 1)
            return
        for missing in range(self.position + 1, next_id):
            self._gaps[missing] = now

    async def _deliver(self, changes: list[Change]) -> None:
        by_topic: dict[str, list[Change]] = {}
        for change in changes:
            by_topic.setdefault(change.topic, []).append(change)
        now = dt.datetime.now(dt.UTC)
        for change in changes:
            DELIVERY_LAG.record(max((now - change.at).total_seconds() * 1000.0, 0.0), {"topic": change.topic})
        for topic, batch in by_topic.items():
            for handler in self._handlers.get(topic, ()):
                try:
                    outcome = handler(batch)
                    if inspect.isawaitable(outcome):
                        await outcome
                except asyncio.CancelledError:
                    raise
                except Exception:  # one handler's failure must not stop the others or the feed
                    log.exception("feed: a %s handler failed", topic)
        self.delivered += len(changes)

    async def _follow(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.catch_up_s if self._gaps else self._idle_wait())
            self._wake.clear()
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is away: try again on the next wake-up
                log.warning("feed: catch-up failed: %s", error)
                await asyncio.sleep(min(self.catch_up_s, 1.0))

    def _idle_wait(self) -> float:
        # While LISTEN is connected every commit wakes us; the timer only repairs a lost notification.
        return self.catch_up_s * (30 if self._listening else 1)

    async def _listen_postgres(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        url = sa.engine.make_url(self.db.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        backoff = 0.2
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(dsn, **asyncpg_connect_args(self.db.url))
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, lambda *_args: self._wake.set())
                self._listening = True
                backoff = 0.2
                self._wake.set()  # catch up on whatever committed while we were not listening
                await lost.wait()
                log.warning("feed: LISTEN connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("feed: LISTEN failed (%s); retrying in %.1fs", error, backoff)
            finally:
                self._listening = False
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=1)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _watch_sqlite(self, path: str) -> None:
        """Other processes' commits on the same file: `PRAGMA data_version` changes when they commit. Looked at
        every `sqlite_check_s` while changes come (here or elsewhere); each quiet look doubles the pause up to
        `sqlite_idle_check_s`, so an idle replica wakes ~13 times a second rather than 40, and the first change
        after a quiet spell is still seen well inside the 100 ms replica budget."""
        connection = sqlite3.connect(path, check_same_thread=False)
        try:
            seen = connection.execute("PRAGMA data_version").fetchone()[0]
            pause = self.sqlite_check_s
            while True:
                await asyncio.sleep(pause)
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    self._wake.set()
                    self._active = True
                pause = self.sqlite_check_s if self._active else min(pause * 2, self.sqlite_idle_check_s)
                self._active = False
        finally:
            connection.close()

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.prune_every_s)
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("feed: pruning failed: %s", error)

    async def prune(self) -> int:
        """Deletes changes older than the retention; returns how many."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.retention_s)
        table = ChangeEvent.__table__  # type: ignore[attr-defined]
        async with self.db.transaction("feed.prune") as session:
            result: Any = await (await session.connection()).execute(
                sa.delete(table).where(table.c.created_at < cutoff)
            )
        return int(result.rowcount or 0)
