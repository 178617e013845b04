"""Orders: CreateOrder (order + hold + reservation in one transaction), reads, CancelOrder, expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.ordering import order_coupons, payments
from voltcloud.ordering.lifecycle import SYSTEM, Actor, Effects, Facts, UnitOfWork, finish, record
from voltcloud.ordering.models import RESERVATION_ACTIVE, Order, OrderEvent, Quote, Reservation
from voltcloud.ordering.ports import Dispatcher, Place
from voltcloud.ordering.quoting import QuotedOption, QuotePath, hold_amount, options_of, vehicle_for
from voltcloud.ordering.reservations import overlapping
from voltcloud.ordering.states import ACTIVE, BEFORE_DISPATCH, Mode, OrderState
from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.stations.api import Station, inventory


@dataclass
class OrderingDeps:
    uow: UnitOfWork
    clock: Clock
    settings: Settings
    dispatch: Dispatcher
    quote_path: QuotePath | None = None  # QuotePowerUp's in-memory path; CreateOrder finds pending quotes there


@dataclass(frozen=True)
class CreateInput:
    quote_id: str
    option_id: str
    idempotency_key: str
    allow_fallback: bool = False
    payer_account_id: str = ""
    coupon_code: str = ""
    # What the client asked for when the order is made on its behalf by another RPC (start by scan): the
    # fingerprint of its key; the key space is the same, so one key never makes two orders.
    request: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class OrderView:
    order: Order
    events: list[OrderEvent]


CREATE_ORDER = "CreateOrder"  # the idempotency operation of every order a client creates by key


def _request(inp: CreateInput) -> Mapping[str, Any]:
    if inp.request is not None:
        return inp.request
    return {
        "quote": inp.quote_id,
        "option": inp.option_id,
        "fallback": inp.allow_fallback,
        "payer": inp.payer_account_id,
        **({"coupon": inp.coupon_code} if inp.coupon_code else {}),
    }


def _request_hash(inp: CreateInput) -> str:
    return idempotency.fingerprint(_request(inp))


async def replayed_order(
    session: AsyncSession, principal: Principal, key: str, request: Mapping[str, Any]
) -> Order | None:
    """The order a first call with this key created (a retry gets it even once its quote has expired)."""
    first = await idempotency.lookup(session, CREATE_ORDER, key, request, caller=principal.subject)
    return None if first is None else await _order(session, first.decode())


async def _order(session: AsyncSession, order_id: str) -> Order:
    order = await session.get(Order, order_id)
    if order is None:  # pragma: no cover - committed with the key that names it
        raise NotFound(f"order {order_id} not found")
    return order


async def create_order(deps: OrderingDeps, principal: Principal, inp: CreateInput) -> Order:
    """Creates the order for one quoted option. Same key, same request → the same order."""
    if not inp.idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    if not inp.quote_id:
        raise InvalidArgument.for_field("quote_id", "is required")
    if not inp.option_id:
        raise InvalidArgument.for_field("option_id", "is required")
    now = deps.clock.now()
    async with deps.uow.db.transaction("ordering.create.read") as session:
        if inp.payer_account_id:
            # First, before the quote is even looked at: naming someone else's account is refused the same way
            # whatever else is wrong with the request (and checked again where the hold is placed).
            await payments.payer_named(session, principal, inp.payer_account_id)
        existing = await replayed_order(session, principal, inp.idempotency_key, _request(inp))
        if existing is not None:
            return existing
        quote = await find_quote(deps, session, inp.quote_id)
    if quote is None:
        quote = await _await_other_replica(deps, inp.quote_id)
    if quote is None or quote.requested_by != principal.subject:
        raise NotFound(f"quote {inp.quote_id} not found")
    if quote.expires_at <= now:
        raise FailedPrecondition(f"quote {quote.id} expired at {quote.expires_at.isoformat()}; ask for a new quote")
    options = options_of(quote)
    chosen = next((o for o in options if o.option_id == inp.option_id), None)
    if chosen is None:
        raise InvalidArgument.for_field("option_id", f"quote {quote.id} has no option {inp.option_id!r}")
    attempts = [chosen]
    if inp.allow_fallback:
        attempts += [o for o in sorted(options, key=lambda o: o.rank) if o.option_id != chosen.option_id]
    lost: list[str] = []
    for option in attempts:
        try:
            return await deps.uow.run("ordering.create", _creator(deps, principal, quote, option, inp, now))
        except Aborted as race:  # a concurrent retry with the same key waits on the claim, so not to it
            lost.append(f"{option.option_id}: {race.message}")
    raise Aborted("the option was taken meanwhile: " + "; ".join(lost) + ". Quote again or allow fallback.")


async def find_quote(deps: OrderingDeps, session: AsyncSession, quote_id: str) -> Quote | None:
    """A quote of this replica still waiting for its batch, else the quote row."""
    store = deps.quote_path.store if deps.quote_path is not None else None
    pending = store.pending(quote_id) if store is not None else None
    return pending if pending is not None else await session.get(Quote, quote_id)


async def _await_other_replica(deps: OrderingDeps, quote_id: str) -> Quote | None:
    """A quote made on another replica moments ago may still be in that replica's batch: re-read it until it
    could have been written (its UUIDv7 id tells when it was made), then give up (docs/ordering.md)."""
    if deps.quote_path is None:
        return None
    store = deps.quote_path.store
    while (wait := store.in_flight(quote_id)) > 0:
        await asyncio.sleep(min(wait, store.interval_s))
        async with deps.uow.db.transaction("ordering.create.quote") as session:
            quote = await session.get(Quote, quote_id)
        if quote is not None:
            return quote
    return None


def _creator(
    deps: OrderingDeps, principal: Principal, quote: Quote, option: QuotedOption, inp: CreateInput, now: dt.datetime
) -> Callable[[AsyncSession, Effects], Awaitable[Order]]:
    async def work(session: AsyncSession, effects: Effects) -> Order:
        claim = await idempotency.claim(
            session, CREATE_ORDER, inp.idempotency_key, _request(inp), now=now, caller=principal.subject
        )
        if claim.replay_of is not None:  # a concurrent duplicate committed first
            return await _order(session, claim.replay_of)
        if deps.quote_path is not None:  # the order row references the quote: write it now if still pending
            await deps.quote_path.store.persist_in(session, quote)
        order = await _create(session, effects, deps, principal, quote, option, inp, now)
        await idempotency.complete(session, claim, order.id)
        return order

    return work


@dataclass(frozen=True)
class OrderTimes:
    eta: dt.datetime  # when the service is expected to start
    service_by: dt.datetime  # after this the order expires unserved (the reservation window's end)


def order_times(option: QuotedOption, now: dt.datetime, grace_s: float) -> OrderTimes:
    eta = now + dt.timedelta(seconds=option.eta_s)
    return OrderTimes(eta, eta + dt.timedelta(seconds=option.wait_s + grace_s))


def window_clash(mode: Mode, option: QuotedOption, clashes: list[Reservation], lanes: int) -> str | None:
    """Why the option's reservation window cannot be booked, or None: a connector takes one booking at a
    time, a swap station as many as it has lanes."""
    if mode is Mode.CHARGE and clashes:
        return f"connector {option.connector_id} is booked by reservation {clashes[0].id}"
    if mode is Mode.SWAP and clashes and len(clashes) >= lanes:
        return f"every lane of station {option.station_id} is booked in that window"
    return None


async def _create(
    session: AsyncSession,
    effects: Effects,
    deps: OrderingDeps,
    principal: Principal,
    quote: Quote,
    option: QuotedOption,
    inp: CreateInput,
    now: dt.datetime,
) -> Order:
    """One attempt at one option, in the caller's transaction: reserve, hold, record, dispatch (in that order:
    what is most likely to lose a race comes first)."""
    vehicle = await vehicle_for(session, principal, quote.vehicle_id)
    times = order_times(option, now, deps.settings.order_grace_s)
    order = _new_order(principal, quote, option, inp, (vehicle.id, vehicle.fleet_id), times, now)
    attempt = _Attempt(session, effects, deps, principal, quote, option, order, times, now)
    assigned = await _reserve(attempt)
    await _hold(attempt, inp)
    await order_coupons.attach(session, order, inp.coupon_code, option.price_minor, now)
    session.add(order)  # inserted once, with its final state and version, when the transaction flushes
    await _record_created(attempt)
    if Mode(order.mode) in (Mode.VALET, Mode.MOBILE_VAN):
        await _dispatch(attempt)
    else:
        await _record_assigned(attempt, assigned)
    return order


@dataclass(frozen=True)
class _Attempt:
    """One attempt at creating `order` for one quoted option, inside its transaction."""

    session: AsyncSession
    effects: Effects
    deps: OrderingDeps
    principal: Principal
    quote: Quote
    option: QuotedOption
    order: Order
    times: OrderTimes
    now: dt.datetime


def _new_order(
    principal: Principal,
    quote: Quote,
    option: QuotedOption,
    inp: CreateInput,
    vehicle: tuple[str, str | None],
    times: OrderTimes,
    now: dt.datetime,
) -> Order:
    """The new order's row for the option, the request and the vehicle (its id and fleet)."""
    return Order(
        id=new_id("ord"),
        quote_id=quote.id,
        option_id=option.option_id,
        option_json=_option_json(option),
        created_by=principal.subject,
        creator_role=int(principal.role),
        creator_tenant=str(principal.tenant or ""),
        idempotency_key=inp.idempotency_key,
        request_hash=_request_hash(inp),
        mode=int(Mode(option.mode)),
        state=int(OrderState.CREATED),
        vehicle_id=vehicle[0],
        driver_id=principal.subject if principal.role is Role.DRIVER else None,
        fleet_id=vehicle[1],
        operator_id=option.operator_id,
        station_id=option.station_id or option.pricing_station_id,
        connector_id=option.connector_id,
        pack_id=option.pack_id,
        unit_id=option.unit_id,
        payer_account_id="",
        hold_id="",
        hold_amount_minor=0,
        currency=option.currency,
        rate_model_id=option.rate_model_id,
        rate_model_version=option.rate_model_version,
        service_by=times.service_by,
        created_at=now,
        updated_at=now,
    )


