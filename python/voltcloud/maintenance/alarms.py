"""Public maintenance functions other domains call: raise an alarm, open a work order for it.

Every alarm raised or cleared is published on the change feed ("alarm") in the same transaction, so watchers
on any replica (WatchAlarms, the control centre) follow it without polling the alarm table."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import workorders
from voltcloud.maintenance.models import Alarm
from voltcloud.platform import feed
from voltcloud.platform.enums import AlarmLevel, AlarmSource, AlarmState, WorkOrderSource
from voltcloud.platform.ids import new_id

# Plain ints for the columns (numbers from voltcloud.platform.enums). An inspection's alarm is a platform rule.
ALARM_SOURCE_STATION = int(AlarmSource.STATION)
ALARM_SOURCE_INSPECTION = int(AlarmSource.PLATFORM)
ALARM_SOURCE_PLATFORM = int(AlarmSource.PLATFORM)
ALARM_STATE_ACTIVE, ALARM_STATE_ACKNOWLEDGED, ALARM_STATE_CLEARED = (int(s) for s in AlarmState)
ALARM_LEVEL_MAJOR = int(AlarmLevel.MAJOR)
WORK_ORDER_SOURCE_ALARM = int(WorkOrderSource.ALARM)
WORK_ORDER_SOURCE_INSPECTION = int(WorkOrderSource.INSPECTION)


ALARM_TOPIC = "alarm"


async def publish_alarm(session: AsyncSession, alarm: Alarm) -> None:
    """Announces an alarm's new state (raised or cleared) to every replica, in the writer's transaction."""
    payload = {
        "id": alarm.id,
        "code": alarm.code,
        "level": alarm.level,
        "state": alarm.state,
        "operator_id": alarm.operator_id,
        "station_id": alarm.station_id,
        "resource_id": alarm.resource_id,
        "vehicle_id": alarm.vehicle_id,
        "pack_id": alarm.pack_id,
        "work_order_id": alarm.work_order_id,
    }
    await feed.publish(session, ALARM_TOPIC, alarm.id, payload)


@dataclass(frozen=True)
class Opened:
    alarm_id: str
    work_order_id: str | None


async def raise_alarm(
    session: AsyncSession,
    *,
    now: dt.datetime,
    source: int,
    level: int,
    code: str,
    message: str,
    operator_id: str | None,
    station_id: str | None = None,
    resource_id: str | None = None,
    vehicle_id: str | None = None,
    pack_id: str | None = None,
    open_work_order: bool = True,
    work_order_source: int = WORK_ORDER_SOURCE_ALARM,
    title: str = "",
) -> Opened:
    """Records an alarm and, when asked (or for MAJOR and above), opens a work order with an SLA clock."""
    alarm = Alarm(
        id=new_id("alm"),
        source=source,
        level=level,
        operator_id=operator_id,
        station_id=station_id,
        resource_id=resource_id,
        vehicle_id=vehicle_id,
        pack_id=pack_id,
        code=code[:64],
        message=message[:1000],
        raised_at=now,
    )
    work_order_id = None
    if open_work_order or level >= AlarmLevel.MAJOR:
        order = await workorders.open_work_order(
            session,
            workorders.NewWorkOrder(
                source=work_order_source,
                level=level,
                title=(title or f"{code}: {message}"),
                description=message,
                operator_id=operator_id,
                station_id=station_id,
                resource_id=resource_id,
                pack_id=pack_id,
                alarm_id=alarm.id,
                fault_code=code,
            ),
            now=now,
            actor_id="platform",
            actor_role="platform",
        )
        alarm.work_order_id = work_order_id = order.id
    session.add(alarm)
    await publish_alarm(session, alarm)
    return Opened(alarm.id, work_order_id)


async def raise_alarm_once(
    session: AsyncSession,
    *,
    now: dt.datetime,
    code: str,
    resource_id: str,
    message: str,
    operator_id: str | None,
    station_id: str | None = None,
    pack_id: str | None = None,
    level: int = ALARM_LEVEL_MAJOR,
) -> Opened | None:
    """A platform alarm for one resource, unless one with the same code is still open for it (None then):
    a condition re-detected by a periodic loop must not write a row (and a work order) every period."""
    open_already = await session.exec(
        select(Alarm.id)
        .where(
            col(Alarm.code) == code[:64],
            col(Alarm.resource_id) == resource_id,
            col(Alarm.state).in_([ALARM_STATE_ACTIVE, ALARM_STATE_ACKNOWLEDGED]),
        )
        .limit(1)
    )
    if open_already.first() is not None:
        return None
    return await raise_alarm(
        session,
        now=now,
        source=ALARM_SOURCE_PLATFORM,
        level=level,
        code=code,
        message=message,
        operator_id=operator_id,
        station_id=station_id,
        resource_id=resource_id,
        pack_id=pack_id,
        open_work_order=False,
    )


async def clear_alarms(session: AsyncSession, *, now: dt.datetime, code: str, resource_ids: list[str]) -> int:
    """Clears the open alarms with this code for these resources (the condition is gone); returns how many."""
    if not resource_ids:
        return 0
    open_alarms = list(
        await session.exec(
            select(Alarm).where(
                col(Alarm.code) == code[:64],
                col(Alarm.resource_id).in_(resource_ids),
                col(Alarm.state).in_([ALARM_STATE_ACTIVE, ALARM_STATE_ACKNOWLEDGED]),
            )
        )
    )
    if not open_alarms:
        return 0
    result = await session.exec(
        sa.update(Alarm)
        .where(
            col(Alarm.id).in_([a.id for a in open_alarms]),
            col(Alarm.state).in_([ALARM_STATE_ACTIVE, ALARM_STATE_ACKNOWLEDGED]),
        )
        .values(state=ALARM_STATE_CLEARED, cleared_at=now)
        .execution_options(synchronize_session=False)
    )
    for alarm in open_alarms:
        alarm.state, alarm.cleared_at = ALARM_STATE_CLEARED, now
        await publish_alarm(session, alarm)
    return int(result.rowcount or 0)
