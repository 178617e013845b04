"""Every completed order is checked for abnormal facts (settlement's abnormal-order detection) in the
transaction that completes it, and an overcharge is refunded to the original payment method at once.

The facts are the session's own: the energy and duration the station reported, the connector's max power (a
charge), the vehicle's usable capacity, the amount captured and the rate model pinned at order start, the
station's session id (a session charged twice is a duplicate). Settlement decides what is abnormal and what the
fair amount is (`settlement.detect_abnormal`); ordering only refunds the difference it reports
(`settlement.refund_difference`, idempotent per order) and writes the outcome into the order's history (an
event with the refunded amount and the flags), so GetOrder and WatchOrder show it at commit. An undercharge
is never charged automatically (settlement's rule). The check runs in a savepoint: a check that cannot run (a
rate model gone, say) is logged and never undoes the completion itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy.orm.exc import StaleDataError
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Vehicle
from voltcloud.ordering.models import Order
from voltcloud.ordering.states import Mode
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import DomainError
from voltcloud.settlement import api as settlement
from voltcloud.stations.api import Connector

log = logging.getLogger(__name__)

# The power check needs a session the station timed: below a minute, the start and stop reports' clocks (often
# a gateway's receive times) say nothing about the charging time, so only the other checks apply. Known gap: a
# forged sub-minute session is then caught by the capacity check only.
MIN_TIMED_SESSION_S = 60


def journal_reference(order_id: str) -> str:
    """How settlement's journal names an order: its hold's reference (`orders._hold`, `token_orders`)."""
    return f"order:{order_id}"


@dataclass(frozen=True)
class Outcome:
    flags: tuple[str, ...]
    refunded_minor: int
    detail: str


async def _facts(
    session: AsyncSession, order: Order, *, energy_wh: int, duration_s: int, at: dt.datetime, session_ref: str
) -> settlement.SessionFacts:
    started = at - dt.timedelta(seconds=duration_s)
    max_power_w = 0  # a swap hands over a charged pack: no power limit applies to the order's duration
    if order.mode == Mode.CHARGE and order.connector_id and duration_s >= MIN_TIMED_SESSION_S:
        connector = await session.get(Connector, order.connector_id)
        max_power_w = connector.max_power_w if connector is not None else 0
    vehicle = await session.get(Vehicle, order.vehicle_id)
    kind, customer = ("fleet", order.fleet_id) if order.fleet_id else ("driver", order.driver_id or order.created_by)
    return settlement.SessionFacts(
        order_id=journal_reference(order.id),
        station_id=order.station_id or "",
        started_at=started,
        ended_at=at,
        energy_wh=energy_wh,
        amount_minor=order.final_amount_minor or 0,
        currency=order.currency,
        max_power_w=max_power_w,
        capacity_wh=vehicle.usable_capacity_wh if vehicle is not None else 0,
        rate_model_id=order.rate_model_id,
        rate_model_version=order.rate_model_version if order.rate_model_id else 0,
        customer_kind=kind,
        customer_id=customer,
        vehicle_id=order.vehicle_id,
        connector_id=order.connector_id or "",
        external_session_id=session_ref,
    )


async def check_completed(
    session: AsyncSession,
    order: Order,
    *,
    energy_wh: int,
    duration_s: int,
    at: dt.datetime,
    session_ref: str = "",
    clock: Clock,
) -> Outcome | None:
    """Checks a just-completed order; refunds an overcharge. None when the order is normal (or has no
    station, or the check could not run)."""
    if not order.station_id or not order.journal_entry_id:
        return None  # nothing was captured, or no station's tariff to reprice with
    try:
        async with session.begin_nested():
            facts = await _facts(
                session, order, energy_wh=energy_wh, duration_s=duration_s, at=at, session_ref=session_ref
            )
            report = await settlement.detect_abnormal(session, facts, clock=clock)
            if not report.abnormal:
                return None
            refunded = 0
            if report.overcharged_minor > 0:
                refund = await settlement.refund_difference(
                    session, order_id=facts.order_id, idempotency_key=f"abnormal:{order.id}", clock=clock
                )
                refunded = refund.amount_minor
    except (DomainError, StaleDataError) as error:
        log.warning("abnormal-order check of %s did not run: %s", order.id, error)
        return None
    return Outcome(tuple(f.name for f in report.flags), refunded, "; ".join(report.details))
