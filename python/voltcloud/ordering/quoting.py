"""QuotePowerUp: validate, ask the engine for candidates, price them, rank them for this customer, persist."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from collections import Counter
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.engine import Engine, EngineOption, OptionRequest, VehicleProfile
from voltcloud.fleet.api import Driver, Vehicle
from voltcloud.ordering import payments, ranking
from voltcloud.ordering.lifecycle import UnitOfWork
from voltcloud.ordering.models import CustomerProfile, Order, Quote
from voltcloud.ordering.profiles import Profiles
from voltcloud.ordering.quote_store import PendingQuote, QuoteStore
from voltcloud.ordering.states import Mode, OrderState
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
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

    The one place that decides who orders for a vehicle (`may_order_for`): its fleet's manager, the fleet's
    drivers (by their driver row, not by a claim in the token), the registered owner of a private car, and the
    platform admin. Operators run stations; they order for nobody's car (issue 9, finding 3)."""
    vehicle = await session.get(Vehicle, vehicle_id)
    driver = await session.get(Driver, principal.subject) if vehicle and needs_driver(principal, vehicle) else None
    if vehicle is None or not may_order_for(principal, vehicle, driver):
        raise NotFound(f"vehicle {vehicle_id} not found")
    return in_service(vehicle)


async def cached_vehicle_for(profiles: Profiles, principal: Principal, vehicle_id: str) -> Vehicle:
    """`vehicle_for` with its rows from the profile cache (a miss reads the database): the same decision."""
    vehicle = await profiles.vehicle(vehicle_id)
    driver = await profiles.driver(principal.subject) if vehicle and needs_driver(principal, vehicle) else None
    if vehicle is None or not may_order_for(principal, vehicle, driver):
        raise NotFound(f"vehicle {vehicle_id} not found")
    return in_service(vehicle)


def in_service(vehicle: Vehicle) -> Vehicle:
    """A retired vehicle (FleetService.RetireVehicle) gets no new quote, order or reservation."""
    if vehicle.retired_at is not None:
        raise FailedPrecondition(f"vehicle {vehicle.id} was retired: {vehicle.retire_reason or 'no reason given'}")
    return vehicle


def needs_driver(principal: Principal, vehicle: Vehicle) -> bool:
    """Whether the decision depends on the caller's driver row (a driver ordering for a fleet's vehicle)."""
    return not principal.is_admin and principal.role is Role.DRIVER and vehicle.fleet_id is not None


def may_order_for(principal: Principal, vehicle: Vehicle, driver: Driver | None) -> bool:
    if principal.is_admin:
        return True
    tenant = principal.tenant
    if principal.role is Role.FLEET_MANAGER:
        return tenant is not None and tenant.kind == "fleet" and vehicle.fleet_id == tenant.id
    if principal.role is not Role.DRIVER:
        return False
    if vehicle.fleet_id is None:
        return vehicle.owner_driver_id is not None and vehicle.owner_driver_id == principal.subject
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


@dataclass
class QuotePath:
    """What QuotePowerUp keeps in memory so that a quote makes no database round trip (docs/ordering.md):
    the price book, the vehicle and profile cache, the batched quote writer. Without one (None), a quote reads,
    prices and writes through the database as before (kept for the per-layer benchmark's baseline)."""

    book: payments.PriceBook
    profiles: Profiles
    store: QuoteStore


async def quote_power_up(
    uow: UnitOfWork,
    clock: Clock,
    settings: Settings,
    principal: Principal,
    inp: QuoteInput,
    path: QuotePath | None = None,
) -> QuoteResult:
    started = time.perf_counter()
    try:
        return await _quote(uow, clock, settings, principal, inp, path)
    finally:
        QUOTE_LATENCY.record((time.perf_counter() - started) * 1000.0)


