"""Self-service orders moved on by the station: a reported charge/swap session starts → IN_SERVICE, ends →
COMPLETED (repriced with the pinned rate-model version, captured from the hold) or FAILED (hold released).

Stations publish `sessions.SessionReport`s in the transaction that writes the session; the composition root
subscribes `PowerUp.station_session` to them. Each phase of a session is reported once (uplink replays are
dropped, a repeated stop changes nothing), and an order only moves forward, so a replay never charges twice
(the capture is also idempotent per order). A session is linked to an order by, in turn: the order id the
gateway reported, the reservation id, the connector (charge) or vehicle (swap) of an active order at that
station. Only SWAP/CHARGE orders of the reporting station are moved; valet/van orders follow their tasks.
A charge session with no such order but an idTag the operator accepts gets an order of its own
(`token_orders`). The link tells the station side whether the order is settled: an ended charge session with
energy and no settled order is flagged abnormal there (no free energy).
"""

from __future__ import annotations

import functools
import logging

from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.ordering import token_orders
from voltcloud.ordering.lifecycle import Actor, Effects, Facts, UnitOfWork, complete, finish, record
from voltcloud.ordering.models import Order, Reservation
from voltcloud.ordering.states import ACTIVE, Mode, OrderState
from voltcloud.platform.auth import Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.errors import DomainError
from voltcloud.stations.api import CHARGE, ENDED, STARTED, SWAP, SessionLink, SessionReport, Station, tokens

log = logging.getLogger(__name__)

SELF_SERVICE = (int(Mode.SWAP), int(Mode.CHARGE))


async def find_order(session: AsyncSession, report: SessionReport) -> Order | None:
    """The active self-service order at the reporting station this session serves, if any."""
    order: Order | None = None
    if report.order_id:
        order = await session.get(Order, report.order_id)
    elif report.reservation_id:
        reservation = await session.get(Reservation, report.reservation_id)
        if reservation is not None and reservation.order_id:
            order = await session.get(Order, reservation.order_id)
    else:
        query = select(Order).where(
            Order.station_id == report.station_id,
            col(Order.state).in_(sorted(int(s) for s in ACTIVE)),
        )
        if report.kind == CHARGE and report.connector_id:
            query = query.where(Order.connector_id == report.connector_id, Order.mode == int(Mode.CHARGE))
        elif report.kind == SWAP and report.vehicle_id:
            query = query.where(Order.vehicle_id == report.vehicle_id, Order.mode == int(Mode.SWAP))
        else:
            return None
        order = (await session.exec(query.order_by(col(Order.created_at).desc()))).first()
    if order is None or order.station_id != report.station_id or order.mode not in SELF_SERVICE:
        return None
    return order


async def advance(session: AsyncSession, effects: Effects, order: Order, report: SessionReport, clock: Clock) -> None:
    """Moves `order` as far as the session's phase allows; a phase already passed changes nothing."""
    actor = Actor(
        report.gateway_id or f"station:{report.station_id}", int(Role.GATEWAY), f"operator:{order.operator_id}"
    )
    what = "swap" if report.kind == SWAP else "charging session"
    where = f"lane {report.lane}" if report.kind == SWAP else f"connector {report.connector_id or '?'}"
    if order.state in (OrderState.CREATED, OrderState.ASSIGNED):
        if order.state == OrderState.CREATED:
            await record(session, effects, order, OrderState.ASSIGNED, actor, report.started_at)
        await record(session, effects, order, OrderState.EN_ROUTE, actor, report.started_at)
    if order.state == OrderState.EN_ROUTE:
        order.started_at = report.started_at
        await record(
            session,
            effects,
            order,
            OrderState.IN_SERVICE,
            actor,
            report.started_at,
            Facts(reason=f"{what} {report.external_id} started at {where}"),
        )
    if report.phase != ENDED or order.state != OrderState.IN_SERVICE:
        return
    at = report.ended_at or report.started_at
    if report.kind == SWAP:
        order.pack_in_id = report.pack_in_id or order.pack_in_id
        order.pack_out_id = report.pack_out_id or order.pack_out_id
    if not report.success:
        await finish(
            session, effects, order, OrderState.FAILED, actor, at,
            reason=f"{what} {report.external_id} failed: {report.reason or 'reported by the station'}", clock=clock,
        )  # fmt: skip
        return
    started = order.started_at or report.started_at
    await complete(
        session,
        effects,
        order,
        actor,
        at,
        energy_wh=max(report.energy_wh, 0),
        duration_s=max(int((at - started).total_seconds()), 0),
        clock=clock,
        session_ref=report.external_id,
    )


async def on_station_session(
    uow: UnitOfWork, clock: Clock, session: AsyncSession, report: SessionReport
) -> SessionLink | None:
    """The subscriber: links the session to its order and moves the order, inside the session's transaction
    (a savepoint, so an order that cannot move never loses the station's session record)."""
    if report.phase not in (STARTED, ENDED):
        return None
    order = await find_order(session, report)
    if order is None:
        return await _token_session(uow, clock, session, report)
    order_id = order.id
    if order.state not in ACTIVE:
        return SessionLink(order_id, settled=order.state == OrderState.COMPLETED)
    effects = Effects()
    try:
        async with session.begin_nested():
            await advance(session, effects, order, report, clock)
    except (DomainError, StaleDataError) as error:
        log.warning("order %s not moved by session %s (%s): %s", order_id, report.session_id, report.phase, error)
        return SessionLink(order_id)
    return SessionLink(order_id, functools.partial(uow.apply, effects), settled=order.state == OrderState.COMPLETED)


async def _token_session(
    uow: UnitOfWork, clock: Clock, session: AsyncSession, report: SessionReport
) -> SessionLink | None:
    """A charge session started with an idTag and no order: when the station's operator accepts the tag (at the
    session's start), an order for the token opens and moves with the session. Anything else gets no order
    (the ingest side then flags an ended session with energy as abnormal)."""
    if report.kind != CHARGE or not report.id_tag or report.order_id:
        return None
    station = await session.get(Station, report.station_id)
    if station is None:
        return None
    auth = await tokens.authorize(session, station.operator_id, report.id_tag, report.started_at)
    if auth.token is None:
        log.warning("session %s: idTag %s is %s", report.session_id, report.id_tag, auth.status.name.lower())
        return None
    effects = Effects()
    try:
        async with session.begin_nested():
            order = await token_orders.open_order(session, effects, clock, report, auth.token)
            await advance(session, effects, order, report, clock)
    except (DomainError, StaleDataError) as error:
        log.warning("session %s: no order for idTag %s: %s", report.session_id, report.id_tag, error)
        return None
    return SessionLink(order.id, functools.partial(uow.apply, effects), settled=order.state == OrderState.COMPLETED)
