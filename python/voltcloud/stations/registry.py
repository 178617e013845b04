"""The station registry's rules: who sees which station, lookups and filtered listings."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud import engine_limits
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import ConnectorStatus
from voltcloud.platform.errors import Aborted, FieldViolation, InvalidArgument, NotFound
from voltcloud.platform.geo import Box
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.stations import sessions
from voltcloud.stations.models import Connector, Operator, Station, StationSession
from voltcloud.stations.ports import Settlement


@dataclass(frozen=True)
class StationFilter:
    operator_id: str | None = None
    kind: int | None = None
    box: Box | None = None
    connector_standards: frozenset[int] = frozenset()


@dataclass(frozen=True)
class StationView:
    station: Station
    connectors: list[Connector]


def _visible_operator(principal: Principal) -> str | None:
    """Operators manage only their own stations; drivers and fleets browse the whole public network."""
    if principal.role in (Role.OPERATOR, Role.ENGINEER) and principal.tenant is not None:
        return principal.tenant.id
    return None


async def get_station(session: AsyncSession, principal: Principal, station_id: str) -> StationView:
    station = await session.get(Station, station_id)
    scope = _visible_operator(principal)
    # A station outside the caller's tenant is reported as missing, so ids cannot be probed.
    if station is None or (scope is not None and station.operator_id != scope):
        raise NotFound(f"station {station_id} not found")
    connectors = await session.exec(
        select(Connector).where(Connector.station_id == station_id).order_by(col(Connector.id))
    )
    return StationView(station, list(connectors))


async def assign_rate_model(
    session: AsyncSession,
    principal: Principal,
    *,
    station_id: str,
    rate_model_id: str,
    customer_account_id: str = "",
    fleet_id: str = "",
    effective_from: dt.datetime | None = None,
    settlement: Settlement,
) -> str:
    """Assigns a rate model to one of the caller's stations (optionally for one customer account or fleet)
    through settlement's public function; another operator's station is NOT_FOUND. Returns the assignment id."""
    if not station_id:
        raise InvalidArgument.for_field("station_id", "is required")
    if not rate_model_id:
        raise InvalidArgument.for_field("rate_model_id", "is required")
    view = await get_station(session, principal, station_id)
    if principal.role is not Role.PLATFORM_ADMIN:
        principal.require_tenant("operator", view.station.operator_id)
    return await settlement.assign_rate_model(
        session,
        rate_model_id=rate_model_id,
        station_id=station_id,
        customer_account_id=customer_account_id,
        fleet_id=fleet_id,
        effective_from=effective_from,
        station_operator_id=view.station.operator_id,
    )


async def list_stations(
    session: AsyncSession, principal: Principal, filters: StationFilter, page: Page
) -> list[StationView]:
    query = select(Station).order_by(col(Station.id)).limit(page.size)
    scope = _visible_operator(principal)
    if scope is not None:
        principal.require_tenant("operator", filters.operator_id or scope)
        query = query.where(Station.operator_id == scope)
    elif filters.operator_id:
        query = query.where(Station.operator_id == filters.operator_id)
    if filters.kind is not None:
        query = query.where(Station.kind == filters.kind)
    if filters.box is not None:
        box = filters.box
        query = query.where(
            col(Station.lat).between(box.south, box.north), col(Station.lng).between(box.west, box.east)
        )
    if filters.connector_standards:
        with_standard = select(Connector.station_id).where(
            col(Connector.standard).in_(sorted(filters.connector_standards))
        )
        query = query.where(col(Station.id).in_(with_standard))
    if page.after is not None:
        query = query.where(col(Station.id) > page.after)
    stations = list(await session.exec(query))
    if not stations:
        return []
    rows = await session.exec(
        select(Connector).where(col(Connector.station_id).in_([s.id for s in stations])).order_by(col(Connector.id))
    )
    by_station: dict[str, list[Connector]] = {}
    for connector in rows:
        by_station.setdefault(connector.station_id, []).append(connector)
    return [StationView(s, by_station.get(s.id, [])) for s in stations]


# ---- registry writes ----


@dataclass(frozen=True)
class ConnectorSpec:
    charger_no: int
    connector_no: int
    standard: int
    max_power_w: int
    index: int = 0  # position within its charger's message, to name the field


# The API path (under "station.") of each engine column of a station row.
_STATION_PATHS = {
    "kind": "kind",
    "lanes": "swap.lane_count",
    "swap_time_s": "swap.swap_duration",
    "slot_count": "swap.slot_count",
    "lat": "position.lat",
    "lng": "position.lng",
}


def check_engine_limits(station: Station, field: str = "station") -> None:
    """Refuses a station row outside the engine's limits (`engine_limits.LIMITS`), naming the API field. Stored, such a
    row would be quarantined by the engine: the station would silently not be served."""
    power = "swap.charging_power_cap_w" if station.kind == engine_limits.STATION_SWAP else "charging.site_power_cap_w"
    problems = engine_limits.station_problems(
        kind=station.kind,
        lanes=station.lanes,
        swap_time_s=station.swap_time_s,
        lat=station.lat,
        lng=station.lng,
        power_cap_w=station.power_cap_w,
        slot_count=station.slot_count,
    )
    if problems:
        raise InvalidArgument.for_fields(
            [FieldViolation(f"{field}.{_STATION_PATHS.get(column, power)}", reason) for column, reason in problems]
        )


def check_connector_limits(connectors: tuple[ConnectorSpec, ...], field: str = "station") -> None:
    """Refuses connectors outside the engine's limits, and more chargers or connectors than a station may have."""
    limits = engine_limits.LIMITS
    violations: list[FieldViolation] = []
    chargers = Counter(c.charger_no for c in connectors)
    if len(chargers) > limits.max_chargers or max(chargers, default=0) > limits.max_chargers:
        violations.append(FieldViolation(f"{field}.charging.chargers", f"at most {limits.max_chargers} chargers"))
    if len(connectors) > limits.max_connectors_per_station:
        violations.append(
            FieldViolation(
                f"{field}.charging.chargers", f"at most {limits.max_connectors_per_station} connectors per station"
            )
        )
    for charger_no, count in sorted(chargers.items()):
        if count > limits.max_connectors_per_charger:
            violations.append(
                FieldViolation(
                    f"{field}.charging.chargers[{charger_no - 1}].connectors",
                    f"at most {limits.max_connectors_per_charger} connectors per charger",
                )
            )
    for c in connectors:
        path = f"{field}.charging.chargers[{c.charger_no - 1}].connectors[{c.index}]"
        if not 1 <= c.connector_no <= limits.max_connectors_per_charger:
            violations.append(
                FieldViolation(
                    f"{path}.ocpp_connector_number", f"must be within [1, {limits.max_connectors_per_charger}]"
                )
            )
        for column, reason in engine_limits.connector_problems(
            standard=c.standard, max_power_w=c.max_power_w, status=ConnectorStatus.AVAILABLE
        ):
            violations.append(FieldViolation(f"{path}.{column}", reason))
    if violations:
        raise InvalidArgument.for_fields(violations[:50])


