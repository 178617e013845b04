"""Settlement's public functions for other domains.

They take the caller's `AsyncSession` and never commit: ordering calls them inside its own transaction, so
an order, its hold and its reservations commit or roll back together. Errors are the platform's domain errors
(FailedPrecondition "insufficient funds ...", NotFound, InvalidArgument naming the field, Aborted for a lost
race: retry the whole transaction).
"""

from __future__ import annotations

import datetime as dt

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Fleet  # read-only: a fleet's payment mode and credit limit
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import InvalidArgument
from voltcloud.settlement import accounts
from voltcloud.settlement.abnormal import (
    AbnormalFlag,
    AbnormalReport,
    DifferenceRefund,
    SessionFacts,
    detect_abnormal,
    refund_difference,
)
from voltcloud.settlement.coupons import Redemption, check_coupon, redeem_coupon
from voltcloud.settlement.holds import (
    SYSTEM_CLOCK,
    Hold,
    capture_hold,
    expire_due_holds,
    place_hold,
    place_hold_on,
    release_hold,
)
from voltcloud.settlement.ledger import Actor, JournalEntryRef, PostingView, check_limit, lock_accounts
from voltcloud.settlement.money import AccountKind, HoldState, check_amount
from voltcloud.settlement.payments import PaymentView, RefundResult, allocate, refund, top_up, verify_offline_payment
from voltcloud.settlement.pricebook import BookPrice, PriceBook, PriceRequest
from voltcloud.settlement.pricebook import Miss as PriceBookMiss
from voltcloud.settlement.rates import PriceQuote, assign_rate_model, price_estimate
from voltcloud.settlement.statements import account_statement
from voltcloud.settlement.tariff import PriceLine

POST_SETTLEMENT = 2  # Fleet.payment_mode: monthly bill with a credit limit


async def ensure_customer_account(
    session: AsyncSession, *, owner_kind: str, owner_id: str, currency: str = "CNY", clock: Clock = SYSTEM_CLOCK
) -> str:
    """The wallet of a driver or fleet (created if missing); returns its account id. A fleet in
    post-settlement mode gets its credit limit from the fleet's settings when the account is created."""
    if owner_kind not in ("driver", "fleet"):
        raise InvalidArgument.for_field("owner_kind", f"must be 'driver' or 'fleet', got {owner_kind!r}")
    credit = 0
    if owner_kind == "fleet":
        fleet = await session.get(Fleet, owner_id)
        if fleet is not None and fleet.payment_mode == POST_SETTLEMENT:
            credit = fleet.credit_limit_minor
    account = await accounts.ensure_account(
        session,
        kind=AccountKind.CUSTOMER if owner_kind == "driver" else AccountKind.FLEET,
        owner_kind=owner_kind,
        owner_id=owner_id,
        currency=currency,
        now=clock.now(),
        credit_limit_minor=credit,
    )
    return account.id


async def hold_on_wallet(
    session: AsyncSession,
    *,
    owner_kind: str,
    owner_id: str,
    amount_minor: int,
    currency: str,
    reference: str,
    expires_at: dt.datetime,
    clock: Clock = SYSTEM_CLOCK,
) -> Hold:
    """A hold on the wallet of a driver or fleet (`ensure_customer_account`'s account, created if missing),
    named by its owner so that finding, checking and taking the amount is one statement (`place_hold_on`; the
    caller's own idempotency key, claimed in the same transaction, covers the hold)."""
    kind = AccountKind.CUSTOMER if owner_kind == "driver" else AccountKind.FLEET

    async def create() -> str:
        return await ensure_customer_account(
            session, owner_kind=owner_kind, owner_id=owner_id, currency=currency, clock=clock
        )

    return await place_hold_on(
        session, owner=(owner_kind, owner_id, int(kind), currency), create=create, amount_minor=amount_minor,
        currency=currency, reference=reference, expires_at=expires_at, clock=clock,
    )  # fmt: skip


