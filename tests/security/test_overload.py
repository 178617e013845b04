"""Issue 9, finding 9 over real gRPC: beyond a bounded queue the server answers RESOURCE_EXHAUSTED at once,
and work whose deadline has passed is not started (no quote row is written for it). Issue 11: the bounds are
per method, so a flood of one RPC does not starve the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc, stations_pb2, stations_pb2_grpc
from voltcloud.ordering.models import Quote
from voltcloud.ordering.service import OrderingServicer
from voltcloud.platform.auth import Role
from voltcloud.server import Platform

from .conftest import channel_to, serving

SLOW_S = 0.6


@pytest.fixture
async def tiny(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Platform]:
    """A platform serving 1 unary call at a time with 2 waiting, whose QuotePowerUp writes its quote at once
    and then holds its slot for SLOW_S (a stand-in for an expensive decision)."""
    original = OrderingServicer.QuotePowerUp

    async def slow_quote(self: Any, request: Any, context: Any) -> Any:
        reply = await original(self, request, context)
        await asyncio.sleep(SLOW_S)
        return reply

    monkeypatch.setattr(OrderingServicer, "QuotePowerUp", slow_quote)
    async with serving(tmp_path, database_url, rpc_max_running=1, rpc_max_queued=2) as platform:
        yield platform


async def quotes(platform: Platform) -> int:
    await platform.powerup.quote_path.store.flush()  # quotes answered but still in the batch writer count too
    async with platform.db.transaction() as session:
        return int((await session.exec(sa.select(sa.func.count()).select_from(Quote))).one()[0])  # type: ignore[call-overload]


def request() -> ordering_pb2.QuotePowerUpRequest:
    return ordering_pb2.QuotePowerUpRequest(
        vehicle_id="vh-000001", position=common_pb2.LatLng(lat=31.23, lng=121.47), target_soc_permille=800
    )


async def timed(call: Any) -> tuple[grpc.StatusCode, float]:
    started = time.monotonic()
    try:
        await call
        return grpc.StatusCode.OK, time.monotonic() - started
    except grpc.aio.AioRpcError as error:
        return error.code(), time.monotonic() - started


async def test_burst_beyond_the_queue_is_refused_at_once(tiny: Platform) -> None:
    metadata = (("authorization", f"Bearer {tiny.tokens.mint('admin', Role.PLATFORM_ADMIN, None)}"),)
    async with channel_to(tiny) as channel:
        stub = ordering_pb2_grpc.OrderingServiceStub(channel)
        await stub.QuotePowerUp(request(), metadata=metadata)  # warm: the channel is connected
        before = await quotes(tiny)
        results = await asyncio.gather(
            *(timed(stub.QuotePowerUp(request(), metadata=metadata, timeout=10)) for _ in range(8))
        )
        codes = sorted(code.name for code, _ in results)
        assert codes == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 5, results
        assert all(seconds < SLOW_S / 2 for code, seconds in results if code is grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert await quotes(tiny) == before + 3  # refused calls did no work
        # The server is healthy and serves again once the burst is over.
        assert (await timed(stub.QuotePowerUp(request(), metadata=metadata, timeout=10)))[0] is grpc.StatusCode.OK


async def test_a_call_whose_deadline_passes_in_the_queue_is_never_run(tiny: Platform) -> None:
    metadata = (("authorization", f"Bearer {tiny.tokens.mint('admin', Role.PLATFORM_ADMIN, None)}"),)
    async with channel_to(tiny) as channel:
        stub = ordering_pb2_grpc.OrderingServiceStub(channel)
        await stub.QuotePowerUp(request(), metadata=metadata)
        before = await quotes(tiny)
        holder = asyncio.ensure_future(timed(stub.QuotePowerUp(request(), metadata=metadata, timeout=10)))
        await asyncio.sleep(0.1)  # the holder runs; the next call queues behind it
        code, _ = await timed(stub.QuotePowerUp(request(), metadata=metadata, timeout=0.3))
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await holder)[0] is grpc.StatusCode.OK
        await asyncio.sleep(SLOW_S)  # had the queued call run late, its quote would be written by now
        assert await quotes(tiny) == before + 1


async def test_a_call_with_too_little_time_left_is_not_started(tmp_path: Path, database_url: str) -> None:
    """The same check as for a call dispatched after its deadline (an event loop that was busy), made
    deterministic with a high floor: a call with less time left than the floor does no work."""
    async with serving(tmp_path, database_url, rpc_deadline_floor_s=1.0) as platform:
        metadata = (("authorization", f"Bearer {platform.tokens.mint('admin', Role.PLATFORM_ADMIN, None)}"),)
        async with channel_to(platform) as channel:
            stub = ordering_pb2_grpc.OrderingServiceStub(channel)
            await stub.QuotePowerUp(request(), metadata=metadata, timeout=10)
            before = await quotes(platform)
            code, seconds = await timed(stub.QuotePowerUp(request(), metadata=metadata, timeout=0.5))
            assert (code, seconds < 0.4) == (grpc.StatusCode.DEADLINE_EXCEEDED, True)
            await asyncio.sleep(0.5)
            assert await quotes(platform) == before


async def test_a_flood_of_one_method_does_not_starve_another(tiny: Platform) -> None:
    """Admission is per method: QuotePowerUp's queue is full (1 running, 2 waiting, the rest refused), and
    ListStations is still served at once from its own slots."""
    metadata = (("authorization", f"Bearer {tiny.tokens.mint('admin', Role.PLATFORM_ADMIN, None)}"),)
    async with channel_to(tiny) as channel:
        ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
        stations = stations_pb2_grpc.StationServiceStub(channel)
        await ordering.QuotePowerUp(request(), metadata=metadata)
        flood = [
            asyncio.ensure_future(timed(ordering.QuotePowerUp(request(), metadata=metadata, timeout=10)))
            for _ in range(8)
        ]
        await asyncio.sleep(0.1)  # the flood holds QuotePowerUp's slot and fills its queue
        listed = await asyncio.gather(
            *(timed(stations.ListStations(stations_pb2.ListStationsRequest(), metadata=metadata)) for _ in range(3))
        )
        flooded = sorted(code.name for code, _ in await asyncio.gather(*flood))
        assert flooded == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 5
        # Under one global bound these would have been refused (the queue was full) or waited for the flood.
        assert [code for code, _ in listed] == [grpc.StatusCode.OK] * 3
        assert all(seconds < SLOW_S for _, seconds in listed), listed


async def test_a_method_can_have_bounds_of_its_own(tmp_path: Path, database_url: str) -> None:
    """`rpc_method_admission` overrides the defaults for one method: QuotePowerUp refuses beyond 1 running and
    0 waiting while the defaults (32 running) still apply to every other method."""
    limits = {"QuotePowerUp": {"max_running": 1, "max_queued": 0}}
    async with serving(tmp_path, database_url, rpc_method_admission=limits) as platform:
        quote = platform.interceptor.admission.gate("/voltcloud.v1.OrderingService/QuotePowerUp")
        other = platform.interceptor.admission.gate("/voltcloud.v1.OrderingService/CreateOrder")
        assert (quote.max_running, quote.max_queued, other.max_running) == (1, 0, 32)
        metadata = (("authorization", f"Bearer {platform.tokens.mint('admin', Role.PLATFORM_ADMIN, None)}"),)
        async with channel_to(platform) as channel:
            stub = ordering_pb2_grpc.OrderingServiceStub(channel)
            await stub.QuotePowerUp(request(), metadata=metadata, timeout=10)
            async with quote.slot("QuotePowerUp", None):  # its one slot is taken
                code, _ = await timed(stub.QuotePowerUp(request(), metadata=metadata, timeout=10))
                assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await timed(stub.QuotePowerUp(request(), metadata=metadata, timeout=10)))[0] is grpc.StatusCode.OK
