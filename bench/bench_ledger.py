#!/usr/bin/env python3
"""Ledger throughput: journal postings per second through `ledger.post_entry`.

Each entry is a capture-shaped settlement (wallet debit, operator credit, platform fee: 3 postings) in its own
transaction, so the figure includes locking the wallet and operator rows, the balance checks, the inserts and
the commit. Workers post concurrently, each on its own wallet and operator (no shared hot row except the
platform revenue account, which is never locked). Prints the median of several runs.

`--baseline` also measures the pre-2026-11-21 ORM implementation of `post_entry` (kept below as
`orm_post_entry`), alternating run by run with the current Core-SQL path on the same database, so both medians
come from the same conditions. `--profile` prints a cProfile of one run of the current path.

    python bench/bench_ledger.py                                   # SQLite in a temp dir
    python bench/bench_ledger.py --baseline                        # ... and the old ORM path, interleaved
    python bench/bench_ledger.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.clock import SystemClock
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.settlement import accounts
from voltcloud.settlement.ledger import PostingSpec, check_limit, lock_accounts, post_entry
from voltcloud.settlement.models import JournalEntry, LedgerAccount, Posting
from voltcloud.settlement.money import AccountKind, EntryKind

POSTINGS_PER_ENTRY = 3
Poster = Callable[..., Awaitable[object]]


async def orm_post_entry(
    session: AsyncSession, *, kind: EntryKind, postings: Sequence[PostingSpec], now: dt.datetime
) -> str:
    """The baseline: `ledger.post_entry` as it was before the Core-SQL rewrite (ORM objects, SELECT ... FOR
    NO KEY UPDATE of the tracked accounts, ORM flush of the entry and the balances, Core insert of postings)."""
    legs = [p for p in postings if p.amount_minor != 0]
    ids = {p.account_id for p in legs}
    accounts_: dict[str, LedgerAccount] = {}
    plain = list(await session.exec(select(LedgerAccount).where(col(LedgerAccount.id).in_(sorted(ids)))))
    accounts_.update({a.id: a for a in plain if not a.tracks_balance})
    accounts_.update(await lock_accounts(session, [a.id for a in plain if a.tracks_balance]))
    if ids - accounts_.keys():
        raise NotFound("account not found")
    sums: dict[str, int] = defaultdict(int)
    deltas: dict[str, int] = defaultdict(int)
    for p in legs:
        sums[accounts_[p.account_id].currency] += p.amount_minor
        deltas[p.account_id] += p.amount_minor
    if any(sums.values()):
        raise InvalidArgument.for_field("postings", "entry does not balance")
    for account_id, delta in deltas.items():
        account = accounts_[account_id]
        if account.frozen and delta < 0:
            raise FailedPrecondition("frozen")
        if not account.tracks_balance:
            continue
        account.balance_minor += delta
        account.version += 1
        if delta < 0:
            check_limit(account, -delta)
        session.add(account)
    entry = JournalEntry(id=new_id("je"), kind=int(kind), posted_at=now, actor_subject="system")
    session.add(entry)
    await session.flush()
    rows = [
        {
            "entry_id": entry.id,
            "account_id": p.account_id,
            "amount_minor": p.amount_minor,
            "currency": accounts_[p.account_id].currency,
            "memo": p.memo,
        }
        for p in legs
    ]
    connection = await session.connection()
    await connection.execute(sa.insert(Posting), rows)
    return entry.id


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


async def _setup(db: Database, workers: int) -> list[tuple[str, str, str]]:
    clock = SystemClock()
    out = []
    async with db.transaction() as s:
        platform = await accounts.platform_revenue(s, "CNY", clock.now())
        for w in range(workers):
            wallet = await accounts.ensure_account(
                s,
                kind=AccountKind.CUSTOMER,
                owner_kind="driver",
                owner_id=f"bench-{w}",
                currency="CNY",
                now=clock.now(),
                credit_limit_minor=10**15,
            )
            operator = await accounts.operator_payable(s, f"bench-op-{w}", "CNY", clock.now())
            out.append((wallet.id, operator.id, platform.id))
    return out


async def _run(
    db: Database, accounts_: list[tuple[str, str, str]], entries_per_worker: int, poster: Poster = post_entry
) -> float:
    clock = SystemClock()

    async def worker(wallet: str, operator: str, platform: str) -> None:
        for i in range(entries_per_worker):
            amount = 1_000 + i
            async with db.transaction() as s:
                await poster(
                    s,
                    kind=EntryKind.ORDER_SETTLEMENT,
                    postings=[
                        PostingSpec(wallet, -amount, "order"),
                        PostingSpec(operator, amount - 50, "revenue"),
                        PostingSpec(platform, 50, "platform_fee"),
                    ],
                    now=clock.now(),
                )

    start = time.perf_counter()
    await asyncio.gather(*(worker(*a) for a in accounts_))
    elapsed = time.perf_counter() - start
    return len(accounts_) * entries_per_worker * POSTINGS_PER_ENTRY / elapsed


def _summary(label: str, rates: list[float]) -> str:
    return f"{label}: {statistics.median(rates):,.0f} postings/s median (min {min(rates):,.0f}, max {max(rates):,.0f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default="", help="SQLAlchemy async URL; default a temp SQLite file")
    parser.add_argument("--workers", type=int, default=0, help="concurrent workers (default 1 SQLite, 8 PostgreSQL)")
    parser.add_argument("--entries", type=int, default=300, help="entries per worker per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", action="store_true", help="also measure the old ORM path, interleaved")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run of the current path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        postgres = url.startswith("postgresql")
        workers = args.workers or (8 if postgres else 1)
        if postgres:
            await _reset_postgres(url)
        await upgrade_database_async(url)
        db = Database(url, pool_size=max(workers, 5))
        core: list[float] = []
        orm: list[float] = []
        try:
            accounts_ = await _setup(db, workers)
            await _run(db, accounts_, 20)  # warm-up
            if args.baseline:
                await _run(db, accounts_, 20, orm_post_entry)
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await _run(db, accounts_, args.entries)
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            for _ in range(args.runs):
                core.append(await _run(db, accounts_, args.entries))
                if args.baseline:
                    orm.append(await _run(db, accounts_, args.entries, orm_post_entry))
        finally:
            await db.dispose()
    backend = "PostgreSQL" if postgres else "SQLite"
    shape = f"{args.runs} runs, {workers} workers x {args.entries} entries x {POSTINGS_PER_ENTRY} postings"
    print(f"{backend} ({shape})")
    print("  " + _summary("core SQL post_entry", core))
    if orm:
        print("  " + _summary("baseline ORM path  ", orm))
        print(f"  speed-up of the medians: x{statistics.median(core) / statistics.median(orm):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
