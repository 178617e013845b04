"""Advance reservations of a charger connector or a swap lane for a time window.

Overlapping windows on one connector are refused; a swap station takes at most `lanes` overlapping
reservations (or one per named lane). Writers of one connector's / station's windows are serialised by a
version bump of that row (inventory.lock_*), so two replicas cannot both book the last slot. A reservation
not used within `reservation_no_show_s` of its start expires and frees the slot.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.ordering.lifecycle import Effects, UnitOfWork
from voltcloud.ordering.models import RESERVATION_ACTIVE, RESERVATION_CANCELLED, RESERVATION_EXPIRED, Reservation
from voltcloud.ordering.quoting import vehicle_for
from voltcloud.platform import feed, idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.enums import ConnectorStatus, StationKind
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.stations.api import Connector, Station, inventory

# A connector in one of these states cannot be booked.
_OUT_OF_SERVICE = (ConnectorStatus.FAULTED, ConnectorStatus.UNAVAILABLE, ConnectorStatus.OFFLINE)

MAX_WINDOW = dt.timedelta(hours=4)
MAX_AHEAD = dt.timedelta(days=14)


@dataclass(frozen=True)
class ReservationInput:
    idempotency_key: str
    station_id: str
    vehicle_id: str
    start: dt.datetime | None
    end: dt.datetime | None
    connector_id: str = ""
    lane: int = 0


_RESERVATIONS: sa.Table = Reservation.__table__  # type: ignore[attr-defined]
_INSERT_RESERVATION = sa.insert(_RESERVATIONS)


async def overlapping(
    session: AsyncSession,
    *,
    station_id: str,
    connector_id: str | None,
    start: dt.datetime,
    end: dt.datetime,
    lane: int = 0,
    exclude_orders: bool = True,
) -> list[str]:
    """The ids of the active reservations overlapping [start, end) on this connector (charging) or station
    (swap lanes). One Core SELECT of the ids (CreateOrder asks on every order; nobody needs the rows)."""
    table = _RESERVATIONS.c
    query = sa.select(table.id).where(
        table.station_id == station_id,
        table.state == RESERVATION_ACTIVE,
        table.starts_at < end,
        table.ends_at > start,
    )
    if connector_id:
        query = query.where(table.connector_id == connector_id)
    if lane:
        query = query.where(table.lane.in_([0, lane]))
    if exclude_orders:
        query = query.where(table.order_id.is_(None))
    return list((await (await session.connection()).execute(query)).scalars())


async def insert_order_reservation(
    session: AsyncSession,
    *,
    station_id: str,
    connector_id: str | None,
    pack_id: str | None,
    vehicle_id: str,
    order_id: str,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    created_by: str,
    currency: str,
) -> str:
    """The window an order books at its station (active, holding its connector or pack), in one Core INSERT;
    returns its id. Its key is the order's, so an order books one window."""
    reservation_id = new_id("rsv")
    await (await session.connection()).execute(
        _INSERT_RESERVATION,
        {
            "id": reservation_id,
            "station_id": station_id,
            "connector_id": connector_id,
            "lane": 0,
            "pack_id": pack_id,
            "vehicle_id": vehicle_id,
            "order_id": order_id,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "state": RESERVATION_ACTIVE,
            "holds_resource": True,
            "fee_minor": 0,
            "currency": currency,
            "created_by": created_by,
            "idempotency_key": f"order:{order_id}",
            "created_at": starts_at,
            "version": 1,
        },
    )
    return reservation_id


RESERVATION_TOPIC = "reservation"  # a new reservation; payload: its window


