"""Driving alerts: speeding (per fleet limit), fatigue (continuous driving without a rest), low battery (with
the nearest reachable swap/charge option, quotable) and GB/T 32960 alarm levels 1-3 (also raised as platform
alarms through maintenance). One open alert per kind per vehicle (per code for vehicle alarms) until it
clears: the row's unique `open_key`. Each change is a row and a "vehicle_alert" feed change.

`decide` is the rule (pure); `apply` writes what it decided in the batch's transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import managed_fleet
from voltcloud.maintenance import api as maintenance
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal
from voltcloud.platform.enums import AlarmLevel, VehicleAlertKind
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.ids import new_id
from voltcloud.telemetry.models import FleetAlertLimits, VehicleAlert
from voltcloud.telemetry.ports import PowerUpHint

ALERT_TOPIC = "vehicle_alert"
MOVING_M_PER_H = 5_000  # below 5 km/h the vehicle counts as stopped (creeping in a queue is not driving)


@dataclass(frozen=True)
class Limits:
    speed_m_per_h: int
    fatigue_drive: dt.timedelta
    fatigue_rest: dt.timedelta
    low_soc_permille: int


@dataclass(frozen=True)
class Open:
    kind: VehicleAlertKind
    level: int
    at: dt.datetime
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    code: str = ""


@dataclass(frozen=True)
class Clear:
    kind: VehicleAlertKind
    at: dt.datetime
    code: str = ""


Action = Open | Clear


@dataclass(frozen=True)
class Driving:
    """What the batch says about the vehicle, for the rules: its accepted speeds in time order and the state."""

    speeds: Sequence[tuple[dt.datetime, int]]
    reading_at: dt.datetime
    driving_since: dt.datetime | None
    soc_permille: int | None
    soc_read: bool  # the batch had an accepted SOC reading


def decide(driving: Driving, limits: Limits) -> list[Action]:
    """The alerts to open and clear for one vehicle after one batch (the store skips what is already so)."""
    actions: list[Action] = []
    if driving.speeds:
        fastest_at, fastest = max(driving.speeds, key=lambda s: s[1])
        last_at, last = driving.speeds[-1]
        if fastest > limits.speed_m_per_h:
            message = f"{fastest / 1000:.0f} km/h over the limit of {limits.speed_m_per_h / 1000:.0f} km/h"
            detail = {"speed_m_per_h": fastest, "limit": limits.speed_m_per_h}
            actions.append(Open(VehicleAlertKind.SPEEDING, int(AlarmLevel.WARNING), fastest_at, message, detail))
        if last <= limits.speed_m_per_h:
            actions.append(Clear(VehicleAlertKind.SPEEDING, last_at))
    since = driving.driving_since
    if since is not None and driving.reading_at - since > limits.fatigue_drive:
        hours = (driving.reading_at - since).total_seconds() / 3600
        message = f"driving {hours:.1f} h without a rest of {limits.fatigue_rest}"
        detail = {"driving_s": int((driving.reading_at - since).total_seconds())}
        actions.append(Open(VehicleAlertKind.FATIGUE, int(AlarmLevel.WARNING), driving.reading_at, message, detail))
    elif since is None:
        actions.append(Clear(VehicleAlertKind.FATIGUE, driving.reading_at))
    soc = driving.soc_permille
    if soc is not None and driving.soc_read:
        if soc < limits.low_soc_permille:
            message = f"SOC {soc / 10:.1f}% below {limits.low_soc_permille / 10:.1f}%"
            detail = {"soc_permille": soc, "limit": limits.low_soc_permille}
            actions.append(
                Open(VehicleAlertKind.LOW_BATTERY, int(AlarmLevel.WARNING), driving.reading_at, message, detail)
            )
        else:
            actions.append(Clear(VehicleAlertKind.LOW_BATTERY, driving.reading_at))
    return actions


def track_driving(
    driving_since: dt.datetime | None,
    stopped_since: dt.datetime | None,
    at: dt.datetime,
    speed: int,
    rest: dt.timedelta,
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(driving_since, stopped_since) after a speed reading: driving starts when the vehicle moves, and only a
    stop of at least `rest` ends it (a red light does not)."""
    if speed >= MOVING_M_PER_H:
        return (driving_since or at), None
    stopped = stopped_since or at
    if at - stopped >= rest:
        return None, stopped
    return driving_since, stopped


async def limits_of(session: AsyncSession, fleet_ids: Sequence[str], default: Limits) -> dict[str, Limits]:
    """Each fleet's limits: its own row's values where set, the platform's defaults otherwise."""
    found: dict[str, Limits] = {}
    if not fleet_ids:
        return found
    rows = await session.exec(select(FleetAlertLimits).where(col(FleetAlertLimits.fleet_id).in_(list(fleet_ids))))
    for row in rows:
        found[row.fleet_id] = Limits(
            row.speed_limit_m_per_h or default.speed_m_per_h,
            dt.timedelta(seconds=row.fatigue_drive_s) if row.fatigue_drive_s else default.fatigue_drive,
            dt.timedelta(seconds=row.fatigue_rest_s) if row.fatigue_rest_s else default.fatigue_rest,
            default.low_soc_permille if row.low_soc_permille is None else row.low_soc_permille,
        )
    return found


