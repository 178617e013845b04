"""CreateOrder, dispatch over the app stream, WatchOrder and CancelOrder over real gRPC (SQLite + PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voltcloud.api.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.ordering.states import Mode
from voltcloud.server import Platform

from .conftest import channel_to, field_violations, serving
from .powerup_support import (
    AppStream,
    account_state,
    admin_md,
    candidates,
    collect_watch,
    driver_md,
    fund,
    inventory_quote,
    specialist_md,
    step,
    swappable_vehicle,
)

DONE, STARTED = dispatch_pb2.STEP_STATUS_DONE, dispatch_pb2.STEP_STATUS_STARTED
DRIVER = "drv-flow"


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(
        tmp_path, database_url, sweep_interval_s=0.2, dispatch_offer_timeout_s=30.0, reoptimize_interval_s=0
    ) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


async def test_valet_order_is_dispatched_accepted_completed_and_watched(
    platform: Platform, channel: grpc.aio.Channel
) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    account = await fund(platform, "driver", DRIVER)
    option = candidates(platform, vehicle, Mode.VALET)[0]
    quote_id = await inventory_quote(platform, DRIVER, vehicle, [option])
    md = driver_md(platform, DRIVER)

    app = AppStream(dispatch, specialist_md(platform, option.unit_id or "", option.operator_id), option.unit_id or "")
    created = await ordering.CreateOrder(
        ordering_pb2.CreateOrderRequest(idempotency_key="k1", quote_id=quote_id, option_id="o1"), metadata=md
    )
    order = created.order
    assert order.state == common_pb2.ORDER_STATE_CREATED
    assert order.task_id and order.hold_id
    balance, held = await account_state(platform, account)
    assert held == order.option.price_estimate.amount_minor * 12 // 10 or held > 0

    offer = await app.next("offer")
    task = offer.offer.task
    assert task.task_id == order.task_id
    assert [s.kind for s in task.steps] == [1, 2, 3, 4, 5, 6]

    watch = asyncio.create_task(collect_watch(ordering, order.order_id, md))
    app.send(dispatch_pb2.ConnectRequest(accept=dispatch_pb2.AcceptTask(task_id=task.task_id)))
    app.send(
        dispatch_pb2.ConnectRequest(
            position=dispatch_pb2.PositionUpdate(
                position=common_pb2.LatLng(lat=option.service_lat, lng=option.service_lng)
            )
        )
    )
    app.send(step(task.task_id, 0, STARTED))
    app.send(step(task.task_id, 0, DONE, photo_uris=["s3://proof/arrived.jpg"]))
    app.send(step(task.task_id, 1, DONE, photo_uris=["s3://proof/keys.jpg"]))
    app.send(step(task.task_id, 2, DONE))
    app.send(step(task.task_id, 3, DONE, energy_wh=42_000))
    app.send(step(task.task_id, 4, DONE))
    app.send(step(task.task_id, 5, DONE, photo_uris=["s3://proof/returned.jpg"]))

    events = await asyncio.wait_for(watch, 20)
    app.close()
    history = [r.event for r in events if r.event.seq > 0]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    states = [e.to_state for e in history]
    assert states[0] == common_pb2.ORDER_STATE_CREATED
    for expected in (
        common_pb2.ORDER_STATE_ASSIGNED,
        common_pb2.ORDER_STATE_EN_ROUTE,
        common_pb2.ORDER_STATE_IN_SERVICE,
        common_pb2.ORDER_STATE_COMPLETED,
    ):
        assert expected in states
    assert states[-1] == common_pb2.ORDER_STATE_COMPLETED
    reasons = " | ".join(e.reason for e in history)
    for fragment in ("accepted", "go to vehicle", "pick up vehicle done", "power up done", "hand over done", "proof"):
        assert fragment in reasons
    assert any(e.energy_wh == 42_000 for e in history)

    final = (await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order.order_id), metadata=md)).order
    assert final.state == common_pb2.ORDER_STATE_COMPLETED
    assert final.energy_wh == 42_000
    assert final.final_price.amount_minor > 0
    assert final.pack_in_id == option.pack_id
    assert len(final.events) == len(history)
    balance_after, held_after = await account_state(platform, account)
    assert held_after == 0
    assert balance_after == balance - final.final_price.amount_minor


async def test_create_order_is_idempotent_and_refuses_key_reuse(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    await fund(platform, "driver", DRIVER)
    options = candidates(platform, vehicle, Mode.SWAP)[:2]
    quote_id = await inventory_quote(platform, DRIVER, vehicle, options)
    md = driver_md(platform, DRIVER)
    request = ordering_pb2.CreateOrderRequest(idempotency_key="same", quote_id=quote_id, option_id="o1")
    first, second = await asyncio.gather(
        ordering.CreateOrder(request, metadata=md), ordering.CreateOrder(request, metadata=md)
    )
    assert first.order.order_id == second.order.order_id
    assert first.order.state == common_pb2.ORDER_STATE_EN_ROUTE  # swap: pack reserved, driver on the way
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key="same", quote_id=quote_id, option_id="o2"), metadata=md
        )
    # Issue 10: a reused key is INVALID_ARGUMENT naming `idempotency_key` on every RPC (was ALREADY_EXISTS).
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["idempotency_key"]


async def test_taken_resource_is_aborted_or_falls_back(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    await fund(platform, "driver", DRIVER)
    await fund(platform, "driver", "drv-other")
    options = candidates(platform, vehicle, Mode.CHARGE)[:2]
    mine = await inventory_quote(platform, DRIVER, vehicle, options)
    theirs = await inventory_quote(platform, "drv-other", vehicle, options)
    await ordering.CreateOrder(
        ordering_pb2.CreateOrderRequest(idempotency_key="a", quote_id=theirs, option_id="o1"),
        metadata=admin_md(platform, "drv-other"),  # someone else takes the resource first
    )
    md = driver_md(platform, DRIVER)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key="b", quote_id=mine, option_id="o1"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    fallback = await ordering.CreateOrder(
        ordering_pb2.CreateOrderRequest(idempotency_key="c", quote_id=mine, option_id="o1", allow_fallback=True),
        metadata=md,
    )
    assert fallback.order.option.option_id == "o2"
    assert fallback.order.option.resource_id == options[1].connector_id


async def test_short_funds_and_expired_quote_are_failed_precondition(
    platform: Platform, channel: grpc.aio.Channel
) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner="drv-broke")
    md = driver_md(platform, "drv-broke")
    quote_id = await inventory_quote(platform, "drv-broke", vehicle, candidates(platform, vehicle, Mode.SWAP)[:1])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key="x", quote_id=quote_id, option_id="o1"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient funds" in (err.value.details() or "")
    # The failed attempt left the pack free: nothing was reserved.
    assert candidates(platform, vehicle, Mode.SWAP)[0].pack_id == candidates(platform, vehicle, Mode.SWAP)[0].pack_id

    await fund(platform, "driver", "drv-broke")
    stale = await inventory_quote(
        platform, "drv-broke", vehicle, candidates(platform, vehicle, Mode.SWAP)[:1], ttl_s=-1
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key="y", quote_id=stale, option_id="o1"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in (err.value.details() or "")


async def test_cancel_is_free_before_dispatch_and_charged_after_en_route(
    platform: Platform, channel: grpc.aio.Channel
) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    account = await fund(platform, "driver", DRIVER)
    md = driver_md(platform, DRIVER)
    options = candidates(platform, vehicle, Mode.VALET)
    first, second = (
        options[0],
        next(o for o in options if o.unit_id != options[0].unit_id and o.pack_id != options[0].pack_id),
    )

    q1 = await inventory_quote(platform, DRIVER, vehicle, [first])
    order = (
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key="c1", quote_id=q1, option_id="o1"), metadata=md
        )
    ).order
    cancelled = await ordering.CancelOrder(
        ordering_pb2.CancelOrderRequest(idempotency_key="x1", order_id=order.order_id, reason="changed my mind"),
        metadata=md,
    )
    assert cancelled.order.state == common_pb2.ORDER_STATE_CANCELLED
    assert cancelled.cancellation_fee.amount_minor == 0
    again = await ordering.CancelOrder(
        ordering_pb2.CancelOrderRequest(idempotency_key="x1", order_id=order.order_id), metadata=md
    )
    assert again.order.version == cancelled.order.version
    balance, held = await account_state(platform, account)
    assert held == 0
    # The specialist and the pack are free again: the same option can be ordered.
    q1b = await inventory_quote(platform, DRIVER, vehicle, [first])
    reorder = await ordering.CreateOrder(
        ordering_pb2.CreateOrderRequest(idempotency_key="c1b", quote_id=q1b, option_id="o1"), metadata=md
    )
    await ordering.CancelOrder(
        ordering_pb2.CancelOrderRequest(idempotency_key="x1b", order_id=reorder.order.order_id), metadata=md
    )

    q2 = await inventory_quote(platform, DRIVER, vehicle, [second])
    app = AppStream(dispatch, specialist_md(platform, second.unit_id or "", second.operator_id), second.unit_id or "")
    order2 = (
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key="c2", quote_id=q2, option_id="o1"), metadata=md
        )
    ).order
    task_id = (await app.next("offer")).offer.task.task_id
    app.send(dispatch_pb2.ConnectRequest(accept=dispatch_pb2.AcceptTask(task_id=task_id)))
    app.send(step(task_id, 0, STARTED))
    for _ in range(50):
        current = (await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order2.order_id), metadata=md)).order
        if current.state == common_pb2.ORDER_STATE_EN_ROUTE:
            break
        await asyncio.sleep(0.1)
    assert current.state == common_pb2.ORDER_STATE_EN_ROUTE
    fee = await ordering.CancelOrder(
        ordering_pb2.CancelOrderRequest(idempotency_key="x2", order_id=order2.order_id), metadata=md
    )
    assert fee.cancellation_fee.amount_minor == platform.settings.cancel_fee_minor
    cancellation = await app.next("cancellation")
    assert cancellation.cancellation.task_id == task_id
    app.close()
    balance2, held2 = await account_state(platform, account)
    assert held2 == 0
    assert balance2 == balance - platform.settings.cancel_fee_minor
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ordering.CancelOrder(
            ordering_pb2.CancelOrderRequest(idempotency_key="x3", order_id=order2.order_id), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
