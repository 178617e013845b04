"""Restart and scale-out: in-flight orders survive a restart; two server processes on one PostgreSQL never
hand out the same pack, connector or specialist."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voltcloud.api.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.ordering.states import Mode
from voltcloud.server import Platform

from .conftest import JWT_KEY, platform_settings
from .powerup_support import (
    AppStream,
    admin_md,
    candidates,
    driver_md,
    fund,
    inventory_quote,
    specialist_md,
    step,
    swappable_vehicle,
)

DONE, STARTED = dispatch_pb2.STEP_STATUS_DONE, dispatch_pb2.STEP_STATUS_STARTED


async def test_a_restart_loses_no_order(tmp_path: Path, database_url: str) -> None:
    settings = platform_settings(tmp_path, database_url, sweep_interval_s=0.2, reoptimize_interval_s=0)
    first = Platform(settings)
    await first.start()
    vehicle = await swappable_vehicle(first, owner="drv-restart")
    await fund(first, "driver", "drv-restart")
    md = driver_md(first, "drv-restart")
    options = candidates(first, vehicle, Mode.VALET)
    accepted_option = options[0]
    offered_option = next(
        o for o in options if o.unit_id != accepted_option.unit_id and o.pack_id != accepted_option.pack_id
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
            dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
            q1 = await inventory_quote(first, "drv-restart", vehicle, [accepted_option])
            q2 = await inventory_quote(first, "drv-restart", vehicle, [offered_option])
            app = AppStream(
                dispatch, specialist_md(first, accepted_option.unit_id or "", accepted_option.operator_id),
                accepted_option.unit_id or "",
            )  # fmt: skip
            in_flight = (
                await ordering.CreateOrder(
                    ordering_pb2.CreateOrderRequest(idempotency_key="r1", quote_id=q1, option_id="o1"), metadata=md
                )
            ).order
            waiting = (
                await ordering.CreateOrder(
                    ordering_pb2.CreateOrderRequest(idempotency_key="r2", quote_id=q2, option_id="o1"), metadata=md
                )
            ).order
            task_id = (await app.next("offer")).offer.task.task_id
            app.send(dispatch_pb2.ConnectRequest(accept=dispatch_pb2.AcceptTask(task_id=task_id)))
            app.send(step(task_id, 0, STARTED))
            for _ in range(50):
                got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=in_flight.order_id), metadata=md)
                if got.order.state == common_pb2.ORDER_STATE_EN_ROUTE:
                    break
                await asyncio.sleep(0.1)
            app.close()
    finally:
        await first.stop(grace=0)

    second = Platform(settings)
    await second.start()
    try:
        engine = second.powerup.engine
        unit = engine.unit(accepted_option.unit_id or "")
        assert unit is not None and unit.status == 2  # the engine was rebuilt with the specialist busy
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
            dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
            app = AppStream(
                dispatch, specialist_md(second, accepted_option.unit_id or "", accepted_option.operator_id),
                accepted_option.unit_id or "",
            )  # fmt: skip
            resumed = await app.next("update")
            assert resumed.update.task.task_id == task_id
            for index in range(6):
                app.send(step(task_id, index, DONE, energy_wh=30_000 if index == 3 else 0))
            other = AppStream(
                dispatch, specialist_md(second, offered_option.unit_id or "", offered_option.operator_id),
                offered_option.unit_id or "",
            )  # fmt: skip
            offer = await other.next("offer")
            assert offer.offer.task.order_id == waiting.order_id
            other.close()
            for _ in range(50):
                done = (
                    await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=in_flight.order_id), metadata=md)
                ).order
                if done.state == common_pb2.ORDER_STATE_COMPLETED:
                    break
                await asyncio.sleep(0.1)
            app.close()
            assert done.state == common_pb2.ORDER_STATE_COMPLETED
            assert [e.seq for e in done.events] == list(range(1, len(done.events) + 1))
    finally:
        await second.stop(grace=0)


@pytest.fixture
async def replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Platform, list[str]]]:
    if not database_url.startswith("postgresql"):
        pytest.skip("two processes on one database: PostgreSQL only (set VOLTCLOUD_TEST_POSTGRES_URL)")
    env = {
        **os.environ,
        "VOLTCLOUD_DATA_DIR": str(tmp_path / "data"),
        "VOLTCLOUD_DATABASE_URL": database_url,
        "VOLTCLOUD_JWT_KEY": JWT_KEY,
        "VOLTCLOUD_REOPTIMIZE_INTERVAL_S": "0",
    }
    processes = []
    targets = []
    try:
        for _ in range(2):  # one after the other: the first migrates and seeds
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voltcloud.cli", "serve", "--listen", "127.0.0.1:0", "--seed-demo",
                env=env, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            processes.append(process)
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode()
            port = re.search(r":(\d+) ", line)
            assert port, line
            targets.append(f"127.0.0.1:{port.group(1)}")
        # A local view of the same database for the test's own bookkeeping (no server started).
        local = Platform(platform_settings(tmp_path, database_url, seed_demo=False))
        await local.powerup.engine.load(local.db)
        yield local, targets
        await local.db.dispose()
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 30)


@pytest.mark.postgres
async def test_two_replicas_never_hand_out_the_same_resource(replicas: tuple[Platform, list[str]]) -> None:
    local, targets = replicas
    vehicle = await swappable_vehicle(local)
    offered = (
        candidates(local, vehicle, Mode.SWAP)[:4]
        + candidates(local, vehicle, Mode.CHARGE)[:4]
        + candidates(local, vehicle, Mode.VALET)[:4]
    )
    resources = [o.pack_id or o.connector_id or "" for o in offered[:8]] + [o.unit_id or "" for o in offered[8:]]
    drivers = [f"drv-race-{i:02d}" for i in range(24)]
    quotes = {}
    for driver in drivers:
        await fund(local, "driver", driver)
        quotes[driver] = await inventory_quote(local, driver, vehicle, offered)

    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [ordering_pb2_grpc.OrderingServiceStub(c) for c in channels]

    async def order(i: int, driver: str) -> ordering_pb2.Order | grpc.StatusCode:
        try:
            response = await stubs[i % 2].CreateOrder(
                ordering_pb2.CreateOrderRequest(
                    idempotency_key="race", quote_id=quotes[driver], option_id=f"o{i % len(offered) + 1}",
                    allow_fallback=True,
                ),
                metadata=admin_md(local, driver),  # many customers, one car: the admin may order for any
            )  # fmt: skip
            return response.order
        except grpc.aio.AioRpcError as error:
            return error.code()

    results = await asyncio.gather(*(order(i, d) for i, d in enumerate(drivers)))
    for channel in channels:
        await channel.close()
    won = [r for r in results if isinstance(r, ordering_pb2.Order)]
    lost = [r for r in results if not isinstance(r, ordering_pb2.Order)]
    assert set(lost) <= {grpc.StatusCode.ABORTED}
    taken: Counter[str] = Counter()
    for o in won:
        option = o.option
        key = option.pack_id or (option.resource_id if option.mode != common_pb2.POWER_UP_MODE_VALET else "")
        if option.mode == common_pb2.POWER_UP_MODE_VALET:
            taken[option.resource_id] += 1  # the specialist
            taken[option.pack_id] += 1  # and the pack the valet swaps in
        else:
            taken[key] += 1
    assert taken and max(taken.values()) == 1, taken
    assert set(taken) <= set(resources) | {o.pack_id for o in offered if o.pack_id}
    assert len(won) >= 8  # every distinct resource found a taker
