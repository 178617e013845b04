"""CreateOrderRequest.coupon_code over real gRPC (SQLite + PostgreSQL): validated at CreateOrder (unknown,
expired, another operator's, already used by the payer: refused, nothing written), redeemed once when the
order is paid (the discount credited to the paying wallet, the journal balanced, the history says so)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlmodel import select

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from voltcloud.ordering.models import Order
from voltcloud.ordering.states import Mode
from voltcloud.server import Platform
from voltcloud.settlement.models import Coupon

from .care_support import journal_balanced, served_charge_order
from .conftest import channel_to, serving
from .powerup_support import account_state, admin_md, candidates, driver_md, inventory_quote, swappable_vehicle

DRIVER = "drv-coupon"
FUND = 1_000_000


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


def _window(start: dt.datetime, end: dt.datetime) -> common_pb2.TimeWindow:
    window = common_pb2.TimeWindow()
    window.start.FromDatetime(start)
    window.end.FromDatetime(end)
    return window


async def _coupon(channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...], key: str, **fields: object) -> None:
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    coupon = settlement_pb2.Coupon(amount_off=common_pb2.Money(amount_minor=500, currency="CNY"), **fields)  # type: ignore[arg-type]
    await stub.CreateCoupon(settlement_pb2.CreateCouponRequest(idempotency_key=key, coupon=coupon), metadata=md)


async def test_a_coupon_is_validated_at_order_and_redeemed_once(platform: Platform, channel: grpc.aio.Channel) -> None:
    admin = admin_md(platform, "coupon-admin")
    now = dt.datetime.now(dt.UTC)
    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    operator = candidates(platform, vehicle, Mode.CHARGE)[0].operator_id
    other_operator = "op-0002" if operator != "op-0002" else "op-0001"
    await _coupon(channel, admin, "c1", code="SAVE5", max_redemptions_per_account=1)
    await _coupon(
        channel, admin, "c2", code="OLD", valid=_window(now - dt.timedelta(days=60), now - dt.timedelta(days=30))
    )
    await _coupon(channel, admin, "c3", code="THEIRS", operator_id=other_operator)

    served = await served_charge_order(platform, channel, DRIVER, minutes=120, coupon="SAVE5")
    order = served.order
    charged = order.final_price.amount_minor
    assert order.state == common_pb2.ORDER_STATE_COMPLETED and charged > 500
    credited = order.events[-1]
    assert credited.amount.amount_minor == 500 and "coupon SAVE5" in credited.reason
    assert (await account_state(platform, served.account_id)) == (FUND - charged + 500, 0)
    assert await journal_balanced(platform)
    async with platform.db.transaction() as session:
        coupon = (await session.exec(select(Coupon).where(Coupon.code == "SAVE5"))).one()
        assert coupon.redemptions == 1

    # Refused at CreateOrder, clearly, with nothing written: unknown, expired, another operator's, used.
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    option = candidates(platform, vehicle, Mode.CHARGE)[0]
    quote_id = await inventory_quote(platform, DRIVER, vehicle, [option])
    for key, code, status, words in (
        ("n1", "NOPE", grpc.StatusCode.NOT_FOUND, "not found"),
        ("n2", "OLD", grpc.StatusCode.FAILED_PRECONDITION, "expired"),
        ("n3", "THEIRS", grpc.StatusCode.FAILED_PRECONDITION, f"operator {other_operator}"),
        ("n4", "SAVE5", grpc.StatusCode.FAILED_PRECONDITION, "already used"),
    ):
        request = ordering_pb2.CreateOrderRequest(
            idempotency_key=key, quote_id=quote_id, option_id="o1", coupon_code=code
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ordering.CreateOrder(request, metadata=driver_md(platform, DRIVER))
        assert refused.value.code() == status and words in refused.value.details(), refused.value.details()
    assert (await account_state(platform, served.account_id)) == (FUND - charged + 500, 0)  # no hold left behind
    async with platform.db.transaction() as session:
        orders = list(await session.exec(select(Order).where(Order.created_by == DRIVER)))
        assert [o.id for o in orders] == [order.order_id]
