"""Orders: CreateOrder (order + hold + reservation in one transaction), reads, CancelOrder, expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.ordering import order_coupons, payments
from voltcloud.ordering.lifecycle import (
    SYSTEM,
    Actor,
    Effects,
    Facts,
    UnitOfWork,
    finish,
    insert_new_order,
    transition,
)
from voltcloud.ordering.models import Order, OrderEvent, Quote
from voltcloud.ordering.ports import Dispatcher, Place
from voltcloud.ordering.quoting import QuotedOption, QuotePath, hold_amount, options_of, vehicle_for
from voltcloud.ordering.reservations import insert_order_reservation, overlapping
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


async def _claim_key(
    session: AsyncSession, principal: Principal, inp: CreateInput, now: dt.datetime
) -> tuple[str, Order | None]:
    """Claims CreateOrder's key for a new order id, stored with the claim so it commits with the order or not at
    all; a key another transaction already committed gives back that transaction's order instead."""
    order_id = new_id("ord")
    claim = await idempotency.claim(
        session, CREATE_ORDER, inp.idempotency_key, _request(inp), now=now, caller=principal.subject, result=order_id
    )
    if claim.replay_of is not None:
        return order_id, await _order(session, claim.replay_of)
    return order_id, None


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
    lost: list[str] = []
    quote: Quote | None = None
    if not inp.payer_account_id:
        # No read transaction: the grouped write transaction claims the key first (a retry gets its order even
        # once the quote has expired), then reads the quote (this replica's memory, else its row) and checks it.
        first = _First()
        try:
            return await deps.uow.run("ordering.create", _first_attempt(deps, principal, inp, now, first), grouped=True)
        except _NotWrittenYet:
            quote = await _await_other_replica(deps, inp.quote_id)
        except Aborted as race:
            lost.append(f"{inp.option_id}: {race.message}")
            quote = first.quote
            if quote is None or not inp.allow_fallback:
                raise _taken(lost) from None
    else:
        async with deps.uow.db.transaction("ordering.create.read") as session:
            # First, before the quote is even looked at: naming someone else's account is refused the same
            # way whatever else is wrong with the request (and checked again where the hold is placed).
            await payments.payer_named(session, principal, inp.payer_account_id)
            existing = await replayed_order(session, principal, inp.idempotency_key, _request(inp))
            if existing is not None:
                return existing
            quote = await find_quote(deps, session, inp.quote_id)
        if quote is None:
            quote = await _await_other_replica(deps, inp.quote_id)
    attempts = _attempts(principal, quote, inp, now)
    assert quote is not None
    for option in attempts[1:] if lost else attempts:
        try:
            creator = _creator(deps, principal, quote, option, inp, now)
            return await deps.uow.run("ordering.create", creator, grouped=True)
        except Aborted as race:  # a concurrent retry with the same key waits on the claim, so not to it
            lost.append(f"{option.option_id}: {race.message}")
    raise _taken(lost)


def _taken(lost: list[str]) -> Aborted:
    return Aborted("the option was taken meanwhile: " + "; ".join(lost) + ". Quote again or allow fallback.")


class _NotWrittenYet(Exception):
    """The quote is neither in this replica's memory nor in the database: maybe still in another replica's
    batch, which is waited for outside the transaction (`_await_other_replica`)."""


@dataclass
class _First:
    quote: Quote | None = None  # the quote the first attempt found, for the fallback attempts


def _first_attempt(
    deps: OrderingDeps, principal: Principal, inp: CreateInput, now: dt.datetime, first: _First
) -> Callable[[AsyncSession, Effects], Awaitable[Order]]:
    """Claim the key, find and check the quote, create the chosen option; a refusal rolls the claim back."""

    async def work(session: AsyncSession, effects: Effects) -> Order:
        order_id, replayed = await _claim_key(session, principal, inp, now)
        if replayed is not None:
            return replayed
        quote = _quote_in_memory(deps, inp)
        if quote is None:
            quote = await session.get(Quote, inp.quote_id)
            if quote is None:
                raise _NotWrittenYet(inp.quote_id)
            session.expunge(quote)  # kept for the fallback attempts: a rollback must not expire it
        first.quote = quote
        chosen = _attempts(principal, quote, inp, now)[0]
        if deps.quote_path is not None:  # the order row references the quote: write it now if still pending
            await deps.quote_path.store.persist_in(session, quote)
        return await _create(session, effects, deps, principal, quote, chosen, inp, now, order_id)

    return work


def _quote_in_memory(deps: OrderingDeps, inp: CreateInput) -> Quote | None:
    """The quote, when this replica made it (pending or recently written)."""
    if deps.quote_path is None:
        return None
    return deps.quote_path.store.known(inp.quote_id)


def _attempts(principal: Principal, quote: Quote | None, inp: CreateInput, now: dt.datetime) -> list[QuotedOption]:
    """The options to try, in order: the chosen one, then (with fallback) the others by rank. NOT_FOUND for
    another caller's or an unknown quote, FAILED_PRECONDITION when expired, INVALID_ARGUMENT for an unknown
    option."""
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
    return attempts


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
        order_id, replayed = await _claim_key(session, principal, inp, now)
        if replayed is not None:  # a concurrent duplicate committed first
            return replayed
        if deps.quote_path is not None:  # the order row references the quote: write it now if still pending
            await deps.quote_path.store.persist_in(session, quote)
        return await _create(session, effects, deps, principal, quote, option, inp, now, order_id)

    return work


