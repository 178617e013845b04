"""Accounts: who owns which account, system accounts, balances and who may see them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Driver, SubFleet  # read-only: fleet membership decides who spends
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.errors import InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.settlement.models import LedgerAccount, Posting
from voltcloud.settlement.money import DEFAULT_CURRENCY, AccountKind, check_currency
from voltcloud.settlement.sql import insert_ignore
from voltcloud.stations.api import MobileUnit  # read-only: which operator employs a unit

# Accounts customers spend from: they may never go below their limit.
WALLET_KINDS = frozenset({AccountKind.CUSTOMER, AccountKind.FLEET})
# Hot system accounts: balance summed from postings, no row lock per entry, no limit.
UNTRACKED_KINDS = frozenset({AccountKind.PLATFORM_REVENUE, AccountKind.PROVIDER_CLEARING, AccountKind.PROMOTIONS})
OWNER_KINDS = frozenset({"driver", "fleet", "subfleet", "operator", "specialist", "platform", "provider", "account"})


@dataclass(frozen=True)
class AccountView:
    id: str
    kind: AccountKind
    owner_kind: str
    owner_id: str
    tenant: str
    name: str
    currency: str
    balance_minor: int
    held_minor: int
    credit_limit_minor: int
    frozen: bool
    version: int
    created_at: dt.datetime

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.held_minor + self.credit_limit_minor


def _tenant_for(owner_kind: str, owner_id: str, tenant: str | None) -> str:
    if tenant is not None:
        return tenant
    if owner_kind in ("operator", "fleet", "driver"):
        return f"{owner_kind}:{owner_id}"
    return ""


async def ensure_account(
    session: AsyncSession,
    *,
    kind: AccountKind,
    owner_kind: str,
    owner_id: str,
    currency: str,
    now: dt.datetime,
    name: str = "",
    tenant: str | None = None,
    credit_limit_minor: int = 0,
) -> LedgerAccount:
    """The account of this owner, kind and currency; created if missing (concurrent creators converge)."""
    if owner_kind not in OWNER_KINDS:
        raise InvalidArgument.for_field("owner_kind", f"unknown owner kind {owner_kind!r}")
    if not owner_id:
        raise InvalidArgument.for_field("owner_id", "is required")
    check_currency("currency", currency)
    query = select(LedgerAccount).where(
        LedgerAccount.owner_kind == owner_kind,
        LedgerAccount.owner_id == owner_id,
        LedgerAccount.kind == int(kind),
        LedgerAccount.currency == currency,
    )
    found = (await session.exec(query)).one_or_none()
    if found is not None:
        return found
    await insert_ignore(
        session,
        LedgerAccount,
        {
            "id": new_id("acc"),
            "kind": int(kind),
            "owner_kind": owner_kind,
            "owner_id": owner_id,
            "tenant": _tenant_for(owner_kind, owner_id, tenant),
            "name": name or f"{kind.name.lower()} {owner_id}",
            "currency": currency,
            "balance_minor": 0,
            "held_minor": 0,
            "credit_limit_minor": credit_limit_minor,
            "enforce_limit": kind in WALLET_KINDS,
            "tracks_balance": kind not in UNTRACKED_KINDS,
            "frozen": False,
            "version": 1,
            "created_at": now,
        },
    )
    return (await session.exec(query.execution_options(populate_existing=True))).one()


async def platform_revenue(session: AsyncSession, currency: str, now: dt.datetime) -> LedgerAccount:
    return await ensure_account(
        session,
        kind=AccountKind.PLATFORM_REVENUE,
        owner_kind="platform",
        owner_id="platform",
        currency=currency,
        now=now,
    )


async def provider_clearing(session: AsyncSession, provider: str, currency: str, now: dt.datetime) -> LedgerAccount:
    return await ensure_account(
        session,
        kind=AccountKind.PROVIDER_CLEARING,
        owner_kind="provider",
        owner_id=provider,
        currency=currency,
        now=now,
        name=f"{provider} clearing",
    )


async def promotions(session: AsyncSession, currency: str, now: dt.datetime) -> LedgerAccount:
    return await ensure_account(
        session, kind=AccountKind.PROMOTIONS, owner_kind="platform", owner_id="platform", currency=currency, now=now
    )


async def operator_payable(session: AsyncSession, operator_id: str, currency: str, now: dt.datetime) -> LedgerAccount:
    return await ensure_account(
        session, kind=AccountKind.OPERATOR, owner_kind="operator", owner_id=operator_id, currency=currency, now=now
    )


async def arrears_of(session: AsyncSession, wallet: LedgerAccount, now: dt.datetime) -> LedgerAccount:
    """The arrears account of a wallet: negative balance = what the customer owes after an over-capture."""
    return await ensure_account(
        session,
        kind=AccountKind.ARREARS,
        owner_kind="account",
        owner_id=wallet.id,
        currency=wallet.currency,
        now=now,
        tenant=wallet.tenant,
        name=f"arrears of {wallet.name}",
    )


async def find_arrears(session: AsyncSession, wallet: LedgerAccount) -> LedgerAccount | None:
    query = select(LedgerAccount).where(
        LedgerAccount.owner_kind == "account",
        LedgerAccount.owner_id == wallet.id,
        LedgerAccount.kind == int(AccountKind.ARREARS),
    )
    return (await session.exec(query)).one_or_none()


async def summed_balance(session: AsyncSession, account_id: str) -> int:
    total = (
        await session.exec(
            select(sa.func.coalesce(sa.func.sum(Posting.amount_minor), 0)).where(Posting.account_id == account_id)
        )
    ).one()
    return int(total)


async def view(session: AsyncSession, account: LedgerAccount) -> AccountView:
    balance = account.balance_minor if account.tracks_balance else await summed_balance(session, account.id)
    return AccountView(
        id=account.id,
        kind=AccountKind(account.kind),
        owner_kind=account.owner_kind,
        owner_id=account.owner_id,
        tenant=account.tenant,
        name=account.name,
        currency=account.currency,
        balance_minor=balance,
        held_minor=account.held_minor,
        credit_limit_minor=account.credit_limit_minor,
        frozen=account.frozen,
        version=account.version,
        created_at=account.created_at,
    )


async def load(session: AsyncSession, account_id: str, *, field: str = "account_id") -> LedgerAccount:
    if not account_id:
        raise InvalidArgument.for_field(field, "is required")
    account = await session.get(LedgerAccount, account_id, populate_existing=True)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    return account


def can_see(principal: Principal, account: LedgerAccount) -> bool:
    if principal.is_admin:
        return True
    if principal.role is Role.DRIVER:
        return account.tenant == f"driver:{principal.subject}"
    return principal.tenant is not None and account.tenant == str(principal.tenant)


async def visible(
    session: AsyncSession, principal: Principal, account_id: str, *, field: str = "account_id"
) -> LedgerAccount:
    """The account if the caller may see it; NOT_FOUND otherwise, so ids cannot be probed."""
    account = await load(session, account_id, field=field)
    if not can_see(principal, account):
        raise NotFound(f"account {account_id} not found")
    return account


# --- who may spend from an account (issue 9, finding 2) ---------------------------------------------------


async def may_spend(session: AsyncSession, principal: Principal, account: LedgerAccount) -> bool:
    """Whether `principal` may spend from this wallet (hold, charge, withdraw): the one rule for every place
    that takes money from an account the caller names.

    Only customer wallets are ever spent from by a caller: a driver's own wallet (the driver alone); a fleet's
    account and its sub-fleets' allocations (the fleet's manager, and the fleet's drivers by their driver row,
    never by a claim in the token). The platform admin may spend from any wallet. Seeing an account (its
    tenant) is not enough: an operator sees its specialists' accounts but must not spend them."""
    if account.kind not in WALLET_KINDS:
        return False
    if principal.is_admin:
        return True
    if account.owner_kind == "driver":
        return principal.role is Role.DRIVER and account.owner_id == principal.subject
    fleet_id = await _spending_fleet(session, principal)
    if fleet_id is None:
        return False
    if account.owner_kind == "fleet":
        return account.owner_id == fleet_id
    if account.owner_kind == "subfleet":
        sub_fleet = await session.get(SubFleet, account.owner_id)
        return sub_fleet is not None and sub_fleet.fleet_id == fleet_id
    return False