async def _reserve(a: _Attempt) -> list[str]:
    """Reserves what the option needs and books its window at the station; returns what was assigned."""
    session, effects, order, option, now = a.session, a.effects, a.order, a.option, a.now
    assigned: list[str] = []
    if option.pack_id:
        effects.changes.append(await inventory.reserve_pack(session, option.pack_id, station_id=option.station_id))
        assigned.append(f"pack {option.pack_id}")
    if option.connector_id:
        effects.changes.append(await inventory.reserve_connector(session, option.connector_id))
        assigned.append(f"connector {option.connector_id}")
    if option.unit_id:
        effects.changes.append(await inventory.reserve_unit(session, option.unit_id))
    mode = Mode(order.mode)
    if option.station_id and mode in (Mode.SWAP, Mode.CHARGE):
        clashes = await overlapping(
            session, station_id=option.station_id, connector_id=option.connector_id, start=now, end=order.service_by
        )
        lanes = await _lanes(session, option.station_id) if mode is Mode.SWAP and clashes else 1
        reason = window_clash(mode, option, clashes, lanes)
        if reason is not None:
            raise Aborted(reason)
        reservation = Reservation(
            id=new_id("rsv"),
            station_id=option.station_id,
            connector_id=option.connector_id,
            pack_id=option.pack_id,
            vehicle_id=order.vehicle_id,
            order_id=order.id,
            starts_at=now,
            ends_at=order.service_by,
            state=RESERVATION_ACTIVE,
            holds_resource=True,
            created_by=order.created_by,
            idempotency_key=f"order:{order.id}",
            created_at=now,
            currency=option.currency,
        )
        session.add(reservation)
        order.reservation_id = reservation.id
    return assigned


