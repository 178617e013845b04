"""Ordering's one door to settlement's public functions (`voltcloud.settlement.api`).

Everything money-related the ordering domain does goes through here, in the caller's session (settlement
never commits): the order, its hold and its reservations commit or roll back together.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Driver, SubFleet, Vehicle
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.settlement import api as settlement

_SYSTEM = SystemClock()

PriceBook = settlement.PriceBook
PriceRequest = settlement.PriceRequest  # (station_id, start, energy_wh, duration_s): one option to price


@dataclass(frozen=True)
class Price:
    amount_minor: int
    currency: str
    rate_model_id: str
    rate_model_version: int


async def estimate(
    session: AsyncSession,
    *,
    station_id: str,
    customer_kind: str,
    customer_id: str,
    start: dt.datetime,
    energy_wh: int,
    duration_s: int,
    rate_model_id: str | None = None,
    rate_model_version: int | None = None,
) -> Price:
    """The price of a planned or actual usage; pass the rate model fixed at order start to reprice with it."""
    quote = await settlement.price_estimate(
        session,
        station_id=station_id,
        customer_kind=customer_kind,
        customer_id=customer_id,
        start=start,
        energy_wh=max(energy_wh, 0),
        duration_s=max(duration_s, 0),
        rate_model_id=rate_model_id,
        rate_model_version=rate_model_version,
    )
    return Price(quote.amount_minor, quote.currency, quote.rate_model_id, quote.rate_model_version)


async def estimate_all(
    session: AsyncSession, customer_kind: str, customer_id: str, requests: list[PriceRequest]
) -> list[Price]:
    """The options of one quote priced through the database, one round trip each: the first option at a
    station resolves its rate model, the quote's later options there are priced with that same version."""
    models: dict[str, tuple[str, int]] = {}
    prices: list[Price] = []
    for r in requests:
        model = models.get(r.station_id)
        price = await estimate(
            session,
            station_id=r.station_id,
            customer_kind=customer_kind,
            customer_id=customer_id,
            start=r.start,
            energy_wh=r.energy_wh,
            duration_s=r.duration_s,
            rate_model_id=model[0] if model else None,
            rate_model_version=model[1] if model else None,
        )
        models[r.station_id] = (price.rate_model_id, price.rate_model_version)
        prices.append(price)
    return prices


def estimate_in_memory(
    book: PriceBook, customer_kind: str, customer_id: str, requests: list[PriceRequest]
) -> list[Price] | None:
    """The same prices as `estimate_all`, from settlement's price book without I/O; None when the book does
    not hold something they need (then ask `estimate_all`)."""
    try:
        priced = book.quote(customer_kind, customer_id, requests)
    except settlement.PriceBookMiss:
        return None
    return [Price(p.amount_minor, p.currency, p.rate_model_id, p.rate_model_version) for p in priced]


async def customer_account(
    session: AsyncSession, *, owner_kind: str, owner_id: str, currency: str, clock: Clock = _SYSTEM
) -> str:
    return await settlement.ensure_customer_account(
        session, owner_kind=owner_kind, owner_id=owner_id, currency=currency, clock=clock
    )


async def fleet_payer(
    session: AsyncSession, *, fleet_id: str, vehicle_id: str, driver_id: str, currency: str, clock: Clock = _SYSTEM
) -> str:
    """The account a fleet vehicle's order is paid from when the caller names none: the vehicle's sub-fleet
    allocation, else the ordering driver's sub-fleet's, else the fleet's own account. Paying from the
    allocation is what makes it a limit: the hold is refused when the allocation (plus its credit) is short.
    A sub-fleet without an account (written by the demo seed, before FleetService) was never given an
    allocation, so its orders stay on the fleet's account."""
    allocation = await sub_fleet_account(session, fleet_id=fleet_id, vehicle_id=vehicle_id, driver_id=driver_id)
    if allocation is not None:
        return allocation
    return await customer_account(session, owner_kind="fleet", owner_id=fleet_id, currency=currency, clock=clock)