def own_payable(principal: Principal, account: LedgerAccount) -> bool:
    """The caller operator's own payable account (its earnings): the one non-wallet account an operator may
    spend from (withdraw, fund its coupons). Its specialists' accounts are theirs, paid out by payouts."""
    tenant = principal.tenant
    return (
        principal.role is Role.OPERATOR
        and tenant is not None
        and tenant.kind == "operator"
        and account.kind == int(AccountKind.OPERATOR)
        and account.owner_kind == "operator"
        and account.owner_id == tenant.id
    )


async def _spending_fleet(session: AsyncSession, principal: Principal) -> str | None:
    """The fleet whose money the caller may spend: a manager's tenant, a driver's fleet by membership."""
    if principal.role is Role.FLEET_MANAGER:
        tenant = principal.tenant
        return tenant.id if tenant is not None and tenant.kind == "fleet" else None
    if principal.role is Role.DRIVER:
        driver = await session.get(Driver, principal.subject)
        return driver.fleet_id if driver is not None else None
    return None


async def spendable(
    session: AsyncSession, principal: Principal, account_id: str, *, field: str = "payer.account_id"
) -> LedgerAccount:
    """The account if `principal` may spend from it; PERMISSION_DENIED otherwise. An unknown id gets the same
    answer as someone else's account, so a refusal tells nothing about which ids exist."""
    if not account_id:
        raise InvalidArgument.for_field(field, "is required")
    account = await session.get(LedgerAccount, account_id, populate_existing=True)
    if account is None or not await may_spend(session, principal, account):
        raise PermissionDenied(f"{principal.subject} may not spend from account {account_id}")
    return account


