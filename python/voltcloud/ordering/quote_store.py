"""Quotes made durable without blocking QuotePowerUp: kept in memory, inserted in batches.

QuotePowerUp answers as soon as its options are priced; the quote waits here until a background task inserts
it with the others pending (every `interval_s` after the first one arrives, at once when `batch_size` are
pending). A failed batch is logged and stays pending for the next try; `stop` flushes what is left.

CreateOrder looks here before the database (`pending`), and a quote ordered before its batch committed is
inserted by the order's own transaction (`persist_in`: the order row references it), so a pending quote is
never lost to an order. Inserts ignore a row already there, so both writers may race harmlessly.

Another replica does not see this memory. A quote id is a UUIDv7, so it tells when the quote was made:
`in_flight` says whether a quote not found in the database may still be in its maker's batch (made less than
one flush interval plus `margin_s` ago), and CreateOrder then re-reads until that window has passed. See
docs/ordering.md ("Quotes are written in batches").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.ordering.models import Quote
from voltcloud.platform.db import Database, dialect

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingQuote:
    """A quote's row values, waiting for its batch (a plain record: building an ORM instance per quote would
    cost more than pricing it; one is built only when CreateOrder asks for it)."""

    id: str
    requested_by: str
    vehicle_id: str
    fleet_id: str | None
    lat: float
    lng: float
    soc_permille: int
    target_soc_permille: int
    created_at: dt.datetime
    expires_at: dt.datetime
    options_json: str

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    def model(self) -> Quote:
        return Quote(**self.row())


_FIELDS = tuple(f.name for f in fields(PendingQuote))


class QuoteStore:
    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 256,
        interval_s: float = 0.05,
        retry_s: float = 0.5,
        margin_s: float = 0.25,
        keep_recent: int = 16_384,
    ) -> None:
        self.db = db
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.margin_s = margin_s
        self.flushed = 0
        self.failures = 0
        self._pending: dict[str, PendingQuote] = {}
        # Quotes of this replica already written, newest last (a quote row never changes): CreateOrder on this
        # replica finds them without a read transaction. At most `keep_recent`, the oldest dropped first.
        self._recent: dict[str, PendingQuote] = {}
        self.keep_recent = keep_recent
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, quote: PendingQuote) -> None:
        self._pending[quote.id] = quote
        self._wake.set()

    def pending(self, quote_id: str) -> Quote | None:
        found = self._pending.get(quote_id)
        return None if found is None else found.model()

    def known(self, quote_id: str) -> Quote | None:
        """A quote this replica made, pending or recently written (None: read the database)."""
        found = self._pending.get(quote_id) or self._recent.get(quote_id)
        return None if found is None else found.model()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ordering.quote_store")

    async def stop(self, *, attempts: int = 3) -> None:
        """Stops the background task, then flushes what is pending (a few tries; what still fails is logged)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _ in range(attempts):
            if not self._pending or not await self.flush():
                break
        if self._pending:
            log.error("quote store: %d quotes could not be written at shutdown", len(self._pending))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._pending) < self.batch_size:
                await asyncio.sleep(self.interval_s)  # gather the quotes of one interval into one commit
            ok = await self.flush()
            if self._pending:
                if not ok:
                    await asyncio.sleep(self.retry_s)
                self._wake.set()

    async def flush(self) -> bool:
        """Inserts every quote pending now in one transaction; True when it committed (or nothing was due)."""
        batch = list(self._pending.values())
        if not batch:
            return True
        try:
            async with self.db.transaction("ordering.quotes.flush") as session:
                await insert_quotes(session, batch)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the database may be briefly away: keep them and try again
            self.failures += 1
            log.warning("quote store: writing %d quotes failed (will retry): %s", len(batch), error)
            return False
        for quote in batch:
            self._pending.pop(quote.id, None)
            self._recent[quote.id] = quote
        while len(self._recent) > self.keep_recent:
            del self._recent[next(iter(self._recent))]
        self.flushed += len(batch)
        return True

    async def persist_in(self, session: AsyncSession, quote: Quote) -> None:
        """Makes a still-pending quote part of the caller's transaction (an order that references it)."""
        pending = self._pending.get(quote.id)
        if pending is not None:
            await insert_quotes(session, [pending])

    def in_flight(self, quote_id: str, now_s: float | None = None) -> float:
        """Seconds during which a quote with this id, not yet in the database, may still arrive there from
        another replica's batch (0: it cannot; the id is unknown, or old enough to have been written)."""
        made = made_at(quote_id)
        if made is None:
            return 0.0
        now = time.time() if now_s is None else now_s
        deadline = made + self.interval_s + self.margin_s
        if now < made - self.margin_s:  # from the future beyond clock skew: not one of ours
            return 0.0
        return max(deadline - now, 0.0)


def made_at(quote_id: str) -> float | None:
    """The creation time (Unix seconds) a UUIDv7 quote id carries, or None if it is not one."""
    _, _, text = quote_id.rpartition("_")
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return (value.int >> 80) / 1000.0


async def insert_quotes(session: AsyncSession, quotes: Iterable[PendingQuote]) -> None:
    """One executemany of a statement compiled once (SQLAlchemy batches it into multi-row INSERTs)."""
    rows = [q.row() for q in quotes]
    if rows:
        connection = await session.connection()
        await connection.execute(_INSERT[dialect(session)], rows)


_TABLE: Any = Quote.__table__  # type: ignore[attr-defined]
_INSERT = {
    "postgresql": postgresql.insert(_TABLE).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_TABLE).on_conflict_do_nothing(),
}
