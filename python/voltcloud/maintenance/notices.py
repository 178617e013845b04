"""Who is told what about a work order: the notifications its life queues (in the writer's transaction).

created → the operator's contact; assigned → the engineer; every later step ("progress") → the reporter and
the operator's contact (by SMS when SMS is configured and the recipient takes it, else email); SLA warning → the
engineer (or the supervisors when nobody is assigned); escalation level 1 → the operator's supervisors (staff
marked supervisor; the operator's contact when it has none); level 2 → the operator's contact."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import notify
from voltcloud.maintenance.models import NotificationPreference, WorkOrder
from voltcloud.platform.enums import WorkOrderState as S

Recipient = tuple[str, str]  # (recipient_kind, recipient_id)


async def supervisors(session: AsyncSession, operator_id: str | None) -> list[Recipient]:
    if not operator_id:
        return []
    rows = await session.exec(
        select(NotificationPreference.recipient_kind, NotificationPreference.recipient_id).where(
            NotificationPreference.operator_id == operator_id,
            NotificationPreference.supervisor == True,  # noqa: E712
        )
    )
    found = [(kind, ident) for kind, ident in rows]
    return found or [("operator", operator_id)]


def _describe(order: WorkOrder) -> str:
    where = order.station_id or "-"
    return f"{order.title}\nwork order {order.id}, level {order.level}, station {where}, state {S(order.state).name}"


async def _send(session: AsyncSession, order: WorkOrder, to: list[Recipient], topic: str, subject: str, body: str,
                key: str, now: dt.datetime) -> None:  # fmt: skip
    for kind, ident in dict.fromkeys(to):  # each recipient once
        await notify.enqueue(
            session, operator_id=order.operator_id, recipient_kind=kind, recipient_id=ident, topic=topic,
            subject=subject, body=body, dedup_key=f"{key}:{kind}:{ident}", now=now,
        )  # fmt: skip


async def created(session: AsyncSession, order: WorkOrder, now: dt.datetime) -> None:
    if order.operator_id:
        subject = f"New work order: {order.title}"[:300]
        key = f"wo:{order.id}:created"
        await _send(session, order, [("operator", order.operator_id)], "work_order.created", subject,
                    _describe(order), key, now)  # fmt: skip


async def stepped(session: AsyncSession, order: WorkOrder, step_no: str, note: str, now: dt.datetime) -> None:
    """After a transition: the engineer learns of an assignment; the reporter and operator of the progress."""
    if order.state == S.ASSIGNED and order.engineer_id:
        subject = f"Work order assigned to you: {order.title}"[:300]
        await _send(session, order, [("engineer", order.engineer_id)], "work_order.assigned", subject,
                    _describe(order), f"wo:{order.id}:{step_no}:assigned", now)  # fmt: skip
    to: list[Recipient] = [("operator", order.operator_id)] if order.operator_id else []
    if order.reported_by:
        to.insert(0, ("staff", order.reported_by))
    subject = f"Work order {S(order.state).name.lower().replace('_', ' ')}: {order.title}"[:300]
    body = _describe(order) + (f"\n{note}" if note else "")
    await _send(session, order, to, "work_order.progress", subject, body, f"wo:{order.id}:{step_no}:progress", now)


async def sla_event(session: AsyncSession, order: WorkOrder, *, deadline: str, level: int, bit: int,
                    now: dt.datetime) -> None:  # fmt: skip
    """level 0: the warning; 1: escalation to the supervisors; 2: to the operator."""
    due = order.respond_by if deadline == "respond" else order.resolve_by
    if level == 0:
        to = [("engineer", order.engineer_id)] if order.engineer_id else await supervisors(session, order.operator_id)
        subject, topic = f"SLA warning: {deadline} by {due:%Y-%m-%d %H:%M} UTC: {order.title}", "work_order.sla_warning"
    else:
        to = await supervisors(session, order.operator_id) if level == 1 else []
        if level == 2 and order.operator_id:
            to = [("operator", order.operator_id)]
        subject = f"SLA escalation (level {level}): {deadline} deadline missed: {order.title}"
        topic = "work_order.sla_escalation"
    body = _describe(order) + f"\n{deadline} by {due:%Y-%m-%d %H:%M:%S} UTC"
    await _send(session, order, to, topic, subject[:300], body, f"wo:{order.id}:sla:{bit}:{order.reopen_count}", now)
