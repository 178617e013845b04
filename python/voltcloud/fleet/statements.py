"""A fleet's statement for a period, from settlement's journal (through the `Ledger` port): the fleet's own
account and its sub-fleets' allocation accounts together (allocations between them then show as both legs
and net to zero), or one sub-fleet's account alone."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.models import SubFleet
from voltcloud.fleet.ports import AccountStatement, Ledger
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.paging import Page


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
