"""The work order's closed loop as the API offers it: report (by hand or by scanning the equipment's code),
read, list, progress, resolve/verify/cancel, reopen. Each function checks who may do it (access.py) and moves
the order only through `workorders.transition` / `add_note`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import access, alarms, workorders
from voltcloud.maintenance.models import WorkOrder, WorkOrderStep
from voltcloud.maintenance.ports import EquipmentDirectory
from voltcloud.maintenance.sla import EQUIPMENT_KINDS
from voltcloud.maintenance.states import normalize
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import AlarmLevel, WorkOrderSource
from voltcloud.platform.enums import WorkOrderState as S
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.paging import Page


def _role(principal: Principal) -> str:
    return principal.role.name.lower()


def _check_kind(kind: str) -> None:
    if kind and kind not in EQUIPMENT_KINDS:
        raise InvalidArgument.for_field("equipment_kind", f"must be one of {', '.join(EQUIPMENT_KINDS)}")


async def create(
    session: AsyncSession, principal: Principal, new: workorders.NewWorkOrder, directory: EquipmentDirectory,
    alarm_ids: Sequence[str], now: dt.datetime,
) -> WorkOrder:  # fmt: skip
    """A work order opened by a person; linked alarms must be the operator's and not linked elsewhere."""
    _check_kind(new.equipment_kind or "")
    if not new.title.strip():
        raise InvalidArgument.for_field("title", "is required")
    operator_id = access.operator_filter(principal, new.operator_id or "")
    if new.station_id:
        owner = await directory.station_operator(session, new.station_id)
        if owner is None or (operator_id is not None and owner != operator_id):
            raise NotFound(f"station {new.station_id} not found")
        operator_id = owner
    if operator_id is None:
        raise InvalidArgument.for_field("operator_id", "is required (or a station_id)")
    linked = [await alarms.get_alarm(session, a) for a in dict.fromkeys(alarm_ids)]
    for alarm in linked:
        if alarm.operator_id != operator_id:
            raise NotFound(f"alarm {alarm.id} not found")
    new = replace(
        new, operator_id=operator_id, reported_by=principal.subject, alarm_id=linked[0].id if linked else None
    )
    order = await workorders.open_work_order(
        session, new, now=now, actor_id=principal.subject, actor_role=_role(principal)
    )
    for alarm in linked:
        alarm.work_order_id = order.id
        session.add(alarm)
        await alarms.publish_alarm(session, alarm, alarms.REPEATED)
    return order


@dataclass(frozen=True)
class FaultReport:
    equipment_code: str
    description: str
    photo_uris: Sequence[str]
    level: int
    fault_code: str


async def report_fault(
    session: AsyncSession, principal: Principal, report: FaultReport, directory: EquipmentDirectory, now: dt.datetime
) -> WorkOrder:
    """Somebody scanned the code on the equipment: a work order for what it names, photos on the first step."""
    if not report.equipment_code.strip():
        raise InvalidArgument.for_field("equipment_code", "is required")
    if not report.description.strip():
        raise InvalidArgument.for_field("description", "is required")
    equipment = await directory.resolve(session, report.equipment_code.strip())
    own = access.own_operator(principal)
    if equipment is None or (own is not None and equipment.operator_id != own):
        raise NotFound(f"no equipment with code {report.equipment_code[:100]!r}")
    level = report.level or int(AlarmLevel.MAJOR)
    what = equipment.pack_id or equipment.resource_id or equipment.station_id or ""
    new = workorders.NewWorkOrder(
        source=int(WorkOrderSource.MANUAL), level=level, title=f"Fault reported on {equipment.kind} {what}",
        description=report.description, operator_id=equipment.operator_id, station_id=equipment.station_id,
        resource_id=equipment.resource_id, pack_id=equipment.pack_id, equipment_kind=equipment.kind,
        equipment_code=report.equipment_code.strip()[:128], fault_code=report.fault_code or None,
        reported_by=principal.subject,
    )  # fmt: skip
    order = await workorders.open_work_order(
        session, new, now=now, actor_id=principal.subject, actor_role=_role(principal)
    )
    if report.photo_uris:
        step = workorders.StepInput(principal.subject, _role(principal), note="photos", attachments=report.photo_uris)
        order = await workorders.add_note(session, order.id, step=step, now=now)
    return order


