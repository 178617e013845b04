"""Abnormal orders in the flow, over real gRPC (SQLite + PostgreSQL): a charge session whose reported energy
exceeds what the connector can deliver in the session's time completes, is checked with those facts, and the
overcharge is refunded to the wallet the order was paid from, recorded as an event of the order. A plausible
session is left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voltcloud.api.v1 import common_pb2
from voltcloud.server import Platform
from voltcloud.settlement.models import OrderCheck

from .care_support import connector_power, journal_balanced, served_charge_order
from .conftest import channel_to, serving
from .powerup_support import account_state

FUND = 1_000_000  # powerup_support.fund's default top-up


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


async def test_an_impossible_session_is_refunded_the_difference(platform: Platform, channel: grpc.aio.Channel) -> None:
    # 10 minutes at the connector: report more than twice what its max power can deliver in that time.
    from voltcloud.ordering.states import Mode

    from .powerup_support import candidates, swappable_vehicle

    vehicle = await swappable_vehicle(platform, owner="drv-abnormal")
    option = candidates(platform, vehicle, Mode.CHARGE)[0]
    power = await connector_power(platform, option.connector_id)
    possible_wh = power * 10 // 60
    reported = min(2 * possible_wh + 1000, vehicle.usable_capacity_wh)
    assert reported > possible_wh * 1.05, "the vehicle's capacity leaves no room for an impossible session"
    served = await served_charge_order(platform, channel, "drv-abnormal", energy_wh=reported, minutes=10)
    order = served.order
    assert order.state == common_pb2.ORDER_STATE_COMPLETED and order.energy_wh == reported
    charged = order.final_price.amount_minor
    flagged = order.events[-1]
    assert "ENERGY_EXCEEDS_POWER" in flagged.reason, flagged.reason
    refunded = flagged.amount.amount_minor
    assert 0 < refunded < charged
    assert flagged.to_state == common_pb2.ORDER_STATE_COMPLETED  # a fact of the history, not a transition
    balance, held = await account_state(platform, served.account_id)
    assert (balance, held) == (FUND - charged + refunded, 0)
    async with platform.db.transaction() as session:
        check = await session.get(OrderCheck, f"order:{order.order_id}")
        assert check is not None and "ENERGY_EXCEEDS_POWER" in check.flags
        assert check.fair_minor == charged - refunded  # the plausible energy, repriced
    assert await journal_balanced(platform)


async def test_a_plausible_session_is_left_alone(platform: Platform, channel: grpc.aio.Channel) -> None:
    served = await served_charge_order(platform, channel, "drv-normal", minutes=120)
    order = served.order
    assert order.state == common_pb2.ORDER_STATE_COMPLETED
    assert order.events[-1].to_state == common_pb2.ORDER_STATE_COMPLETED
    assert "abnormal" not in order.events[-1].reason
    balance, _ = await account_state(platform, served.account_id)
    assert balance == FUND - order.final_price.amount_minor
    async with platform.db.transaction() as session:
        check = await session.get(OrderCheck, f"order:{order.order_id}")
        assert check is not None and check.flags == ""  # checked, found normal
