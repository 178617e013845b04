"""The price book answers exactly what the database path answers (`rates.price_estimate` and ordering's
per-quote pinning), on the seeded demo world with rate models at every level: time-of-use windows (one
wrapping midnight), weekdays, energy thresholds, step sizes, VAT, min/max clamps, versions activating and
ending, assignments taking effect later, a customer's own model (by account and by fleet), a station in
another time zone, and a level with more than five assignments none of which is in force."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from tests.settlement_support import T0
from voltcloud.ordering import payments
from voltcloud.platform.clock import FrozenClock
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.seed import seed_world
from voltcloud.settlement import api, rates
from voltcloud.settlement.pricebook import PriceBook, PriceRequest, compile_tariff
from voltcloud.settlement.tariff import (
    Dimension,
    PriceComponent,
    Restrictions,
    Tariff,
    TariffElement,
    Usage,
    price,
)
from voltcloud.stations.models import Station
from voltcloud.world import generate_world

SHANGHAI = ZoneInfo("Asia/Shanghai")
CUSTOMERS = [("driver", "vip"), ("driver", "nobody"), ("fleet", "fl-0001"), ("fleet", "fl-0002"), ("driver", "")]


def _c(dim: Dimension, micros: int, label: str = "", vat_bp: int = 0, step: int = 1) -> PriceComponent:
    return PriceComponent(dim, micros, vat_bp=vat_bp, step_size=step, label=label)


TIME_OF_USE = Tariff(
    "CNY",
    (
        TariffElement(
            (_c(Dimension.ENERGY, 1_250_000, "electricity"), _c(Dimension.ENERGY, 600_000, "service_fee", 600, 100)),
            Restrictions(start_time="08:00", end_time="22:00"),
        ),
        TariffElement((_c(Dimension.ENERGY, 450_000, "electricity"), _c(Dimension.ENERGY, 600_000, "service_fee"))),
        TariffElement((_c(Dimension.FLAT, 2_000_000),)),
    ),
    min_price_minor=150,
)
NIGHT_AND_WEEKEND = Tariff(
    "CNY",
    (
        TariffElement(
            (_c(Dimension.ENERGY, 300_000, "electricity"), _c(Dimension.TIME, 1_200_000, step=60)),
            Restrictions(start_time="23:00", end_time="07:00"),
        ),
        TariffElement((_c(Dimension.ENERGY, 700_000, "electricity"),), Restrictions(days_of_week=frozenset({6, 7}))),
        TariffElement((_c(Dimension.ENERGY, 1_100_000, "electricity"), _c(Dimension.TIME, 600_000, step=60))),
    ),
)
THRESHOLDS = Tariff(
    "CNY",
    (
        TariffElement((_c(Dimension.ENERGY, 1_500_000),), Restrictions(max_energy_wh=20_000)),
        TariffElement((_c(Dimension.ENERGY, 900_000),), Restrictions(min_duration_s=1_800)),
        TariffElement((_c(Dimension.ENERGY, 1_000_000, vat_bp=1300),)),
    ),
    max_price_minor=6_000,
)


def _flat(micros: int, vat_bp: int = 0, step: int = 1) -> Tariff:
    return Tariff(
        "CNY",
        (
            TariffElement(
                (
                    _c(Dimension.ENERGY, micros, "electricity", vat_bp, step),
                    _c(Dimension.TIME, 300_000, step=300),
                    _c(Dimension.FLAT, 1_000_000),
                )
            ),
            TariffElement((_c(Dimension.ENERGY, 1, "electricity"), _c(Dimension.PARKING_TIME, 9_000_000))),
        ),
        min_price_minor=100,
        max_price_minor=40_000,
    )


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[tuple[Database, list[str]]]:
    await upgrade_database_async(database_url)
    db = Database(database_url, pool_size=20)
    await seed_world(db, generate_world("demo", seed=7))
    async with db.transaction() as s:
        stations = list(await s.exec(select(Station.id).order_by(col(Station.id))))
        await s.exec(sa.update(Station).where(col(Station.id) == stations[1]).values(timezone="Europe/Berlin"))
    await _rate_models(db, stations)
    yield db, stations
    await db.dispose()


async def _model(s: object, c: FrozenClock, key: str, tariff: Tariff, operator: str = "", **kw: object) -> str:
    spec = rates.RateModelSpec(kw.pop("model_id", ""), operator, key, tariff, **kw)  # type: ignore[arg-type]
    view = await rates.create_rate_model(s, spec, idempotency_key=key, clock=c)  # type: ignore[arg-type]
    return view.rate_model_id


async def _rate_models(db: Database, stations: list[str]) -> None:
    c = FrozenClock(T0)
    day = dt.timedelta(days=1)
    async with db.transaction() as s:
        platform = await _model(s, c, "platform", TIME_OF_USE)
        await api.assign_rate_model(s, rate_model_id=platform, clock=c)
        op1 = await _model(s, c, "op1", NIGHT_AND_WEEKEND, "op-0001")
        await api.assign_rate_model(s, rate_model_id=op1, operator_id="op-0001", effective_from=T0 + 2 * day, clock=c)
        await _model(s, c, "op1-v2", THRESHOLDS, "op-0001", model_id=op1, valid_from=T0 + 5 * day)
        for i, station in enumerate(stations[:6]):
            model = await _model(
                s, c, f"st{i}", _flat(900_000 + 37_000 * i, 100 * i, 1 + 50 * i), valid_to=T0 + 8 * day
            )
            await api.assign_rate_model(s, rate_model_id=model, station_id=station, clock=c)
        later = await _model(s, c, "later", THRESHOLDS, valid_from=T0 + 30 * day)
        for _ in range(5):  # five newer assignments whose model is not in force yet hide the station's sixth
            await api.assign_rate_model(s, rate_model_id=later, station_id=stations[0], clock=c)
        vip = await _model(s, c, "vip", _flat(500_000, 600, 10))
        account = await api.ensure_customer_account(s, owner_kind="driver", owner_id="vip", clock=c)
        await api.assign_rate_model(s, rate_model_id=vip, customer_account_id=account, clock=c)
        at_one = await _model(s, c, "vip-station", NIGHT_AND_WEEKEND)
        await api.assign_rate_model(
            s, rate_model_id=at_one, customer_account_id=account, station_id=stations[3], clock=c
        )
        fleet = await _model(s, c, "fleet", THRESHOLDS)
        await api.assign_rate_model(s, rate_model_id=fleet, fleet_id="fl-0001", effective_from=T0 + day, clock=c)
        fleet_account = await api.ensure_customer_account(s, owner_kind="fleet", owner_id="fl-0002", clock=c)
        await api.assign_rate_model(
            s, rate_model_id=op1, customer_account_id=fleet_account, operator_id="op-0002", clock=c
        )


def _start(rng: random.Random) -> dt.datetime:
    """Anywhere in two weeks around T0, half of the time within a minute of a local tariff boundary."""
    base = T0 + dt.timedelta(seconds=rng.randrange(-86_400, 12 * 86_400))
    if rng.random() < 0.5:
        local = base.astimezone(SHANGHAI)
        hour = rng.choice([0, 7, 8, 22, 23])
        edge = local.replace(hour=hour, minute=0, second=0, microsecond=0)
        base = edge.astimezone(dt.UTC) + dt.timedelta(seconds=rng.randrange(-60, 60))
    return base + dt.timedelta(microseconds=rng.randrange(1_000_000))


def _request(rng: random.Random, stations: list[str]) -> PriceRequest:
    station = rng.choice(stations[:8] if rng.random() < 0.7 else stations)
    energy = rng.choice([0, rng.randrange(1, 100), rng.randrange(1_000, 80_000)])
    duration = rng.choice([0, rng.randrange(60, 7_200), rng.randrange(7_200, 30_000)])
    return PriceRequest(station, _start(rng), energy, duration)


async def test_the_book_prices_like_the_database(world: tuple[Database, list[str]]) -> None:
    db, stations = world
    book = PriceBook(db)
    await book.load()
    rng = random.Random(11)
    models: set[str] = set()
    async with db.transaction() as s:
        for _ in range(400):
            kind, customer = rng.choice(CUSTOMERS)
            r = _request(rng, stations)
            expected = await rates.price_estimate(
                s,
                station_id=r.station_id,
                customer_kind=kind,
                customer_id=customer,
                start=r.start,
                energy_wh=r.energy_wh,
                duration_s=r.duration_s,
            )
            [got] = book.quote(kind, customer, [r])
            want = (expected.amount_minor, expected.currency, expected.rate_model_id, expected.rate_model_version)
            assert (got.amount_minor, got.currency, got.rate_model_id, got.rate_model_version) == want, (
                kind,
                customer,
                r,
            )
            models.add(f"{got.rate_model_id}@{got.rate_model_version}")
    assert len(models) >= 10  # every level and version took part, not one default priced everything


async def test_a_quote_pins_each_stations_model_like_the_database(world: tuple[Database, list[str]]) -> None:
    db, stations = world
    book = PriceBook(db)
    await book.load()
    rng = random.Random(5)
    for _ in range(60):
        kind, customer = rng.choice(CUSTOMERS)
        requests = [_request(rng, stations[:4]) for _ in range(rng.randrange(1, 12))]
        async with db.transaction() as s:
            expected = await payments.estimate_all(s, kind, customer, requests)
        assert payments.estimate_in_memory(book, kind, customer, requests) == expected


async def test_a_new_version_and_assignment_reach_the_book_when_reloaded(world: tuple[Database, list[str]]) -> None:
    db, stations = world
    book = PriceBook(db)
    await book.load()
    when = T0 + dt.timedelta(days=1, hours=3)
    request = PriceRequest(stations[7], when, 30_000, 1_800)
    async with db.transaction() as s:
        model = await _model(s, FrozenClock(T0), "new", _flat(2_000_000))
        await api.assign_rate_model(s, rate_model_id=model, station_id=stations[7], clock=FrozenClock(T0))
        fresh = await rates.price_estimate(
            s,
            station_id=stations[7],
            customer_kind="driver",
            customer_id="x",
            start=when,
            energy_wh=30_000,
            duration_s=1_800,
        )
    assert book.quote("driver", "x", [request])[0].rate_model_id != model  # not told yet
    await book.reload_models([model])
    [got] = book.quote("driver", "x", [request])
    assert (got.rate_model_id, got.amount_minor) == (model, fresh.amount_minor)


def test_a_compiled_tariff_without_restrictions_equals_the_general_pricing() -> None:
    rng = random.Random(3)
    for _ in range(300):
        components = tuple(
            _c(dim, rng.randrange(0, 3_000_000), label, rng.choice([0, 600, 1300]), rng.choice([0, 1, 60, 1000]))
            for dim, label in rng.sample(
                [(Dimension.ENERGY, "a"), (Dimension.ENERGY, "b"), (Dimension.TIME, ""), (Dimension.FLAT, "")], 3
            )
        )
        tariff = Tariff(
            rng.choice(["CNY", "EUR", "JPY"]),
            (TariffElement(components), TariffElement((_c(Dimension.ENERGY, 7, "a"), _c(Dimension.PARKING_TIME, 5)))),
            min_price_minor=rng.choice([None, 500]),
            max_price_minor=rng.choice([None, 2_000]),
        )
        usage = Usage(
            T0 + dt.timedelta(seconds=rng.randrange(86_400 * 7)),
            rng.choice([0, rng.randrange(100_000)]),
            rng.choice([0, rng.randrange(20_000)]),
            parking_s=rng.choice([0, rng.randrange(5_000)]),
        )
        general = price(tariff, usage)
        assert compile_tariff(tariff)(usage) == (general.total_minor, general.currency)
