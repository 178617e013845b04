"""The platform over real gRPC channels: health, reflection, auth, validation, registry reads."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from voltcloud.api.v1 import (
    common_pb2,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.platform.auth import Role, Tenant

from .conftest import RunningPlatform

SERVICES = {
    "voltcloud.v1.StationService",
    "voltcloud.v1.OrderingService",
    "voltcloud.v1.DispatchService",
    "voltcloud.v1.SettlementService",
    "voltcloud.v1.FleetService",
    "voltcloud.v1.MaintenanceService",
    "voltcloud.v1.IngestService",
}


async def test_health_answers_serving_without_a_token(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    overall = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    ordering = await stub.Check(health_pb2.HealthCheckRequest(service="voltcloud.v1.OrderingService"))
    assert ordering.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_every_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in response.list_services_response.service}
        assert names >= SERVICES
        break


async def test_call_without_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListStations(stations_pb2.ListStationsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_forged_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4Iiwicm9sZSI6InBsYXRmb3JtX2FkbWluIn0.c2lnbmF0dXJl"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListStations(stations_pb2.ListStationsRequest(), metadata=(("authorization", f"Bearer {forged}"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_driver_calling_an_operator_rpc_is_permission_denied(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateStation(stations_pb2.CreateStationRequest(), metadata=running.metadata(Role.DRIVER))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "driver" in (err.value.details() or "")


async def test_malformed_request_is_invalid_argument_naming_the_field(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    request = stations_pb2.ListStationsRequest(
        bbox=common_pb2.BoundingBox(
            south_west=common_pb2.LatLng(lat=31.0, lng=121.0), north_east=common_pb2.LatLng(lat=95.0, lng=122.0)
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListStations(request, metadata=running.metadata(Role.DRIVER))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["bbox.north_east.lat"]


async def test_list_stations_pages_through_the_demo_city(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    metadata = running.metadata(Role.DRIVER)
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListStations(
            stations_pb2.ListStationsRequest(page_size=7, page_token=token), metadata=metadata
        )
        seen.extend(s.station_id for s in page.stations)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 20
    assert seen == sorted(seen)
    swap_only = await stub.ListStations(
        stations_pb2.ListStationsRequest(kind=common_pb2.STATION_KIND_SWAP, page_size=500), metadata=metadata
    )
    assert swap_only.stations and all(s.kind == common_pb2.STATION_KIND_SWAP for s in swap_only.stations)
    assert all(s.swap.lane_count > 0 for s in swap_only.stations)


async def test_operators_see_only_their_own_stations(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    everything = await stub.ListStations(
        stations_pb2.ListStationsRequest(page_size=500), metadata=running.metadata(Role.PLATFORM_ADMIN)
    )
    operators = {s.operator_id for s in everything.stations}
    assert len(operators) >= 2
    mine, theirs = sorted(operators)[:2]
    as_mine = running.metadata(Role.OPERATOR, Tenant("operator", mine))
    own = await stub.ListStations(stations_pb2.ListStationsRequest(page_size=500), metadata=as_mine)
    assert own.stations and {s.operator_id for s in own.stations} == {mine}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListStations(stations_pb2.ListStationsRequest(operator_id=theirs), metadata=as_mine)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    other_station = next(s.station_id for s in everything.stations if s.operator_id == theirs)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetStation(stations_pb2.GetStationRequest(station_id=other_station), metadata=as_mine)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
