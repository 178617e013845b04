"""Issue 13's Done-when, end to end over real TCP and real gRPC (SQLite and PostgreSQL): a fleet onboarded
through the API with a vehicle registered by VIN; the GB/T 32960 gateway (its real asyncio server, the real
uplink, VINs resolved by the platform's ResolveVehicles) connected to a real platform; a terminal speaking
both editions through the codec's encoders over a TCP socket. The fleet manager's WatchVehicles shows it
move, a speeding run raises an alert, a level-3 alarm frame raises a platform alarm (and its work order), a
SOC spike is repaired beside its raw value, reissued data lands in history without moving the state back, an
unknown VIN gets the error flag; VIN lookups are cached and batched; a VIN accepted through
`accept_unknown_vins` is refused cleanly by the platform."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from tests.integration.conftest import RunningPlatform
from tests.integration.fleet_support import OTHER_VIN, VIN, OnboardedFleet, onboard
from voltcloud.api.v1 import (
    common_pb2,
    fleet_pb2,
    fleet_pb2_grpc,
    ingest_pb2,
)
from voltcloud.maintenance.models import Alarm
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.limits import to_timestamp
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.codec import (
    Command,
    Edition,
    Flag,
    Frame,
    FrameReader,
    build_vehicle_login,
    encode_frame,
)
from voltcloud_gateways.gbt32960.config import GatewayConfig
from voltcloud_gateways.gbt32960.directory import PlatformDirectory
from voltcloud_gateways.gbt32960.fields import GbTime
from voltcloud_gateways.gbt32960.server import Gbt32960Gateway
from voltcloud_gateways.uplink import UplinkClient

GW = "gw-gbt-e2e"
UNKNOWN_VIN = "LSVAU2180N2183294"  # well formed, registered nowhere
M = common_pb2
BOUND_S = 5.0  # a frame reaches the manager's stream within this (the gateway batches for 20 ms)


@pytest.fixture
async def fleet(running: RunningPlatform, channel: grpc.aio.Channel) -> OnboardedFleet:
    return await onboard(running, channel, funded=0, allocated=0, tag="e2e")


class GatewayRig:
    """The gateway as `python -m voltcloud_gateways.gbt32960` composes it, in process, on an ephemeral port."""

    def __init__(self, running: RunningPlatform, fleet_id: str, state: Path, **config: object) -> None:
        token = running.platform.tokens.mint(GW, Role.GATEWAY, Tenant("fleet", fleet_id))
        raw = {"gateway_id": GW, "platform": running.target, "token": token, "listen": "127.0.0.1:0", **config}
        self.config = GatewayConfig.from_dict(raw)
        self.uplink = UplinkClient(
            running.target,
            gateway_id=GW,
            kind=ingest_pb2.GATEWAY_KIND_GBT32960,
            token=token,
            station_ids=[],
            outbox_path=state / "outbox.db",
        )
        self.directory = PlatformDirectory(
            running.target, lambda: (("authorization", f"Bearer {token}"),), GW, overrides=self.config.vehicles
        )
        self.gateway = Gbt32960Gateway(self.uplink, self.directory, self.config)

    async def __aenter__(self) -> GatewayRig:
        self.uplink.start()
        await self.gateway.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.gateway.stop()
        await self.uplink.stop()
        await self.directory.close()

    async def drained(self) -> None:
        """Everything the gateway accepted has been applied by the platform."""
        await self.uplink.wait_acked(self.uplink.outbox.last_seq, 20)


class Terminal:
    """A vehicle terminal: the codec's encoders over a real TCP socket, one answer awaited per frame."""

    def __init__(self, edition: Edition, vin: str) -> None:
        self.edition, self.vin = edition, vin
        self.framer = FrameReader()
        self.serial = 0

    async def connect(self, port: int) -> Terminal:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        return self

    async def send(self, raw: bytes) -> Frame:
        self.writer.write(raw)
        async with asyncio.timeout(10):
            while True:
                answers = [f for f in self.framer.feed(await self.reader.read(4096)) if isinstance(f, Frame)]
                if answers:
                    return answers[0]

    async def login(self, at: dt.datetime) -> Flag:
        self.serial += 1
        frame = build_vehicle_login(self.edition, self.vin, GbTime.from_utc(at), self.serial, "8986" * 5, ["P1"])
        return (await self.send(frame)).flag

    async def data(self, at: dt.datetime, *, reissue: bool = False, **values: int) -> Flag:
        command = Command.REISSUE if reissue else Command.REALTIME
        body = rt.encode_realtime(GbTime.from_utc(at), blocks(self.edition, **values), self.edition)
        answer = await self.send(encode_frame(self.edition, command, Flag.COMMAND, self.vin, body))
        assert answer.command == command
        return answer.flag

    def close(self) -> None:
        self.writer.close()


