"""Offers across replicas: the specialist's app stream on replica B, the order created on replica A. The offer
and its withdrawal reach the app through the change feed: the sweep, which used to wake every connection to
re-read its offers, is set to an hour, so nothing else could deliver them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voltcloud.api.v1 import dispatch_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.ordering.states import Mode
from voltcloud.server import Platform

from .conftest import channel_to, serving
from .powerup_support import AppStream, candidates, driver_md, fund, inventory_quote, specialist_md, swappable_vehicle

DRIVER = "drv-offer-replica"
WAIT_S = 20.0  # generous: a shared 2-core machine; the push itself takes milliseconds


@pytest.fixture
async def replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Platform, Platform]]:
    quiet = {"sweep_interval_s": 3600.0, "dispatch_offer_timeout_s": 600.0, "reoptimize_interval_s": 0}
    async with (
        serving(tmp_path / "a", database_url, **quiet) as a,  # migrates and seeds first
        serving(tmp_path / "b", database_url, seed_demo=False, **quiet) as b,
    ):
        yield a, b


async def test_an_offer_made_on_one_replica_reaches_the_app_connected_to_another(
    replicas: tuple[Platform, Platform],
) -> None:
    a, b = replicas
    vehicle = await swappable_vehicle(a, owner=DRIVER)
    await fund(a, "driver", DRIVER)
    option = candidates(a, vehicle, Mode.VALET)[0]
    quote_id = await inventory_quote(a, DRIVER, vehicle, [option])
    md = driver_md(a, DRIVER)
    unit_id = option.unit_id or ""
    async with channel_to(a) as channel_a, channel_to(b) as channel_b:
        app = AppStream(
            dispatch_pb2_grpc.DispatchServiceStub(channel_b), specialist_md(b, unit_id, option.operator_id), unit_id
        )
        try:
            ordering_a = ordering_pb2_grpc.OrderingServiceStub(channel_a)
            order = (
                await ordering_a.CreateOrder(
                    ordering_pb2.CreateOrderRequest(idempotency_key="x1", quote_id=quote_id, option_id="o1"),
                    metadata=md,
                )
            ).order
            offer = (await app.next("offer", wait_s=WAIT_S)).offer
            assert offer.task.order_id == order.order_id
            await ordering_a.CancelOrder(
                ordering_pb2.CancelOrderRequest(
                    idempotency_key="x2", order_id=order.order_id, reason="changed my mind"
                ),
                metadata=md,
            )
            withdrawn = await app.next("cancellation", wait_s=WAIT_S)
            assert withdrawn.cancellation.task_id == offer.task.task_id
        finally:
            app.close()