@dataclass(frozen=True)
class OrderTimes:
    eta: dt.datetime  # when the service is expected to start
    service_by: dt.datetime  # after this the order expires unserved (the reservation window's end)


def order_times(option: QuotedOption, now: dt.datetime, grace_s: float) -> OrderTimes:
    eta = now + dt.timedelta(seconds=option.eta_s)
    return OrderTimes(eta, eta + dt.timedelta(seconds=option.wait_s + grace_s))


def window_clash(mode: Mode, option: QuotedOption, clashes: list[str], lanes: int) -> str | None:
    """Why the option's reservation window cannot be booked (`clashes`: the ids of the reservations in it), or
    None: a connector takes one booking at a time, a swap station as many as it has lanes."""
    if mode is Mode.CHARGE and clashes:
        return f"connector {option.connector_id} is booked by reservation {clashes[0]}"
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
    order_id: str,
) -> Order:
    """One attempt at one option, in the caller's transaction: reserve, hold, record, dispatch (in that order:
    what is most likely to lose a race comes first). The rows are written with Core statements
    (`insert_new_order`), the order once, with its final state."""
    vehicle = await vehicle_for(session, principal, quote.vehicle_id)
    times = order_times(option, now, deps.settings.order_grace_s)
    order = _new_order(order_id, principal, quote, option, inp, (vehicle.id, vehicle.fleet_id), times, now)
    attempt = _Attempt(session, effects, deps, principal, quote, option, order, times, now)
    assigned = await _reserve(attempt)
    await _hold(attempt, inp)
    await order_coupons.attach(session, order, inp.coupon_code, option.price_minor, now)
    events = [_created(attempt)]
    if Mode(order.mode) in (Mode.VALET, Mode.MOBILE_VAN):
        events.append(await _dispatch(attempt))
    else:
        events += _assigned(attempt, assigned)
    await insert_new_order(session, effects, order, events)
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
    order_id: str,
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
        id=order_id,
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
        order.reservation_id = await insert_order_reservation(
            session,
            station_id=option.station_id,
            connector_id=option.connector_id,
            pack_id=option.pack_id,
            vehicle_id=order.vehicle_id,
            order_id=order.id,
            starts_at=now,
            ends_at=order.service_by,
            created_by=order.created_by,
            currency=option.currency,
        )
    return assigned


async def _hold(a: _Attempt, inp: CreateInput) -> None:
    """Places the hold on the payer's account: the named one, else the fleet's (its sub-fleet allocation when
    the vehicle or driver is in one), else the driver's (FailedPrecondition when funds are short)."""
    session, deps, principal, option, order = a.session, a.deps, a.principal, a.option, a.order
    if inp.payer_account_id:
        payer = payments.Payer(account_id=await payments.payer_named(session, principal, inp.payer_account_id))
    elif order.fleet_id:
        allocation = await payments.sub_fleet_account(
            session, fleet_id=order.fleet_id, vehicle_id=order.vehicle_id, driver_id=principal.subject
        )
        payer = payments.Payer(account_id=allocation) if allocation else payments.Payer(owner=("fleet", order.fleet_id))
    else:
        payer = payments.Payer(owner=("driver", principal.subject))
    amount = hold_amount(option.price_minor, deps.settings.hold_margin_permille)
    hold = await payments.hold_order(
        session,
        payer,
        amount_minor=amount,
        currency=option.currency,
        reference=f"order:{order.id}",
        expires_at=order.service_by + dt.timedelta(hours=6),
        clock=deps.clock,
    )
    order.payer_account_id = hold.account_id
    order.hold_amount_minor = amount
    order.hold_id = hold.hold_id


def _created(a: _Attempt) -> dict[str, Any]:
    quote, option, order = a.quote, a.option, a.order
    amount = order.hold_amount_minor
    reason = (
        f"order created from quote {quote.id} option {option.option_id} "
        f"({Mode(order.mode).name.lower()}); hold of {amount / 100:.2f} {option.currency} placed"
    )
    facts = Facts(
        reason=reason, lat=quote.lat, lng=quote.lng, amount_minor=amount, currency=option.currency, eta=a.times.eta
    )
    return transition(order, None, Actor.of(a.principal), a.now, facts)


async def _dispatch(a: _Attempt) -> dict[str, Any]:
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
    return transition(order, None, SYSTEM, now, Facts(reason=f"task {task.id} offered to {option.unit_id}"))


def _assigned(a: _Attempt, assigned: list[str]) -> list[dict[str, Any]]:
    """Swap and charge orders hold their resources already: assigned, and the driver is on the way."""
    reserved = transition(a.order, OrderState.ASSIGNED, SYSTEM, a.now, Facts(reason=", ".join(assigned) + " reserved"))
    quote = a.quote
    facts = Facts(reason=f"driving to station {a.option.station_id}", lat=quote.lat, lng=quote.lng, eta=a.times.eta)
    return [reserved, transition(a.order, OrderState.EN_ROUTE, Actor.of(a.principal), a.now, facts)]


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


async def next_expiry(session: AsyncSession) -> dt.datetime | None:
    """When the earliest order not yet in service expires (None: there is none): the sweep sleeps until then."""
    states = [int(OrderState.CREATED), int(OrderState.ASSIGNED), int(OrderState.EN_ROUTE)]
    query = select(sa.func.min(col(Order.service_by))).where(col(Order.state).in_(states))
    return cast("dt.datetime | None", (await session.exec(query)).one())


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
