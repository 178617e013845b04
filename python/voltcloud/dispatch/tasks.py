"""Dispatch rules: tasks for valet specialists and vans, offers with a deadline, re-dispatch, steps.

A valet task: go to the vehicle, pick it up, drive to the station, power up, return it, hand it over.
A van task: go to the vehicle, connect, disconnect. The order follows the task:
offer accepted → ASSIGNED; first step started → EN_ROUTE; car picked up / van connected → IN_SERVICE;
last step done → COMPLETED (priced and captured). Every step is also an order event, so the driver's
WatchOrder sees it. Numbers are the dispatch.proto enums.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.dispatch.models import Task, TaskStep
from voltcloud.engine import Engine
from voltcloud.ordering.api import Actor, Effects, Facts, Order, OrderState, Place, lifecycle
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.enums import StepKind as StepKind  # re-exported: the dispatch room's names for them
from voltcloud.platform.enums import StepStatus as StepStatus
from voltcloud.platform.enums import TaskKind as TaskKind
from voltcloud.platform.enums import TaskState as TaskState
from voltcloud.platform.enums import UnitKind
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.stations.api import MobileUnit, inventory

OPEN_TASK_STATES = frozenset({TaskState.OFFERED, TaskState.ACCEPTED, TaskState.IN_PROGRESS})
UNIT_VAN = int(UnitKind.VAN)
UNIT_SPECIALIST = int(UnitKind.SPECIALIST)


class Notifier(Protocol):
    """The live channel to workers (DispatchHub); called after commit only."""

    def offer_ready(self, unit_id: str) -> None: ...

    def task_cancelled(self, unit_id: str, task_id: str, reason: str) -> None: ...

    def task_updated(self, unit_id: str, task_id: str, reason: str) -> None: ...


DISPATCH_TOPIC = "dispatch"


async def notify_workers(
    session: AsyncSession,
    effects: Effects,
    notifier: Notifier,
    kind: Literal["offer", "cancel"],
    unit_id: str,
    task_id: str = "",
    reason: str = "",
) -> None:
    """Tells the worker's app of a new offer or a withdrawn task: this replica's hub after the commit, and
    the replica holding the worker's stream, wherever it is, through the change feed."""
    await feed.publish(session, DISPATCH_TOPIC, unit_id, {"kind": kind, "task_id": task_id, "reason": reason})
    if kind == "offer":
        effects.callbacks.append(lambda: notifier.offer_ready(unit_id))
    else:
        effects.callbacks.append(lambda: notifier.task_cancelled(unit_id, task_id, reason))


@dataclass(frozen=True)
class StepInput:
    task_id: str
    step_index: int
    status: int
    lat: float | None = None
    lng: float | None = None
    at: dt.datetime | None = None
    note: str = ""
    photo_uris: tuple[str, ...] = ()
    energy_wh: int = 0
    soc_permille: int = 0


@dataclass(frozen=True)
class TaskView:
    task: Task
    steps: list[TaskStep]


def _steps_for(
    kind: TaskKind, vehicle: Place, station: Place | None, back: Place, eta: dt.datetime, service_s: int
) -> list[tuple[StepKind, Place, int]]:
    if kind is TaskKind.MOBILE_CHARGE:
        return [
            (StepKind.GO_TO_VEHICLE, vehicle, 0),
            (StepKind.CONNECT, vehicle, 120),
            (StepKind.DISCONNECT, vehicle, service_s),
        ]
    target = station or vehicle
    return [
        (StepKind.GO_TO_VEHICLE, vehicle, 0),
        (StepKind.PICK_UP_VEHICLE, vehicle, 180),
        (StepKind.GO_TO_STATION, target, 0),
        (StepKind.POWER_UP, target, service_s),
        (StepKind.RETURN_VEHICLE, back, 0),
        (StepKind.HAND_OVER, back, 180),
    ]