async def scope(session: AsyncSession, principal: Principal, account_id: str) -> list[str] | None:
    """The accounts a listing covers: the one named (if the caller sees it), else all the caller sees
    (None: every account, for the admin)."""
    if account_id:
        await visible(session, principal, account_id)
        return [account_id]
    return await tenant_account_ids(session, principal)


async def withdrawable(session: AsyncSession, principal: Principal, account_id: str) -> LedgerAccount:
    """The account if the caller may withdraw from it: withdrawing spends the account, so seeing it (an
    operator sees its specialists' accounts) is not enough: its own payable or a wallet it may spend."""
    account = await visible(session, principal, account_id)
    if not own_payable(principal, account) and not await may_spend(session, principal, account):
        raise PermissionDenied(f"{principal.subject} may not withdraw from account {account_id}")
    return account


async def operator_account(session: AsyncSession, account_id: str, *, field: str) -> LedgerAccount:
    """The operator account a capture pays: any other kind is a caller's mistake, not a missing row."""
    account = await load(session, account_id, field=field)
    if account.kind != AccountKind.OPERATOR:
        raise InvalidArgument.for_field(field, "is not an operator account")
    return account


async def customer_of(session: AsyncSession, account_id: str) -> tuple[str, str]:
    """(owner_kind, owner_id) of the paying account, or ("", "") when none is named."""
    if not account_id:
        return "", ""
    account = await load(session, account_id)
    return account.owner_kind, account.owner_id


@dataclass(frozen=True)
class NewAccount:
    """An account a caller asked to open, after the creation policy: who owns it and in which tenant."""

    kind: AccountKind
    owner_kind: str
    owner_id: str
    tenant: str | None
    currency: str


# Kinds a caller may open, and the owner kind each implies; the rest are opened by the ledger itself.
_OWNER_KIND = {
    AccountKind.CUSTOMER: "driver",
    AccountKind.OPERATOR: "operator",
    AccountKind.PROVIDER_CLEARING: "provider",
    AccountKind.PLATFORM_REVENUE: "platform",
    AccountKind.PROMOTIONS: "platform",
}


def _owner(principal: Principal, kind: AccountKind, owner_id: str) -> tuple[str, str, str | None]:
    """(owner_kind, owner_id, tenant) of a new account of `kind` asked for by `principal`."""
    tenant_id = principal.tenant.id if principal.tenant else ""
    owner_id = owner_id or tenant_id
    if kind is AccountKind.FLEET:
        # A manager opening an account for another fleet id opens one of its sub-fleets' allocations.
        owner_kind = "fleet" if principal.is_admin or owner_id == tenant_id else "subfleet"
        return owner_kind, owner_id, f"fleet:{tenant_id}" if owner_kind == "subfleet" else None
    if kind is AccountKind.SPECIALIST:
        return "specialist", owner_id, f"operator:{tenant_id}" if tenant_id else ""
    if kind not in _OWNER_KIND:
        raise InvalidArgument.for_field("kind", f"{kind.name.lower()} accounts are created by the ledger itself")
    owner_kind = _OWNER_KIND[kind]
    return owner_kind, (owner_id or "platform") if owner_kind == "platform" else owner_id, None