async def hold_on_account(
    session: AsyncSession,
    *,
    account_id: str,
    amount_minor: int,
    currency: str,
    reference: str,
    expires_at: dt.datetime,
    clock: Clock = SYSTEM_CLOCK,
) -> Hold:
    """`hold_on_wallet` for an account named by id (a payer, a sub-fleet's allocation); NotFound if missing."""
    return await place_hold_on(
        session, account_id=account_id, amount_minor=amount_minor, currency=currency, reference=reference,
        expires_at=expires_at, clock=clock,
    )  # fmt: skip


async def require_spendable(
    session: AsyncSession, principal: Principal, account_id: str, *, field: str = "payer.account_id"
) -> str:
    """The id of an account the caller names to pay with, if the caller may spend from it (own wallet; the
    fleet's account or a sub-fleet allocation for its manager and its drivers); PERMISSION_DENIED otherwise.
    Call it before anything is reserved or held, so a refusal leaves nothing behind."""
    return (await accounts.spendable(session, principal, account_id, field=field)).id


async def set_credit_limit(session: AsyncSession, *, account_id: str, credit_limit_minor: int) -> None:
    """Sets a (post-settlement) fleet account's credit limit; FleetService.SetPaymentMode calls this."""
    check_amount("credit_limit", credit_limit_minor, allow_zero=True)
    await accounts.load(session, account_id)
    account = (await lock_accounts(session, [account_id]))[account_id]
    account.credit_limit_minor = credit_limit_minor
    account.version += 1
    check_limit(account)
    session.add(account)
    await session.flush()


async def ensure_sub_fleet_account(
    session: AsyncSession,
    *,
    fleet_id: str,
    sub_fleet_id: str,
    currency: str,
    credit_limit_minor: int,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """A sub-fleet's allocation account (created if missing), in its fleet's tenant so allocations between the
    two stay inside one tenant; FleetService.CreateSubFleet calls this."""
    check_amount("credit_limit", credit_limit_minor, allow_zero=True)
    account = await accounts.ensure_account(
        session,
        kind=AccountKind.FLEET,
        owner_kind="subfleet",
        owner_id=sub_fleet_id,
        currency=currency,
        now=clock.now(),
        tenant=f"fleet:{fleet_id}",
        credit_limit_minor=credit_limit_minor,
    )
    return account.id


async def move_balance(
    session: AsyncSession,
    *,
    from_account_id: str,
    to_account_id: str,
    amount_minor: int,
    idempotency_key: str,
    actor_subject: str,
) -> tuple[str, int, int]:
    """`allocate` for FleetService.AllocateBalance: (entry id, source balance after, target balance after)."""
    entry = await allocate(
        session,
        from_account_id=from_account_id,
        to_account_id=to_account_id,
        amount_minor=amount_minor,
        idempotency_key=idempotency_key,
        actor=Actor(subject=actor_subject),
    )
    source = await accounts.view(session, await accounts.load(session, from_account_id))
    target = await accounts.view(session, await accounts.load(session, to_account_id))
    return entry.entry_id, source.balance_minor, target.balance_minor


__all__ = [
    "AbnormalFlag",
    "AbnormalReport",
    "Actor",
    "BookPrice",
    "DifferenceRefund",
    "Hold",
    "HoldState",
    "JournalEntryRef",
    "PaymentView",
    "PostingView",
    "PriceBook",
    "PriceBookMiss",
    "PriceLine",
    "PriceQuote",
    "PriceRequest",
    "Redemption",
    "RefundResult",
    "SessionFacts",
    "account_statement",
    "allocate",
    "assign_rate_model",
    "capture_hold",
    "check_coupon",
    "detect_abnormal",
    "ensure_customer_account",
    "ensure_sub_fleet_account",
    "expire_due_holds",
    "hold_on_account",
    "hold_on_wallet",
    "move_balance",
    "place_hold",
    "price_estimate",
    "redeem_coupon",
    "refund",
    "refund_difference",
    "release_hold",
    "require_spendable",
    "set_credit_limit",
    "top_up",
    "verify_offline_payment",
]
