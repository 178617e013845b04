"""Shared helpers of the settlement tests: a migrated database with one operator and one station."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import sqlalchemy as sa
from sqlmodel import select

from voltcloud.platform.clock import FrozenClock
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.settlement.models import JournalEntry, LedgerAccount, LedgerHold, Posting
from voltcloud.settlement.money import AccountKind, EntryKind, HoldState
from voltcloud.stations.models import Operator, Station

T0 = dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)  # 10:00 in Asia/Shanghai, a Tuesday
OPERATOR = "op-1"
STATION = "st-1"


async def migrated(url: str) -> Database:
    await upgrade_database_async(url)
    db = Database(url, pool_size=20)
    async with db.transaction() as session:
        session.add(Operator(id=OPERATOR, name="Op One", created_at=T0))
        await session.flush()
        session.add(
            Station(
                id=STATION,
                operator_id=OPERATOR,
                kind=2,
                name="S1",
                lat=39.9,
                lng=116.4,
                power_cap_w=500_000,
                timezone="Asia/Shanghai",
            )
        )
    return db


def clock() -> FrozenClock:
    return FrozenClock(T0)


async def check_books(db: Database) -> dict[str, int]:
    """Asserts the ledger's invariants; returns the balance per account."""
    async with db.transaction() as session:
        postings = list(await session.exec(select(Posting)))
        accounts = {a.id: a for a in await session.exec(select(LedgerAccount))}
        holds = list(await session.exec(select(LedgerHold)))
        settlements = list(
            await session.exec(select(JournalEntry).where(JournalEntry.kind == int(EntryKind.ORDER_SETTLEMENT)))
        )
    per_entry: dict[tuple[str, str], int] = defaultdict(int)
    per_currency: dict[str, int] = defaultdict(int)
    per_account: dict[str, int] = defaultdict(int)
    for p in postings:
        per_entry[(p.entry_id, p.currency)] += p.amount_minor
        per_currency[p.currency] += p.amount_minor
        per_account[p.account_id] += p.amount_minor
    assert all(v == 0 for v in per_entry.values()), "an entry does not balance"
    assert all(v == 0 for v in per_currency.values()), f"books do not balance: {dict(per_currency)}"
    active: dict[str, int] = defaultdict(int)
    for h in holds:
        if h.state == HoldState.ACTIVE:
            active[h.account_id] += h.amount_minor
    for a in accounts.values():
        if a.tracks_balance:
            assert a.balance_minor == per_account[a.id], f"cached balance of {a.id} drifted"
        assert a.held_minor == active[a.id], f"held of {a.id} != its active holds"
        if a.kind in (AccountKind.CUSTOMER, AccountKind.FLEET):
            assert a.balance_minor - a.held_minor + a.credit_limit_minor >= 0, f"wallet {a.id} below its limit"
            assert a.balance_minor >= -a.credit_limit_minor
    hold_ids = [e.hold_id for e in settlements]
    assert len(hold_ids) == len(set(hold_ids)), "a hold was captured twice"
    captured = {h.id for h in holds if h.state == HoldState.CAPTURED}
    assert captured == {h for h in hold_ids if h}
    return dict(per_account)


async def count(db: Database, table: type, *where: sa.ColumnElement[bool]) -> int:
    async with db.transaction() as session:
        return int((await session.exec(select(sa.func.count()).select_from(table).where(*where))).one())
