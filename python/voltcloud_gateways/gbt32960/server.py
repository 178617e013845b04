"""The GB/T 32960 TCP gateway: vehicle terminals (or relay platforms) in, the shared uplink out.

Per connection: a `FrameReader` (bounded buffer), a read timeout for silent clients, a frame timeout for
slow ones, and a budget of framing errors before the connection is closed. Every frame with a command flag
(0xFE) is answered with the command echoed and a response flag. Readings and alarms are written to the
uplink outbox *before* the terminal gets its success answer, so an acknowledged frame is never lost; a
full outbox answers with the error flag and the terminal reissues (0x03) later.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import timestamp_pb2

from voltcloud import _core
from voltcloud.api.v1 import ingest_pb2
from voltcloud_gateways.gbt32960 import telemetry
from voltcloud_gateways.gbt32960.codec import (
    Command,
    Edition,
    Encrypted,
    Flag,
    Frame,
    FrameError,
    FrameReader,
    Logout,
    Message,
    Opaque,
    PlatformLogin,
    Reason,
    VehicleLogin,
    decode_message,
    encode_response,
)
from voltcloud_gateways.gbt32960.config import GatewayConfig
from voltcloud_gateways.uplink import BufferFull, UplinkClient

log = logging.getLogger(__name__)
READ_CHUNK = 64 * 1024
WRITE_HIGH_WATER = 64 * 1024  # asyncio's default high-water mark for a transport's write buffer
REALTIME_COMMANDS = (Command.REALTIME, Command.REISSUE)


class VehicleDirectory(Protocol):
    """VIN -> platform vehicle id (None: not registered). Filled with the platform RPC at composition."""

    async def resolve(self, vin: str) -> str | None: ...


class DictDirectory:
    def __init__(self, vehicles: dict[str, str]) -> None:
        self.vehicles = dict(vehicles)

    async def resolve(self, vin: str) -> str | None:
        return self.vehicles.get(vin)


class UplinkSink(Protocol):
    """What the gateway needs of `voltcloud_gateways.uplink.UplinkClient` (sequenced, durable outbox)."""

    def publish_event(self, event: ingest_pb2.StationEvent) -> int: ...

    def publish_telemetry(self, batch: ingest_pb2.TelemetryBatch) -> int: ...


def _stamp(unix_ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(unix_ms)
    return stamp


@dataclass(frozen=True, slots=True)
class VehicleRef:
    vin: str
    vehicle_id: str  # "" for an unknown VIN accepted by `accept_unknown_vins`


class TelemetryBatcher:
    """Gathers readings of many frames (all connections) into one columnar TelemetryBatch per window: the
    uplink's cost is per message. `add` resolves once the batch holding the readings is in the outbox.

    Backpressure: while the platform has more than `max_unacked` batches not yet acknowledged (`backlog`), a
    window is stretched (up to `max_wait_s`, or until `max_readings`): the platform's cost is mostly per
    batch (one transaction, its reads and writes), so a platform that falls behind gets fewer, larger batches
    and catches up, instead of a queue of small ones growing without end."""

    def __init__(
        self,
        uplink: UplinkSink,
        interval_s: float,
        max_readings: int,
        backlog: Callable[[], int] | None = None,
        max_unacked: int = 2,
        max_wait_s: float = 1.0,
    ) -> None:
        self.uplink = uplink
        self.interval_s = interval_s
        self.max_readings = max_readings
        self.backlog = backlog
        self.max_unacked = max_unacked
        self.max_wait_s = max_wait_s
        self._frames: list[tuple[VehicleRef, int, list[int], list[int]]] = []  # vehicle, unix ms, metrics, values
        self._readings = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._opened = 0.0  # loop time the current window opened

    def add(self, vehicle: VehicleRef, at_ms: int, metrics: list[int], values: list[int]) -> asyncio.Future[None]:
        """Readings of one frame (`metrics[i]` = `values[i]`, at Unix ms `at_ms`), as the Rust decoder gives them."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if metrics:
            self._frames.append((vehicle, at_ms, metrics, values))
            self._readings += len(metrics)
        self._waiters.append(waiter)
        if self._readings >= self.max_readings:
            self.flush()
        elif self._timer is None:
            self._opened = loop.time()
            self._timer = loop.call_later(self.interval_s, self._window_end)
        return waiter

    def _window_end(self) -> None:
        loop = asyncio.get_running_loop()
        behind = self.backlog is not None and self.backlog() > self.max_unacked
        if behind and loop.time() - self._opened < self.max_wait_s:
            self._timer = loop.call_later(self.interval_s, self._window_end)
            return
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        frames, waiters = self._frames, self._waiters
        self._frames, self._waiters, self._readings = [], [], 0
        if not waiters:
            return
        error: Exception | None = None
        if frames:
            try:
                self.uplink.publish_telemetry(self._batch(frames))
            except BufferFull as full:
                error = full
            except Exception as failure:  # e.g. the outbox file: every frame of the window gets the error flag
                log.exception("gbt32960: telemetry batch not written")
                error = BufferFull(repr(failure))
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error) if error else waiter.set_result(None)

    @staticmethod
    def _batch(frames: list[tuple[VehicleRef, int, list[int], list[int]]]) -> ingest_pb2.TelemetryBatch:
        """Columns built as Python lists, a frame at a time, and handed to protobuf once each (an append per
        value into the repeated fields was a tenth of the gateway's CPU); a frame's readings share one time."""
        base = min(at_ms for _, at_ms, _, _ in frames)
        batch = ingest_pb2.TelemetryBatch(base_time=_stamp(base))
        index: dict[VehicleRef, int] = {}
        sources: list[int] = []
        metrics: list[int] = []
        times: list[int] = []
        values: list[int] = []
        for vehicle, at_ms, frame_metrics, frame_values in frames:
            source = index.get(vehicle)
            if source is None:
                source = index[vehicle] = len(index)
                batch.sources.add(vehicle_id=vehicle.vehicle_id, resource_id=vehicle.vin)
            count = len(frame_metrics)
            sources += [source] * count
            times += [at_ms - base] * count
            metrics += frame_metrics
            values += frame_values
        batch.col_source_index.extend(sources)
        batch.col_metric.extend(metrics)  # type: ignore[arg-type]
        batch.col_offset_ms.extend(times)
        batch.col_int_value.extend(values)
        return batch


