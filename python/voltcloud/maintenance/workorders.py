"""Work orders: opening one (with its SLA clock), moving it through its states (`transition`, every step a
`work_order_step` row: who, when, from, to, note, reason, conclusion, position, attachments) and announcing each
change on the change feed (topic "work_order") in the writer's transaction."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import notices, sla
from voltcloud.maintenance.models import WorkOrder, WorkOrderStep
from voltcloud.maintenance.states import allowed, is_reopen, normalize
from voltcloud.platform import feed
from voltcloud.platform.enums import WorkOrderState as S
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id

WORK_ORDER_TOPIC = "work_order"
MICRO = 1_000_000


async def publish_work_order(session: AsyncSession, order: WorkOrder) -> None:
    payload = {
        "id": order.id,
        "operator_id": order.operator_id,
        "state": order.state,
        "engineer_id": order.engineer_id,
        "level": order.level,
        "station_id": order.station_id,
        "version": order.version,
        "sla_due_at": order.sla_due_at,
    }
    await feed.publish(session, WORK_ORDER_TOPIC, order.id, payload)


@dataclass(frozen=True)
class StepInput:
    actor_id: str
    actor_role: str
    note: str = ""
    reason: str = ""
    conclusion: str = ""
    position: tuple[int, int] | None = None  # (lat, lng) in microdegrees
    attachments: Sequence[str] = ()
    percent_complete: int | None = None


def add_step(session: AsyncSession, order: WorkOrder, from_state: int, now: dt.datetime, step: StepInput) -> None:
    lat, lng = step.position if step.position is not None else (None, None)
    session.add(
        WorkOrderStep(
            id=new_id("wos"),
            work_order_id=order.id,
            at=now,
            actor_id=step.actor_id[:64],
            actor_role=step.actor_role[:32],
            from_state=from_state,
            to_state=order.state,
            note=step.note[:2000],
            reason=step.reason[:2000],
            conclusion=step.conclusion[:2000],
            lat_microdeg=lat,
            lng_microdeg=lng,
            attachments=json.dumps(list(step.attachments)),
            percent_complete=step.percent_complete,
        )
    )


@dataclass(frozen=True)
class NewWorkOrder:
    source: int
    level: int
    title: str
    description: str = ""
    operator_id: str | None = None
    station_id: str | None = None
    resource_id: str | None = None
    pack_id: str | None = None
    alarm_id: str | None = None
    equipment_kind: str | None = None
    equipment_code: str | None = None
    fault_code: str | None = None
    required_skills: Sequence[str] = ()
    required_certificate: str | None = None
    reported_by: str | None = None
    respond_within: dt.timedelta | None = None  # None: from the SLA policy
    resolve_within: dt.timedelta | None = None


async def open_work_order(
    session: AsyncSession, new: NewWorkOrder, *, now: dt.datetime, actor_id: str, actor_role: str
) -> WorkOrder:
    """A new OPEN work order with its SLA clock running, its first step and its feed announcement."""
    policy = await sla.policy_for(session, new.operator_id, new.equipment_kind, new.level)
    if new.respond_within is not None or new.resolve_within is not None:
        policy = sla.Policy(
            new.respond_within or policy.respond,
            new.resolve_within or policy.resolve,
            policy.warn_before,
            policy.escalate_after,
            policy.auto_work_order,
        )
    order = WorkOrder(
        id=new_id("wo"),
        source=new.source,
        level=new.level,
        state=int(S.OPEN),
        title=new.title[:200],
        description=new.description[:2000],
        operator_id=new.operator_id,
        station_id=new.station_id,
        resource_id=new.resource_id,
        pack_id=new.pack_id,
        alarm_id=new.alarm_id,
        equipment_kind=new.equipment_kind,
        equipment_code=new.equipment_code,
        fault_code=(new.fault_code or None) and new.fault_code[:64],
        required_skills=json.dumps(sorted(set(new.required_skills))),
        required_certificate=new.required_certificate,
        reported_by=new.reported_by,
        created_at=now,
    )
    sla.start_clock(order, policy, now)
    session.add(order)
    add_step(session, order, 0, now, StepInput(actor_id, actor_role, note="reported", reason=new.description[:2000]))
    await publish_work_order(session, order)
    await notices.created(session, order, now)
    return order


async def get_work_order(session: AsyncSession, work_order_id: str) -> WorkOrder:
    order = await session.get(WorkOrder, work_order_id)
    if order is None:
        raise NotFound(f"work order {work_order_id} not found")
    return order


async def steps_of(session: AsyncSession, work_order_id: str) -> list[WorkOrderStep]:
    rows = await session.exec(
        select(WorkOrderStep)
        .where(WorkOrderStep.work_order_id == work_order_id)
        .order_by(col(WorkOrderStep.at), col(WorkOrderStep.id))
    )
    return list(rows)


async def _held_from(session: AsyncSession, work_order_id: str) -> int | None:
    """The state an ON_HOLD order left (the latest step into ON_HOLD)."""
    rows = await session.exec(
        select(WorkOrderStep.from_state)
        .where(WorkOrderStep.work_order_id == work_order_id, WorkOrderStep.to_state == int(S.ON_HOLD))
        .order_by(col(WorkOrderStep.at).desc(), col(WorkOrderStep.id).desc())
        .limit(1)
    )
    return rows.first()


async def bump_version(session: AsyncSession, order: WorkOrder) -> None:
    """Compare-and-set on the version: of two concurrent writers of one order, the second gets ABORTED (on
    PostgreSQL it waits for the first's row lock, then finds the version moved)."""
    result = await session.exec(
        sa.update(WorkOrder)
        .where(col(WorkOrder.id) == order.id, col(WorkOrder.version) == order.version)
        .values(version=order.version + 1)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:
        raise Aborted(f"work order {order.id} was changed concurrently; read it again")
    order.version += 1


async def transition(
    session: AsyncSession,
    work_order_id: str,
    *,
    to_state: int,
    actor_id: str,
    actor_role: str,
    now: dt.datetime,
    note: str = "",
    reason: str = "",
    conclusion: str = "",
    position: tuple[int, int] | None = None,
    attachments: Sequence[str] = (),
    engineer_id: str | None = None,
    expected_version: int = 0,
    percent_complete: int | None = None,
) -> WorkOrder:
    """Moves a work order to `to_state` (see states.py), records the step and announces it.

    NOT_FOUND for an unknown id, ABORTED when `expected_version` (non-zero) is not the current version or a
    concurrent writer won, FAILED_PRECONDITION for a move the state machine does not allow."""
    order = await get_work_order(session, work_order_id)
    if expected_version and expected_version != order.version:
        raise Aborted(f"work order {work_order_id} is at version {order.version}, not {expected_version}")
    try:
        target = normalize(to_state)
    except ValueError:
        raise InvalidArgument.for_field("state", f"unknown work order state {to_state}") from None
    current = normalize(order.state)
    held_from = await _held_from(session, order.id) if current == S.ON_HOLD else None
    if not allowed(current, target, held_from=held_from):
        raise FailedPrecondition(f"work order {work_order_id} cannot go from {current.name} to {target.name}")
    if target == S.ASSIGNED and not engineer_id:
        raise InvalidArgument.for_field("engineer_id", "is required to assign a work order")
    await bump_version(session, order)
    _apply(order, current, target, now, engineer_id=engineer_id, conclusion=conclusion)
    if is_reopen(current, target):
        order.reopen_count += 1
        sla.start_clock(order, await sla.policy_for(session, order.operator_id, order.equipment_kind, order.level), now)
    order.sla_due_at = sla.next_due(order)
    session.add(order)
    step = StepInput(actor_id, actor_role, note, reason, conclusion, position, attachments, percent_complete)
    add_step(session, order, int(current), now, step)
    await publish_work_order(session, order)
    await notices.stepped(session, order, f"v{order.version}", note or conclusion or reason, now)
    return order


async def add_note(
    session: AsyncSession,
    work_order_id: str,
    *,
    step: StepInput,
    now: dt.datetime,
    expected_version: int = 0,
) -> WorkOrder:
    """A progress step without a state change (a note, a position, photos, percent done)."""
    order = await get_work_order(session, work_order_id)
    if expected_version and expected_version != order.version:
        raise Aborted(f"work order {work_order_id} is at version {order.version}, not {expected_version}")
    if normalize(order.state) in (S.CLOSED, S.CANCELLED):
        raise FailedPrecondition(f"work order {work_order_id} is {S(order.state).name}: reopen it first")
    await bump_version(session, order)
    session.add(order)
    add_step(session, order, order.state, now, step)
    await publish_work_order(session, order)
    await notices.stepped(session, order, f"v{order.version}", step.note, now)
    return order


def _apply(
    order: WorkOrder, current: S, target: S, now: dt.datetime, *, engineer_id: str | None, conclusion: str
) -> None:
    """The columns a move sets: the state, its timestamp, the engineer, the diagnosis or resolution."""
    order.state = int(target)
    if target == S.ASSIGNED:
        order.engineer_id, order.assigned_at = engineer_id, now
    elif target == S.ACCEPTED:
        order.accepted_at = now
    elif target == S.ON_SITE:
        order.on_site_at = order.on_site_at or now
    elif target == S.DIAGNOSED:  # back from hold without a new conclusion keeps the diagnosis
        order.diagnosed_at = now if conclusion or order.diagnosed_at is None else order.diagnosed_at
        order.diagnosis = conclusion[:2000] or order.diagnosis
    elif target == S.RESOLVED:
        order.resolved_at = now
        order.resolution = conclusion[:2000] or order.resolution
    elif target in (S.CLOSED, S.CANCELLED):
        order.closed_at = now
    elif target == S.OPEN:  # declined, timed out or reopened: nobody has it any more
        order.engineer_id = None
        if current in (S.RESOLVED, S.CLOSED):
            order.assigned_at = order.accepted_at = order.on_site_at = order.diagnosed_at = None
            order.resolved_at = order.closed_at = None