async def create_for_order(
    session: AsyncSession,
    effects: Effects,
    notifier: Notifier,
    *,
    order: Order,
    kind: TaskKind,
    unit_id: str,
    operator_id: str,
    vehicle: Place,
    station: Place | None,
    back: Place,
    eta: dt.datetime,
    service_s: int,
    energy_wh: int,
    now: dt.datetime,
    offer_timeout_s: float,
) -> Task:
    """Creates the task of a valet/van order, offered to the (already reserved) `unit_id`."""
    task = Task(
        id=new_id("tk"),
        kind=int(kind),
        state=int(TaskState.OFFERED),
        order_id=order.id,
        operator_id=operator_id,
        unit_id=None,
        vehicle_id=order.vehicle_id,
        energy_wh=energy_wh,
        offered_to=unit_id,
        offer_expires_at=now + dt.timedelta(seconds=offer_timeout_s),
        attempts=1,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    for i, (step_kind, place, service) in enumerate(_steps_for(kind, vehicle, station, back, eta, service_s)):
        session.add(
            TaskStep(
                task_id=task.id,
                index=i,
                kind=int(step_kind),
                lat=place.lat,
                lng=place.lng,
                station_id=place.station_id,
                planned_arrival=eta if i == 0 else None,
                window_start=now if i == 0 else None,
                window_end=eta + dt.timedelta(hours=1) if i == 0 else None,
                service_s=service,
            )
        )
    await session.flush()
    await notify_workers(session, effects, notifier, "offer", unit_id)
    return task


# ---- reads -----------------------------------------------------------------------------------------------


async def steps_of(session: AsyncSession, task_id: str) -> list[TaskStep]:
    rows = await session.exec(select(TaskStep).where(TaskStep.task_id == task_id).order_by(col(TaskStep.index)))
    return list(rows)


def _may_see(principal: Principal, task: Task) -> bool:
    if principal.is_admin:
        return True
    if principal.role is Role.OPERATOR:
        return principal.tenant is not None and principal.tenant.id == task.operator_id
    if principal.role is Role.SPECIALIST:
        return principal.subject in (task.unit_id, task.offered_to)
    return False


async def get_task(session: AsyncSession, principal: Principal, task_id: str) -> TaskView:
    task = await session.get(Task, task_id)
    if task is None or not _may_see(principal, task):
        raise NotFound(f"task {task_id} not found")
    return TaskView(task, await steps_of(session, task_id))


@dataclass(frozen=True)
class TaskFilter:
    unit_id: str | None = None
    order_id: str | None = None
    operator_id: str | None = None
    states: frozenset[int] = frozenset()
    kinds: frozenset[int] = frozenset()


async def list_tasks(session: AsyncSession, principal: Principal, filters: TaskFilter, page: Page) -> list[TaskView]:
    query = select(Task).order_by(col(Task.id)).limit(page.size)
    if principal.role is Role.SPECIALIST:
        query = query.where((col(Task.unit_id) == principal.subject) | (col(Task.offered_to) == principal.subject))
    elif principal.role is Role.OPERATOR:
        if principal.tenant is None:
            return []
        query = query.where(Task.operator_id == principal.tenant.id)
    if filters.unit_id:
        query = query.where((col(Task.unit_id) == filters.unit_id) | (col(Task.offered_to) == filters.unit_id))
    if filters.order_id:
        query = query.where(Task.order_id == filters.order_id)
    if filters.operator_id:
        query = query.where(Task.operator_id == filters.operator_id)
    if filters.states:
        query = query.where(col(Task.state).in_(sorted(filters.states)))
    if filters.kinds:
        query = query.where(col(Task.kind).in_(sorted(filters.kinds)))
    if page.after is not None:
        query = query.where(col(Task.id) > page.after)
    tasks = list(await session.exec(query))
    return [TaskView(t, await steps_of(session, t.id)) for t in tasks]


async def pending_offers(session: AsyncSession, unit_id: str, now: dt.datetime) -> list[Task]:
    rows = await session.exec(
        select(Task)
        .where(
            Task.offered_to == unit_id,
            Task.state == int(TaskState.OFFERED),
            col(Task.offer_expires_at) > now,
        )
        .order_by(col(Task.created_at))
    )
    return list(rows)


async def open_tasks_of(session: AsyncSession, unit_id: str) -> list[Task]:
    rows = await session.exec(
        select(Task)
        .where(Task.unit_id == unit_id, col(Task.state).in_([int(TaskState.ACCEPTED), int(TaskState.IN_PROGRESS)]))
        .order_by(col(Task.created_at))
    )
    return list(rows)


# ---- the worker's answers --------------------------------------------------------------------------------


async def _own_task(session: AsyncSession, unit_id: str, task_id: str) -> Task:
    task = await session.get(Task, task_id)
    if task is None or unit_id not in (task.unit_id, task.offered_to):
        raise NotFound(f"task {task_id} not found")
    return task


async def _order_of(session: AsyncSession, task: Task) -> Order:
    order = await session.get(Order, task.order_id) if task.order_id else None
    if order is None:
        raise FailedPrecondition(f"task {task.id} has no order")
    return order


async def accept(
    session: AsyncSession, effects: Effects, *, unit_id: str, task_id: str, actor: Actor, now: dt.datetime
) -> Task:
    task = await _own_task(session, unit_id, task_id)
    if task.state == TaskState.ACCEPTED and task.unit_id == unit_id:
        return task  # a repeated accept
    if task.state != TaskState.OFFERED or task.offered_to != unit_id:
        raise FailedPrecondition(f"task {task_id} is not offered to {unit_id}")
    if task.offer_expires_at is not None and task.offer_expires_at <= now:
        raise FailedPrecondition(f"the offer of task {task_id} lapsed at {task.offer_expires_at.isoformat()}")
    task.state = int(TaskState.ACCEPTED)
    task.unit_id = unit_id
    task.offered_to = None
    task.offer_expires_at = None
    task.updated_at = now
    session.add(task)
    order = await _order_of(session, task)
    unit = await session.get(MobileUnit, unit_id)
    await lifecycle.record(
        session,
        effects,
        order,
        OrderState.ASSIGNED,
        actor,
        now,
        Facts(
            reason=f"{unit.name if unit else unit_id} accepted task {task.id}",
            lat=unit.lat if unit else None,
            lng=unit.lng if unit else None,
        ),
    )
    return task


async def decline(
    session: AsyncSession,
    effects: Effects,
    notifier: Notifier,
    engine: Engine,
    settings: Settings,
    *,
    unit_id: str,
    task_id: str,
    reason: str,
    actor: Actor,
    now: dt.datetime,
    clock: Clock,
) -> Task:
    task = await _own_task(session, unit_id, task_id)
    if task.state != TaskState.OFFERED or task.offered_to != unit_id:
        raise FailedPrecondition(f"task {task_id} is not offered to {unit_id}")
    why = f"{unit_id} declined: {reason or 'no reason'}"
    await redispatch(session, effects, notifier, engine, settings, task, why, actor, now, clock)
    return task


async def redispatch(
    session: AsyncSession,
    effects: Effects,
    notifier: Notifier,
    engine: Engine,
    settings: Settings,
    task: Task,
    why: str,
    actor: Actor,
    now: dt.datetime,
    clock: Clock,
) -> None:
    """Takes the task from its current offeree and offers it to the next best free worker, or fails it."""
    order = await _order_of(session, task)
    previous = task.offered_to
    declined: list[str] = json.loads(task.declined_by)
    if previous:
        declined.append(previous)
        released = await inventory.release_unit(session, previous)
        if released:
            effects.changes.append(released)
    task.declined_by = json.dumps(declined)
    kind = UNIT_VAN if task.kind == TaskKind.MOBILE_CHARGE else UNIT_SPECIALIST
    first = (await steps_of(session, task.id))[0]
    chosen: str | None = None
    if task.attempts < settings.dispatch_max_offers:
        for unit, _distance in engine.nearest_units(
            first.lat, first.lng, k=10 + len(declined), radius_m=settings.service_radius_m, kind=kind
        ):
            if unit.id in declined or unit.operator_id != task.operator_id:
                continue
            if kind == UNIT_VAN and unit.energy_wh < task.energy_wh:
                continue
            try:  # a lost race changes nothing: the conditional UPDATE matched no row
                change = await inventory.reserve_unit(session, unit.id)
            except Aborted:
                continue
            effects.changes.append(change)
            chosen = unit.id
            break
    if chosen is None:
        task.state = int(TaskState.FAILED)
        task.offered_to = None
        task.offer_expires_at = None
        task.updated_at = now
        session.add(task)
        order.unit_id = None
        await lifecycle.finish(
            session,
            effects,
            order,
            OrderState.FAILED,
            actor,
            now,
            reason=f"no specialist available ({why})",
            clock=clock,
        )
        return
    task.offered_to = chosen
    task.offer_expires_at = now + dt.timedelta(seconds=settings.dispatch_offer_timeout_s)
    task.attempts += 1
    task.updated_at = now
    session.add(task)
    order.unit_id = chosen
    target = OrderState.CREATED if order.state == OrderState.ASSIGNED else None
    await lifecycle.record(
        session, effects, order, target, actor, now, Facts(reason=f"re-dispatched to {chosen}: {why}")
    )
    await notify_workers(session, effects, notifier, "offer", chosen)


async def next_offer_lapse(session: AsyncSession) -> dt.datetime | None:
    """When the earliest open offer lapses (None: no offer is open): the sweep sleeps until then."""
    query = select(sa.func.min(col(Task.offer_expires_at))).where(Task.state == int(TaskState.OFFERED))
    return (await session.exec(query)).one()


async def expire_offers(
    session: AsyncSession,
    effects: Effects,
    notifier: Notifier,
    engine: Engine,
    settings: Settings,
    now: dt.datetime,
    clock: Clock,
) -> int:
    """Re-dispatches every offer whose accept deadline passed."""
    lapsed = list(
        await session.exec(
            select(Task).where(Task.state == int(TaskState.OFFERED), col(Task.offer_expires_at) <= now).limit(100)
        )
    )
    for task in lapsed:
        unit = task.offered_to
        why = f"offer to {unit} timed out"
        await redispatch(session, effects, notifier, engine, settings, task, why, lifecycle.SYSTEM, now, clock)
        if unit:
            await notify_workers(session, effects, notifier, "cancel", unit, task.id, "offer timed out")
    return len(lapsed)


async def report_step(
    session: AsyncSession,
    effects: Effects,
    *,
    unit_id: str,
    step: StepInput,
    actor: Actor,
    now: dt.datetime,
    clock: Clock,
) -> TaskView:
    task = await _own_task(session, unit_id, step.task_id)
    if task.unit_id != unit_id:
        raise FailedPrecondition(f"task {task.id} is offered, not accepted: accept it first")
    steps = await steps_of(session, task.id)
    if not 0 <= step.step_index < len(steps):
        raise InvalidArgument.for_field("step.step_index", f"must be within [0, {len(steps) - 1}]")
    try:
        status = StepStatus(step.status)
    except ValueError:
        raise InvalidArgument.for_field("step.status", f"unknown step status {step.status}") from None
    if status not in (StepStatus.STARTED, StepStatus.DONE, StepStatus.FAILED):
        raise InvalidArgument.for_field("step.status", "must be STARTED, DONE or FAILED")
    current = steps[step.step_index]
    if current.status == status:
        return TaskView(task, steps)  # a repeated report (the app retries after a reconnect)
    if task.state not in (TaskState.ACCEPTED, TaskState.IN_PROGRESS):
        raise FailedPrecondition(f"task {task.id} is {TaskState(task.state).name.lower()}")
    if current.status in (StepStatus.DONE, StepStatus.FAILED, StepStatus.SKIPPED):
        raise FailedPrecondition(f"step {step.step_index} is already {StepStatus(current.status).name.lower()}")
    if any(s.status not in (StepStatus.DONE, StepStatus.SKIPPED) for s in steps[: step.step_index]):
        raise FailedPrecondition(f"steps before {step.step_index} are not done yet")
    at = step.at or now
    current.status = int(status)
    current.status_time = at
    current.note = step.note[:500]
    current.proof_refs = json.dumps(list(step.photo_uris))
    current.energy_wh = step.energy_wh
    session.add(current)
    task.state = int(TaskState.IN_PROGRESS)
    task.updated_at = now
    session.add(task)
    order = await _order_of(session, task)
    kind = StepKind(current.kind)
    label = f"step {current.index} {kind.name.lower().replace('_', ' ')} {status.name.lower()}"
    if step.photo_uris:
        label += f" (proof: {', '.join(step.photo_uris)})"
    if step.note:
        label += f": {step.note}"
    facts = Facts(reason=label, lat=step.lat, lng=step.lng, energy_wh=step.energy_wh)

    if status is StepStatus.FAILED:
        task.state = int(TaskState.FAILED)
        await lifecycle.record(session, effects, order, None, actor, at, facts)
        await lifecycle.finish(session, effects, order, OrderState.FAILED, actor, at, reason=label, clock=clock)
        return TaskView(task, steps)

    last = step.step_index == len(steps) - 1 and status is StepStatus.DONE
    target: OrderState | None = None
    if kind is StepKind.GO_TO_VEHICLE and order.state == OrderState.ASSIGNED:
        target = OrderState.EN_ROUTE
    elif kind in (StepKind.PICK_UP_VEHICLE, StepKind.CONNECT) and status is StepStatus.DONE:
        if order.state == OrderState.ASSIGNED:
            await lifecycle.record(session, effects, order, OrderState.EN_ROUTE, actor, at, Facts(reason="en route"))
        target = OrderState.IN_SERVICE
        order.started_at = at
    if kind is StepKind.POWER_UP and status is StepStatus.DONE and order.pack_id and order.station_id:
        pack_out, changes = await inventory.swap_packs(
            session, station_id=order.station_id, pack_in_id=order.pack_id, vehicle_id=order.vehicle_id
        )
        effects.changes.extend(changes)
        order.pack_in_id, order.pack_out_id = order.pack_id, pack_out
        facts = Facts(
            reason=f"{label}; pack {order.pack_id} in, {pack_out or 'none'} out",
            lat=step.lat,
            lng=step.lng,
            energy_wh=step.energy_wh,
        )
    if kind in (StepKind.POWER_UP, StepKind.DISCONNECT) and status is StepStatus.DONE:
        order.energy_wh = max(order.energy_wh, step.energy_wh)
    await lifecycle.record(session, effects, order, target, actor, at, facts)
    if last:
        task.state = int(TaskState.COMPLETED)
        service = next((s for s in steps if s.kind in (StepKind.POWER_UP, StepKind.DISCONNECT)), current)
        started = order.started_at or at
        await lifecycle.complete(
            session,
            effects,
            order,
            actor,
            at,
            energy_wh=max(order.energy_wh, step.energy_wh, 0),
            duration_s=max(int((at - started).total_seconds()), service.service_s),
            lat=step.lat,
            lng=step.lng,
            clock=clock,
        )
    return TaskView(task, steps)


async def cancel_for_order(
    session: AsyncSession, effects: Effects, notifier: Notifier, order: Order, reason: str, now: dt.datetime
) -> None:
    """Cancels the order's open task and tells its worker (after commit)."""
    if not order.task_id:
        return
    task = await session.get(Task, order.task_id)
    if task is None or task.state not in OPEN_TASK_STATES:
        return
    worker = task.unit_id or task.offered_to
    task.state = int(TaskState.CANCELLED)
    task.offered_to = None
    task.offer_expires_at = None
    task.updated_at = now
    session.add(task)
    if worker:
        await notify_workers(session, effects, notifier, "cancel", worker, task.id, reason)


async def move_worker(
    session: AsyncSession, effects: Effects, feed: lifecycle.OrderFeed, *, unit_id: str, lat: float, lng: float,
    energy_wh: int | None = None,
) -> list[str]:  # fmt: skip
    """Records a worker's position; returns the orders it is serving (their watchers get the position)."""
    effects.changes.append(await inventory.move_unit(session, unit_id, lat, lng))
    if energy_wh is not None and energy_wh >= 0:
        unit = await session.get(MobileUnit, unit_id)
        if unit is not None and unit.kind == UNIT_VAN:
            unit.energy_wh = energy_wh
            session.add(unit)
    return [t.order_id for t in await open_tasks_of(session, unit_id) if t.order_id]


def unfinished(states: Sequence[int]) -> bool:
    return any(s in OPEN_TASK_STATES for s in states)
