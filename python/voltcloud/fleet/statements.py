"""A fleet's statement for a period, from settlement's journal (through the `Ledger` port): the fleet's own
account and its sub-fleets' allocation accounts together (allocations between them then show as both legs
and net to zero), or one sub-fleet's account alone."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.models import SubFleet
from voltcloud.fleet.ports import AccountStatement, Ledger
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.paging import Page

DEFAULT_TZ = "Asia/Shanghai"


@dataclass(frozen=True)
class FleetStatement:
    statement: AccountStatement
    sub_fleet_of_account: dict[str, str]  # account id -> sub-fleet id ("" for the fleet's own account)


async def fleet_statement(
    session: AsyncSession,
    ledger: Ledger,
    principal: Principal,
    *,
    fleet_id: str,
    sub_fleet_id: str,
    period: tuple[dt.datetime | None, dt.datetime | None],
    page: Page,
) -> FleetStatement:
    fleet = await managed_fleet(session, principal, fleet_id)
    start, end = period
    if start is None or end is None or end <= start:
        raise InvalidArgument.for_field("period", "a period with start < end is required")
    if sub_fleet_id:
        subs = [await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")]
        accounts = {}
    else:
        subs = list(
            await session.exec(select(SubFleet).where(SubFleet.fleet_id == fleet.id).order_by(col(SubFleet.id)))
        )
        accounts = {fleet.account_id: ""} if fleet.account_id else {}
    accounts |= {s.account_id: s.id for s in subs if s.account_id}
    after = _posting_after(page)
    statement = await ledger.account_statement(
        session, account_ids=list(accounts), start=start, end=end, after=after, limit=page.size
    )
    return FleetStatement(statement, accounts)


def _posting_after(page: Page) -> int | None:
    if page.after is None:
        return None
    if not page.after.isdigit():
        raise InvalidArgument.for_field("page_token", "is not a token this server issued")
    return int(page.after)


def month_window(month: str, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The local calendar month "YYYY-MM" as a UTC window (the monthly statement)."""
    try:
        first = dt.date.fromisoformat(f"{month}-01")
    except ValueError:
        raise InvalidArgument.for_field("month", f"must be YYYY-MM, got {month!r}") from None
    try:
        zone = ZoneInfo(time_zone or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument.for_field("time_zone", f"unknown IANA time zone {time_zone!r}") from None
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    start = dt.datetime.combine(first, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(following, dt.time(), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def statement_period(
    period: tuple[dt.datetime | None, dt.datetime | None], month: str, time_zone: str
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`period`, or the month's window when a month is named (not both)."""
    if not month:
        return period
    if period != (None, None):
        raise InvalidArgument.for_field("month", "give either period or month, not both")
    return month_window(month, time_zone)


CSV_HEADER = ["posted_at", "entry_id", "kind", "order_id", "sub_fleet_id", "amount_minor", "balance_after_minor",
              "currency", "description"]  # fmt: skip


def to_csv(done: FleetStatement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    s = done.statement
    for e in s.entries:
        writer.writerow(
            [
                e.posted_at.astimezone(dt.UTC).isoformat(),
                e.entry_id,
                e.kind,
                e.order_id,
                done.sub_fleet_of_account.get(e.account_id, ""),
                e.amount_minor,
                e.balance_after_minor,
                s.currency,
                e.description,
            ]
        )
    return out.getvalue()
