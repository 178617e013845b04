"""Batch re-optimisation of unstarted tasks (the engine's route solver, `_core.solve_routes`).

Unstarted = offered, not yet accepted. Accepted tasks are the worker's commitment and stay put. For each
operator the solver re-assigns the offered tasks among the offered and idle workers of the right kind
(one task per worker: a valet drives one car), minimising travel time to the cars. A task whose best worker
changed is re-offered: the old worker's reservation is released (version-checked), the new one reserved,
both told after commit.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud import _core
from voltcloud.config import Settings
from voltcloud.dispatch import tasks
from voltcloud.dispatch.models import Task
from voltcloud.engine import UnitInfo
from voltcloud.ordering.api import SYSTEM, Effects, Facts, Order, UnitOfWork, record
from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import Aborted
from voltcloud.platform.geo import Box
from voltcloud.platform.tracing import engine_span
from voltcloud.stations.api import inventory

_core_any: Any = _core


@dataclass(frozen=True)
class Outcome:
    tasks_changed: int = 0
    tasks_unassigned: int = 0
    travel_before_s: float = 0.0
    travel_after_s: float = 0.0


async def reoptimize(
    uow: UnitOfWork,
    clock: Clock,
    settings: Settings,
    notifier: tasks.Notifier,
    *,
    operator_id: str | None = None,
    region: Box | None = None,
    time_limit_ms: int = 200,
    idempotency_key: str = "",
    caller: str = "",
) -> Outcome:
    now = clock.now()
    request = {"operator": operator_id, "region": repr(region), "time_limit_ms": time_limit_ms}

    async def work(session: AsyncSession, effects: Effects) -> Outcome:
        claim = await idempotency.claim(
            session, "ReoptimizeNow", idempotency_key, request, now=now, caller=caller, required=False
        )
        if claim.replay_of is not None:
            return Outcome(**json.loads(claim.replay_of))
        total = await _plan_offered(session, effects, uow, notifier, settings, now, operator_id, region, time_limit_ms)
        await idempotency.complete(session, claim, json.dumps(asdict(total)))
        return total

    return await uow.run("dispatch.reoptimize", work)


async def _plan_offered(
    session: AsyncSession,
    effects: Effects,
    uow: UnitOfWork,
    notifier: tasks.Notifier,
    settings: Settings,
    now: dt.datetime,
    operator_id: str | None,
    region: Box | None,
    time_limit_ms: int,
) -> Outcome:
    """Re-plans the offered tasks, per operator and kind."""
    query = select(Task).where(Task.state == int(tasks.TaskState.OFFERED), col(Task.offered_to).is_not(None))
    if operator_id:
        query = query.where(Task.operator_id == operator_id)
    offered = list(await session.exec(query.order_by(col(Task.id)).limit(500)))
    total = Outcome()
    groups: dict[tuple[str, int], list[Task]] = {}
    for task in offered:
        groups.setdefault((task.operator_id, task.kind), []).append(task)
    for (operator, kind), group in groups.items():
        outcome = await _plan_group(
            session, effects, uow, notifier, settings, now, operator, kind, group, region, time_limit_ms
        )
        total = Outcome(
            total.tasks_changed + outcome.tasks_changed,
            total.tasks_unassigned + outcome.tasks_unassigned,
            total.travel_before_s + outcome.travel_before_s,
            total.travel_after_s + outcome.travel_after_s,
        )
    return total


async def _plan_group(
    session: AsyncSession,
    effects: Effects,
    uow: UnitOfWork,
    notifier: tasks.Notifier,
    settings: Settings,
    now: dt.datetime,
    operator_id: str,
    kind: int,
    group: list[Task],
    region: Box | None,
    time_limit_ms: int,
) -> Outcome:
    engine = uow.engine
    unit_kind = tasks.UNIT_VAN if kind == tasks.TaskKind.MOBILE_CHARGE else tasks.UNIT_SPECIALIST
    firsts = {t.id: (await tasks.steps_of(session, t.id))[0] for t in group}
    if region is not None:
        group = [
            t for t in group
            if region.south <= firsts[t.id].lat <= region.north and region.west <= firsts[t.id].lng <= region.east
        ]  # fmt: skip
    if not group:
        return Outcome()
    workers: dict[str, UnitInfo] = {}
    for task in group:
        if task.offered_to and (info := engine.unit(task.offered_to)) is not None:
            workers[info.id] = info
        step = firsts[task.id]
        for info, _ in engine.nearest_units(
            step.lat, step.lng, k=5, radius_m=settings.service_radius_m, kind=unit_kind
        ):
            eligible = info.operator_id == operator_id and info.id not in json.loads(task.declined_by)
            if eligible and (unit_kind != tasks.UNIT_VAN or info.energy_wh >= task.energy_wh):
                workers[info.id] = info
    unit_ids = sorted(workers)
    points = [(workers[u].lat, workers[u].lng) for u in unit_ids] + [
        (firsts[t.id].lat, firsts[t.id].lng) for t in group
    ]
    matrix = engine.travel_matrix(points, now)
    n_units = len(unit_ids)
    before = sum(
        float(matrix[unit_ids.index(t.offered_to), n_units + j]) for j, t in enumerate(group) if t.offered_to in workers
    )
    horizon = 4 * 3600.0
    vehicles = [_core_any.Vehicle(i, i, shift_start=0.0, shift_end=horizon * 2, capacity=1) for i in range(n_units)]
    jobs = [_core_any.Task(j, n_units + j, ready=0.0, due=horizon, service=0.0, demand=1) for j in range(len(group))]
    with engine_span("solve_routes", vehicles=n_units, tasks=len(group)):
        solution = _core_any.solve_routes(vehicles, jobs, matrix, time_limit_ms=time_limit_ms, seed=0)
    assignment: dict[int, int] = {}
    for route in solution.routes:
        for task_no in route.task_ids:
            assignment[int(task_no)] = int(route.vehicle_id)
    after = sum(float(matrix[u, n_units + j]) for j, u in assignment.items())
    changed = 0
    for j, task in enumerate(group):
        target = assignment.get(j)
        if target is None:
            continue
        new_unit = unit_ids[target]
        if new_unit == task.offered_to:
            continue
        # Only move when it really saves travel for this task.
        old_time = float(matrix[unit_ids.index(task.offered_to), n_units + j]) if task.offered_to in workers else 1e9
        if float(matrix[target, n_units + j]) >= old_time - 30.0:
            continue
        try:
            change = await inventory.reserve_unit(session, new_unit)
        except Aborted:
            continue
        effects.changes.append(change)
        old = task.offered_to
        if old:
            released = await inventory.release_unit(session, old)
            if released:
                effects.changes.append(released)
            await tasks.notify_workers(
                session, effects, notifier, "cancel", old, task.id, "re-planned to a closer specialist"
            )
        task.offered_to = new_unit
        task.offer_expires_at = now + dt.timedelta(seconds=settings.dispatch_offer_timeout_s)
        task.updated_at = now
        session.add(task)
        if task.order_id and (order := await session.get(Order, task.order_id)) is not None:
            order.unit_id = new_unit
            await record(session, effects, order, None, SYSTEM, now, Facts(reason=f"re-planned: offered to {new_unit}"))
        await tasks.notify_workers(session, effects, notifier, "offer", new_unit)
        changed += 1
    return Outcome(changed, len(group) - len(assignment), before, after)
