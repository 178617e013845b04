"""Capital-flow tracing: which entries moved which money from where to where, for an order, a payment or an
account. Each entry's postings are paired greedily (debits to credits, in posting order) into flows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.errors import InvalidArgument, NotFound
from voltcloud.platform.paging import Page
from voltcloud.settlement.ledger import JournalEntryRef, load_entries
from voltcloud.settlement.models import JournalEntry, Payment, Posting
from voltcloud.settlement.money import EntryKind


@dataclass(frozen=True)
class Flow:
    entry_id: str
    kind: EntryKind
    from_account_id: str
    to_account_id: str
    amount_minor: int
    currency: str
    posted_at: dt.datetime | None
    order_id: str
    payment_id: str


def flows_of(entry: JournalEntryRef) -> list[Flow]:
    debits = [(p.account_id, p.currency) for p in entry.postings if p.amount_minor < 0]
    left = [-p.amount_minor for p in entry.postings if p.amount_minor < 0]
    out: list[Flow] = []
    for credit in (p for p in entry.postings if p.amount_minor > 0):
        need = credit.amount_minor
        for i, (debit_account, currency) in enumerate(debits):
            if need == 0:
                break
            if left[i] == 0 or currency != credit.currency:
                continue
            moved = min(left[i], need)
            left[i] -= moved
            need -= moved
            out.append(
                Flow(
                    entry.entry_id,
                    entry.kind,
                    debit_account,
                    credit.account_id,
                    moved,
                    currency,
                    entry.posted_at,
                    entry.order_id or "",
                    entry.payment_id or "",
                )
            )
    return out


async def trace(
    session: AsyncSession,
    *,
    order_id: str = "",
    payment_id: str = "",
    account_id: str = "",
    window: tuple[dt.datetime | None, dt.datetime | None] = (None, None),
    page: Page,
) -> tuple[list[Flow], str | None, int]:
    """Flows of one page of entries (ordered by entry id): the flows, the last entry id, the entry count."""
    query = select(JournalEntry.id).order_by(col(JournalEntry.id)).limit(page.size)
    if order_id:
        query = query.where(JournalEntry.order_id == order_id)
    elif payment_id:
        if await session.get(Payment, payment_id) is None:
            raise NotFound(f"payment {payment_id} not found")
        query = query.where(JournalEntry.payment_id == payment_id)
    elif account_id:
        query = query.where(col(JournalEntry.id).in_(select(Posting.entry_id).where(Posting.account_id == account_id)))
        if window[0] is not None:
            query = query.where(col(JournalEntry.posted_at) >= window[0])
        if window[1] is not None:
            query = query.where(col(JournalEntry.posted_at) < window[1])
    else:
        raise InvalidArgument.for_field("subject", "give one of order_id, payment_id or account_id")
    if page.after is not None:
        query = query.where(col(JournalEntry.id) > page.after)
    ids = list(await session.exec(query))
    flows = [f for entry in await load_entries(session, ids) for f in flows_of(entry)]
    return flows, (ids[-1] if ids else None), len(ids)
