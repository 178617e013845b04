"""Charging and swap sessions as reported by station gateways. Idempotent by (station, kind, external id):
an offline transaction replayed by a charger, or replayed through the uplink, is recorded once.

`sessions_for_order` is the public read the ordering/settlement side uses to see a session's energy.
`SessionReport` is what other domains are told when a session starts or ends (ordering subscribes to it in
process, wired by the composition root, and answers with a `SessionLink`). A charge session that ended with
energy and no subscriber reporting a settled order is flagged by `tokens.flag_unpaid` (no free energy).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform.enums import StationSessionKind
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.stations.models import StationSession

CHARGE, SWAP = int(StationSessionKind.CHARGE), int(StationSessionKind.SWAP)
STARTED, ENDED = "started", "ended"


@dataclass(frozen=True)
class SessionReport:
    """A session that newly started or ended (never sent twice for one session phase: replays are dropped)."""

    phase: str  # STARTED or ENDED
    kind: int  # CHARGE or SWAP
    session_id: str
    station_id: str
    external_id: str
    gateway_id: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    energy_wh: int
    connector_id: str | None
    lane: int
    vehicle_id: str | None
    order_id: str | None
    reservation_id: str | None
    pack_out_id: str | None
    pack_in_id: str | None
    success: bool
    reason: str
    id_tag: str | None = None


@dataclass(frozen=True)
class SessionLink:
    """A subscriber's answer: the order the session belongs to, what to run after the commit, and whether the
    order is now priced and settled (an ended charge session with energy and no settled order is abnormal)."""

    order_id: str
    after_commit: Callable[[], Awaitable[None]] | None = None
    settled: bool = False


# Called inside the transaction that writes the session; must not raise for business reasons.
SessionListener = Callable[[AsyncSession, SessionReport], Awaitable[SessionLink | None]]


def report_of(row: StationSession, phase: str, *, success: bool = True) -> SessionReport:
    return SessionReport(
        phase=phase,
        kind=row.kind,
        session_id=row.id,
        station_id=row.station_id,
        external_id=row.external_id,
        gateway_id=row.gateway_id or "",
        started_at=row.started_at,
        ended_at=row.ended_at,
        energy_wh=row.energy_wh,
        connector_id=row.connector_id,
        lane=row.lane,
        vehicle_id=row.vehicle_id,
        order_id=row.order_id,
        reservation_id=row.reservation_id,
        pack_out_id=row.pack_out_id,
        pack_in_id=row.pack_in_id,
        success=success,
        reason=row.reason,
        id_tag=row.id_tag,
    )


def link_order(session: AsyncSession, row: StationSession, order_id: str) -> None:
    """Records which order a session served (when the gateway did not say)."""
    if row.order_id != order_id:
        row.order_id = order_id
        session.add(row)


async def _find(session: AsyncSession, station_id: str, kind: int, external_id: str) -> StationSession | None:
    query = select(StationSession).where(
        StationSession.station_id == station_id,
        StationSession.kind == kind,
        StationSession.external_id == external_id,
    )
    return (await session.exec(query)).first()


async def start_charge(
    session: AsyncSession,
    *,
    station_id: str,
    external_id: str,
    connector_id: str,
    meter_start_wh: int,
    id_tag: str,
    reservation_id: str,
    order_id: str,
    started_at: dt.datetime,
    gateway_id: str,
) -> tuple[StationSession, bool]:
    """The session (created, or the existing one for a replay) and whether it was created."""
    existing = await _find(session, station_id, CHARGE, external_id)
    if existing is not None:
        return existing, False
    row = StationSession(
        id=new_id("ses"),
        station_id=station_id,
        kind=CHARGE,
        external_id=external_id,
        connector_id=connector_id or None,
        id_tag=id_tag or None,
        reservation_id=reservation_id or None,
        order_id=order_id or None,
        meter_start_wh=meter_start_wh,
        meter_stop_wh=meter_start_wh,
        started_at=started_at,
        gateway_id=gateway_id,
    )
    session.add(row)
    return row, True


async def stop_charge(
    session: AsyncSession,
    *,
    station_id: str,
    external_id: str,
    connector_id: str,
    meter_stop_wh: int,
    energy_wh: int,
    reason: str,
    ended_at: dt.datetime,
    gateway_id: str,
    id_tag: str = "",
) -> tuple[StationSession, bool]:
    """Ends the session (creating it when the start was never seen); a second stop changes nothing. The stop's
    idTag fills in the session's only when the start did not name one (it is who pays)."""
    row = await _find(session, station_id, CHARGE, external_id)
    if row is not None and row.ended_at is not None:
        return row, False
    if row is None:
        row = StationSession(
            id=new_id("ses"),
            station_id=station_id,
            kind=CHARGE,
            external_id=external_id,
            connector_id=connector_id or None,
            meter_start_wh=max(meter_stop_wh - energy_wh, 0),
            started_at=ended_at,
            gateway_id=gateway_id,
        )
    row.id_tag = row.id_tag or id_tag or None
    row.meter_stop_wh = meter_stop_wh
    measured = meter_stop_wh - row.meter_start_wh
    row.energy_wh = energy_wh if energy_wh > 0 else max(measured, 0)
    row.ended_at = ended_at
    row.reason = reason[:200]
    session.add(row)
    return row, True


async def swap(
    session: AsyncSession,
    *,
    station_id: str,
    external_id: str,
    lane: int,
    vehicle_id: str,
    order_id: str,
    pack_out_id: str,
    pack_in_id: str,
    energy_wh: int,
    at: dt.datetime,
    ended: bool,
    success: bool,
    reason: str,
    gateway_id: str,
) -> tuple[StationSession, bool]:
    """Records a swap start (ended=False) or completion. Returns the row and whether it newly ended/started."""
    row = await _find(session, station_id, SWAP, external_id)
    if row is not None and (row.ended_at is not None or not ended):
        return row, False
    if row is None:
        row = StationSession(
            id=new_id("ses"),
            station_id=station_id,
            kind=SWAP,
            external_id=external_id,
            started_at=at,
            gateway_id=gateway_id,
        )
    row.lane = lane or row.lane
    row.vehicle_id = vehicle_id or row.vehicle_id
    row.order_id = order_id or row.order_id
    row.pack_out_id = pack_out_id or row.pack_out_id
    row.pack_in_id = pack_in_id or row.pack_in_id
    if ended:
        row.ended_at = at
        row.energy_wh = energy_wh if success else 0
        row.reason = "" if success else (reason or "failed")[:200]
    session.add(row)
    return row, True


async def list_sessions(
    session: AsyncSession, page: Page, *, station_id: str | None, order_id: str | None
) -> list[StationSession]:
    query = select(StationSession).order_by(col(StationSession.id).desc()).limit(page.size)
    if station_id:
        query = query.where(StationSession.station_id == station_id)
    if order_id:
        query = query.where(StationSession.order_id == order_id)
    if page.after is not None:
        query = query.where(col(StationSession.id) < page.after)
    return list(await session.exec(query))


async def sessions_for_order(session: AsyncSession, order_id: str) -> list[StationSession]:
    """Every station session reported for an order (energy in Wh, pack ids): for ordering and settlement."""
    query = select(StationSession).where(StationSession.order_id == order_id).order_by(col(StationSession.id))
    return list(await session.exec(query))
