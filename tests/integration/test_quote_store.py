"""QuotePowerUp answers before its quote is written; the quote is still honoured exactly, refused when it
must be, written at shutdown, retried after a failed batch, and found by another replica within the flush
window (real gRPC, SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.fleet.models import Vehicle
from voltcloud.ordering.models import Order, Quote
from voltcloud.ordering.quote_store import PendingQuote, QuoteStore, made_at
from voltcloud.platform.clock import FrozenClock
from voltcloud.platform.db import Database
from voltcloud.platform.ids import new_id
from voltcloud.server import Platform

from .conftest import channel_to, serving
from .powerup_support import driver_md, fund, swappable_vehicle

DRIVER = "drv-store"
SELF_SERVICE = (common_pb2.POWER_UP_MODE_SWAP, common_pb2.POWER_UP_MODE_CHARGE)


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as running:
        yield running


def _centre(platform: Platform) -> common_pb2.LatLng:
    stations = list(platform.powerup.engine._maps.station_by_id.values())
    return common_pb2.LatLng(
        lat=sum(s.lat for s in stations) / len(stations), lng=sum(s.lng for s in stations) / len(stations)
    )


async def _quote(platform: Platform, channel: grpc.aio.Channel, vehicle_id: str) -> ordering_pb2.QuotePowerUpResponse:
    request = ordering_pb2.QuotePowerUpRequest(
        vehicle_id=vehicle_id, position=_centre(platform), soc_permille=250, target_soc_permille=900
    )
    return await ordering_pb2_grpc.OrderingServiceStub(channel).QuotePowerUp(
        request, metadata=driver_md(platform, DRIVER)
    )


async def _row(db: Database, quote_id: str) -> Quote | None:
    async with db.transaction() as session:
        return await session.get(Quote, quote_id)


def _hold_back(platform: Platform, seconds: float) -> QuoteStore:
    """Makes this replica's batch writer wait long enough for the test to act while quotes are pending."""
    store = platform.powerup.quote_path.store
    store.interval_s = seconds
    return store


async def test_a_pending_quote_is_ordered_at_its_exact_price(platform: Platform) -> None:
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    await fund(platform, "driver", DRIVER)
    store = _hold_back(platform, 30.0)
    async with channel_to(platform) as channel:
        quote = await _quote(platform, channel, vehicle.id)
        assert store.pending(quote.quote_id) is not None
        assert await _row(platform.db, quote.quote_id) is None  # answered before it was written
        chosen = next(o for o in quote.options if o.mode in SELF_SERVICE)
        created = await ordering_pb2_grpc.OrderingServiceStub(channel).CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key="k1", quote_id=quote.quote_id, option_id=chosen.option_id),
            metadata=driver_md(platform, DRIVER),
        )
    assert created.order.option == chosen  # exactly the quoted option and price
    row = await _row(platform.db, quote.quote_id)  # written by the order's own transaction
    assert row is not None and [o["price_minor"] for o in json.loads(row.options_json)] == [
        o.price_estimate.amount_minor for o in quote.options
    ]
    async with platform.db.transaction() as session:
        order = (await session.exec(select(Order).where(col(Order.quote_id) == quote.quote_id))).one()
    assert order.id == created.order.order_id


async def test_a_pending_quote_is_refused_like_a_written_one(tmp_path: Path, database_url: str) -> None:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as platform:
        vehicle = await swappable_vehicle(platform, owner=DRIVER)
        await fund(platform, "driver", DRIVER)
        _hold_back(platform, 30.0)
        async with channel_to(platform) as channel:
            ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
            quote = await _quote(platform, channel, vehicle.id)

            async def code(quote_id: str, option_id: str, subject: str = DRIVER) -> grpc.StatusCode:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ordering.CreateOrder(
                        ordering_pb2.CreateOrderRequest(
                            idempotency_key=new_id("k"), quote_id=quote_id, option_id=option_id
                        ),
                        metadata=driver_md(platform, subject),
                    )
                result: grpc.StatusCode = err.value.code()
                return result

            assert await code(quote.quote_id, "o1", subject="drv-other") == grpc.StatusCode.NOT_FOUND
            assert await code(quote.quote_id, "o99") == grpc.StatusCode.INVALID_ARGUMENT
            assert await code("qt_not-an-id", "o1") == grpc.StatusCode.NOT_FOUND
            hour_ago = uuid.UUID(int=(int(uuid.UUID(new_id().split("_")[-1])) & ((1 << 80) - 1)) | (
                (int((dt.datetime.now(dt.UTC).timestamp() - 3600) * 1000)) << 80
            ))  # fmt: skip
            assert await code(f"qt_{hour_ago}", "o1") == grpc.StatusCode.NOT_FOUND
            later = quote.expires_at.ToDatetime(dt.UTC) + dt.timedelta(seconds=1)
            platform.powerup.deps.clock = FrozenClock(later)  # CreateOrder's "now", past the quote's expiry
            assert await code(quote.quote_id, quote.options[0].option_id) == grpc.StatusCode.FAILED_PRECONDITION


async def test_pending_quotes_are_written_at_shutdown(tmp_path: Path, database_url: str) -> None:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as platform:
        vehicle = await swappable_vehicle(platform, owner=DRIVER)
        _hold_back(platform, 30.0)
        async with channel_to(platform) as channel:
            ids = [(await _quote(platform, channel, vehicle.id)).quote_id for _ in range(3)]
        assert [await _row(platform.db, i) for i in ids] == [None, None, None]
    db = Database(database_url)
    try:
        assert all([await _row(db, i) is not None for i in ids])
    finally:
        await db.dispose()


