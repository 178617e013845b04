"""The GB/T gateway's telemetry batcher: one columnar batch per window, and backpressure (a platform behind
by more than `max_unacked` batches gets the window stretched, up to `max_wait_s`)."""

from __future__ import annotations

import asyncio
import datetime as dt

from voltcloud.api.v1 import ingest_pb2
from voltcloud_gateways.gbt32960.server import TelemetryBatcher, VehicleRef

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
T0_MS = int(T0.timestamp()) * 1000
A, B = VehicleRef("LGHC4V1D3HE202652", "veh-a"), VehicleRef("1M8GDM9AXKP042788", "veh-b")


class Sink:
    def __init__(self) -> None:
        self.batches: list[ingest_pb2.TelemetryBatch] = []

    def publish_event(self, event: ingest_pb2.StationEvent) -> int:
        raise AssertionError("no events here")

    def publish_telemetry(self, batch: ingest_pb2.TelemetryBatch) -> int:
        self.batches.append(batch)
        return len(self.batches)


async def test_one_columnar_batch_per_window() -> None:
    sink = Sink()
    batcher = TelemetryBatcher(sink, 0.01, 1_000)
    first = batcher.add(A, T0_MS, [1, 2], [800, 40_000])
    second = batcher.add(B, T0_MS + 2_000, [1], [500])
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    (batch,) = sink.batches
    assert [(s.vehicle_id, s.resource_id) for s in batch.sources] == [("veh-a", A.vin), ("veh-b", B.vin)]
    assert list(batch.col_source_index) == [0, 0, 1] and list(batch.col_metric) == [1, 2, 1]
    assert list(batch.col_offset_ms) == [0, 0, 2_000] and list(batch.col_int_value) == [800, 40_000, 500]
    assert batch.base_time.ToDatetime(dt.UTC) == T0


async def test_backpressure_stretches_the_window() -> None:
    sink = Sink()
    behind = [10]
    batcher = TelemetryBatcher(sink, 0.01, 1_000, backlog=lambda: behind[0], max_unacked=2, max_wait_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = batcher.add(A, T0_MS, [1], [800])
    await asyncio.sleep(0.1)
    assert not sink.batches  # the platform is behind: still gathering
    batcher.add(B, T0_MS, [1], [500])
    await asyncio.wait_for(waiter, 1)
    assert 0.25 <= loop.time() - started < 0.6 and len(sink.batches) == 1  # flushed at max_wait_s, together
    assert len(sink.batches[0].sources) == 2
    behind[0] = 1  # caught up: the normal window again
    started = loop.time()
    await asyncio.wait_for(batcher.add(A, T0_MS + 1_000, [1], [790]), 1)
    assert loop.time() - started < 0.2 and len(sink.batches) == 2
