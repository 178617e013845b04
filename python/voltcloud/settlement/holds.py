"""Holds: reserve an amount of a wallet's available balance, then capture, release or let it expire.

A hold moves no money: it raises the account's `held_minor`, so `available = balance - held + credit_limit`
shrinks. Capture releases the hold and posts one balanced ORDER_SETTLEMENT entry: the customer pays, the
operator's share and the platform fee are credited. If the actual amount exceeds what the wallet can cover
(only possible when it exceeds the hold), the rest is posted to the customer's arrears account, never as a
negative wallet; the next top-up repays arrears first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import is_lost_race
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.settlement import accounts
from voltcloud.settlement.ledger import (
    SYSTEM,
    Actor,
    JournalEntryRef,
    PostingSpec,
    load_entry,
    lock_accounts,
    post_entry,
)
from voltcloud.settlement.models import LedgerAccount, LedgerHold
from voltcloud.settlement.money import EntryKind, HoldState, check_amount, check_currency, round_half_up
from voltcloud.settlement.sql import for_update

DEFAULT_PLATFORM_FEE_BP = 500  # 5% of the captured amount when the caller gives no breakdown
PLATFORM_FEE_KEY = "platform_fee"
SYSTEM_CLOCK: Clock = SystemClock()
DEFAULT_HOLD_TTL = dt.timedelta(minutes=30)  # how long a hold lives when the caller names no ttl


def expiry(now: dt.datetime, ttl: dt.timedelta | None) -> dt.datetime:
    ttl = DEFAULT_HOLD_TTL if ttl is None else ttl
    if ttl <= dt.timedelta(0):
        raise InvalidArgument.for_field("ttl", "must be positive")
    return now + ttl


def fee_breakdown(amount_minor: int, platform_fee_bp: int) -> dict[str, int] | None:
    """The capture's split when the caller names a platform fee (basis points of the amount, rounded half up);
    None leaves the default split to `capture_hold`."""
    if not 0 <= platform_fee_bp <= 10_000:
        raise InvalidArgument.for_field("platform_fee_basis_points", "must be within [0, 10000]")
    if not platform_fee_bp:
        return None
    fee = round_half_up(amount_minor * platform_fee_bp, 10_000)
    return {PLATFORM_FEE_KEY: fee, "order revenue": amount_minor - fee}


@dataclass(frozen=True)
class Hold:
    hold_id: str
    account_id: str
    amount_minor: int
    captured_minor: int
    currency: str
    state: HoldState
    reference: str
    expires_at: dt.datetime
    created_at: dt.datetime
    entry_id: str | None = None


def hold_view(row: LedgerHold) -> Hold:
    return Hold(
        hold_id=row.id,
        account_id=row.account_id,
        amount_minor=row.amount_minor,
        captured_minor=row.captured_minor,
        currency=row.currency,
        state=HoldState(row.state),
        reference=row.reference,
        expires_at=row.expires_at,
        created_at=row.created_at,
        entry_id=row.entry_id,
    )


async def get_hold(session: AsyncSession, hold_id: str) -> LedgerHold:
    if not hold_id:
        raise InvalidArgument.for_field("hold_id", "is required")
    row = await session.get(LedgerHold, hold_id, populate_existing=True)
    if row is None:
        raise NotFound(f"hold {hold_id} not found")
    return row


async def _lock_hold(session: AsyncSession, hold_id: str) -> LedgerHold:
    if not hold_id:
        raise InvalidArgument.for_field("hold_id", "is required")
    row: LedgerHold | None = (
        await session.exec(for_update(select(LedgerHold).where(LedgerHold.id == hold_id)))
    ).one_or_none()
    if row is None:
        raise NotFound(f"hold {hold_id} not found")
    return row


async def expire_due_holds(
    session: AsyncSession, *, clock: Clock = SYSTEM_CLOCK, account_id: str | None = None, limit: int = 500
) -> int:
    """Marks active holds past their expiry EXPIRED and frees their amounts. Returns how many expired."""
    now = clock.now()
    query = select(LedgerHold.id).where(LedgerHold.state == int(HoldState.ACTIVE), col(LedgerHold.expires_at) <= now)
    if account_id is not None:
        query = query.where(LedgerHold.account_id == account_id)
    ids = list(await session.exec(query.order_by(col(LedgerHold.id)).limit(limit)))
    expired = 0
    for hold_id in ids:
        hold = await _lock_hold(session, hold_id)
        if hold.state != HoldState.ACTIVE:
            continue
        locked = await lock_accounts(session, [hold.account_id])
        account = locked[hold.account_id]
        account.held_minor -= hold.amount_minor
        account.version += 1
        hold.state = int(HoldState.EXPIRED)
        hold.closed_at = now
        hold.close_reason = "expired"
        hold.version += 1
        session.add_all([account, hold])
        expired += 1
    await session.flush()
    return expired


async def place_hold(
    session: AsyncSession,
    *,
    account_id: str,
    amount_minor: int,
    currency: str,
    reference: str,
    idempotency_key: str | None,
    expires_at: dt.datetime,
    clock: Clock = SYSTEM_CLOCK,
) -> Hold:
    """Reserves `amount_minor` of the account's available balance (credit limit included for post-settlement
    fleets). FailedPrecondition "insufficient funds ..." when short. `idempotency_key` None: the caller's
    transaction is idempotent by a key of its own, claimed in the same transaction (CreateOrder's), so a
    second claim for the hold would be two statements that can never change the outcome."""
    check_amount("amount", amount_minor)
    check_currency("currency", currency)
    now = clock.now()
    if expires_at.tzinfo is None or expires_at <= now:
        raise InvalidArgument.for_field("expires_at", "must be a timezone-aware time in the future")
    request = {
        "account_id": account_id,
        "amount": amount_minor,
        "currency": currency,
        "reference": reference,
        "expires_at": expires_at,
    }
    claim = None
    if idempotency_key is not None:
        claim = await idempotency.claim(session, "place_hold", idempotency_key, request, now=now)
        if claim.is_replay:
            return hold_view(await get_hold(session, claim.replay_of or ""))
    if not account_id:
        raise InvalidArgument.for_field("account_id", "is required")
    account = (await lock_accounts(session, [account_id]))[account_id]  # NotFound if missing; no second read
    if account.currency != currency:
        raise InvalidArgument.for_field("currency", f"account {account_id} holds {account.currency}, not {currency}")
    if account.frozen:
        raise FailedPrecondition(f"account {account_id} is frozen")
    available = account.balance_minor - account.held_minor + account.credit_limit_minor
    if amount_minor > available and await expire_due_holds(session, clock=clock, account_id=account_id):
        account = (await lock_accounts(session, [account_id]))[account_id]
        available = account.balance_minor - account.held_minor + account.credit_limit_minor
    if amount_minor > available:
        raise FailedPrecondition(
            f"insufficient funds on account {account_id}: available {available} {currency}, "
            f"hold needs {amount_minor} {currency}"
        )
    account.held_minor += amount_minor
    account.version += 1
    hold = LedgerHold(
        id=new_id("hold"),
        account_id=account_id,
        amount_minor=amount_minor,
        captured_minor=0,
        currency=currency,
        state=int(HoldState.ACTIVE),
        reference=reference,
        expires_at=expires_at,
        created_at=now,
    )
    session.add_all([account, hold])
    if claim is not None:
        await session.flush()
        await idempotency.complete(session, claim, hold.id)
    return hold_view(hold)


_ACCOUNT: sa.Table = LedgerAccount.__table__  # type: ignore[attr-defined]
_HOLD: sa.Table = LedgerHold.__table__  # type: ignore[attr-defined]
_INSERT_HOLD = sa.insert(_HOLD)


async def lock_account_row(
    session: AsyncSession, *, account_id: str | None = None, owner: tuple[str, str, int, str] | None = None
) -> Any:  # the row, or None
    """One account's row, locked until commit (FOR NO KEY UPDATE on PostgreSQL; SQLite's write transaction
    holds the database): by id, or by (owner kind, owner id, account kind, currency), the wallet's unique
    key, so finding and locking a wallet is one statement. None when there is no such account."""
    query = sa.select(_ACCOUNT)
    if account_id is not None:
        query = query.where(_ACCOUNT.c.id == account_id)
    elif owner is not None:
        owner_kind, owner_id, kind, currency = owner
        query = query.where(
            _ACCOUNT.c.owner_kind == owner_kind,
            _ACCOUNT.c.owner_id == owner_id,
            _ACCOUNT.c.kind == kind,
            _ACCOUNT.c.currency == currency,
        )
    else:  # pragma: no cover - a programming error
        raise ValueError("name the account by id or by owner")
    try:
        return (await (await session.connection()).execute(query.with_for_update(key_share=True))).one_or_none()
    except sa.exc.DBAPIError as exc:
        if is_lost_race(exc):
            raise Aborted(f"lost a race locking an account: {exc.orig}") from exc
        raise


async def place_hold_on(
    session: AsyncSession,
    *,
    account_id: str | None = None,
    owner: tuple[str, str, int, str] | None = None,
    create: Callable[[], Awaitable[str]] | None = None,
    amount_minor: int,
    currency: str,
    reference: str,
    expires_at: dt.datetime,
    clock: Clock = SYSTEM_CLOCK,
) -> Hold:
    """`place_hold` for a caller whose own key makes it idempotent (CreateOrder), in Core statements: the
    account named by id or by owner (`lock_account_row`; `create` makes a missing wallet and returns its id).

    Usually two statements: one conditional UPDATE takes the amount when the account has it (same currency,
    not frozen, available balance with the credit limit), which also locks the row only from then until the
    commit (a fleet's one wallet is every one of its orders' hot row), and the hold's INSERT. When it matches
    nothing, the account is locked and read to say why, with expired holds freed first, as `place_hold` does."""
    check_amount("amount", amount_minor)
    check_currency("currency", currency)
    now = clock.now()
    if expires_at.tzinfo is None or expires_at <= now:
        raise InvalidArgument.for_field("expires_at", "must be a timezone-aware time in the future")
    taken = await _take(session, amount_minor, currency, account_id=account_id, owner=owner)
    if taken is None:
        taken = await _take_checked(session, amount_minor, currency, account_id=account_id, owner=owner,
                                    create=create, clock=clock)  # fmt: skip
    hold = Hold(
        hold_id=new_id("hold"), account_id=taken, amount_minor=amount_minor, captured_minor=0, currency=currency,
        state=HoldState.ACTIVE, reference=reference, expires_at=expires_at, created_at=now,
    )  # fmt: skip
    row = {"id": hold.hold_id, "account_id": taken, "amount_minor": amount_minor, "captured_minor": 0}
    row.update(currency=currency, state=int(HoldState.ACTIVE), reference=reference, expires_at=expires_at)
    row.update(created_at=now, close_reason="", version=1)
    await (await session.connection()).execute(_INSERT_HOLD, row)
    return hold


def _account_where(account_id: str | None, owner: tuple[str, str, int, str] | None) -> list[Any]:
    if account_id is not None:
        return [_ACCOUNT.c.id == account_id]
    if owner is None:  # pragma: no cover - a programming error
        raise ValueError("name the account by id or by owner")
    owner_kind, owner_id, kind, currency = owner
    c = _ACCOUNT.c
    return [c.owner_kind == owner_kind, c.owner_id == owner_id, c.kind == kind, c.currency == currency]


async def _take(
    session: AsyncSession,
    amount_minor: int,
    currency: str,
    *,
    account_id: str | None,
    owner: tuple[str, str, int, str] | None,
    checked: bool = True,
) -> str | None:
    """Raises the account's held amount by `amount_minor` if (`checked`) it can afford it; its id, or None."""
    c = _ACCOUNT.c
    conditions = _account_where(account_id, owner)
    if checked:
        conditions += [
            c.currency == currency,
            sa.not_(c.frozen),
            c.balance_minor - c.held_minor + c.credit_limit_minor >= amount_minor,
        ]
    stmt = (
        sa.update(_ACCOUNT)
        .where(*conditions)
        .values(held_minor=c.held_minor + amount_minor, version=c.version + 1)
        .returning(c.id)
    )
    try:
        taken = (await (await session.connection()).execute(stmt)).scalar_one_or_none()
    except sa.exc.DBAPIError as exc:
        if is_lost_race(exc):
            raise Aborted(f"lost a race holding on an account: {exc.orig}") from exc
        raise
    return None if taken is None else str(taken)