async def test_a_failed_batch_stays_pending_and_is_retried(platform: Platform) -> None:
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    store = _hold_back(platform, 30.0)
    async with channel_to(platform) as channel:
        quote = await _quote(platform, channel, vehicle.id)
    pending = store.pending(quote.quote_id)
    assert pending is not None
    orphan = PendingQuote(**{**pending.model_dump(), "id": new_id("qt"), "vehicle_id": "vh-not-yet"})
    store.add(orphan)  # its vehicle does not exist: the batch violates a foreign key
    assert not await store.flush()
    assert store.failures == 1 and store.pending(quote.quote_id) is not None
    assert await _row(platform.db, quote.quote_id) is None  # nothing half-written
    async with platform.db.transaction() as session:
        session.add(Vehicle(**{**vehicle.model_dump(), "id": "vh-not-yet", "vin": "LVNOTYET000000001"}))
    assert await store.flush()
    assert store.backlog == 0
    assert await _row(platform.db, quote.quote_id) is not None and await _row(platform.db, orphan.id) is not None


async def test_another_replica_finds_a_quote_still_in_the_first_ones_batch(tmp_path: Path, database_url: str) -> None:
    async with serving(tmp_path / "a", database_url, reoptimize_interval_s=0) as first:
        vehicle = await swappable_vehicle(first, owner=DRIVER)
        await fund(first, "driver", DRIVER)
        async with serving(tmp_path / "b", database_url, reoptimize_interval_s=0, seed_demo=False) as second:
            # The first replica writes its batch 1 s after the quote; the second one waits up to one flush
            # interval plus margin for a quote that young (both run with the same settings in production).
            _hold_back(first, 1.0)
            waiting = second.powerup.quote_path.store
            waiting.interval_s, waiting.margin_s = 1.0, 5.0  # a wide margin: a loaded CI machine commits late
            async with channel_to(first) as a, channel_to(second) as b:
                quote = await _quote(first, a, vehicle.id)
                assert await _row(second.db, quote.quote_id) is None
                chosen = next(o for o in quote.options if o.mode in SELF_SERVICE)
                created = await ordering_pb2_grpc.OrderingServiceStub(b).CreateOrder(
                    ordering_pb2.CreateOrderRequest(
                        idempotency_key="k-b", quote_id=quote.quote_id, option_id=chosen.option_id
                    ),
                    metadata=driver_md(second, DRIVER),
                )
    assert created.order.option == chosen


def test_a_quote_id_tells_when_it_was_made() -> None:
    now = dt.datetime.now(dt.UTC).timestamp()
    made = made_at(new_id("qt"))
    assert made is not None and abs(made - now) < 5
    assert made_at("qt_123") is None and made_at(f"qt_{uuid.uuid4()}") is None  # not a UUIDv7
    store = QuoteStore(Database("sqlite+aiosqlite://"), interval_s=0.01, margin_s=0.25)
    assert 0.1 < store.in_flight(new_id("qt")) <= 0.26  # young: may still be in its maker's batch
    assert store.in_flight(new_id("qt"), now_s=now + 1) == 0.0  # old enough to have been written
    assert store.in_flight(new_id("qt"), now_s=now - 5) == 0.0  # from the future beyond any clock skew


async def test_a_written_quote_of_this_replica_is_ordered_from_memory_and_its_key_still_replays(
    platform: Platform,
) -> None:
    """A quote this replica wrote is kept in memory: CreateOrder reads neither the quote nor the key before its
    write transaction (the key is claimed first in it), a retry gets its order after the quote expired, and the
    refusals are the same as for a quote read from the database."""
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    await fund(platform, "driver", DRIVER)
    store = platform.powerup.quote_path.store
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    async with channel_to(platform) as channel:
        ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
        quote = await _quote(platform, channel, vehicle.id)
        assert await store.flush()
        assert store.pending(quote.quote_id) is None and store.known(quote.quote_id) is not None
        chosen = next(o for o in quote.options if o.mode in SELF_SERVICE)

        async def create(key: str, option_id: str = chosen.option_id) -> ordering_pb2.CreateOrderResponse:
            request = ordering_pb2.CreateOrderRequest(idempotency_key=key, quote_id=quote.quote_id, option_id=option_id)
            response: ordering_pb2.CreateOrderResponse = await ordering.CreateOrder(
                request, metadata=driver_md(platform, DRIVER)
            )
            return response

        sa.event.listen(platform.db.engine.sync_engine, "before_cursor_execute", seen)
        try:
            created = await create("k-memory")
        finally:
            sa.event.remove(platform.db.engine.sync_engine, "before_cursor_execute", seen)
        assert created.order.option == chosen
        assert not [s for s in statements if s.startswith("select") and ("from quote" in s or "from idempotency" in s)]
        later = quote.expires_at.ToDatetime(dt.UTC) + dt.timedelta(seconds=1)
        platform.powerup.deps.clock = FrozenClock(later)
        assert (await create("k-memory")).order.order_id == created.order.order_id  # the retry, after expiry
        for key, option_id, status in (
            ("k-late", chosen.option_id, grpc.StatusCode.FAILED_PRECONDITION),
            ("k-memory", "o99", grpc.StatusCode.INVALID_ARGUMENT),  # the same key for another request
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await create(key, option_id)
            assert err.value.code() == status
    async with platform.db.transaction() as session:
        orders = list(await session.exec(select(Order).where(col(Order.quote_id) == quote.quote_id)))
    assert [o.id for o in orders] == [created.order.order_id]
