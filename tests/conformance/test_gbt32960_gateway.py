"""The GB/T 32960 gateway over real TCP: terminals of both editions log in, stream real-time and reissued
data and get the right responses; readings and alarms reach the uplink (an in-process sink, and once the real
UplinkClient's outbox); unknown VINs, bad frames, garbage, silent and slow clients are handled."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.gbt32960_vectors import T, blocks_2016, blocks_2025, load_vectors
from voltcloud.api.v1 import common_pb2, ingest_pb2
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.codec import (
    Command,
    Edition,
    Encryption,
    Flag,
    Frame,
    FrameReader,
    build_empty,
    build_logout,
    build_platform_login,
    build_vehicle_login,
    encode_frame,
)
from voltcloud_gateways.gbt32960.config import ConfigError, GatewayConfig
from voltcloud_gateways.gbt32960.fields import GbTime
from voltcloud_gateways.gbt32960.server import DictDirectory, Gbt32960Gateway
from voltcloud_gateways.uplink import BufferFull, UplinkClient

VIN16 = "LGHC4V1D3HE202652"
VIN25 = "LNBSCU3H5PR000025"
UNKNOWN = "LSVUNKNOWN0000001"
NOW = dt.datetime(2026, 12, 3, 12, 15, 30, tzinfo=dt.UTC)  # 20:15:30 in Beijing
M = common_pb2


class QueueSink:
    """In-process stand-in for the uplink: sequenced GatewayToPlatform messages on an asyncio queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ingest_pb2.GatewayToPlatform] = asyncio.Queue()
        self.seq = 0
        self.full = False

    def _put(self, message: ingest_pb2.GatewayToPlatform) -> int:
        if self.full:
            raise BufferFull("test outbox full")
        self.seq += 1
        message.seq = self.seq
        self.queue.put_nowait(message)
        return self.seq

    def publish_event(self, event: ingest_pb2.StationEvent) -> int:
        return self._put(ingest_pb2.GatewayToPlatform(event=event))

    def publish_telemetry(self, batch: ingest_pb2.TelemetryBatch) -> int:
        return self._put(ingest_pb2.GatewayToPlatform(telemetry=batch))

    def drain(self) -> list[ingest_pb2.GatewayToPlatform]:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


def config(**overrides: Any) -> GatewayConfig:
    base = GatewayConfig.from_dict(
        {
            "gateway_id": "gw-gbt-test",
            "platform": "127.0.0.1:1",
            "token": "t",
            "listen": "127.0.0.1:0",
            "platform_logins": {"威海广泰": "密码123"},
        }
    )
    return replace(base, flush_interval_s=0.005, **overrides)


@pytest.fixture
async def sink() -> QueueSink:
    return QueueSink()


@pytest.fixture
async def gateways(sink: QueueSink) -> AsyncIterator[Callable[..., Any]]:
    started: list[Gbt32960Gateway] = []

    async def start(uplink: Any = None, **overrides: Any) -> Gbt32960Gateway:
        directory = DictDirectory({VIN16: "vh-2016", VIN25: "vh-2025"})
        gateway = Gbt32960Gateway(uplink or sink, directory, config(**overrides), clock=lambda: NOW)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


class Terminal:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = FrameReader()
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, gateway: Gbt32960Gateway) -> Terminal:
        return cls(*await asyncio.open_connection("127.0.0.1", gateway.port))

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def answer(self, raw: bytes, wait_s: float = 5.0) -> Frame:
        await self.send(raw)
        async with asyncio.timeout(wait_s):
            while not self.frames:
                chunk = await self.reader.read(4096)
                assert chunk, "connection closed"
                self.frames += [f for f in self.framer.feed(chunk) if isinstance(f, Frame)]
        return self.frames.pop(0)

    async def closed_within(self, wait_s: float) -> bool:
        async with asyncio.timeout(wait_s):
            while await self.reader.read(4096):
                pass
        return True

    def close(self) -> None:
        self.writer.close()


def realtime(edition: Edition, vin: str, blocks: list[rt.Block], time: GbTime = T, reissue: bool = False) -> bytes:
    command = Command.REISSUE if reissue else Command.REALTIME
    return encode_frame(edition, command, Flag.COMMAND, vin, rt.encode_realtime(time, blocks, edition))


