"""Abnormal order detection and refunds of the difference.

`detect_abnormal` checks a completed order's session facts against physics, the tariff and the other orders:

- ENERGY_EXCEEDS_POWER: energy > station max power x charging duration (+ tolerance);
- ENERGY_EXCEEDS_CAPACITY: energy > the pack's/vehicle's usable capacity (+ tolerance);
- AMOUNT_MISMATCH: the amount charged != the session repriced with the rate model version pinned at order start
  (minus the order's discount), exact to the fen;
- LEDGER_MISMATCH: the amount the order reports != what its ORDER_SETTLEMENT entry captured;
- DUPLICATE_SESSION: the same station session (station + external session id) charged on another order
  that settled first; this order's fair amount is 0;
- OVERLAPPING_SESSION: the same vehicle or connector in a session overlapping another order's (flagged for
  review; which one is wrong is not knowable here, so no automatic refund).

The fair amount is the repriced amount with the energy capped at what is physically possible (0 for a
duplicate). `refund_difference` refunds `charged - refunded so far - fair` through an ordinary order refund
(a REFUND entry reversing the settlement in proportion: customer +, operator and platform -), idempotently.
An undercharge is reported, never charged automatically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.settlement import accounts, payments
from voltcloud.settlement.holds import SYSTEM_CLOCK
from voltcloud.settlement.ledger import SYSTEM, Actor, JournalEntryRef, load_entry
from voltcloud.settlement.models import JournalEntry, LedgerHold, OrderCheck, Posting
from voltcloud.settlement.money import EntryKind, check_amount, check_currency
from voltcloud.settlement.rates import price_estimate
from voltcloud.settlement.sql import for_update
from voltcloud.stations.api import Station  # read-only: which operator runs a station

DEFAULT_TOLERANCE_PERMILLE = 20  # meters and nameplates disagree a little: 2 %


class AbnormalFlag(enum.IntEnum):
    """Same numbers as voltcloud.v1.AbnormalFlag."""

    ENERGY_EXCEEDS_POWER = 1
    ENERGY_EXCEEDS_CAPACITY = 2
    AMOUNT_MISMATCH = 3
    LEDGER_MISMATCH = 4
    DUPLICATE_SESSION = 5
    OVERLAPPING_SESSION = 6


@dataclass(frozen=True)
class SessionFacts:
    """What a completed order's session was, as ordering and the station gateway reported it."""

    order_id: str
    station_id: str
    started_at: dt.datetime
    ended_at: dt.datetime
    energy_wh: int
    amount_minor: int
    currency: str = "CNY"
    max_power_w: int = 0  # the connector's/station's max power; 0 = unknown (not checked)
    capacity_wh: int = 0  # the pack's or vehicle's usable capacity; 0 = unknown (not checked)
    rate_model_id: str = ""  # pinned at order start; "" = resolve (not recommended)
    rate_model_version: int = 0
    customer_kind: str = ""
    customer_id: str = ""
    vehicle_id: str = ""
    connector_id: str = ""
    external_session_id: str = ""
    parking_s: int = 0
    discount_minor: int = 0

    @property
    def duration_s(self) -> int:
        return int((self.ended_at - self.started_at).total_seconds())


@dataclass(frozen=True)
class AbnormalReport:
    order_id: str
    flags: tuple[AbnormalFlag, ...]
    charged_minor: int
    expected_minor: int  # repriced with the pinned version and the reported energy
    fair_minor: int  # what should have been charged
    currency: str
    details: tuple[str, ...]
    related_order_ids: tuple[str, ...] = ()

    @property
    def abnormal(self) -> bool:
        return bool(self.flags)

    @property
    def overcharged_minor(self) -> int:
        return max(0, self.charged_minor - self.fair_minor)


@dataclass(frozen=True)
class DifferenceRefund:
    order_id: str
    amount_minor: int  # 0 = nothing (left) to refund
    currency: str
    entry: JournalEntryRef | None


def _validate(f: SessionFacts) -> None:
    if not f.order_id:
        raise InvalidArgument.for_field("order_id", "is required")
    if not f.station_id:
        raise InvalidArgument.for_field("station_id", "is required")
    if f.started_at.tzinfo is None or f.ended_at.tzinfo is None:
        raise InvalidArgument.for_field("start_time", "session times must be timezone-aware")
    if f.ended_at < f.started_at:
        raise InvalidArgument.for_field("end_time", "must not be before the start")
    check_currency("amount.currency", f.currency)
    check_amount("amount", f.amount_minor, allow_zero=True)
    for name, value in (
        ("energy_wh", f.energy_wh),
        ("max_power_w", f.max_power_w),
        ("capacity_wh", f.capacity_wh),
        ("parking_duration", f.parking_s),
        ("discount", f.discount_minor),
    ):
        if value < 0:
            raise InvalidArgument.for_field(name, f"must not be negative, got {value}")


