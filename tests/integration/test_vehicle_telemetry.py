"""Vehicle telemetry end to end over real gRPC (issue 13, platform side): a fleet onboarded through the API, a
GB/T gateway of that fleet streaming vehicle readings up the uplink, and the fleet manager's view of them —
GetVehicleState, WatchVehicles (state and alerts pushed from the change feed), GetVehicleTrack (raw beside
repaired), a level-3 alarm as a platform alarm, reissued data that does not move the live state back."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import sqlalchemy as sa
from sqlmodel import col

from tests.stationkit import RawUplink
from voltcloud.api.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from voltcloud.maintenance.models import Alarm, WorkOrder
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.feed import ChangeEvent
from voltcloud.platform.limits import to_timestamp
from voltcloud.telemetry import store
from voltcloud.telemetry.remediation import Raw

from .conftest import RunningPlatform
from .fleet_support import OTHER_VIN, VIN, OnboardedFleet, md, onboard

GW = "gbt-gw-1"
M = common_pb2
WATCH_BOUND_S = 2.0  # a committed reading reaches the fleet manager's stream within this


def frame(vehicle_id: str, at: dt.datetime, **values: int) -> ingest_pb2.TelemetryBatch:
    """One GB/T real-time frame's readings for one vehicle, in columnar form."""
    metrics = {
        "soc": M.METRIC_SOC_PERMILLE,
        "speed": M.METRIC_SPEED_M_PER_H,
        "odometer": M.METRIC_ODOMETER_M,
        "lat": M.METRIC_LATITUDE_MICRODEG,
        "lng": M.METRIC_LONGITUDE_MICRODEG,
        "voltage": M.METRIC_VOLTAGE_MV,
        "current": M.METRIC_CURRENT_MA,
    }
    return ingest_pb2.TelemetryBatch(
        base_time=to_timestamp(at),
        sources=[ingest_pb2.TelemetrySource(vehicle_id=vehicle_id)],
        col_source_index=[0] * len(values),
        col_metric=[metrics[name] for name in values],
        col_offset_ms=[0] * len(values),
        col_int_value=list(values.values()),
    )


class Gateway:
    """A GB/T gateway of the fleet on the real uplink: numbered messages, acks awaited."""

    def __init__(self, running: RunningPlatform, channel: grpc.aio.Channel, fleet_id: str) -> None:
        token = running.platform.tokens.mint(GW, Role.GATEWAY, Tenant("fleet", fleet_id))
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.uplink = RawUplink(channel, self.metadata)
        self.seq = 0
        self.rejections: list[ingest_pb2.UplinkRejection] = []

    async def start(self) -> None:
        hello = ingest_pb2.Hello(gateway_id=GW, kind=ingest_pb2.GATEWAY_KIND_GBT32960)
        self.uplink.send(ingest_pb2.GatewayToPlatform(hello=hello))
        await self.uplink.ack_at_least(0)

    async def send(self, *batches: ingest_pb2.TelemetryBatch) -> list[ingest_pb2.UplinkRejection]:
        for batch in batches:
            self.seq += 1
            self.uplink.send(ingest_pb2.GatewayToPlatform(seq=self.seq, telemetry=batch))
        return await self.acked()

    async def alarm(self, vehicle_id: str, code: str, level: int, *, cleared: bool = False) -> None:
        self.seq += 1
        report = ingest_pb2.AlarmReport(vehicle_id=vehicle_id, code=code, level=level, cleared=cleared)  # type: ignore[arg-type]
        event = ingest_pb2.StationEvent(time=to_timestamp(dt.datetime.now(dt.UTC)), alarm=report)
        self.uplink.send(ingest_pb2.GatewayToPlatform(seq=self.seq, event=event))
        await self.acked()

    async def acked(self) -> list[ingest_pb2.UplinkRejection]:
        rejections = []
        while True:
            message = await self.uplink.read()
            if message.WhichOneof("msg") == "rejection":
                rejections.append(message.rejection)
            if message.WhichOneof("msg") == "ack" and message.ack.acked_seq >= self.seq:
                self.rejections = rejections
                return rejections


