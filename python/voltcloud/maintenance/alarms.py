"""Alarms: raising (with de-duplication and flapping suppression), acknowledging, clearing, listing.

The same fault on the same equipment (`dedup_key`: code, station, resource, vehicle, pack) while an alarm for it
is open is one alarm: a repeat adds an occurrence and moves `last_seen_at`, writes no row and opens no work
order. An alarm raised more than `flap_threshold` times within `flap_window` is flapping: it stays open (the
equipment's automatic clears no longer close it; a person clears it with ClearAlarm) and every raise of it joins
the one work order already open for that fault.

Every alarm change is published on the change feed (topic "alarm", with what changed) in the writer's
transaction, so watchers on any replica (WatchAlarms, the control centre) follow it without polling."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import risk, sla, workorders
from voltcloud.maintenance.models import Alarm, WorkOrder
from voltcloud.maintenance.states import ACTIVE_STATES
from voltcloud.platform import feed
from voltcloud.platform.db import dialect
from voltcloud.platform.enums import AlarmLevel, AlarmSource, AlarmState, WorkOrderSource
from voltcloud.platform.errors import NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page

# Plain ints for the columns (numbers from voltcloud.platform.enums). An inspection's alarm is a platform rule.
ALARM_SOURCE_STATION = int(AlarmSource.STATION)
ALARM_SOURCE_INSPECTION = int(AlarmSource.PLATFORM)
ALARM_SOURCE_PLATFORM = int(AlarmSource.PLATFORM)
ALARM_SOURCE_VEHICLE = int(AlarmSource.VEHICLE)
ALARM_STATE_ACTIVE, ALARM_STATE_ACKNOWLEDGED, ALARM_STATE_CLEARED = (int(s) for s in AlarmState)
OPEN_ALARM_STATES = (ALARM_STATE_ACTIVE, ALARM_STATE_ACKNOWLEDGED)
ALARM_LEVEL_MAJOR = int(AlarmLevel.MAJOR)
WORK_ORDER_SOURCE_ALARM = int(WorkOrderSource.ALARM)
WORK_ORDER_SOURCE_INSPECTION = int(WorkOrderSource.INSPECTION)

ALARM_TOPIC = "alarm"
# What changed (the payload's "change"; WatchAlarms' AlarmChange numbers).
RAISED, REPEATED, ACKNOWLEDGED, FLAPPING, CLEARED, LINKED = 2, 3, 4, 5, 6, 7


@dataclass(frozen=True)
class FlapRule:
    threshold: int = 3  # raised more than this many times ...
    window: dt.timedelta = dt.timedelta(hours=1)  # ... within this window: flapping


_flap = FlapRule()


def configure(rule: FlapRule) -> None:
    """Set once by the composition root from the settings (other rooms call raise_alarm without them)."""
    global _flap
    _flap = rule


def dedup_key(code: str, station_id: str | None, resource_id: str | None, vehicle_id: str | None,
              pack_id: str | None) -> str:  # fmt: skip
    return "|".join((code[:64], station_id or "", resource_id or "", vehicle_id or "", pack_id or ""))


def equipment_kind_of(resource_id: str | None, vehicle_id: str | None, pack_id: str | None) -> str:
    """What an alarm is about, for SLA and work-order rules: the pack, the vehicle, a connector, the station."""
    if pack_id:
        return "pack"
    if vehicle_id:
        return "vehicle"
    return "connector" if resource_id else "station"


async def publish_alarm(session: AsyncSession, alarm: Alarm, change: int = RAISED) -> None:
    """Announces an alarm's change to every replica, in the writer's transaction."""
    payload = {
        "id": alarm.id,
        "change": change,
        "code": alarm.code,
        "level": alarm.level,
        "source": alarm.source,
        "state": alarm.state,
        "operator_id": alarm.operator_id,
        "station_id": alarm.station_id,
        "resource_id": alarm.resource_id,
        "vehicle_id": alarm.vehicle_id,
        "pack_id": alarm.pack_id,
        "work_order_id": alarm.work_order_id,
        "occurrences": alarm.occurrences,
        "flapping": alarm.flapping,
    }
    await feed.publish(session, ALARM_TOPIC, alarm.id, payload)


@dataclass(frozen=True)
class Opened:
    alarm_id: str
    work_order_id: str | None


async def _serialize(session: AsyncSession, key: str) -> None:
    """Concurrent raises of one fault wait for each other, so the second sees the first's alarm and counts a
    repeat instead of writing a twin. PostgreSQL: a transaction-scoped advisory lock on the key. SQLite: a no-op
    write to the key's rows takes the database's write lock first (the driver starts the transaction at the first
    write; reads before it would not see a concurrent raise that commits meanwhile)."""
    connection = await session.connection()
    if dialect(session) == "postgresql":
        await connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    else:
        await connection.execute(
            sa.text("UPDATE alarm SET occurrences = occurrences WHERE dedup_key = :key"), {"key": key}
        )


async def _open_alarm(session: AsyncSession, key: str) -> Alarm | None:
    rows = await session.exec(
        select(Alarm)
        .where(Alarm.dedup_key == key, col(Alarm.state).in_(OPEN_ALARM_STATES))
        .order_by(col(Alarm.raised_at).desc())
        .limit(1)
    )
    return rows.first()


async def _active_work_order(session: AsyncSession, key: str) -> str | None:
    """The work order still open for this fault (opened for an earlier alarm of the same key), if any."""
    rows = await session.exec(
        select(WorkOrder.id)
        .join(Alarm, col(Alarm.work_order_id) == col(WorkOrder.id))
        .where(Alarm.dedup_key == key, col(WorkOrder.state).in_([int(s) for s in ACTIVE_STATES]))
        .order_by(col(WorkOrder.created_at).desc())
        .limit(1)
    )
    return rows.first()


async def _raised_recently(session: AsyncSession, key: str, now: dt.datetime) -> int:
    rows = await session.exec(
        select(func.count()).select_from(Alarm).where(Alarm.dedup_key == key, Alarm.raised_at >= now - _flap.window)
    )
    return int(rows.one())


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
    open_work_order: bool | None = None,
    work_order_source: int = WORK_ORDER_SOURCE_ALARM,
    title: str = "",
    equipment_kind: str | None = None,
) -> Opened:
    """Records an alarm, or a repeat of the open one for the same fault and equipment. A new alarm opens a work
    order when asked (True), never (False), or by the operator's rules (None: the SLA policy's
    `auto_work_order` for its level and equipment kind; by default MAJOR and above) — unless one is already
    open for the same fault, which it joins."""
    key = dedup_key(code, station_id, resource_id, vehicle_id, pack_id)
    await _serialize(session, key)
    existing = await _open_alarm(session, key)
    if existing is not None:
        existing.occurrences += 1
        existing.last_seen_at = now
        existing.level = max(existing.level, level)
        existing.message = message[:1000] or existing.message
        session.add(existing)
        await publish_alarm(session, existing, REPEATED)
        return Opened(existing.id, existing.work_order_id)
    kind = equipment_kind or equipment_kind_of(resource_id, vehicle_id, pack_id)
    alarm = Alarm(
        id=new_id("alm"), source=source, level=level, operator_id=operator_id, station_id=station_id,
        resource_id=resource_id, vehicle_id=vehicle_id, pack_id=pack_id, code=code[:64], message=message[:1000],
        raised_at=now, last_seen_at=now, dedup_key=key,
    )  # fmt: skip
    alarm.flapping = await _raised_recently(session, key, now) + 1 > _flap.threshold
    if open_work_order is None:
        open_work_order = (await sla.policy_for(session, operator_id, kind, level)).auto_work_order
    if open_work_order:
        alarm.work_order_id = await _active_work_order(session, key)
        if alarm.work_order_id is None:
            new = workorders.NewWorkOrder(
                source=work_order_source, level=level, title=title or f"{code}: {message}", description=message,
                operator_id=operator_id, station_id=station_id, resource_id=resource_id or vehicle_id,
                pack_id=pack_id, alarm_id=alarm.id, equipment_kind=kind, fault_code=code,
            )  # fmt: skip
            order = await workorders.open_work_order(session, new, now=now, actor_id="platform", actor_role="platform")
            alarm.work_order_id = order.id
    session.add(alarm)
    await publish_alarm(session, alarm, FLAPPING if alarm.flapping else RAISED)
    await risk.after_alarm(session, alarm, kind, now)  # a fault that keeps coming back: preventive work
    return Opened(alarm.id, alarm.work_order_id)


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
    a condition re-detected by a periodic loop must not write a row (or count an occurrence) every period."""
    open_already = await session.exec(
        select(Alarm.id)
        .where(
            col(Alarm.code) == code[:64],
            col(Alarm.resource_id) == resource_id,
            col(Alarm.state).in_(OPEN_ALARM_STATES),
        )
        .limit(1)
    )
    if open_already.first() is not None:
        return None
    return await raise_alarm(
        session, now=now, source=ALARM_SOURCE_PLATFORM, level=level, code=code, message=message,
        operator_id=operator_id, station_id=station_id, resource_id=resource_id, pack_id=pack_id,
        open_work_order=False,
    )  # fmt: skip


