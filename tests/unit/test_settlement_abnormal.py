"""Abnormal order detection and difference refunds, manual verification of offline payments, the settlement
scheduler's jobs and the Core-SQL posting path, on a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from tests.settlement_support import OPERATOR, STATION, T0, check_books, clock, count, migrated
from voltcloud.platform.clock import FrozenClock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.settlement import accounts, api, ledger, payments, scheduler
from voltcloud.settlement.abnormal import AbnormalFlag, SessionFacts
from voltcloud.settlement.ledger import Actor, PostingSpec
from voltcloud.settlement.models import JournalEntry, LedgerAccount, LedgerHold, Payout
from voltcloud.settlement.money import AccountKind, EntryKind, HoldState, PaymentState
from voltcloud.stations.models import Operator, Station

PER_KWH = 180  # the built-in default tariff: 1.0000 + 0.8000 CNY/kWh = 180 fen/kWh
ADMIN = Actor("admin", 1)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated(database_url)
    yield database
    await database.dispose()


async def _wallet(db: Database, c: FrozenClock, driver: str = "drv-1", funds: int = 1_000_000) -> str:
    async with db.transaction() as s:
        wallet = await api.ensure_customer_account(s, owner_kind="driver", owner_id=driver, clock=c)
        if funds:
            await api.top_up(
                s,
                account_id=wallet,
                amount_minor=funds,
                currency="CNY",
                provider="simulated",
                provider_token="tok",
                idempotency_key=f"fund-{driver}",
                clock=c,
            )
    return wallet


async def _settle(db: Database, c: FrozenClock, wallet: str, order: str, amount: int, operator: str = OPERATOR) -> None:
    async with db.transaction() as s:
        hold = await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=amount,
            currency="CNY",
            reference=order,
            idempotency_key=f"h-{order}",
            expires_at=c.now() + dt.timedelta(hours=3),
            clock=c,
        )
        await api.capture_hold(
            s, hold_id=hold.hold_id, amount_minor=amount, operator_id=operator, idempotency_key=f"c-{order}", clock=c
        )


def _facts(order: str, *, energy_wh: int, minutes: int, amount: int, **kw: object) -> SessionFacts:
    values: dict[str, object] = {
        "order_id": order,
        "station_id": STATION,
        "started_at": T0,
        "ended_at": T0 + dt.timedelta(minutes=minutes),
        "energy_wh": energy_wh,
        "amount_minor": amount,
        "max_power_w": 60_000,
        "capacity_wh": 75_000,
        "rate_model_id": "builtin-default",
        "rate_model_version": 0,
    }
    values.update(kw)
    return SessionFacts(**values)  # type: ignore[arg-type]


async def _detect(db: Database, facts: SessionFacts, c: FrozenClock) -> api.AbnormalReport:
    async with db.transaction() as s:
        return await api.detect_abnormal(s, facts, clock=c)


async def _refund(db: Database, order: str, key: str, c: FrozenClock) -> api.DifferenceRefund:
    async with db.transaction() as s:
        return await api.refund_difference(s, order_id=order, idempotency_key=key, clock=c, actor=ADMIN)


async def test_normal_order_has_no_flags_and_nothing_to_refund(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c)
    await _settle(db, c, wallet, "o1", 20 * PER_KWH)
    report = await _detect(db, _facts("o1", energy_wh=20_000, minutes=60, amount=20 * PER_KWH), c)
    assert report.flags == () and report.fair_minor == report.expected_minor == 3_600
    assert (await _refund(db, "o1", "r1", c)).amount_minor == 0
    assert await count(db, JournalEntry, col(JournalEntry.kind) == int(EntryKind.REFUND)) == 0


async def test_energy_beyond_power_is_refunded_down_to_the_possible_once(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c)
    await _settle(db, c, wallet, "o2", 3_600)
    # 20 kWh in 10 minutes from a 60 kW charger: at most 10 kWh are possible.
    report = await _detect(db, _facts("o2", energy_wh=20_000, minutes=10, amount=3_600), c)
    assert report.flags == (AbnormalFlag.ENERGY_EXCEEDS_POWER,)
    assert (report.expected_minor, report.fair_minor, report.overcharged_minor) == (3_600, 1_800, 1_800)

    first = await _refund(db, "o2", "r1", c)
    replay = await _refund(db, "o2", "r1", c)
    again = await _refund(db, "o2", "r2", c)
    assert first.amount_minor == 1_800 and first.entry is not None
    assert replay.entry is not None and replay.entry.entry_id == first.entry.entry_id and replay.amount_minor == 1_800
    assert again.amount_minor == 0 and again.entry is None
    assert first.entry.kind is EntryKind.REFUND and first.entry.reverses_entry_id
    assert first.entry.amount_on(wallet) == 1_800
    books = await check_books(db)
    assert books[wallet] == 1_000_000 - 3_600 + 1_800


async def test_capacity_amount_mismatch_and_ledger_mismatch(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c)
    await _settle(db, c, wallet, "o3", 4_000)
    report = await _detect(db, _facts("o3", energy_wh=20_000, minutes=60, amount=4_000), c)
    assert report.flags == (AbnormalFlag.AMOUNT_MISMATCH,) and report.fair_minor == 3_600
    assert (await _refund(db, "o3", "r3", c)).amount_minor == 400

    await _settle(db, c, wallet, "o4", 80 * PER_KWH)
    report = await _detect(db, _facts("o4", energy_wh=80_000, minutes=120, amount=80 * PER_KWH), c)
    assert report.flags == (AbnormalFlag.ENERGY_EXCEEDS_CAPACITY,)
    assert report.fair_minor == 75 * PER_KWH
    assert (await _refund(db, "o4", "r4", c)).amount_minor == 5 * PER_KWH

    # The order says 3 600, its settlement captured 3 000: the ledger disagrees with the order.
    await _settle(db, c, wallet, "o5", 3_000)
    report = await _detect(db, _facts("o5", energy_wh=20_000, minutes=60, amount=3_600), c)
    assert report.flags == (AbnormalFlag.LEDGER_MISMATCH,)
    assert (await _refund(db, "o5", "r5", c)).amount_minor == 0  # undercharged: reported, never charged
    await check_books(db)


async def test_duplicate_station_session_is_refunded_whole_and_overlaps_are_flagged(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c)
    await _settle(db, c, wallet, "first", 3_600)
    await _settle(db, c, wallet, "second", 3_600)
    same = {"external_session_id": "tx-42", "connector_id": "c-1", "vehicle_id": "v-1"}
    original = await _detect(db, _facts("first", energy_wh=20_000, minutes=60, amount=3_600, **same), c)
    duplicate = await _detect(db, _facts("second", energy_wh=20_000, minutes=60, amount=3_600, **same), c)
    assert original.flags == ()
    assert duplicate.flags == (AbnormalFlag.DUPLICATE_SESSION,) and duplicate.fair_minor == 0
    assert duplicate.related_order_ids == ("first",)
    # Re-checking the original (it settled first) still finds it normal, only related.
    recheck = await _detect(db, _facts("first", energy_wh=20_000, minutes=60, amount=3_600, **same), c)
    assert recheck.flags == () and recheck.related_order_ids == ("second",)
    assert (await _refund(db, "second", "dup", c)).amount_minor == 3_600
    assert (await _refund(db, "first", "dup-first", c)).amount_minor == 0

    await _settle(db, c, wallet, "third", 1_800)
    overlap = await _detect(
        db,
        _facts(
            "third",
            energy_wh=10_000,
            minutes=30,
            amount=1_800,
            vehicle_id="v-1",
            external_session_id="tx-43",
            started_at=T0 + dt.timedelta(minutes=30),
            ended_at=T0 + dt.timedelta(minutes=60),
        ),
        c,
    )
    assert overlap.flags == (AbnormalFlag.OVERLAPPING_SESSION,)
    assert set(overlap.related_order_ids) == {"first", "second"}
    assert (await _refund(db, "third", "ov", c)).amount_minor == 0  # for review, not automatic
    await check_books(db)


async def test_refund_difference_needs_a_check_and_validates_facts(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c)
    await _settle(db, c, wallet, "o9", 3_600)
    with pytest.raises(FailedPrecondition, match="not been checked"):
        await _refund(db, "o9", "k", c)
    with pytest.raises(InvalidArgument):
        await _detect(db, _facts("o9", energy_wh=-1, minutes=60, amount=3_600), c)
    with pytest.raises(InvalidArgument):
        await _detect(db, _facts("o9", energy_wh=1, minutes=60, amount=1, ended_at=T0 - dt.timedelta(1)), c)


async def test_concurrent_difference_refunds_refund_once(db: Database, database_url: str) -> None:
    c = clock()
    wallet = await _wallet(db, c)
    await _settle(db, c, wallet, "oc", 3_600)
    await _detect(db, _facts("oc", energy_wh=20_000, minutes=10, amount=3_600), c)

    async def attempt(key: str) -> int:
        try:
            return (await _refund(db, "oc", key, c)).amount_minor
        except Aborted:
            return -1

    results = await asyncio.gather(*(attempt(f"k{i}") for i in range(6)))
    assert sorted(r for r in results if r > 0) == [1_800]
    books = await check_books(db)
    assert books[wallet] == 1_000_000 - 3_600 + 1_800


# --- offline payments -------------------------------------------------------------------------------------


async def test_offline_transfer_is_pending_until_someone_else_verifies_it_once(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c, funds=0)
    driver = Actor("drv-1", 4)
    async with db.transaction() as s:
        with pytest.raises(InvalidArgument):
            await api.top_up(
                s,
                account_id=wallet,
                amount_minor=50_000,
                currency="CNY",
                provider="offline",
                provider_token="",
                idempotency_key="no-ref",
                clock=c,
                actor=driver,
            )
    async with db.transaction() as s:
        pending = await api.top_up(
            s,
            account_id=wallet,
            amount_minor=50_000,
            currency="CNY",
            provider="offline",
            provider_token="BANK-2026-0001",
            idempotency_key="off-1",
            clock=c,
            actor=driver,
        )
    assert pending.state is PaymentState.PENDING and pending.entry_id is None
    assert pending.provider_reference == "BANK-2026-0001"
    assert (await check_books(db)).get(wallet, 0) == 0

    async with db.transaction() as s:
        with pytest.raises(FailedPrecondition, match="someone else"):
            await api.verify_offline_payment(s, payment_id=pending.payment_id, idempotency_key="v0", actor=driver)
    async with db.transaction() as s:
        done = await api.verify_offline_payment(s, payment_id=pending.payment_id, idempotency_key="v1", actor=ADMIN)
    async with db.transaction() as s:
        replay = await api.verify_offline_payment(s, payment_id=pending.payment_id, idempotency_key="v1", actor=ADMIN)
    async with db.transaction() as s:
        with pytest.raises(FailedPrecondition, match="already verified by admin"):
            await api.verify_offline_payment(s, payment_id=pending.payment_id, idempotency_key="v2", actor=ADMIN)
    assert done.state is PaymentState.SUCCEEDED and done.entry_id and replay.entry_id == done.entry_id
    books = await check_books(db)
    assert books[wallet] == 50_000
    async with db.transaction() as s:
        clearing = await accounts.provider_clearing(s, "offline", "CNY", c.now())
        entry = await ledger.load_entry(s, done.entry_id or "")
    assert books[clearing.id] == -50_000 and entry.kind is EntryKind.TOP_UP

    async with db.transaction() as s:
        other = await api.top_up(
            s,
            account_id=wallet,
            amount_minor=9_900,
            currency="CNY",
            provider="offline",
            provider_token="BANK-2026-0002",
            idempotency_key="off-2",
            clock=c,
            actor=driver,
        )
        rejected = await api.verify_offline_payment(
            s, payment_id=other.payment_id, approve=False, note="never arrived", idempotency_key="v3", actor=ADMIN
        )
        simulated = await payments.list_pending_offline(s, account_ids=[wallet], limit=10)
    assert rejected.state is PaymentState.FAILED and rejected.entry_id is None and simulated == []
    async with db.transaction() as s:
        with pytest.raises(FailedPrecondition, match="already verified"):
            await api.verify_offline_payment(s, payment_id=other.payment_id, idempotency_key="v4", actor=ADMIN)
        with pytest.raises(NotFound):
            await api.verify_offline_payment(s, payment_id="pay-missing", idempotency_key="v5", actor=ADMIN)
    assert (await check_books(db))[wallet] == 50_000


async def test_concurrent_verifications_credit_once(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c, funds=0)
    async with db.transaction() as s:
        pending = await api.top_up(
            s,
            account_id=wallet,
            amount_minor=12_345,
            currency="CNY",
            provider="offline",
            provider_token="BANK-X",
            idempotency_key="off",
            clock=c,
            actor=Actor("drv-1", 4),
        )

    async def verify(i: int) -> str:
        try:
            async with db.transaction() as s:
                await api.verify_offline_payment(
                    s, payment_id=pending.payment_id, idempotency_key=f"v{i}", actor=Actor(f"admin-{i}", 1)
                )
            return "ok"
        except (FailedPrecondition, Aborted):
            return "refused"

    outcomes = await asyncio.gather(*(verify(i) for i in range(5)))
    assert outcomes.count("ok") == 1
    assert (await check_books(db))[wallet] == 12_345


# --- scheduler jobs ---------------------------------------------------------------------------------------


async def test_scheduler_jobs_expire_pay_out_and_bill_in_local_time(db: Database) -> None:
    c = clock()
    async with db.transaction() as s:
        s.add(Operator(id="op-berlin", name="Berlin", created_at=T0))
        await s.flush()
        s.add(
            Station(
                id="st-berlin",
                operator_id="op-berlin",
                kind=2,
                name="B",
                lat=52.5,
                lng=13.4,
                power_cap_w=1,
                timezone="Europe/Berlin",
            )
        )
    wallet = await _wallet(db, c)
    await _settle(db, c, wallet, "s1", 10_000)
    await _settle(db, c, wallet, "s2", 5_000, operator="op-berlin")
    async with db.transaction() as s:
        await api.place_hold(
            s,
            account_id=wallet,
            amount_minor=777,
            currency="CNY",
            reference="late",
            idempotency_key="h-late",
            expires_at=c.now() + dt.timedelta(minutes=30),
            clock=c,
        )
    assert await scheduler.expire_holds(db, clock=c) == 0
    c.advance(dt.timedelta(hours=1))
    assert await scheduler.expire_holds(db, clock=c) == 1
    assert await count(db, LedgerHold, col(LedgerHold.state) == int(HoldState.EXPIRED)) == 1

    assert await scheduler.run_daily_payouts(db, clock=c) == 0  # T+0: nothing is due
    c.advance(dt.timedelta(days=3))
    assert await scheduler.run_daily_payouts(db, clock=c) == 2
    await scheduler.run_daily_payouts(db, clock=c)  # same local day: the same batch, replayed
    assert await count(db, Payout) == 2

    # 2026-03-31 23:59 in Shanghai: February is billed (nothing active), March not yet.
    c = FrozenClock(dt.datetime(2026, 3, 31, 15, 59, tzinfo=dt.UTC))
    done: set[str] = set()
    assert await scheduler.run_monthly_bills(db, clock=c, done=done) == 0
    # 00:00 on 1 April in Shanghai: the driver and the Shanghai operator; Berlin is still at 18:00 on 31 March.
    c.advance(dt.timedelta(minutes=1))
    assert await scheduler.run_monthly_bills(db, clock=c, done=done) == 2
    assert await scheduler.run_monthly_bills(db, clock=c, done=done) == 0  # remembered
    assert await scheduler.run_monthly_bills(db, clock=c) == 2  # a restart replays the same bills
    c = FrozenClock(dt.datetime(2026, 3, 31, 22, 0, tzinfo=dt.UTC))  # 00:00 on 1 April in Berlin (CEST)
    assert await scheduler.run_monthly_bills(db, clock=c, done=done) == 1
    async with db.transaction() as s:
        bills = list(await s.exec(select(sa.func.count()).select_from(sa.table("bill"))))
    assert bills == [3]
    await check_books(db)


async def test_scheduler_task_ticks_at_its_interval_and_stops(db: Database) -> None:
    c = clock()
    off = scheduler.SettlementScheduler(db, interval_s=0, clock=c)
    off.start()
    assert not off.running
    task = scheduler.SettlementScheduler(db, interval_s=0.05, clock=c)
    task.start()
    assert task.running
    for _ in range(100):
        if task.ticks >= 2:
            break
        await asyncio.sleep(0.05)
    await task.stop()
    assert task.ticks >= 2 and not task.running


# --- the Core-SQL posting path ----------------------------------------------------------------------------


async def test_guarded_update_refuses_overdraft_and_frozen_and_syncs_loaded_accounts(db: Database) -> None:
    c = clock()
    wallet = await _wallet(db, c, funds=1_000)
    async with db.transaction() as s:
        platform = await accounts.platform_revenue(s, "CNY", c.now())
        loaded = await accounts.load(s, wallet)
        entry = await ledger.post_entry(
            s,
            kind=EntryKind.ADJUSTMENT,
            postings=[PostingSpec(wallet, -400), PostingSpec(platform.id, 400)],
            now=c.now(),
        )
        # The copy loaded before the Core UPDATE shows the new balance and is not dirty.
        assert loaded.balance_minor == 600 and loaded not in s.dirty
        assert entry.amount_on(wallet) == -400
    with pytest.raises(FailedPrecondition, match=r"insufficient funds on account .*: available 600 CNY, needed 601"):
        async with db.transaction() as s:
            await ledger.post_entry(
                s,
                kind=EntryKind.ADJUSTMENT,
                postings=[PostingSpec(platform.id, 601), PostingSpec(wallet, -601)],
                now=c.now(),
            )
    for frozen in (wallet, platform.id):
        async with db.transaction() as s:
            await s.exec(sa.update(LedgerAccount).where(col(LedgerAccount.id) == frozen).values(frozen=True))
        with pytest.raises(FailedPrecondition, match="is frozen"):
            async with db.transaction() as s:
                await ledger.post_entry(
                    s,
                    kind=EntryKind.ADJUSTMENT,
                    postings=[
                        PostingSpec(wallet, 1 if frozen != wallet else -1),
                        PostingSpec(platform.id, -1 if frozen != wallet else 1),
                    ],
                    now=c.now(),
                )
        async with db.transaction() as s:
            await s.exec(sa.update(LedgerAccount).where(col(LedgerAccount.id) == frozen).values(frozen=False))
    with pytest.raises(NotFound):
        async with db.transaction() as s:
            await ledger.post_entry(
                s,
                kind=EntryKind.ADJUSTMENT,
                postings=[PostingSpec("acc-nope", 1), PostingSpec(wallet, -1)],
                now=c.now(),
            )
    books = await check_books(db)
    assert books[wallet] == 600
    async with db.transaction() as s:
        assert (await s.get(LedgerAccount, wallet)).kind == AccountKind.CUSTOMER  # type: ignore[union-attr]