async def _take_checked(
    session: AsyncSession,
    amount_minor: int,
    currency: str,
    *,
    account_id: str | None,
    owner: tuple[str, str, int, str] | None,
    create: Callable[[], Awaitable[str]] | None,
    clock: Clock,
) -> str:
    """The slow path of `place_hold_on`: lock and read the account, refuse with the reason, or take."""
    account = await lock_account_row(session, account_id=account_id, owner=owner)
    if account is None and create is not None:
        account = await lock_account_row(session, account_id=await create())
    if account is None:
        raise NotFound(f"account {account_id} not found")
    if account.currency != currency:
        raise InvalidArgument.for_field("currency", f"account {account.id} holds {account.currency}, not {currency}")
    if account.frozen:
        raise FailedPrecondition(f"account {account.id} is frozen")
    available = account.balance_minor - account.held_minor + account.credit_limit_minor
    if amount_minor > available and await expire_due_holds(session, clock=clock, account_id=account.id):
        account = await lock_account_row(session, account_id=account.id)
        available = account.balance_minor - account.held_minor + account.credit_limit_minor
    if amount_minor > available:
        raise FailedPrecondition(
            f"insufficient funds on account {account.id}: available {available} {currency}, "
            f"hold needs {amount_minor} {currency}"
        )
    taken = await _take(session, amount_minor, currency, account_id=account.id, owner=None, checked=False)
    assert taken is not None  # locked above
    return taken


