"""StartByScan over real gRPC (SQLite + PostgreSQL): QR parsing, the order with hold and connector reservation,
the remote start down a raw gateway uplink, and an offline station failing the order and releasing the hold."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sqlmodel import col, select

from voltcloud.api.v1 import common_pb2, ingest_pb2, ordering_pb2, ordering_pb2_grpc, stations_pb2
from voltcloud.fleet.models import Vehicle
from voltcloud.platform.auth import Role, Tenant
from voltcloud.stations.models import Connector

from ..stationkit import CHARGING_STATION, CONNECTOR, OPERATOR, RawUplink, event, hello
from .conftest import RunningPlatform
from .powerup_support import account_state, driver_md, fund
from .test_station_service import violations

DRIVER = "drv-scan"
GW = "gw-scan"
QR = f"voltcloud://c/{CHARGING_STATION}/{CONNECTOR}"


async def _vehicle(running: RunningPlatform) -> str:
    async with running.platform.db.transaction() as session:
        connector = await session.get(Connector, CONNECTOR)
        assert connector is not None
        rows = await session.exec(select(Vehicle).where(col(Vehicle.fleet_id).is_(None)).order_by(col(Vehicle.id)))
        vehicle = next(v for v in rows if v.connector_mask & (1 << connector.standard))
        vehicle.owner_driver_id = DRIVER  # the driver registered this private car (RegisterVehicle)
        session.add(vehicle)
        return vehicle.id


async def test_start_by_scan(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    md = driver_md(running.platform, DRIVER)
    account = await fund(running.platform, "driver", DRIVER)
    vehicle_id = await _vehicle(running)

    for bad in ("", "https://example.com", "voltcloud://c/st-1", "voltcloud://x/st-1/cn", "voltcloud://l/st-1/0"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ordering.StartByScan(
                ordering_pb2.StartByScanRequest(idempotency_key="b", qr_payload=bad, vehicle_id=vehicle_id),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert violations(err.value) == ["qr_payload"]

    # No gateway connected: the order fails at once and its hold is released.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ordering.StartByScan(
            ordering_pb2.StartByScanRequest(idempotency_key="s1", qr_payload=QR, vehicle_id=vehicle_id), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "offline" in (err.value.details() or "") and "hold was released" in (err.value.details() or "")
    listed = await ordering.ListOrders(ordering_pb2.ListOrdersRequest(), metadata=md)
    assert [o.state for o in listed.orders] == [common_pb2.ORDER_STATE_FAILED]
    assert (await account_state(running.platform, account))[1] == 0

    # A gateway that accepts the RemoteStart: the order is created, the command carries its id.
    token = running.platform.tokens.mint(GW, Role.GATEWAY, Tenant("operator", OPERATOR))
    uplink = RawUplink(channel, (("authorization", f"Bearer {token}"),))
    uplink.send(hello(GW, [CHARGING_STATION]))
    await uplink.ack_at_least(0)
    call = asyncio.ensure_future(
        ordering.StartByScan(
            ordering_pb2.StartByScanRequest(idempotency_key="s2", qr_payload=QR, vehicle_id=vehicle_id), metadata=md
        )
    )
    while True:
        message = await uplink.read()
        if message.WhichOneof("msg") == "command":
            break
    command = message.command
    assert command.station_id == CHARGING_STATION
    assert command.command.remote_start.connector_id == CONNECTOR
    uplink.send(
        ingest_pb2.GatewayToPlatform(
            seq=1,
            command_result=ingest_pb2.CommandResult(
                result=stations_pb2.StationCommandResult(
                    command_id=command.command_id, status=stations_pb2.COMMAND_STATUS_ACCEPTED
                )
            ),
        )
    )
    started = (await asyncio.wait_for(call, 10)).order
    assert command.command.remote_start.order_id == started.order_id
    assert started.state == common_pb2.ORDER_STATE_EN_ROUTE
    assert started.option.resource_id == CONNECTOR
    assert (await account_state(running.platform, account))[1] > 0
    # A retry with the same key answers the same order without a second start.
    again = await ordering.StartByScan(
        ordering_pb2.StartByScanRequest(idempotency_key="s2", qr_payload=QR, vehicle_id=vehicle_id), metadata=md
    )
    assert again.order.order_id == started.order_id
    # The charger's session, remote-started for the order, moves it into service.
    uplink.send(
        event(
            2,
            session_started=ingest_pb2.SessionStarted(
                session_id="tx-scan", connector_id=CONNECTOR, order_id=started.order_id
            ),
        )
    )
    await uplink.ack_at_least(2)
    got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=started.order_id), metadata=md)
    assert got.order.state == common_pb2.ORDER_STATE_IN_SERVICE
    await uplink.finish()
