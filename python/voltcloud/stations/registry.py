"""The station registry's rules: who sees which station, lookups and filtered listings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.errors import NotFound
from voltcloud.platform.geo import Box
from voltcloud.platform.paging import Page
from voltcloud.stations.models import Connector, Station


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
