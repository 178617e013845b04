"""The SLA timer: one task per process sleeping until the earliest `sla_due_at` of any work order, on the
injectable clock, woken early by the change feed's "work_order" topic (a new order, a step, a reopen on any
replica may bring an earlier deadline).

When an event is due it fires once across replicas: a compare-and-set on the order's `sla_fired` bits; only the
replica whose UPDATE matched writes the step (actor "platform"), the notification and the feed change."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import sqlalchemy as sa
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import notices, sla, workorders
from voltcloud.maintenance.models import WorkOrder
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.feed import ChangeFeed

log = logging.getLogger(__name__)
BATCH = 200


class SlaTimer:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fired = 0  # events this process fired

    def follow(self, changes: ChangeFeed) -> None:
        changes.subscribe(workorders.WORK_ORDER_TOPIC, lambda batch: self.wake())

    def wake(self) -> None:
        """Look again now (a deadline may have moved, or a test moved the clock)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maintenance.sla")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.fire_due()
                wait = await self._seconds_to_next()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sla: timer round failed")
                wait = 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _seconds_to_next(self) -> float | None:
        async with self.db.transaction("sla.next") as session:
            due = (await session.exec(select(func.min(WorkOrder.sla_due_at)))).one()
        return None if due is None else max((due - self.clock.now()).total_seconds(), 0.0)

    async def fire_due(self) -> int:
        """Fires every event due now; returns how many this process fired."""
        now = self.clock.now()
        async with self.db.transaction("sla.due") as session:
            rows = await session.exec(
                select(WorkOrder.id)
                .where(col(WorkOrder.sla_due_at) <= now)
                .order_by(col(WorkOrder.sla_due_at))
                .limit(BATCH)
            )
            ids = list(rows)
        fired = 0
        for work_order_id in ids:
            async with self.db.transaction("sla.fire") as session:
                fired += await _fire_one(session, work_order_id, now)
        self.fired += fired
        return fired


async def _fire_one(session: AsyncSession, work_order_id: str, now: dt.datetime) -> int:
    order = await session.get(WorkOrder, work_order_id)
    if order is None:
        return 0
    # Detached before any change: the compare-and-set below is the only write (an autoflush of a changed ORM
    # copy would write the bits unconditionally, and then the compare-and-set would never match).
    session.expunge(order)
    events = sla.due(order, now)
    before = order.sla_fired
    for event in events:
        order.sla_fired |= event.bit
        order.sla_warned = order.sla_warned or event.escalation_level == 0
        order.escalation_level = max(order.escalation_level, event.escalation_level)
        order.sla_breached = order.sla_breached or event.escalation_level >= 1
    next_due = sla.next_due(order)
    result = await session.exec(
        sa.update(WorkOrder)
        .where(col(WorkOrder.id) == order.id, col(WorkOrder.sla_fired) == before)
        .values(
            sla_fired=order.sla_fired,
            sla_warned=order.sla_warned,
            escalation_level=order.escalation_level,
            sla_breached=order.sla_breached,
            sla_due_at=next_due,
        )
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount or not events:
        return 0  # another replica fired them (or only the timer's due time was stale)
    order.sla_due_at = next_due
    for event in events:
        reason = _reason(event, order)
        step = workorders.StepInput("platform", "platform", note=reason, reason=reason)
        workorders.add_step(session, order, order.state, now, step)
        await notices.sla_event(session, order, deadline=event.deadline, level=event.escalation_level,
                                bit=event.bit, now=now)  # fmt: skip
    await workorders.publish_work_order(session, order)
    return len(events)


def _reason(event: sla.Event, order: WorkOrder) -> str:
    due = order.respond_by if event.deadline == "respond" else order.resolve_by
    what = ("SLA warning", "SLA escalation to the supervisor", "SLA escalation to the operator")[event.escalation_level]
    return f"{what}: {event.deadline} deadline {due:%Y-%m-%d %H:%M:%S} UTC"
