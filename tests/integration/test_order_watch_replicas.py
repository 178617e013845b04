"""WatchOrder across replicas: two platforms on one database (a SQLite file, PostgreSQL); an order moved
through replica A and its specialist's position reach a WatchOrder stream on replica B, pushed by the change
feed (the watcher has no timer: without the feed it would wait forever)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voltcloud.api.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.ordering.states import Mode
from voltcloud.server import Platform

from .conftest import channel_to, serving
from .powerup_support import (
    AppStream,
    candidates,
    driver_md,
    fund,
    inventory_quote,
    specialist_md,
    step,
    swappable_vehicle,
)

DONE, STARTED = dispatch_pb2.STEP_STATUS_DONE, dispatch_pb2.STEP_STATUS_STARTED
DRIVER = "drv-watch-replica"
WAIT_S = 20.0  # generous: a shared 2-core machine; the push itself takes milliseconds


@pytest.fixture
async def replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Platform, Platform]]:
    quiet = {"sweep_interval_s": 0.5, "dispatch_offer_timeout_s": 60.0, "reoptimize_interval_s": 0}
    async with (
        serving(tmp_path / "a", database_url, **quiet) as a,  # migrates and seeds first
        serving(tmp_path / "b", database_url, seed_demo=False, **quiet) as b,
    ):
        yield a, b


class Watch:
    """A WatchOrder stream read into a queue, so the test can wait for each push in turn."""

    def __init__(self, stub: ordering_pb2_grpc.OrderingServiceStub, order_id: str, metadata: object) -> None:
        self.queue: asyncio.Queue[ordering_pb2.WatchOrderResponse | None] = asyncio.Queue()
        self.call = stub.WatchOrder(ordering_pb2.WatchOrderRequest(order_id=order_id), metadata=metadata)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            self.queue.put_nowait(response)
        self.queue.put_nowait(None)

    async def until(self, wanted: str, test: object) -> ordering_pb2.WatchOrderResponse:
        async def read() -> ordering_pb2.WatchOrderResponse:
            while True:
                response = await self.queue.get()
                assert response is not None, f"the stream ended before {wanted}"
                if test(response):  # type: ignore[operator]
                    return response

        return await asyncio.wait_for(read(), WAIT_S)

    async def close(self) -> None:
        self.call.cancel()
        with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)):
            await self.task


def state_is(state: int) -> object:
    return lambda r: r.event.seq > 0 and r.event.to_state == state


async def test_an_order_moved_on_one_replica_is_pushed_to_a_watcher_on_another(
    replicas: tuple[Platform, Platform],
) -> None:
    a, b = replicas
    vehicle = await swappable_vehicle(a, owner=DRIVER)
    await fund(a, "driver", DRIVER)
    option = candidates(a, vehicle, Mode.VALET)[0]
    quote_id = await inventory_quote(a, DRIVER, vehicle, [option])
    md = driver_md(a, DRIVER)
    async with channel_to(a) as channel_a, channel_to(b) as channel_b:
        ordering_a = ordering_pb2_grpc.OrderingServiceStub(channel_a)
        app = AppStream(
            dispatch_pb2_grpc.DispatchServiceStub(channel_a),
            specialist_md(a, option.unit_id or "", option.operator_id),
            option.unit_id or "",
        )
        order = (
            await ordering_a.CreateOrder(
                ordering_pb2.CreateOrderRequest(idempotency_key="w1", quote_id=quote_id, option_id="o1"), metadata=md
            )
        ).order
        task_id = (await app.next("offer")).offer.task.task_id
        watch = Watch(ordering_pb2_grpc.OrderingServiceStub(channel_b), order.order_id, md)
        try:
            await watch.until("the history so far", state_is(common_pb2.ORDER_STATE_CREATED))

            app.send(dispatch_pb2.ConnectRequest(accept=dispatch_pb2.AcceptTask(task_id=task_id)))
            assigned = await watch.until("the acceptance", state_is(common_pb2.ORDER_STATE_ASSIGNED))
            assert "accepted" in assigned.event.reason

            there = common_pb2.LatLng(lat=round(option.service_lat + 0.0123, 6), lng=round(option.service_lng, 6))
            app.send(dispatch_pb2.ConnectRequest(position=dispatch_pb2.PositionUpdate(position=there)))
            moved = await watch.until(
                "the specialist's position",
                lambda r: r.event.seq == 0 and abs(r.event.position.lat - there.lat) < 1e-6,
            )
            assert abs(moved.event.position.lng - there.lng) < 1e-6

            app.send(step(task_id, 0, STARTED))
            await watch.until("en route", state_is(common_pb2.ORDER_STATE_EN_ROUTE))
            for index in range(6):
                app.send(step(task_id, index, DONE, energy_wh=30_000 if index == 3 else 0))
            done = await watch.until("the completion", state_is(common_pb2.ORDER_STATE_COMPLETED))
            assert done.order.state == common_pb2.ORDER_STATE_COMPLETED
            assert await asyncio.wait_for(watch.queue.get(), WAIT_S) is None  # a final order ends the stream
        finally:
            app.close()
            if not watch.task.done():
                await watch.close()
