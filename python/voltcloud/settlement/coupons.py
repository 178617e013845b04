"""Coupons and equity deductions: fixed or percentage discounts with caps, minimum order, validity window,
redemption limits; a redemption is a COUPON entry from the funding (promotions) account to the customer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.ids import new_id
from voltcloud.settlement import accounts
from voltcloud.settlement.holds import SYSTEM_CLOCK
from voltcloud.settlement.ledger import SYSTEM, Actor, JournalEntryRef, PostingSpec, load_entry, post_entry
from voltcloud.settlement.models import Coupon, CouponRedemption
from voltcloud.settlement.money import EntryKind, check_currency, round_half_up
from voltcloud.settlement.sql import for_update


@dataclass(frozen=True)
class CouponSpec:
    code: str
    currency: str = "CNY"
    amount_off_minor: int = 0
    percent_off_bp: int = 0
    max_discount_minor: int | None = None
    min_order_minor: int | None = None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    max_redemptions: int = 0
    max_redemptions_per_account: int = 0
    modes: tuple[int, ...] = ()
    operator_id: str = ""
    funding_account_id: str = ""


@dataclass(frozen=True)
class Redemption:
    coupon_id: str
    discount_minor: int
    entry: JournalEntryRef


def _modes(row: Coupon) -> set[int]:
    return {int(m) for m in row.modes.split(",") if m}


def discount_for(
    row: Coupon,
    *,
    amount_minor: int,
    at: dt.datetime,
    mode: int = 0,
    operator_id: str = "",
    currency: str | None = None,
) -> int:
    """The discount this coupon gives on an order of `amount_minor`; FailedPrecondition when it does not apply."""
    if currency is not None and currency != row.currency:
        raise FailedPrecondition(f"coupon {row.code} is in {row.currency}, the order in {currency}")
    if row.valid_from is not None and at < row.valid_from:
        raise FailedPrecondition(f"coupon {row.code} is not valid before {row.valid_from.isoformat()}")
    if row.valid_to is not None and at >= row.valid_to:
        raise FailedPrecondition(f"coupon {row.code} expired at {row.valid_to.isoformat()}")
    if row.max_redemptions and row.redemptions >= row.max_redemptions:
        raise FailedPrecondition(f"coupon {row.code} is used up")
    if mode and _modes(row) and mode not in _modes(row):
        raise FailedPrecondition(f"coupon {row.code} does not apply to this mode")
    if row.operator_id and operator_id and row.operator_id != operator_id:
        raise FailedPrecondition(f"coupon {row.code} applies only at operator {row.operator_id}'s stations")
    if row.min_order_minor is not None and amount_minor < row.min_order_minor:
        raise FailedPrecondition(f"coupon {row.code} needs an order of at least {row.min_order_minor}")
    if row.percent_off_bp:
        discount = round_half_up(amount_minor * row.percent_off_bp, 10_000)
        if row.max_discount_minor is not None:
            discount = min(discount, row.max_discount_minor)
    else:
        discount = row.amount_off_minor
    return max(0, min(discount, amount_minor))


async def find(session: AsyncSession, code: str, *, lock: bool = False) -> Coupon:
    if not code:
        raise InvalidArgument.for_field("coupon_code", "is required")
    query = select(Coupon).where(Coupon.code == code)
    row: Coupon | None = (await session.exec(for_update(query) if lock else query)).one_or_none()
    if row is None:
        raise NotFound(f"coupon {code} not found")
    return row


async def issuer(
    session: AsyncSession,
    principal: Principal,
    operator_id: str,
    funding_account_id: str,
    currency: str,
    now: dt.datetime,
) -> tuple[str, str]:
    """(operator_id, funding_account_id) of a new coupon: the platform admin issues for anyone from any
    account; an operator issues for itself only and funds its coupons from its own payable account, never
    from a specialist's (its payable account by default)."""
    if principal.is_admin:
        return operator_id, funding_account_id
    own = principal.tenant.id if principal.tenant else ""
    if operator_id and operator_id != own:
        raise PermissionDenied(f"{principal.subject} may not issue coupons for operator {operator_id}")
    if not funding_account_id:
        return own, (await accounts.operator_payable(session, own, currency, now)).id
    account = await accounts.visible(session, principal, funding_account_id, field="coupon.funding_account_id")
    if not accounts.own_payable(principal, account):
        raise PermissionDenied(f"coupons of {own} are funded from {own}'s operator account only")
    return own, funding_account_id


async def estimate_discount(
    session: AsyncSession, code: str, *, amount_minor: int, at: dt.datetime, mode: int, currency: str
) -> int:
    """What a coupon code would take off an estimate (0 without a code); an unknown code is an error."""
    if not code:
        return 0
    coupon = await find(session, code)
    return discount_for(coupon, amount_minor=amount_minor, at=at, mode=mode, currency=currency)


