"""The ledger on a real database: top-ups, holds, captures (with arrears), refunds, idempotency."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlmodel import select

from tests.settlement_support import OPERATOR, check_books, clock, migrated
from voltcloud.platform.db import Database
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.settlement import accounts, api
from voltcloud.settlement.ledger import PostingSpec, post_entry
from voltcloud.settlement.models import LedgerAccount
from voltcloud.settlement.money import EntryKind, HoldState


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated(database_url)
    yield database
    await database.dispose()


async def _wallet(db: Database, owner: str, amount: int) -> str:
    c = clock()
    async with db.transaction() as s:
        account_id = await api.ensure_customer_account(s, owner_kind="driver", owner_id=owner, clock=c)
        if amount:
            await api.top_up(
                s,
                account_id=account_id,
                amount_minor=amount,
                currency="CNY",
                provider="simulated",
                provider_token="tok",
                idempotency_key=f"top-{owner}",
                clock=c,
            )
    return account_id


async def _balance(db: Database, account_id: str) -> tuple[int, int]:
    async with db.transaction() as s:
        v = await accounts.view(s, await accounts.load(s, account_id))
    return v.balance_minor, v.held_minor


async def test_ensure_customer_account_is_idempotent(db: Database) -> None:
    a = await _wallet(db, "d1", 0)
    b = await _wallet(db, "d1", 0)
    assert a == b


async def test_hold_capture_splits_operator_and_platform_in_one_balanced_entry(db: Database) -> None:
    wallet = await _wallet(db, "d1", 10_000)
    c = clock()
    async with db.transaction() as s:
        hold = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=6_000,
            currency="CNY",
            reference="ord-1",
            idempotency_key="h1",
            expires_at=c.now() + dt.timedelta(hours=2),
            clock=c,
        )
    assert await _balance(db, wallet) == (10_000, 6_000)
    async with db.transaction() as s:
        entry = await api.capture_hold(
            s, hold_id=hold.hold_id, amount_minor=4_321, operator_id=OPERATOR, idempotency_key="c1", clock=c
        )
    assert entry.kind is EntryKind.ORDER_SETTLEMENT and entry.order_id == "ord-1"
    assert sum(p.amount_minor for p in entry.postings) == 0
    assert entry.amount_on(wallet) == -4_321
    fee = next(p for p in entry.postings if p.memo == "platform_fee").amount_minor
    assert fee == 216  # 5% of 4321 = 216.05 -> half-up 216
    assert await _balance(db, wallet) == (10_000 - 4_321, 0)
    await check_books(db)


async def test_capture_beyond_the_wallet_goes_to_arrears_and_top_up_repays_them(db: Database) -> None:
    wallet = await _wallet(db, "d1", 1_000)
    c = clock()
    async with db.transaction() as s:
        hold = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=1_000,
            currency="CNY",
            reference="ord-1",
            idempotency_key="h1",
            expires_at=c.now() + dt.timedelta(hours=2),
            clock=c,
        )
        entry = await api.capture_hold(
            s,
            hold_id=hold.hold_id,
            amount_minor=1_500,
            operator_id=OPERATOR,
            idempotency_key="c1",
            clock=c,
            breakdown={"electricity": 1_000, "service_fee": 400, "platform_fee": 100},
        )
    assert entry.amount_on(wallet) == -1_000
    assert await _balance(db, wallet) == (0, 0)
    async with db.transaction() as s:
        arrears = await accounts.find_arrears(s, await accounts.load(s, wallet))
        assert arrears is not None and arrears.balance_minor == -500
        await api.top_up(
            s,
            account_id=wallet,
            amount_minor=2_000,
            currency="CNY",
            provider="simulated",
            provider_token="t",
            idempotency_key="top-2",
            clock=c,
        )
    assert await _balance(db, wallet) == (1_500, 0)
    await check_books(db)


async def test_short_funds_and_limits(db: Database) -> None:
    wallet = await _wallet(db, "d1", 500)
    c = clock()
    with pytest.raises(FailedPrecondition, match="insufficient funds"):
        async with db.transaction() as s:
            await api.place_hold(
                s,
                account_id=wallet,
                amount_minor=501,
                currency="CNY",
                reference="o",
                idempotency_key="h",
                expires_at=c.now() + dt.timedelta(hours=1),
                clock=c,
            )
    with pytest.raises(FailedPrecondition, match="insufficient funds"):
        async with db.transaction() as s:
            platform = await accounts.platform_revenue(s, "CNY", c.now())
            await post_entry(
                s,
                kind=EntryKind.ADJUSTMENT,
                now=c.now(),
                postings=[PostingSpec(wallet, -600), PostingSpec(platform.id, 600)],
            )
    with pytest.raises(InvalidArgument, match="does not balance"):
        async with db.transaction() as s:
            await post_entry(s, kind=EntryKind.ADJUSTMENT, now=c.now(), postings=[PostingSpec(wallet, 5)])
    await check_books(db)


async def test_hold_cannot_be_captured_twice_and_release_is_idempotent(db: Database) -> None:
    wallet = await _wallet(db, "d1", 5_000)
    c = clock()
    async with db.transaction() as s:
        hold = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=2_000,
            currency="CNY",
            reference="o1",
            idempotency_key="h1",
            expires_at=c.now() + dt.timedelta(hours=1),
            clock=c,
        )
        await api.capture_hold(
            s, hold_id=hold.hold_id, amount_minor=2_000, operator_id=OPERATOR, idempotency_key="c1", clock=c
        )
    with pytest.raises(FailedPrecondition, match="captured"):
        async with db.transaction() as s:
            await api.capture_hold(
                s, hold_id=hold.hold_id, amount_minor=10, operator_id=OPERATOR, idempotency_key="c2", clock=c
            )
    async with db.transaction() as s:
        h2 = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=1_000,
            currency="CNY",
            reference="o2",
            idempotency_key="h2",
            expires_at=c.now() + dt.timedelta(hours=1),
            clock=c,
        )
        await api.release_hold(s, hold_id=h2.hold_id, reason="cancelled", clock=c)
        await api.release_hold(s, hold_id=h2.hold_id, reason="again", clock=c)
    assert await _balance(db, wallet) == (3_000, 0)
    await check_books(db)


async def test_holds_expire_with_the_clock(db: Database) -> None:
    wallet = await _wallet(db, "d1", 1_000)
    c = clock()
    async with db.transaction() as s:
        hold = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=1_000,
            currency="CNY",
            reference="o1",
            idempotency_key="h1",
            expires_at=c.now() + dt.timedelta(minutes=30),
            clock=c,
        )
    c.advance(dt.timedelta(minutes=31))
    with pytest.raises(FailedPrecondition, match="expired"):
        async with db.transaction() as s:
            await api.capture_hold(
                s, hold_id=hold.hold_id, amount_minor=100, operator_id=OPERATOR, idempotency_key="c", clock=c
            )
    async with db.transaction() as s:  # placing a new hold sweeps the expired one first
        again = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=1_000,
            currency="CNY",
            reference="o2",
            idempotency_key="h2",
            expires_at=c.now() + dt.timedelta(minutes=30),
            clock=c,
        )
    assert again.state is HoldState.ACTIVE
    await check_books(db)


async def test_idempotency_replay_returns_the_first_result_and_mismatch_is_refused(db: Database) -> None:
    wallet = await _wallet(db, "d1", 5_000)
    c = clock()
    args = dict(
        account_id=wallet,
        amount_minor=700,
        currency="CNY",
        reference="o1",
        idempotency_key="same",
        expires_at=c.now() + dt.timedelta(hours=1),
        clock=c,
    )
    async with db.transaction() as s:
        first = await api.place_hold(s, **args)  # type: ignore[arg-type]
    async with db.transaction() as s:
        second = await api.place_hold(s, **args)  # type: ignore[arg-type]
    assert first.hold_id == second.hold_id
    assert await _balance(db, wallet) == (5_000, 700)
    with pytest.raises(InvalidArgument) as err:
        async with db.transaction() as s:
            await api.place_hold(s, **{**args, "amount_minor": 800})  # type: ignore[arg-type]
    assert err.value.violations[0].field == "idempotency_key"
    async with db.transaction() as s:
        e1 = await api.capture_hold(
            s, hold_id=first.hold_id, amount_minor=600, operator_id=OPERATOR, idempotency_key="cap", clock=c
        )
    async with db.transaction() as s:
        e2 = await api.capture_hold(
            s, hold_id=first.hold_id, amount_minor=600, operator_id=OPERATOR, idempotency_key="cap", clock=c
        )
    assert e1.entry_id == e2.entry_id and e1.postings == e2.postings
    async with db.transaction() as s:
        p1 = await api.top_up(
            s,
            account_id=wallet,
            amount_minor=100,
            currency="CNY",
            provider="simulated",
            provider_token="t",
            idempotency_key="tu",
            clock=c,
        )
        p2 = await api.top_up(
            s,
            account_id=wallet,
            amount_minor=100,
            currency="CNY",
            provider="simulated",
            provider_token="t",
            idempotency_key="tu",
            clock=c,
        )
    assert p1.payment_id == p2.payment_id
    assert await _balance(db, wallet) == (5_000 - 600 + 100, 0)
    await check_books(db)


async def test_refunds_of_an_order_and_of_a_top_up(db: Database) -> None:
    wallet = await _wallet(db, "d1", 10_000)
    c = clock()
    async with db.transaction() as s:
        hold = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=3_000,
            currency="CNY",
            reference="o1",
            idempotency_key="h1",
            expires_at=c.now() + dt.timedelta(hours=1),
            clock=c,
        )
        await api.capture_hold(
            s, hold_id=hold.hold_id, amount_minor=3_000, operator_id=OPERATOR, idempotency_key="c1", clock=c
        )
        r1 = await api.refund(s, order_id="o1", amount_minor=1_001, idempotency_key="r1", clock=c)
    assert r1.amount_minor == 1_001 and r1.entry.amount_on(wallet) == 1_001
    with pytest.raises(FailedPrecondition, match="refundable 1999"):
        async with db.transaction() as s:
            await api.refund(s, order_id="o1", amount_minor=2_000, idempotency_key="r2", clock=c)
    async with db.transaction() as s:
        rest = await api.refund(s, order_id="o1", idempotency_key="r3", clock=c)
    assert rest.amount_minor == 1_999
    assert await _balance(db, wallet) == (10_000, 0)
    async with db.transaction() as s:
        from sqlmodel import select

        from voltcloud.settlement.models import Payment

        top = (await s.exec(select(Payment).where(Payment.account_id == wallet))).first()
        assert top is not None
        back = await api.refund(s, payment_id=top.id, amount_minor=4_000, idempotency_key="r4", clock=c)
    assert back.amount_minor == 4_000
    assert await _balance(db, wallet) == (6_000, 0)
    books = await check_books(db)
    async with db.transaction() as s:
        op = await accounts.operator_payable(s, OPERATOR, "CNY", c.now())
    assert books.get(op.id, 0) == 0  # fully refunded order: the operator keeps nothing


async def test_post_settlement_fleet_uses_its_credit_limit(db: Database) -> None:
    c = clock()
    async with db.transaction() as s:
        fleet = await api.ensure_customer_account(s, owner_kind="fleet", owner_id="fl-1", clock=c)
        await api.set_credit_limit(s, account_id=fleet, credit_limit_minor=50_000)
        hold = await api.place_hold(
            s,
            account_id=fleet,
            amount_minor=40_000,
            currency="CNY",
            reference="o1",
            idempotency_key="h1",
            expires_at=c.now() + dt.timedelta(hours=1),
            clock=c,
        )
        await api.capture_hold(
            s, hold_id=hold.hold_id, amount_minor=35_000, operator_id=OPERATOR, idempotency_key="c1", clock=c
        )
    assert await _balance(db, fleet) == (-35_000, 0)
    with pytest.raises(FailedPrecondition, match="insufficient funds"):
        async with db.transaction() as s:
            await api.place_hold(
                s,
                account_id=fleet,
                amount_minor=15_001,
                currency="CNY",
                reference="o2",
                idempotency_key="h2",
                expires_at=c.now() + dt.timedelta(hours=1),
                clock=c,
            )
    await check_books(db)


async def test_order_holds_take_the_amount_in_one_statement_with_the_same_rules(db: Database) -> None:
    """`hold_on_wallet` / `hold_on_account` (CreateOrder's Core path) refuse what `place_hold` refuses, with the
    same reasons, free expired holds first, and create a missing wallet only when the hold goes through."""
    c = clock()

    async def hold(amount: int, *, owner: str = "d1", account: str = "", currency: str = "CNY") -> api.Hold:
        async with db.transaction() as s:
            at = c.now() + dt.timedelta(minutes=30)
            if account:
                return await api.hold_on_account(
                    s, account_id=account, amount_minor=amount, currency=currency, reference="o", expires_at=at,
                    clock=c,
                )  # fmt: skip
            return await api.hold_on_wallet(
                s, owner_kind="driver", owner_id=owner, amount_minor=amount, currency=currency, reference="o",
                expires_at=at, clock=c,
            )  # fmt: skip

    with pytest.raises(FailedPrecondition, match="insufficient funds"):
        await hold(1, owner="d-new")  # the wallet it created is rolled back with the refusal
    async with db.transaction() as s:
        assert not list(await s.exec(select(LedgerAccount).where(LedgerAccount.owner_id == "d-new")))
    wallet = await _wallet(db, "d1", 1_000)
    first = await hold(600)
    assert (first.account_id, first.amount_minor, first.state) == (wallet, 600, HoldState.ACTIVE)
    assert await _balance(db, wallet) == (1_000, 600)
    with pytest.raises(FailedPrecondition, match="available 400 CNY, hold needs 401"):
        await hold(401)
    await hold(400, account=wallet)
    with pytest.raises(InvalidArgument, match="holds CNY, not EUR"):
        await hold(1, account=wallet, currency="EUR")
    with pytest.raises(NotFound):
        await hold(1, account="acc-missing")
    c.advance(dt.timedelta(minutes=31))  # both holds expired: the next one frees them first
    assert (await hold(1_000)).amount_minor == 1_000
    assert await _balance(db, wallet) == (1_000, 1_000)
    async with db.transaction() as s:
        (await accounts.load(s, wallet)).frozen = True
    with pytest.raises(FailedPrecondition, match="frozen"):
        await hold(1, account=wallet)
    await check_books(db)
