"""Bills: what an account was charged (and refunded, and discounted) over a period or for one order.

Amounts are from the account holder's side: a line is what the holder paid (-posting), so refunds are negative
lines and coupon credits are the discount. A customer's arrears postings belong to its bill. Real-time
accounts get PAID bills (already paid as they went); post-settlement fleets (credit limit > 0) get ISSUED
bills due 15 days after the period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.settlement import accounts
from voltcloud.settlement.holds import SYSTEM_CLOCK
from voltcloud.settlement.models import Bill, BillLine, JournalEntry, LedgerAccount, Posting
from voltcloud.settlement.money import AccountKind, BillState, EntryKind

DUE_AFTER = dt.timedelta(days=15)
BILLED_KINDS = (EntryKind.ORDER_SETTLEMENT, EntryKind.REFUND, EntryKind.COUPON, EntryKind.CANCELLATION_FEE)


@dataclass(frozen=True)
class BillView:
    bill: Bill
    lines: tuple[BillLine, ...]


async def _view(session: AsyncSession, bill: Bill) -> BillView:
    lines = await session.exec(select(BillLine).where(BillLine.bill_id == bill.id).order_by(col(BillLine.line_no)))
    return BillView(bill, tuple(lines))


async def get_bill(session: AsyncSession, bill_id: str) -> BillView:
    bill = await session.get(Bill, bill_id)
    if bill is None:
        raise NotFound(f"bill {bill_id} not found")
    return await _view(session, bill)


async def visible_bill(session: AsyncSession, principal: Principal, bill_id: str) -> BillView:
    """The bill if the caller sees its account; NOT_FOUND otherwise, so bill ids cannot be probed."""
    if not bill_id:
        raise InvalidArgument.for_field("bill_id", "is required")
    view = await get_bill(session, bill_id)
    if not accounts.can_see(principal, await accounts.load(session, view.bill.account_id)):
        raise NotFound(f"bill {bill_id} not found")
    return view


async def generate_bill(
    session: AsyncSession,
    *,
    account_id: str,
    period_start: dt.datetime | None,
    period_end: dt.datetime | None,
    order_id: str = "",
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
) -> BillView:
    now = clock.now()
    if not order_id and (period_start is None or period_end is None or period_end <= period_start):
        raise InvalidArgument.for_field("period", "a period with start < end is required unless order_id is set")
    request = {"account": account_id, "start": period_start, "end": period_end, "order": order_id}
    claim = await idempotency.claim(session, "generate_bill", idempotency_key, request, now=now)
    if claim.is_replay:
        return await get_bill(session, claim.replay_of or "")
    account = await accounts.load(session, account_id)
    billed = [account.id]
    arrears = await accounts.find_arrears(session, account)
    if arrears is not None:
        billed.append(arrears.id)
    query = (
        select(JournalEntry, Posting)
        .join(Posting, col(Posting.entry_id) == col(JournalEntry.id))
        .where(col(Posting.account_id).in_(billed), col(JournalEntry.kind).in_([int(k) for k in BILLED_KINDS]))
        .order_by(col(JournalEntry.posted_at), col(JournalEntry.id), col(Posting.id))
    )
    if order_id:
        query = query.where(JournalEntry.order_id == order_id)
    else:
        query = query.where(col(JournalEntry.posted_at) >= period_start, col(JournalEntry.posted_at) < period_end)
    bill = Bill(
        id=new_id("bill"),
        account_id=account.id,
        currency=account.currency,
        period_start=period_start or now,
        period_end=period_end or now,
        order_id=order_id,
        state=int(BillState.PAID),
        issued_at=now,
    )
    session.add(bill)
    await session.flush()
    lines: list[BillLine] = []
    subtotal = discount = 0
    for entry, posting in await session.exec(query):
        if entry.kind == EntryKind.COUPON:
            discount += posting.amount_minor
            continue
        amount = -posting.amount_minor
        subtotal += amount
        lines.append(
            BillLine(
                bill_id=bill.id,
                line_no=len(lines) + 1,
                order_id=entry.order_id or "",
                description=f"{EntryKind(entry.kind).name.lower()}: {entry.description}"[:300],
                label=posting.memo[:40],
                quantity=1,
                amount_minor=amount,
                entry_id=entry.id,
            )
        )
    bill.subtotal_minor = subtotal
    bill.discount_minor = discount
    bill.total_minor = subtotal - discount
    if account.kind == AccountKind.FLEET and account.credit_limit_minor > 0 and bill.total_minor > 0:
        bill.state = int(BillState.ISSUED)
        bill.due_at = (period_end or now) + DUE_AFTER
    session.add_all([bill, *lines])
    await session.flush()
    await idempotency.complete(session, claim, bill.id)
    return BillView(bill, tuple(lines))


def month_window(year: int, month: int, tz: str = "Asia/Shanghai") -> tuple[dt.datetime, dt.datetime]:
    """A local calendar month as a UTC half-open window."""
    zone = ZoneInfo(tz)
    start = dt.datetime(year, month, 1, tzinfo=zone)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


async def generate_monthly_bills(
    session: AsyncSession,
    *,
    year: int,
    month: int,
    tz: str = "Asia/Shanghai",
    clock: Clock = SYSTEM_CLOCK,
    account_ids: Sequence[str] | None = None,
) -> list[BillView]:
    """One bill per customer, fleet and operator account with activity in the month (idempotent per month);
    only the given accounts when `account_ids` is set (the scheduler bills each time zone's accounts)."""
    start, end = month_window(year, month, tz)
    query = select(LedgerAccount)
    if account_ids is not None:
        if not account_ids:
            return []
        query = query.where(col(LedgerAccount.id).in_(list(account_ids)))
    active = await session.exec(
        query.where(
            col(LedgerAccount.kind).in_([int(AccountKind.CUSTOMER), int(AccountKind.FLEET), int(AccountKind.OPERATOR)]),
            sa.exists()
            .where(col(Posting.account_id) == col(LedgerAccount.id))
            .where(col(Posting.entry_id) == col(JournalEntry.id))
            .where(col(JournalEntry.posted_at) >= start, col(JournalEntry.posted_at) < end),
        ).order_by(col(LedgerAccount.id))
    )
    return [
        await generate_bill(
            session,
            account_id=a.id,
            period_start=start,
            period_end=end,
            idempotency_key=f"monthly:{a.id}:{year:04d}-{month:02d}",
            clock=clock,
        )
        for a in list(active)
    ]


async def list_bills(
    session: AsyncSession,
    *,
    account_ids: list[str] | None,
    states: list[int],
    issued_from: dt.datetime | None,
    issued_to: dt.datetime | None,
    page: Page,
) -> list[BillView]:
    query = select(Bill).order_by(col(Bill.id)).limit(page.size)
    if account_ids is not None:
        query = query.where(col(Bill.account_id).in_(account_ids))
    if states:
        query = query.where(col(Bill.state).in_(states))
    if issued_from is not None:
        query = query.where(col(Bill.issued_at) >= issued_from)
    if issued_to is not None:
        query = query.where(col(Bill.issued_at) < issued_to)
    if page.after is not None:
        query = query.where(col(Bill.id) > page.after)
    return [await _view(session, b) for b in list(await session.exec(query))]