def blocks(
    edition: Edition, *, speed: int, soc: int, odometer: int = 1_000_000, lat: int = 31_230_000,
    lng: int = 121_470_000, alarm: int = 0,
) -> list[rt.Block]:  # fmt: skip
    """A real-time data unit: vehicle, position (north-east) and alarm blocks of the edition."""
    if edition is Edition.V2016:
        vehicle = rt.Vehicle(1, 3, 1, speed, odometer, 384_500, 12_300, soc, 1, 0x2E, 5_000, 12, 0)
        return [vehicle, rt.Position(0, lng, lat), rt.Alarms(alarm, 1 << 11 if alarm else 0, (), (), (), ())]
    vehicle = rt.Vehicle(1, 3, 1, speed, odometer, 384_500, 12_300, soc, 1, 0x2E, 5_000)
    return [vehicle, rt.Position(0, lng, lat, 1), rt.Alarms(alarm, 0, (), (), (), (), ())]


async def vehicle_alarms(running: RunningPlatform, vehicle_id: str | None) -> list[Alarm]:
    """The platform's GB/T alarms (of one vehicle, or all)."""
    query = sa.select(Alarm).where(Alarm.code == "GBT32960_ALARM_LEVEL")  # type: ignore[arg-type]
    if vehicle_id is not None:
        query = query.where(Alarm.vehicle_id == vehicle_id)  # type: ignore[arg-type]
    async with running.platform.db.transaction() as session:
        return list((await session.exec(query)).scalars())  # type: ignore[call-overload]


async def next_update(
    stream: AsyncIterator[fleet_pb2.WatchVehiclesResponse], kind: str
) -> fleet_pb2.WatchVehiclesResponse:
    while True:
        message = await asyncio.wait_for(anext(stream), BOUND_S)
        if message.WhichOneof("update") == kind:
            return message


