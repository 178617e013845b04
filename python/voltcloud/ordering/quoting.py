"""QuotePowerUp: validate, ask the engine for candidates, price them, rank them for this customer, persist."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.engine import Engine, EngineOption, OptionRequest, VehicleProfile
from voltcloud.fleet.api import Driver, Vehicle
from voltcloud.ordering import payments, ranking
from voltcloud.ordering.lifecycle import UnitOfWork
from voltcloud.ordering.models import CustomerProfile, Order, Quote
from voltcloud.ordering.states import Mode, OrderState
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import FieldViolation, InvalidArgument, NotFound
from voltcloud.platform.geo import position_violations
from voltcloud.platform.ids import new_id
from voltcloud.platform.tracing import meter

QUOTE_LATENCY = meter.create_histogram(
    "voltcloud.ordering.quote_power_up.duration",
    unit="ms",
    description="Latency of QuotePowerUp in the domain (validation, engine, pricing, ranking, persistence)",
)

DEFAULT_MAX_OPTIONS = 6
MAX_OPTIONS = 20


@dataclass(frozen=True)
class QuoteInput:
    vehicle_id: str
    lat: float
    lng: float
    soc_permille: int
    target_soc_permille: int
    modes: frozenset[int] = frozenset()
    deadline: dt.datetime | None = None
    max_options: int = 0
    return_lat: float | None = None
    return_lng: float | None = None
    station_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class QuotedOption:
    """One option as persisted in the quote and returned to the client."""

    option_id: str
    rank: int
    rank_reason: int
    mode: int
    resource_kind: int
    resource_id: str
    operator_id: str
    station_id: str | None
    connector_id: str | None
    pack_id: str | None
    unit_id: str | None
    eta_s: int
    wait_s: int
    service_s: int
    finish_at: str  # ISO 8601, UTC
    energy_wh: int
    distance_m: int
    arrival_soc_permille: int
    service_lat: float
    service_lng: float
    price_minor: int
    currency: str
    rate_model_id: str
    rate_model_version: int
    pricing_station_id: str | None = None  # the station whose tariff prices a van (no station of its own)

    @property
    def finish_time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.finish_at)


@dataclass(frozen=True)
class QuoteResult:
    quote_id: str
    expires_at: dt.datetime
    options: list[QuotedOption]


def validate(inp: QuoteInput, now: dt.datetime) -> None:
    violations: list[FieldViolation] = []
    if not inp.vehicle_id:
        violations.append(FieldViolation("vehicle_id", "is required"))
    violations += position_violations("position", inp.lat, inp.lng)
    if not 0 <= inp.soc_permille <= 1000:
        violations.append(FieldViolation("soc_permille", f"must be within [0, 1000], got {inp.soc_permille}"))
    if not 0 <= inp.target_soc_permille <= 1000:
        violations.append(
            FieldViolation("target_soc_permille", f"must be within [0, 1000], got {inp.target_soc_permille}")
        )
    elif 0 <= inp.soc_permille <= 1000 and inp.target_soc_permille <= inp.soc_permille:
        violations.append(FieldViolation("target_soc_permille", "must be above soc_permille"))
    unknown = sorted(m for m in inp.modes if m not in {int(x) for x in Mode})
    if unknown:
        violations.append(FieldViolation("allowed_modes", f"unknown modes {unknown}"))
    if inp.deadline is not None and inp.deadline <= now:
        violations.append(FieldViolation("deadline", "is in the past"))
    if not 0 <= inp.max_options <= MAX_OPTIONS:
        violations.append(FieldViolation("max_options", f"must be within [0, {MAX_OPTIONS}]"))
    if inp.return_lat is not None and inp.return_lng is not None:
        violations += position_violations("return_position", inp.return_lat, inp.return_lng)
    if violations:
        raise InvalidArgument.for_fields(violations)


async def vehicle_for(session: AsyncSession, principal: Principal, vehicle_id: str) -> Vehicle:
    """The vehicle if the caller may order for it; NOT_FOUND otherwise (ids cannot be probed).

    The one place that decides who orders for a vehicle: its fleet's manager, the fleet's drivers (by their
    driver row, not by a claim in the token), the registered owner of a private car, and the platform admin.
    Operators run stations; they order for nobody's car (issue 9, finding 3)."""
    vehicle = await session.get(Vehicle, vehicle_id)
    if vehicle is None or not await _may_order_for(session, principal, vehicle):
        raise NotFound(f"vehicle {vehicle_id} not found")
    return vehicle


