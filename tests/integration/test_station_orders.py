"""Self-service orders moved on by the station's gateway over real gRPC (SQLite + PostgreSQL): a charge order
goes IN_SERVICE when the session starts and COMPLETED (repriced, captured) when it stops; replays change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlmodel import select

from voltcloud.api.v1 import common_pb2, ingest_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.ordering.states import Mode
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.settlement.models import JournalEntry
from voltcloud.stations.models import StationSession

from ..stationkit import RawUplink, event, hello
from .conftest import channel_to, serving
from .powerup_support import account_state, candidates, driver_md, fund, inventory_quote, swappable_vehicle

DRIVER = "drv-station"
GW = "gw-orders"
EN_ROUTE, IN_SERVICE, COMPLETED = (
    common_pb2.ORDER_STATE_EN_ROUTE,
    common_pb2.ORDER_STATE_IN_SERVICE,
    common_pb2.ORDER_STATE_COMPLETED,
)


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


def gateway_md(platform: Platform, operator_id: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {platform.tokens.mint(GW, Role.GATEWAY, Tenant('operator', operator_id))}"),)


async def test_charge_order_completes_from_station_session(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    account = await fund(platform, "driver", DRIVER)
    option = candidates(platform, vehicle, Mode.CHARGE)[0]
    assert option.station_id and option.connector_id
    quote_id = await inventory_quote(platform, DRIVER, vehicle, [option])
    md = driver_md(platform, DRIVER)
    created = await ordering.CreateOrder(
        ordering_pb2.CreateOrderRequest(idempotency_key="k1", quote_id=quote_id, option_id="o1"), metadata=md
    )
    order_id = created.order.order_id
    assert created.order.state == EN_ROUTE
    balance_before, held = await account_state(platform, account)
    assert held > 0

    watched: list[ordering_pb2.WatchOrderResponse] = []

    async def watch() -> None:
        async for response in ordering.WatchOrder(
            ordering_pb2.WatchOrderRequest(order_id=order_id, after_event_seq=created.order.last_event_seq),
            metadata=md,
        ):
            watched.append(response)

    watcher = asyncio.create_task(watch())
    uplink = RawUplink(channel, gateway_md(platform, option.operator_id))
    uplink.send(hello(GW, [option.station_id]))
    await uplink.ack_at_least(0)
    # The charger reports the session on the reserved connector (no order id: linked by connector).
    start = event(
        1,
        option.station_id,
        session_started=ingest_pb2.SessionStarted(
            session_id="tx-1", connector_id=option.connector_id, meter_start_wh=1000
        ),
    )
    uplink.send(start)
    await uplink.ack_at_least(1)
    got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order_id), metadata=md)
    assert got.order.state == IN_SERVICE
    stop = event(
        2,
        option.station_id,
        session_stopped=ingest_pb2.SessionStopped(
            session_id="tx-1", connector_id=option.connector_id, meter_stop_wh=13_500, reason="Local"
        ),
    )
    uplink.send(stop)
    await uplink.ack_at_least(2)
    await asyncio.wait_for(watcher, 10)
    assert [w.event.to_state for w in watched if w.event.seq] == [IN_SERVICE, COMPLETED]

    got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order_id), metadata=md)
    order = got.order
    assert order.state == COMPLETED
    assert order.energy_wh == 12_500
    amount = order.final_price.amount_minor
    assert amount > 0
    assert order.events[-1].amount.amount_minor == amount
    balance, held = await account_state(platform, account)
    assert (balance, held) == (balance_before - amount, 0)
    async with platform.db.transaction() as session:
        entries = [e for e in await session.exec(select(JournalEntry)) if order_id in e.description]
        assert len(entries) == 1  # one ORDER_SETTLEMENT entry: the capture
        linked = (await session.exec(select(StationSession).where(StationSession.external_id == "tx-1"))).one()
        assert linked.order_id == order_id

    # Replays: the same seq (duplicate, dropped) and the charger re-sending its stop under a new seq.
    uplink.send(stop, start)
    again = event(
        3,
        option.station_id,
        session_stopped=ingest_pb2.SessionStopped(
            session_id="tx-1", connector_id=option.connector_id, meter_stop_wh=20_000
        ),
    )
    uplink.send(again)
    await uplink.ack_at_least(3)
    await uplink.finish()
    after = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order_id), metadata=md)
    assert after.order.version == order.version
    assert after.order.last_event_seq == order.last_event_seq
    assert after.order.final_price.amount_minor == amount
    assert await account_state(platform, account) == (balance_before - amount, 0)
