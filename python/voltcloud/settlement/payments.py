"""Money in and out: top-ups, withdrawals, refunds (to the wallet or the original payment method) and
allocations between a fleet and its sub-fleets. Each is one balanced entry with its idempotency key.

Lock order (so two entries never deadlock): hold row, then the customer's wallet, then its arrears account,
then operator accounts (locked by `post_entry`); platform and clearing accounts are never locked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.ids import new_id
from voltcloud.settlement import accounts
from voltcloud.settlement.accounts import WALLET_KINDS
from voltcloud.settlement.holds import SYSTEM_CLOCK
from voltcloud.settlement.ledger import (
    SYSTEM,
    Actor,
    JournalEntryRef,
    PostingSpec,
    load_entries,
    load_entry,
    lock_accounts,
    post_entry,
)
from voltcloud.settlement.models import JournalEntry, LedgerAccount, LedgerHold, Payment, Posting
from voltcloud.settlement.money import AccountKind, EntryKind, PaymentState, check_amount, round_half_up
from voltcloud.settlement.providers import DEFAULT_PROVIDERS, ProviderRegistry, ProviderResult
from voltcloud.settlement.sql import for_update

OFFLINE = "offline"  # the provider whose clearing account is offline-payment clearing


@dataclass(frozen=True)
class PaymentView:
    payment_id: str
    account_id: str
    amount_minor: int
    currency: str
    state: PaymentState
    provider: str
    provider_reference: str
    entry_id: str | None
    created_at: dt.datetime
    purpose: str


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    entry: JournalEntryRef
    amount_minor: int
    currency: str


def payment_view(row: Payment) -> PaymentView:
    return PaymentView(
        payment_id=row.id,
        account_id=row.account_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
        state=PaymentState(row.state),
        provider=row.provider,
        provider_reference=row.provider_reference,
        entry_id=row.entry_id,
        created_at=row.created_at,
        purpose=row.purpose,
    )


async def _payment(session: AsyncSession, payment_id: str, *, lock: bool = False) -> Payment:
    query = select(Payment).where(Payment.id == payment_id)
    row: Payment | None = (await session.exec(for_update(query) if lock else query)).one_or_none()
    if row is None:
        raise NotFound(f"payment {payment_id} not found")
    return row


async def get_payment(session: AsyncSession, payment_id: str) -> PaymentView:
    return payment_view(await _payment(session, payment_id))


async def visible_payment(session: AsyncSession, principal: Principal, payment_id: str) -> PaymentView:
    """The payment if the caller sees its account; NOT_FOUND otherwise."""
    if not payment_id:
        raise InvalidArgument.for_field("payment_id", "is required")
    payment = await get_payment(session, payment_id)
    await accounts.visible(session, principal, payment.account_id, field="payment_id")
    return payment


async def _credit_customer(
    session: AsyncSession, wallet: LedgerAccount, amount: int, memo: str
) -> tuple[list[PostingSpec], dict[str, LedgerAccount]]:
    """Postings crediting a customer: arrears are repaid first, the rest goes to the wallet."""
    locked = await lock_accounts(session, [wallet.id])
    arrears = await accounts.find_arrears(session, wallet)
    postings: list[PostingSpec] = []
    repay = 0
    if arrears is not None:
        locked.update(await lock_accounts(session, [arrears.id]))
        repay = min(amount, max(0, -locked[arrears.id].balance_minor))
        if repay:
            postings.append(PostingSpec(arrears.id, repay, f"arrears repaid: {memo}"))
    if amount - repay:
        postings.append(PostingSpec(wallet.id, amount - repay, memo))
    return postings, locked


async def top_up(
    session: AsyncSession,
    *,
    account_id: str,
    amount_minor: int,
    currency: str,
    provider: str,
    provider_token: str,
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
    providers: ProviderRegistry = DEFAULT_PROVIDERS,
) -> PaymentView:
    """Collects money through a provider and credits the wallet (repaying arrears first). A declined payment
    is recorded FAILED and posts nothing."""
    check_amount("amount", amount_minor)
    now = clock.now()
    adapter = providers.get(provider)
    request = {"account_id": account_id, "amount": amount_minor, "currency": currency, "provider": adapter.name}
    claim = await idempotency.claim(session, "top_up", idempotency_key, request, now=now)
    if claim.is_replay:
        return payment_view(await _payment(session, claim.replay_of or ""))
    wallet = await accounts.load(session, account_id)
    if wallet.currency != currency:
        raise InvalidArgument.for_field("amount.currency", f"account {account_id} holds {wallet.currency}")
    if wallet.kind not in WALLET_KINDS:
        raise FailedPrecondition(f"account {account_id} is not a customer or fleet account; it cannot be topped up")
    if adapter.name == OFFLINE:
        return await _record_offline(session, wallet, amount_minor, provider_token, claim, now, actor)
    result = adapter.charge(
        amount_minor=amount_minor, currency=currency, token=provider_token, idempotency_key=idempotency_key
    )

    async def postings(clearing_id: str, payment_id: str) -> tuple[list[PostingSpec], dict[str, LedgerAccount]]:
        credit, locked = await _credit_customer(session, wallet, amount_minor, f"top-up {payment_id}")
        return [PostingSpec(clearing_id, -amount_minor, result.reference), *credit], locked

    transfer = _ProviderTransfer(
        account_id, 1, "top_up", EntryKind.TOP_UP, "top-up", amount_minor, currency, idempotency_key
    )
    return await _record_provider_result(session, claim, transfer, adapter.name, result, postings, now, actor)


async def _record_offline(
    session: AsyncSession,
    wallet: LedgerAccount,
    amount_minor: int,
    reference: str,
    claim: idempotency.Claim,
    now: dt.datetime,
    actor: Actor,
) -> PaymentView:
    """An offline transfer (bank transfer, cash at a counter) is only declared here: PENDING, nothing posted,
    until someone else verifies it (`verify_offline_payment`)."""
    if not reference:
        raise InvalidArgument.for_field("provider_token", "the offline transfer's reference is required")
    payment = Payment(
        id=new_id("pay"),
        account_id=wallet.id,
        direction=1,
        purpose="top_up",
        amount_minor=amount_minor,
        currency=wallet.currency,
        state=int(PaymentState.PENDING),
        provider=OFFLINE,
        provider_reference=reference[:120],
        created_at=now,
        recorded_by=actor.subject[:120],
    )
    session.add(payment)
    await session.flush()
    await idempotency.complete(session, claim, payment.id)
    return payment_view(payment)


async def verify_offline_payment(
    session: AsyncSession,
    *,
    payment_id: str,
    approve: bool = True,
    note: str = "",
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
) -> PaymentView:
    """Manual verification of a declared offline transfer. Approving posts offline clearing -> wallet
    (arrears repaid first) and marks it SUCCEEDED; rejecting marks it FAILED and posts nothing.

    Once: a payment that is no longer PENDING is refused (FAILED_PRECONDITION "already verified"), so two
    operators confirming the same transfer never credit it twice (the payment row is locked). Four eyes: the
    one who declared the transfer may not verify it. A replay of the same key returns the first result."""
    if not payment_id:
        raise InvalidArgument.for_field("payment_id", "is required")
    now = clock.now()
    request = {"payment_id": payment_id, "approve": approve, "note": note}
    claim = await idempotency.claim(session, "verify_offline", idempotency_key, request, now=now)
    if claim.is_replay:
        return payment_view(await _payment(session, claim.replay_of or ""))
    payment = await _payment(session, payment_id, lock=True)
    if payment.provider != OFFLINE or payment.purpose != "top_up":
        raise FailedPrecondition(f"payment {payment_id} is not an offline top-up")
    if payment.state != PaymentState.PENDING:
        by = f" by {payment.verified_by}" if payment.verified_by else ""
        raise FailedPrecondition(
            f"payment {payment_id} was already verified{by}: {PaymentState(payment.state).name.lower()}"
        )
    if payment.recorded_by and payment.recorded_by == actor.subject and actor.subject != SYSTEM.subject:
        raise FailedPrecondition(f"payment {payment_id} was declared by {actor.subject}; someone else must verify it")
    payment.verified_by = actor.subject[:120]
    payment.verified_at = now
    payment.note = note[:300]
    if approve:
        wallet = await accounts.load(session, payment.account_id)
        clearing = await accounts.provider_clearing(session, OFFLINE, payment.currency, now)
        credit, locked = await _credit_customer(session, wallet, payment.amount_minor, f"offline top-up {payment.id}")
        entry = await post_entry(
            session,
            kind=EntryKind.TOP_UP,
            postings=[PostingSpec(clearing.id, -payment.amount_minor, payment.provider_reference), *credit],
            now=now,
            payment_id=payment.id,
            description=f"offline transfer {payment.provider_reference} verified by {actor.subject}",
            actor=actor,
            idempotency_key=idempotency_key,
            locked=locked,
        )
        payment.entry_id = entry.entry_id
        payment.state = int(PaymentState.SUCCEEDED)
    else:
        payment.state = int(PaymentState.FAILED)
    session.add(payment)
    await session.flush()
    await idempotency.complete(session, claim, payment.id)
    return payment_view(payment)


async def list_pending_offline(session: AsyncSession, *, account_ids: list[str] | None, limit: int) -> list[Payment]:
    query = (
        select(Payment)
        .where(Payment.provider == OFFLINE, Payment.state == int(PaymentState.PENDING))
        .order_by(col(Payment.id))
        .limit(limit)
    )
    if account_ids is not None:
        query = query.where(col(Payment.account_id).in_(account_ids))
    return list(await session.exec(query))


async def withdraw(
    session: AsyncSession,
    *,
    account_id: str,
    amount_minor: int,
    currency: str,
    provider: str,
    destination: str,
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
    providers: ProviderRegistry = DEFAULT_PROVIDERS,
) -> PaymentView:
    """Sends own funds out. Credit is not withdrawable: the amount must fit `balance - held`."""
    check_amount("amount", amount_minor)
    if not destination:
        raise InvalidArgument.for_field("destination", "is required")
    now = clock.now()
    adapter = providers.get(provider)
    request = {"account_id": account_id, "amount": amount_minor, "currency": currency, "destination": destination}
    claim = await idempotency.claim(session, "withdraw", idempotency_key, request, now=now)
    if claim.is_replay:
        return payment_view(await _payment(session, claim.replay_of or ""))
    await accounts.load(session, account_id)
    account = (await lock_accounts(session, [account_id]))[account_id]
    if account.currency != currency:
        raise InvalidArgument.for_field("amount.currency", f"account {account_id} holds {account.currency}")
    own = account.balance_minor - account.held_minor
    if amount_minor > own:
        raise FailedPrecondition(
            f"insufficient funds on account {account_id}: withdrawable {max(own, 0)} {currency}, "
            f"requested {amount_minor} {currency}"
        )
    result = adapter.transfer(
        amount_minor=amount_minor, currency=currency, destination=destination, idempotency_key=idempotency_key
    )

    async def postings(clearing_id: str, payment_id: str) -> tuple[list[PostingSpec], dict[str, LedgerAccount]]:
        return [
            PostingSpec(account_id, -amount_minor, f"withdrawal {payment_id}"),
            PostingSpec(clearing_id, amount_minor, result.reference),
        ], {account_id: account}

    transfer = _ProviderTransfer(
        account_id, -1, "withdrawal", EntryKind.WITHDRAWAL, "withdrawal", amount_minor, currency, idempotency_key
    )
    return await _record_provider_result(session, claim, transfer, adapter.name, result, postings, now, actor)


@dataclass(frozen=True)
class _ProviderTransfer:
    """Money moved through a provider, in (direction +1) or out (-1) of a customer account."""

    account_id: str
    direction: int
    purpose: str
    kind: EntryKind
    label: str  # the entry's description: "<label> via <provider>"
    amount_minor: int
    currency: str
    idempotency_key: str  # the caller's: the provider's and the journal entry's key too


async def _record_provider_result(
    session: AsyncSession,
    claim: idempotency.Claim,
    transfer: _ProviderTransfer,
    provider: str,
    result: ProviderResult,
    postings: Callable[[str, str], Awaitable[tuple[list[PostingSpec], dict[str, LedgerAccount]]]],
    now: dt.datetime,
    actor: Actor,
) -> PaymentView:
    """Records the provider's answer as a payment and, when it succeeded, posts it against the provider's
    clearing account (`postings(clearing account, payment id)`); completes the idempotency claim."""
    payment = Payment(
        id=new_id("pay"),
        account_id=transfer.account_id,
        direction=transfer.direction,
        purpose=transfer.purpose,
        amount_minor=transfer.amount_minor,
        currency=transfer.currency,
        state=int(PaymentState.SUCCEEDED if result.succeeded else PaymentState.FAILED),
        provider=provider,
        provider_reference=result.reference,
        created_at=now,
    )
    session.add(payment)
    if result.succeeded:
        clearing = await accounts.provider_clearing(session, provider, transfer.currency, now)
        specs, locked = await postings(clearing.id, payment.id)
        entry = await post_entry(
            session,
            kind=transfer.kind,
            postings=specs,
            now=now,
            payment_id=payment.id,
            description=f"{transfer.label} via {provider}",
            actor=actor,
            idempotency_key=transfer.idempotency_key,
            locked=locked,
        )
        payment.entry_id = entry.entry_id
    await session.flush()
    await idempotency.complete(session, claim, payment.id)
    return payment_view(payment)


async def refunded_so_far(session: AsyncSession, settlement_id: str) -> int:
    """What the refunds reversing one settlement entry have given back so far."""
    refunded = (
        await session.exec(
            select(sa.func.coalesce(sa.func.sum(Posting.amount_minor), 0))
            .join(JournalEntry, col(JournalEntry.id) == col(Posting.entry_id))
            .where(
                JournalEntry.reverses_entry_id == settlement_id,
                JournalEntry.kind == int(EntryKind.REFUND),
                Posting.amount_minor > 0,
            )
        )
    ).one()
    return int(refunded)


async def _refund_order(
    session: AsyncSession,
    order_id: str,
    amount_minor: int | None,
    reason: str,
    key: str,
    now: dt.datetime,
    actor: Actor,
) -> RefundResult:
    settlements = list(
        await session.exec(
            select(JournalEntry)
            .where(JournalEntry.order_id == order_id, JournalEntry.kind == int(EntryKind.ORDER_SETTLEMENT))
            .order_by(col(JournalEntry.id))
        )
    )
    if not settlements:
        raise NotFound(f"no settled payment for order {order_id}")
    settlement = settlements[-1]
    if settlement.hold_id:  # serialises refunds of this order
        await session.exec(for_update(select(LedgerHold).where(LedgerHold.id == settlement.hold_id)))
    original = await load_entry(session, settlement.id)
    debits = [p for p in original.postings if p.amount_minor < 0]
    credits = [p for p in original.postings if p.amount_minor > 0]
    captured = sum(p.amount_minor for p in credits)
    currency = credits[0].currency
    refundable = captured - await refunded_so_far(session, settlement.id)
    amount = refundable if amount_minor is None else amount_minor
    if amount <= 0 or amount > refundable:
        raise FailedPrecondition(f"order {order_id}: refundable {refundable} {currency}, requested {amount}")
    wallet: LedgerAccount | None = None
    for p in debits:
        candidate = await accounts.load(session, p.account_id)
        if candidate.kind == AccountKind.ARREARS:  # the whole amount went to arrears: credit its wallet
            candidate = await accounts.load(session, candidate.owner_id)
        if candidate.kind in WALLET_KINDS:
            wallet = candidate
            break
    if wallet is None:
        raise FailedPrecondition(f"order {order_id}: no customer wallet in its settlement")
    credit, locked = await _credit_customer(session, wallet, amount, f"refund order {order_id}")
    # Take the refund back from each credited line in proportion; the last line takes the rounding rest.
    back: list[PostingSpec] = []
    remaining = amount
    for i, p in enumerate(credits):
        share = remaining if i == len(credits) - 1 else round_half_up(p.amount_minor * amount, captured)
        share = min(share, remaining)
        remaining -= share
        back.append(PostingSpec(p.account_id, -share, f"refund: {p.memo}"))
    entry = await post_entry(
        session,
        kind=EntryKind.REFUND,
        postings=[*credit, *back],
        now=now,
        order_id=order_id,
        hold_id=settlement.hold_id,
        reverses_entry_id=settlement.id,
        description=reason or f"refund of order {order_id}",
        actor=actor,
        idempotency_key=key,
        locked=locked,
    )
    return RefundResult(entry.entry_id, entry, amount, currency)


async def _refund_payment(
    session: AsyncSession,
    payment_id: str,
    amount_minor: int | None,
    reason: str,
    key: str,
    now: dt.datetime,
    actor: Actor,
    providers: ProviderRegistry,
) -> RefundResult:
    source = await _payment(session, payment_id, lock=True)
    if source.purpose != "top_up" or source.state != PaymentState.SUCCEEDED:
        raise FailedPrecondition(f"payment {payment_id} is not a succeeded top-up; only those can be refunded")
    refundable = source.amount_minor - source.refunded_minor
    amount = refundable if amount_minor is None else amount_minor
    if amount <= 0 or amount > refundable:
        raise FailedPrecondition(f"payment {payment_id}: refundable {refundable} {source.currency}, requested {amount}")
    wallet = (await lock_accounts(session, [source.account_id]))[source.account_id]
    if amount > wallet.balance_minor - wallet.held_minor:
        raise FailedPrecondition(
            f"insufficient funds on account {wallet.id}: "
            f"refunding {amount} to the payment method needs it in the wallet"
        )
    adapter = providers.get(source.provider)
    result = adapter.refund(
        amount_minor=amount, currency=source.currency, original_reference=source.provider_reference, idempotency_key=key
    )
    if not result.succeeded:
        raise FailedPrecondition(f"provider {adapter.name} refused the refund: {result.message}")
    refund = Payment(
        id=new_id("pay"),
        account_id=wallet.id,
        direction=-1,
        purpose="refund",
        amount_minor=amount,
        currency=source.currency,
        state=int(PaymentState.SUCCEEDED),
        provider=adapter.name,
        provider_reference=result.reference,
        source_payment_id=source.id,
        created_at=now,
    )
    session.add(refund)
    clearing = await accounts.provider_clearing(session, adapter.name, source.currency, now)
    entry = await post_entry(
        session,
        kind=EntryKind.REFUND,
        postings=[
            PostingSpec(wallet.id, -amount, f"refund of {payment_id} to payment method"),
            PostingSpec(clearing.id, amount, result.reference),
        ],
        now=now,
        payment_id=refund.id,
        reverses_entry_id=source.entry_id,
        description=reason or f"refund of payment {payment_id}",
        actor=actor,
        idempotency_key=key,
        locked={wallet.id: wallet},
    )
    refund.entry_id = entry.entry_id
    source.refunded_minor += amount
    session.add_all([refund, source])
    return RefundResult(refund.id, entry, amount, source.currency)


async def refund(
    session: AsyncSession,
    *,
    order_id: str = "",
    payment_id: str = "",
    amount_minor: int | None = None,
    reason: str = "",
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
    providers: ProviderRegistry = DEFAULT_PROVIDERS,
) -> RefundResult:
    """Refunds (part of) an order's settlement to the customer's wallet, taking it back from the operator and
    the platform in proportion; or (part of) a top-up back to its payment method."""
    if bool(order_id) == bool(payment_id):
        raise InvalidArgument.for_field("order_id", "give exactly one of order_id or payment_id")
    if amount_minor is not None:
        check_amount("amount", amount_minor)
    now = clock.now()
    request = {"order_id": order_id, "payment_id": payment_id, "amount": amount_minor, "reason": reason}
    claim = await idempotency.claim(session, "refund", idempotency_key, request, now=now)
    if claim.is_replay:
        refund_id, _, entry_id = (claim.replay_of or "").partition("|")
        entry = (await load_entries(session, [entry_id]))[0]
        credited = sum(p.amount_minor for p in entry.postings if p.amount_minor > 0)
        return RefundResult(refund_id, entry, credited, entry.postings[0].currency)
    if order_id:
        result = await _refund_order(session, order_id, amount_minor, reason, idempotency_key, now, actor)
    else:
        result = await _refund_payment(
            session, payment_id, amount_minor, reason, idempotency_key, now, actor, providers
        )
    await session.flush()
    await idempotency.complete(session, claim, f"{result.refund_id}|{result.entry.entry_id}")
    return result


async def allocate(
    session: AsyncSession,
    *,
    from_account_id: str,
    to_account_id: str,
    amount_minor: int,
    idempotency_key: str,
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
) -> JournalEntryRef:
    """Moves balance between two accounts of one owner tree (fleet → sub-fleet, or back)."""
    check_amount("amount", amount_minor)
    now = clock.now()
    request = {"from": from_account_id, "to": to_account_id, "amount": amount_minor}
    claim = await idempotency.claim(session, "allocate", idempotency_key, request, now=now)
    if claim.is_replay:
        return await load_entry(session, claim.replay_of or "")
    source = await accounts.load(session, from_account_id, field="from_account_id")
    target = await accounts.load(session, to_account_id, field="to_account_id")
    if source.currency != target.currency:
        raise InvalidArgument.for_field("to_account_id", "accounts hold different currencies")
    if source.tenant != target.tenant:
        raise FailedPrecondition("allocation only moves money within one tenant")
    entry = await post_entry(
        session,
        kind=EntryKind.ALLOCATION,
        postings=[
            PostingSpec(source.id, -amount_minor, "allocation out"),
            PostingSpec(target.id, amount_minor, "allocation in"),
        ],
        now=now,
        description="balance allocation",
        actor=actor,
        idempotency_key=idempotency_key,
    )
    await idempotency.complete(session, claim, entry.entry_id)
    return entry


async def order_tenants(session: AsyncSession, order_id: str) -> set[str]:
    """Tenants whose accounts an order's settlement credited (who may refund it)."""
    rows = await session.exec(
        select(LedgerAccount.tenant)
        .join(Posting, col(Posting.account_id) == col(LedgerAccount.id))
        .join(JournalEntry, col(JournalEntry.id) == col(Posting.entry_id))
        .where(
            JournalEntry.order_id == order_id,
            JournalEntry.kind == int(EntryKind.ORDER_SETTLEMENT),
            Posting.amount_minor > 0,
        )
    )
    return set(rows)


async def check_may_refund(session: AsyncSession, principal: Principal, order_id: str, *, payment_id: str = "") -> None:
    """Who may refund: the platform admin anything; a tenant an order whose settlement credited it, and only
    to the customer's wallet (refunding to the payment method, by payment id, is the admin's alone)."""
    if principal.is_admin:
        return
    if payment_id:
        raise PermissionDenied("only the platform admin refunds payments to their payment method")
    if str(principal.tenant) not in await order_tenants(session, order_id):
        raise NotFound(f"no settled payment for order {order_id}")