def plan_account(
    principal: Principal, kind: int, owner_id: str, currency: str, *, sets_credit_limit: bool
) -> NewAccount:
    """Who may create which account: the platform admin any kind; an operator its own operator and specialist
    accounts; a fleet manager fleet accounts. Credit limits are the admin's alone. (Which owner ids are inside
    the caller's tenant needs the tables: `may_create_for`.)"""
    currency = check_currency("currency", currency or DEFAULT_CURRENCY)
    try:
        account_kind = AccountKind(kind)
    except ValueError:
        raise InvalidArgument.for_field("kind", f"unknown account kind {kind}") from None
    owner_kind, owner_id, tenant = _owner(principal, account_kind, owner_id)
    allowed = principal.is_admin or (
        (principal.role is Role.OPERATOR and account_kind in (AccountKind.OPERATOR, AccountKind.SPECIALIST))
        or (principal.role is Role.FLEET_MANAGER and account_kind is AccountKind.FLEET)
    )
    if not allowed:
        kind_name = account_kind.name.lower()
        raise PermissionDenied(f"{principal.subject} may not create a {kind_name} account for {owner_id}")
    if sets_credit_limit and not principal.is_admin:
        raise PermissionDenied("only the platform admin sets credit limits")
    return NewAccount(account_kind, owner_kind, owner_id, tenant, currency)


async def check_may_create(session: AsyncSession, principal: Principal, plan: NewAccount) -> None:
    if not await may_create_for(session, principal, plan.owner_kind, plan.owner_id):
        raise PermissionDenied(
            f"{principal.subject} may not create a {plan.kind.name.lower()} account "
            f"for {plan.owner_kind} {plan.owner_id}"
        )


async def may_create_for(session: AsyncSession, principal: Principal, owner_kind: str, owner_id: str) -> bool:
    """Whether `principal` may open an account owned by (owner_kind, owner_id) (issue 9, finding 6): only for
    owners inside the caller's own tenant. A fleet manager for the fleet and its own sub-fleets; an operator
    for itself and its own units (specialists, vans). The platform admin for anyone."""
    if principal.is_admin:
        return True
    tenant = principal.tenant
    if tenant is None:
        return False
    if principal.role is Role.FLEET_MANAGER and tenant.kind == "fleet":
        if owner_kind == "fleet":
            return owner_id == tenant.id
        sub_fleet = await session.get(SubFleet, owner_id) if owner_kind == "subfleet" else None
        return sub_fleet is not None and sub_fleet.fleet_id == tenant.id
    if principal.role is Role.OPERATOR and tenant.kind == "operator":
        if owner_kind == "operator":
            return owner_id == tenant.id
        unit = await session.get(MobileUnit, owner_id) if owner_kind == "specialist" else None
        return unit is not None and unit.operator_id == tenant.id
    return False


async def list_accounts(
    session: AsyncSession,
    principal: Principal,
    *,
    owner_id: str | None,
    kinds: Sequence[int],
    currency: str | None,
    page: Page,
) -> list[LedgerAccount]:
    query = select(LedgerAccount).order_by(col(LedgerAccount.id)).limit(page.size)
    if not principal.is_admin:
        query = query.where(LedgerAccount.tenant == (str(principal.tenant) if principal.tenant else "-"))
    if owner_id:
        query = query.where(LedgerAccount.owner_id == owner_id)
    if kinds:
        query = query.where(col(LedgerAccount.kind).in_(list(kinds)))
    if currency:
        query = query.where(LedgerAccount.currency == currency)
    if page.after is not None:
        query = query.where(col(LedgerAccount.id) > page.after)
    return list(await session.exec(query))


async def tenant_account_ids(session: AsyncSession, principal: Principal) -> list[str] | None:
    """Ids of the accounts the caller may see; None for the platform admin (all)."""
    if principal.is_admin:
        return None
    if principal.role is Role.DRIVER:
        tenant = f"driver:{principal.subject}"
    elif principal.tenant is not None:
        tenant = str(principal.tenant)
    else:
        return []
    return list(await session.exec(select(LedgerAccount.id).where(LedgerAccount.tenant == tenant)))


async def check_sees_entry(session: AsyncSession, principal: Principal, entry_id: str, account_ids: set[str]) -> None:
    """A journal entry is visible to whoever sees one of its postings' accounts; NOT_FOUND otherwise."""
    visible_ids = await tenant_account_ids(session, principal)
    if visible_ids is not None and not account_ids & set(visible_ids):
        raise NotFound(f"journal entry {entry_id} not found")
