"""Helpers shared by the station, uplink, OCPP and swap tests (the seeded demo world's ids and a raw uplink)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from voltcloud.api.v1 import ingest_pb2, ingest_pb2_grpc

# In the demo world (seed 7): op-0001 runs swap station st-000001 and charging station st-000013, whose
# charger 1 has connector cn-0000001 (OCPP connectorId 1). op-0002 runs st-000002.
OPERATOR = "op-0001"
OTHER_OPERATOR = "op-0002"
SWAP_STATION = "st-000001"
CHARGING_STATION = "st-000013"
CONNECTOR = "cn-0000001"
OTHER_STATION = "st-000002"


def stamp(value: dt.datetime | None = None) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value or dt.datetime.now(dt.UTC))
    return result


def event(seq: int, station_id: str = CHARGING_STATION, **kind: Any) -> ingest_pb2.GatewayToPlatform:
    return ingest_pb2.GatewayToPlatform(
        seq=seq, event=ingest_pb2.StationEvent(station_id=station_id, time=stamp(), **kind)
    )


def hello(gateway_id: str, stations: list[str], last_acked: int = 0) -> ingest_pb2.GatewayToPlatform:
    return ingest_pb2.GatewayToPlatform(
        hello=ingest_pb2.Hello(
            gateway_id=gateway_id, kind=ingest_pb2.GATEWAY_KIND_OCPP, last_acked_seq=last_acked, station_ids=stations
        )
    )


class RawUplink:
    """A hand-driven uplink stream: send messages, read what the platform answers."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self._queue: asyncio.Queue[ingest_pb2.GatewayToPlatform | None] = asyncio.Queue()
        self.call = ingest_pb2_grpc.IngestServiceStub(channel).Uplink(self._requests(), metadata=metadata)

    async def _requests(self) -> AsyncIterator[ingest_pb2.GatewayToPlatform]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    def send(self, *messages: ingest_pb2.GatewayToPlatform) -> None:
        for m in messages:
            self._queue.put_nowait(m)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def finish(self, wait_s: float = 5.0) -> None:
        """Half-closes and reads until the platform ends the stream (its progress is then persisted)."""
        self.close()
        while await asyncio.wait_for(self.call.read(), wait_s) is not grpc.aio.EOF:
            pass

    async def read(self, wait_s: float = 5.0) -> ingest_pb2.PlatformToGateway:
        return await asyncio.wait_for(self.call.read(), wait_s)  # type: ignore[no-any-return]

    async def ack_at_least(self, seq: int, wait_s: float = 5.0) -> int:
        while True:
            message = await self.read(wait_s)
            if message.WhichOneof("msg") == "ack" and message.ack.acked_seq >= seq:
                return message.ack.acked_seq