async def _quote(
    uow: UnitOfWork, clock: Clock, settings: Settings, principal: Principal, inp: QuoteInput, path: QuotePath | None
) -> QuoteResult:
    now = clock.now()
    validate(inp, now)
    vehicle, prefs = await customer(uow, principal, inp, path)
    candidates = engine_options(uow.engine, settings, inp, vehicle, now)
    customer_kind, customer_id = ("fleet", vehicle.fleet_id) if vehicle.fleet_id else ("driver", principal.subject)
    at_stations = [(o, o.station_id or _pricing_station(uow.engine, o)) for o in candidates]
    located = [(o, s) for o, s in at_stations if s is not None]
    requests = [
        payments.PriceRequest(station, now + dt.timedelta(seconds=o.eta_s + o.wait_s), o.energy_wh, o.service_s)
        for o, station in located
    ]
    row = PendingQuote(
        id=new_id("qt"),
        requested_by=principal.subject,
        vehicle_id=vehicle.id,
        fleet_id=vehicle.fleet_id,
        lat=inp.lat,
        lng=inp.lng,
        soc_permille=inp.soc_permille,
        target_soc_permille=inp.target_soc_permille,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=settings.quote_ttl_s),
        options_json="[]",
    )
    if path is None:  # the database path: priced and written in one transaction
        async with uow.db.transaction("ordering.quote.write") as session:
            prices = await payments.estimate_all(session, customer_kind, customer_id, requests)
            options = rank_options(inp, now, prefs, located, prices)
            session.add(dataclasses.replace(row, options_json=options_json(options)).model())
    else:
        prices = await price_in_memory(uow, path, customer_kind, customer_id, requests)
        options = rank_options(inp, now, prefs, located, prices)
        path.store.add(dataclasses.replace(row, options_json=options_json(options)))
    return QuoteResult(row.id, row.expires_at, options)


async def customer(
    uow: UnitOfWork, principal: Principal, inp: QuoteInput, path: QuotePath | None
) -> tuple[Vehicle, ranking.Preferences]:
    """The vehicle (if the caller may order for it) and the customer's preferences."""
    if path is None:
        async with uow.db.transaction("ordering.quote.read") as session:
            vehicle = await vehicle_for(session, principal, inp.vehicle_id)
            return vehicle, await preferences(session, principal.subject, inp.soc_permille)
    vehicle = await cached_vehicle_for(path.profiles, principal, inp.vehicle_id)
    prefs = path.profiles.preferences_of(principal.subject)
    if prefs is None:
        generation = path.profiles.generation
        async with uow.db.transaction("ordering.quote.read") as session:
            prefs = await preferences(session, principal.subject, inp.soc_permille)
        path.profiles.remember_preferences(principal.subject, prefs, generation)
    return vehicle, dataclasses.replace(prefs, soc_permille=inp.soc_permille)


def engine_options(
    engine: Engine, settings: Settings, inp: QuoteInput, vehicle: Vehicle, now: dt.datetime
) -> list[EngineOption]:
    if engine.nearest_resource_m(inp.lat, inp.lng, settings.service_radius_m) is None:
        raise InvalidArgument.for_field(
            "position",
            f"no station or mobile service within {settings.service_radius_m / 1000:.0f} km "
            f"of ({inp.lat:.5f}, {inp.lng:.5f}); is the position on land and inside the service area?",
        )
    return engine.options(
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


async def price_in_memory(
    uow: UnitOfWork, path: QuotePath, customer_kind: str, customer_id: str, requests: list[payments.PriceRequest]
) -> list[payments.Price]:
    """Every option's price from the price book in one pass; from the database if the book misses."""
    await path.book.ensure_stations(r.station_id for r in requests)
    prices = payments.estimate_in_memory(path.book, customer_kind, customer_id, requests)
    if prices is not None:
        return prices
    async with uow.db.transaction("ordering.quote.price") as session:
        return await payments.estimate_all(session, customer_kind, customer_id, requests)


def rank_options(
    inp: QuoteInput,
    now: dt.datetime,
    prefs: ranking.Preferences,
    located: list[tuple[EngineOption, str]],
    prices: list[payments.Price],
) -> list[QuotedOption]:
    by_key = {f"o{i + 1}": (o, p, s) for i, ((o, s), p) in enumerate(zip(located, prices, strict=True))}
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
    return [_quoted(r.candidate.key, r.rank, int(r.reason), *by_key[r.candidate.key]) for r in ranked]


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


_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(QuotedOption))


def options_json(options: list[QuotedOption]) -> str:
    """The options as stored in the quote (flat values only, so no deep copy as `asdict` would make)."""
    return json.dumps([{name: getattr(o, name) for name in _OPTION_FIELDS} for o in options])


def options_of(quote: Quote) -> list[QuotedOption]:
    return [QuotedOption(**o) for o in json.loads(quote.options_json)]


def hold_amount(price_minor: int, margin_permille: int) -> int:
    return max(1, math.ceil(price_minor * margin_permille / 1000))