async def _hold(a: _Attempt, inp: CreateInput) -> None:
    """Places the hold on the payer's account: the named one, else the fleet's (its sub-fleet allocation when
    the vehicle or driver is in one), else the driver's (FailedPrecondition when funds are short)."""
    session, deps, principal, option, order = a.session, a.deps, a.principal, a.option, a.order
    if inp.payer_account_id:
        account_id = await payments.payer_named(session, principal, inp.payer_account_id)
    elif order.fleet_id:
        account_id = await payments.fleet_payer(
            session,
            fleet_id=order.fleet_id,
            vehicle_id=order.vehicle_id,
            driver_id=principal.subject,
            currency=option.currency,
            clock=deps.clock,
        )
    else:
        account_id = await payments.customer_account(
            session, owner_kind="driver", owner_id=principal.subject, currency=option.currency, clock=deps.clock
        )
    amount = hold_amount(option.price_minor, deps.settings.hold_margin_permille)
    order.payer_account_id = account_id
    order.hold_amount_minor = amount
    order.hold_id = await payments.hold(
        session,
        account_id=account_id,
        amount_minor=amount,
        currency=option.currency,
        reference=f"order:{order.id}",
        idempotency_key=None,  # the order's own key, claimed in this transaction, makes the hold idempotent
        expires_at=order.service_by + dt.timedelta(hours=6),
        clock=deps.clock,
    )