async def test_terminal_to_fleet_manager(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, tmp_path: Path
) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    vid = fleet.vehicle.vehicle_id
    watch = fleets.WatchVehicles(
        fleet_pb2.WatchVehiclesRequest(fleet_id=fleet.fleet.fleet_id, alerts=True), metadata=fleet.manager
    )
    stream = watch.__aiter__()
    assert (await asyncio.wait_for(anext(stream), BOUND_S)).snapshot_done  # no telemetry yet
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    async with GatewayRig(running, fleet.fleet.fleet_id, tmp_path) as rig:
        terminal = await Terminal(Edition.V2016, VIN).connect(rig.gateway.port)
        assert await terminal.login(t0) == Flag.SUCCESS  # the VIN resolved by the platform
        assert rig.directory.asked == 1

        # The manager's live map follows the terminal.
        assert await terminal.data(t0, speed=40_000, soc=800) == Flag.SUCCESS
        first = (await next_update(stream, "state")).state
        assert (first.vehicle_id, first.soc_permille, first.speed_m_per_h) == (vid, 800, 40_000)
        assert first.position.lat == pytest.approx(31.23) and first.position.lng == pytest.approx(121.47)
        assert await terminal.data(t0 + dt.timedelta(seconds=10), speed=42_000, soc=800, lat=31_231_000) == Flag.SUCCESS
        moved = (await next_update(stream, "state")).state
        assert moved.position.lat == pytest.approx(31.231) and moved.version > first.version

        # A speeding run: one alert on the stream.
        for i in range(3):
            at = t0 + dt.timedelta(seconds=20 + 10 * i)
            assert await terminal.data(at, speed=150_000, soc=800, lat=31_232_000 + 1_000 * i) == Flag.SUCCESS
        alert = (await next_update(stream, "alert")).alert
        assert alert.kind == fleet_pb2.VEHICLE_ALERT_KIND_SPEEDING and alert.open
        assert alert.speed_m_per_h == 150_000 and alert.vehicle_id == vid

        # A level-3 alarm frame: a platform alarm (maintenance's ListAlarms) and an alert on the stream.
        assert await terminal.data(t0 + dt.timedelta(seconds=55), speed=0, soc=800, alarm=3) == Flag.SUCCESS
        alarm_alert = await next_update(stream, "alert")
        while alarm_alert.alert.kind != fleet_pb2.VEHICLE_ALERT_KIND_VEHICLE_ALARM:
            alarm_alert = await next_update(stream, "alert")  # the speeding alert's clearing may come first
        assert alarm_alert.alert.level == M.ALARM_LEVEL_CRITICAL
        await rig.drained()
        alarms = await vehicle_alarms(running, vid)  # ListAlarms is not served yet (maintenance issue)
        assert [(a.code, a.level) for a in alarms] == [("GBT32960_ALARM_LEVEL", M.ALARM_LEVEL_CRITICAL)]
        assert "level 3" in alarms[0].message and "insulation" in alarms[0].message
        assert alarms[0].work_order_id  # the maintenance room turns it into a work order

        # A SOC spike (80 % -> 20 % in 8 s and back): repaired, the raw value kept beside it.
        for offset, soc in ((62, 800), (70, 200), (78, 790)):
            assert await terminal.data(t0 + dt.timedelta(seconds=offset), speed=0, soc=soc) == Flag.SUCCESS
        await rig.drained()
        track = await fleets.GetVehicleTrack(
            fleet_pb2.GetVehicleTrackRequest(
                vehicle_id=vid,
                window=M.TimeWindow(start=to_timestamp(t0), end=to_timestamp(t0 + dt.timedelta(minutes=2))),
                metrics=[M.METRIC_SOC_PERMILLE],
            ),
            metadata=fleet.manager,
        )
        spike = [r for r in track.readings if r.raw_value == 200]
        assert len(spike) == 1 and spike[0].flags & fleet_pb2.READING_FLAG_SPIKE
        assert spike[0].has_value and spike[0].value == 800 and spike[0].repair and "SOC jumped" in spike[0].reason
        terminal.close()

        # The same vehicle's terminal upgraded to the 2025 edition: live data, then reissued (0x03) history.
        modern = await Terminal(Edition.V2025, VIN).connect(rig.gateway.port)
        t1 = t0 + dt.timedelta(minutes=2)
        assert await modern.login(t1) == Flag.SUCCESS
        assert await modern.data(t1, speed=30_000, soc=780, lat=31_240_000) == Flag.SUCCESS
        live = (await next_update(stream, "state")).state
        while live.report_time.ToDatetime(dt.UTC) < t1:  # the spike run's updates come first
            live = (await next_update(stream, "state")).state
        assert live.soc_permille == 780 and live.position.lat == pytest.approx(31.24)
        old = t0 - dt.timedelta(hours=1)
        assert await modern.data(old, reissue=True, speed=10_000, soc=950, odometer=900_000) == Flag.SUCCESS
        await rig.drained()
        state = (
            await fleets.GetVehicleState(fleet_pb2.GetVehicleStateRequest(vehicle_id=vid), metadata=fleet.manager)
        ).state
        assert state.soc_permille == 780 and state.report_time.ToDatetime(dt.UTC) == t1
        history = await fleets.GetVehicleTrack(
            fleet_pb2.GetVehicleTrackRequest(
                vehicle_id=vid,
                window=M.TimeWindow(start=to_timestamp(old), end=to_timestamp(old + dt.timedelta(seconds=1))),
                metrics=[M.METRIC_SOC_PERMILLE, M.METRIC_ODOMETER_M],
            ),
            metadata=fleet.manager,
        )
        assert sorted(r.raw_value for r in history.readings) == [950, 900_000]

        # An unknown VIN: the error flag for its login and its data, nothing forwarded.
        stranger = await Terminal(Edition.V2016, UNKNOWN_VIN).connect(rig.gateway.port)
        before = rig.uplink.outbox.last_seq
        assert await stranger.login(t1) == Flag.ERROR
        assert await stranger.data(t1, speed=1_000, soc=500) == Flag.ERROR
        assert rig.uplink.outbox.last_seq == before and rig.uplink.rejections == []
        modern.close()
        stranger.close()
    watch.cancel()


