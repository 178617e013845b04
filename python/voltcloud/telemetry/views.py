"""Reading telemetry, tenant-scoped: a vehicle's live state (or its orders' last facts without telemetry), its
track, alerts, the selection of a WatchVehicles stream, and a gateway's VIN resolution.

Who sees what: the vehicle's fleet manager, the fleet's approved drivers (a private car: its owner) and the
admin (fleet's `visible_vehicle`); another tenant's vehicle reads NOT_FOUND. A gateway sees the vehicles of
its own fleet (token tenant fleet:<id>); a gateway of an operator sees none.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Vehicle, managed_fleet, sub_fleet_of, visible_vehicle
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.geo import Box
from voltcloud.platform.paging import Page, next_page_token
from voltcloud.telemetry import frames
from voltcloud.telemetry.frames import TrackRow
from voltcloud.telemetry.models import VehicleAlert, VehicleLiveState
from voltcloud.telemetry.ports import LastKnown, VehicleFacts
from voltcloud.telemetry.store import VehicleInfo, state_payload, vehicle_infos

MAX_TRACK_WINDOW = dt.timedelta(days=31)
TRACK_PAGE_DEFAULT, TRACK_PAGE_MAX = 500, 5_000


@dataclass(frozen=True)
class StateView:
    """A vehicle's state as answered: the telemetry payload (see `store.state_payload`), or its last facts."""

    payload: dict[str, Any]
    from_telemetry: bool


async def vehicle_state(session: AsyncSession, principal: Principal, facts: VehicleFacts, vehicle_id: str) -> StateView:
    vehicle = await visible_vehicle(session, principal, vehicle_id)
    infos = await vehicle_infos(session, [vehicle.id])
    state = await session.get(VehicleLiveState, vehicle.id)
    if state is not None:
        return StateView(state_payload(state, infos[vehicle.id]), True)
    last = await facts.last_known(session, vehicle.id)
    if last is None:
        raise FailedPrecondition(f"vehicle {vehicle.id} has sent no telemetry and has no order yet: no state known")
    return StateView(_from_facts(infos[vehicle.id], last), False)


def _from_facts(info: VehicleInfo, last: LastKnown) -> dict[str, Any]:
    v = info.vehicle
    return {
        "vehicle_id": v.id, "fleet_id": v.fleet_id, "sub_fleet_id": v.sub_fleet_id, "driver_id": info.driver_id,
        "reading_at": last.at, "lat": round(last.lat * 1e6), "lng": round(last.lng * 1e6), "soc": last.soc_permille,
        "speed": 0, "charging": False, "alarm_level": 0, "alarm_codes": "", "version": 0,
    }  # fmt: skip


@dataclass(frozen=True)
class TrackQuery:
    vehicle_id: str
    start: dt.datetime
    end: dt.datetime
    metrics: Sequence[int]
    page_size: int
    after: tuple[dt.datetime, int] | None  # (time, metric) of the last reading of the previous page


