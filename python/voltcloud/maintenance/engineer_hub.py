"""The live channel to connected engineers' apps (one per stream), and the field desk's background work.

Like dispatch's hub for specialists: offers live in the database (`WorkOrderOffer` rows); the hub only
delivers them. Every replica's hub follows the feed topic "work_order" (written by `workorders.transition` in
the deciding transaction), so an offer decided on any replica wakes the engineer's stream wherever it is held,
and a work order taken away (timed out, re-assigned, cancelled) is withdrawn from the app that was told of it.
The sweep (`sweep_once`) re-dispatches lapsed offers, writes the certificate-expiry reminders due and checks
packs with new SOH samples against the risk rules (`risk`). It runs when something falls due, not on a timer: it
sleeps until the earliest offer deadline or certificate stage (`next_due`, on the injectable clock), and a change
that may bring earlier work wakes it (an offer made, an engineer's certificates, a pack's condition: the
composition root forwards the inventory's pack changes to `packs_changed`); two sweeps are at least
`interval_s` apart, and an idle replica sweeps every `idle_s` as the safety net. The
automatic dispatch (`autodispatch_once`, every `autodispatch_s`, off by default) plans the OPEN work orders.
All are safe to run on every replica (version-checked transitions, unique reminder rows, one open preventive
work order per equipment and rule)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from voltcloud.maintenance import engineers, fielddispatch, reminders, risk
from voltcloud.maintenance.fielddispatch import Desk
from voltcloud.maintenance.workorders import WORK_ORDER_TOPIC
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.enums import WorkOrderState as S
from voltcloud.platform.feed import Change, ChangeFeed

log = logging.getLogger(__name__)

OutgoingKind = Literal["offer", "withdrawn", "update", "ack", "rejected", "close"]
_MINE = frozenset({int(S.ACCEPTED), int(S.ON_SITE), int(S.IN_PROGRESS), int(S.DIAGNOSED), int(S.ON_HOLD)})


@dataclass(frozen=True)
class Outgoing:
    kind: OutgoingKind
    work_order_id: str = ""
    reason: str = ""
    acked_seq: int = 0
    respond_by: dt.datetime | None = None
    travel_s: int = 0


@dataclass(eq=False)
class Connection:
    engineer_id: str
    queue: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    offered: set[str] = field(default_factory=set)  # work orders this app was told of (offers and its own)
    acked_seq: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class EngineerHub:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        desk: Desk,
        *,
        interval_s: float = 5.0,
        idle_s: float = 30.0,
        autodispatch_s: float = 0.0,
    ) -> None:
        self.db = db
        self.clock = clock  # tests replace it with a FrozenClock to move time
        self.desk = desk
        self.interval_s = interval_s  # the least time between two sweeps; 0: no sweeping (tests call sweep_once)
        self.idle_s = idle_s
        self._wake = asyncio.Event()
        self.autodispatch_s = autodispatch_s  # 0: work orders wait for AssignWorkOrder / PlanDispatch
        self._connections: dict[str, Connection] = {}
        self._loops: list[asyncio.Task[None]] = []
        self.risk_seq = 0  # the risk sweep's cursor over packs' SOH samples (0 after a start: every pack once)
        self._risk_behind = True  # the last pass moved the cursor: samples may be left beyond its batch

    # ---- connections ------------------------------------------------------------------------------------

    def connect(self, engineer_id: str) -> Connection:
        old = self._connections.get(engineer_id)
        if old is not None:
            old.queue.put_nowait(Outgoing("close", reason="the app connected again"))
        conn = Connection(engineer_id)
        self._connections[engineer_id] = conn
        return conn

    def disconnect(self, conn: Connection) -> None:
        if self._connections.get(conn.engineer_id) is conn:
            del self._connections[conn.engineer_id]

    def connected(self) -> list[str]:
        return list(self._connections)

    # ---- following the feed -----------------------------------------------------------------------------

    def follow(self, changes: ChangeFeed) -> None:
        changes.subscribe(WORK_ORDER_TOPIC, self._on_work_order)
        changes.subscribe(engineers.ENGINEER_TOPIC, self._on_engineer)

    def _on_work_order(self, changes: Sequence[Change]) -> None:
        for change in changes:
            work_order_id, state = change.key, int(change.payload.get("state") or 0)
            engineer_id = str(change.payload.get("engineer_id") or "")
            holder = self._connections.get(engineer_id)
            if state == int(S.ASSIGNED):
                self._wake.set()  # an offer with a deadline the sweep may not know yet
            if state == int(S.ASSIGNED) and holder is not None:
                holder.wake.set()  # it re-reads its pending offers; ones already sent are skipped
            elif state in _MINE and holder is not None and work_order_id in holder.offered:
                holder.queue.put_nowait(Outgoing("update", work_order_id, reason=S(state).name.lower()))
            for conn in self._connections.values():
                still_theirs = conn.engineer_id == engineer_id and (state == int(S.ASSIGNED) or state in _MINE)
                if work_order_id in conn.offered and not still_theirs:  # re-assigned, cancelled, finished
                    conn.offered.discard(work_order_id)
                    conn.queue.put_nowait(Outgoing("withdrawn", work_order_id, reason=_why(state)))

    def _on_engineer(self, changes: Sequence[Change]) -> None:
        self._wake.set()  # a certificate added or an engineer back in service: a reminder may fall due sooner
        for change in changes:
            conn = self._connections.get(change.key)
            if conn is not None and change.payload.get("retired"):
                conn.queue.put_nowait(Outgoing("close", reason="engineer retired"))

    def packs_changed(self, changes: Sequence[Change]) -> None:
        """The inventory's pack changes (a station's condition report carries SOH): the risk rules look again."""
        self._wake.set()

    # ---- delivery -----------------------------------------------------------------------------------------

    async def deliver_offers(self, conn: Connection) -> int:
        now = self.clock.now()
        async with self.db.transaction("maintenance.offers.read") as session:
            pending = await fielddispatch.pending_offers(session, conn.engineer_id, now)
        sent = 0
        for offer in pending:
            if offer.work_order_id in conn.offered:
                continue
            conn.offered.add(offer.work_order_id)
            conn.queue.put_nowait(
                Outgoing("offer", offer.work_order_id, respond_by=offer.expires_at, travel_s=offer.travel_s)
            )
            sent += 1
        return sent

    async def resume(self, conn: Connection) -> None:
        """After a (re)connect: the engineer's own open work orders as updates, then the pending offers."""
        async with self.db.transaction("maintenance.resume.read") as session:
            mine = await fielddispatch.open_work_of(session, conn.engineer_id)
        for order in mine:
            conn.offered.add(order.id)
            conn.queue.put_nowait(Outgoing("update", order.id, reason="resumed after reconnect"))
        await self.deliver_offers(conn)

    # ---- background ---------------------------------------------------------------------------------------

    async def sweep_once(self) -> tuple[int, int]:
        """(offers expired and re-dispatched, certificate reminders written); then the packs with new SOH
        samples are checked against the risk rules (`risk.sweep_packs`)."""
        now = self.clock.now()
        async with self.db.transaction("maintenance.offers.expire") as session:
            expired = await fielddispatch.expire_offers(session, self.desk, now)
        async with self.db.transaction("maintenance.certificates.remind") as session:
            reminded = len(await reminders.remind_due(session, now))
        async with self.db.transaction("maintenance.risk.packs") as session:
            cursor, _ = await risk.sweep_packs(session, self.desk.stations, now, self.risk_seq)
        self._risk_behind, self.risk_seq = cursor != self.risk_seq, cursor
        return expired, reminded

    async def next_due(self) -> dt.datetime | None:
        """When the sweep next has work: now while the risk cursor is still catching up, else the earliest
        offer deadline or certificate stage (None: nothing is scheduled)."""
        now = self.clock.now()
        if self._risk_behind:
            return now
        async with self.db.transaction("maintenance.field.next") as session:
            due = [await fielddispatch.next_offer_lapse(session), await reminders.next_due(session, now)]
        return min((t for t in due if t is not None), default=None)

    async def autodispatch_once(self) -> int:
        """OPEN work orders offered to the nearest qualified engineers, planned together; returns how many."""
        async with self.db.transaction("maintenance.autodispatch") as session:
            return len((await fielddispatch.dispatch_open(session, self.desk, self.clock.now())).assignments)

    def start(self) -> None:
        if self.interval_s > 0:
            self._loops.append(asyncio.create_task(self._sweep_when_due(), name="maintenance.sweep"))
        if self.autodispatch_s > 0:
            self._loops.append(
                asyncio.create_task(
                    self._every(self.autodispatch_s, "autodispatch", self.autodispatch_once),
                    name="maintenance.autodispatch",
                )
            )

    async def stop(self) -> None:
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    async def _sweep_when_due(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.interval_s)  # not during start-up: the first pass waits as long as two apart
        while True:
            self._wake.clear()  # a change committed from here on wakes the wait below
            started = loop.time()
            try:
                await self.sweep_once()
                due = await self.next_due()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a background job must never die (a lost race included): log, go on
                log.warning("maintenance field sweep failed: %s", error)
                due = None
            until_due = self.idle_s if due is None else (due - self.clock.now()).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(max(until_due, 0.0), self.idle_s))
            await asyncio.sleep(max(0.0, started + self.interval_s - loop.time()))

    async def _every(self, period_s: float, name: str, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a background job must never die (a lost race included): log, go on
                log.warning("maintenance field %s failed: %s", name, error)


def _why(state: int) -> str:
    if state == int(S.OPEN):
        return "offer withdrawn: declined, timed out or re-planned"
    if state == int(S.CANCELLED):
        return "work order cancelled"
    if state == int(S.ASSIGNED):
        return "assigned to another engineer"
    return f"work order is {S(state).name.lower()}"
