"""The double-entry journal: the only code that writes postings or changes balances.

Every entry is balanced (postings sum to zero per currency) and immutable; corrections are new entries that
reference the entry they reverse. Accounts whose balance is kept on the row are changed by a guarded
`UPDATE ... SET balance_minor = balance_minor + :d ... RETURNING` in id order (the row lock it takes is the
lock order, so two entries never deadlock on each other), and a wallet's `balance - held + credit_limit`
may never go below zero.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.settlement.models import JournalEntry, LedgerAccount, Posting
from voltcloud.settlement.money import EntryKind
from voltcloud.settlement.sql import for_update, is_lost_race


@dataclass(frozen=True)
class Actor:
    subject: str = "system"
    role: int = 0
    tenant: str = ""


SYSTEM = Actor()


@dataclass(frozen=True)
class PostingSpec:
    account_id: str
    amount_minor: int
    memo: str = ""


@dataclass(frozen=True)
class PostingView:
    account_id: str
    amount_minor: int
    currency: str
    memo: str


@dataclass(frozen=True)
class JournalEntryRef:
    """A posted entry as other domains see it."""

    entry_id: str
    kind: EntryKind
    posted_at: dt.datetime | None
    postings: tuple[PostingView, ...] = ()
    order_id: str | None = None
    hold_id: str | None = None
    payment_id: str | None = None
    reverses_entry_id: str | None = None
    description: str = ""
    idempotency_key: str | None = None
    actor: Actor = field(default=SYSTEM)

    def amount_on(self, account_id: str) -> int:
        return sum(p.amount_minor for p in self.postings if p.account_id == account_id)


async def lock_accounts(session: AsyncSession, account_ids: Iterable[str]) -> dict[str, LedgerAccount]:
    """Locks the given accounts in id order and returns them fresh from the database."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    try:
        rows = await session.exec(
            for_update(select(LedgerAccount).where(col(LedgerAccount.id).in_(ids)).order_by(col(LedgerAccount.id)))
        )
    except sa.exc.DBAPIError as exc:
        if is_lost_race(exc):
            raise Aborted(f"lost a race locking accounts: {exc.orig}") from exc
        raise
    found = {a.id: a for a in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"account {missing[0]} not found")
    return found


def check_limit(account: LedgerAccount, needed: int = 0) -> None:
    """Refuses a state where the wallet's available balance is negative."""
    if not account.enforce_limit:
        return
    available = account.balance_minor - account.held_minor + account.credit_limit_minor
    if available < 0:
        raise FailedPrecondition(
            f"insufficient funds on account {account.id}: available "
            f"{available + needed} {account.currency}, needed {needed} {account.currency}"
        )


_ACCOUNT: sa.Table = LedgerAccount.__table__  # type: ignore[attr-defined]
_ENTRY: sa.Table = JournalEntry.__table__  # type: ignore[attr-defined]
_POSTING: sa.Table = Posting.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Meta:
    """The columns of an account that never change after creation."""

    currency: str
    tracks_balance: bool


# Account id -> immutable columns, shared by every transaction of the process (ids are globally unique, and
# currency and tracks_balance are never updated), so posting to known accounts needs no SELECT first.
_META_CACHE: dict[str, _Meta] = {}
_META_CACHE_MAX = 100_000

_SELECT_META = sa.select(_ACCOUNT.c.id, _ACCOUNT.c.currency, _ACCOUNT.c.tracks_balance).where(
    _ACCOUNT.c.id.in_(sa.bindparam("ids", expanding=True))
)
_SELECT_FROZEN = sa.select(_ACCOUNT.c.id).where(
    _ACCOUNT.c.id.in_(sa.bindparam("ids", expanding=True)), _ACCOUNT.c.frozen
)
_CREDIT = (
    sa.update(_ACCOUNT)
    .where(_ACCOUNT.c.id == sa.bindparam("account_id"))
    .values(balance_minor=_ACCOUNT.c.balance_minor + sa.bindparam("delta"), version=_ACCOUNT.c.version + 1)
    .returning(_ACCOUNT.c.balance_minor, _ACCOUNT.c.version)
)
# A debit: the account must not be frozen nor end below its limit (balance - held + credit_limit >= 0).
_DEBIT = _CREDIT.where(
    sa.not_(_ACCOUNT.c.frozen),
    sa.or_(
        sa.not_(_ACCOUNT.c.enforce_limit),
        _ACCOUNT.c.balance_minor - _ACCOUNT.c.held_minor + _ACCOUNT.c.credit_limit_minor >= sa.bindparam("need"),
    ),
)
_INSERT_ENTRY = sa.insert(_ENTRY)
_INSERT_POSTINGS = sa.insert(_POSTING)