@pytest.fixture
async def fleet(running: RunningPlatform, channel: grpc.aio.Channel) -> OnboardedFleet:
    return await onboard(running, channel, funded=0, allocated=0, tag="tel")


@pytest.fixture
async def gateway(running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet) -> AsyncIterator[Gateway]:
    gw = Gateway(running, channel, fleet.fleet.fleet_id)
    await gw.start()
    yield gw
    gw.uplink.close()


async def next_update(
    stream: AsyncIterator[fleet_pb2.WatchVehiclesResponse], kind: str
) -> fleet_pb2.WatchVehiclesResponse:
    while True:
        message = await asyncio.wait_for(anext(stream), WATCH_BOUND_S)
        if message.WhichOneof("update") == kind:
            return message


async def test_readings_reach_state_watch_and_track(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, gateway: Gateway
) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    vid = fleet.vehicle.vehicle_id
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    await gateway.send(frame(vid, t0, soc=800, speed=40_000, odometer=1_000_000, lat=31_230_000, lng=121_470_000))

    state = (
        await fleets.GetVehicleState(fleet_pb2.GetVehicleStateRequest(vehicle_id=vid), metadata=fleet.manager)
    ).state
    assert (state.soc_permille, state.speed_m_per_h, state.odometer_m) == (800, 40_000, 1_000_000)
    assert state.source == fleet_pb2.VEHICLE_STATE_SOURCE_TELEMETRY and state.has_position
    assert state.position.lat == pytest.approx(31.23) and state.driver_id == fleet.driver.driver_id
    assert state.report_time.ToDatetime(dt.UTC) == t0

    # The manager's live map: the snapshot, then each committed frame, pushed from the change feed.
    watch = fleets.WatchVehicles(
        fleet_pb2.WatchVehiclesRequest(fleet_id=fleet.fleet.fleet_id, alerts=True), metadata=fleet.manager
    )
    stream = watch.__aiter__()
    first = await next_update(stream, "state")
    assert first.state.vehicle_id == vid and first.state.soc_permille == 800
    started = time.monotonic()
    await gateway.send(
        frame(vid, t0 + dt.timedelta(seconds=10), soc=798, speed=42_000, lat=31_231_000, lng=121_471_000)
    )
    moved = await next_update(stream, "state")
    assert time.monotonic() - started < WATCH_BOUND_S
    assert moved.state.soc_permille == 798 and moved.state.position.lat == pytest.approx(31.231)
    assert moved.state.version > first.state.version

    # A speeding run raises one alert on the stream (not one per frame), which clears when the speed drops.
    for i in range(3):
        await gateway.send(frame(vid, t0 + dt.timedelta(seconds=20 + 10 * i), speed=150_000))
    alert = (await next_update(stream, "alert")).alert
    assert alert.kind == fleet_pb2.VEHICLE_ALERT_KIND_SPEEDING and alert.open
    assert alert.speed_m_per_h == 150_000 and alert.limit == 120_000 and alert.driver_id == fleet.driver.driver_id
    listed = await fleets.ListVehicleAlerts(
        fleet_pb2.ListVehicleAlertsRequest(fleet_id=fleet.fleet.fleet_id, open_only=True), metadata=fleet.manager
    )
    assert [a.kind for a in listed.alerts] == [fleet_pb2.VEHICLE_ALERT_KIND_SPEEDING]
    await gateway.send(frame(vid, t0 + dt.timedelta(seconds=60), speed=60_000))
    cleared = (await next_update(stream, "alert")).alert
    assert cleared.alert_id == alert.alert_id and not cleared.open and cleared.HasField("clear_time")

    # A SOC spike (797 -> 200 in 8 s, back to 796 8 s later): repaired, the raw value kept beside it.
    await gateway.send(frame(vid, t0 + dt.timedelta(seconds=62), soc=797))
    await gateway.send(frame(vid, t0 + dt.timedelta(seconds=70), soc=200))
    await gateway.send(frame(vid, t0 + dt.timedelta(seconds=78), soc=796))
    track = await fleets.GetVehicleTrack(
        fleet_pb2.GetVehicleTrackRequest(
            vehicle_id=vid,
            window=common_pb2.TimeWindow(start=to_timestamp(t0), end=to_timestamp(t0 + dt.timedelta(minutes=2))),
            metrics=[M.METRIC_SOC_PERMILLE],
        ),
        metadata=fleet.manager,
    )
    spike = [r for r in track.readings if r.raw_value == 200]
    assert len(spike) == 1 and spike[0].flags & fleet_pb2.READING_FLAG_SPIKE
    assert spike[0].has_value and spike[0].value == 797 and spike[0].repair == "hold_last"  # next frame not known yet
    assert "SOC jumped" in spike[0].reason
    state = (
        await fleets.GetVehicleState(fleet_pb2.GetVehicleStateRequest(vehicle_id=vid), metadata=fleet.manager)
    ).state
    assert state.soc_permille == 796
    watch.cancel()


