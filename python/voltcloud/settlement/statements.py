"""Statements of a set of accounts over a period, straight from the journal: the postings, the opening and
closing balances, money in and out, and what was paid for orders (the kinds a bill lists, less coupons: a
coupon is the platform's money, not the holder's). FleetService asks for its fleet's and sub-fleets' accounts
through its `Ledger` port (`settlement.api.account_statement`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import AccountStatement, StatementEntry
from voltcloud.settlement.models import JournalEntry, LedgerAccount, Posting
from voltcloud.settlement.money import EntryKind

ORDER_KINDS = (EntryKind.ORDER_SETTLEMENT, EntryKind.REFUND, EntryKind.CANCELLATION_FEE)


def _postings(account_ids: Sequence[str]) -> Any:
    return (
        select(sa.func.coalesce(sa.func.sum(col(Posting.amount_minor)), 0))
        .join(JournalEntry, col(JournalEntry.id) == col(Posting.entry_id))
        .where(col(Posting.account_id).in_(list(account_ids)))
    )


async def _sum(session: AsyncSession, query: Any) -> int:
    return int((await session.exec(query)).one())


async def account_statement(
    session: AsyncSession,
    *,
    account_ids: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    after: int | None,
    limit: int,
) -> AccountStatement:
    currencies = await session.exec(select(LedgerAccount.currency).where(col(LedgerAccount.id).in_(list(account_ids))))
    currency = next(iter(currencies), "CNY")
    before = col(JournalEntry.posted_at) < start
    within = sa.and_(col(JournalEntry.posted_at) >= start, col(JournalEntry.posted_at) < end)
    opening = await _sum(session, _postings(account_ids).where(before))
    closing = await _sum(session, _postings(account_ids).where(col(JournalEntry.posted_at) < end))
    credits = await _sum(session, _postings(account_ids).where(within, col(Posting.amount_minor) > 0))
    balance = opening
    if after is not None:
        balance += await _sum(session, _postings(account_ids).where(within, col(Posting.id) <= after))
    return AccountStatement(
        currency=currency,
        opening_minor=opening,
        closing_minor=closing,
        credits_minor=credits,
        debits_minor=credits - (closing - opening),
        order_spend=await _order_spend(session, account_ids, within),
        entries=await _entries(session, account_ids, within, after, limit, balance),
    )


async def _order_spend(
    session: AsyncSession, account_ids: Sequence[str], within: sa.ColumnElement[bool]
) -> dict[str, tuple[int, int]]:
    query = (
        select(
            col(Posting.account_id),
            sa.func.count(sa.distinct(col(JournalEntry.order_id))),
            sa.func.sum(col(Posting.amount_minor)),
        )
        .join(JournalEntry, col(JournalEntry.id) == col(Posting.entry_id))
        .where(col(Posting.account_id).in_(list(account_ids)), within)
        .where(col(JournalEntry.kind).in_([int(k) for k in ORDER_KINDS]))
        .group_by(col(Posting.account_id))
    )
    return {account: (int(count), -int(total)) for account, count, total in await session.exec(query)}


async def _entries(
    session: AsyncSession,
    account_ids: Sequence[str],
    within: sa.ColumnElement[bool],
    after: int | None,
    limit: int,
    balance: int,
) -> list[StatementEntry]:
    query = (
        select(JournalEntry, Posting)
        .join(Posting, col(Posting.entry_id) == col(JournalEntry.id))
        .where(col(Posting.account_id).in_(list(account_ids)), within)
        .order_by(col(Posting.id))
        .limit(limit)
    )
    if after is not None:
        query = query.where(col(Posting.id) > after)
    rows: list[StatementEntry] = []
    for entry, posting in await session.exec(query):
        balance += posting.amount_minor
        rows.append(
            StatementEntry(
                posting_id=posting.id or 0,
                entry_id=entry.id,
                posted_at=entry.posted_at,
                kind=EntryKind(entry.kind).name.lower(),
                description=entry.description,
                # The journal keeps the hold's reference ("order:<id>"); a statement names the order itself.
                order_id=(entry.order_id or "").removeprefix("order:"),
                account_id=posting.account_id,
                amount_minor=posting.amount_minor,
                balance_after_minor=balance,
            )
        )
    return rows
