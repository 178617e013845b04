"""Fleets and sub-fleets: creation with their settlement accounts, payment modes, balance allocation."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.models import Fleet, SubFleet
from voltcloud.fleet.ports import Ledger
from voltcloud.platform.auth import Principal
from voltcloud.platform.enums import PaymentMode
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from voltcloud.platform.ids import new_id

DEFAULT_CURRENCY = "CNY"
# fleet.credit_limit_minor and subfleet.credit_limit_minor are INTEGER columns (21 million CNY).
MAX_CREDIT_LIMIT_MINOR = 2**31 - 1
_CURRENCY = re.compile(r"^[A-Z]{3}$")
INHERIT = 0  # a sub-fleet's payment mode when it follows its fleet's


@dataclass(frozen=True)
class PaymentTerms:
    mode: int  # PaymentMode, or INHERIT for a sub-fleet
    credit_limit_minor: int
    credit_currency: str  # empty when the request named none


@dataclass(frozen=True)
class Allocation:
    entry_id: str
    fleet_balance_minor: int
    sub_fleet_balance_minor: int
    currency: str


def _check_terms(terms: PaymentTerms, currency: str, *, effective_mode: int) -> None:
    if terms.credit_currency and terms.credit_currency != currency:
        raise InvalidArgument.for_field("credit_limit.currency", f"must be the fleet's currency {currency}")
    if not 0 <= terms.credit_limit_minor <= MAX_CREDIT_LIMIT_MINOR:
        raise InvalidArgument.for_field("credit_limit.amount_minor", f"must be in [0, {MAX_CREDIT_LIMIT_MINOR}]")
    if terms.credit_limit_minor and effective_mode != PaymentMode.POST_SETTLEMENT:
        raise InvalidArgument.for_field("credit_limit", "a credit limit needs PAYMENT_MODE_POST_SETTLEMENT")


def _check_may_set_credit(principal: Principal, current: int, wanted: int) -> None:
    # The same rule as settlement's CreateAccount: a credit limit is credit the platform extends.
    if wanted != current and not principal.is_admin:
        raise PermissionDenied("only the platform admin sets credit limits")


async def create_fleet(
    session: AsyncSession, ledger: Ledger, *, name: str, currency: str, terms: PaymentTerms, now: dt.datetime
) -> Fleet:
    """A new fleet tenant and its settlement account (the permission table lets only the admin call this)."""
    if not name.strip():
        raise InvalidArgument.for_field("name", "is required")
    mode = terms.mode or PaymentMode.REAL_TIME
    currency = currency or DEFAULT_CURRENCY
    if not _CURRENCY.match(currency):
        raise InvalidArgument.for_field("currency", f"must be an ISO 4217 code like 'CNY', got {currency!r}")
    _check_terms(terms, currency, effective_mode=mode)
    fleet = Fleet(
        id=new_id("fl"),
        name=name.strip(),
        currency=currency,
        payment_mode=int(mode),
        credit_limit_minor=terms.credit_limit_minor,
        created_at=now,
    )
    session.add(fleet)
    await session.flush()  # settlement reads the fleet's terms when it opens the account
    fleet.account_id = await ledger.ensure_customer_account(
        session, owner_kind="fleet", owner_id=fleet.id, currency=currency
    )
    await session.flush()
    return fleet


async def fleet_account(session: AsyncSession, ledger: Ledger, fleet: Fleet) -> str:
    """The fleet's account id; opened now for a fleet the demo seed wrote without one."""
    if fleet.account_id is None:
        fleet.account_id = await ledger.ensure_customer_account(
            session, owner_kind="fleet", owner_id=fleet.id, currency=fleet.currency
        )
        session.add(fleet)
    return fleet.account_id


async def sub_fleet_account(session: AsyncSession, ledger: Ledger, fleet: Fleet, sub_fleet: SubFleet) -> str:
    if sub_fleet.account_id is None:
        sub_fleet.account_id = await ledger.ensure_sub_fleet_account(
            session,
            fleet_id=fleet.id,
            sub_fleet_id=sub_fleet.id,
            currency=fleet.currency,
            credit_limit_minor=sub_fleet.credit_limit_minor,
        )
        session.add(sub_fleet)
    return sub_fleet.account_id


async def get_fleet(session: AsyncSession, principal: Principal, fleet_id: str) -> tuple[Fleet, list[SubFleet]]:
    fleet = await managed_fleet(session, principal, fleet_id)
    subs = await session.exec(select(SubFleet).where(SubFleet.fleet_id == fleet.id).order_by(col(SubFleet.id)))
    return fleet, list(subs)