async def _record_created(a: _Attempt) -> None:
    quote, option, order = a.quote, a.option, a.order
    amount = order.hold_amount_minor
    reason = (
        f"order created from quote {quote.id} option {option.option_id} "
        f"({Mode(order.mode).name.lower()}); hold of {amount / 100:.2f} {option.currency} placed"
    )
    facts = Facts(
        reason=reason, lat=quote.lat, lng=quote.lng, amount_minor=amount, currency=option.currency, eta=a.times.eta
    )
    await record(a.session, a.effects, order, None, Actor.of(a.principal), a.now, facts)


async def _dispatch(a: _Attempt) -> None:
    """Valet and mobile-van orders: the task is offered to the option's specialist or van."""
    session, effects, deps, quote, option, order, now = a.session, a.effects, a.deps, a.quote, a.option, a.order, a.now
    if not option.unit_id:
        raise FailedPrecondition(f"option {option.option_id} names no specialist or van")
    station = None
    if option.station_id:
        info = deps.uow.engine.station(option.station_id)
        if info is not None:
            station = Place(info.lat, info.lng, info.id)
    task = await deps.dispatch.create_for_order(
        session,
        effects,
        order=order,
        mode=Mode(order.mode),
        unit_id=option.unit_id,
        operator_id=option.operator_id,
        vehicle=Place(quote.lat, quote.lng),
        station=station,
        back=Place(quote.lat, quote.lng),
        eta=a.times.eta,
        service_s=option.service_s,
        energy_wh=option.energy_wh,
        now=now,
        offer_timeout_s=deps.settings.dispatch_offer_timeout_s,
    )
    order.task_id = task.id
    offered = Facts(reason=f"task {task.id} offered to {option.unit_id}")
    await record(session, effects, order, None, SYSTEM, now, offered)


async def _record_assigned(a: _Attempt, assigned: list[str]) -> None:
    """Swap and charge orders hold their resources already: assigned, and the driver is on the way."""
    reserved = Facts(reason=", ".join(assigned) + " reserved")
    await record(a.session, a.effects, a.order, OrderState.ASSIGNED, SYSTEM, a.now, reserved)
    quote = a.quote
    facts = Facts(reason=f"driving to station {a.option.station_id}", lat=quote.lat, lng=quote.lng, eta=a.times.eta)
    await record(a.session, a.effects, a.order, OrderState.EN_ROUTE, Actor.of(a.principal), a.now, facts)


async def _lanes(session: AsyncSession, station_id: str) -> int:
    station = await session.get(Station, station_id)
    return max(station.lanes if station else 1, 1)


def _option_json(option: QuotedOption) -> str:
    import json
    from dataclasses import asdict

    return json.dumps(asdict(option))


# ---- reads -----------------------------------------------------------------------------------------------


def may_see(principal: Principal, order: Order) -> bool:
    if principal.is_admin or order.created_by == principal.subject:
        return True
    tenant = principal.tenant
    if tenant is None:
        return False
    if principal.role is Role.FLEET_MANAGER:
        return tenant.kind == "fleet" and order.fleet_id == tenant.id
    if principal.role is Role.OPERATOR:
        return tenant.kind == "operator" and order.operator_id == tenant.id
    if principal.role is Role.SPECIALIST:
        return order.unit_id == principal.subject
    return False


async def get_order(session: AsyncSession, principal: Principal, order_id: str, *, events: bool = True) -> OrderView:
    order = await session.get(Order, order_id)
    if order is None or not may_see(principal, order):
        raise NotFound(f"order {order_id} not found")
    history: list[OrderEvent] = []
    if events:
        history = list(
            await session.exec(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(col(OrderEvent.seq)))
        )
    return OrderView(order, history)


@dataclass(frozen=True)
class OrderFilter:
    vehicle_id: str | None = None
    driver_id: str | None = None
    fleet_id: str | None = None
    station_id: str | None = None
    operator_id: str | None = None
    states: frozenset[int] = frozenset()
    modes: frozenset[int] = frozenset()
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None