class Gbt32960Gateway:
    def __init__(
        self,
        uplink: UplinkSink,
        directory: VehicleDirectory,
        config: GatewayConfig,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self.uplink = uplink
        self.directory = directory
        self.config = config
        self.clock = clock
        if backlog is None and isinstance(uplink, UplinkClient):
            backlog = uplink.unacked
        self.batcher = TelemetryBatcher(
            uplink,
            config.flush_interval_s,
            config.max_batch_readings,
            backlog,
            config.max_unacked_batches,
            config.max_flush_wait_s,
        )
        self.decoder = _core.Gbt32960Telemetry(telemetry.METRICS)
        self.stats: Counter[str] = Counter()
        self.alarm_levels: dict[str, int] = {}  # VIN -> last GB/T max alarm level seen in real-time data
        self.sessions: set[Session] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=READ_CHUNK, backlog=4096
        )
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self.batcher.flush()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.sessions) >= self.config.max_connections:
            self.stats["refused_connections"] += 1
            writer.close()
            return
        session = Session(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            self.stats["connection_errors"] += 1  # peer gone, or not reading its answers
        except Exception:
            self.stats["session_failures"] += 1
            log.exception("gbt32960: connection handler failed")
        finally:
            self.sessions.discard(session)
            session.close()


class Session:
    """One TCP connection. Several VINs may share it (a relay platform after a 0x05 platform login)."""

    def __init__(self, gateway: Gbt32960Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.gw = gateway
        self.config = gateway.config
        self.reader = reader
        self.writer = writer
        self.framer = FrameReader(self.config.max_data_len)
        self.vehicles: dict[str, VehicleRef] = {}  # logged-in (or resolved while streaming) VINs
        self.unknown: set[str] = set()  # VINs the directory did not know, while they stream without login
        self.platform_user: str | None = None
        self.errors = 0
        self.frames_seen = 0  # valid frames seen on this connection
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        partial_since: float | None = None
        while not self.closed:
            wait = self.config.read_timeout_s
            if partial_since is not None:
                wait = min(wait, partial_since + self.config.frame_timeout_s - loop.time())
            try:
                # asyncio.timeout, not wait_for: wait_for wraps every read in a new task (a tenth of a frame's CPU)
                async with asyncio.timeout(max(wait, 0.0)):
                    chunk = await self.reader.read(READ_CHUNK)
            except TimeoutError:
                self.gw.stats["timeouts"] += 1
                return
            if not chunk:
                return
            items = self.framer.feed(chunk)
            for item in items:
                if not await self.on_item(item):
                    return
            if self.framer.dropped > self.config.max_garbage_bytes:
                self.gw.stats["garbage_closed"] += 1
                return
            # the frame clock runs from the start of the frame being assembled: a busy stream whose reads end
            # mid-frame completes frames all the time and is not slow
            if not self.framer.buffered:
                partial_since = None
            elif partial_since is None or any(isinstance(i, Frame) for i in items):
                partial_since = loop.time()

    async def on_item(self, item: Frame | FrameError) -> bool:
        """Handles one frame or framing error; False closes the connection."""
        if isinstance(item, FrameError):
            self.gw.stats[f"frame_error_{item.reason}"] += 1
            self.errors += 1
            log.info("gbt32960 %s: %s", item.reason, item.message)
            if item.reason == Reason.GARBAGE and not self.frames_seen:
                return False  # junk before any frame: not a GB/T 32960 terminal
            return self.errors < self.config.max_frame_errors
        self.gw.stats["frames"] += 1
        self.frames_seen += 1
        if item.flag != Flag.COMMAND:
            return True  # a terminal's answer to a command of ours: nothing to do
        flag = await self.on_frame(item)
        self.writer.write(encode_response(item, flag, self.gw.clock()))
        # drain() only waits while the transport is over its high-water mark; skipping the (task-creating)
        # wait_for below it saves a tenth of the per-frame cost
        if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await asyncio.wait_for(self.writer.drain(), self.config.write_timeout_s)
        return True

    def _error_flag(self, frame: Frame, reason: str) -> Flag:
        """`reason`: a `Reason` value."""
        self.gw.stats[f"refused_{reason}"] += 1
        if frame.edition == Edition.V2025:
            return Flag.DECRYPTION_ERROR if reason == Reason.ENCRYPTED else Flag.STRUCTURE_ERROR
        return Flag.ERROR

    async def on_frame(self, frame: Frame) -> Flag:
        if frame.command in REALTIME_COMMANDS and not frame.encrypted:
            return await self.realtime(frame)
        message = decode_message(frame)
        if isinstance(message, FrameError):
            log.info("gbt32960 %s cmd %02X: %s", frame.vin, frame.command, message.message)
            return self._error_flag(frame, message.reason)
        if isinstance(message, Encrypted) and frame.data:
            return self._error_flag(frame, Reason.ENCRYPTED)  # no keys are configured: cannot read it
        return await self.dispatch(frame, message)

    async def dispatch(self, frame: Frame, message: Message) -> Flag:
        if isinstance(message, PlatformLogin):
            return self.platform_login(message)
        if isinstance(message, Logout) and message.platform:
            self.platform_user = None
            return Flag.SUCCESS
        if isinstance(message, VehicleLogin):
            return await self.vehicle_login(frame.vin)
        if isinstance(message, Logout):
            self.vehicles.pop(frame.vin, None)
            return Flag.SUCCESS
        if frame.command in (Command.HEARTBEAT, Command.TIME_SYNC):
            return Flag.SUCCESS
        assert isinstance(message, (Opaque, Encrypted))
        return self._error_flag(frame, Reason.UNSUPPORTED)  # parameter/control/activation: not ours to take

    def platform_login(self, message: PlatformLogin) -> Flag:
        expected = self.config.platform_logins.get(message.username)
        if expected is None or expected != message.password:
            self.gw.stats["platform_login_refused"] += 1
            return Flag.ERROR
        self.platform_user = message.username
        return Flag.SUCCESS

    async def vehicle_login(self, vin: str) -> Flag:
        self.unknown.discard(vin)
        vehicle = await self._vehicle(vin)
        if vehicle is None:
            self.gw.stats["unknown_vin"] += 1
            return Flag.ERROR
        self.vehicles[vin] = vehicle
        return Flag.SUCCESS

    async def _vehicle(self, vin: str) -> VehicleRef | None:
        known = self.vehicles.get(vin)
        if known is not None or not vin:
            return known
        vehicle_id = await self.gw.directory.resolve(vin)
        if vehicle_id is None and not self.config.accept_unknown_vins:
            return None
        return VehicleRef(vin, vehicle_id or "")

    async def _streaming_vehicle(self, vin: str) -> VehicleRef | None:
        """Real-time data may come without a login on this connection (a relay, a reconnect that skipped it):
        resolve once, then remember; an unknown VIN is asked again only after a new login attempt."""
        known = self.vehicles.get(vin)
        if known is not None or vin in self.unknown:
            return known
        vehicle = await self._vehicle(vin)
        if vehicle is None:
            self.unknown.add(vin)
        else:
            self.vehicles[vin] = vehicle
        return vehicle

    async def realtime(self, frame: Frame) -> Flag:
        error, at_ms, metrics, values, alarm = self.gw.decoder.decode(frame)
        if error is not None:
            log.info("gbt32960 %s: real-time data refused: %s", frame.vin, error.message)
            return self._error_flag(frame, error.reason)
        vehicle = await self._streaming_vehicle(frame.vin)
        if vehicle is None:
            self.gw.stats["unknown_vin"] += 1
            return Flag.ERROR
        if at_ms is None:
            return self._error_flag(frame, Reason.BAD_TIME)
        try:
            if frame.command == Command.REALTIME and alarm is not None:
                self._alarm(vehicle, at_ms, alarm)  # reissued data is history: it does not move alarm state
            await self.gw.batcher.add(vehicle, at_ms, metrics, values)
        except BufferFull:
            self.gw.stats["outbox_full"] += 1
            return Flag.ERROR
        self.gw.stats["realtime" if frame.command == Command.REALTIME else "reissue"] += 1
        return Flag.SUCCESS

    def _alarm(self, vehicle: VehicleRef, at_ms: int, alarm: telemetry.AlarmSummary) -> None:
        previous = self.gw.alarm_levels.get(vehicle.vin, 0)
        change = telemetry.alarm_change(alarm, previous)
        if change is None:
            return
        level = telemetry.ALARM_LEVELS.get(change.level or change.previous, 0)
        report = ingest_pb2.AlarmReport(
            vehicle_id=vehicle.vehicle_id,
            resource_id=vehicle.vin,
            code="GBT32960_ALARM_LEVEL",
            level=level,  # type: ignore[arg-type]
            message=change.message,
            cleared=change.cleared,
        )
        self.gw.uplink.publish_event(ingest_pb2.StationEvent(time=_stamp(at_ms), alarm=report))
        self.gw.alarm_levels[vehicle.vin] = change.level
        self.gw.stats["alarm_cleared" if change.cleared else "alarm_raised"] += 1


async def run_gateway(gateway: Gbt32960Gateway, uplink: UplinkClient) -> None:
    """Starts the uplink and the TCP server and serves until cancelled."""
    uplink.start()
    await gateway.start()
    log.info("gbt32960 gateway %s listening on %s:%d", gateway.config.gateway_id, gateway.config.host, gateway.port)
    try:
        await asyncio.Future()
    finally:
        await gateway.stop()
        with contextlib.suppress(Exception):
            await uplink.stop()