async def create_sub_fleet(
    session: AsyncSession,
    ledger: Ledger,
    principal: Principal,
    *,
    fleet_id: str,
    name: str,
    terms: PaymentTerms,
    now: dt.datetime,
) -> tuple[Fleet, SubFleet]:
    fleet = await managed_fleet(session, principal, fleet_id)
    if not name.strip():
        raise InvalidArgument.for_field("name", "is required")
    _check_terms(terms, fleet.currency, effective_mode=terms.mode or fleet.payment_mode)
    _check_may_set_credit(principal, 0, terms.credit_limit_minor)
    sub_fleet = SubFleet(
        id=new_id("sfl"),
        fleet_id=fleet.id,
        name=name.strip(),
        payment_mode=terms.mode,
        credit_limit_minor=terms.credit_limit_minor,
        created_at=now,
    )
    session.add(sub_fleet)
    await session.flush()
    await sub_fleet_account(session, ledger, fleet, sub_fleet)
    await session.flush()
    return fleet, sub_fleet


async def allocate_balance(
    session: AsyncSession,
    ledger: Ledger,
    principal: Principal,
    *,
    fleet_id: str,
    sub_fleet_id: str,
    amount_minor: int,
    currency: str,
    idempotency_key: str,
) -> Allocation:
    """Moves money between a fleet's account and one of its sub-fleets' (positive: to the sub-fleet) in one
    balanced journal entry, so the two balances always sum to what they held before."""
    fleet = await managed_fleet(session, principal, fleet_id)
    sub_fleet = await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")
    if currency and currency != fleet.currency:
        raise InvalidArgument.for_field("amount.currency", f"must be the fleet's currency {fleet.currency}")
    if amount_minor == 0:
        raise InvalidArgument.for_field("amount.amount_minor", "must not be zero")
    fleet_acc = await fleet_account(session, ledger, fleet)
    sub_acc = await sub_fleet_account(session, ledger, fleet, sub_fleet)
    source, target = (fleet_acc, sub_acc) if amount_minor > 0 else (sub_acc, fleet_acc)
    entry_id, source_after, target_after = await ledger.move_balance(
        session,
        from_account_id=source,
        to_account_id=target,
        amount_minor=abs(amount_minor),
        idempotency_key=f"fleet-allocate:{principal.subject}:{idempotency_key}",
        actor_subject=principal.subject,
    )
    if source_after < 0:
        # Allocation moves money, not credit: a credit limit is extended to one account by the admin, and
        # passing it on would let a sub-fleet's credit become the fleet's cash (the transaction rolls back).
        raise FailedPrecondition(
            f"insufficient balance: allocation moves only the balance of account {source}, not its credit"
        )
    fleet_after, sub_after = (source_after, target_after) if amount_minor > 0 else (target_after, source_after)
    return Allocation(entry_id, fleet_after, sub_after, fleet.currency)


async def set_payment_mode(
    session: AsyncSession,
    ledger: Ledger,
    principal: Principal,
    *,
    fleet_id: str,
    sub_fleet_id: str,
    terms: PaymentTerms,
) -> tuple[Fleet, SubFleet | None]:
    """Stores the mode on the fleet or sub-fleet and the credit limit on its settlement account (settlement
    has limits, not modes: a mode is how the fleet is billed, the limit is what the ledger enforces)."""
    fleet = await managed_fleet(session, principal, fleet_id)
    if not sub_fleet_id:
        if not terms.mode:
            raise InvalidArgument.for_field("payment_mode", "is required for a fleet")
        _check_terms(terms, fleet.currency, effective_mode=terms.mode)
        _check_may_set_credit(principal, fleet.credit_limit_minor, terms.credit_limit_minor)
        fleet.payment_mode, fleet.credit_limit_minor = terms.mode, terms.credit_limit_minor
        account_id = await fleet_account(session, ledger, fleet)
        await ledger.set_credit_limit(session, account_id=account_id, credit_limit_minor=terms.credit_limit_minor)
        session.add(fleet)
        await session.flush()
        return fleet, None
    sub_fleet = await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")
    _check_terms(terms, fleet.currency, effective_mode=terms.mode or fleet.payment_mode)
    _check_may_set_credit(principal, sub_fleet.credit_limit_minor, terms.credit_limit_minor)
    sub_fleet.payment_mode, sub_fleet.credit_limit_minor = terms.mode, terms.credit_limit_minor
    account_id = await sub_fleet_account(session, ledger, fleet, sub_fleet)
    await ledger.set_credit_limit(session, account_id=account_id, credit_limit_minor=terms.credit_limit_minor)
    session.add(sub_fleet)
    await session.flush()
    return fleet, sub_fleet