async def test_reissued_data_does_not_move_state_back(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, gateway: Gateway
) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    vid = fleet.vehicle.vehicle_id
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    await gateway.send(frame(vid, now, soc=500, odometer=2_000_000))
    # Reissued (0x03) frames from an hour ago arrive after the live one: history keeps them, state stays.
    await gateway.send(frame(vid, now - dt.timedelta(hours=1), soc=900, odometer=1_950_000))
    state = (
        await fleets.GetVehicleState(fleet_pb2.GetVehicleStateRequest(vehicle_id=vid), metadata=fleet.manager)
    ).state
    assert (state.soc_permille, state.odometer_m) == (500, 2_000_000)
    assert state.report_time.ToDatetime(dt.UTC) == now
    track = await fleets.GetVehicleTrack(
        fleet_pb2.GetVehicleTrackRequest(
            vehicle_id=vid,
            window=common_pb2.TimeWindow(
                start=to_timestamp(now - dt.timedelta(hours=2)), end=to_timestamp(now + dt.timedelta(seconds=1))
            ),
        ),
        metadata=fleet.manager,
    )
    old = [r for r in track.readings if r.time.ToDatetime(dt.UTC) < now]
    assert {r.raw_value for r in old} == {900, 1_950_000}
    assert all(r.flags & fleet_pb2.READING_FLAG_OUT_OF_ORDER and r.value == r.raw_value for r in old)
    # The same reissued frame again (a gateway retry after reconnect with new seqs) is stored once.
    await gateway.send(frame(vid, now - dt.timedelta(hours=1), soc=900, odometer=1_950_000))
    async with running.platform.db.transaction() as session:
        count = (await session.exec(sa.text("SELECT count(*) FROM vehicle_frame"))).scalar_one()  # type: ignore[call-overload]
    assert count == 2  # one row per frame: the live one and the reissued one
    if running.platform.db.dialect == "postgresql":  # monthly partitions; the readings landed in theirs
        async with running.platform.db.transaction() as session:
            parts = (
                await session.exec(  # type: ignore[call-overload]
                    sa.text(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'vehicle_frame'"
                    )
                )
            ).scalars()
            names = set(parts)
            in_default = (
                await session.exec(sa.text("SELECT count(*) FROM vehicle_frame_default"))  # type: ignore[call-overload]
            ).scalar_one()
        assert "vehicle_frame_default" in names and f"vehicle_frame_{now:%Y%m}" in names and len(names) >= 26
        assert in_default == 0