async def _account_meta(connection: AsyncConnection, ids: set[str]) -> dict[str, _Meta]:
    meta = {i: _META_CACHE[i] for i in ids if i in _META_CACHE}
    unknown = sorted(ids - meta.keys())
    if unknown:
        rows = await connection.execute(_SELECT_META, {"ids": unknown})
        found = {r.id: _Meta(r.currency, r.tracks_balance) for r in rows}
        if len(_META_CACHE) + len(found) > _META_CACHE_MAX:
            _META_CACHE.clear()
        _META_CACHE.update(found)
        meta.update(found)
        missing = ids - meta.keys()
        if missing:
            raise NotFound(f"account {sorted(missing)[0]} not found")
    return meta


def _sync_identity_map(session: AsyncSession, account_id: str, balance: int, version: int) -> None:
    """Keeps a copy of the account already loaded in this session in step with the Core UPDATE, without
    making it dirty (so a later flush of the caller's own changes never writes a stale balance back)."""
    account = session.sync_session.identity_map.get(identity_key(LedgerAccount, account_id))
    if account is not None:
        set_committed_value(account, "balance_minor", balance)
        set_committed_value(account, "version", version)


async def _refused(connection: AsyncConnection, account_id: str, delta: int) -> FailedPrecondition:
    row = (
        await connection.execute(
            sa.select(
                _ACCOUNT.c.frozen,
                _ACCOUNT.c.currency,
                (_ACCOUNT.c.balance_minor - _ACCOUNT.c.held_minor + _ACCOUNT.c.credit_limit_minor).label("available"),
            ).where(_ACCOUNT.c.id == account_id)
        )
    ).one()
    if row.frozen:
        return FailedPrecondition(f"account {account_id} is frozen")
    return FailedPrecondition(
        f"insufficient funds on account {account_id}: available {row.available} {row.currency}, "
        f"needed {-delta} {row.currency}"
    )


async def post_entry(
    session: AsyncSession,
    *,
    kind: EntryKind,
    postings: Sequence[PostingSpec],
    now: dt.datetime,
    order_id: str | None = None,
    hold_id: str | None = None,
    payment_id: str | None = None,
    reverses_entry_id: str | None = None,
    description: str = "",
    actor: Actor = SYSTEM,
    idempotency_key: str | None = None,
    locked: dict[str, LedgerAccount] | None = None,
) -> JournalEntryRef:
    """Posts one balanced entry. `locked` (accounts the caller already locked in this transaction) is accepted
    for compatibility; the guarded UPDATE below re-reads every balance anyway.

    The hot path is Core SQL with prebuilt statements, no ORM unit of work: the accounts' immutable columns
    (currency, tracks_balance) come from a process cache (one SELECT for unseen accounts); then per
    balance-tracking account, in id order (the lock order), one
    `UPDATE ... SET balance_minor = balance_minor + :d WHERE id = :id [AND NOT frozen AND limit holds]
    RETURNING`, whose row lock and guard make the check and the change one atomic step; then one INSERT of
    the entry and one multi-row INSERT of its postings. A refused debit raises FailedPrecondition; the
    caller's transaction must then roll back (as after any error here)."""
    legs = [p for p in postings if p.amount_minor != 0]
    if not legs:
        raise InvalidArgument.for_field("postings", "an entry needs at least one non-zero posting")
    for p in legs:
        if isinstance(p.amount_minor, bool) or not isinstance(p.amount_minor, int):
            raise InvalidArgument.for_field("postings.amount", "amounts are integers in minor units")

    ids = {p.account_id for p in legs}
    await session.flush()  # the caller's pending ORM changes (held amounts, payments) go first
    connection = await session.connection()
    meta = await _account_meta(connection, ids)

    sums: dict[str, int] = defaultdict(int)
    deltas: dict[str, int] = defaultdict(int)
    for p in legs:
        sums[meta[p.account_id].currency] += p.amount_minor
        deltas[p.account_id] += p.amount_minor
    unbalanced = {c: s for c, s in sums.items() if s != 0}
    if unbalanced:
        raise InvalidArgument.for_field("postings", f"entry does not balance: {unbalanced}")
    # Untracked (system) accounts are never locked; a frozen one still takes no debit.
    untracked_debits = sorted(a for a, d in deltas.items() if d < 0 and not meta[a].tracks_balance)
    if untracked_debits:
        frozen = (await connection.execute(_SELECT_FROZEN, {"ids": untracked_debits})).scalars().first()
        if frozen is not None:
            raise FailedPrecondition(f"account {frozen} is frozen")

    for account_id in sorted(deltas):  # id order = lock order
        delta = deltas[account_id]
        if delta == 0 or not meta[account_id].tracks_balance:
            continue
        try:
            if delta > 0:
                result = await connection.execute(_CREDIT, {"account_id": account_id, "delta": delta})
            else:
                result = await connection.execute(_DEBIT, {"account_id": account_id, "delta": delta, "need": -delta})
            updated = result.first()
        except sa.exc.DBAPIError as exc:
            if is_lost_race(exc):
                raise Aborted(f"lost a race updating account {account_id}: {exc.orig}") from exc
            raise
        if updated is None:
            raise await _refused(connection, account_id, delta)
        _sync_identity_map(session, account_id, updated.balance_minor, updated.version)

    entry_id = new_id("je")
    description = description[:500]
    await connection.execute(
        _INSERT_ENTRY,
        {
            "id": entry_id,
            "kind": int(kind),
            "order_id": order_id,
            "hold_id": hold_id,
            "payment_id": payment_id,
            "reverses_entry_id": reverses_entry_id,
            "description": description,
            "posted_at": now,
            "actor_subject": actor.subject,
            "actor_role": actor.role,
            "actor_tenant": actor.tenant,
            "idempotency_key": idempotency_key,
        },
    )
    views = [PostingView(p.account_id, p.amount_minor, meta[p.account_id].currency, p.memo[:200]) for p in legs]
    await connection.execute(
        _INSERT_POSTINGS,
        [
            {
                "entry_id": entry_id,
                "account_id": v.account_id,
                "amount_minor": v.amount_minor,
                "currency": v.currency,
                "memo": v.memo,
            }
            for v in views
        ],
    )
    return JournalEntryRef(
        entry_id=entry_id,
        kind=EntryKind(int(kind)),
        posted_at=now,
        postings=tuple(views),
        order_id=order_id,
        hold_id=hold_id,
        payment_id=payment_id,
        reverses_entry_id=reverses_entry_id,
        description=description,
        idempotency_key=idempotency_key,
        actor=actor,
    )