async def sub_fleet_account(session: AsyncSession, *, fleet_id: str, vehicle_id: str, driver_id: str) -> str | None:
    """The sub-fleet allocation a fleet vehicle's order pays from (see `fleet_payer`), or None: the fleet's."""
    sub_fleet = await _sub_fleet_of(session, fleet_id=fleet_id, vehicle_id=vehicle_id, driver_id=driver_id)
    return sub_fleet.account_id if sub_fleet is not None and sub_fleet.account_id else None


async def _sub_fleet_of(session: AsyncSession, *, fleet_id: str, vehicle_id: str, driver_id: str) -> SubFleet | None:
    vehicle = await session.get(Vehicle, vehicle_id)
    driver = await session.get(Driver, driver_id)
    for sub_fleet_id in (
        vehicle.sub_fleet_id if vehicle is not None else None,
        driver.sub_fleet_id if driver is not None and driver.fleet_id == fleet_id else None,
    ):
        sub_fleet = await session.get(SubFleet, sub_fleet_id) if sub_fleet_id else None
        if sub_fleet is not None and sub_fleet.fleet_id == fleet_id:
            return sub_fleet
    return None


async def payer_named(session: AsyncSession, principal: Principal, account_id: str) -> str:
    """An account the caller names as payer, if settlement says the caller may spend from it (else
    PERMISSION_DENIED): ordering never decides that itself."""
    return await settlement.require_spendable(session, principal, account_id)


async def hold(
    session: AsyncSession,
    *,
    account_id: str,
    amount_minor: int,
    currency: str,
    reference: str,
    idempotency_key: str | None,
    expires_at: dt.datetime,
    clock: Clock = _SYSTEM,
) -> str:
    """Places a hold; FailedPrecondition (from settlement) when funds are short. Returns the hold id.
    `idempotency_key` None: the caller's transaction already claimed a key of its own (settlement's)."""
    placed = await settlement.place_hold(
        session,
        account_id=account_id,
        amount_minor=amount_minor,
        currency=currency,
        reference=reference,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
        clock=clock,
    )
    return placed.hold_id


@dataclass(frozen=True)
class Payer:
    """Who pays an order: an account named by id (a payer, a sub-fleet allocation), else the wallet of
    (owner kind, owner id), "driver" or "fleet", created if missing."""

    account_id: str | None = None
    owner: tuple[str, str] | None = None


async def hold_order(
    session: AsyncSession,
    payer: Payer,
    *,
    amount_minor: int,
    currency: str,
    reference: str,
    expires_at: dt.datetime,
    clock: Clock = _SYSTEM,
) -> settlement.Hold:
    """CreateOrder's hold: the payer's account found and locked in one read, the hold in two Core writes
    (FailedPrecondition from settlement when funds are short). The order's own key, claimed in the same
    transaction, makes it idempotent."""
    if payer.account_id is not None:
        return await settlement.hold_on_account(
            session, account_id=payer.account_id, amount_minor=amount_minor, currency=currency,
            reference=reference, expires_at=expires_at, clock=clock,
        )  # fmt: skip
    if payer.owner is None:  # pragma: no cover - a programming error
        raise ValueError("a payer names an account or an owner")
    return await settlement.hold_on_wallet(
        session, owner_kind=payer.owner[0], owner_id=payer.owner[1], amount_minor=amount_minor,
        currency=currency, reference=reference, expires_at=expires_at, clock=clock,
    )  # fmt: skip


async def capture(
    session: AsyncSession,
    *,
    hold_id: str,
    amount_minor: int,
    operator_id: str,
    idempotency_key: str,
    description: str = "",
    clock: Clock = _SYSTEM,
) -> str:
    """Captures `amount_minor` (settlement releases the rest and posts the operator's share and the platform
    fee in one balanced entry); returns the journal entry id ("" when nothing was posted)."""
    entry = await settlement.capture_hold(
        session,
        hold_id=hold_id,
        amount_minor=amount_minor,
        operator_id=operator_id,
        idempotency_key=idempotency_key,
        description=description,
        clock=clock,
    )
    return entry.entry_id or ""


async def release(session: AsyncSession, *, hold_id: str, reason: str, clock: Clock = _SYSTEM) -> None:
    await settlement.release_hold(session, hold_id=hold_id, reason=reason, clock=clock)
