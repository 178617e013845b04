"""Dispatch over the app stream: decline and offer timeout re-dispatch, reconnect, steps out of order,
unary ReportTaskStep, ListTasks/GetTask scoping, ReoptimizeNow."""

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

DRIVER = "drv-dispatch"


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(
        tmp_path, database_url, sweep_interval_s=0.2, dispatch_offer_timeout_s=1.0, reoptimize_interval_s=0
    ) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


async def _valet_order(
    platform: Platform, ordering: ordering_pb2_grpc.OrderingServiceStub, key: str
) -> tuple[ordering_pb2.Order, str, str]:
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    await fund(platform, "driver", DRIVER)
    option = candidates(platform, vehicle, Mode.VALET)[0]
    quote_id = await inventory_quote(platform, DRIVER, vehicle, [option])
    order = (
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(idempotency_key=key, quote_id=quote_id, option_id="o1"),
            metadata=driver_md(platform, DRIVER),
        )
    ).order
    return order, option.unit_id or "", option.operator_id


async def _order(
    platform: Platform, ordering: ordering_pb2_grpc.OrderingServiceStub, order_id: str
) -> ordering_pb2.Order:
    response = await ordering.GetOrder(
        ordering_pb2.GetOrderRequest(order_id=order_id), metadata=driver_md(platform, DRIVER)
    )
    order: ordering_pb2.Order = response.order
    return order


async def test_declined_and_lapsed_offers_are_re_dispatched(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
    order, first, operator = await _valet_order(platform, ordering, "d1")
    app = AppStream(dispatch, specialist_md(platform, first, operator), first)
    offer = (await app.next("offer")).offer
    app.send(
        dispatch_pb2.ConnectRequest(decline=dispatch_pb2.DeclineTask(task_id=offer.task.task_id, reason="flat tyre"))
    )
    for _ in range(50):
        current = await _order(platform, ordering, order.order_id)
        if "re-dispatched" in current.events[-1].reason if current.events else False:
            break
        await asyncio.sleep(0.1)
    current = await _order(platform, ordering, order.order_id)
    second = platform.powerup.engine.unit(first)
    assert second is not None
    redispatch = [e.reason for e in current.events if "re-dispatched" in e.reason]
    assert redispatch and "flat tyre" in redispatch[0]
    app.close()

    # The next specialist lets the offer lapse: it moves on again (timeout 1 s, sweep 0.2 s).
    async with platform.db.transaction() as session:
        from voltcloud.dispatch.models import Task

        task = await session.get(Task, order.task_id)
        assert task is not None and task.offered_to not in (None, first)
        next_unit = task.offered_to
    for _ in range(60):
        current = await _order(platform, ordering, order.order_id)
        if any("timed out" in e.reason for e in current.events):
            break
        await asyncio.sleep(0.1)
    assert any(f"offer to {next_unit} timed out" in e.reason for e in current.events)
    assert current.state in (common_pb2.ORDER_STATE_CREATED, common_pb2.ORDER_STATE_FAILED)


async def test_steps_must_follow_the_route_and_reconnect_resumes(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
    order, unit, operator = await _valet_order(platform, ordering, "d2")
    md = specialist_md(platform, unit, operator)
    app = AppStream(dispatch, md, unit)
    task_id = (await app.next("offer")).offer.task.task_id
    app.send(dispatch_pb2.ConnectRequest(accept=dispatch_pb2.AcceptTask(task_id=task_id)))
    app.send(step(task_id, 3, dispatch_pb2.STEP_STATUS_DONE))  # skipping ahead
    rejected = await app.next("update")
    assert "rejected" in rejected.update.reason and "not done yet" in rejected.update.reason
    app.close()

    again = AppStream(dispatch, md, unit)
    resumed = await again.next("update")
    assert resumed.update.task.task_id == task_id and "resumed" in resumed.update.reason
    again.close()

    # The unary alternative to the stream, and the specialist's view of their tasks.
    done = await dispatch.ReportTaskStep(
        dispatch_pb2.ReportTaskStepRequest(
            idempotency_key="s0",
            step=dispatch_pb2.StepUpdate(task_id=task_id, step_index=0, status=dispatch_pb2.STEP_STATUS_DONE),
        ),
        metadata=md,
    )
    assert done.task.steps[0].status == dispatch_pb2.STEP_STATUS_DONE
    assert (await _order(platform, ordering, order.order_id)).state == common_pb2.ORDER_STATE_EN_ROUTE
    listed = await dispatch.ListTasks(dispatch_pb2.ListTasksRequest(), metadata=md)
    assert [t.task_id for t in listed.tasks] == [task_id]
    other = specialist_md(platform, "un-999999", operator)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await dispatch.GetTask(dispatch_pb2.GetTaskRequest(task_id=task_id), metadata=other)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_connect_checks_identity(platform: Platform, channel: grpc.aio.Channel) -> None:
    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
    app = AppStream(dispatch, specialist_md(platform, "un-000001", "op-0001"), "un-000002")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.next("offer", wait_s=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_reoptimize_now_answers_for_the_operator(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
    order, _unit, operator = await _valet_order(platform, ordering, "d3")
    from voltcloud.platform.auth import Role, Tenant

    md = (("authorization", f"Bearer {platform.tokens.mint('ops', Role.OPERATOR, Tenant('operator', operator))}"),)
    result = await dispatch.ReoptimizeNow(dispatch_pb2.ReoptimizeNowRequest(idempotency_key="r1"), metadata=md)
    assert result.tasks_unassigned == 0
    assert result.travel_time_after.seconds <= result.travel_time_before.seconds
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await dispatch.ReoptimizeNow(
            dispatch_pb2.ReoptimizeNowRequest(idempotency_key="r2", operator_id="op-someone-else"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert order.task_id
