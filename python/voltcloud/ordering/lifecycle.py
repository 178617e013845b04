"""The public order lifecycle: transitions with their event rows, and what happens after commit.

Ordering's services and the dispatch domain move orders only through these functions, so every state change
is checked against `states.TRANSITIONS` and leaves one `OrderEvent` row (who, when, where, energy, amount,
why) and one change on the feed (topic "order", `publish_order`, the one writer of it), so every replica's
watchers learn of it at commit. Functions take the caller's session and an `Effects` collector;
`UnitOfWork.run` commits and then applies the effects (engine view, this process's watcher wake-ups, dispatch
offers) — never before the commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.engine import Engine
from voltcloud.ordering import abnormal_orders, order_coupons, payments
from voltcloud.ordering.models import (
    RESERVATION_ACTIVE,
    RESERVATION_CANCELLED,
    RESERVATION_EXPIRED,
    RESERVATION_USED,
    Order,
    OrderEvent,
    Reservation,
)
from voltcloud.ordering.states import OrderState, check_transition
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database, contention
from voltcloud.platform.errors import Aborted, DomainError
from voltcloud.stations.api import InventoryChange, inventory

log = logging.getLogger(__name__)

T = TypeVar("T")

_SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True)
class Actor:
    subject: str
    role: int
    tenant: str = ""

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.subject, int(principal.role), str(principal.tenant or ""))


SYSTEM = Actor("voltcloud", int(Role.PLATFORM_ADMIN))


@dataclass
class Effects:
    """What to do once the transaction has committed."""

    changes: list[InventoryChange] = field(default_factory=list)
    orders: dict[str, int] = field(default_factory=dict)  # order id -> its last event seq
    callbacks: list[Callable[[], None]] = field(default_factory=list)


ORDER_TOPIC = "order"  # one change per OrderEvent; payload: see `publish_order`
POSITION_TOPIC = "order_position"  # a specialist's or van's position while serving an order
POSITION_EVERY_S = 1.0  # at most one position change per order and second per replica: apps report often


@dataclass
class _Watched:
    """What this process knows of one watched order; `generation` grows with every news of it."""

    watchers: int = 0
    generation: int = 0
    seq: int = 0  # the highest event seq announced
    position: tuple[float, float, dt.datetime | None] | None = None
    position_at: dt.datetime | None = None
    news: asyncio.Event = field(default_factory=asyncio.Event)


class OrderFeed:
    """Wakes this process's WatchOrder streams when an order's history grows or its specialist moves, on any
    replica: it follows the change feed's "order" and "order_position" topics (`follow`), and this process's
    own commits wake watchers at once (`notify` / `move` after commit; the feed's copy is then a no-op)."""

    def __init__(self, changes: feed.ChangeFeed | None = None, *, position_every_s: float = POSITION_EVERY_S) -> None:
        self.position_every_s = position_every_s
        self._watched: dict[str, _Watched] = {}
        self._position_sent: dict[str, float] = {}  # order id -> loop time of its last published position
        if changes is not None:
            self.follow(changes)

    def follow(self, changes: feed.ChangeFeed) -> None:
        changes.subscribe(ORDER_TOPIC, self._on_orders)
        changes.subscribe(POSITION_TOPIC, self._on_positions)

    def watch(self, order_id: str) -> int:
        """Registers a watcher; returns the generation to read from (call `forget` when done)."""
        watched = self._watched.setdefault(order_id, _Watched())
        watched.watchers += 1
        return watched.generation

    def forget(self, order_id: str) -> None:
        watched = self._watched.get(order_id)
        if watched is not None:
            watched.watchers -= 1
            if watched.watchers <= 0:
                del self._watched[order_id]

    def generation(self, order_id: str) -> int:
        watched = self._watched.get(order_id)
        return watched.generation if watched is not None else 0

    async def changed(self, order_id: str, seen: int) -> int:
        """Waits until there is news of a watched order after generation `seen`; returns the new generation.
        No timer: the feed delivers every committed change (and repairs a lost notification by itself)."""
        watched = self._watched.setdefault(order_id, _Watched())
        while watched.generation == seen:
            await watched.news.wait()
        return watched.generation

    def notify(self, order_id: str, seq: int | None = None) -> None:
        """News of an order (its event `seq`, if known: an event already announced is not news again)."""
        watched = self._watched.get(order_id)
        if watched is None:
            return
        if seq is not None:
            if seq <= watched.seq:
                return
            watched.seq = seq
        self._bump(watched)

    def position(self, order_id: str) -> tuple[float, float, dt.datetime | None] | None:
        watched = self._watched.get(order_id)
        return watched.position if watched is not None else None

    def move(self, order_id: str, lat: float, lng: float, eta: dt.datetime | None, at: dt.datetime) -> None:
        """The specialist/van serving the order was at (lat, lng) at `at`; an older report changes nothing."""
        watched = self._watched.get(order_id)
        if watched is None or (watched.position_at is not None and at <= watched.position_at):
            return
        watched.position = (lat, lng, eta)
        watched.position_at = at
        self._bump(watched)

    @staticmethod
    def _bump(watched: _Watched) -> None:
        watched.generation += 1
        watched.news.set()
        watched.news = asyncio.Event()

    async def publish_position(
        self, session: AsyncSession, order_id: str, lat: float, lng: float, at: dt.datetime
    ) -> bool:
        """Puts a serving unit's position on the feed for other replicas' watchers, throttled per order (this
        replica's own watchers get every position through `move`); True when published."""
        now = asyncio.get_running_loop().time()
        last = self._position_sent.get(order_id)
        if last is not None and now - last < self.position_every_s:
            return False
        if len(self._position_sent) > 10_000:  # forget orders not moved lately, so the map stays small
            horizon = now - self.position_every_s
            self._position_sent = {k: t for k, t in self._position_sent.items() if t > horizon}
        self._position_sent[order_id] = now
        await feed.publish(session, POSITION_TOPIC, order_id, {"order_id": order_id, "lat": lat, "lng": lng, "at": at})
        return True

    def _on_orders(self, changes: list[feed.Change]) -> None:
        for change in changes:
            self.notify(change.key, int(change.payload.get("seq", 0)) or None)

    def _on_positions(self, changes: list[feed.Change]) -> None:
        for change in changes:
            p = change.payload
            at = dt.datetime.fromisoformat(p["at"]) if p.get("at") else change.at
            self.move(change.key, float(p["lat"]), float(p["lng"]), None, at)


_PENDING_ORDER_CHANGES = "ordering.pending_order_changes"


async def publish_order(session: AsyncSession, order: Order) -> None:
    """The one writer of topic "order": what a subscriber needs to act without reading the order (who made
    it, for which vehicle and fleet, its state) and `seq`, its last event, to tell news from a repeat.

    One change per order and transaction: a transaction that moves an order several times brings its change
    up to date instead of adding another row (CreateOrder publishes once, after its last event)."""
    payload = {
        "order_id": order.id,
        "state": int(order.state),
        "created_by": order.created_by,
        "vehicle_id": order.vehicle_id,
        "fleet_id": order.fleet_id,
        "seq": order.last_event_seq,
    }
    published: dict[str, int] = session.info.setdefault(_PENDING_ORDER_CHANGES, {})
    change_id = published.get(order.id)
    if change_id is not None and await feed.republish(session, change_id, payload):
        return
    published[order.id] = await feed.publish(session, ORDER_TOPIC, order.id, payload)


class UnitOfWork:
    """Runs domain code in one transaction, maps lost races to ABORTED, then applies the effects."""

    def __init__(self, db: Database, engine: Engine, feed: OrderFeed) -> None:
        self.db = db
        self.engine = engine
        self.feed = feed

    async def run(
        self, name: str, work: Callable[[AsyncSession, Effects], Awaitable[T]], *, grouped: bool = False
    ) -> T:
        """`grouped`: in a transaction shared with this process's concurrent grouped units of work, each in
        its own savepoint (`Database.grouped`, group commit); `work` may then run a second time, alone."""

        async def member(session: AsyncSession) -> tuple[T, Effects]:
            effects = Effects()  # per run: a group that fails as a whole runs its members again
            return await work(session, effects), effects

        try:
            if grouped:
                result, effects = await self.db.grouped(name, member)
            else:
                async with self.db.transaction(name, write=True) as session:
                    result, effects = await member(session)
        except StaleDataError:
            raise Aborted("the order or task was changed concurrently; retry") from None
        except sa_exc.DBAPIError as error:
            lost_race = contention(error)
            if lost_race is None:
                raise
            raise lost_race from None
        await self.apply(effects)
        return result

    async def apply(self, effects: Effects) -> None:
        try:
            self.engine.apply(effects.changes)
        except Exception:  # the engine is a cache: log, the periodic sync repairs it
            log.exception("engine update after commit failed")
        for order_id, seq in effects.orders.items():
            self.feed.notify(order_id, seq)
        for callback in effects.callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")


@dataclass(frozen=True)
class Facts:
    """What an event records besides the transition."""

    reason: str = ""
    lat: float | None = None
    lng: float | None = None
    energy_wh: int = 0
    amount_minor: int | None = None
    currency: str = ""
    eta: dt.datetime | None = None


async def record(
    session: AsyncSession,
    effects: Effects,
    order: Order,
    target: OrderState | None,
    actor: Actor,
    at: dt.datetime,
    facts: Facts = Facts(),
) -> OrderEvent:
    """Moves `order` to `target` (None: a progress fact, no transition) and appends its event row.

    FailedPrecondition on an illegal transition; the version check on flush makes a concurrent change ABORTED.
    """
    event = OrderEvent(**transition(order, target, actor, at, facts))
    session.add(order)
    session.add(event)
    await publish_order(session, order)
    effects.orders[order.id] = order.last_event_seq
    return event


def transition(
    order: Order, target: OrderState | None, actor: Actor, at: dt.datetime, facts: Facts = Facts()
) -> dict[str, Any]:
    """Moves `order` (in memory) to `target` (None: a progress fact) and returns its event row's values: the
    rule `record` applies, for a caller that writes the rows itself (`insert_new_order`)."""
    from_state = OrderState(order.state)
    to_state = from_state if target is None else target
    if target is not None:
        check_transition(order.state, target)
    order.last_event_seq += 1
    order.state = int(to_state)
    order.updated_at = at
    return {
        "order_id": order.id,
        "seq": order.last_event_seq,
        "time": at,
        "from_state": int(from_state),
        "to_state": int(to_state),
        "actor_subject": actor.subject,
        "actor_role": actor.role,
        "actor_tenant": actor.tenant,
        "lat": facts.lat,
        "lng": facts.lng,
        "energy_wh": facts.energy_wh,
        "amount_minor": facts.amount_minor,
        "currency": facts.currency or (order.currency if facts.amount_minor is not None else ""),
        "reason": facts.reason[:500],
        "eta_time": facts.eta,
    }


_ORDERS: sa.Table = Order.__table__  # type: ignore[attr-defined]
_EVENTS: sa.Table = OrderEvent.__table__  # type: ignore[attr-defined]
_INSERT_ORDER = sa.insert(_ORDERS)
_INSERT_EVENTS = sa.insert(_EVENTS)


async def insert_new_order(session: AsyncSession, effects: Effects, order: Order, events: list[dict[str, Any]]) -> None:
    """Writes a new order (its final state, after `transition`s) and its events with Core statements (one
    INSERT, one executemany), and its one change on the feed: no ORM unit of work on CreateOrder's path. The
    instance stays out of the session (the caller returns it; a later transaction loads its own copy)."""
    connection = await session.connection()
    await connection.execute(_INSERT_ORDER, {c.name: getattr(order, c.key) for c in _ORDER_COLUMNS})
    await connection.execute(_INSERT_EVENTS, events)
    await publish_order(session, order)
    effects.orders[order.id] = order.last_event_seq


_ORDER_COLUMNS = tuple(_ORDERS.columns)


async def events_after(session: AsyncSession, order_id: str, after_seq: int) -> list[OrderEvent]:
    rows = await session.exec(
        select(OrderEvent)
        .where(OrderEvent.order_id == order_id, col(OrderEvent.seq) > after_seq)
        .order_by(col(OrderEvent.seq))
    )
    return list(rows)


async def release_resources(session: AsyncSession, effects: Effects, order: Order, *, state: int) -> None:
    """Frees what the order reserved: connector, pack, specialist/van; closes its reservation row."""
    if order.connector_id:
        change = await inventory.release_connector(session, order.connector_id)
        if change:
            effects.changes.append(change)
    if order.pack_id and order.state != OrderState.COMPLETED:
        change = await inventory.release_pack(session, order.pack_id)
        if change:
            effects.changes.append(change)
    if order.unit_id:
        change = await inventory.release_unit(session, order.unit_id)
        if change:
            effects.changes.append(change)
    if order.reservation_id:
        reservation = await session.get(Reservation, order.reservation_id)
        if reservation is not None and reservation.state == RESERVATION_ACTIVE:
            reservation.state = state
            session.add(reservation)


async def finish(
    session: AsyncSession,
    effects: Effects,
    order: Order,
    target: OrderState,
    actor: Actor,
    at: dt.datetime,
    *,
    reason: str,
    fee_minor: int = 0,
    clock: Clock = _SYSTEM_CLOCK,
) -> None:
    """Ends an order without service (cancelled, failed, expired): releases everything, charges `fee_minor`
    from the hold (capturing the fee releases the rest) or releases the hold whole."""
    check_transition(order.state, target)
    await release_resources(
        session, effects, order, state=RESERVATION_EXPIRED if target == OrderState.EXPIRED else RESERVATION_CANCELLED
    )
    fee = min(fee_minor, order.hold_amount_minor)
    if fee > 0:
        order.journal_entry_id = await payments.capture(
            session,
            hold_id=order.hold_id,
            amount_minor=fee,
            operator_id=order.operator_id or "",
            idempotency_key=f"order-fee:{order.id}",
            description=f"{target.label} fee of order {order.id}",
            clock=clock,
        )
        order.cancellation_fee_minor = fee
    else:
        await payments.release(
            session, hold_id=order.hold_id, reason=f"order {order.id} {target.label}: {reason}", clock=clock
        )
    order.reason = reason[:500]
    await record(
        session,
        effects,
        order,
        target,
        actor,
        at,
        Facts(reason=reason, amount_minor=fee if fee > 0 else None, currency=order.currency),
    )


async def complete(
    session: AsyncSession,
    effects: Effects,
    order: Order,
    actor: Actor,
    at: dt.datetime,
    *,
    energy_wh: int,
    duration_s: int,
    lat: float | None = None,
    lng: float | None = None,
    clock: Clock = _SYSTEM_CLOCK,
    session_ref: str = "",
) -> None:
    """Prices the actual usage at the rate model in force when the order started, captures it from the hold
    (settlement releases the rest), frees the resources, and marks the order completed; then checks it for
    abnormal facts and refunds an overcharge (`abnormal_orders`). `session_ref`: the station's session id."""
    check_transition(order.state, OrderState.COMPLETED)
    customer_kind, customer_id = customer_of(order)
    price = await payments.estimate(
        session,
        station_id=order.station_id or "",
        customer_kind=customer_kind,
        customer_id=customer_id,
        start=order.started_at or order.created_at,
        energy_wh=energy_wh,
        duration_s=duration_s,
        rate_model_id=order.rate_model_id or None,
        rate_model_version=order.rate_model_version if order.rate_model_id else None,
    )
    amount = price.amount_minor
    order.journal_entry_id = await payments.capture(
        session,
        hold_id=order.hold_id,
        amount_minor=amount,
        operator_id=order.operator_id or "",
        idempotency_key=f"order-capture:{order.id}",
        description=f"power-up order {order.id}: {energy_wh} Wh",
        clock=clock,
    )
    order.energy_wh = energy_wh
    order.final_amount_minor = amount
    await release_resources(session, effects, order, state=RESERVATION_USED)
    await record(
        session,
        effects,
        order,
        OrderState.COMPLETED,
        actor,
        at,
        Facts(
            reason=f"completed: {energy_wh} Wh, charged {amount / 100:.2f} {price.currency} "
            f"(rate model {price.rate_model_id} v{price.rate_model_version})",
            lat=lat,
            lng=lng,
            energy_wh=energy_wh,
            amount_minor=amount,
            currency=price.currency,
        ),
    )
    refunded = await _check_abnormal(session, effects, order, at, energy_wh, duration_s, session_ref, clock)
    await _redeem_coupon(session, effects, order, at, amount - refunded, clock)


async def _check_abnormal(
    session: AsyncSession,
    effects: Effects,
    order: Order,
    at: dt.datetime,
    energy_wh: int,
    duration_s: int,
    session_ref: str,
    clock: Clock,
) -> int:
    """Runs abnormal-order detection on a completed order and records what it found (and refunded) as an
    event of the order's history; returns the amount refunded."""
    outcome = await abnormal_orders.check_completed(
        session, order, energy_wh=energy_wh, duration_s=duration_s, at=at, session_ref=session_ref, clock=clock
    )
    if outcome is None:
        return 0
    refunded = outcome.refunded_minor
    what = f"refunded {refunded / 100:.2f} {order.currency}" if refunded else "no automatic refund"
    reason = f"abnormal order ({', '.join(outcome.flags)}): {what}; {outcome.detail}"
    facts = Facts(reason=reason, amount_minor=refunded or None, currency=order.currency)
    await record(session, effects, order, None, SYSTEM, at, facts)
    return refunded


async def _redeem_coupon(
    session: AsyncSession, effects: Effects, order: Order, at: dt.datetime, paid_minor: int, clock: Clock
) -> None:
    """Redeems the order's coupon (validated at creation) on what it finally cost; the history says how much
    was credited, or why nothing was."""
    if not order.coupon_code:
        return
    discount, refused = await order_coupons.redeem(session, order, paid_minor, clock)
    if discount:
        reason = f"coupon {order.coupon_code}: {discount / 100:.2f} {order.currency} credited to the payer"
    else:
        reason = f"coupon {order.coupon_code} not applied: {refused or 'nothing was paid'}"
    facts = Facts(reason=reason, amount_minor=discount or None, currency=order.currency)
    await record(session, effects, order, None, SYSTEM, at, facts)


def customer_of(order: Order) -> tuple[str, str]:
    """Who the tariff and the account belong to: the fleet, or else the ordering driver."""
    if order.fleet_id:
        return "fleet", order.fleet_id
    return "driver", order.driver_id or order.created_by


def option_of(order: Order) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(order.option_json)
    return value


async def load_order(session: AsyncSession, order_id: str) -> Order | None:
    return await session.get(Order, order_id)


def at_or_now(clock: Clock, at: dt.datetime | None) -> dt.datetime:
    return at if at is not None else clock.now()


__all__ = [
    "ORDER_TOPIC",
    "POSITION_TOPIC",
    "SYSTEM",
    "Actor",
    "DomainError",
    "Effects",
    "Facts",
    "OrderFeed",
    "UnitOfWork",
    "complete",
    "customer_of",
    "events_after",
    "finish",
    "insert_new_order",
    "publish_order",
    "record",
    "release_resources",
    "transition",
]