def readings(batch: ingest_pb2.TelemetryBatch) -> dict[int, int]:
    return dict(zip(batch.col_metric, batch.col_int_value, strict=True))


def beijing_now() -> bytes:
    return GbTime.from_utc(NOW).encode()


@pytest.mark.parametrize("edition", list(Edition))
async def test_terminal_logs_in_streams_and_logs_out(edition: Edition, gateways: Any, sink: QueueSink) -> None:
    vin = VIN16 if edition is Edition.V2016 else VIN25
    blocks = blocks_2016() if edition is Edition.V2016 else blocks_2025()
    terminal = await Terminal.connect(await gateways())
    login = await terminal.answer(build_vehicle_login(edition, vin, T, 1, "8986" * 5, ["P1"]))
    assert (login.edition, login.command, login.flag, login.vin) == (edition, Command.VEHICLE_LOGIN, Flag.SUCCESS, vin)
    assert login.data == beijing_now() == bytes((26, 12, 3, 20, 15, 30))

    reply = await terminal.answer(realtime(edition, vin, blocks))
    assert (reply.command, reply.flag) == (Command.REALTIME, Flag.SUCCESS)
    messages = sink.drain()
    telemetry = [m.telemetry for m in messages if m.HasField("telemetry")]
    assert len(telemetry) == 1
    batch = telemetry[0]
    assert [(s.vehicle_id, s.resource_id) for s in batch.sources] == [(f"vh-{edition.value}", vin)]
    assert batch.base_time.ToDatetime(dt.UTC) == T.utc()
    values = readings(batch)
    assert values[M.METRIC_SPEED_M_PER_H] == 65_400 and values[M.METRIC_ODOMETER_M] == 12_345_600
    assert values[M.METRIC_SOC_PERMILLE] == 810 and values[M.METRIC_VOLTAGE_MV] == 384_500
    if edition is Edition.V2016:
        assert values[M.METRIC_CURRENT_MA] == 12_300  # GB/T -12.3 A (charging) = +12.3 A into the battery
        assert (values[M.METRIC_LATITUDE_MICRODEG], values[M.METRIC_LONGITUDE_MICRODEG]) == (-39_916_527, -116_397_128)
        assert values[M.METRIC_CELL_VOLTAGE_MAX_MV] == 4_123 and values[M.METRIC_TEMPERATURE_MAX_MILLI_C] == 35_000
        assert M.METRIC_INSULATION_KOHM in values
    else:
        assert values[M.METRIC_CURRENT_MA] == 2_500_000
        assert values[M.METRIC_CELL_VOLTAGE_MAX_MV] == 4_123 and values[M.METRIC_CELL_VOLTAGE_MIN_MV] == 3_998
        assert M.METRIC_INSULATION_KOHM not in values  # the marker is not a reading

    earlier = GbTime(26, 12, 3, 19, 0, 0)
    reply = await terminal.answer(realtime(edition, vin, blocks[:1], earlier, reissue=True))
    assert (reply.command, reply.flag) == (Command.REISSUE, Flag.SUCCESS)
    (message,) = sink.drain()
    assert message.telemetry.base_time.ToDatetime(dt.UTC) == earlier.utc()  # its own time, not arrival

    reply = await terminal.answer(build_logout(edition, vin, T, 2))
    assert (reply.command, reply.flag) == (Command.VEHICLE_LOGOUT, Flag.SUCCESS)
    terminal.close()