async def create_reservation(uow: UnitOfWork, clock: Clock, principal: Principal, inp: ReservationInput) -> Reservation:
    now = clock.now()
    if not inp.idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    if inp.start is None or inp.end is None:
        raise InvalidArgument.for_field("window", "start and end are required")
    if inp.end <= inp.start:
        raise InvalidArgument.for_field("window.end", "must be after window.start")
    if inp.end - inp.start > MAX_WINDOW:
        raise InvalidArgument.for_field("window", f"may last at most {MAX_WINDOW}")
    if inp.end <= now:
        raise InvalidArgument.for_field("window.end", "is in the past")
    if inp.start > now + MAX_AHEAD:
        raise InvalidArgument.for_field("window.start", f"may be at most {MAX_AHEAD.days} days ahead")
    key = inp.idempotency_key
    request = {k: v for k, v in asdict(inp).items() if k != "idempotency_key"}
    start, end = inp.start, inp.end

    async def work(session: AsyncSession, effects: Effects) -> Reservation:
        claim = await idempotency.claim(session, "CreateReservation", key, request, now=now, caller=principal.subject)
        if claim.replay_of is not None:
            return await _reservation(session, claim.replay_of)
        await vehicle_for(session, principal, inp.vehicle_id)
        station = await session.get(Station, inp.station_id)
        if station is None:
            raise NotFound(f"station {inp.station_id} not found")
        connector_id: str | None = None
        if station.kind == StationKind.CHARGING:
            if inp.lane:
                raise InvalidArgument.for_field("lane", "a charging station has connectors, not lanes")
            connectors = list(await session.exec(select(Connector).where(Connector.station_id == station.id)))
            if inp.connector_id:
                connectors = [c for c in connectors if c.id == inp.connector_id]
                if not connectors:
                    raise NotFound(f"connector {inp.connector_id} not found at station {station.id}")
            free = None
            for connector in sorted(connectors, key=lambda c: c.id):
                if connector.status in _OUT_OF_SERVICE:
                    continue
                if not await overlapping(
                    session, station_id=station.id, connector_id=connector.id, start=start, end=end,
                    exclude_orders=False,
                ):  # fmt: skip
                    free = connector
                    break
            if free is None:
                raise FailedPrecondition(
                    f"no connector of station {station.id} is free in [{start.isoformat()}, {end.isoformat()})"
                )
            await inventory.lock_connector(session, free.id, free.version)
            connector_id = free.id
        else:
            if inp.connector_id:
                raise InvalidArgument.for_field("connector_id", "a swap station has lanes, not connectors")
            if inp.lane < 0 or inp.lane > station.lanes:
                raise InvalidArgument.for_field("lane", f"must be within [0, {station.lanes}]")
            await inventory.lock_station(session, station.id)
            clash = await overlapping(
                session, station_id=station.id, connector_id=None, start=start, end=end, lane=inp.lane,
                exclude_orders=False,
            )  # fmt: skip
            if (inp.lane and clash) or len(clash) >= max(station.lanes, 1):
                raise FailedPrecondition(
                    f"the lanes of station {station.id} are booked in [{start.isoformat()}, {end.isoformat()})"
                )
        reservation = Reservation(
            id=new_id("rsv"),
            station_id=station.id,
            connector_id=connector_id,
            lane=inp.lane,
            vehicle_id=inp.vehicle_id,
            starts_at=start,
            ends_at=end,
            state=RESERVATION_ACTIVE,
            created_by=principal.subject,
            idempotency_key=key,
            created_at=now,
        )
        session.add(reservation)
        await session.flush()
        # Every replica's sweep learns when it falls due (`expire_no_shows`): it sleeps until the earliest one.
        await feed.publish(session, RESERVATION_TOPIC, reservation.id, {"starts_at": start, "ends_at": end})
        await idempotency.complete(session, claim, reservation.id)
        return reservation

    return await uow.run("ordering.reservation.create", work)


async def _reservation(session: AsyncSession, reservation_id: str) -> Reservation:
    reservation = await session.get(Reservation, reservation_id)
    if reservation is None:  # pragma: no cover - committed with the key that names it
        raise NotFound(f"reservation {reservation_id} not found")
    return reservation


async def _may_see(session: AsyncSession, principal: Principal, reservation: Reservation) -> bool:
    """Its creator, the admin, and the operator of its station (not every operator)."""
    if principal.is_admin or reservation.created_by == principal.subject:
        return True
    tenant = principal.tenant
    if principal.role is not Role.OPERATOR or tenant is None or tenant.kind != "operator":
        return False
    station = await session.get(Station, reservation.station_id)
    return station is not None and station.operator_id == tenant.id


