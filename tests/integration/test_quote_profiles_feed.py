"""QuotePowerUp's profile cache follows the fleet's writers through the change feed: a driver refused while
an applicant may order for the fleet's vehicle as soon as the manager approves them (real gRPC)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from voltcloud.api.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.platform.auth import Role, Tenant

from .conftest import RunningPlatform
from .test_fleet_service import VIN, _md, _vehicle

WAIT_S = 10.0  # bounds a failing test only: the feed delivers within milliseconds


async def test_an_approved_driver_may_quote_for_the_fleets_vehicle_at_once(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    delivered = asyncio.Event()
    platform.feed.subscribe("driver", lambda _: delivered.set())  # after the profile cache's own handler
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    fleet = (
        await fleets.CreateFleet(fleet_pb2.CreateFleetRequest(idempotency_key="f", name="Taxi Co"), metadata=admin)
    ).fleet
    manager = _md(running, "mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))
    vehicle = (
        await fleets.RegisterVehicle(fleet_pb2.RegisterVehicleRequest(vehicle=_vehicle(VIN)), metadata=manager)
    ).vehicle
    applicant = _md(running, "drv-cache", Role.DRIVER)
    await fleets.RegisterDriver(
        fleet_pb2.RegisterDriverRequest(driver=fleet_pb2.Driver(name="Li Na", fleet_id=fleet.fleet_id)),
        metadata=applicant,
    )
    stations = list(platform.powerup.engine._maps.station_by_id.values())
    request = ordering_pb2.QuotePowerUpRequest(
        vehicle_id=vehicle.vehicle_id,
        position=common_pb2.LatLng(lat=stations[0].lat, lng=stations[0].lng),
        soc_permille=200,
        target_soc_permille=800,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ordering.QuotePowerUp(request, metadata=applicant)  # the applicant's row is now in the cache
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    delivered.clear()
    await fleets.ReviewDriver(
        fleet_pb2.ReviewDriverRequest(fleet_id=fleet.fleet_id, driver_id="drv-cache", approve=True), metadata=manager
    )
    await asyncio.wait_for(delivered.wait(), WAIT_S)
    quote = await ordering.QuotePowerUp(request, metadata=applicant)
    assert quote.quote_id
