"""The one idempotency (issue 10) over real gRPC: concurrent duplicates of a station, an order and a settlement
RPC on PostgreSQL do the work once and all get the first answer; a key reused for another request is
INVALID_ARGUMENT naming `idempotency_key` on every service."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2, timestamp_pb2
from sqlmodel import col, func, select

from tests.stationkit import OPERATOR
from voltcloud.api.v1 import (
    common_pb2,
    dispatch_pb2,
    dispatch_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    ordering_pb2,
    ordering_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.fleet.models import Vehicle
from voltcloud.ordering.models import Order
from voltcloud.ordering.states import Mode
from voltcloud.platform import idempotency
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.platform.errors import Aborted, InvalidArgument
from voltcloud.settlement.models import LedgerHold, Payment
from voltcloud.stations.models import Operator

from .conftest import RunningPlatform, field_violations
from .powerup_support import account_state, candidates, driver_md, fund, inventory_quote, swappable_vehicle

DUPLICATES = 6
T = TypeVar("T")
DRIVER = "drv-idem"
FLEET = "fl-0001"  # a demo fleet


def _postgres_only(running: RunningPlatform) -> None:
    if not running.platform.db.dialect.startswith("postgresql"):
        pytest.skip("concurrent duplicates are proven on PostgreSQL (SQLite serialises whole transactions)")


async def _all_at_once(running: RunningPlatform, call: Callable[[], Awaitable[T]]) -> list[T]:
    """Fires DUPLICATES identical calls while the idempotency table is locked against inserts, so every one of
    them reaches its claim before any commits (unlocked, a fast RPC's duplicates may just run one after the
    other); then lets them race for the key."""
    async with running.platform.db.engine.connect() as lock:
        await lock.execute(sa.text("LOCK TABLE idempotency IN SHARE MODE"))  # INSERTs wait, SELECTs do not
        calls = [asyncio.ensure_future(call()) for _ in range(DUPLICATES)]
        await asyncio.sleep(1.0)
        assert not any(c.done() for c in calls), "a call finished without claiming its key"
        await lock.commit()
    return list(await asyncio.gather(*calls))


async def _count(running: RunningPlatform, query: Any) -> int:
    async with running.platform.db.transaction() as session:
        return int((await session.exec(query)).one())


async def test_concurrent_duplicate_station_rpc_creates_one_operator(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    _postgres_only(running)
    stub = stations_pb2_grpc.StationServiceStub(channel)
    request = stations_pb2.CreateOperatorRequest(idempotency_key="op-1", name="Once Ops", country="CN", currency="CNY")
    admin = running.metadata(Role.PLATFORM_ADMIN)
    answers = await _all_at_once(running, lambda: stub.CreateOperator(request, metadata=admin))
    assert len({a.SerializeToString(deterministic=True) for a in answers}) == 1
    assert await _count(running, select(func.count()).where(Operator.name == "Once Ops")) == 1


async def test_concurrent_duplicate_create_order_makes_one_order_and_one_hold(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    _postgres_only(running)
    platform = running.platform
    stub = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    wallet = await fund(platform, "driver", DRIVER)
    quote_id = await inventory_quote(platform, DRIVER, vehicle, candidates(platform, vehicle, Mode.SWAP)[:1])
    request = ordering_pb2.CreateOrderRequest(idempotency_key="ord-1", quote_id=quote_id, option_id="o1")
    md = driver_md(platform, DRIVER)
    answers = await _all_at_once(running, lambda: stub.CreateOrder(request, metadata=md))
    assert len({a.order.order_id for a in answers}) == 1
    assert await _count(running, select(func.count()).where(col(Order.created_by) == DRIVER)) == 1
    async with platform.db.transaction() as session:
        holds = await session.exec(select(func.count()).where(LedgerHold.account_id == wallet))
        assert holds.one() == 1 and answers[0].order.hold_id
    _, held = await account_state(platform, wallet)
    assert held > 0


async def test_concurrent_duplicate_top_up_credits_once(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    _postgres_only(running)
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    wallet = await fund(running.platform, "driver", "drv-top", amount_minor=1)
    request = settlement_pb2.TopUpRequest(
        idempotency_key="top-1",
        account_id=wallet,
        amount=common_pb2.Money(amount_minor=5_000, currency="CNY"),
        provider="simulated",
        provider_token="tok",
    )
    md = running.metadata(Role.PLATFORM_ADMIN)
    answers = await _all_at_once(running, lambda: stub.TopUp(request, metadata=md))
    assert len({a.payment.payment_id for a in answers}) == 1
    assert await _count(running, select(func.count()).where(Payment.account_id == wallet)) == 2  # fund + this
    balance, _ = await account_state(running.platform, wallet)
    assert balance == 5_001


Call = Callable[[str], Awaitable[Any]]


async def _refuses_reuse(first: Call, other: Call) -> None:
    """`first` with a key succeeds and a retry replays; `other` with the same key is refused."""
    await first("reuse-1")
    await first("reuse-1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await other("reuse-1")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["idempotency_key"]


async def test_reusing_a_key_for_another_request_is_invalid_argument_on_every_service(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    admin = running.metadata(Role.PLATFORM_ADMIN)
    fleet = running.metadata(Role.FLEET_MANAGER, Tenant("fleet", FLEET))
    stations = stations_pb2_grpc.StationServiceStub(channel)
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    settlement = settlement_pb2_grpc.SettlementServiceStub(channel)

    def operator_named(name: str) -> Call:
        return lambda key: stations.CreateOperator(
            stations_pb2.CreateOperatorRequest(idempotency_key=key, name=name, country="CN"), metadata=admin
        )

    await _refuses_reuse(operator_named("A"), operator_named("B"))

    async with platform.db.transaction() as session:
        cars = await session.exec(select(Vehicle.id).where(Vehicle.fleet_id == FLEET).order_by(col(Vehicle.id)))
        fleet_car = cars.first()
    assert fleet_car is not None

    def token(id_tag: str) -> Call:
        return lambda key: ingest.RegisterChargingToken(
            ingest_pb2.RegisterChargingTokenRequest(
                idempotency_key=key, id_tag=id_tag, operator_id=OPERATOR, vehicle_id=fleet_car
            ),
            metadata=fleet,
        )

    await _refuses_reuse(token("TAG-A"), token("TAG-B"))

    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    await fund(platform, "driver", DRIVER)
    quote_id = await inventory_quote(platform, DRIVER, vehicle, candidates(platform, vehicle, Mode.SWAP)[:2])
    md = driver_md(platform, DRIVER)

    def order(option: str) -> Call:
        return lambda key: ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key=key, quote_id=quote_id, option_id=option), metadata=md
        )

    await _refuses_reuse(order("o1"), order("o2"))

    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30))
    jam = ordering_pb2.RoadCondition(cell_id="1", congestion_factor_permille=2000, expire_time=expire)

    def roads(count: int) -> Call:
        return lambda key: ordering.PushRoadConditions(
            ordering_pb2.PushRoadConditionsRequest(idempotency_key=key, source="feed", conditions=[jam] * count),
            metadata=admin,
        )

    await _refuses_reuse(roads(1), roads(2))

    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)

    def reoptimize(budget_ms: int) -> Call:
        return lambda key: dispatch.ReoptimizeNow(
            dispatch_pb2.ReoptimizeNowRequest(
                idempotency_key=key, operator_id=OPERATOR, time_budget=duration_pb2.Duration(nanos=budget_ms * 10**6)
            ),
            metadata=admin,
        )

    await _refuses_reuse(reoptimize(50), reoptimize(60))

    wallet = await fund(platform, "driver", "drv-reuse", amount_minor=1)

    def top_up(amount: int) -> Call:
        return lambda key: settlement.TopUp(
            settlement_pb2.TopUpRequest(
                idempotency_key=key,
                account_id=wallet,
                amount=common_pb2.Money(amount_minor=amount, currency="CNY"),
                provider="simulated",
                provider_token="tok",
            ),
            metadata=admin,
        )

    await _refuses_reuse(top_up(100), top_up(200))


async def test_a_key_claimed_but_never_completed_answers_aborted_until_abandoned(database_url: str) -> None:
    """SendStationCommand commits its claim before asking the station: retries meanwhile are ABORTED (retry),
    and a call that dies on the way frees its key instead of blocking it for ever."""
    await upgrade_database_async(database_url)
    db = Database(database_url)
    now = dt.datetime.now(dt.UTC)
    try:
        async with db.transaction() as session:
            claim = await idempotency.claim(session, "Op", "k", b"request", now=now, caller="me")
        with pytest.raises(Aborted):
            async with db.transaction() as session:
                await idempotency.claim(session, "Op", "k", b"request", now=now, caller="me")
        with pytest.raises(InvalidArgument) as err:
            async with db.transaction() as session:
                await idempotency.claim(session, "Op", "k", b"another request", now=now, caller="me")
        assert [v.field for v in err.value.violations] == ["idempotency_key"]
        async with db.transaction() as session:
            await idempotency.abandon(session, claim)
        async with db.transaction() as session:
            again = await idempotency.claim(session, "Op", "k", b"request", now=now, caller="me")
            assert not again.is_replay
            await idempotency.complete(session, again, b"answer")
        async with db.transaction() as session:
            assert (await idempotency.claim(session, "Op", "k", b"request", now=now, caller="me")).replay == b"answer"
            other = await idempotency.claim(session, "Op", "k", b"request", now=now, caller="someone else")
            assert not other.is_replay  # keys are the caller's own
    finally:
        await db.dispose()
