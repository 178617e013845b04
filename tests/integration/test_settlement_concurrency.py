"""THE money test: many concurrent orders (holds, captures, releases), refunds, top-ups and withdrawals from
several connections on PostgreSQL; afterwards the books must balance, no wallet may be below its limit and no
hold may have been captured twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from sqlmodel import select

from tests.settlement_support import OPERATOR, check_books, clock, count, migrated
from voltcloud.platform.db import Database
from voltcloud.platform.errors import Aborted, FailedPrecondition
from voltcloud.settlement import api
from voltcloud.settlement.models import JournalEntry, LedgerHold, Payment
from voltcloud.settlement.money import EntryKind, HoldState
from voltcloud.settlement.sql import is_lost_race

pytestmark = pytest.mark.postgres

T = TypeVar("T")
WORKERS = 8
ROUNDS = 30


async def _retry(db: Database, name: str, fn: Callable[..., Awaitable[T]]) -> T | None:
    """Runs fn(session) in its own transaction, retrying lost races; None when the domain refuses."""
    for _ in range(20):
        try:
            async with db.transaction(name) as session:
                return await fn(session)
        except Aborted:
            pass
        except FailedPrecondition:
            return None
        except Exception as exc:
            if not is_lost_race(exc):
                raise
        await asyncio.sleep(random.random() * 0.01)
    raise AssertionError(f"{name}: still losing races after 20 tries")


async def test_concurrent_orders_refunds_and_top_ups_keep_the_books(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the concurrency proof runs on PostgreSQL")
    setup = await migrated(database_url)
    c = clock()
    wallets: list[str] = []
    async with setup.transaction() as s:
        for i in range(6):
            wallet = await api.ensure_customer_account(s, owner_kind="driver", owner_id=f"d{i}", clock=c)
            await api.top_up(
                s,
                account_id=wallet,
                amount_minor=5_000,
                currency="CNY",
                provider="simulated",
                provider_token="t",
                idempotency_key=f"seed-{i}",
                clock=c,
            )
            wallets.append(wallet)
        fleet = await api.ensure_customer_account(s, owner_kind="fleet", owner_id="fl-1", clock=c)
        await api.set_credit_limit(s, account_id=fleet, credit_limit_minor=20_000)
        wallets.append(fleet)
    await setup.dispose()

    shared_holds: list[str] = []
    orders: list[str] = []

    async def worker(n: int) -> None:
        rng = random.Random(n)
        db = Database(database_url, pool_size=2)  # each worker: its own engine and connections
        try:
            for r in range(ROUNDS):
                wallet = rng.choice(wallets)
                op = rng.random()
                if op < 0.5:  # an order: hold, then capture (sometimes more than held) or release
                    order = f"o-{n}-{r}"
                    amount = rng.randint(100, 3_000)
                    hold = await _retry(
                        db,
                        "hold",
                        lambda s, w=wallet, a=amount, o=order: api.place_hold(
                            s,
                            account_id=w,
                            amount_minor=a,
                            currency="CNY",
                            reference=o,
                            idempotency_key=f"h-{o}",
                            expires_at=c.now() + dt.timedelta(hours=1),
                            clock=c,
                        ),
                    )
                    if hold is None:
                        continue
                    shared_holds.append(hold.hold_id)
                    if rng.random() < 0.8:
                        actual = rng.randint(0, amount * 13 // 10)
                        done = await _retry(
                            db,
                            "capture",
                            lambda s, h=hold.hold_id, a=actual, o=order: api.capture_hold(
                                s, hold_id=h, amount_minor=a, operator_id=OPERATOR, idempotency_key=f"c-{o}", clock=c
                            ),
                        )
                        if done is not None and done.entry_id:
                            orders.append(order)
                    else:
                        await _retry(
                            db,
                            "release",
                            lambda s, h=hold.hold_id: api.release_hold(s, hold_id=h, reason="cancel", clock=c),
                        )
                elif op < 0.6 and shared_holds:  # race another worker's hold: capture with a different key
                    target, key = rng.choice(shared_holds), f"x-{n}-{r}"
                    await _retry(
                        db,
                        "steal",
                        lambda s, h=target, k=key: api.capture_hold(
                            s, hold_id=h, amount_minor=50, operator_id=OPERATOR, idempotency_key=k, clock=c
                        ),
                    )
                elif op < 0.75 and orders:
                    order, amount, key = rng.choice(orders), rng.randint(1, 400), f"r-{n}-{r}"
                    await _retry(
                        db,
                        "refund",
                        lambda s, o=order, a=amount, k=key: api.refund(
                            s, order_id=o, amount_minor=a, idempotency_key=k, clock=c
                        ),
                    )
                elif op < 0.9:  # top-ups
                    key = f"t-{n}-{r}"
                    await _retry(
                        db,
                        "top_up",
                        lambda s, w=wallet, k=key: api.top_up(
                            s,
                            account_id=w,
                            amount_minor=700,
                            currency="CNY",
                            provider="simulated",
                            provider_token="t",
                            idempotency_key=k,
                            clock=c,
                        ),
                    )
                else:
                    from voltcloud.settlement.payments import withdraw

                    amount, key = rng.randint(100, 2_000), f"w-{n}-{r}"
                    await _retry(
                        db,
                        "withdraw",
                        lambda s, w=wallet, a=amount, k=key: withdraw(
                            s,
                            account_id=w,
                            amount_minor=a,
                            currency="CNY",
                            provider="simulated",
                            destination="bank",
                            idempotency_key=k,
                            clock=c,
                        ),
                    )
        finally:
            await db.dispose()

    async def same_key_burst(i: int) -> None:
        """Four connections send the same top-up key at once, and race four captures of one hold."""
        dbs = [Database(database_url, pool_size=1) for _ in range(4)]
        try:
            wallet = wallets[i % len(wallets)]
            await asyncio.gather(
                *(
                    _retry(
                        d,
                        "dup_top_up",
                        lambda s: api.top_up(
                            s,
                            account_id=wallet,
                            amount_minor=300,
                            currency="CNY",
                            provider="simulated",
                            provider_token="t",
                            idempotency_key=f"dup-{i}",
                            clock=c,
                        ),
                    )
                    for d in dbs
                )
            )
            hold = await _retry(
                dbs[0],
                "burst_hold",
                lambda s: api.place_hold(
                    s,
                    account_id=wallet,
                    amount_minor=200,
                    currency="CNY",
                    reference=f"burst-{i}",
                    idempotency_key=f"bh-{i}",
                    expires_at=c.now() + dt.timedelta(hours=1),
                    clock=c,
                ),
            )
            if hold is None:
                return
            await asyncio.gather(
                *(
                    _retry(
                        d,
                        "burst_capture",
                        lambda s, j=j: api.capture_hold(
                            s,
                            hold_id=hold.hold_id,
                            amount_minor=150 + j,
                            operator_id=OPERATOR,
                            idempotency_key=f"bc-{i}-{j}",
                            clock=c,
                        ),
                    )
                    for j, d in enumerate(dbs)
                )
            )
        finally:
            for d in dbs:
                await d.dispose()

    await asyncio.gather(*(worker(n) for n in range(WORKERS)), *(same_key_burst(i) for i in range(6)))

    check = Database(database_url)
    try:
        await check_books(check)
        async with check.transaction() as s:
            holds = list(await s.exec(select(LedgerHold)))
            settled = list(
                await s.exec(select(JournalEntry).where(JournalEntry.kind == int(EntryKind.ORDER_SETTLEMENT)))
            )
            top_ups = list(await s.exec(select(Payment).where(Payment.purpose == "top_up")))
        assert len(settled) == sum(1 for h in holds if h.state == HoldState.CAPTURED and h.captured_minor > 0)
        assert len(settled) > 20, "the test should actually settle orders"
        keys = [e.idempotency_key for e in settled]
        assert len(keys) == len(set(keys))
        # A top-up key sent by four connections at once produced one payment.
        assert await count(check, JournalEntry, JournalEntry.kind == int(EntryKind.TOP_UP)) == len(top_ups)
        dup = [p for p in top_ups if p.amount_minor == 300]
        assert len(dup) == 6, f"same-key top-ups paid {len(dup)} times for 6 keys"
        assert sum(1 for h in holds if h.reference.startswith("burst-") and h.state == HoldState.CAPTURED) == 6
        assert await count(check, JournalEntry, JournalEntry.kind == int(EntryKind.REFUND)) > 0
    finally:
        await check.dispose()