def _ref(entry: JournalEntry, postings: Iterable[PostingView]) -> JournalEntryRef:
    return JournalEntryRef(
        entry_id=entry.id,
        kind=EntryKind(entry.kind),
        posted_at=entry.posted_at,
        postings=tuple(postings),
        order_id=entry.order_id,
        hold_id=entry.hold_id,
        payment_id=entry.payment_id,
        reverses_entry_id=entry.reverses_entry_id,
        description=entry.description,
        idempotency_key=entry.idempotency_key,
        actor=Actor(entry.actor_subject, entry.actor_role, entry.actor_tenant),
    )


async def load_entries(session: AsyncSession, entry_ids: Sequence[str]) -> list[JournalEntryRef]:
    if not entry_ids:
        return []
    entries = {
        e.id: e for e in await session.exec(select(JournalEntry).where(col(JournalEntry.id).in_(list(entry_ids))))
    }
    postings: dict[str, list[PostingView]] = defaultdict(list)
    rows = await session.exec(
        select(Posting).where(col(Posting.entry_id).in_(list(entry_ids))).order_by(col(Posting.id))
    )
    for p in rows:
        postings[p.entry_id].append(PostingView(p.account_id, p.amount_minor, p.currency, p.memo))
    return [_ref(entries[i], postings[i]) for i in entry_ids if i in entries]


async def load_entry(session: AsyncSession, entry_id: str) -> JournalEntryRef:
    found = await load_entries(session, [entry_id])
    if not found:
        raise NotFound(f"journal entry {entry_id} not found")
    return found[0]


async def reverse_entry(
    session: AsyncSession,
    entry_id: str,
    *,
    now: dt.datetime,
    description: str = "",
    actor: Actor = SYSTEM,
    kind: EntryKind = EntryKind.ADJUSTMENT,
) -> JournalEntryRef:
    """A correction: a new entry with every posting of `entry_id` negated."""
    original = await load_entry(session, entry_id)
    return await post_entry(
        session,
        kind=kind,
        postings=[PostingSpec(p.account_id, -p.amount_minor, f"reversal: {p.memo}") for p in original.postings],
        now=now,
        order_id=original.order_id,
        hold_id=original.hold_id,
        payment_id=original.payment_id,
        reverses_entry_id=original.entry_id,
        description=description or f"reversal of {original.entry_id}",
        actor=actor,
    )


async def list_entries(
    session: AsyncSession,
    *,
    account_ids: Sequence[str] | None,
    order_id: str | None,
    kinds: Sequence[int],
    posted_from: dt.datetime | None,
    posted_to: dt.datetime | None,
    limit: int,
    after: str | None,
) -> list[JournalEntryRef]:
    """Entries oldest first (by id), touching any of `account_ids` when given."""
    query = select(JournalEntry.id).order_by(col(JournalEntry.id)).limit(limit)
    if account_ids is not None:
        query = query.where(
            col(JournalEntry.id).in_(select(Posting.entry_id).where(col(Posting.account_id).in_(list(account_ids))))
        )
    if order_id:
        query = query.where(JournalEntry.order_id == order_id)
    if kinds:
        query = query.where(col(JournalEntry.kind).in_(list(kinds)))
    if posted_from is not None:
        query = query.where(col(JournalEntry.posted_at) >= posted_from)
    if posted_to is not None:
        query = query.where(col(JournalEntry.posted_at) < posted_to)
    if after is not None:
        query = query.where(col(JournalEntry.id) > after)
    return await load_entries(session, list(await session.exec(query)))