async def _reprice(session: AsyncSession, f: SessionFacts, energy_wh: int) -> tuple[int, str, int]:
    duration = f.duration_s
    quote = await price_estimate(
        session,
        station_id=f.station_id,
        customer_kind=f.customer_kind,
        customer_id=f.customer_id,
        start=f.started_at,
        energy_wh=energy_wh,
        duration_s=duration,
        parking_s=f.parking_s,
        power_w=energy_wh * 3600 // duration if duration else 0,
        rate_model_id=f.rate_model_id or None,
        rate_model_version=f.rate_model_version if f.rate_model_id else None,
    )
    if quote.currency != f.currency:
        raise InvalidArgument.for_field("amount.currency", f"the rate model prices in {quote.currency}")
    return max(0, quote.amount_minor - f.discount_minor), quote.rate_model_id, quote.rate_model_version


async def settled_amounts(session: AsyncSession, order_id: str) -> tuple[JournalEntry | None, int, int]:
    """(the order's latest settlement entry, amount it captured, amount refunded against it so far)."""
    settlement = (
        await session.exec(
            select(JournalEntry)
            .where(JournalEntry.order_id == order_id, JournalEntry.kind == int(EntryKind.ORDER_SETTLEMENT))
            .order_by(col(JournalEntry.id).desc())
            .limit(1)
        )
    ).first()
    if settlement is None:
        return None, 0, 0
    captured = (
        await session.exec(
            select(sa.func.coalesce(sa.func.sum(Posting.amount_minor), 0)).where(
                Posting.entry_id == settlement.id, Posting.amount_minor > 0
            )
        )
    ).one()
    return settlement, int(captured), await payments.refunded_so_far(session, settlement.id)


async def _first_settlement(session: AsyncSession, order_ids: list[str]) -> dict[str, str]:
    rows = await session.exec(
        select(JournalEntry.order_id, sa.func.min(JournalEntry.id))
        .where(col(JournalEntry.order_id).in_(order_ids), JournalEntry.kind == int(EntryKind.ORDER_SETTLEMENT))
        .group_by(col(JournalEntry.order_id))
    )
    return {str(order): str(entry) for order, entry in rows}


@dataclass
class _Findings:
    """What the checks found so far; later checks read what earlier ones set (the plausible energy, the fair
    amount)."""

    plausible_wh: int
    expected: int = 0
    fair: int = 0
    model_id: str = ""
    version: int = 0
    flags: list[AbnormalFlag] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    related: set[str] = field(default_factory=set)

    def flag(self, flag: AbnormalFlag, detail: str) -> None:
        self.flags.append(flag)
        self.details.append(detail)