@dataclass(frozen=True)
class StationSpec:
    operator_id: str
    kind: int
    name: str
    lat: float
    lng: float
    timezone: str
    address: str
    power_cap_w: int
    lanes: int
    slot_count: int
    swap_time_s: int
    enabled: bool
    gateway_id: str | None
    connectors: tuple[ConnectorSpec, ...]


async def create_operator(
    session: AsyncSession, principal: Principal, now: dt.datetime, *, name: str, country: str, currency: str
) -> Operator:
    operator = Operator(id=new_id("op"), name=name, country=country, currency=currency or "CNY", created_at=now)
    session.add(operator)
    return operator


async def create_station(session: AsyncSession, principal: Principal, spec: StationSpec) -> StationView:
    if principal.role is not Role.PLATFORM_ADMIN:
        principal.require_tenant("operator", spec.operator_id)
    if await session.get(Operator, spec.operator_id) is None:
        raise InvalidArgument.for_field("station.operator_id", f"unknown operator {spec.operator_id}")
    station = Station(
        id=new_id("st"),
        operator_id=spec.operator_id,
        kind=spec.kind,
        name=spec.name,
        lat=spec.lat,
        lng=spec.lng,
        timezone=spec.timezone or "Asia/Shanghai",
        address=spec.address,
        power_cap_w=spec.power_cap_w,
        lanes=spec.lanes,
        slot_count=spec.slot_count,
        swap_time_s=spec.swap_time_s,
        enabled=spec.enabled,
        gateway_id=spec.gateway_id,
    )
    check_engine_limits(station)
    check_connector_limits(spec.connectors)
    session.add(station)
    await session.flush()
    connectors: list[Connector] = []
    for i, c in enumerate(spec.connectors):
        connector = Connector(
            id=f"{station.id}-c{c.charger_no}-{c.connector_no}",
            station_id=station.id,
            charger_no=c.charger_no,
            connector_no=c.connector_no,
            standard=c.standard,
            max_power_w=c.max_power_w,
            status=int(ConnectorStatus.AVAILABLE),
        )
        if any(x.id == connector.id for x in connectors):
            raise InvalidArgument.for_field(
                f"station.charging.chargers[{c.charger_no - 1}].connectors[{i}].ocpp_connector_number",
                "is repeated on its charger",
            )
        session.add(connector)
        connectors.append(connector)
    await publish_station(session, station, "created")
    return StationView(station, connectors)