async def create_coupon(
    session: AsyncSession, spec: CouponSpec, *, idempotency_key: str, clock: Clock = SYSTEM_CLOCK
) -> Coupon:
    now = clock.now()
    check_currency("coupon.amount_off.currency", spec.currency)
    if not spec.code or len(spec.code) > 64:
        raise InvalidArgument.for_field("coupon.code", "is required, at most 64 characters")
    if bool(spec.amount_off_minor) == bool(spec.percent_off_bp):
        raise InvalidArgument.for_field(
            "coupon.amount_off", "give exactly one of amount_off or percent_off_basis_points"
        )
    if spec.amount_off_minor < 0:
        raise InvalidArgument.for_field("coupon.amount_off", "must be positive")
    if not 0 <= spec.percent_off_bp <= 10_000:
        raise InvalidArgument.for_field("coupon.percent_off_basis_points", "must be within [0, 10000]")
    if spec.valid_from and spec.valid_to and spec.valid_to <= spec.valid_from:
        raise InvalidArgument.for_field("coupon.valid.end", "must be after the start")
    if spec.max_redemptions < 0 or spec.max_redemptions_per_account < 0:
        raise InvalidArgument.for_field("coupon.max_redemptions", "must not be negative")
    request = {
        "code": spec.code,
        "currency": spec.currency,
        "off": [spec.amount_off_minor, spec.percent_off_bp, spec.max_discount_minor, spec.min_order_minor],
        "valid": [spec.valid_from, spec.valid_to],
        "limits": [spec.max_redemptions, spec.max_redemptions_per_account],
        "modes": list(spec.modes),
        "operator": spec.operator_id,
        "funding": spec.funding_account_id,
    }
    claim = await idempotency.claim(session, "create_coupon", idempotency_key, request, now=now)
    if claim.is_replay:
        return await find(session, spec.code)
    if (await session.exec(select(Coupon.id).where(Coupon.code == spec.code))).first() is not None:
        raise InvalidArgument.for_field("coupon.code", f"code {spec.code!r} is taken")
    if spec.funding_account_id:
        funding = await accounts.load(session, spec.funding_account_id, field="coupon.funding_account_id")
        if funding.currency != spec.currency:
            raise InvalidArgument.for_field("coupon.funding_account_id", "holds another currency")
    else:
        funding = await accounts.promotions(session, spec.currency, now)
    row = Coupon(
        id=new_id("cpn"),
        code=spec.code,
        currency=spec.currency,
        amount_off_minor=spec.amount_off_minor,
        percent_off_bp=spec.percent_off_bp,
        max_discount_minor=spec.max_discount_minor,
        min_order_minor=spec.min_order_minor,
        valid_from=spec.valid_from,
        valid_to=spec.valid_to,
        max_redemptions=spec.max_redemptions,
        max_redemptions_per_account=spec.max_redemptions_per_account,
        modes=",".join(str(m) for m in sorted(set(spec.modes))),
        operator_id=spec.operator_id,
        funding_account_id=funding.id,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await idempotency.complete(session, claim, row.id)
    return row


async def redeem_coupon(
    session: AsyncSession,
    *,
    code: str,
    account_id: str,
    order_id: str,
    order_amount_minor: int,
    idempotency_key: str,
    mode: int = 0,
    operator_id: str = "",
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
) -> Redemption:
    """Credits the coupon's discount on a settled order to the customer (a COUPON entry)."""
    now = clock.now()
    request = {"code": code, "account": account_id, "order": order_id, "amount": order_amount_minor, "mode": mode}
    claim = await idempotency.claim(session, "redeem_coupon", idempotency_key, request, now=now)
    if claim.is_replay:
        redemption = await session.get(CouponRedemption, claim.replay_of or "")
        if redemption is None:  # pragma: no cover
            raise NotFound("redemption not found")
        return Redemption(redemption.coupon_id, redemption.amount_minor, await load_entry(session, redemption.entry_id))
    coupon = await find(session, code, lock=True)
    wallet = await accounts.load(session, account_id)
    discount = discount_for(
        coupon, amount_minor=order_amount_minor, at=now, mode=mode, operator_id=operator_id, currency=wallet.currency
    )
    if coupon.max_redemptions_per_account:
        used = (
            await session.exec(
                select(sa.func.count())
                .select_from(CouponRedemption)
                .where(CouponRedemption.coupon_id == coupon.id, CouponRedemption.account_id == account_id)
            )
        ).one()
        if int(used) >= coupon.max_redemptions_per_account:
            raise FailedPrecondition(f"coupon {code} was already used the allowed number of times by this account")
    if discount == 0:
        raise FailedPrecondition(f"coupon {code} gives no discount on this order")
    entry = await post_entry(
        session,
        kind=EntryKind.COUPON,
        postings=[
            PostingSpec(coupon.funding_account_id, -discount, f"coupon {code}"),
            PostingSpec(wallet.id, discount, f"coupon {code} on order {order_id}"),
        ],
        now=now,
        order_id=order_id or None,
        description=f"coupon {code}",
        actor=actor,
        idempotency_key=idempotency_key,
    )
    coupon.redemptions += 1
    coupon.version += 1
    redemption = CouponRedemption(
        id=new_id("red"),
        coupon_id=coupon.id,
        account_id=account_id,
        order_id=order_id,
        amount_minor=discount,
        entry_id=entry.entry_id,
        created_at=now,
    )
    session.add_all([coupon, redemption])
    await session.flush()
    await idempotency.complete(session, claim, redemption.id)
    return Redemption(coupon.id, discount, entry)


async def check_coupon(
    session: AsyncSession,
    code: str,
    *,
    account_id: str,
    amount_minor: int,
    at: dt.datetime,
    mode: int = 0,
    operator_id: str = "",
    currency: str | None = None,
) -> int:
    """The discount `code` would give `account_id` on an order of `amount_minor` now, redeeming nothing:
    NotFound for an unknown code, FailedPrecondition (saying why) when it does not apply — expired, not yet
    valid, used up, used the allowed number of times by this account, another operator's, mode or currency."""
    coupon = await find(session, code)
    discount = discount_for(
        coupon, amount_minor=amount_minor, at=at, mode=mode, operator_id=operator_id, currency=currency
    )
    if coupon.max_redemptions_per_account:
        used = (
            await session.exec(
                select(sa.func.count())
                .select_from(CouponRedemption)
                .where(CouponRedemption.coupon_id == coupon.id, CouponRedemption.account_id == account_id)
            )
        ).one()
        if int(used) >= coupon.max_redemptions_per_account:
            raise FailedPrecondition(f"coupon {code} was already used the allowed number of times by this account")
    return discount