async def visible(session: AsyncSession, principal: Principal, work_order_id: str) -> WorkOrder:
    order = await session.get(WorkOrder, work_order_id)
    if order is None:
        raise NotFound(f"work order {work_order_id} not found")
    access.require_visible(principal, order.operator_id, f"work order {work_order_id}")
    return order


@dataclass(frozen=True)
class Detail:
    order: WorkOrder
    steps: list[WorkOrderStep]
    alarm_ids: list[str]


async def detail(session: AsyncSession, principal: Principal, work_order_id: str) -> Detail:
    order = await visible(session, principal, work_order_id)
    steps = await workorders.steps_of(session, order.id)
    return Detail(order, steps, await alarms.alarm_ids_of(session, order.id))


@dataclass(frozen=True)
class WorkOrderFilter:
    operator_id: str = ""
    station_id: str = ""
    engineer_id: str = ""
    states: tuple[int, ...] = ()
    min_level: int = 0
    sla_breached_only: bool = False
    equipment_kind: str = ""


async def list_for(session: AsyncSession, principal: Principal, f: WorkOrderFilter, page: Page) -> list[WorkOrder]:
    """Newest first, keyset-paged; staff see their operator's."""
    _check_kind(f.equipment_kind)
    operator_id = access.operator_filter(principal, f.operator_id)
    conditions: list[Any] = []
    equals = {"operator_id": operator_id, "station_id": f.station_id, "engineer_id": f.engineer_id,
              "equipment_kind": f.equipment_kind}  # fmt: skip
    for name, value in equals.items():
        if value:
            conditions.append(col(getattr(WorkOrder, name)) == value)
    if f.states:
        states = {int(normalize(s)) for s in f.states}
        conditions.append(col(WorkOrder.state).in_(sorted(states)))
    if f.min_level:
        conditions.append(col(WorkOrder.level) >= f.min_level)
    if f.sla_breached_only:
        conditions.append(col(WorkOrder.sla_breached) == True)  # noqa: E712
    if page.after:
        conditions.append(col(WorkOrder.id) < page.after)
    rows = await session.exec(select(WorkOrder).where(*conditions).order_by(col(WorkOrder.id).desc()).limit(page.size))
    return list(rows)


@dataclass(frozen=True)
class Progress:
    work_order_id: str
    state: int  # 0: a note only
    note: str = ""
    reason: str = ""
    conclusion: str = ""
    position: tuple[int, int] | None = None
    attachments: Sequence[str] = ()
    percent_complete: int | None = None
    expected_version: int = 0


# States a progress report may move to; assignment (dispatch) and closing have their own RPCs.
_PROGRESS_TARGETS = frozenset({S.ACCEPTED, S.ON_SITE, S.DIAGNOSED, S.RESOLVED, S.ON_HOLD, S.OPEN, S.ASSIGNED})


