"""What the engineer's app changes on the engineer (position, availability), and the follow-up work orders of
failed inspection items."""

from __future__ import annotations

import datetime as dt

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import workorders
from voltcloud.maintenance.field_models import Engineer
from voltcloud.maintenance.inspections import FollowUp
from voltcloud.maintenance.ports import Site
from voltcloud.platform.auth import Principal
from voltcloud.platform.enums import AlarmLevel, WorkOrderSource
from voltcloud.platform.errors import NotFound


async def _engineer(session: AsyncSession, engineer_id: str) -> Engineer:
    row = await session.get(Engineer, engineer_id)
    if row is None:
        raise NotFound(f"engineer {engineer_id} not found")
    return row


async def move(session: AsyncSession, engineer_id: str, lat: float, lng: float, now: dt.datetime) -> None:
    """The last known position: dispatch measures travel from here (else from the home base)."""
    row = await _engineer(session, engineer_id)
    row.lat, row.lng, row.position_at = lat, lng, now
    session.add(row)


async def set_available(session: AsyncSession, engineer_id: str, available: bool) -> None:
    row = await _engineer(session, engineer_id)
    row.available = available
    session.add(row)


def follow_up_work_order(principal: Principal) -> FollowUp:
    """A failed checklist item opens a WARNING work order on the station (source INSPECTION)."""

    async def open_one(session: AsyncSession, site: Site, title: str, detail: str, now: dt.datetime) -> str | None:
        new = workorders.NewWorkOrder(
            source=int(WorkOrderSource.INSPECTION),
            level=int(AlarmLevel.WARNING),
            title=title,
            description=detail,
            operator_id=site.operator_id,
            station_id=site.station_id,
            equipment_kind="station",
            reported_by=principal.subject,
        )
        order = await workorders.open_work_order(
            session, new, now=now, actor_id=principal.subject, actor_role=principal.role.name.lower()
        )
        return order.id

    return open_one
