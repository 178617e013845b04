"""CreateOrderRequest.coupon_code: validated when the order is made, redeemed once when it is paid.

At creation settlement checks the code against the order's estimated price, mode, operator, currency and the
payer's account (`settlement.check_coupon`): unknown is NOT_FOUND, expired / not yet valid / used up / used by
this account already / another operator's is FAILED_PRECONDITION saying which, and nothing is written. The code
is kept on the order. At capture (`lifecycle.complete`) the coupon is redeemed for what the order finally cost
(after any abnormal-order refund): a COUPON entry from the coupon's funding account to the wallet that paid,
idempotent per order, so it is consumed exactly once; the order's history records the discount. A coupon
that stopped applying between order and capture (it expired, or concurrent orders used it up) is not
redeemed, and the event says why.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.ordering.abnormal_orders import journal_reference
from voltcloud.ordering.models import Order
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import DomainError
from voltcloud.settlement import api as settlement

log = logging.getLogger(__name__)


async def attach(session: AsyncSession, order: Order, code: str, estimate_minor: int, now: dt.datetime) -> None:
    """Validates `code` for the order being created (its payer is known: call after the hold) and keeps it."""
    if not code:
        return
    await settlement.check_coupon(
        session,
        code,
        account_id=order.payer_account_id,
        amount_minor=estimate_minor,
        at=now,
        mode=order.mode,
        operator_id=order.operator_id or "",
        currency=order.currency,
    )
    order.coupon_code = code


async def redeem(session: AsyncSession, order: Order, paid_minor: int, clock: Clock) -> tuple[int, str]:
    """Redeems the order's coupon on what it cost; (discount credited, why not) — (0, "") without a coupon."""
    if not order.coupon_code or paid_minor <= 0:
        return 0, ""
    try:
        async with session.begin_nested():
            redemption = await settlement.redeem_coupon(
                session,
                code=order.coupon_code,
                account_id=order.payer_account_id,
                order_id=journal_reference(order.id),
                order_amount_minor=paid_minor,
                idempotency_key=f"coupon:{order.id}",
                mode=order.mode,
                operator_id=order.operator_id or "",
                clock=clock,
            )
    except DomainError as error:
        log.info("coupon %s of order %s not redeemed: %s", order.coupon_code, order.id, error)
        return 0, str(error)
    return redemption.discount_minor, ""