async def test_alarm_levels_become_alarm_reports(gateways: Any, sink: QueueSink) -> None:
    terminal = await Terminal.connect(await gateways())
    await terminal.answer(build_vehicle_login(Edition.V2016, VIN16, T, 1, "8986" * 5, ["P1"]))
    alarm3 = rt.Alarms(3, 1 << 16, (0xDEAD,), (), (), ())
    for _ in range(2):  # the second frame at the same level raises nothing new
        assert (await terminal.answer(realtime(Edition.V2016, VIN16, [alarm3]))).flag == Flag.SUCCESS
    clear = rt.Alarms(0, 0, (), (), (), ())
    assert (await terminal.answer(realtime(Edition.V2016, VIN16, [clear]))).flag == Flag.SUCCESS
    alarms = [m.event for m in sink.drain() if m.HasField("event")]
    assert [(a.alarm.level, a.alarm.cleared) for a in alarms] == [
        (M.ALARM_LEVEL_CRITICAL, False),
        (M.ALARM_LEVEL_CRITICAL, True),
    ]
    raised = alarms[0].alarm
    assert (raised.vehicle_id, raised.resource_id) == ("vh-2016", VIN16)
    assert "high-voltage interlock" in raised.message and alarms[0].time.ToDatetime(dt.UTC) == T.utc()


async def test_unknown_vin_is_refused_and_nothing_forwarded(gateways: Any, sink: QueueSink) -> None:
    terminal = await Terminal.connect(await gateways())
    login = await terminal.answer(build_vehicle_login(Edition.V2016, UNKNOWN, T, 1, "8986" * 5, ["P1"]))
    assert (login.flag, login.vin) == (Flag.ERROR, UNKNOWN)
    reply = await terminal.answer(realtime(Edition.V2016, UNKNOWN, blocks_2016()))
    assert reply.flag == Flag.ERROR
    assert sink.drain() == []


async def test_unknown_vin_accepted_when_configured(gateways: Any, sink: QueueSink) -> None:
    terminal = await Terminal.connect(await gateways(accept_unknown_vins=True))
    login = await terminal.answer(build_vehicle_login(Edition.V2025, UNKNOWN, T, 1, "8986" * 5, ["P1"]))
    assert login.flag == Flag.SUCCESS
    assert (await terminal.answer(realtime(Edition.V2025, UNKNOWN, blocks_2025()[:1]))).flag == Flag.SUCCESS
    (message,) = sink.drain()
    assert [(s.vehicle_id, s.resource_id) for s in message.telemetry.sources] == [("", UNKNOWN)]


async def test_heartbeat_time_sync_and_platform_login(gateways: Any) -> None:
    terminal = await Terminal.connect(await gateways())
    beat = await terminal.answer(build_empty(Edition.V2016, Command.HEARTBEAT, VIN16))
    assert (beat.command, beat.flag, beat.data) == (Command.HEARTBEAT, Flag.SUCCESS, b"")
    sync = await terminal.answer(build_empty(Edition.V2025, Command.TIME_SYNC, VIN25))
    assert (sync.command, sync.flag, sync.data) == (Command.TIME_SYNC, Flag.SUCCESS, beijing_now())
    good = await terminal.answer(build_platform_login(Edition.V2016, VIN16, T, 1, "威海广泰", "密码123"))
    assert (good.command, good.flag) == (Command.PLATFORM_LOGIN, Flag.SUCCESS)
    bad = await terminal.answer(build_platform_login(Edition.V2016, VIN16, T, 2, "威海广泰", "wrong"))
    assert bad.flag == Flag.ERROR
    relay = await terminal.answer(build_platform_login(Edition.V2016, "", T, 3, "威海广泰", "密码123"))
    assert (relay.vin, relay.flag) == ("", Flag.SUCCESS)  # a relay platform's own login carries no VIN
    nobody = await terminal.answer(build_vehicle_login(Edition.V2016, "", T, 1, "8986" * 5, ["P1"]))
    assert nobody.flag == Flag.ERROR
    logout = await terminal.answer(build_logout(Edition.V2016, VIN16, T, 3, platform=True))
    assert (logout.command, logout.flag) == (Command.PLATFORM_LOGOUT, Flag.SUCCESS)


