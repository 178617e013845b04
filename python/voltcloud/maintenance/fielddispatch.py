"""Dispatch of engineers to work orders: who qualifies, who is nearest by road, offers and their answers.

Qualified for a work order = same operator, not retired, available, on shift now (an engineer without shifts
is always on), every required skill, the equipment kind among theirs (none listed = any), the station inside
one of their regions (none listed = anywhere), a valid certificate of the required kind (a lapsed one never
qualifies: named explicitly it is FAILED_PRECONDITION), not busy (a pending offer or an open work order), and
never offered this work order before without taking it (declined or timed out).

Open work orders are planned together (`plan`): the engine's travel model gives every engineer-to-station
road time, the route solver assigns at most one work order per engineer minimising the total, only over
qualified pairs. Each assignment is an offer (work order ASSIGNED, a `WorkOrderOffer` row with its deadline);
accepted it moves the order to ACCEPTED, declined or timed out back to OPEN and straight on to the next
nearest qualified engineer. Every move goes through `workorders.transition`, which announces it on the feed
topic "work_order": the engineer hub of every replica follows it to reach the engineer's app stream."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import cast

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import engineers, notify_hooks, workorders
from voltcloud.maintenance.field_models import Engineer, EngineerCertificate, WorkOrderOffer
from voltcloud.maintenance.models import WorkOrder
from voltcloud.maintenance.ports import Site, Stations, Travel
from voltcloud.platform.enums import WorkOrderState as S
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound

PENDING, ACCEPTED, DECLINED, EXPIRED, WITHDRAWN = "pending", "accepted", "declined", "expired", "withdrawn"
BUSY_STATES = (int(S.ASSIGNED), int(S.ACCEPTED), int(S.ON_SITE), int(S.IN_PROGRESS), int(S.DIAGNOSED))
MAX_TRAVEL_S = 4 * 3600.0  # farther than this by road is not "nearby"
MAX_BATCH = 100
SOLVER_BATCH = 60  # the solver's skills bitmask holds one bit per work order of a batch
SYSTEM = ("dispatch", "system")


@dataclass(frozen=True)
class Desk:
    """What dispatch works with: ports and the offer deadline."""

    stations: Stations
    travel: Travel
    offer_timeout: dt.timedelta


@dataclass(frozen=True)
class Candidate:
    engineer: Engineer
    certificates: list[EngineerCertificate]

    @property
    def position(self) -> tuple[float, float]:
        e = self.engineer
        return (e.lat, e.lng) if e.lat is not None and e.lng is not None else (e.home_lat, e.home_lng)

    @cached_property
    def view(self) -> engineers.EngineerView:
        """Parsed once per plan: a plan checks every engineer against every work order."""
        return engineers.EngineerView(self.engineer, self.certificates)


@dataclass(frozen=True)
class Assignment:
    work_order_id: str
    engineer_id: str
    travel_s: float
    eta: dt.datetime


@dataclass(frozen=True)
class Plan:
    assignments: list[Assignment]
    unassigned: list[str]

    @property
    def total_travel_s(self) -> float:
        return sum(a.travel_s for a in self.assignments)


def why_not(candidate: Candidate, order: WorkOrder, site: Site | None, now: dt.datetime) -> str | None:
    """Why this engineer may not take this work order now (None: qualified). Busy-ness is checked apart."""
    view, e = candidate.view, candidate.engineer
    if e.retired_at is not None:
        return "is retired"
    if e.operator_id != order.operator_id:
        return "works for another operator"
    if not e.available:
        return "is not available"
    shifts = view.shifts
    if shifts and not any(s.start <= now < s.end for s in shifts):
        return "is not on shift"
    missing = set(json.loads(order.required_skills)) - set(view.skills)
    if missing:
        return f"lacks skills {sorted(missing)}"
    kinds = view.equipment_kinds
    if kinds and order.equipment_kind and order.equipment_kind not in kinds:
        return f"does not work on {order.equipment_kind}"
    regions = view.regions
    if (
        regions
        and site is not None
        and not any(b.south <= site.lat <= b.north and b.west <= site.lng <= b.east for b in regions)
    ):
        return "does not serve the station's region"
    kind = order.required_certificate
    if kind and not engineers.holds_valid(candidate.certificates, kind, now):
        lapsed = any(c.kind == kind for c in candidate.certificates)
        return f"{kind} certificate has lapsed" if lapsed else f"holds no {kind} certificate"
    return None


async def _candidates(session: AsyncSession, operator_id: str) -> list[Candidate]:
    rows = list(
        await session.exec(
            select(Engineer)
            .where(Engineer.operator_id == operator_id, col(Engineer.retired_at).is_(None), col(Engineer.available))
            .order_by(col(Engineer.id))
        )
    )
    busy = await _busy(session, [r.id for r in rows])
    rows = [r for r in rows if r.id not in busy]
    certs: dict[str, list[EngineerCertificate]] = {r.id: [] for r in rows}
    if rows:
        for cert in await session.exec(
            select(EngineerCertificate).where(col(EngineerCertificate.engineer_id).in_(list(certs)))
        ):
            certs[cert.engineer_id].append(cert)
    return [Candidate(r, certs[r.id]) for r in rows]


async def _busy(session: AsyncSession, engineer_ids: Sequence[str]) -> set[str]:
    if not engineer_ids:
        return set()
    working = await session.exec(
        select(WorkOrder.engineer_id).where(
            col(WorkOrder.engineer_id).in_(list(engineer_ids)), col(WorkOrder.state).in_(BUSY_STATES)
        )
    )
    return {e for e in working if e}


async def _tried(session: AsyncSession, work_order_ids: Sequence[str]) -> set[tuple[str, str]]:
    """(work order, engineer) pairs offered before and not taken: never offered again."""
    rows = await session.exec(
        select(WorkOrderOffer.work_order_id, WorkOrderOffer.engineer_id).where(
            col(WorkOrderOffer.work_order_id).in_(list(work_order_ids)),
            col(WorkOrderOffer.state).in_([DECLINED, EXPIRED]),
        )
    )
    return set(rows)


async def plan(
    session: AsyncSession, desk: Desk, orders: Sequence[WorkOrder], *, now: dt.datetime, actor: tuple[str, str]
) -> Plan:
    """Offers the OPEN `orders` (one operator's) jointly to the nearest qualified engineers."""
    orders = [o for o in orders if o.state == int(S.OPEN) and o.operator_id][:MAX_BATCH]
    sites = {o.id: await desk.stations.site(session, o.station_id) if o.station_id else None for o in orders}
    placed = [o for o in orders if sites[o.id] is not None]
    unassigned = [o.id for o in orders if sites[o.id] is None]  # no place to go: needs a person to assign
    assignments: list[Assignment] = []
    by_operator: dict[str, list[WorkOrder]] = {}
    for order in placed:
        by_operator.setdefault(order.operator_id or "", []).append(order)
    for operator_id, group in by_operator.items():
        candidates = await _candidates(session, operator_id)
        tried = await _tried(session, [o.id for o in group])
        for start in range(0, len(group), SOLVER_BATCH):
            batch = group[start : start + SOLVER_BATCH]
            made = await _plan_batch(session, desk, batch, candidates, tried, sites, now, actor)
            taken = {a.engineer_id for a in made}
            candidates = [c for c in candidates if c.engineer.id not in taken]
            assignments += made
    done = {a.work_order_id for a in assignments}
    unassigned += [o.id for o in placed if o.id not in done]
    return Plan(assignments, unassigned)


async def _plan_batch(
    session: AsyncSession,
    desk: Desk,
    batch: Sequence[WorkOrder],
    candidates: Sequence[Candidate],
    tried: set[tuple[str, str]],
    sites: dict[str, Site | None],
    now: dt.datetime,
    actor: tuple[str, str],
) -> list[Assignment]:
    if not candidates or not batch:
        return []
    targets = [(s.lat, s.lng) for s in (sites[o.id] for o in batch) if s is not None]
    cost = desk.travel.durations([c.position for c in candidates], targets, now)
    allowed = [
        [
            (o.id, c.engineer.id) not in tried
            and why_not(c, o, sites[o.id], now) is None
            and cost[i][j] <= MAX_TRAVEL_S
            for j, o in enumerate(batch)
        ]
        for i, c in enumerate(candidates)
    ]
    chosen = desk.travel.assign(cost, allowed, time_limit_ms=200)
    made = []
    for j, i in sorted(chosen.items()):
        if not allowed[i][j]:
            continue  # the solver only returns allowed pairs; this guards the rule, not the solver
        order, candidate = batch[j], candidates[i]
        await offer(session, desk, order, candidate.engineer, travel_s=cost[i][j], now=now, actor=actor)
        made.append(Assignment(order.id, candidate.engineer.id, cost[i][j], now + dt.timedelta(seconds=cost[i][j])))
    return made


async def offer(
    session: AsyncSession,
    desk: Desk,
    order: WorkOrder,
    engineer: Engineer,
    *,
    travel_s: float,
    now: dt.datetime,
    actor: tuple[str, str],
    expected_version: int = 0,
) -> WorkOrderOffer:
    """ASSIGNED to the engineer (announced on "work_order"), with a deadline to accept."""
    await workorders.transition(
        session,
        order.id,
        to_state=int(S.ASSIGNED),
        actor_id=actor[0],
        actor_role=actor[1],
        now=now,
        engineer_id=engineer.id,
        note=f"offered to {engineer.name} ({round(travel_s)} s away)",
        expected_version=expected_version,
    )
    row = WorkOrderOffer(
        id=f"{order.id}:{order.version}",
        work_order_id=order.id,
        engineer_id=engineer.id,
        operator_id=order.operator_id or "",
        offered_at=now,
        expires_at=now + desk.offer_timeout,
        travel_s=round(travel_s),
    )
    session.add(row)
    await notify_hooks.dispatch_offer(session, engineer, order.id, order.title, now, row.id)
    return row


async def assign_named(
    session: AsyncSession,
    desk: Desk,
    order: WorkOrder,
    engineer_id: str,
    *,
    now: dt.datetime,
    actor: tuple[str, str],
    expected_version: int,
) -> Assignment:
    """An operator names the engineer: the same rules, said out loud (FAILED_PRECONDITION names the reason)."""
    engineer = await session.get(Engineer, engineer_id)
    if engineer is None or engineer.operator_id != order.operator_id:
        raise NotFound(f"engineer {engineer_id} not found")
    certs = list(await session.exec(select(EngineerCertificate).where(EngineerCertificate.engineer_id == engineer_id)))
    site = await desk.stations.site(session, order.station_id) if order.station_id else None
    reason = why_not(Candidate(engineer, certs), order, site, now)
    if reason is None and engineer_id in await _busy(session, [engineer_id]) and order.engineer_id != engineer_id:
        reason = "is busy with another work order"
    if reason is not None:
        raise FailedPrecondition(f"engineer {engineer_id} {reason}")
    travel_s = 0.0
    if site is not None:
        travel_s = desk.travel.durations([Candidate(engineer, certs).position], [(site.lat, site.lng)], now)[0][0]
    await _withdraw_pending(session, order.id, now, "assigned to another engineer")
    await offer(
        session, desk, order, engineer, travel_s=travel_s, now=now, actor=actor, expected_version=expected_version
    )
    return Assignment(order.id, engineer_id, travel_s, now + dt.timedelta(seconds=travel_s))


async def assign_nearest(
    session: AsyncSession,
    desk: Desk,
    order: WorkOrder,
    *,
    now: dt.datetime,
    actor: tuple[str, str],
    expected_version: int,
) -> Assignment:
    if expected_version and expected_version != order.version:
        raise Aborted(f"work order {order.id} is at version {order.version}, not {expected_version}")
    if order.state != int(S.OPEN):
        raise FailedPrecondition(f"work order {order.id} is not OPEN; name the engineer to re-assign it")
    if not order.station_id:
        raise InvalidArgument.for_field("engineer_id", "is required: the work order names no station to go to")
    made = await plan(session, desk, [order], now=now, actor=actor)
    if not made.assignments:
        raise FailedPrecondition(f"no qualified engineer is available for work order {order.id}")
    return made.assignments[0]


async def _withdraw_pending(session: AsyncSession, work_order_id: str, now: dt.datetime, reason: str) -> None:
    for row in await session.exec(
        select(WorkOrderOffer).where(WorkOrderOffer.work_order_id == work_order_id, WorkOrderOffer.state == PENDING)
    ):
        row.state, row.reason, row.answered_at = WITHDRAWN, reason, now
        session.add(row)


async def _pending(session: AsyncSession, engineer_id: str, work_order_id: str) -> WorkOrderOffer:
    row = (
        await session.exec(
            select(WorkOrderOffer).where(
                WorkOrderOffer.work_order_id == work_order_id,
                WorkOrderOffer.engineer_id == engineer_id,
                WorkOrderOffer.state == PENDING,
            )
        )
    ).first()
    if row is None:
        raise FailedPrecondition(f"work order {work_order_id} is not offered to {engineer_id}")
    return row


async def accept(session: AsyncSession, engineer_id: str, work_order_id: str, *, now: dt.datetime) -> WorkOrder:
    row = await _pending(session, engineer_id, work_order_id)
    if row.expires_at <= now:
        raise FailedPrecondition(f"the offer of work order {work_order_id} has lapsed")
    row.state, row.answered_at = ACCEPTED, now
    session.add(row)
    return await workorders.transition(
        session,
        work_order_id,
        to_state=int(S.ACCEPTED),
        actor_id=engineer_id,
        actor_role="engineer",
        now=now,
        note="accepted in the app",
    )


async def decline(
    session: AsyncSession, desk: Desk, engineer_id: str, work_order_id: str, *, reason: str, now: dt.datetime
) -> Plan:
    """Back to OPEN and on to the next nearest qualified engineer (never this one again)."""
    row = await _pending(session, engineer_id, work_order_id)
    row.state, row.reason, row.answered_at = DECLINED, reason[:200], now
    session.add(row)
    return await _redispatch(session, desk, work_order_id, engineer_id, f"declined: {reason}", now)


async def _redispatch(
    session: AsyncSession, desk: Desk, work_order_id: str, actor_id: str, reason: str, now: dt.datetime
) -> Plan:
    await session.flush()
    role = SYSTEM[1] if actor_id == SYSTEM[0] else "engineer"
    order = await workorders.transition(
        session, work_order_id, to_state=int(S.OPEN), actor_id=actor_id, actor_role=role, now=now, reason=reason[:2000]
    )
    return await plan(session, desk, [order], now=now, actor=SYSTEM)


async def expire_offers(session: AsyncSession, desk: Desk, now: dt.datetime, limit: int = 100) -> int:
    """Offers past their deadline: the work order goes to the next nearest qualified engineer."""
    lapsed = list(
        await session.exec(
            select(WorkOrderOffer)
            .where(WorkOrderOffer.state == PENDING, col(WorkOrderOffer.expires_at) <= now)
            .order_by(col(WorkOrderOffer.expires_at))
            .limit(limit)
        )
    )
    for row in lapsed:
        order = await session.get(WorkOrder, row.work_order_id)
        waiting = order is not None and order.state == int(S.ASSIGNED) and order.engineer_id == row.engineer_id
        # Only an offer still waiting lapsed; one the order moved past (accepted through progress, cancelled)
        # is withdrawn, so it does not bar the engineer from this work order later.
        row.state, row.reason = (EXPIRED, "no answer in time") if waiting else (WITHDRAWN, "work order moved on")
        row.answered_at = now
        session.add(row)
        if waiting:
            await _redispatch(session, desk, row.work_order_id, SYSTEM[0], "offer timed out", now)
    return len(lapsed)


async def next_offer_lapse(session: AsyncSession) -> dt.datetime | None:
    """When the earliest pending offer lapses (None: no offer is pending): the field sweep sleeps until then."""
    query = select(sa.func.min(col(WorkOrderOffer.expires_at))).where(WorkOrderOffer.state == PENDING)
    return cast("dt.datetime | None", (await session.exec(query)).one())


async def pending_offers(session: AsyncSession, engineer_id: str, now: dt.datetime) -> list[WorkOrderOffer]:
    rows = await session.exec(
        select(WorkOrderOffer)
        .where(
            WorkOrderOffer.engineer_id == engineer_id,
            WorkOrderOffer.state == PENDING,
            col(WorkOrderOffer.expires_at) > now,
        )
        .order_by(col(WorkOrderOffer.offered_at))
    )
    return list(rows)


async def open_work_of(session: AsyncSession, engineer_id: str) -> list[WorkOrder]:
    rows = await session.exec(
        select(WorkOrder)
        .where(WorkOrder.engineer_id == engineer_id, col(WorkOrder.state).in_(BUSY_STATES[1:]))
        .order_by(col(WorkOrder.id))
    )
    return list(rows)


async def withdraw_engineer(session: AsyncSession, desk: Desk, engineer_id: str, now: dt.datetime) -> None:
    """A retired engineer's pending offers go to the next engineer."""
    for row in list(
        await session.exec(
            select(WorkOrderOffer).where(WorkOrderOffer.engineer_id == engineer_id, WorkOrderOffer.state == PENDING)
        )
    ):
        row.state, row.reason, row.answered_at = WITHDRAWN, "engineer retired", now
        session.add(row)
        await _redispatch(session, desk, row.work_order_id, SYSTEM[0], "engineer retired", now)


async def dispatch_open(session: AsyncSession, desk: Desk, now: dt.datetime) -> Plan:
    """Automatic dispatch: the oldest OPEN work orders with a station, planned together per operator (the same
    `plan` as PlanDispatch). Version-checked transitions make a concurrent run on another replica harmless."""
    orders = list(
        await session.exec(
            select(WorkOrder)
            .where(
                WorkOrder.state == int(S.OPEN),
                col(WorkOrder.station_id).is_not(None),
                col(WorkOrder.operator_id).is_not(None),
            )
            .order_by(col(WorkOrder.created_at))
            .limit(MAX_BATCH)
        )
    )
    return await plan(session, desk, orders, now=now, actor=SYSTEM)
