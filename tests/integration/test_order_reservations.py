"""Reservations (windows, overlap refused, no-show expiry), recommendations and road conditions over gRPC."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.engine import STATION_CHARGING, STATION_SWAP
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform

from .conftest import channel_to, serving
from .powerup_support import driver_md, swappable_vehicle

DRIVER = "drv-rsv"


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(
        tmp_path, database_url, sweep_interval_s=0.2, reservation_no_show_s=1, reoptimize_interval_s=0
    ) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


def _window(start: dt.datetime, minutes: int) -> common_pb2.TimeWindow:
    a, b = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    a.FromDatetime(start)
    b.FromDatetime(start + dt.timedelta(minutes=minutes))
    return common_pb2.TimeWindow(start=a, end=b)


def _station(platform: Platform, kind: int) -> str:
    engine = platform.powerup.engine
    return next(
        s.id for s in engine._maps.station_by_id.values() if s.kind == kind and (kind != STATION_SWAP or s.lanes == 1)
    )


async def test_connector_windows_never_overlap(platform: Platform, channel: grpc.aio.Channel) -> None:
    stub = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    md = driver_md(platform, DRIVER)
    station = _station(platform, STATION_CHARGING)
    connector, _ = platform.powerup.engine.station_resources(station)
    target = next(c["id"] for c in connector if c["status"] == 1)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)

    def request(key: str, offset_min: int) -> ordering_pb2.CreateReservationRequest:
        return ordering_pb2.CreateReservationRequest(
            idempotency_key=key,
            station_id=station,
            connector_id=target,
            vehicle_id=vehicle.id,
            window=_window(start + dt.timedelta(minutes=offset_min), 30),
        )

    first = (await stub.CreateReservation(request("r1", 0), metadata=md)).reservation
    assert first.connector_id == target and first.state == ordering_pb2.RESERVATION_STATE_ACTIVE
    replay = (await stub.CreateReservation(request("r1", 0), metadata=md)).reservation
    assert replay.reservation_id == first.reservation_id
    results = await asyncio.gather(
        stub.CreateReservation(request("r2", 15), metadata=md),
        stub.CreateReservation(request("r3", 10), metadata=md),
        return_exceptions=True,
    )
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results)
    assert {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)} <= {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
    }
    adjacent = (await stub.CreateReservation(request("r4", 30), metadata=md)).reservation
    assert adjacent.reservation_id != first.reservation_id
    listed = await stub.ListReservations(ordering_pb2.ListReservationsRequest(station_id=station), metadata=md)
    assert {r.reservation_id for r in listed.reservations} == {first.reservation_id, adjacent.reservation_id}
    cancelled = (
        await stub.CancelReservation(
            ordering_pb2.CancelReservationRequest(idempotency_key="c1", reservation_id=first.reservation_id),
            metadata=md,
        )
    ).reservation
    assert cancelled.state == ordering_pb2.RESERVATION_STATE_CANCELLED
    again = (await stub.CreateReservation(request("r5", 0), metadata=md)).reservation
    assert again.state == ordering_pb2.RESERVATION_STATE_ACTIVE


async def test_swap_lanes_fill_up_and_no_shows_expire(platform: Platform, channel: grpc.aio.Channel) -> None:
    stub = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    md = driver_md(platform, DRIVER)
    station = _station(platform, STATION_SWAP)  # one lane
    now = dt.datetime.now(dt.UTC)
    soon = (
        await stub.CreateReservation(
            ordering_pb2.CreateReservationRequest(
                idempotency_key="l1", station_id=station, vehicle_id=vehicle.id, window=_window(now, 20)
            ),
            metadata=md,
        )
    ).reservation
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateReservation(
            ordering_pb2.CreateReservationRequest(
                idempotency_key="l2", station_id=station, vehicle_id=vehicle.id, window=_window(now, 20)
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for _ in range(40):  # no-show after 1 s, sweep every 0.2 s
        listed = await stub.ListReservations(
            ordering_pb2.ListReservationsRequest(station_id=station, states=[ordering_pb2.RESERVATION_STATE_EXPIRED]),
            metadata=md,
        )
        if listed.reservations:
            break
        await asyncio.sleep(0.2)
    assert [r.reservation_id for r in listed.reservations] == [soon.reservation_id]


async def test_bad_windows_are_invalid_argument(platform: Platform, channel: grpc.aio.Channel) -> None:
    stub = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    md = driver_md(platform, DRIVER)
    station = _station(platform, STATION_CHARGING)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateReservation(
            ordering_pb2.CreateReservationRequest(
                idempotency_key="b1", station_id=station, vehicle_id=vehicle.id, window=_window(past, 30)
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "window.end" in (err.value.details() or "")


async def test_recommendations_and_road_conditions(platform: Platform, channel: grpc.aio.Channel) -> None:
    stub = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    md = driver_md(platform, DRIVER)
    engine = platform.powerup.engine
    station = next(iter(engine._maps.station_by_id.values()))
    here = common_pb2.LatLng(lat=station.lat + 0.01, lng=station.lng)
    page = await stub.ListRecommendations(
        ordering_pb2.ListRecommendationsRequest(position=here, vehicle_id=vehicle.id, page_size=3), metadata=md
    )
    assert 0 < len(page.recommendations) <= 3 and page.next_page_token
    etas = [r.eta.seconds for r in page.recommendations]
    assert etas == sorted(etas)
    charge = [r for r in page.recommendations if r.mode == common_pb2.POWER_UP_MODE_CHARGE]
    assert all(r.available_connectors > 0 and r.energy_price_micros_per_kwh > 0 for r in charge)
    more = await stub.ListRecommendations(
        ordering_pb2.ListRecommendationsRequest(
            position=here, vehicle_id=vehicle.id, page_size=3, page_token=page.next_page_token
        ),
        metadata=md,
    )
    assert {r.station_id or r.resource_id for r in more.recommendations}.isdisjoint(
        {r.station_id or r.resource_id for r in page.recommendations}
    )

    now = dt.datetime.now(dt.UTC)
    before = engine.congestion_at(station.lat, station.lng, now)
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(now + dt.timedelta(minutes=30))
    ops = (("authorization", f"Bearer {platform.tokens.mint('feed', Role.OPERATOR, Tenant('operator', 'op-0001'))}"),)
    request = ordering_pb2.PushRoadConditionsRequest(
        idempotency_key="batch-1",
        source="city-feed",
        conditions=[
            ordering_pb2.RoadCondition(
                cell_id=str(engine.cell_of(station.lat, station.lng)),
                congestion_factor_permille=2500,
                expire_time=expire,
            ),
            ordering_pb2.RoadCondition(cell_id="not-a-cell", congestion_factor_permille=2000, expire_time=expire),
        ],
    )
    result = await stub.PushRoadConditions(request, metadata=ops)
    assert (result.applied, result.rejected) == (1, 1)
    assert engine.congestion_at(station.lat, station.lng, now) == pytest.approx(2.5)
    assert before == pytest.approx(1.0)
    replay = await stub.PushRoadConditions(request, metadata=ops)
    assert (replay.applied, replay.rejected) == (1, 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PushRoadConditions(request, metadata=md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_sweep_sleeps_until_something_falls_due(
    platform: Platform, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, idle cost: with nothing pending the sweep does not run every `sweep_interval_s` (0.2 s here) but
    sleeps; a new reservation, announced on the change feed, wakes it to plan its no-show expiry."""
    sweeps = 0
    original = platform.powerup.sweep_once

    async def counting() -> None:
        nonlocal sweeps
        sweeps += 1
        await original()

    monkeypatch.setattr(platform.powerup, "sweep_once", counting)
    await asyncio.sleep(1.2)
    assert sweeps == 0  # six periods of the old timer passed
    stub = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    window = _window(dt.datetime.now(dt.UTC), 20)
    request = ordering_pb2.CreateReservationRequest(
        idempotency_key="wake", station_id=_station(platform, STATION_SWAP), vehicle_id=vehicle.id, window=window
    )
    await stub.CreateReservation(request, metadata=driver_md(platform, DRIVER))
    for _ in range(40):
        if sweeps >= 2:  # woken by the feed, then again when its no-show (1 s) fell due
            break
        await asyncio.sleep(0.1)
    assert sweeps >= 2