async def test_bad_data_units_get_the_error_flag_of_their_edition(gateways: Any, sink: QueueSink) -> None:
    terminal = await Terminal.connect(await gateways())
    truncated16 = encode_frame(Edition.V2016, Command.REALTIME, Flag.COMMAND, VIN16, T.encode() + b"\x01\x02")
    assert (await terminal.answer(truncated16)).flag == Flag.ERROR
    truncated25 = encode_frame(Edition.V2025, Command.REALTIME, Flag.COMMAND, VIN25, T.encode() + b"\x05\x00")
    assert (await terminal.answer(truncated25)).flag == Flag.STRUCTURE_ERROR
    encrypted = encode_frame(Edition.V2025, Command.REALTIME, Flag.COMMAND, VIN25, b"\x99" * 32, Encryption.AES128)
    assert (await terminal.answer(encrypted)).flag == Flag.DECRYPTION_ERROR
    bad_time = realtime(Edition.V2016, VIN16, blocks_2016()[:1], GbTime(26, 13, 40, 0, 0, 0))
    assert (await terminal.answer(bad_time)).flag == Flag.ERROR
    vendor = load_vectors()[27].raw  # the field capture whose data unit stops at an unknown type 0x1E
    assert (await terminal.answer(vendor)).flag == Flag.ERROR
    assert sink.drain() == []
    # the connection survives refused data units
    assert (await terminal.answer(build_empty(Edition.V2016, Command.HEARTBEAT, VIN16))).flag == Flag.SUCCESS


async def test_full_outbox_answers_error(gateways: Any, sink: QueueSink) -> None:
    terminal = await Terminal.connect(await gateways())
    await terminal.answer(build_vehicle_login(Edition.V2016, VIN16, T, 1, "8986" * 5, ["P1"]))
    sink.full = True
    assert (await terminal.answer(realtime(Edition.V2016, VIN16, blocks_2016()[:1]))).flag == Flag.ERROR
    sink.full = False
    assert (await terminal.answer(realtime(Edition.V2016, VIN16, blocks_2016()[:1]))).flag == Flag.SUCCESS


async def test_garbage_closes_the_connection_and_the_gateway_serves_on(gateways: Any) -> None:
    gateway = await gateways()
    terminal = await Terminal.connect(gateway)
    await terminal.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # junk before any frame: not a terminal
    assert await terminal.closed_within(2.0)
    assert gateway.stats["frame_error_garbage"] == 1
    again = await Terminal.connect(gateway)
    assert (await again.answer(build_empty(Edition.V2016, Command.HEARTBEAT, VIN16))).flag == Flag.SUCCESS
    # after frames, junk is tolerated up to the per-connection budget
    await again.send(b"\x00" * 1000)
    assert (await again.answer(build_empty(Edition.V2016, Command.HEARTBEAT, VIN16))).flag == Flag.SUCCESS
    await again.send(b"\x00" * (64 * 1024))
    assert await again.closed_within(2.0)
    assert gateway.stats["garbage_closed"] == 1


async def test_bad_bcc_frames_close_after_the_error_budget(gateways: Any) -> None:
    gateway = await gateways(max_frame_errors=2)
    terminal = await Terminal.connect(gateway)
    frame = bytearray(build_empty(Edition.V2016, Command.HEARTBEAT, VIN16))
    frame[-1] ^= 0xFF
    await terminal.send(bytes(frame) * 2)
    assert await terminal.closed_within(2.0)
    assert gateway.stats["frame_error_bad_bcc"] == 2


async def test_silent_client_is_dropped(gateways: Any) -> None:
    gateway = await gateways(read_timeout_s=0.3)
    terminal = await Terminal.connect(gateway)
    started = asyncio.get_running_loop().time()
    assert await terminal.closed_within(3.0)
    assert asyncio.get_running_loop().time() - started >= 0.25 and gateway.stats["timeouts"] == 1


async def test_slow_client_is_dropped_mid_frame(gateways: Any) -> None:
    gateway = await gateways(read_timeout_s=5.0, frame_timeout_s=0.4)
    terminal = await Terminal.connect(gateway)
    frame = build_vehicle_login(Edition.V2016, VIN16, T, 1, "8986" * 5, ["P1"])

    async def dribble() -> None:
        for byte in frame:
            await terminal.send(bytes((byte,)))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(dribble())
    assert await terminal.closed_within(3.0)
    task.cancel()
    assert gateway.stats["timeouts"] == 1


