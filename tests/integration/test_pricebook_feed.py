"""A rate model changed on one replica reprices quotes on every replica: the writer publishes on the change
feed in its transaction, each replica's price book recompiles that model (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from voltcloud.ordering import payments
from voltcloud.server import Platform
from voltcloud.settlement import api, rates
from voltcloud.settlement.tariff import Dimension, PriceComponent, Tariff, TariffElement

from .conftest import serving

WAIT_S = 10.0  # generous: the feed pushes within milliseconds; this only bounds a failing test


def _per_kwh(micros: int) -> Tariff:
    return Tariff("CNY", (TariffElement((PriceComponent(Dimension.ENERGY, micros, label="electricity"),)),))


async def _priced_by(platform: Platform, station_id: str, start: dt.datetime) -> tuple[str, int, int]:
    book = platform.powerup.quote_path.book
    prices = payments.estimate_in_memory(
        book, "driver", "drv-feed", [payments.PriceRequest(station_id, start, 10_000, 1_800)]
    )
    assert prices is not None
    return prices[0].rate_model_id, prices[0].rate_model_version, prices[0].amount_minor


def _delivered(platform: Platform) -> asyncio.Event:
    """Set after each delivery of topic `rate_model` to this replica (after its price book's own handler)."""
    event = asyncio.Event()
    platform.feed.subscribe(rates.TOPIC, lambda _: event.set())
    return event


async def _until(
    platform: Platform, delivered: asyncio.Event, station_id: str, start: dt.datetime, want: tuple[str, int, int]
) -> None:
    async def wait() -> None:
        while await _priced_by(platform, station_id, start) != want:
            delivered.clear()
            await delivered.wait()

    await asyncio.wait_for(wait(), WAIT_S)


async def test_a_new_model_version_and_assignment_reach_every_replicas_price_book(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        serving(tmp_path / "a", database_url, reoptimize_interval_s=0) as first,
        serving(tmp_path / "b", database_url, reoptimize_interval_s=0, seed_demo=False) as second,
    ):
        delivered = {first: _delivered(first), second: _delivered(second)}
        station = next(iter(first.powerup.engine._maps.station_by_id))
        start = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
        assert (await _priced_by(second, station, start))[0] == rates.BUILTIN_ID
        async with first.db.transaction() as session:
            model = await rates.create_rate_model(
                session, rates.RateModelSpec("", "", "feed", _per_kwh(3_000_000)), idempotency_key="f1"
            )
            await api.assign_rate_model(session, rate_model_id=model.rate_model_id, station_id=station)
        for replica in (first, second):
            await _until(replica, delivered[replica], station, start, (model.rate_model_id, 1, 3_000))
        async with second.db.transaction() as session:
            v2 = await rates.create_rate_model(
                session,
                rates.RateModelSpec(model.rate_model_id, "", "feed", _per_kwh(2_000_000)),
                idempotency_key="f2",
            )
            assert v2.version == 2
            db_price = await rates.price_estimate(
                session,
                station_id=station,
                customer_kind="driver",
                customer_id="drv-feed",
                start=start,
                energy_wh=10_000,
                duration_s=1_800,
            )
        for replica in (first, second):
            await _until(replica, delivered[replica], station, start, (model.rate_model_id, 2, 2_000))
        assert db_price.amount_minor == 2_000