def _clear(alarm: Alarm, now: dt.datetime, by: str | None) -> None:
    alarm.state, alarm.cleared_at, alarm.cleared_by = ALARM_STATE_CLEARED, now, by


async def _clear_automatically(session: AsyncSession, alarms: list[Alarm], now: dt.datetime) -> int:
    """The equipment says the condition is gone: clears each alarm, except flapping ones (a person clears
    those, after looking)."""
    cleared = 0
    for alarm in alarms:
        if alarm.flapping:
            continue
        _clear(alarm, now, None)
        session.add(alarm)
        await publish_alarm(session, alarm, CLEARED)
        cleared += 1
    return cleared


async def clear_alarms(session: AsyncSession, *, now: dt.datetime, code: str, resource_ids: list[str]) -> int:
    """Clears the open alarms with this code for these resources (the condition is gone); returns how many.
    Flapping alarms stay open."""
    if not resource_ids:
        return 0
    rows = await session.exec(
        select(Alarm).where(
            col(Alarm.code) == code[:64],
            col(Alarm.resource_id).in_(resource_ids),
            col(Alarm.state).in_(OPEN_ALARM_STATES),
        )
    )
    return await _clear_automatically(session, list(rows), now)


async def clear_equipment_alarm(
    session: AsyncSession,
    *,
    now: dt.datetime,
    code: str,
    station_id: str | None,
    resource_id: str | None = None,
    vehicle_id: str | None = None,
    pack_id: str | None = None,
) -> int:
    """A station reported the fault gone (an AlarmReport with `cleared`): clears its open alarm."""
    key = dedup_key(code, station_id, resource_id, vehicle_id, pack_id)
    rows = await session.exec(select(Alarm).where(Alarm.dedup_key == key, col(Alarm.state).in_(OPEN_ALARM_STATES)))
    return await _clear_automatically(session, list(rows), now)