async def _may_order_for(session: AsyncSession, principal: Principal, vehicle: Vehicle) -> bool:
    if principal.is_admin:
        return True
    tenant = principal.tenant
    if principal.role is Role.FLEET_MANAGER:
        return tenant is not None and tenant.kind == "fleet" and vehicle.fleet_id == tenant.id
    if principal.role is not Role.DRIVER:
        return False
    if vehicle.fleet_id is None:
        return vehicle.owner_driver_id is not None and vehicle.owner_driver_id == principal.subject
    driver = await session.get(Driver, principal.subject)
    return driver is not None and driver.fleet_id == vehicle.fleet_id


def profile_of(vehicle: Vehicle) -> VehicleProfile:
    return VehicleProfile(
        id=vehicle.id,
        pack_type_id=vehicle.pack_type_id,
        connector_mask=vehicle.connector_mask,
        usable_capacity_wh=vehicle.usable_capacity_wh,
        consumption_wh_per_km=vehicle.consumption_wh_per_km,
        max_dc_power_w=vehicle.max_dc_power_w,
    )


async def preferences(session: AsyncSession, subject: str, soc_permille: int) -> ranking.Preferences:
    profile = await session.get(CustomerProfile, subject)
    history = await session.exec(
        select(Order.station_id, Order.mode)
        .where(Order.created_by == subject, Order.state == int(OrderState.COMPLETED))
        .order_by(col(Order.created_at).desc())
        .limit(50)
    )
    stations: Counter[str] = Counter()
    modes: Counter[int] = Counter()
    for station_id, mode in history:
        if station_id:
            stations[station_id] += 1
        modes[int(mode)] += 1
    if profile is None:
        return ranking.Preferences(past_stations=stations, past_modes=modes, soc_permille=soc_permille)
    return ranking.Preferences(
        price_sensitivity=profile.price_sensitivity_permille / 1000,
        favourite_stations=frozenset(json.loads(profile.favourite_station_ids)),
        preferred_modes=tuple(int(m) for m in json.loads(profile.preferred_modes)),
        past_stations=stations,
        past_modes=modes,
        soc_permille=soc_permille,
    )


async def quote_power_up(
    uow: UnitOfWork, clock: Clock, settings: Settings, principal: Principal, inp: QuoteInput
) -> QuoteResult:
    started = time.perf_counter()
    try:
        return await _quote(uow, clock, settings, principal, inp)
    finally:
        QUOTE_LATENCY.record((time.perf_counter() - started) * 1000.0)