def _check_power(facts: SessionFacts, tolerance_permille: int, found: _Findings) -> None:
    if not facts.max_power_w:
        return
    duration = facts.duration_s
    limit = facts.max_power_w * duration * (1000 + tolerance_permille) // (3600 * 1000)
    if facts.energy_wh > limit:
        found.flag(
            AbnormalFlag.ENERGY_EXCEEDS_POWER,
            f"{facts.energy_wh} Wh in {duration} s exceeds {facts.max_power_w} W x duration ({limit} Wh)",
        )
        found.plausible_wh = min(found.plausible_wh, facts.max_power_w * duration // 3600)


def _check_capacity(facts: SessionFacts, tolerance_permille: int, found: _Findings) -> None:
    if not facts.capacity_wh:
        return
    limit = facts.capacity_wh * (1000 + tolerance_permille) // 1000
    if facts.energy_wh > limit:
        found.flag(
            AbnormalFlag.ENERGY_EXCEEDS_CAPACITY,
            f"{facts.energy_wh} Wh exceeds the usable capacity {facts.capacity_wh} Wh",
        )
        found.plausible_wh = min(found.plausible_wh, facts.capacity_wh)


async def _check_amount(session: AsyncSession, facts: SessionFacts, found: _Findings) -> None:
    """Reprices the reported energy (the expected amount) and the plausible energy (the fair amount)."""
    found.expected, found.model_id, found.version = await _reprice(session, facts, facts.energy_wh)
    plausible = found.plausible_wh
    found.fair = found.expected if plausible == facts.energy_wh else (await _reprice(session, facts, plausible))[0]
    if facts.amount_minor != found.expected:
        found.flag(
            AbnormalFlag.AMOUNT_MISMATCH,
            f"charged {facts.amount_minor} {facts.currency}, repriced with {found.model_id} v{found.version}: "
            f"{found.expected} {facts.currency}",
        )


async def _check_ledger(session: AsyncSession, facts: SessionFacts, found: _Findings) -> None:
    settlement, captured, _ = await settled_amounts(session, facts.order_id)
    if settlement is not None and captured != facts.amount_minor:
        found.flag(
            AbnormalFlag.LEDGER_MISMATCH, f"the order reports {facts.amount_minor}, its settlement captured {captured}"
        )


async def _check_duplicate(session: AsyncSession, facts: SessionFacts, found: _Findings) -> None:
    """The order that settled first keeps the station session; any other is a duplicate worth nothing."""
    if not facts.external_session_id:
        return
    same = list(
        await session.exec(
            select(OrderCheck.order_id).where(
                OrderCheck.order_id != facts.order_id,
                OrderCheck.station_id == facts.station_id,
                OrderCheck.external_session_id == facts.external_session_id,
            )
        )
    )
    if not same:
        return
    group = [facts.order_id, *same]
    first = await _first_settlement(session, group)
    original = min(group, key=lambda o: (first.get(o, "~"), o))
    found.related.update(same)
    if original != facts.order_id:
        found.flag(
            AbnormalFlag.DUPLICATE_SESSION,
            f"station session {facts.external_session_id} was already charged on {original}",
        )
        found.fair = 0


async def _check_overlap(session: AsyncSession, facts: SessionFacts, found: _Findings) -> None:
    overlap: list[sa.ColumnElement[bool]] = []
    if facts.vehicle_id:
        overlap.append(col(OrderCheck.vehicle_id) == facts.vehicle_id)
    if facts.connector_id:
        overlap.append(
            sa.and_(col(OrderCheck.connector_id) == facts.connector_id, col(OrderCheck.station_id) == facts.station_id)
        )
    if not overlap:
        return
    overlapping = list(
        await session.exec(
            select(OrderCheck.order_id).where(
                OrderCheck.order_id != facts.order_id,
                sa.or_(*overlap),
                col(OrderCheck.started_at) < facts.ended_at,
                col(OrderCheck.ended_at) > facts.started_at,
                # the same station session is a duplicate, not an overlap
                sa.or_(
                    col(OrderCheck.external_session_id) != facts.external_session_id,
                    col(OrderCheck.station_id) != facts.station_id,
                    sa.literal(facts.external_session_id) == "",
                ),
            )
        )
    )
    if overlapping:
        found.flag(
            AbnormalFlag.OVERLAPPING_SESSION,
            f"overlaps the sessions of {', '.join(sorted(overlapping))} (same vehicle or connector)",
        )
        found.related.update(overlapping)


# The checks in the order they run and report: physics first (they cap the plausible energy the fair amount is
# priced with), then the amount, then what other records say (a duplicate's fair amount is 0).
_PHYSICS_CHECKS: tuple[Callable[[SessionFacts, int, _Findings], None], ...] = (_check_power, _check_capacity)
_RECORD_CHECKS: tuple[Callable[[AsyncSession, SessionFacts, _Findings], Awaitable[None]], ...] = (
    _check_amount,
    _check_ledger,
    _check_duplicate,
    _check_overlap,
)


async def check_station_visible(session: AsyncSession, principal: Principal, station_id: str) -> None:
    """An operator inspects only its own stations' sessions; another operator's station is NOT_FOUND."""
    station = await session.get(Station, station_id) if station_id else None
    own = principal.tenant.id if principal.tenant else ""
    if station is not None and not principal.is_admin and station.operator_id != own:
        raise NotFound(f"station {station_id} not found")


async def inspect_order(
    session: AsyncSession, principal: Principal, facts: SessionFacts, *, account_id: str, clock: Clock = SYSTEM_CLOCK
) -> AbnormalReport:
    """A caller's inspection of a session: only of its own stations' sessions; the customer (whose discounts
    and history count) is the owner of the paying account, when one is named."""
    await check_station_visible(session, principal, facts.station_id)
    customer_kind, customer_id = await accounts.customer_of(session, account_id)
    facts = dataclasses.replace(facts, customer_kind=customer_kind, customer_id=customer_id)
    return await detect_abnormal(session, facts, clock=clock)


async def detect_abnormal(
    session: AsyncSession,
    facts: SessionFacts,
    *,
    tolerance_permille: int = DEFAULT_TOLERANCE_PERMILLE,
    clock: Clock = SYSTEM_CLOCK,
) -> AbnormalReport:
    """Checks one completed order's session and records the outcome (re-checking an order updates it).
    Moves no money: call `refund_difference` to refund an overcharge."""
    _validate(facts)
    if not 0 <= tolerance_permille <= 1000:
        raise InvalidArgument.for_field("tolerance_permille", "must be within [0, 1000]")
    found = _Findings(plausible_wh=facts.energy_wh)
    for physics in _PHYSICS_CHECKS:
        physics(facts, tolerance_permille, found)
    for check in _RECORD_CHECKS:
        await check(session, facts, found)
    await _record_check(session, facts, found, clock.now())
    return AbnormalReport(
        order_id=facts.order_id,
        flags=tuple(found.flags),
        charged_minor=facts.amount_minor,
        expected_minor=found.expected,
        fair_minor=found.fair,
        currency=facts.currency,
        details=tuple(found.details),
        related_order_ids=tuple(sorted(found.related)),
    )


async def _record_check(session: AsyncSession, facts: SessionFacts, found: _Findings, now: dt.datetime) -> None:
    values: dict[str, Any] = {
        "station_id": facts.station_id,
        "connector_id": facts.connector_id,
        "vehicle_id": facts.vehicle_id,
        "external_session_id": facts.external_session_id,
        "started_at": facts.started_at,
        "ended_at": facts.ended_at,
        "energy_wh": facts.energy_wh,
        "charged_minor": facts.amount_minor,
        "expected_minor": found.expected,
        "fair_minor": found.fair,
        "currency": facts.currency,
        "rate_model_id": found.model_id,
        "rate_model_version": found.version,
        "flags": ",".join(f.name for f in found.flags),
        "detail": "; ".join(found.details)[:1000],
        "checked_at": now,
    }
    row = (
        await session.exec(for_update(select(OrderCheck).where(OrderCheck.order_id == facts.order_id)))
    ).one_or_none()
    if row is None:
        row = OrderCheck(order_id=facts.order_id, **values)
    else:
        for name, value in values.items():
            setattr(row, name, value)
    session.add(row)
    await session.flush()


async def refund_difference(
    session: AsyncSession,
    *,
    order_id: str,
    idempotency_key: str,
    reason: str = "",
    clock: Clock = SYSTEM_CLOCK,
    actor: Actor = SYSTEM,
) -> DifferenceRefund:
    """Refunds what the order's settlement captured beyond its fair amount (from its last check), less what
    was already refunded. Idempotent: a replay returns the first result; once the difference is refunded, a
    new key refunds nothing (amount 0). Serialised per order on its check row and its hold row."""
    if not order_id:
        raise InvalidArgument.for_field("order_id", "is required")
    now = clock.now()
    claim = await idempotency.claim(session, "refund_difference", idempotency_key, {"order_id": order_id}, now=now)
    if claim.is_replay:
        check = await session.get(OrderCheck, order_id)
        currency = check.currency if check is not None else ""
        if not claim.replay_of:
            return DifferenceRefund(order_id, 0, currency, None)
        entry = await load_entry(session, claim.replay_of)
        credited = sum(p.amount_minor for p in entry.postings if p.amount_minor > 0)
        return DifferenceRefund(order_id, credited, currency, entry)
    check = (await session.exec(for_update(select(OrderCheck).where(OrderCheck.order_id == order_id)))).one_or_none()
    if check is None:
        raise FailedPrecondition(f"order {order_id} has not been checked; call detect_abnormal first")
    settlement, captured, _ = await settled_amounts(session, order_id)
    if settlement is None:
        raise NotFound(f"no settled payment for order {order_id}")
    if settlement.hold_id:  # the same lock ordinary refunds of this order take
        await session.exec(for_update(select(LedgerHold).where(LedgerHold.id == settlement.hold_id)))
    _, captured, refunded = await settled_amounts(session, order_id)
    amount = captured - refunded - check.fair_minor
    if amount <= 0:
        await idempotency.complete(session, claim, "")
        return DifferenceRefund(order_id, 0, check.currency, None)
    result = await payments.refund(
        session,
        order_id=order_id,
        amount_minor=amount,
        reason=reason or f"abnormal order ({check.flags or 'repriced'}): refund of the difference",
        idempotency_key=f"difference:{idempotency_key}",
        clock=clock,
        actor=actor,
    )
    await idempotency.complete(session, claim, result.entry.entry_id)
    return DifferenceRefund(order_id, amount, result.currency, result.entry)


async def get_check(session: AsyncSession, order_id: str) -> OrderCheck:
    row = await session.get(OrderCheck, order_id)
    if row is None:
        raise NotFound(f"order {order_id} has not been checked")
    return row