MUTABLE_PATHS = frozenset(
    {"name", "position", "address", "time_zone", "enabled", "gateway_id", "power_cap_w", "lane_count", "slot_count"}
)


async def update_station(
    session: AsyncSession,
    principal: Principal,
    station_id: str,
    expected_version: int,
    paths: frozenset[str],
    spec: StationSpec,
) -> StationView:
    view = await get_station(session, principal, station_id)
    station = view.station
    if principal.role is not Role.PLATFORM_ADMIN:
        principal.require_tenant("operator", station.operator_id)
    if expected_version != station.version:
        raise Aborted(f"station {station_id} is at version {station.version}, not {expected_version}; reload and retry")
    if "name" in paths:
        station.name = spec.name
    if "position" in paths:
        station.lat, station.lng = spec.lat, spec.lng
    if "address" in paths:
        station.address = spec.address
    if "time_zone" in paths:
        station.timezone = spec.timezone
    if "enabled" in paths:
        station.enabled = spec.enabled
    if "gateway_id" in paths:
        station.gateway_id = spec.gateway_id
    if "power_cap_w" in paths:
        station.power_cap_w = spec.power_cap_w
    if "lane_count" in paths:
        station.lanes = spec.lanes
    if "slot_count" in paths:
        station.slot_count = spec.slot_count
    check_engine_limits(station)
    result = await session.exec(
        sa.update(Station)
        .where(col(Station.id) == station_id, col(Station.version) == expected_version)
        .values(
            name=station.name,
            lat=station.lat,
            lng=station.lng,
            address=station.address,
            timezone=station.timezone,
            enabled=station.enabled,
            gateway_id=station.gateway_id,
            power_cap_w=station.power_cap_w,
            lanes=station.lanes,
            slot_count=station.slot_count,
            version=expected_version + 1,
        )
    )
    if result.rowcount != 1:
        raise Aborted(f"station {station_id} changed concurrently; reload and retry")
    await session.refresh(station)
    await publish_station(session, station, "updated")
    return StationView(station, view.connectors)


STATION_TOPIC = "station"


async def publish_station(session: AsyncSession, station: Station, change: str) -> None:
    """A station created (with its connectors) or its description updated: every replica's engine loads it
    (created) or rebuilds (updated: its position, lanes or limits may have changed, which a status cannot say)."""
    payload = {"id": station.id, "change": change, "version": station.version, "operator_id": station.operator_id}
    await feed.publish(session, STATION_TOPIC, station.id, payload)


async def list_visible_sessions(
    session: AsyncSession, principal: Principal, page: Page, *, station_id: str | None, order_id: str | None
) -> list[StationSession]:
    """The sessions of a station or an order that the caller may see: those at stations visible to them."""
    if station_id:
        await get_station(session, principal, station_id)
    rows = await sessions.list_sessions(session, page, station_id=station_id, order_id=order_id)
    if station_id or principal.role is Role.PLATFORM_ADMIN:
        return rows
    visible = []
    for row in rows:
        try:
            await get_station(session, principal, row.station_id)
        except NotFound:
            continue
        visible.append(row)
    return visible