async def _quote(
    uow: UnitOfWork, clock: Clock, settings: Settings, principal: Principal, inp: QuoteInput
) -> QuoteResult:
    now = clock.now()
    validate(inp, now)
    engine: Engine = uow.engine
    async with uow.db.transaction("ordering.quote.read") as session:
        vehicle = await vehicle_for(session, principal, inp.vehicle_id)
        prefs = await preferences(session, principal.subject, inp.soc_permille)
    if engine.nearest_resource_m(inp.lat, inp.lng, settings.service_radius_m) is None:
        raise InvalidArgument.for_field(
            "position",
            f"no station or mobile service within {settings.service_radius_m / 1000:.0f} km "
            f"of ({inp.lat:.5f}, {inp.lng:.5f}); is the position on land and inside the service area?",
        )
    candidates = engine.options(
        OptionRequest(
            vehicle=profile_of(vehicle),
            lat=inp.lat,
            lng=inp.lng,
            soc_permille=inp.soc_permille,
            target_soc_permille=inp.target_soc_permille,
            modes=inp.modes,
            now=now,
            deadline=inp.deadline,
            # per mode: enough for the final list after personal re-ranking, few enough to price quickly
            max_options=max((inp.max_options or DEFAULT_MAX_OPTIONS) // 2, 2),
            return_lat=inp.return_lat,
            return_lng=inp.return_lng,
            station_ids=inp.station_ids,
        )
    )
    customer_kind, customer_id = ("fleet", vehicle.fleet_id) if vehicle.fleet_id else ("driver", principal.subject)
    quote_id = new_id("qt")
    expires_at = now + dt.timedelta(seconds=settings.quote_ttl_s)
    async with uow.db.transaction("ordering.quote.write") as session:
        priced: list[tuple[EngineOption, payments.Price, str]] = []
        models: dict[str, tuple[str, int]] = {}  # station → the rate model resolved for it in this quote
        for option in candidates:
            pricing_station = option.station_id or _pricing_station(engine, option)
            if pricing_station is None:
                continue
            model = models.get(pricing_station)
            price = await payments.estimate(
                session,
                station_id=pricing_station,
                customer_kind=customer_kind,
                customer_id=customer_id,
                start=now + dt.timedelta(seconds=option.eta_s + option.wait_s),
                energy_wh=option.energy_wh,
                duration_s=option.service_s,
                rate_model_id=model[0] if model else None,
                rate_model_version=model[1] if model else None,
            )
            models[pricing_station] = (price.rate_model_id, price.rate_model_version)
            priced.append((option, price, pricing_station))
        by_key = {f"o{i + 1}": pair for i, pair in enumerate(priced)}
        ranked = ranking.rank(
            [
                ranking.Candidate(
                    key=key,
                    mode=o.mode,
                    station_id=o.station_id,
                    finish_s=(o.finish_at - now).total_seconds(),
                    driver_time_s=0.0 if o.mode in (Mode.VALET, Mode.MOBILE_VAN) else o.eta_s + o.wait_s + o.service_s,
                    distance_m=o.distance_m,
                    price_minor=p.amount_minor,
                )
                for key, (o, p, _) in by_key.items()
            ],
            prefs,
        )[: inp.max_options or DEFAULT_MAX_OPTIONS]
        options = [_quoted(r.candidate.key, r.rank, int(r.reason), *by_key[r.candidate.key]) for r in ranked]
        session.add(
            Quote(
                id=quote_id,
                requested_by=principal.subject,
                vehicle_id=vehicle.id,
                fleet_id=vehicle.fleet_id,
                lat=inp.lat,
                lng=inp.lng,
                soc_permille=inp.soc_permille,
                target_soc_permille=inp.target_soc_permille,
                created_at=now,
                expires_at=expires_at,
                options_json=json.dumps([asdict(o) for o in options]),
            )
        )
    return QuoteResult(quote_id, expires_at, options)


def _pricing_station(engine: Engine, option: EngineOption) -> str | None:
    """A van has no station: its operator's nearest station's tariff prices it."""
    for station, _ in engine.nearest_stations(option.service_lat, option.service_lng, k=20, radius_m=100_000):
        if station.operator_id == option.operator_id:
            return station.id
    return None


def _quoted(
    key: str, rank: int, reason: int, o: EngineOption, price: payments.Price, pricing_station: str
) -> QuotedOption:
    return QuotedOption(
        option_id=key,
        rank=rank,
        rank_reason=reason,
        mode=o.mode,
        resource_kind=o.resource_kind,
        resource_id=o.resource_id,
        operator_id=o.operator_id,
        station_id=o.station_id,
        connector_id=o.connector_id,
        pack_id=o.pack_id,
        unit_id=o.unit_id,
        eta_s=o.eta_s,
        wait_s=o.wait_s,
        service_s=o.service_s,
        finish_at=o.finish_at.astimezone(dt.UTC).isoformat(),
        energy_wh=o.energy_wh,
        distance_m=o.distance_m,
        arrival_soc_permille=o.arrival_soc_permille,
        service_lat=o.service_lat,
        service_lng=o.service_lng,
        price_minor=price.amount_minor,
        currency=price.currency,
        rate_model_id=price.rate_model_id,
        rate_model_version=price.rate_model_version,
        pricing_station_id=pricing_station,
    )


def options_of(quote: Quote) -> list[QuotedOption]:
    return [QuotedOption(**o) for o in json.loads(quote.options_json)]


def hold_amount(price_minor: int, margin_permille: int) -> int:
    return max(1, math.ceil(price_minor * margin_permille / 1000))