async def set_fleet_limits(
    session: AsyncSession, principal: Principal, fleet_id: str, wanted: Limits, default: Limits
) -> Limits:
    """A fleet's own limits (its manager or the admin); a zero value takes the default. Returns those in force."""
    fleet = await managed_fleet(session, principal, fleet_id)
    if wanted.speed_m_per_h < 0:
        raise InvalidArgument.for_field("limits.speed_limit_m_per_h", "must not be negative")
    if not 0 <= wanted.low_soc_permille <= 1000:
        raise InvalidArgument.for_field("limits.low_soc_permille", f"must be 0..1000, got {wanted.low_soc_permille}")
    row = await session.get(FleetAlertLimits, fleet.id) or FleetAlertLimits(fleet_id=fleet.id)
    row.speed_limit_m_per_h = wanted.speed_m_per_h or None
    row.fatigue_drive_s = int(wanted.fatigue_drive.total_seconds()) or None
    row.fatigue_rest_s = int(wanted.fatigue_rest.total_seconds()) or None
    row.low_soc_permille = wanted.low_soc_permille or None
    session.add(row)
    await session.flush()
    return (await limits_of(session, [fleet.id], default))[fleet.id]


def open_key(vehicle_id: str, kind: int, code: str = "") -> str:
    return f"{vehicle_id}:{kind}:{code}" if code else f"{vehicle_id}:{kind}"


async def open_alerts(session: AsyncSession, vehicle_ids: Sequence[str]) -> dict[str, VehicleAlert]:
    """The open alerts of these vehicles by open_key."""
    if not vehicle_ids:
        return {}
    rows = await session.exec(
        select(VehicleAlert).where(
            col(VehicleAlert.vehicle_id).in_(list(vehicle_ids)), col(VehicleAlert.open_key).is_not(None)
        )
    )
    return {row.open_key: row for row in rows if row.open_key}


@dataclass
class Subject:
    vehicle_id: str
    fleet_id: str | None
    driver_id: str | None


async def apply(
    session: AsyncSession,
    subject: Subject,
    actions: Sequence[Action],
    opened: dict[str, VehicleAlert],
    hint: PowerUpHint | None = None,
) -> list[VehicleAlert]:
    """Writes the decided actions that change something (an Open of an open kind, a Clear of a closed one are
    no-ops) and publishes each change; returns the changed rows."""
    changed: list[VehicleAlert] = []
    for action in actions:
        key = open_key(subject.vehicle_id, action.kind, action.code)
        current = opened.get(key)
        if isinstance(action, Open) and current is None:
            detail = dict(action.detail)
            if action.kind is VehicleAlertKind.LOW_BATTERY and hint is not None:
                detail["power_up"] = asdict(hint)
            row = VehicleAlert(
                id=new_id("val"),
                vehicle_id=subject.vehicle_id,
                fleet_id=subject.fleet_id,
                kind=int(action.kind),
                level=action.level,
                open_key=key,
                opened_at=action.at,
                message=action.message[:200],
                detail=json.dumps(detail, separators=(",", ":")),
                driver_id=subject.driver_id,
            )
            session.add(row)
            opened[key] = row
            changed.append(row)
        elif isinstance(action, Clear) and current is not None:
            current.open_key = None
            current.cleared_at = action.at
            session.add(current)
            del opened[key]
            changed.append(current)
    for row in changed:
        await feed.publish(session, ALERT_TOPIC, row.vehicle_id, alert_payload(row))
    return changed


def alert_payload(row: VehicleAlert) -> dict[str, Any]:
    return {
        "id": row.id,
        "vehicle_id": row.vehicle_id,
        "fleet_id": row.fleet_id,
        "kind": row.kind,
        "level": row.level,
        "open": row.open_key is not None,
        "opened_at": row.opened_at,
        "cleared_at": row.cleared_at,
        "message": row.message,
        "detail": json.loads(row.detail),
        "driver_id": row.driver_id,
    }


async def vehicle_alarm(
    session: AsyncSession,
    subject: Subject,
    *,
    code: str,
    level: int,
    message: str,
    cleared: bool,
    at: dt.datetime,
    now: dt.datetime,
) -> list[VehicleAlert]:
    """A GB/T 32960 alarm (levels 1-3 map to WARNING, MAJOR, CRITICAL): a platform alarm through maintenance
    (a work order from MAJOR on: maintenance's rule) and a VEHICLE_ALARM alert; a clear closes both."""
    code = code or f"GBT_LEVEL_{level}"
    opened = await open_alerts(session, [subject.vehicle_id])
    if cleared:
        await maintenance.clear_alarms(session, now=now, code=code, resource_ids=[subject.vehicle_id])
        return await apply(session, subject, [Clear(VehicleAlertKind.VEHICLE_ALARM, at, code)], opened)
    if open_key(subject.vehicle_id, VehicleAlertKind.VEHICLE_ALARM, code) in opened:
        return []  # already raised: a terminal repeats its alarm in every frame
    platform_level = gbt_level(level)
    await maintenance.raise_alarm(
        session,
        now=now,
        source=maintenance.ALARM_SOURCE_VEHICLE,
        level=platform_level,
        code=code,
        message=message or f"GB/T 32960 level-{level} alarm {code} on vehicle {subject.vehicle_id}",
        operator_id=None,
        resource_id=subject.vehicle_id,
        vehicle_id=subject.vehicle_id,
        open_work_order=platform_level >= AlarmLevel.MAJOR,
    )
    text = message or f"GB/T 32960 alarm {code}"
    action = Open(VehicleAlertKind.VEHICLE_ALARM, platform_level, at, text, {"code": code, "gbt_level": level}, code)
    return await apply(session, subject, [action], opened)


def gbt_level(level: int) -> int:
    """GB/T 32960 levels 1 (slight), 2 (affects performance), 3 (highest: stop and evacuate) as AlarmLevel.
    An AlarmReport may also carry an AlarmLevel number directly (values above 3 are taken as such)."""
    if level <= 1:
        return int(AlarmLevel.WARNING)
    if level == 2:
        return int(AlarmLevel.MAJOR)
    if level == 3:
        return int(AlarmLevel.CRITICAL)
    return level
