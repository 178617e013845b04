"""Modbus TCP poller of battery racks: reads each rack's register blocks on an interval (pymodbus
AsyncModbusTcpClient), decodes them with the rack's vendor register map (`swap.regmap`, sans-IO) and writes
pack reports, alarms, inspection defects and telemetry to the shared uplink through the swap-station codec's
mapping (`codec.event_from_body` / `codec.telemetry_from_body`), so Modbus and MQTT stations produce the
same uplink messages.

Every rack runs in its own task: a rack that does not answer (or answers with Modbus exceptions) backs off and
reconnects (exponential, with jitter) without holding up the others; after `unreachable_after` failed polls
in a row it raises a `rack_unreachable` alarm, cleared when the rack answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from voltcloud.api.v1 import ingest_pb2
from voltcloud_gateways.swap import codec
from voltcloud_gateways.swap.regmap import Messages, RackTracker, RegisterMap, decode_rack
from voltcloud_gateways.uplink import BufferFull

log = logging.getLogger(__name__)


class Sink(Protocol):
    def publish_event(self, event: ingest_pb2.StationEvent) -> int: ...

    def publish_telemetry(self, batch: ingest_pb2.TelemetryBatch) -> int: ...


@dataclass(frozen=True)
class RackConfig:
    name: str  # the rack's resource id, e.g. "rack-1"
    station_id: str
    host: str
    port: int
    map: RegisterMap
    unit_id: int = 1
    interval_s: float = 5.0
    timeout_s: float = 3.0


class RackError(Exception):
    """The rack answered with a Modbus exception or a short read."""


class Client(Protocol):
    """What the poller uses of pymodbus' AsyncModbusTcpClient (tests may pass their own)."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool: ...

    def close(self) -> None: ...

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Awaitable[Any]: ...

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Awaitable[Any]: ...


def default_client(rack: RackConfig) -> Client:
    # retries=0 and reconnect_delay=0: the poller owns retrying and reconnecting (pymodbus' own would hide a
    # dead rack behind its internal loop).
    client: Client = AsyncModbusTcpClient(
        rack.host, port=rack.port, timeout=rack.timeout_s, retries=0, reconnect_delay=0
    )
    return client


def to_uplink(
    station_id: str, messages: Messages, when: dt.datetime
) -> tuple[list[ingest_pb2.StationEvent], ingest_pb2.TelemetryBatch | None]:
    """The uplink messages of a poll's station messages, through the swap codec's mapping (SwapError if a
    body breaks the documented rules, which the tracker should never produce)."""
    events = [codec.event_from_body(station_id, kind, body, when) for kind, body in messages.events]
    batch = codec.telemetry_from_body(station_id, messages.telemetry, when) if messages.telemetry else None
    return events, batch


class RackPoller:
    def __init__(
        self,
        rack: RackConfig,
        sink: Sink,
        *,
        client_factory: Callable[[RackConfig], Client] = default_client,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        unreachable_after: int = 3,
        refresh_s: float = 300.0,
    ) -> None:
        self.rack = rack
        self.sink = sink
        self.client_factory = client_factory
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.unreachable_after = unreachable_after
        self.tracker = RackTracker(rack.map, rack.name, refresh_s=refresh_s)
        self.polls = 0
        self.failures = 0  # consecutive
        self.last_error = ""
        self.unreachable = False
        self._client: Client | None = None

    async def read(self) -> list[list[int]]:
        """One poll's register blocks, in the map's read plan order."""
        if self._client is None or not self._client.connected:
            if self._client is not None:
                self._client.close()
            self._client = self.client_factory(self.rack)
            if not await self._client.connect():
                raise ConnectionError(f"{self.rack.host}:{self.rack.port} refused or unreachable")
        read = (
            self._client.read_holding_registers
            if self.rack.map.function == "holding"
            else self._client.read_input_registers
        )
        blocks = []
        for address, count in self.rack.map.read_plan():
            response = await read(address, count=count, device_id=self.rack.unit_id)
            if response.isError():
                raise RackError(f"address {address}: Modbus exception {getattr(response, 'exception_code', '?')}")
            blocks.append(list(response.registers))
        return blocks

    def publish(self, messages: Messages, when: dt.datetime) -> None:
        events, batch = to_uplink(self.rack.station_id, messages, when)
        for event in events:
            self.sink.publish_event(event)
        if batch is not None:
            self.sink.publish_telemetry(batch)

    async def poll_once(self) -> None:
        blocks = await self.read()
        now = dt.datetime.now(dt.UTC)
        messages = self.tracker.observe(decode_rack(self.rack.map, blocks), asyncio.get_running_loop().time())
        if self.unreachable:
            messages.events.insert(0, ("alarm", self._unreachable_alarm(cleared=True)))
        try:
            self.publish(messages, now)
        except BufferFull:
            log.error("rack %s: uplink outbox full, poll dropped (resent in full next time)", self.rack.name)
            self.tracker.reset()
            return
        self.unreachable = False
        self.polls += 1

    def _unreachable_alarm(self, cleared: bool) -> dict[str, Any]:
        return {
            "resource_id": self.rack.name,
            "code": "rack_unreachable",
            "level": "major",
            "message": f"{self.rack.name} ({self.rack.host}:{self.rack.port}): {self.last_error}"[:1000],
            "cleared": cleared,
        }

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        log.warning("rack %s: poll failed (%d in a row): %s", self.rack.name, self.failures, self.last_error)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.failures >= self.unreachable_after and not self.unreachable:
            with contextlib.suppress(BufferFull):
                self.publish(
                    Messages(events=[("alarm", self._unreachable_alarm(cleared=False))]), dt.datetime.now(dt.UTC)
                )
                self.unreachable = True

    async def run(self) -> None:
        delay = self.backoff_initial_s
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except (ModbusException, RackError, OSError, TimeoutError) as error:
                self._failed(error)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            except Exception as error:  # a bug must not end this rack's polling for good
                log.exception("rack %s: poll crashed", self.rack.name)
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            self.failures = 0
            delay = self.backoff_initial_s
            await asyncio.sleep(max(0.0, self.rack.interval_s - (loop.time() - started)))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ModbusRackGateway:
    """Polls every configured rack, each in its own task, into one uplink."""

    def __init__(self, sink: Sink, racks: Iterable[RackConfig], **poller_options: Any) -> None:
        self.pollers = {rack.name: RackPoller(rack, sink, **poller_options) for rack in racks}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(p.run(), name=f"rack-{name}") for name, p in self.pollers.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for poller in self.pollers.values():
            poller.close()