async def cancel_reservation(
    uow: UnitOfWork, clock: Clock, principal: Principal, reservation_id: str, idempotency_key: str = ""
) -> Reservation:
    async def work(session: AsyncSession, effects: Effects) -> Reservation:
        reservation = await session.get(Reservation, reservation_id)
        if reservation is None or not await _may_see(session, principal, reservation):
            raise NotFound(f"reservation {reservation_id} not found")
        claim = await idempotency.claim(
            session, "CancelReservation", idempotency_key, {"reservation": reservation_id},
            now=clock.now(), caller=principal.subject, required=False,
        )  # fmt: skip
        if claim.is_replay or reservation.state == RESERVATION_CANCELLED:  # cancelling twice is harmless
            return reservation
        if reservation.state != RESERVATION_ACTIVE:
            raise FailedPrecondition(f"reservation {reservation_id} is no longer active")
        if reservation.order_id:
            raise FailedPrecondition(f"reservation {reservation_id} belongs to order {reservation.order_id}: cancel it")
        reservation.state = RESERVATION_CANCELLED
        session.add(reservation)
        await idempotency.complete(session, claim, reservation.id)
        return reservation

    return await uow.run("ordering.reservation.cancel", work)


@dataclass(frozen=True)
class ReservationFilter:
    station_id: str | None = None
    vehicle_id: str | None = None
    states: frozenset[int] = frozenset()
    overlaps_start: dt.datetime | None = None
    overlaps_end: dt.datetime | None = None


async def list_reservations(
    session: AsyncSession, principal: Principal, filters: ReservationFilter, page: Page
) -> list[Reservation]:
    query = select(Reservation).order_by(col(Reservation.id)).limit(page.size)
    if not principal.is_admin and principal.role is not Role.OPERATOR:
        query = query.where(Reservation.created_by == principal.subject)
    if principal.role is Role.OPERATOR and principal.tenant is not None:
        query = query.where(
            col(Reservation.station_id).in_(select(Station.id).where(Station.operator_id == principal.tenant.id))
        )
    if filters.station_id:
        query = query.where(Reservation.station_id == filters.station_id)
    if filters.vehicle_id:
        query = query.where(Reservation.vehicle_id == filters.vehicle_id)
    if filters.states:
        query = query.where(col(Reservation.state).in_(sorted(filters.states)))
    if filters.overlaps_start is not None:
        query = query.where(col(Reservation.ends_at) > filters.overlaps_start)
    if filters.overlaps_end is not None:
        query = query.where(col(Reservation.starts_at) < filters.overlaps_end)
    if page.after is not None:
        query = query.where(col(Reservation.id) > page.after)
    return list(await session.exec(query))


async def next_no_show(session: AsyncSession, settings: Settings) -> dt.datetime | None:
    """When the earliest unused active reservation falls due for `expire_no_shows` (None: there is none)."""
    table = Reservation.__table__  # type: ignore[attr-defined]
    query = sa.select(sa.func.min(table.c.starts_at), sa.func.min(table.c.ends_at)).where(
        table.c.state == RESERVATION_ACTIVE, table.c.order_id.is_(None)
    )
    first_start, first_end = (await (await session.connection()).execute(query)).one()
    no_show = first_start + dt.timedelta(seconds=settings.reservation_no_show_s) if first_start else None
    return min((t for t in (no_show, first_end) if t is not None), default=None)


async def expire_no_shows(uow: UnitOfWork, clock: Clock, settings: Settings) -> int:
    """Advance reservations nobody used within the no-show period of their start, or whose window ended."""
    now = clock.now()
    cutoff = now - dt.timedelta(seconds=settings.reservation_no_show_s)

    async def work(session: AsyncSession, effects: Effects) -> int:
        due = list(
            await session.exec(
                select(Reservation)
                .where(
                    Reservation.state == RESERVATION_ACTIVE,
                    col(Reservation.order_id).is_(None),
                    (col(Reservation.starts_at) <= cutoff) | (col(Reservation.ends_at) <= now),
                )
                .limit(200)
            )
        )
        for reservation in due:
            reservation.state = RESERVATION_EXPIRED
            session.add(reservation)
            if reservation.holds_resource and reservation.connector_id:
                change = await inventory.release_connector(session, reservation.connector_id)
                if change:
                    effects.changes.append(change)
        return len(due)

    return await uow.run("ordering.reservation.expire", work)