async def list_orders(session: AsyncSession, principal: Principal, filters: OrderFilter, page: Page) -> list[Order]:
    """Newest first (ids are time-ordered UUIDv7, so the keyset is the id, descending)."""
    query = select(Order).order_by(col(Order.id).desc()).limit(page.size)
    tenant = principal.tenant
    if not principal.is_admin:
        if principal.role is Role.FLEET_MANAGER and tenant is not None:
            query = query.where(Order.fleet_id == tenant.id)
        elif principal.role is Role.OPERATOR and tenant is not None:
            query = query.where(Order.operator_id == tenant.id)
        else:
            query = query.where(Order.created_by == principal.subject)
    for column, value in (
        (Order.vehicle_id, filters.vehicle_id),
        (Order.driver_id, filters.driver_id),
        (Order.fleet_id, filters.fleet_id),
        (Order.station_id, filters.station_id),
        (Order.operator_id, filters.operator_id),
    ):
        if value:
            query = query.where(col(column) == value)
    if filters.states:
        query = query.where(col(Order.state).in_(sorted(filters.states)))
    if filters.modes:
        query = query.where(col(Order.mode).in_(sorted(filters.modes)))
    if filters.created_from:
        query = query.where(col(Order.created_at) >= filters.created_from)
    if filters.created_to:
        query = query.where(col(Order.created_at) < filters.created_to)
    if page.after is not None:
        query = query.where(col(Order.id) < page.after)
    return list(await session.exec(query))


# ---- cancel and expire -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    order: Order
    fee_minor: int


async def cancel_order(
    deps: OrderingDeps, principal: Principal, *, order_id: str, idempotency_key: str, reason: str
) -> Cancelled:
    """Free before dispatch (created/assigned), the operator's fee once the specialist or driver is en route;
    refused once service has started. Releases every reservation and the hold."""
    if not idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    now = deps.clock.now()

    async def work(session: AsyncSession, effects: Effects) -> Cancelled:
        order = await session.get(Order, order_id)
        if order is None or not may_see(principal, order) or principal.role is Role.SPECIALIST:
            raise NotFound(f"order {order_id} not found")
        request = {"order": order_id}  # the reason is commentary: a retry that leaves it out is the same cancel
        claim = await idempotency.claim(
            session, "CancelOrder", idempotency_key, request, now=now, caller=principal.subject
        )
        if claim.is_replay:
            return Cancelled(order, order.cancellation_fee_minor)
        if order.state not in ACTIVE:
            raise FailedPrecondition(f"order {order_id} is already {OrderState(order.state).label}")
        if order.state == OrderState.IN_SERVICE:
            raise FailedPrecondition(f"order {order_id} is in service and can no longer be cancelled")
        # The fee compensates the operator for a customer's late change of mind; an operator cancelling an
        # order at its own station (a fault, a closure) must not charge the customer for it.
        free = order.state in BEFORE_DISPATCH or principal.role is Role.OPERATOR
        fee = 0 if free else deps.settings.cancel_fee_minor
        why = reason or "cancelled by customer"
        await deps.dispatch.cancel_for_order(session, effects, order, why, now)
        await finish(
            session, effects, order, OrderState.CANCELLED, Actor.of(principal), now,
            reason=why, fee_minor=fee, clock=deps.clock,
        )  # fmt: skip
        await idempotency.complete(session, claim, order.id)
        return Cancelled(order, order.cancellation_fee_minor)

    return await deps.uow.run("ordering.cancel", work)


async def expire_due(deps: OrderingDeps) -> int:
    """Expires orders whose service did not start in time (the no-show of an order)."""
    now = deps.clock.now()

    async def work(session: AsyncSession, effects: Effects) -> int:
        due = list(
            await session.exec(
                select(Order)
                .where(
                    col(Order.state).in_([int(OrderState.CREATED), int(OrderState.ASSIGNED), int(OrderState.EN_ROUTE)]),
                    col(Order.service_by) <= now,
                )
                .limit(50)
            )
        )
        for order in due:
            await deps.dispatch.cancel_for_order(session, effects, order, "order expired", now)
            await finish(
                session, effects, order, OrderState.EXPIRED, SYSTEM, now,
                reason="service did not start in time", clock=deps.clock,
            )  # fmt: skip
        return len(due)

    return await deps.uow.run("ordering.expire", work)