async def test_level3_alarm_raises_platform_alarm(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, gateway: Gateway
) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    vid = fleet.vehicle.vehicle_id
    watch = fleets.WatchVehicles(fleet_pb2.WatchVehiclesRequest(vehicle_id=vid, alerts=True), metadata=fleet.driver_md)
    stream = watch.__aiter__()
    assert (await asyncio.wait_for(anext(stream), WATCH_BOUND_S)).snapshot_done  # no telemetry yet
    await gateway.alarm(vid, "BATTERY_THERMAL_RUNAWAY", 3)
    await gateway.alarm(vid, "BATTERY_THERMAL_RUNAWAY", 3)  # repeated in every frame: still one alarm
    assert gateway.rejections == []
    alert = (await next_update(stream, "alert")).alert
    assert alert.kind == fleet_pb2.VEHICLE_ALERT_KIND_VEHICLE_ALARM and alert.level == M.ALARM_LEVEL_CRITICAL
    async with running.platform.db.transaction() as session:
        alarms = list((await session.exec(sa.select(Alarm).where(Alarm.vehicle_id == vid))).scalars())  # type: ignore[call-overload,arg-type]
        work_orders = list((await session.exec(sa.select(WorkOrder))).scalars())  # type: ignore[call-overload]
    assert (
        len(alarms) == 1 and alarms[0].level == M.ALARM_LEVEL_CRITICAL and alarms[0].code == "BATTERY_THERMAL_RUNAWAY"
    )
    assert alarms[0].work_order_id in {w.id for w in work_orders}
    state = (
        await fleets.GetVehicleState(fleet_pb2.GetVehicleStateRequest(vehicle_id=vid), metadata=fleet.manager)
    ).state
    assert state.alarm_level == M.ALARM_LEVEL_CRITICAL and list(state.alarm_codes) == ["BATTERY_THERMAL_RUNAWAY"]
    # The alarm gave the state no reading time: a frame stamped a little before it is not taken as reissued.
    await gateway.send(frame(vid, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5), soc=610))
    state = (
        await fleets.GetVehicleState(fleet_pb2.GetVehicleStateRequest(vehicle_id=vid), metadata=fleet.manager)
    ).state
    assert state.soc_permille == 610 and state.alarm_level == M.ALARM_LEVEL_CRITICAL
    await gateway.alarm(vid, "BATTERY_THERMAL_RUNAWAY", 3, cleared=True)
    assert not (await next_update(stream, "alert")).alert.open
    async with running.platform.db.transaction() as session:
        alarm = (await session.exec(sa.select(Alarm).where(Alarm.vehicle_id == vid))).scalars().one()  # type: ignore[call-overload,arg-type]
    assert alarm.cleared_at is not None
    watch.cancel()


