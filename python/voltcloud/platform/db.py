"""The database: async engine and sessions, one span per transaction, UTC timestamps, migrations."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_cursor
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.errors import Aborted
from voltcloud.platform.tracing import tracer

log = logging.getLogger(__name__)
T = TypeVar("T")


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Stores timezone-aware datetimes as UTC and always returns them aware, on SQLite too."""

    impl = sa.DateTime
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__(timezone=timezone)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store UTC-aware datetimes only")
        utc = value.astimezone(dt.UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utc_column(**kwargs: Any) -> sa.Column[dt.datetime]:
    """A column for `Field(sa_column=...)` holding a UTC timestamp."""
    return sa.Column(UtcDateTime(), **kwargs)


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def asyncpg_connect_args(url: str) -> dict[str, Any]:
    """asyncpg's extra connect arguments: no TLS to a server on this host unless the URL asks for it.

    asyncpg's default (`sslmode=prefer`) encrypts even a loopback connection when the server has TLS on, as
    production servers do; the traffic never leaves the machine, yet every statement paid for the encryption
    in CPU on both ends (docs/benchmarks.md, "PostgreSQL on loopback without TLS"). A URL naming `ssl` or
    `sslmode` keeps its own choice; a remote host keeps asyncpg's default."""
    parsed = sa.engine.make_url(url)
    if parsed.get_driver_name() != "asyncpg" or {"ssl", "sslmode"} & set(parsed.query):
        return {}
    host = parsed.host or parsed.query.get("host")
    on_this_host = host is None or host in _LOOPBACK or str(host).startswith("/")
    return {"ssl": False} if on_this_host else {}


NOTIFY_AT_COMMIT = "voltcloud.notify_at_commit"  # session.info key: a channel to NOTIFY just before the commit


class Database:
    """Owns the engine; hands out transactions. Nothing else creates engines or sessions."""

    def __init__(self, url: str, *, pool_size: int = 10, group_commit: bool | None = None) -> None:
        """`group_commit` (`grouped`): on by default on SQLite only. On PostgreSQL a group holds every row
        its members lock (a fleet's one wallet is all its orders' hot row) until the group's commit, and
        groups wait on each other: end to end at 200-400 CreateOrders/s offered, goodput fell from 39-86/s
        to 0-14/s (docs/benchmarks.md, "Group commit"). SQLite has one writer anyway."""
        self.url = url
        self.dialect = sa.engine.make_url(url).get_backend_name()
        self.group_commit = self.dialect == "sqlite" if group_commit is None else group_commit
        options: dict[str, Any] = {}
        if self.dialect != "sqlite":
            options.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
            options.update(connect_args=asyncpg_connect_args(url))
        if sa.engine.make_url(url).get_driver_name() == "aiosqlite":
            options.update(module=_OneHopAiosqlite())
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._after_commit: list[Callable[[Mapping[str, Any]], None]] = []
        self._writer: asyncio.Lock | None = None  # SQLite: this process's write transactions, one at a time
        self._waiting: list[_Member] = []  # grouped units of work not started yet
        self._leaders: set[asyncio.Task[None]] = set()  # each runs groups, one transaction at a time
        # SQLite has one writer. On PostgreSQL (with `group_commit`) a unit of work's time is mostly round
        # trips, so as many group transactions run at once as the pool holds (its overflow is left for the
        # rest): under light load each is a solo transaction; beyond the pool, the waiting ones form groups.
        self._max_leaders = 1 if self.dialect == "sqlite" else max(pool_size, 1)

    def after_commit(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Calls `listener(session.info)` after every committed transaction (the change feed's wake-up)."""
        self._after_commit.append(listener)

    @asynccontextmanager
    async def transaction(self, name: str = "db.transaction", *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any exception.

        `write=True` (a transaction that will write; CreateOrder and every other unit of work): on SQLite it
        takes the write lock at BEGIN (BEGIN IMMEDIATE), so it can never lose a lock upgrade after reading
        ("database is locked" at once, no busy wait), and this process's writers queue in FIFO order on an
        asyncio lock instead of in SQLite's busy handler, which sleeps up to 100 ms between tries. Writers
        of other processes (`serve --workers`) still wait in the busy handler. No effect on PostgreSQL."""
        with tracer.start_as_current_span(name, attributes={"db.system": self.dialect}):
            async with self._writer_turn(write), self._sessions() as session:
                async with session.begin():
                    if write and self.dialect == "sqlite":
                        connection = await session.connection()
                        await connection.exec_driver_sql("BEGIN IMMEDIATE")
                    yield session
                    channel = session.info.get(NOTIFY_AT_COMMIT)
                    if channel and self.dialect == "postgresql":
                        # Last statement before the commit, so a savepoint rolled back after a publish cannot
                        # take the announcement with it; PostgreSQL delivers it only if the commit succeeds.
                        connection = await session.connection()
                        await connection.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": channel})
                for listener in self._after_commit:
                    listener(session.info)

    async def grouped(self, name: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` in a write transaction shared with the other grouped units of work of this process that
        arrive while one is running (group commit): each member runs in its own SAVEPOINT, so a member that
        raises rolls back only its own part and gets its own error at once, and the others commit; the result
        comes back only after the commit that holds it. A group whose shared transaction fails as a whole (a
        database error outside a member, a failed commit) runs each of its unanswered members again, alone,
        so `work` must be safe to run again (it is a whole unit of work: it only reads and writes the
        database). A group of one runs without a savepoint. Saves per member the transaction's own cost
        (BEGIN, COMMIT, the after-commit wake-up of the change feed and its read, PostgreSQL's NOTIFY).
        Without `group_commit`, `work` runs in a write transaction of its own."""
        if not self.group_commit:
            async with self.transaction(name, write=True) as session:
                return await work(session)
        member = _Member(work, asyncio.get_running_loop().create_future())
        self._waiting.append(member)
        # A leader that found the queue empty is done (its callers may not have run yet): it no longer counts.
        self._leaders = {leader for leader in self._leaders if not leader.done()}
        if len(self._leaders) < self._max_leaders:
            # A fresh context: the leader is no caller's, so no caller's open write transaction (`_WRITING`)
            # lets it skip the writers' queue.
            leader = asyncio.create_task(self._lead(name), context=contextvars.Context())
            self._leaders.add(leader)
        return cast("T", await member.answer)

    async def _lead(self, name: str) -> None:
        group: list[_Member] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:GROUP_MAX], self._waiting[GROUP_MAX:]
                group = [m for m in group if not m.answer.done()]  # a caller that gave up before its turn
                if len(group) == 1:
                    await self._run_alone(name, group[0])  # no savepoint: its failure is the transaction's
                elif group:
                    await self._run_shared(name, group)
        except BaseException:  # cancelled (shutdown): nobody is left to answer the callers
            for member in group + self._waiting:
                member.answer.cancel()
            self._waiting = []
            raise

    async def _run_shared(self, name: str, group: list[_Member]) -> None:
        started: list[_Member] = []
        again: list[_Member] = []
        try:
            results = await self._run_group(name, group, started, again)
        except Exception as error:
            if not started and is_lost_race(error):
                # The write lock was not to be had (another process's writer past the busy timeout): each
                # would lose it alone too, so each gets the lost race now, as a solo transaction would.
                for member in group:
                    _refuse(member, error)
                return
            log.info("group of %d units of work failed as a whole (%s); running them one by one", len(group), error)
            for member in group:
                if not member.answer.done():
                    await self._run_alone(name, member)
            return
        for member, result in results:
            if not member.answer.done():
                member.answer.set_result(result)
        for member in again:
            if not member.answer.done():
                await self._run_alone(name, member)

    async def _run_group(
        self, name: str, group: list[_Member], started: list[_Member], again: list[_Member]
    ) -> list[tuple[_Member, Any]]:
        done: list[tuple[_Member, Any]] = []
        async with self.transaction(name, write=True) as session:
            for member in group:
                started.append(member)
                try:
                    async with session.begin_nested():
                        done.append((member, await member.work(session)))
                except Exception as error:
                    if not session.is_active or (isinstance(error, sa.exc.DBAPIError) and not is_lost_race(error)):
                        raise  # maybe the transaction's or the connection's, not the member's: each runs alone
                    if is_lost_race(error):
                        # Maybe lost to another group holding rows for its other members (a deadlock no solo
                        # transaction would meet): alone, after this commit, it waits as a solo one would.
                        again.append(member)
                    else:
                        _refuse(member, error)  # the member's own refusal; its savepoint is rolled back
        return done

    async def _run_alone(self, name: str, member: _Member) -> None:
        try:
            async with self.transaction(name, write=True) as session:
                result = await member.work(session)
        except Exception as error:
            _refuse(member, error)
            return
        if not member.answer.done():
            member.answer.set_result(result)

    @asynccontextmanager
    async def _writer_turn(self, write: bool) -> AsyncIterator[None]:
        if not write or self.dialect != "sqlite" or _WRITING.get():
            # A write transaction opened inside another (same task) must not wait for itself: it waits in
            # SQLite's busy handler, as before.
            yield
            return
        if self._writer is None:
            self._writer = asyncio.Lock()
        token = _WRITING.set(True)
        try:
            async with self._writer:
                yield
        finally:
            _WRITING.reset(token)

    async def dispose(self) -> None:
        await self.engine.dispose()


GROUP_MAX = 64  # members per group transaction: bounds the time a row lock is held and a group's replay


@dataclass
class _Member:
    work: Callable[[AsyncSession], Awaitable[Any]]
    answer: asyncio.Future[Any]


def _refuse(member: _Member, error: BaseException) -> None:
    if member.answer.done():
        return
    member.answer.set_exception(error)


_WRITING: contextvars.ContextVar[bool] = contextvars.ContextVar("voltcloud_db_writing", default=False)


_LOST_RACE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_LOST_RACE_TEXTS = (
    "database is locked",
    "database table is locked",
    "deadlock detected",
    "could not serialize",
    "could not obtain lock",
    "lock not available",
)


def is_lost_race(error: BaseException) -> bool:
    """Whether a database error means a concurrent writer won (retry the transaction): SQLite's busy/locked
    past the busy timeout, PostgreSQL's deadlocks, serialisation failures and NOWAIT locks. A lost race, not
    a bug."""
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    orig = error.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state is None and orig is not None:
        state = getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if state in _LOST_RACE_SQLSTATES:
        return True
    text = str(error).lower()
    return any(fragment in text for fragment in _LOST_RACE_TEXTS)


def contention(error: BaseException) -> Aborted | None:
    """A lost race (`is_lost_race`) as ABORTED, for the caller to retry; None for any other error."""
    return Aborted("a concurrent change is in progress; retry") if is_lost_race(error) else None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # Under WAL, NORMAL syncs the log at checkpoints, not at every commit: a commit survives a crash of the
    # process (kill -9) but may be lost in an OS crash or power cut (docs/operations.md, "SQLite durability").
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _OneHopCursor(AsyncAdapt_dbapi_cursor):
    """A statement in one trip to aiosqlite's thread (cursor, execute, fetch, close there at once) instead of
    SQLAlchemy's four (three for a write): each trip is a queue put, a thread wake-up and a wake-up of the
    event loop through its self-pipe, and the trips, not the SQL, were a third of CreateOrder's time on SQLite
    (docs/benchmarks.md, "Group commit"). Uses aiosqlite's `_execute` (its queue to the thread) and `_conn`,
    the same private parts SQLAlchemy's own adapter uses."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._run(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._run(operation, seq_of_parameters, many=True)

    def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        raw = self._connection._conn

        def in_thread() -> tuple[Any, list[Any], int, Any]:
            cursor = raw.cursor()
            try:
                if many:
                    cursor.executemany(operation, parameters)
                elif parameters is None:
                    cursor.execute(operation)
                else:
                    cursor.execute(operation, parameters)
                rows = cursor.fetchall() if cursor.description else []
                return cursor.description, rows, cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        try:
            result = await_(self._connection._execute(in_thread))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows)

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneHopCursor  # type: ignore[assignment]


class _OneHopAiosqlite(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite DBAPI adapter with `_OneHopCursor` (server-side cursors unchanged)."""

    def __init__(self) -> None:
        import sqlite3

        import aiosqlite

        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> Any:
        adapted = super().connect(*arg, **kw)
        return _OneHopConnection(self, adapted._connection)


def dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def insert_ignore(session: AsyncSession, table: type[SQLModel], values: Mapping[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row was inserted.

    On PostgreSQL a conflicting row that another transaction has inserted but not committed makes this wait for
    that transaction, so a following SELECT sees its outcome: concurrent creators converge on one row.
    """
    name = dialect(session)
    target: Any = table.__table__  # type: ignore[attr-defined]
    stmt: Any
    if name == "postgresql":
        stmt = postgresql.insert(target).values(**values).on_conflict_do_nothing()
    elif name == "sqlite":
        stmt = sqlite.insert(target).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported dialect {name}")
    connection = await session.connection()
    result: Any = await connection.execute(stmt)
    return bool(result.rowcount)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("voltcloud") / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "heads") -> None:
    """Applies Alembic migrations up to `revision` (blocking; call from a thread in async code)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade_database_async(url: str) -> None:
    await asyncio.to_thread(upgrade_database, url)
