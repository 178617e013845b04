"""The live channel to connected specialists and vans (one per app stream), and dispatch's background work.

Offers live in the database (task.offered_to, offer_expires_at); the hub only delivers them. A connection
pulls its unit's pending offers when woken: right after the commit that created them when it was made here,
and by the change feed's "dispatch" topic when another replica made it (`follow`). The sweep re-dispatches
lapsed offers, whichever replica created them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.dispatch import tasks
from voltcloud.ordering.api import Effects, UnitOfWork
from voltcloud.platform.clock import Clock
from voltcloud.platform.feed import Change, ChangeFeed

log = logging.getLogger(__name__)

OutgoingKind = Literal["offer", "update", "cancel", "ack", "close"]


@dataclass(frozen=True)
class Outgoing:
    kind: OutgoingKind
    task_id: str = ""
    reason: str = ""
    acked_seq: int = 0
    respond_by: dt.datetime | None = None


@dataclass(eq=False)
class Connection:
    unit_id: str
    queue: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    offered: set[str] = field(default_factory=set)
    acked_seq: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class DispatchHub:
    """Implements `tasks.Notifier` for this process's connected workers."""

    def __init__(self, uow: UnitOfWork, clock: Clock, settings: Settings) -> None:
        self.uow = uow
        self.clock = clock
        self.settings = settings
        self._connections: dict[str, Connection] = {}

    # ---- connections ------------------------------------------------------------------------------------

    def connect(self, unit_id: str) -> Connection:
        old = self._connections.get(unit_id)
        if old is not None:
            old.queue.put_nowait(Outgoing("close", reason="the app connected again"))
        conn = Connection(unit_id)
        self._connections[unit_id] = conn
        conn.wake.set()
        return conn

    def disconnect(self, conn: Connection) -> None:
        if self._connections.get(conn.unit_id) is conn:
            del self._connections[conn.unit_id]

    def connected(self) -> list[str]:
        return list(self._connections)

    # ---- Notifier -----------------------------------------------------------------------------------------

    def offer_ready(self, unit_id: str) -> None:
        conn = self._connections.get(unit_id)
        if conn is not None:
            conn.wake.set()

    def task_cancelled(self, unit_id: str, task_id: str, reason: str) -> None:
        conn = self._connections.get(unit_id)
        if conn is not None:
            conn.offered.discard(task_id)
            conn.queue.put_nowait(Outgoing("cancel", task_id=task_id, reason=reason))

    def task_updated(self, unit_id: str, task_id: str, reason: str) -> None:
        conn = self._connections.get(unit_id)
        if conn is not None:
            conn.queue.put_nowait(Outgoing("update", task_id=task_id, reason=reason))

    def follow(self, changes: ChangeFeed) -> None:
        """Offers and withdrawals decided on other replicas reach the workers whose streams are here."""
        changes.subscribe(tasks.DISPATCH_TOPIC, self._on_dispatch)

    def _on_dispatch(self, changes: list[Change]) -> None:
        # Every replica's hub hears every change, the deciding replica's too (after its own after-commit call):
        # an offer only wakes the connection to re-read (already sent offers are skipped), and a withdrawal is
        # sent only for a task this connection was told of and not yet told is withdrawn.
        for change in changes:
            conn = self._connections.get(change.key)
            if conn is None:
                continue
            task_id = str(change.payload.get("task_id", ""))
            if change.payload.get("kind") == "offer":
                conn.wake.set()
            elif task_id in conn.offered:
                self.task_cancelled(change.key, task_id, str(change.payload.get("reason", "")))

    # ---- delivery -----------------------------------------------------------------------------------------

    async def deliver_offers(self, conn: Connection) -> int:
        """Queues the unit's pending offers not yet sent on this connection."""
        now = self.clock.now()
        async with self.uow.db.transaction("dispatch.offers.read") as session:
            pending = await tasks.pending_offers(session, conn.unit_id, now)
        sent = 0
        for task in pending:
            if task.id in conn.offered:
                continue
            conn.offered.add(task.id)
            conn.queue.put_nowait(Outgoing("offer", task_id=task.id, respond_by=task.offer_expires_at))
            sent += 1
        return sent

    async def resume(self, conn: Connection) -> None:
        """After a (re)connect: the worker's accepted tasks again, as updates, then the pending offers."""
        async with self.uow.db.transaction("dispatch.resume.read") as session:
            open_tasks = await tasks.open_tasks_of(session, conn.unit_id)
        for task in open_tasks:
            conn.offered.add(task.id)  # told of it: a withdrawal decided on another replica reaches it
            conn.queue.put_nowait(Outgoing("update", task_id=task.id, reason="resumed after reconnect"))
        await self.deliver_offers(conn)

    # ---- background sweep ---------------------------------------------------------------------------------

    async def next_due(self) -> dt.datetime | None:
        """When the next open offer lapses (None: none is open)."""
        async with self.uow.db.transaction("dispatch.sweep.next") as session:
            return await tasks.next_offer_lapse(session)

    async def sweep_once(self) -> int:
        """Re-dispatches lapsed offers."""
        now = self.clock.now()

        async def work(session: AsyncSession, effects: Effects) -> int:
            return await tasks.expire_offers(session, effects, self, self.uow.engine, self.settings, now, self.clock)

        return await self.uow.run("dispatch.sweep", work)