async def get_alarm(session: AsyncSession, alarm_id: str) -> Alarm:
    alarm = await session.get(Alarm, alarm_id)
    if alarm is None:
        raise NotFound(f"alarm {alarm_id} not found")
    return alarm


async def acknowledge(session: AsyncSession, alarm: Alarm, *, actor_id: str, note: str, now: dt.datetime) -> Alarm:
    """Someone has seen it. Acknowledging again changes nothing (the first acknowledgement stands)."""
    if alarm.acked_at is not None:
        return alarm
    alarm.acked_at, alarm.acked_by, alarm.ack_note = now, actor_id[:64], note[:1000]
    if alarm.state == ALARM_STATE_ACTIVE:
        alarm.state = ALARM_STATE_ACKNOWLEDGED
    session.add(alarm)
    await publish_alarm(session, alarm, ACKNOWLEDGED)
    return alarm


async def clear_by_person(session: AsyncSession, alarm: Alarm, *, actor_id: str, note: str, now: dt.datetime) -> Alarm:
    """A person clears an alarm, flapping or not. Clearing a cleared alarm changes nothing."""
    if alarm.state == ALARM_STATE_CLEARED:
        return alarm
    _clear(alarm, now, actor_id[:64])
    if note and not alarm.ack_note:
        alarm.ack_note = note[:1000]
    session.add(alarm)
    await publish_alarm(session, alarm, CLEARED)
    return alarm


