"""The whole one-click power-up over real gRPC: quote → order → specialist accepts and completes → the
driver's WatchOrder sees every step → the order ends completed with its history. Also QuotePowerUp's
answers to bad input and its latency histogram."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.integration.conftest import channel_to, serving
from tests.integration.powerup_support import (
    AppStream,
    account_state,
    collect_watch,
    driver_md,
    fund,
    specialist_md,
    step,
    swappable_vehicle,
)
from voltcloud.api.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.server import Platform

READER = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))

DRIVER = "drv-e2e"
DONE, STARTED = dispatch_pb2.STEP_STATUS_DONE, dispatch_pb2.STEP_STATUS_STARTED


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(tmp_path, database_url, sweep_interval_s=0.2, reoptimize_interval_s=0) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


def _centre(platform: Platform) -> common_pb2.LatLng:
    stations = list(platform.powerup.engine._maps.station_by_id.values())
    return common_pb2.LatLng(
        lat=sum(s.lat for s in stations) / len(stations), lng=sum(s.lng for s in stations) / len(stations)
    )


async def test_one_click_power_up_end_to_end(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    account = await fund(platform, "driver", DRIVER)
    md = driver_md(platform, DRIVER)

    quote = await ordering.QuotePowerUp(
        ordering_pb2.QuotePowerUpRequest(
            vehicle_id=vehicle.id, position=_centre(platform), soc_permille=250, target_soc_permille=900
        ),
        metadata=md,
    )
    assert quote.quote_id and quote.options
    assert [o.rank for o in quote.options] == list(range(1, len(quote.options) + 1))
    for option in quote.options:
        assert option.rank_reason != ordering_pb2.RANK_REASON_UNSPECIFIED
        assert option.price_estimate.amount_minor > 0 and option.price_estimate.currency == "CNY"
        assert option.finish_time.seconds > 0 and option.eta.seconds >= 0
    valet = next(o for o in quote.options if o.mode == common_pb2.POWER_UP_MODE_VALET)
    specialist = valet.resource_id
    operator = platform.powerup.engine.unit(specialist)
    assert operator is not None

    app = AppStream(dispatch, specialist_md(platform, specialist, operator.operator_id), specialist)
    order = (
        await ordering.CreateOrder(
            ordering_pb2.CreateOrderRequest(
                idempotency_key="e2e-1", quote_id=quote.quote_id, option_id=valet.option_id
            ),
            metadata=md,
        )
    ).order
    assert order.state == common_pb2.ORDER_STATE_CREATED
    watch = asyncio.create_task(collect_watch(ordering, order.order_id, md))

    task = (await app.next("offer")).offer.task
    assert task.order_id == order.order_id and task.specialist_id == specialist
    app.send(dispatch_pb2.ConnectRequest(accept=dispatch_pb2.AcceptTask(task_id=task.task_id)))
    app.send(step(task.task_id, 0, STARTED))
    app.send(
        dispatch_pb2.ConnectRequest(
            position=dispatch_pb2.PositionUpdate(position=common_pb2.LatLng(lat=operator.lat + 0.001, lng=operator.lng))
        )
    )
    app.send(step(task.task_id, 0, DONE, photo_uris=["s3://proof/arrived.jpg"]))
    app.send(step(task.task_id, 1, DONE, photo_uris=["s3://proof/picked-up.jpg"]))
    app.send(step(task.task_id, 2, DONE))
    app.send(step(task.task_id, 3, DONE, energy_wh=valet.energy_wh, photo_uris=["s3://proof/swapped.jpg"]))
    app.send(step(task.task_id, 4, DONE))
    app.send(step(task.task_id, 5, DONE, photo_uris=["s3://proof/returned.jpg"]))

    seen = await asyncio.wait_for(watch, 30)
    app.close()
    history = [r.event for r in seen if r.event.seq > 0]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    transitions = [e.to_state for e in history if e.to_state != e.from_state]
    assert transitions == [
        common_pb2.ORDER_STATE_ASSIGNED,
        common_pb2.ORDER_STATE_EN_ROUTE,
        common_pb2.ORDER_STATE_IN_SERVICE,
        common_pb2.ORDER_STATE_COMPLETED,
    ]
    steps = [e.reason for e in history if e.reason.startswith("step ")]
    assert len(steps) >= 7  # started + six done steps, each with its proof
    assert any(r.event.seq == 0 and r.event.HasField("position") for r in seen)  # live specialist position

    final = (await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order.order_id), metadata=md)).order
    assert final.state == common_pb2.ORDER_STATE_COMPLETED
    assert [e.seq for e in final.events] == [e.seq for e in history]
    assert final.final_price.amount_minor > 0
    assert final.events[-1].amount.amount_minor == final.final_price.amount_minor
    _, held = await account_state(platform, account)
    assert held == 0


async def test_quote_answers_bad_input_with_clear_errors(platform: Platform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    md = driver_md(platform, DRIVER)
    centre = _centre(platform)

    async def error(request: ordering_pb2.QuotePowerUpRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ordering.QuotePowerUp(request, metadata=md)
        return err.value

    unknown = await error(ordering_pb2.QuotePowerUpRequest(vehicle_id="vh-nope", position=centre, soc_permille=300))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND

    for soc, field in ((1200, "soc_permille"), (-5, "soc_permille")):
        bad = await error(ordering_pb2.QuotePowerUpRequest(vehicle_id=vehicle.id, position=centre, soc_permille=soc))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = _violations(bad)
        assert field in fields

    sea = await error(
        ordering_pb2.QuotePowerUpRequest(
            vehicle_id=vehicle.id, position=common_pb2.LatLng(lat=30.0, lng=124.5), soc_permille=300
        )
    )  # the East China Sea, 300 km off Shanghai
    assert sea.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(sea) == ["position"]

    quote = await ordering.QuotePowerUp(
        ordering_pb2.QuotePowerUpRequest(vehicle_id=vehicle.id, position=centre, soc_permille=300), metadata=md
    )
    assert quote.expires_at.seconds > 0
    data = READER.get_metrics_data()
    assert data is not None
    names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert "voltcloud.ordering.quote_power_up.duration" in names


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    return [v.field for v in bad.field_violations]