async def test_gateway_scope_and_resolve(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, gateway: Gateway
) -> None:
    other = await onboard(running, channel, funded=0, allocated=0, tag="oth", vin=OTHER_VIN)
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    resolved = await ingest.ResolveVehicles(
        ingest_pb2.ResolveVehiclesRequest(gateway_id=GW, vins=[VIN.lower(), OTHER_VIN, "LSVAU2180N2183294"]),
        metadata=gateway.metadata,
    )
    assert [(v.vin, v.vehicle_id) for v in resolved.vehicles] == [
        (VIN, fleet.vehicle.vehicle_id), (OTHER_VIN, ""), ("LSVAU2180N2183294", ""),
    ]  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.ResolveVehicles(
            ingest_pb2.ResolveVehiclesRequest(gateway_id=GW, vins=["SHORT"]), metadata=gateway.metadata
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Another fleet's vehicle: rejected on the uplink, nothing stored; the manager of the other fleet sees nothing.
    now = dt.datetime.now(dt.UTC)
    rejections = await gateway.send(frame(other.vehicle.vehicle_id, now, soc=300))
    assert [r.field for r in rejections] == ["telemetry.sources.vehicle_id"]
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await fleets.GetVehicleState(
            fleet_pb2.GetVehicleStateRequest(vehicle_id=other.vehicle.vehicle_id), metadata=other.manager
        )
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # no telemetry, no order: unknown
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await fleets.GetVehicleState(
            fleet_pb2.GetVehicleStateRequest(vehicle_id=fleet.vehicle.vehicle_id), metadata=other.manager
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    operator_gw = md(running, "op-gw", Role.GATEWAY, Tenant("operator", "op-0001"))
    resolved = await ingest.ResolveVehicles(
        ingest_pb2.ResolveVehiclesRequest(gateway_id="op-gw", vins=[VIN]), metadata=operator_gw
    )
    assert resolved.vehicles[0].vehicle_id == ""  # an operator's gateway sees no fleet's vehicles


async def test_daily_report_uses_telemetry(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, gateway: Gateway
) -> None:
    vid = fleet.vehicle.vehicle_id
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = max(now - dt.timedelta(minutes=10), now.replace(hour=0, minute=0, second=0))
    for i in range(7):  # a minute at 60 km/h (~1 km), then a stop
        speed = 60_000 if i < 6 else 0
        await gateway.send(frame(vid, start + dt.timedelta(seconds=10 * i), speed=speed, odometer=5_000_000 + 166 * i))
    report = await fleet_pb2_grpc.FleetServiceStub(channel).GetFleetDailyReport(
        fleet_pb2.GetFleetDailyReportRequest(
            fleet_id=fleet.fleet.fleet_id, date=start.date().isoformat(), time_zone="UTC"
        ),
        metadata=fleet.manager,
    )
    line = next(x for x in report.lines if x.vehicle_id == vid)
    assert line.has_telemetry and line.distance_m == 996 and line.driving.seconds == 60
    header, row = report.csv.splitlines()[:2]
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    assert (cells["distance_m"], cells["driving_s"]) == ("996", "60")


async def test_fleet_alert_limits(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, gateway: Gateway
) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    request = fleet_pb2.SetFleetAlertLimitsRequest(
        idempotency_key="lim-1",
        fleet_id=fleet.fleet.fleet_id,
        limits=fleet_pb2.FleetAlertLimits(speed_limit_m_per_h=80_000),
    )
    limits = (await fleets.SetFleetAlertLimits(request, metadata=fleet.manager)).limits
    assert limits.speed_limit_m_per_h == 80_000 and limits.low_soc_permille == 150  # the default kept
    assert limits.fatigue_driving.seconds == 4 * 3600
    vid = fleet.vehicle.vehicle_id
    await gateway.send(frame(vid, dt.datetime.now(dt.UTC), speed=90_000))
    alerts = await fleets.ListVehicleAlerts(
        fleet_pb2.ListVehicleAlertsRequest(vehicle_id=vid, open_only=True), metadata=fleet.driver_md
    )
    assert [(a.kind, a.limit) for a in alerts.alerts] == [(fleet_pb2.VEHICLE_ALERT_KIND_SPEEDING, 80_000)]
    bad = fleet_pb2.SetFleetAlertLimitsRequest(
        idempotency_key="lim-2", fleet_id=fleet.fleet.fleet_id, limits=fleet_pb2.FleetAlertLimits(low_soc_permille=2000)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fleets.SetFleetAlertLimits(bad, metadata=fleet.manager)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "low_soc_permille" in (
        refused.value.details() or ""
    )


async def test_watch_a_bounding_box(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, gateway: Gateway
) -> None:
    """The map of an area: only updates of vehicles inside the box come (a manager's: within their fleet)."""
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    vid = fleet.vehicle.vehicle_id
    box = common_pb2.BoundingBox(
        south_west=common_pb2.LatLng(lat=31.0, lng=121.0), north_east=common_pb2.LatLng(lat=31.5, lng=121.8)
    )
    watch = fleets.WatchVehicles(fleet_pb2.WatchVehiclesRequest(bounds=box), metadata=fleet.manager)
    stream = watch.__aiter__()
    assert (await asyncio.wait_for(anext(stream), WATCH_BOUND_S)).snapshot_done
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    await gateway.send(frame(vid, t0, soc=700, lat=39_900_000, lng=116_400_000))  # Beijing: outside
    await gateway.send(frame(vid, t0 + dt.timedelta(hours=5), soc=690, lat=31_230_000, lng=121_470_000))  # inside
    update = await next_update(stream, "state")
    assert update.state.soc_permille == 690 and update.state.position.lat == pytest.approx(31.23)
    watch.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        bad = common_pb2.BoundingBox(south_west=box.north_east, north_east=box.south_west)
        await anext(
            fleets.WatchVehicles(fleet_pb2.WatchVehiclesRequest(bounds=bad), metadata=fleet.manager).__aiter__()
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def apply_shared_batch(running: RunningPlatform, frames: dict[str, tuple[dt.datetime, int]]) -> None:
    """One telemetry batch naming vehicles of several fleets (a gateway's token names one fleet, so the uplink
    never mixes them; the store and the feed must not rely on that): each vehicle one frame of (time, SOC), in
    Shanghai."""
    telemetry = running.platform.vehicles
    readings = {
        vid: [
            Raw(at, M.METRIC_SOC_PERMILLE, soc),
            Raw(at, M.METRIC_LATITUDE_MICRODEG, 31_230_000),
            Raw(at, M.METRIC_LONGITUDE_MICRODEG, 121_470_000),
        ]
        for vid, (at, soc) in frames.items()
    }
    async with running.platform.db.transaction("test.shared_batch") as session:
        infos = await store.vehicle_infos(session, list(readings))
        applied = await store.apply_readings(
            session, telemetry.rules, telemetry.finder, infos, readings, dt.datetime.now(dt.UTC)
        )
    assert applied.states == len(frames)


async def state_changes(running: RunningPlatform) -> int:
    async with running.platform.db.transaction("test.state_changes") as session:
        query = sa.select(sa.func.count()).select_from(ChangeEvent).where(col(ChangeEvent.topic) == store.STATE_TOPIC)
        return int((await (await session.connection()).execute(query)).scalar_one())


async def test_a_batch_of_two_fleets_reaches_each_fleet_alone(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet
) -> None:
    """One feed change carries a batch's vehicles: each fleet's map gets its own vehicle's update and never the
    other fleet's; a watcher of both (the admin) gets one update per vehicle."""
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    theirs = await onboard(running, channel, funded=0, allocated=0, tag="tel-b", vin=OTHER_VIN)
    mine_id, theirs_id = fleet.vehicle.vehicle_id, theirs.vehicle.vehicle_id
    shanghai = common_pb2.BoundingBox(
        south_west=common_pb2.LatLng(lat=31.0, lng=121.0), north_east=common_pb2.LatLng(lat=31.5, lng=121.8)
    )
    calls, streams = [], {}
    for name, request, metadata in (
        ("a", fleet_pb2.WatchVehiclesRequest(fleet_id=fleet.fleet.fleet_id), fleet.manager),
        ("b", fleet_pb2.WatchVehiclesRequest(fleet_id=theirs.fleet.fleet_id), theirs.manager),
        ("all", fleet_pb2.WatchVehiclesRequest(bounds=shanghai), md(running, "admin", Role.PLATFORM_ADMIN)),
    ):
        calls.append(fleets.WatchVehicles(request, metadata=metadata))
        streams[name] = calls[-1].__aiter__()
        assert (await asyncio.wait_for(anext(streams[name]), WATCH_BOUND_S)).snapshot_done
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    before = await state_changes(running)
    await apply_shared_batch(running, {mine_id: (t0, 700), theirs_id: (t0, 300)})
    assert await state_changes(running) == before + 1  # one change for the batch, not one per vehicle

    both = {(await next_update(streams["all"], "state")).state.vehicle_id for _ in range(2)}
    assert both == {mine_id, theirs_id}
    mine = (await next_update(streams["a"], "state")).state
    assert (mine.vehicle_id, mine.soc_permille) == (mine_id, 700)
    other = (await next_update(streams["b"], "state")).state
    assert (other.vehicle_id, other.soc_permille) == (theirs_id, 300)
    # The next update on each fleet's stream is its own vehicle's next frame: the other fleet's state of the
    # shared batch was never queued behind it.
    await apply_shared_batch(running, {mine_id: (t0 + dt.timedelta(seconds=10), 690)})
    await apply_shared_batch(running, {theirs_id: (t0 + dt.timedelta(seconds=10), 290)})
    assert (await next_update(streams["a"], "state")).state.soc_permille == 690
    assert (await next_update(streams["b"], "state")).state.soc_permille == 290
    for call in calls:
        call.cancel()