async def clear_for_work_order(session: AsyncSession, work_order_id: str, *, actor_id: str, now: dt.datetime) -> int:
    """Clears the open alarms linked to a work order (closing it with `clear_alarms`)."""
    rows = await session.exec(
        select(Alarm).where(Alarm.work_order_id == work_order_id, col(Alarm.state).in_(OPEN_ALARM_STATES))
    )
    alarms = list(rows)
    for alarm in alarms:
        await clear_by_person(session, alarm, actor_id=actor_id, note="", now=now)
    return len(alarms)


async def alarm_ids_of(session: AsyncSession, work_order_id: str) -> list[str]:
    rows = await session.exec(select(Alarm.id).where(Alarm.work_order_id == work_order_id).order_by(col(Alarm.id)))
    return list(rows)


@dataclass(frozen=True)
class AlarmFilter:
    operator_id: str | None = None  # None: every operator (the admin)
    station_id: str = ""
    vehicle_id: str = ""
    pack_id: str = ""
    states: tuple[int, ...] = ()
    min_level: int = 0
    sources: tuple[int, ...] = ()
    raised_from: dt.datetime | None = None
    raised_to: dt.datetime | None = None


def _where(f: AlarmFilter) -> list[Any]:
    conditions: list[Any] = []
    for column, value in ((Alarm.operator_id, f.operator_id), (Alarm.station_id, f.station_id),
                          (Alarm.vehicle_id, f.vehicle_id), (Alarm.pack_id, f.pack_id)):  # fmt: skip
        if value:
            conditions.append(col(column) == value)
    if f.states:
        conditions.append(col(Alarm.state).in_(f.states))
    if f.sources:
        conditions.append(col(Alarm.source).in_(f.sources))
    if f.min_level:
        conditions.append(col(Alarm.level) >= f.min_level)
    if f.raised_from is not None:
        conditions.append(col(Alarm.raised_at) >= f.raised_from)
    if f.raised_to is not None:
        conditions.append(col(Alarm.raised_at) < f.raised_to)
    return conditions


async def list_alarms(session: AsyncSession, f: AlarmFilter, page: Page) -> list[Alarm]:
    """Newest first (ids are time-ordered), keyset-paged."""
    conditions = _where(f)
    if page.after:
        conditions.append(col(Alarm.id) < page.after)
    rows = await session.exec(select(Alarm).where(*conditions).order_by(col(Alarm.id).desc()).limit(page.size))
    return list(rows)


async def open_alarms(session: AsyncSession, f: AlarmFilter, limit: int) -> list[Alarm]:
    """The open alarms matching `f`: most severe, then newest first (WatchAlarms' snapshot)."""
    conditions = [*_where(f), col(Alarm.state).in_(OPEN_ALARM_STATES)]
    query = select(Alarm).where(*conditions).order_by(col(Alarm.level).desc(), col(Alarm.id).desc()).limit(limit)
    return list(await session.exec(query))


async def alarms_by_id(session: AsyncSession, ids: list[str]) -> list[Alarm]:
    if not ids:
        return []
    return list(await session.exec(select(Alarm).where(col(Alarm.id).in_(ids))))
