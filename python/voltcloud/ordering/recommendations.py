"""ListRecommendations: nearby resources for browsing (no quote, no hold), from the engine's live view.

Stations by travel time with their free compatible connectors / ready compatible packs, power and the
energy price now (settlement's estimate of 10 kWh at this station for this customer); valet specialists
and vans near the position. Paged by offset over the ranked list.
"""

from __future__ import annotations

from dataclasses import dataclass

from voltcloud.config import Settings
from voltcloud.engine import STATION_CHARGING, STATION_SWAP, UNIT_SPECIALIST, UNIT_VAN
from voltcloud.fleet.api import Vehicle
from voltcloud.ordering import payments
from voltcloud.ordering.lifecycle import UnitOfWork
from voltcloud.ordering.quoting import vehicle_for
from voltcloud.ordering.states import Mode
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock
from voltcloud.platform.enums import ConnectorStatus, PackState
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.geo import parse_position
from voltcloud.platform.paging import Page

DEFAULT_RADIUS_M = 10_000
MAX_RADIUS_M = 100_000
PRICE_PROBE_WH = 10_000


@dataclass(frozen=True)
class RecommendationInput:
    lat: float
    lng: float
    radius_m: int = 0
    vehicle_id: str = ""
    modes: frozenset[int] = frozenset()
    standards: frozenset[int] = frozenset()
    min_power_w: int = 0


@dataclass(frozen=True)
class Recommendation:
    mode: int
    station_id: str
    name: str
    lat: float
    lng: float
    distance_m: int
    eta_s: int
    available_connectors: int
    ready_packs: int
    wait_s: int
    energy_price_micros_per_kwh: int
    currency: str
    max_power_w: int
    resource_id: str = ""


async def recommend(
    uow: UnitOfWork, clock: Clock, settings: Settings, principal: Principal, inp: RecommendationInput, page: Page
) -> tuple[list[Recommendation], int]:
    """One page of recommendations and the offset of the next page (0 when this was the last)."""
    parse_position("position", inp.lat, inp.lng)
    if not 0 <= inp.radius_m <= MAX_RADIUS_M:
        raise InvalidArgument.for_field("radius_m", f"must be within [0, {MAX_RADIUS_M}]")
    if page.after is not None and not page.after.isdigit():
        raise InvalidArgument.for_field("page_token", "is not a token this server issued")
    radius = inp.radius_m or DEFAULT_RADIUS_M
    modes = inp.modes or frozenset(int(m) for m in Mode)
    now = clock.now()
    engine = uow.engine
    vehicle: Vehicle | None = None
    async with uow.db.transaction("ordering.recommend") as session:
        if inp.vehicle_id:
            vehicle = await vehicle_for(session, principal, inp.vehicle_id)
        found: list[Recommendation] = []
        for station, _distance in engine.nearest_stations(inp.lat, inp.lng, k=200, radius_m=radius):
            mode = Mode.SWAP if station.kind == STATION_SWAP else Mode.CHARGE
            if mode not in modes:
                continue
            connectors, packs = engine.station_resources(station.id)
            free = [
                c for c in connectors
                if c["status"] == ConnectorStatus.AVAILABLE
                and (vehicle is None or vehicle.connector_mask & (1 << int(c["standard"])))
                and (not inp.standards or int(c["standard"]) in inp.standards)
                and int(c["max_power_w"]) >= inp.min_power_w
            ]  # fmt: skip
            ready = [
                p for p in packs
                if p["state"] == PackState.READY and (vehicle is None or vehicle.pack_type_id == int(p["pack_type"]))
            ]  # fmt: skip
            if station.kind == STATION_CHARGING and not free:
                continue
            if station.kind == STATION_SWAP and (not ready or (vehicle is not None and vehicle.pack_type_id is None)):
                continue
            road_m, eta_s = engine.travel(inp.lat, inp.lng, station.lat, station.lng, now)
            price = await payments.estimate(
                session,
                station_id=station.id,
                customer_kind="fleet" if vehicle is not None and vehicle.fleet_id else "driver",
                customer_id=(vehicle.fleet_id if vehicle is not None and vehicle.fleet_id else principal.subject) or "",
                start=now,
                energy_wh=PRICE_PROBE_WH,
                duration_s=0,
            )
            found.append(
                Recommendation(
                    mode=int(mode),
                    station_id=station.id,
                    name=station.name,
                    lat=station.lat,
                    lng=station.lng,
                    distance_m=int(road_m),
                    eta_s=int(eta_s),
                    available_connectors=len(free),
                    ready_packs=len(ready),
                    wait_s=0,
                    # minor units per 10 kWh → micros per kWh (1 minor unit = 10,000 micros for CNY/EUR)
                    energy_price_micros_per_kwh=price.amount_minor * 10_000 * 1000 // PRICE_PROBE_WH,
                    currency=price.currency,
                    max_power_w=max((int(c["max_power_w"]) for c in free), default=station.power_cap_w),
                )
            )
    for kind, mode in ((UNIT_SPECIALIST, Mode.VALET), (UNIT_VAN, Mode.MOBILE_VAN)):
        if mode not in modes:
            continue
        for unit, _distance in engine.nearest_units(inp.lat, inp.lng, k=20, radius_m=radius, kind=kind):
            if vehicle is not None and mode is Mode.MOBILE_VAN and not vehicle.connector_mask & unit.connector_mask:
                continue
            road_m, eta_s = engine.travel(unit.lat, unit.lng, inp.lat, inp.lng, now)
            found.append(
                Recommendation(
                    mode=int(mode), station_id="", name=unit.id, lat=unit.lat, lng=unit.lng,
                    distance_m=int(road_m), eta_s=int(eta_s), available_connectors=0, ready_packs=0, wait_s=0,
                    energy_price_micros_per_kwh=0, currency="", max_power_w=0, resource_id=unit.id,
                )
            )  # fmt: skip
    found.sort(key=lambda r: (r.eta_s, r.station_id or r.resource_id))
    offset = int(page.after) if page.after else 0
    chunk = found[offset : offset + page.size]
    next_offset = offset + len(chunk) if offset + len(chunk) < len(found) else 0
    return chunk, next_offset
