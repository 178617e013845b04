"""Issue 9, finding 5 over real gRPC (SQLite + PostgreSQL): an operator's road conditions count only around its
own stations; the platform admin (the traffic feed) pushes city-wide.

Operator B pushes a jam on the road to one of operator A's stations: PERMISSION_DENIED, and the ETA to that
station does not move. A's own push there, and the admin's, do move it.
"""

from __future__ import annotations

import datetime as dt
import math

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlmodel import select

from tests.integration.conftest import RunningPlatform
from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.fleet.models import Vehicle
from voltcloud.ordering.roads import SCOPE_RADIUS_M
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.stations.models import Station

Metadata = tuple[tuple[str, str], ...]
APPROACH_M = 1_500.0  # the quoting car waits this far north of the station


def _md(platform: Platform, subject: str, role: Role, tenant: Tenant | None = None) -> Metadata:
    return (("authorization", f"Bearer {platform.tokens.mint(subject, role, tenant)}"),)


def _m(a: Station, b: Station) -> float:
    dy = (a.lat - b.lat) * 111_195
    dx = (a.lng - b.lng) * 111_195 * math.cos(math.radians(a.lat))
    return math.hypot(dx, dy)


async def _isolated_station(platform: Platform) -> tuple[Station, str]:
    """A station of one operator farther than the scope radius (plus the approach) from every station of
    another operator; returns it and that other operator."""
    async with platform.db.transaction() as session:
        stations = list(await session.exec(select(Station)))
    operators = sorted({s.operator_id for s in stations})
    for target in stations:
        for other in operators:
            if other == target.operator_id:
                continue
            nearest = min(_m(target, s) for s in stations if s.operator_id == other)
            if nearest > SCOPE_RADIUS_M + APPROACH_M + 1_000:
                return target, other
    raise AssertionError("the demo city has no station far enough from another operator's")


class Eta:
    def __init__(self, platform: Platform, stub: ordering_pb2_grpc.OrderingServiceStub, station: Station) -> None:
        self._stub, self._station = stub, station
        self._admin = _md(platform, "admin", Role.PLATFORM_ADMIN)
        self.lat = station.lat + APPROACH_M / 111_195
        self.lng = station.lng
        self._vehicle = ""

    async def __call__(self) -> int:
        """The ETA (s) of the best option at the station for a car APPROACH_M away."""
        request = ordering_pb2.QuotePowerUpRequest(
            vehicle_id=self._vehicle,
            position=common_pb2.LatLng(lat=self.lat, lng=self.lng),
            soc_permille=200,
            target_soc_permille=800,
            station_ids=[self._station.id],
            allowed_modes=[common_pb2.POWER_UP_MODE_SWAP, common_pb2.POWER_UP_MODE_CHARGE],
        )
        quote = await self._stub.QuotePowerUp(request, metadata=self._admin)
        assert quote.options, f"no option at {self._station.id} for {self._vehicle}"
        return int(min(o.eta.seconds for o in quote.options if o.station_id == self._station.id))

    async def pick_vehicle(self, platform: Platform) -> None:
        async with platform.db.transaction() as session:
            vehicles = list(await session.exec(select(Vehicle).limit(200)))
        for vehicle in vehicles:
            self._vehicle = vehicle.id
            try:
                await self()
                return
            except (AssertionError, grpc.aio.AioRpcError):
                continue
        raise AssertionError(f"no vehicle can be served at {self._station.id}")


def _jam(
    eta: Eta, station: Station, factor_permille: int, key: str, source: str = "feed"
) -> ordering_pb2.PushRoadConditionsRequest:
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30))
    condition = ordering_pb2.RoadCondition(
        segment_id="approach", congestion_factor_permille=factor_permille, expire_time=expire
    )
    getattr(condition, "from").CopyFrom(common_pb2.LatLng(lat=eta.lat, lng=eta.lng))
    condition.to.CopyFrom(common_pb2.LatLng(lat=station.lat, lng=station.lng))
    return ordering_pb2.PushRoadConditionsRequest(idempotency_key=key, source=source, conditions=[condition])


async def test_operators_push_road_conditions_only_around_their_own_stations(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    stub = ordering_pb2_grpc.OrderingServiceStub(channel)
    station, intruder = await _isolated_station(platform)
    eta = Eta(platform, stub, station)
    await eta.pick_vehicle(platform)
    owner = _md(platform, "op-a", Role.OPERATOR, Tenant("operator", station.operator_id))
    other = _md(platform, "op-b", Role.OPERATOR, Tenant("operator", intruder))
    admin = _md(platform, "feed", Role.PLATFORM_ADMIN)
    free = await eta()

    # Another operator's jam around this station: refused, no effect. Nor can it squat the key the traffic
    # feed will use next.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PushRoadConditions(_jam(eta, station, 8000, "batch-1"), metadata=other)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await eta() == free

    # The station's own operator may.
    pushed = await stub.PushRoadConditions(_jam(eta, station, 3000, "own-1"), metadata=owner)
    assert (pushed.applied, pushed.rejected) == (1, 0)
    jammed = await eta()
    assert jammed > free

    # The platform's traffic feed pushes anywhere, with the key the intruder tried to take.
    pushed = await stub.PushRoadConditions(_jam(eta, station, 9000, "batch-1"), metadata=admin)
    assert (pushed.applied, pushed.rejected) == (1, 0)
    assert await eta() > jammed
