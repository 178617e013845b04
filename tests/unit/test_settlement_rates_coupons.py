"""Rate models on a real database: resolution customer → station → operator → platform → built-in, versions
activating at their start, orders keeping their version; coupons with caps, expiry and limits."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from tests.settlement_support import OPERATOR, STATION, T0, check_books, clock, migrated
from voltcloud.platform.db import Database
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument
from voltcloud.settlement import api, coupons, rates
from voltcloud.settlement.tariff import Dimension, PriceComponent, Tariff, TariffElement


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated(database_url)
    yield database
    await database.dispose()


def _flat_kwh(micros: int) -> Tariff:
    return Tariff("CNY", (TariffElement((PriceComponent(Dimension.ENERGY, micros, label="electricity"),)),))


async def _quote(db: Database, customer: str = "d1", at: dt.datetime = T0) -> rates.PriceQuote:
    async with db.transaction() as s:
        return await api.price_estimate(
            s,
            station_id=STATION,
            customer_kind="driver",
            customer_id=customer,
            start=at,
            energy_wh=10_000,
            duration_s=1_800,
        )


async def test_resolution_order_and_builtin_default(db: Database) -> None:
    c = clock()
    assert (await _quote(db)).rate_model_id == "builtin-default"
    assert (await _quote(db)).amount_minor == 1_800  # 10 kWh x (¥1.0000 + ¥0.8000)
    async with db.transaction() as s:
        platform = await rates.create_rate_model(
            s,
            rates.RateModelSpec("", "", "platform", _flat_kwh(500_000)),
            idempotency_key="p",
            platform_default=True,
            clock=c,
        )
        operator = await rates.create_rate_model(
            s,
            rates.RateModelSpec("", OPERATOR, "op", _flat_kwh(600_000)),
            idempotency_key="o",
            operator_default=True,
            clock=c,
        )
    assert (await _quote(db)).rate_model_id == operator.rate_model_id
    assert platform.rate_model_id != operator.rate_model_id
    async with db.transaction() as s:
        station = await rates.create_rate_model(
            s, rates.RateModelSpec("", OPERATOR, "st", _flat_kwh(700_000)), idempotency_key="s", clock=c
        )
        await api.assign_rate_model(s, rate_model_id=station.rate_model_id, station_id=STATION, clock=c)
        vip = await rates.create_rate_model(
            s, rates.RateModelSpec("", OPERATOR, "vip", _flat_kwh(100_000)), idempotency_key="v", clock=c
        )
        account = await api.ensure_customer_account(s, owner_kind="driver", owner_id="vip", clock=c)
        await api.assign_rate_model(s, rate_model_id=vip.rate_model_id, customer_account_id=account, clock=c)
    assert (await _quote(db, "d1")).amount_minor == 700
    assert (await _quote(db, "vip")).amount_minor == 100


async def test_versions_activate_at_their_start_and_orders_keep_theirs(db: Database) -> None:
    c = clock()
    async with db.transaction() as s:
        v1 = await rates.create_rate_model(
            s,
            rates.RateModelSpec("", OPERATOR, "m", _flat_kwh(1_000_000)),
            idempotency_key="v1",
            operator_default=True,
            clock=c,
        )
        v2 = await rates.create_rate_model(
            s,
            rates.RateModelSpec(
                v1.rate_model_id, OPERATOR, "m", _flat_kwh(2_000_000), valid_from=T0 + dt.timedelta(hours=1)
            ),
            idempotency_key="v2",
            clock=c,
        )
    assert v2.version == 2
    before = await _quote(db, at=T0 + dt.timedelta(minutes=59))
    after = await _quote(db, at=T0 + dt.timedelta(hours=1))
    assert (before.rate_model_version, before.amount_minor) == (1, 1_000)
    assert (after.rate_model_version, after.amount_minor) == (2, 2_000)
    async with db.transaction() as s:  # completion reprices with the version fixed at order start
        pinned = await api.price_estimate(
            s,
            station_id=STATION,
            customer_kind="driver",
            customer_id="d1",
            start=T0 + dt.timedelta(hours=2),
            energy_wh=10_000,
            duration_s=1_800,
            rate_model_id=v1.rate_model_id,
            rate_model_version=1,
        )
    assert pinned.amount_minor == 1_000
    with pytest.raises(InvalidArgument) as err:
        async with db.transaction() as s:
            await rates.create_rate_model(
                s,
                rates.RateModelSpec(
                    v1.rate_model_id, OPERATOR, "m", _flat_kwh(1), valid_from=T0 - dt.timedelta(hours=1)
                ),
                idempotency_key="v3",
                clock=c,
            )
    assert err.value.violations[0].field == "rate_model.valid_from"


async def test_coupon_caps_minimum_and_expiry(db: Database) -> None:
    c = clock()
    async with db.transaction() as s:
        pct = await coupons.create_coupon(
            s,
            coupons.CouponSpec(
                code="TEN",
                percent_off_bp=1000,
                max_discount_minor=500,
                min_order_minor=1_000,
                valid_to=T0 + dt.timedelta(days=1),
                max_redemptions_per_account=1,
            ),
            idempotency_key="k1",
            clock=c,
        )
        fixed = await coupons.create_coupon(
            s, coupons.CouponSpec(code="FIVE", amount_off_minor=500), idempotency_key="k2", clock=c
        )
    assert coupons.discount_for(pct, amount_minor=2_345, at=T0) == 235  # 10% of 2345 = 234.5 -> 235
    assert coupons.discount_for(pct, amount_minor=90_000, at=T0) == 500  # capped
    assert coupons.discount_for(fixed, amount_minor=300, at=T0) == 300  # never more than the order
    with pytest.raises(FailedPrecondition, match="at least"):
        coupons.discount_for(pct, amount_minor=999, at=T0)
    with pytest.raises(FailedPrecondition, match="expired"):
        coupons.discount_for(pct, amount_minor=2_000, at=T0 + dt.timedelta(days=1))
    async with db.transaction() as s:
        wallet = await api.ensure_customer_account(s, owner_kind="driver", owner_id="d1", clock=c)
        redeemed = await api.redeem_coupon(
            s, code="TEN", account_id=wallet, order_id="o1", order_amount_minor=2_345, idempotency_key="r1", clock=c
        )
    assert redeemed.discount_minor == 235 and redeemed.entry.amount_on(wallet) == 235
    with pytest.raises(FailedPrecondition, match="allowed number"):
        async with db.transaction() as s:
            await api.redeem_coupon(
                s, code="TEN", account_id=wallet, order_id="o2", order_amount_minor=2_000, idempotency_key="r2", clock=c
            )
    await check_books(db)