async def test_vin_lookups_are_cached_and_batched(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, tmp_path: Path
) -> None:
    other = await onboard(running, channel, funded=0, allocated=0, tag="oth", vin=OTHER_VIN)
    async with GatewayRig(running, fleet.fleet.fleet_id, tmp_path, vehicles={"LFV2A21K0A3000001": "vh-bench"}) as rig:
        directory = rig.directory
        vins = [VIN, OTHER_VIN, UNKNOWN_VIN] * 20
        answers = await asyncio.gather(*(directory.resolve(v) for v in vins))  # many terminals at once: one RPC
        assert directory.asked == 1
        # another fleet's vehicle is not this gateway's: unknown, like an unregistered VIN
        assert answers[:3] == [fleet.vehicle.vehicle_id, None, None] and other.vehicle.vehicle_id not in answers
        assert await directory.resolve(VIN.lower()) == fleet.vehicle.vehicle_id and directory.asked == 1  # cached
        assert await directory.resolve("LFV2A21K0A3000001") == "vh-bench" and directory.asked == 1  # override
        assert await directory.resolve("SHORT") is None and directory.asked == 1  # never asked: malformed
        directory.negative_ttl_s = 0.0  # the unknown VIN's answer expires: asked again, the known one is not
        directory.forget(UNKNOWN_VIN)
        assert await directory.resolve(UNKNOWN_VIN) is None and directory.asked == 2
        assert await directory.resolve(VIN) == fleet.vehicle.vehicle_id and directory.asked == 2
        # The platform unreachable: the last known answer is kept, a VIN never seen stays unknown (not cached).
        await directory.close()
        directory.target = "127.0.0.1:1"
        directory.forget()
        assert await directory.resolve(VIN) == fleet.vehicle.vehicle_id
        assert await directory.resolve(UNKNOWN_VIN) is None and directory.failures == 2


async def test_accepted_unknown_vin_is_refused_by_the_platform(
    running: RunningPlatform, channel: grpc.aio.Channel, fleet: OnboardedFleet, tmp_path: Path
) -> None:
    """`accept_unknown_vins`: the terminal is answered with success and its frames go up with an empty
    vehicle_id; the platform stores nothing of them, names the field in an UplinkRejection, and keeps going."""
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with GatewayRig(running, fleet.fleet.fleet_id, tmp_path, accept_unknown_vins=True) as rig:
        stranger = await Terminal(Edition.V2016, UNKNOWN_VIN).connect(rig.gateway.port)
        assert await stranger.login(t0) == Flag.SUCCESS
        assert await stranger.data(t0, speed=10_000, soc=500, alarm=3) == Flag.SUCCESS
        known = await Terminal(Edition.V2025, VIN).connect(rig.gateway.port)
        assert await known.login(t0) == Flag.SUCCESS
        assert await known.data(t0, speed=20_000, soc=600) == Flag.SUCCESS
        await rig.drained()
        fields = sorted(r.field for r in rig.uplink.rejections)
        assert fields == ["event.alarm.vehicle_id", "telemetry.sources.vehicle_id"]
        assert all(UNKNOWN_VIN in r.description for r in rig.uplink.rejections)
        stranger.close()
        known.close()
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    state = (
        await fleets.GetVehicleState(
            fleet_pb2.GetVehicleStateRequest(vehicle_id=fleet.vehicle.vehicle_id), metadata=fleet.manager
        )
    ).state
    assert state.soc_permille == 600  # the registered vehicle's readings were stored all the same
    assert await vehicle_alarms(running, None) == []
