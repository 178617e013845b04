"""Operator payouts on T+3: revenue credited more than `delay` ago is paid out in one batch per run."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.settlement import accounts
from voltcloud.settlement.holds import SYSTEM_CLOCK
from voltcloud.settlement.ledger import SYSTEM, Actor, PostingSpec, lock_accounts, post_entry
from voltcloud.settlement.models import JournalEntry, LedgerAccount, Payment, Payout, Posting
from voltcloud.settlement.money import AccountKind, EntryKind, PaymentState
from voltcloud.settlement.providers import DEFAULT_PROVIDERS, ProviderRegistry

SETTLEMENT_DELAY = dt.timedelta(days=3)


async def _recent_credits(session: AsyncSession, account_id: str, cutoff: dt.datetime) -> int:
    total = (
        await session.exec(
            select(sa.func.coalesce(sa.func.sum(Posting.amount_minor), 0))
            .join(JournalEntry, col(JournalEntry.id) == col(Posting.entry_id))
            .where(Posting.account_id == account_id, Posting.amount_minor > 0, col(JournalEntry.posted_at) > cutoff)
        )
    ).one()
    return int(total)


async def run_payouts(
    session: AsyncSession,
    *,
    idempotency_key: str,
    provider: str = "simulated",
    account_id: str = "",
    delay: dt.timedelta = SETTLEMENT_DELAY,
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
    providers: ProviderRegistry = DEFAULT_PROVIDERS,
) -> list[Payout]:
    """Pays each operator account its balance minus what was credited within `delay` (T+3 by default)."""
    now = clock.now()
    adapter = providers.get(provider)
    claim = await idempotency.claim(
        session, "run_payouts", idempotency_key, {"provider": adapter.name, "account": account_id}, now=now
    )
    if claim.is_replay:
        return list(await session.exec(select(Payout).where(Payout.batch == idempotency_key).order_by(col(Payout.id))))
    cutoff = now - delay
    query = select(LedgerAccount.id).where(LedgerAccount.kind == int(AccountKind.OPERATOR))
    if account_id:
        query = query.where(LedgerAccount.id == account_id)
    made: list[Payout] = []
    for operator_account_id in list(await session.exec(query.order_by(col(LedgerAccount.id)))):
        account = (await lock_accounts(session, [operator_account_id]))[operator_account_id]
        amount = min(account.balance_minor, account.balance_minor - await _recent_credits(session, account.id, cutoff))
        if amount <= 0:
            continue
        key = f"{idempotency_key}:{account.id}"
        result = adapter.transfer(
            amount_minor=amount,
            currency=account.currency,
            destination=f"operator:{account.owner_id}",
            idempotency_key=key,
        )
        payment = Payment(
            id=new_id("pay"),
            account_id=account.id,
            direction=-1,
            purpose="payout",
            amount_minor=amount,
            currency=account.currency,
            state=int(PaymentState.SUCCEEDED if result.succeeded else PaymentState.FAILED),
            provider=adapter.name,
            provider_reference=result.reference,
            created_at=now,
        )
        session.add(payment)
        entry_id = ""
        if result.succeeded:
            clearing = await accounts.provider_clearing(session, adapter.name, account.currency, now)
            entry = await post_entry(
                session,
                kind=EntryKind.PAYOUT,
                postings=[
                    PostingSpec(account.id, -amount, "payout"),
                    PostingSpec(clearing.id, amount, result.reference),
                ],
                now=now,
                payment_id=payment.id,
                description=f"payout of revenue settled before {cutoff.isoformat()}",
                actor=actor,
                idempotency_key=key,
                locked={account.id: account},
            )
            entry_id = payment.entry_id = entry.entry_id
        previous = (
            await session.exec(
                select(Payout.period_end)
                .where(Payout.account_id == account.id)
                .order_by(col(Payout.created_at).desc())
                .limit(1)
            )
        ).first()
        payout = Payout(
            id=new_id("po"),
            account_id=account.id,
            amount_minor=amount,
            currency=account.currency,
            period_start=previous,
            period_end=cutoff,
            state=payment.state,
            payment_id=payment.id,
            provider_reference=result.reference,
            entry_id=entry_id,
            batch=idempotency_key,
            created_at=now,
        )
        session.add(payout)
        made.append(payout)
    await session.flush()
    await idempotency.complete(session, claim, idempotency_key)
    return made


async def list_payouts(
    session: AsyncSession,
    *,
    account_ids: list[str] | None,
    states: list[int],
    created_from: dt.datetime | None,
    created_to: dt.datetime | None,
    page: Page,
) -> list[Payout]:
    query = select(Payout).order_by(col(Payout.id)).limit(page.size)
    if account_ids is not None:
        query = query.where(col(Payout.account_id).in_(account_ids))
    if states:
        query = query.where(col(Payout.state).in_(states))
    if created_from is not None:
        query = query.where(col(Payout.created_at) >= created_from)
    if created_to is not None:
        query = query.where(col(Payout.created_at) < created_to)
    if page.after is not None:
        query = query.where(col(Payout.id) > page.after)
    return list(await session.exec(query))