async def test_readings_reach_the_real_uplink_outbox(gateways: Any, tmp_path: Path) -> None:
    uplink = UplinkClient(
        "127.0.0.1:1",
        gateway_id="gw-gbt-test",
        kind=ingest_pb2.GATEWAY_KIND_GBT32960,
        token="t",
        station_ids=[],
        outbox_path=tmp_path / "outbox.db",
    )
    try:
        terminal = await Terminal.connect(await gateways(uplink))
        await terminal.answer(build_vehicle_login(Edition.V2016, VIN16, T, 1, "8986" * 5, ["P1"]))
        assert (await terminal.answer(realtime(Edition.V2016, VIN16, blocks_2016()))).flag == Flag.SUCCESS
        rows = uplink.outbox.pending(0)
        messages = [ingest_pb2.GatewayToPlatform.FromString(payload) for _, payload in rows]
        assert [m.seq for m in messages] == [1, 2]  # the alarm event and the telemetry batch, sequenced
        kinds = {m.WhichOneof("msg") for m in messages}
        assert kinds == {"event", "telemetry"}
    finally:
        uplink.outbox.close()


class CountingDirectory(DictDirectory):
    def __init__(self, vehicles: dict[str, str]) -> None:
        super().__init__(vehicles)
        self.calls: list[str] = []

    async def resolve(self, vin: str) -> str | None:
        self.calls.append(vin)
        return await super().resolve(vin)


async def test_streaming_without_login_resolves_each_vin_once(sink: QueueSink) -> None:
    directory = CountingDirectory({VIN16: "vh-2016"})
    gateway = Gbt32960Gateway(sink, directory, config(), clock=lambda: NOW)
    await gateway.start()
    try:
        terminal = await Terminal.connect(gateway)
        for _ in range(3):
            assert (await terminal.answer(realtime(Edition.V2016, VIN16, blocks_2016()[:1]))).flag == Flag.SUCCESS
            assert (await terminal.answer(realtime(Edition.V2016, UNKNOWN, blocks_2016()[:1]))).flag == Flag.ERROR
        assert directory.calls == [VIN16, UNKNOWN]
        login = await terminal.answer(build_vehicle_login(Edition.V2016, UNKNOWN, T, 1, "8986" * 5, ["P1"]))
        assert login.flag == Flag.ERROR and directory.calls == [VIN16, UNKNOWN, UNKNOWN]  # a login asks again
        sources = {s.vehicle_id for m in sink.drain() for s in m.telemetry.sources}
        assert sources == {"vh-2016"}
    finally:
        await gateway.stop()


def test_config_defaults_and_refusals() -> None:
    minimal = GatewayConfig.from_dict({"gateway_id": "gw", "platform": "p:1", "token": "t"})
    assert (minimal.host, minimal.port, minimal.accept_unknown_vins, minimal.platform_logins) == (
        "0.0.0.0",
        32960,
        False,
        {},
    )
    assert str(minimal.state_dir) == "data/gw"
    for bad in (
        {"platform": "p:1", "token": "t"},
        {"gateway_id": "gw", "platform": "p:1", "token": "t", "listen": "nowhere"},
        {"gateway_id": "gw", "platform": "p:1", "token": "t", "platform_logins": {"u": 1}},
        {"gateway_id": "gw", "platform": "p:1", "token": "t", "max_data_len": 70_000},
    ):
        with pytest.raises(ConfigError):
            GatewayConfig.from_dict(bad)


async def test_a_busy_stream_split_mid_frame_is_not_a_slow_client(gateways: Any, sink: QueueSink) -> None:
    gateway = await gateways(read_timeout_s=5.0, frame_timeout_s=0.3)
    terminal = await Terminal.connect(gateway)
    beat = build_empty(Edition.V2016, Command.HEARTBEAT, VIN16)
    stream = beat * 12
    for i in range(0, len(stream), 17):  # 25-byte frames in 17-byte writes: every read ends mid-frame, ~0.9 s
        await terminal.send(stream[i : i + 17])
        await asyncio.sleep(0.05)
    async with asyncio.timeout(3):
        while len(terminal.frames) < 12:
            chunk = await terminal.reader.read(4096)
            assert chunk, "closed as a slow client"
            terminal.frames += [f for f in terminal.framer.feed(chunk) if isinstance(f, Frame)]
    assert gateway.stats["timeouts"] == 0
