"""Payouts on T+3, monthly bills and capital-flow tracing, on a real database with a moving clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from tests.settlement_support import OPERATOR, check_books, clock, migrated
from voltcloud.platform.db import Database
from voltcloud.platform.paging import Page
from voltcloud.settlement import accounts, api, billing, payouts, trace
from voltcloud.settlement.money import BillState, EntryKind


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated(database_url)
    yield database
    await database.dispose()


async def test_payouts_wait_three_days_and_bills_and_trace_follow_the_money(db: Database) -> None:
    c = clock()
    async with db.transaction() as s:
        fleet = await api.ensure_customer_account(s, owner_kind="fleet", owner_id="fl-1", clock=c)
        await api.set_credit_limit(s, account_id=fleet, credit_limit_minor=100_000)
        for i, amount in enumerate((10_000, 20_000)):
            hold = await api.place_hold(
                s,
                account_id=fleet,
                amount_minor=amount,
                currency="CNY",
                reference=f"o{i}",
                idempotency_key=f"h{i}",
                expires_at=c.now() + dt.timedelta(hours=1),
                clock=c,
            )
            await api.capture_hold(
                s,
                hold_id=hold.hold_id,
                amount_minor=amount,
                operator_id=OPERATOR,
                idempotency_key=f"c{i}",
                clock=c,
                breakdown={
                    "electricity": amount // 2,
                    "service_fee": amount // 2 - amount // 10,
                    "platform_fee": amount // 10,
                },
            )
        operator = await accounts.operator_payable(s, OPERATOR, "CNY", c.now())
    async with db.transaction() as s:
        assert await payouts.run_payouts(s, idempotency_key="p0", clock=c) == []
    c.advance(dt.timedelta(days=3, seconds=1))
    async with db.transaction() as s:
        made = await payouts.run_payouts(s, idempotency_key="p1", clock=c)
        again = await payouts.run_payouts(s, idempotency_key="p1", clock=c)
    assert [p.amount_minor for p in made] == [27_000] and [p.id for p in again] == [made[0].id]
    books = await check_books(db)
    assert books[operator.id] == 0

    async with db.transaction() as s:
        bills = await billing.generate_monthly_bills(s, year=2026, month=3, clock=c)
    fleet_bill = next(b for b in bills if b.bill.account_id == fleet)
    assert fleet_bill.bill.total_minor == 30_000 and fleet_bill.bill.state == BillState.ISSUED
    assert fleet_bill.bill.due_at is not None

    async with db.transaction() as s:
        flows, _, _ = await trace.trace(s, order_id="o1", page=Page(50, None))
    assert {(f.from_account_id, f.to_account_id, f.amount_minor) for f in flows} >= {(fleet, operator.id, 10_000)}
    assert all(f.kind is EntryKind.ORDER_SETTLEMENT for f in flows)