def _split(amount_minor: int, breakdown: Mapping[str, int] | None) -> tuple[int, list[tuple[str, int]]]:
    """(platform fee, operator lines) for a captured amount."""
    if breakdown is None:
        fee = round_half_up(amount_minor * DEFAULT_PLATFORM_FEE_BP, 10_000)
        return fee, [("order revenue", amount_minor - fee)]
    for key, value in breakdown.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument.for_field(f"breakdown.{key}", "must be a non-negative integer amount")
    if sum(breakdown.values()) != amount_minor:
        raise InvalidArgument.for_field(
            "breakdown", f"lines sum to {sum(breakdown.values())}, not the captured amount {amount_minor}"
        )
    fee = breakdown.get(PLATFORM_FEE_KEY, 0)
    return fee, [(k, v) for k, v in sorted(breakdown.items()) if k != PLATFORM_FEE_KEY]


async def capture_hold(
    session: AsyncSession,
    *,
    hold_id: str,
    amount_minor: int,
    operator_id: str,
    breakdown: Mapping[str, int] | None = None,
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
    description: str = "",
) -> JournalEntryRef:
    """Captures `amount_minor` (may exceed the hold: the rest is charged to the wallet, then to arrears),
    releases the rest of the hold and posts the operator's share and the platform fee in one entry.

    `breakdown` maps revenue lines to amounts summing to `amount_minor`; the key "platform_fee" goes to the
    platform's revenue account, every other line to the operator. Without it the platform takes
    DEFAULT_PLATFORM_FEE_BP. A zero amount just releases the hold and returns a ref with no entry id."""
    check_amount("amount", amount_minor, allow_zero=True)
    if not operator_id:
        raise InvalidArgument.for_field("operator_id", "is required")
    now = clock.now()
    request = {
        "hold_id": hold_id,
        "amount": amount_minor,
        "operator_id": operator_id,
        "breakdown": dict(breakdown) if breakdown is not None else None,
        "description": description,
    }
    claim = await idempotency.claim(session, "capture_hold", idempotency_key, request, now=now)
    if claim.is_replay:
        if not claim.replay_of:
            return JournalEntryRef(entry_id="", kind=EntryKind.ORDER_SETTLEMENT, posted_at=None, hold_id=hold_id)
        return await load_entry(session, claim.replay_of)
    fee, operator_lines = _split(amount_minor, breakdown)

    hold = await _lock_hold(session, hold_id)
    if hold.state != HoldState.ACTIVE:
        raise FailedPrecondition(
            f"hold {hold_id} is {HoldState(hold.state).name.lower()}; only an active hold can be captured"
        )
    if hold.expires_at <= now:
        raise FailedPrecondition(f"hold {hold_id} expired at {hold.expires_at.isoformat()}")
    wallet = (await lock_accounts(session, [hold.account_id]))[hold.account_id]
    wallet.held_minor -= hold.amount_minor
    wallet.version += 1
    hold.state = int(HoldState.CAPTURED)
    hold.captured_minor = amount_minor
    hold.closed_at = now
    hold.version += 1
    if amount_minor == 0:
        hold.state = int(HoldState.RELEASED)
        hold.close_reason = "captured zero"
        session.add_all([wallet, hold])
        await session.flush()
        return JournalEntryRef(entry_id="", kind=EntryKind.ORDER_SETTLEMENT, posted_at=now, hold_id=hold_id)

    available = max(0, wallet.balance_minor - wallet.held_minor + wallet.credit_limit_minor)
    from_wallet = min(amount_minor, available)
    shortfall = amount_minor - from_wallet
    currency = hold.currency
    postings = [PostingSpec(wallet.id, -from_wallet, f"order {hold.reference}")]
    locked = {wallet.id: wallet}
    if shortfall:
        arrears = await accounts.arrears_of(session, wallet, now)
        locked.update(await lock_accounts(session, [arrears.id]))
        postings.append(PostingSpec(arrears.id, -shortfall, f"arrears: order {hold.reference}"))
    operator = await accounts.operator_payable(session, operator_id, currency, now)
    postings += [PostingSpec(operator.id, value, label) for label, value in operator_lines]
    if fee:
        platform = await accounts.platform_revenue(session, currency, now)
        postings.append(PostingSpec(platform.id, fee, PLATFORM_FEE_KEY))
    session.add(wallet)
    await session.flush()
    entry = await post_entry(
        session,
        kind=EntryKind.ORDER_SETTLEMENT,
        postings=postings,
        now=now,
        order_id=hold.reference or None,
        hold_id=hold.id,
        description=description or f"settlement of order {hold.reference}",
        actor=actor,
        idempotency_key=idempotency_key,
        locked=locked,
    )
    hold.entry_id = entry.entry_id
    session.add(hold)
    await idempotency.complete(session, claim, entry.entry_id)
    return entry


async def release_hold(session: AsyncSession, *, hold_id: str, reason: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """Frees an active hold. Releasing a released or expired hold is a no-op; a captured one is refused."""
    now = clock.now()
    hold = await _lock_hold(session, hold_id)
    if hold.state in (HoldState.RELEASED, HoldState.EXPIRED):
        return
    if hold.state != HoldState.ACTIVE:
        raise FailedPrecondition(f"hold {hold_id} is {HoldState(hold.state).name.lower()}; it cannot be released")
    wallet = (await lock_accounts(session, [hold.account_id]))[hold.account_id]
    wallet.held_minor -= hold.amount_minor
    wallet.version += 1
    hold.state = int(HoldState.RELEASED)
    hold.closed_at = now
    hold.close_reason = reason[:200]
    hold.version += 1
    session.add_all([wallet, hold])
    await session.flush()