async def progress(session: AsyncSession, principal: Principal, p: Progress, now: dt.datetime) -> WorkOrder:
    """An engineer's (or the operator's) step: accept, on site, diagnosed, resolved, on hold and back, a note."""
    order = await visible(session, principal, p.work_order_id)
    if principal.role is Role.ENGINEER and order.engineer_id not in (None, principal.subject):
        raise PermissionDenied(f"work order {order.id} is assigned to another engineer")
    if p.percent_complete is not None and not 0 <= p.percent_complete <= 100:
        raise InvalidArgument.for_field("percent_complete", "must be 0..100")
    step = workorders.StepInput(principal.subject, _role(principal), p.note, p.reason, p.conclusion, p.position,
                                p.attachments, p.percent_complete)  # fmt: skip
    if not p.state:
        return await workorders.add_note(session, order.id, step=step, now=now, expected_version=p.expected_version)
    target = normalize(p.state)
    if target not in _PROGRESS_TARGETS or (target in (S.OPEN, S.ASSIGNED) and normalize(order.state) != S.ON_HOLD):
        raise InvalidArgument.for_field("state", f"{target.name} is not a progress step (use the RPC for it)")
    resuming = normalize(order.state) == S.ON_HOLD
    if target == S.DIAGNOSED and not resuming and not p.conclusion.strip():
        raise InvalidArgument.for_field("conclusion", "a diagnosis needs its conclusion")
    if target == S.ON_HOLD and not p.reason.strip():
        raise InvalidArgument.for_field("reason", "is required to put a work order on hold")
    return await workorders.transition(
        session, order.id, to_state=int(target), actor_id=step.actor_id, actor_role=step.actor_role, now=now,
        note=p.note, reason=p.reason, conclusion=p.conclusion, position=p.position, attachments=p.attachments,
        engineer_id=order.engineer_id, expected_version=p.expected_version, percent_complete=p.percent_complete,
    )  # fmt: skip


@dataclass(frozen=True)
class Closing:
    work_order_id: str
    final_state: int
    resolution: str = ""
    reason: str = ""
    clear_alarms: bool = False
    expected_version: int = 0


async def close(session: AsyncSession, principal: Principal, c: Closing, now: dt.datetime) -> WorkOrder:
    """RESOLVED (the fix is done), CLOSED (verified: operator or admin) or CANCELLED (with a reason)."""
    target = normalize(c.final_state) if c.final_state in {int(s) for s in S} else None
    if target not in (S.RESOLVED, S.CLOSED, S.CANCELLED):
        raise InvalidArgument.for_field("final_state", "must be RESOLVED, CLOSED or CANCELLED")
    order = await visible(session, principal, c.work_order_id)
    if target in (S.CLOSED, S.CANCELLED):
        access.require_operator_or_admin(principal, f"{target.name.lower()} a work order")
    elif principal.role is Role.ENGINEER and order.engineer_id not in (None, principal.subject):
        raise PermissionDenied(f"work order {order.id} is assigned to another engineer")
    if target == S.CANCELLED and not c.reason.strip():
        raise InvalidArgument.for_field("reason", "is required to cancel a work order")
    if target == S.CLOSED and normalize(order.state) != S.RESOLVED:
        raise FailedPrecondition(f"work order {order.id} must be RESOLVED before it is verified and closed")
    order = await workorders.transition(
        session, order.id, to_state=int(target), actor_id=principal.subject, actor_role=_role(principal), now=now,
        reason=c.reason, conclusion=c.resolution, engineer_id=order.engineer_id, expected_version=c.expected_version,
    )  # fmt: skip
    if c.clear_alarms:
        await alarms.clear_for_work_order(session, order.id, actor_id=principal.subject, now=now)
    return order


async def reopen(
    session: AsyncSession, principal: Principal, work_order_id: str, reason: str, expected_version: int,
    now: dt.datetime,
) -> WorkOrder:  # fmt: skip
    access.require_operator_or_admin(principal, "reopen a work order")
    if not reason.strip():
        raise InvalidArgument.for_field("reason", "is required to reopen a work order")
    order = await visible(session, principal, work_order_id)
    if normalize(order.state) not in (S.RESOLVED, S.CLOSED):
        raise FailedPrecondition(f"work order {order.id} is {S(order.state).name}; only RESOLVED or CLOSED reopen")
    return await workorders.transition(
        session, order.id, to_state=int(S.OPEN), actor_id=principal.subject, actor_role=_role(principal), now=now,
        reason=reason, expected_version=expected_version,
    )  # fmt: skip
