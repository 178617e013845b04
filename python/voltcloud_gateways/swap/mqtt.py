"""Swap-station MQTT gateway: subscribes to the stations' topics on the broker, forwards to the uplink, and
publishes platform commands to the stations.

QoS 1 with manual acknowledgement: a station message is acked to the broker only after it is in the uplink
outbox, so a gateway crash before that makes the broker redeliver it (a persistent session, clean_session
False, also keeps messages queued while the gateway is away). Redeliveries are dropped by msg_id. paho's
network loop runs in its own thread; messages cross into asyncio with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from voltcloud.api.v1 import ingest_pb2, stations_pb2
from voltcloud_gateways.swap import codec
from voltcloud_gateways.uplink import BufferFull, UplinkClient

log = logging.getLogger(__name__)
SEEN_MAX = 50_000


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


class SwapMqttGateway:
    def __init__(
        self,
        uplink: UplinkClient,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        client_id: str = "voltcloud-swap-gateway",
        command_timeout_s: float = 30.0,
    ) -> None:
        self.uplink = uplink
        self.host, self.port = host, port
        self.command_timeout_s = command_timeout_s
        self.stations = frozenset(uplink.station_ids)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = asyncio.Event()
        self.errors: list[tuple[str, str, str]] = []  # (topic, field, description) of refused messages
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._results: dict[str, asyncio.Future[stations_pb2.StationCommandResult]] = {}
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        uplink.on_command = self.on_command

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._consume())
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        await asyncio.wait_for(self.connected.wait(), 10)

    async def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self._task is not None:
            self._task.cancel()

    # paho thread
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connect refused: %s", reason)
            return
        client.subscribe([(topic, 1) for topic in codec.SUBSCRIPTIONS])
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.set)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        incoming = Incoming(message.topic, bytes(message.payload), message.mid, message.qos)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, incoming)

    # asyncio side
    async def _consume(self) -> None:
        while True:
            incoming = await self._queue.get()
            try:
                self.handle(incoming.topic, incoming.payload)
            except BufferFull:
                log.error("uplink outbox full: %s not acknowledged, the broker will redeliver", incoming.topic)
                continue
            except Exception:
                log.exception("swap message %s failed", incoming.topic)
            if incoming.qos > 0:
                self.client.ack(incoming.mid, incoming.qos)

    def handle(self, topic: str, payload: bytes) -> None:
        """Decodes one station message and writes it to the uplink outbox (sans network; used by tests)."""
        try:
            decoded = codec.decode(topic, payload)
        except codec.SwapError as error:
            log.warning("refused %s: %s: %s", topic, error.field, error.description)
            self.errors.append((topic, error.field, error.description))
            return
        if decoded.station_id not in self.stations:
            self.errors.append((topic, "topic", f"station {decoded.station_id} is not served by this gateway"))
            return
        if decoded.command_result is not None:
            future = self._results.get(decoded.command_result[1].command_id)
            if future is not None and not future.done():
                future.set_result(decoded.command_result[1])
            return
        key = (decoded.station_id, decoded.msg_id)
        if key in self._seen:
            return
        if decoded.telemetry is not None:
            self.uplink.publish_telemetry(decoded.telemetry)
        for event in decoded.events:
            self.uplink.publish_event(event)
        self._seen[key] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    async def on_command(self, command: ingest_pb2.Command) -> stations_pb2.StationCommandResult:
        try:
            topic, body = codec.encode_command(command)
        except codec.SwapError as error:
            return stations_pb2.StationCommandResult(
                status=stations_pb2.COMMAND_STATUS_NOT_SUPPORTED, detail=error.description
            )
        future: asyncio.Future[stations_pb2.StationCommandResult] = asyncio.get_running_loop().create_future()
        self._results[command.command_id] = future
        try:
            self.client.publish(topic, body, qos=1)
            return await asyncio.wait_for(future, self.command_timeout_s)
        except TimeoutError:
            return stations_pb2.StationCommandResult(
                status=stations_pb2.COMMAND_STATUS_TIMEOUT, detail=f"no cmd_result within {self.command_timeout_s:g}s"
            )
        finally:
            self._results.pop(command.command_id, None)
