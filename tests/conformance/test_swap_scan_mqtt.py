"""Scan to swap through the real MQTT swap gateway (the local Mosquitto), on SQLite and PostgreSQL: a driver
scans a lane's QR code, the platform picks the pack with the battery matcher, holds the money and tells the
station (a ReserveCommand on the lane); the station swaps, the order completes and settles. A failed swap and a
refused reservation release hold, pack and lane, and move no money; so does a swap that never happens (the
order expires at `service_by`)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import grpc
import pytest
from sqlmodel import col, select

from tests.stationkit import OPERATOR, SWAP_STATION
from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc, stations_pb2, stations_pb2_grpc
from voltcloud.ordering import orders
from voltcloud.ordering.models import Order
from voltcloud.platform.auth import Role, Tenant
from voltcloud.stations.models import Pack
from voltcloud_gateways.swap.mqtt import SwapMqttGateway

from ..integration.conftest import RunningPlatform
from ..integration.powerup_support import account_state, driver_md, fund, swappable_vehicle
from .test_swap_mqtt import Station, broker_up, matcher_choice, swap, until

__all__ = ["swap"]  # the fixture, shared with test_swap_mqtt

pytestmark = pytest.mark.skipif(not broker_up(), reason="no MQTT broker on 127.0.0.1:1883")

DRIVER = "drv-swapscan"


def qr(lane: int) -> str:
    return f"voltcloud://l/{SWAP_STATION}/{lane}"


async def scan(ordering: ordering_pb2_grpc.OrderingServiceStub, md: Any, key: str, lane: int, vehicle: str) -> Any:
    request = ordering_pb2.StartByScanRequest(idempotency_key=key, qr_payload=qr(lane), vehicle_id=vehicle)
    return await ordering.StartByScan(request, metadata=md)


async def reserved(station: Station, lane: int, answer: str = "accepted") -> dict[str, Any]:
    command = await asyncio.wait_for(station.commands.get(), 10)
    assert command["type"] == "reserve" and command["lane"] == lane
    station.result(command["command_id"], answer)
    return command


async def pack_row(running: RunningPlatform, pack_id: str) -> Pack:
    async with running.platform.db.transaction() as session:
        row = await session.get(Pack, pack_id)
    assert row is not None
    return row


async def order_in(ordering: Any, md: Any, order_id: str, state: int) -> ordering_pb2.Order:
    async def reached() -> ordering_pb2.Order | None:
        got = (await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order_id), metadata=md)).order
        return got if got.state == state else None

    result: ordering_pb2.Order = await until(reached)
    return result


async def lane_reservation(stub: stations_pb2_grpc.StationServiceStub, md: Any, lane: int) -> str:
    twin = (await stub.GetStationTwin(stations_pb2.GetStationTwinRequest(station_id=SWAP_STATION), metadata=md)).twin
    return next((entry.reservation_id for entry in twin.lanes if entry.lane == lane), "")


async def test_swap_by_scan_completes_and_settles(
    running: RunningPlatform, channel: grpc.aio.Channel, swap: tuple[SwapMqttGateway, Station]
) -> None:
    _, station = swap
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    stations = stations_pb2_grpc.StationServiceStub(channel)
    md = driver_md(running.platform, DRIVER)
    op_md = running.metadata(Role.OPERATOR, Tenant("operator", OPERATOR))
    account = await fund(running.platform, "driver", DRIVER)
    vehicle = await swappable_vehicle(running.platform, owner=DRIVER)
    async with running.platform.db.transaction() as session:
        out = (await session.exec(select(Pack).where(Pack.vehicle_id == vehicle.id).order_by(col(Pack.id)))).first()
    station.publish("evt/heartbeat")
    expected = await matcher_choice(running, vehicle.pack_type_id or 0)

    call = asyncio.ensure_future(scan(ordering, md, "swap-1", 1, vehicle.id))
    command = await reserved(station, 1)
    order = (await asyncio.wait_for(call, 10)).order
    assert command["pack_id"] == expected == order.option.pack_id  # the matcher's choice, handed out on lane 1
    assert command["reservation_id"] == order.reservation_id
    assert order.state == common_pb2.ORDER_STATE_EN_ROUTE and order.option.resource_id == "1"
    assert (await pack_row(running, expected)).state == common_pb2.PACK_STATE_RESERVED
    balance, held = await account_state(running.platform, account)
    assert held > 0
    assert await until(lambda: _eq(lane_reservation(stations, op_md, 1), order.reservation_id))
    # A retry answers the same order (no second reservation); the busy lane takes no other order.
    assert (await scan(ordering, md, "swap-1", 1, vehicle.id)).order.order_id == order.order_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await scan(ordering, md, "swap-other", 1, vehicle.id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "lane 1" in (err.value.details() or "")

    session_id = "swap-scan-1"
    body = {"session_id": session_id, "lane": 1, "vehicle_id": vehicle.id, "pack_in_id": expected}
    body["pack_out_id"] = out.id if out is not None else ""
    station.publish("evt/swap_started", **body)
    await order_in(ordering, md, order.order_id, common_pb2.ORDER_STATE_IN_SERVICE)
    station.publish(
        "evt/swap_completed", **body, pack_out_soc_permille=150, pack_in_soc_permille=960, energy_wh=42_000,
        pack_out_slot=1, success=True,
    )  # fmt: skip
    done = await order_in(ordering, md, order.order_id, common_pb2.ORDER_STATE_COMPLETED)
    assert done.energy_wh == 42_000 and done.pack_in_id == expected and done.final_price.amount_minor > 0
    after_balance, after_held = await account_state(running.platform, account)
    assert after_held == 0 and after_balance == balance - done.final_price.amount_minor  # captured: settled
    installed = await pack_row(running, expected)
    assert installed.state == common_pb2.PACK_STATE_IN_VEHICLE and installed.vehicle_id == vehicle.id
    assert await until(lambda: _eq(lane_reservation(stations, op_md, 1), ""))


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_failed_swap_and_refused_reservation_release_everything(
    running: RunningPlatform, channel: grpc.aio.Channel, swap: tuple[SwapMqttGateway, Station]
) -> None:
    _, station = swap
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    stations = stations_pb2_grpc.StationServiceStub(channel)
    md = driver_md(running.platform, DRIVER)
    op_md = running.metadata(Role.OPERATOR, Tenant("operator", OPERATOR))
    account = await fund(running.platform, "driver", DRIVER)
    vehicle = await swappable_vehicle(running.platform, owner=DRIVER)
    station.publish("evt/heartbeat")
    before = await account_state(running.platform, account)

    # The station swaps and reports a failure: the order fails, hold, pack and lane are released.
    call = asyncio.ensure_future(scan(ordering, md, "fail-1", 1, vehicle.id))
    command = await reserved(station, 1)
    order = (await asyncio.wait_for(call, 10)).order
    assert (await account_state(running.platform, account))[1] > 0
    assert await until(lambda: _eq(lane_reservation(stations, op_md, 1), order.reservation_id))
    body = {"session_id": "swap-fail-1", "lane": 1, "vehicle_id": vehicle.id, "pack_in_id": command["pack_id"]}
    station.publish("evt/swap_started", **body)
    station.publish("evt/swap_completed", **body, success=False, failure_reason="latch jammed")
    failed = await order_in(ordering, md, order.order_id, common_pb2.ORDER_STATE_FAILED)
    assert "latch jammed" in failed.reason
    assert await account_state(running.platform, account) == before  # no money moved, nothing held
    assert (await pack_row(running, command["pack_id"])).state == common_pb2.PACK_STATE_READY
    assert await until(lambda: _eq(lane_reservation(stations, op_md, 1), ""))

    # The station refuses the reservation: StartByScan fails the order at once and releases everything.
    call = asyncio.ensure_future(scan(ordering, md, "fail-2", 1, vehicle.id))
    command = await reserved(station, 1, "rejected")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(call, 10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "released" in (err.value.details() or "")
    assert await account_state(running.platform, account) == before
    assert (await pack_row(running, command["pack_id"])).state == common_pb2.PACK_STATE_READY
    assert await lane_reservation(stations, op_md, 1) == ""
    listed = (await ordering.ListOrders(ordering_pb2.ListOrdersRequest(), metadata=md)).orders
    assert sorted(o.state for o in listed) == [common_pb2.ORDER_STATE_FAILED] * 2

    # The station takes the reservation and never swaps: at `service_by` the order expires, releasing all.
    call = asyncio.ensure_future(scan(ordering, md, "fail-3", 1, vehicle.id))
    command = await reserved(station, 1)
    order = (await asyncio.wait_for(call, 10)).order
    async with running.platform.db.transaction() as session:
        row = await session.get(Order, order.order_id)
        assert row is not None
        row.service_by = running.platform.powerup.deps.clock.now() - dt.timedelta(seconds=1)
        session.add(row)
    assert await orders.expire_due(running.platform.powerup.deps) == 1  # what the expiry loop runs
    expired = await order_in(ordering, md, order.order_id, common_pb2.ORDER_STATE_EXPIRED)
    assert expired.state == common_pb2.ORDER_STATE_EXPIRED
    assert await account_state(running.platform, account) == before
    assert (await pack_row(running, command["pack_id"])).state == common_pb2.PACK_STATE_READY

    # Not a swap station, a lane it does not have, a fixed-battery car: refused before anything is written.
    for payload, code in (
        (f"voltcloud://l/{SWAP_STATION}/64", grpc.StatusCode.NOT_FOUND),
        ("voltcloud://l/st-nope/1", grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            request = ordering_pb2.StartByScanRequest(
                idempotency_key=payload, qr_payload=payload, vehicle_id=vehicle.id
            )
            await ordering.StartByScan(request, metadata=md)
        assert err.value.code() == code, payload