def track_page(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", f"must not be negative, got {page_size}")
    return min(page_size or TRACK_PAGE_DEFAULT, TRACK_PAGE_MAX)


async def track(session: AsyncSession, principal: Principal, q: TrackQuery) -> list[TrackRow]:
    """A page of readings by (time, metric). Frames are read a page's worth at a time: a frame holds up to one
    reading per metric, fewer when `metrics` selects."""
    vehicle = await visible_vehicle(session, principal, q.vehicle_id)
    if q.end <= q.start:
        raise InvalidArgument.for_field("window.end", "must be after window.start")
    if q.end - q.start > MAX_TRACK_WINDOW:
        raise InvalidArgument.for_field("window", f"must span at most {MAX_TRACK_WINDOW.days} days")
    table = frames.TABLE
    columns = [table.c[name] for name in frames.COLUMNS]
    connection = await session.connection()
    out: list[TrackRow] = []
    start, inclusive = q.start if q.after is None else max(q.start, q.after[0]), True
    while len(out) < q.page_size:
        after = table.c.time >= start if inclusive else table.c.time > start
        query = (
            sa.select(*columns)
            .where(table.c.vehicle_id == vehicle.id, after, table.c.time < q.end)
            .order_by(table.c.time)
            .limit(q.page_size)
        )
        rows = list(await connection.execute(query))
        for row in rows:
            out.extend(r for r in frames.decode(row, q.metrics) if q.after is None or (r.time, r.metric) > q.after)
        if len(rows) < q.page_size:
            break
        start, inclusive = rows[-1].time, False
    return out[: q.page_size]


def track_token(rows: Sequence[TrackRow], size: int) -> str:
    if len(rows) < size or not rows:
        return ""
    last = rows[-1]
    return next_page_token(f"{last.time.isoformat()}|{last.metric}", len(rows), Page(size, None))


def parse_track_after(after: str | None) -> tuple[dt.datetime, int] | None:
    if after is None:
        return None
    try:
        when, metric = after.rsplit("|", 1)
        at = dt.datetime.fromisoformat(when)
        if at.tzinfo is None:
            raise ValueError
        return at, int(metric)
    except ValueError:
        raise InvalidArgument.for_field("page_token", "is not a token this server issued") from None


async def list_alerts(
    session: AsyncSession, principal: Principal, *, fleet_id: str, vehicle_id: str, open_only: bool, page: Page
) -> list[VehicleAlert]:
    query = select(VehicleAlert)
    if vehicle_id:
        vehicle = await visible_vehicle(session, principal, vehicle_id)
        if fleet_id and vehicle.fleet_id != fleet_id:
            raise NotFound(f"vehicle {vehicle_id} not found in fleet {fleet_id}")
        query = query.where(VehicleAlert.vehicle_id == vehicle.id)
    elif fleet_id:
        fleet = await managed_fleet(session, principal, fleet_id)
        query = query.where(VehicleAlert.fleet_id == fleet.id)
    else:
        raise InvalidArgument.for_field("fleet_id", "is required unless vehicle_id is given")
    if open_only:
        query = query.where(col(VehicleAlert.open_key).is_not(None))
    if page.after is not None:
        query = query.where(col(VehicleAlert.id) < page.after)
    return list(await session.exec(query.order_by(col(VehicleAlert.id).desc()).limit(page.size)))


def alert_detail(row: VehicleAlert) -> dict[str, Any]:
    detail: dict[str, Any] = json.loads(row.detail)
    return detail


# ---- WatchVehicles ----


@dataclass(frozen=True)
class Selection:
    """What one WatchVehicles stream follows; `matches` decides on a feed payload alone (no table read)."""

    fleet_id: str | None = None
    sub_fleet_id: str | None = None
    vehicle_id: str | None = None
    box: Box | None = None
    alerts: bool = False

    def matches(self, payload: dict[str, Any]) -> bool:
        if self.vehicle_id is not None and payload.get("vehicle_id") != self.vehicle_id:
            return False
        if self.fleet_id is not None and payload.get("fleet_id") != self.fleet_id:
            return False
        if self.sub_fleet_id is not None and payload.get("sub_fleet_id") != self.sub_fleet_id:
            return False
        return self.box is None or "lat" not in payload or _inside(self.box, payload.get("lat"), payload.get("lng"))

    def matches_alert(self, payload: dict[str, Any]) -> bool:
        if not self.alerts:
            return False
        if self.vehicle_id is not None:
            return payload.get("vehicle_id") == self.vehicle_id
        return self.fleet_id is None or payload.get("fleet_id") == self.fleet_id


def _inside(box: Box, lat: int | None, lng: int | None) -> bool:
    if lat is None or lng is None:
        return False
    return box.south <= lat / 1e6 <= box.north and box.west <= lng / 1e6 <= box.east


async def selection(
    session: AsyncSession,
    principal: Principal,
    *,
    fleet_id: str,
    sub_fleet_id: str,
    vehicle_id: str,
    box: Box | None,
    alerts: bool,
) -> Selection:
    """The stream's selection after the caller's scope: a manager only within their fleet (a box included), a
    driver one vehicle they see, the admin anything."""
    if vehicle_id:
        vehicle = await visible_vehicle(session, principal, vehicle_id)
        return Selection(vehicle_id=vehicle.id, alerts=alerts)
    if principal.role is Role.DRIVER:
        raise InvalidArgument.for_field("vehicle_id", "is required for a driver")
    if fleet_id or not principal.is_admin:
        if not fleet_id and principal.tenant is not None and principal.tenant.kind == "fleet":
            fleet_id = principal.tenant.id
        if not fleet_id:
            raise InvalidArgument.for_field("fleet_id", "is required")
        fleet = await managed_fleet(session, principal, fleet_id)
        if sub_fleet_id:
            await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")
        return Selection(fleet.id, sub_fleet_id or None, None, box, alerts)
    if sub_fleet_id:
        raise InvalidArgument.for_field("sub_fleet_id", "needs fleet_id")
    if box is None:
        raise InvalidArgument.for_field("bounds", "fleet_id, vehicle_id or bounds is required")
    return Selection(box=box, alerts=alerts)


SNAPSHOT_MAX = 10_000


async def snapshot(session: AsyncSession, sel: Selection) -> list[dict[str, Any]]:
    """The selected vehicles' current states (those with telemetry), at most SNAPSHOT_MAX."""
    query = select(VehicleLiveState, Vehicle).join(Vehicle, col(Vehicle.id) == col(VehicleLiveState.vehicle_id))
    if sel.vehicle_id is not None:
        query = query.where(VehicleLiveState.vehicle_id == sel.vehicle_id)
    if sel.fleet_id is not None:
        query = query.where(Vehicle.fleet_id == sel.fleet_id)
    if sel.sub_fleet_id is not None:
        query = query.where(Vehicle.sub_fleet_id == sel.sub_fleet_id)
    if sel.box is not None:
        b = sel.box
        query = query.where(
            col(VehicleLiveState.lat_microdeg).between(round(b.south * 1e6), round(b.north * 1e6)),
            col(VehicleLiveState.lng_microdeg).between(round(b.west * 1e6), round(b.east * 1e6)),
        )
    rows = await session.exec(query.order_by(col(VehicleLiveState.vehicle_id)).limit(SNAPSHOT_MAX))
    return [state_payload(state, VehicleInfo(vehicle, state.driver_id)) for state, vehicle in rows]


# ---- gateways ----


async def resolve_vins(session: AsyncSession, principal: Principal, vins: Sequence[str]) -> list[tuple[str, str]]:
    """(VIN upper-cased, vehicle id or "") per VIN, in order; a VIN outside the gateway's scope reads unknown."""
    wanted = [v.strip().upper() for v in vins]
    for i, vin in enumerate(wanted):
        if len(vin) != 17:
            raise InvalidArgument.for_field(f"vins[{i}]", f"must be 17 characters, got {len(vin)}")
    found = await session.exec(select(Vehicle).where(col(Vehicle.vin).in_(sorted(set(wanted)))))
    by_vin = {v.vin: v for v in found if gateway_sees(principal, v)}
    return [(vin, by_vin[vin].id if vin in by_vin else "") for vin in wanted]


def gateway_sees(principal: Principal, vehicle: Vehicle) -> bool:
    if principal.is_admin:
        return True
    tenant = principal.tenant
    return (
        principal.role is Role.GATEWAY
        and tenant is not None
        and tenant.kind == "fleet"
        and vehicle.fleet_id == tenant.id
    )


async def gateway_vehicles(
    session: AsyncSession,
    principal: Principal,
    vehicle_ids: Sequence[str],
    known: Mapping[str, VehicleInfo] | None = None,
) -> tuple[dict[str, VehicleInfo], list[str]]:
    """The vehicles a gateway may report, and the ids it may not (unknown or another tenant's). `known`:
    vehicles read recently (a scope cache), not read again; the tenant check applies to them all the same."""
    known = known or {}
    infos = {vid: known[vid] for vid in vehicle_ids if vid in known}
    if len(infos) < len(vehicle_ids):
        infos.update(await vehicle_infos(session, [vid for vid in vehicle_ids if vid not in infos]))
    allowed = {vid: info for vid, info in infos.items() if gateway_sees(principal, info.vehicle)}
    refused = [vid for vid in dict.fromkeys(vehicle_ids) if vid not in allowed]
    return allowed, refused
