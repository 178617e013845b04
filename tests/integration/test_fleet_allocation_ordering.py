"""A sub-fleet's allocation is what its drivers may spend: a fleet driver's order is paid from the vehicle's
sub-fleet account by default, and an order beyond the allocation is refused with nothing moved."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from voltcloud.api.v1 import fleet_pb2, fleet_pb2_grpc, ordering_pb2, ordering_pb2_grpc, stations_pb2, stations_pb2_grpc

from .conftest import RunningPlatform, field_violations
from .fleet_support import OnboardedFleet, allocate, balance, onboard


async def _quote(channel: grpc.aio.Channel, onboarded: OnboardedFleet) -> ordering_pb2.QuotePowerUpResponse:
    station = (
        await stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(page_size=1), metadata=onboarded.admin
        )
    ).stations[0]
    return await ordering_pb2_grpc.OrderingServiceStub(channel).QuotePowerUp(
        ordering_pb2.QuotePowerUpRequest(
            vehicle_id=onboarded.vehicle.vehicle_id,
            position=station.position,
            soc_permille=250,
            target_soc_permille=800,
        ),
        metadata=onboarded.driver_md,
    )


def _order(quote: ordering_pb2.QuotePowerUpResponse, key: str) -> ordering_pb2.CreateOrderRequest:
    # No payer named: the default is what is under test.
    return ordering_pb2.CreateOrderRequest(
        idempotency_key=key, quote_id=quote.quote_id, option_id=quote.options[0].option_id, allow_fallback=False
    )


async def test_orders_are_paid_from_the_sub_fleet_allocation(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    onboarded = await onboard(running, channel, funded=500_000, allocated=1)
    fleet, sub = onboarded.fleet, onboarded.sub_fleet
    orders = ordering_pb2_grpc.OrderingServiceStub(channel)
    quote = await _quote(channel, onboarded)
    assert quote.options

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await orders.CreateOrder(_order(quote, "o1"), metadata=onboarded.driver_md)
    # The fleet's account holds plenty, but the sub-fleet's allocation (1 fen) is the limit.
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert sub.account_id in (refused.value.details() or "")
    assert await balance(channel, fleet.account_id, onboarded.manager) == (499_999, 0)
    assert await balance(channel, sub.account_id, onboarded.manager) == (1, 0)
    listed = await orders.ListOrders(
        ordering_pb2.ListOrdersRequest(fleet_id=fleet.fleet_id), metadata=onboarded.manager
    )
    assert list(listed.orders) == []  # nothing half-written

    await allocate(fleet_pb2_grpc.FleetServiceStub(channel), fleet, sub, 200_000, onboarded.manager, key="more")
    created = (await orders.CreateOrder(_order(quote, "o2"), metadata=onboarded.driver_md)).order
    assert created.order_id
    sub_balance, sub_held = await balance(channel, sub.account_id, onboarded.manager)
    assert sub_held > 0 and sub_balance == 200_001
    assert await balance(channel, fleet.account_id, onboarded.manager) == (299_999, 0)  # the fleet's untouched

    # The manager's day: one order for the vehicle, not served yet, so no energy and no cost so far.
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    report = await fleets.GetFleetDailyReport(
        fleet_pb2.GetFleetDailyReportRequest(fleet_id=fleet.fleet_id, date=today, time_zone="UTC"),
        metadata=onboarded.manager,
    )
    assert [(d.vehicle_id, d.order_count, d.completed_count, d.cost.amount_minor) for d in report.lines] == [
        (onboarded.vehicle.vehicle_id, 1, 0, 0)
    ]
    assert report.csv.splitlines()[0].startswith("vehicle_id,plate,sub_fleet_id,orders")
    with pytest.raises(grpc.aio.AioRpcError) as bad_day:
        await fleets.GetFleetDailyReport(
            fleet_pb2.GetFleetDailyReportRequest(fleet_id=fleet.fleet_id, date="03/12/2026"),
            metadata=onboarded.manager,
        )
    assert field_violations(bad_day.value) == ["date"]
