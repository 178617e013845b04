"""Battery packs: registry, lifecycle rules, flow history, inspections and the swap-pack choice.

Lifecycle (PackState numbers): IN_VEHICLE 1, CHARGING 2, READY 3, RESERVED 4, QUARANTINED 5, WITHDRAWN 6,
IN_TRANSIT 7. QUARANTINED and WITHDRAWN are sticky: station reports never move a pack out of them, so a
quarantined pack is never handed out. Every change writes a PackEvent row (the flow history).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud import _core, engine_limits
from voltcloud.maintenance import api as workorders
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import AlarmLevel, PackState
from voltcloud.platform.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page
from voltcloud.platform.tracing import engine_span
from voltcloud.stations import inventory
from voltcloud.stations.models import Inspection, Pack, PackEvent, PackType, Station

IN_VEHICLE, CHARGING, READY, RESERVED, QUARANTINED, WITHDRAWN, IN_TRANSIT = (int(s) for s in PackState)
STICKY = frozenset({QUARANTINED, WITHDRAWN})
STATION_REPORTABLE = frozenset({CHARGING, READY})
DEFECT_NONE = 1
# Swap-pack matching defaults when the vehicle's need is unknown: the SOC a handed-out pack must have at
# least, and the trip length (0 km: the matcher then hands out the weakest fitting pack, keeping strong packs
# for vehicles with a known long trip).
MIN_SWAP_SOC_PERMILLE = 800
UNKNOWN_TRIP_KM = 0.0


@dataclass(frozen=True)
class ActorRef:
    subject: str
    role: int

    @classmethod
    def of(cls, principal: Principal) -> ActorRef:
        return cls(principal.subject, int(principal.role))


@dataclass(frozen=True)
class PackView:
    pack: Pack
    pack_type: PackType | None
    operator_id: str
    update_time: dt.datetime | None


def _scope(principal: Principal) -> str | None:
    if principal.role in (Role.OPERATOR, Role.ENGINEER, Role.GATEWAY) and principal.tenant is not None:
        return principal.tenant.id
    return None


async def _operator_of(session: AsyncSession, pack: Pack) -> str:
    if pack.operator_id:
        return pack.operator_id
    if pack.station_id:
        station = await session.get(Station, pack.station_id)
        if station is not None:
            return station.operator_id
    return ""


async def load_pack(session: AsyncSession, principal: Principal | None, pack_id: str, *, lock: bool = False) -> Pack:
    query = select(Pack).where(Pack.id == pack_id)
    if lock:
        query = query.with_for_update()
    pack = (await session.exec(query)).first()
    if pack is None:
        raise NotFound(f"pack {pack_id} not found")
    if principal is not None:
        scope = _scope(principal)
        if scope is not None and await _operator_of(session, pack) != scope:
            raise NotFound(f"pack {pack_id} not found")
    return pack


async def view(session: AsyncSession, pack: Pack) -> PackView:
    last = (
        await session.exec(
            select(PackEvent.time).where(PackEvent.pack_id == pack.id).order_by(col(PackEvent.id).desc()).limit(1)
        )
    ).first()
    return PackView(pack, await session.get(PackType, pack.pack_type_id), await _operator_of(session, pack), last)


def record(
    session: AsyncSession,
    pack: Pack,
    now: dt.datetime,
    reason: str,
    actor: ActorRef | None = None,
    session_id: str | None = None,
    power_w: int = 0,
) -> None:
    session.add(
        PackEvent(
            pack_id=pack.id,
            time=now,
            state=pack.state,
            station_id=pack.station_id,
            slot_no=pack.slot_no,
            vehicle_id=pack.vehicle_id,
            transit_id=pack.transit_id,
            soc_permille=pack.soc_permille,
            soh_permille=pack.soh_permille,
            temperature_milli_c=pack.temperature_milli_c,
            cycles=pack.cycles,
            power_w=power_w,
            reason=reason[:200],
            session_id=session_id,
            actor_subject=actor.subject if actor else "",
            actor_role=actor.role if actor else 0,
        )
    )


@dataclass(frozen=True)
class NewPack:
    """A pack to register, as the caller described it."""

    pack_id: str
    pack_type_id: int
    operator_id: str
    station_id: str | None
    slot_no: int | None
    vehicle_id: str | None
    soc_permille: int
    soh_permille: int
    cycles: int
    temperature_milli_c: int


async def register_pack(session: AsyncSession, principal: Principal, now: dt.datetime, new: NewPack) -> Pack:
    if principal.role is not Role.PLATFORM_ADMIN:
        principal.require_tenant("operator", new.operator_id)
    check_engine_limits(pack_type_id=new.pack_type_id, soc=new.soc_permille, soh=new.soh_permille, cycles=new.cycles)
    if await session.get(PackType, new.pack_type_id) is None:
        raise InvalidArgument.for_field("pack.pack_type_id", f"unknown pack type {new.pack_type_id}")
    if new.station_id is not None:
        station = await session.get(Station, new.station_id)
        if station is None or station.operator_id != new.operator_id:
            raise InvalidArgument.for_field(
                "pack.location.station_slot.station_id", f"unknown station {new.station_id}"
            )
        _check_slot(station, new.slot_no)
    if await session.get(Pack, new.pack_id) is not None:
        raise AlreadyExists(f"pack {new.pack_id} already registered")
    if new.station_id is not None:
        state = READY if new.soc_permille >= MIN_SWAP_SOC_PERMILLE else CHARGING
    elif new.vehicle_id is not None:
        state = IN_VEHICLE
    else:
        state = IN_TRANSIT
    pack = Pack(
        id=new.pack_id,
        pack_type_id=new.pack_type_id,
        operator_id=new.operator_id,
        station_id=new.station_id,
        slot_no=new.slot_no,
        vehicle_id=new.vehicle_id,
        soc_permille=new.soc_permille,
        soh_permille=new.soh_permille,
        cycles=new.cycles,
        temperature_milli_c=new.temperature_milli_c,
        state=state,
        transit_id=None,
    )
    session.add(pack)
    record(session, pack, now, "registered", ActorRef.of(principal))
    await inventory.pack_written(session, pack, placed=pack.station_id is not None)
    return pack


# The API field (under "pack.") of each engine column of a pack row.
_PACK_PATHS = {"pack_type_id": "pack_type_id", "soc_permille": "soc_permille", "soh_permille": "soh_permille"}


def check_engine_limits(*, pack_type_id: int, soc: int, soh: int, cycles: int) -> None:
    """Refuses pack values outside the engine's limits (`engine_limits.LIMITS`), naming the API field; checked before
    any lookup, so an id beyond the database's integer range never reaches a query."""
    problems = engine_limits.pack_problems(pack_type_id=pack_type_id, soc=soc, soh=soh, cycles=cycles, state=READY)
    if problems:
        raise InvalidArgument.for_fields(
            [FieldViolation(f"pack.{_PACK_PATHS.get(column, 'cycle_count')}", reason) for column, reason in problems]
        )


def _check_slot(station: Station, slot_no: int | None) -> None:
    """Only a swap station's racks hold packs (the engine refuses a pack at a charging station), and only in
    its slots: the station's slot_count, or the engine's slot limit when the count was never configured."""
    if station.kind != engine_limits.STATION_SWAP:
        raise InvalidArgument.for_field("pack.location.station_slot.station_id", f"{station.id} is not a swap station")
    slots = station.slot_count or engine_limits.LIMITS.max_slots
    if slot_no is not None and not 1 <= slot_no <= slots:
        raise InvalidArgument.for_field("pack.location.station_slot.slot", f"must be within [1, {slots}]")


@dataclass(frozen=True)
class PackFilter:
    operator_id: str | None
    station_id: str | None
    states: list[int]
    pack_type_id: int | None
    max_soh_permille: int


async def list_packs(session: AsyncSession, principal: Principal, page: Page, where: PackFilter) -> list[Pack]:
    query = select(Pack).order_by(col(Pack.id)).limit(page.size)
    operator_id = where.operator_id
    scope = _scope(principal)
    if scope is not None:
        if operator_id and operator_id != scope:
            principal.require_tenant("operator", operator_id)
        operator_id = scope
    if operator_id:
        own_stations = select(Station.id).where(Station.operator_id == operator_id)
        query = query.where(sa.or_(col(Pack.operator_id) == operator_id, col(Pack.station_id).in_(own_stations)))
    if where.station_id:
        query = query.where(Pack.station_id == where.station_id)
    if where.states:
        query = query.where(col(Pack.state).in_(where.states))
    if where.pack_type_id is not None:
        query = query.where(Pack.pack_type_id == where.pack_type_id)
    if where.max_soh_permille:
        query = query.where(col(Pack.soh_permille) < where.max_soh_permille)
    if page.after is not None:
        query = query.where(col(Pack.id) > page.after)
    return list(await session.exec(query))


async def history(
    session: AsyncSession,
    pack_id: str,
    page: Page,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> list[PackEvent]:
    query = select(PackEvent).where(PackEvent.pack_id == pack_id).order_by(col(PackEvent.id)).limit(page.size)
    if start is not None:
        query = query.where(col(PackEvent.time) >= start)
    if end is not None:
        query = query.where(col(PackEvent.time) < end)
    if page.after is not None:
        try:
            after = int(page.after)
        except ValueError:
            raise InvalidArgument.for_field("page_token", "is not a token this server issued") from None
        query = query.where(col(PackEvent.id) > after)
    return list(await session.exec(query))


@dataclass(frozen=True)
class InspectionOutcome:
    inspection: Inspection
    pack: Pack


async def inspection_station(session: AsyncSession, pack: Pack, station_id: str) -> str | None:
    """Where an inspection took place: the station the inspector names (which must exist), else where the
    pack is."""
    if not station_id:
        return pack.station_id
    if await session.get(Station, station_id) is None:
        raise InvalidArgument.for_field("station_id", f"unknown station {station_id}")
    return station_id


async def report_inspection(
    session: AsyncSession,
    now: dt.datetime,
    *,
    pack: Pack,
    station_id: str | None,
    defect: int,
    level: int,
    notes: str,
    attachment_uris: list[str],
    inspected_at: dt.datetime,
    actor: ActorRef,
) -> InspectionOutcome:
    """Records an inspection. A defect quarantines the pack at once (sticky), raises an alarm and opens a
    maintenance work order."""
    inspection = Inspection(
        id=new_id("insp"),
        pack_id=pack.id,
        station_id=station_id,
        defect=defect,
        level=level,
        notes=notes,
        attachment_uris="\n".join(attachment_uris),
        inspected_at=inspected_at,
        actor_subject=actor.subject,
        actor_role=actor.role,
    )
    if defect != DEFECT_NONE:
        if pack.state != WITHDRAWN:
            pack.state = QUARANTINED
            pack.version += 1
            session.add(pack)
            record(session, pack, now, f"inspection defect {defect}", actor)
            await inventory.pack_written(session, pack)
        opened = await workorders.raise_alarm(
            session,
            now=now,
            source=workorders.ALARM_SOURCE_INSPECTION,
            level=max(level, int(AlarmLevel.WARNING)),
            code=f"DEFECT_{defect}",
            message=f"pack {pack.id} defect {defect}: {notes}"[:1000],
            operator_id=await _operator_of(session, pack),
            station_id=station_id,
            pack_id=pack.id,
            open_work_order=True,
            work_order_source=workorders.WORK_ORDER_SOURCE_INSPECTION,
            title=f"Inspect quarantined pack {pack.id}",
        )
        inspection.quarantined = True
        inspection.alarm_id = opened.alarm_id
        inspection.work_order_id = opened.work_order_id
    session.add(inspection)
    return InspectionOutcome(inspection, pack)


async def choose_swap_pack(
    session: AsyncSession,
    station_id: str,
    pack_type_id: int | None,
    *,
    need_soc_permille: int = MIN_SWAP_SOC_PERMILLE,
    trip_km: float = UNKNOWN_TRIP_KM,
) -> Pack | None:
    """The engine's battery matching (`_core.match_packs`) over all the station's packs, in id order, for one
    vehicle needing `pack_type_id` with `need_soc_permille` for a `trip_km` trip. The matcher forbids packs
    that are not READY (so never QUARANTINED/WITHDRAWN/RESERVED), of another type or below the need SOC, and
    balances stress among the rest. None when nothing fits or the vehicle's pack type is unknown."""
    if pack_type_id is None:
        return None
    rows = list(await session.exec(select(Pack).where(Pack.station_id == station_id).order_by(col(Pack.id))))
    if not rows:
        return None
    with engine_span("match_packs", station_id=station_id, packs=len(rows), vehicles=1):
        matching = _core.match_packs(
            np.arange(len(rows), dtype=np.uint64),
            [p.pack_type_id for p in rows],
            [p.soc_permille for p in rows],
            [p.soh_permille for p in rows],
            [p.cycles for p in rows],
            [p.state for p in rows],
            [pack_type_id],
            [need_soc_permille],
            [float(trip_km)],
        )
    row = int(matching.vehicle_pack[0])
    return rows[row] if row >= 0 else None


async def reserve_for_swap(session: AsyncSession, pack: Pack, now: dt.datetime, reason: str) -> bool:
    """READY -> RESERVED with a version check (inventory.reserve_pack); False when another writer changed the
    pack first."""
    try:
        await inventory.reserve_pack(session, pack.id, station_id=pack.station_id, expected_version=pack.version)
    except Aborted:
        return False
    await session.refresh(pack)
    record(session, pack, now, reason)
    return True


async def release_swap_reservation(session: AsyncSession, pack_id: str, now: dt.datetime) -> Pack | None:
    """A failed swap hands its reserved pack back: RESERVED -> READY. None when it was not reserved."""
    pack = await session.get(Pack, pack_id)
    if pack is None or pack.state != RESERVED:
        return None
    pack.state = READY
    pack.version += 1
    session.add(pack)
    record(session, pack, now, "swap failed: reservation released")
    await inventory.pack_written(session, pack)
    return pack


async def apply_report(
    session: AsyncSession,
    now: dt.datetime,
    *,
    pack_id: str,
    station_id: str,
    slot_no: int | None,
    soc_permille: int | None,
    soh_permille: int | None,
    temperature_milli_c: int | None,
    cycles: int | None,
    state: int | None,
    power_w: int = 0,
) -> Pack | None:
    """A station's condition report. Unknown packs are ignored (None). Sticky states are kept. The flow
    history entry keeps SOH, cycles, temperature and charging power: battery health's samples."""
    pack = await session.get(Pack, pack_id)
    if pack is None:
        return None
    if soc_permille is not None:
        pack.soc_permille = soc_permille
    if soh_permille is not None:
        pack.soh_permille = soh_permille
    if temperature_milli_c is not None:
        pack.temperature_milli_c = temperature_milli_c
    if cycles is not None and cycles >= pack.cycles:
        pack.cycles = cycles
    moved = bool(slot_no) and pack.station_id != station_id
    if slot_no:
        pack.station_id, pack.slot_no, pack.vehicle_id = station_id, slot_no, None
    if state in STATION_REPORTABLE and pack.state not in STICKY and pack.state != RESERVED:
        pack.state = state
    pack.version += 1
    session.add(pack)
    record(session, pack, now, "station report", power_w=power_w)
    await inventory.pack_written(session, pack, placed=moved)
    return pack


async def operator_of(session: AsyncSession, pack: Pack) -> str:
    """The operator a pack belongs to: its own, else its station's."""
    return await _operator_of(session, pack)


async def withdraw(session: AsyncSession, pack: Pack, now: dt.datetime, reason: str, actor: ActorRef) -> Pack:
    """Any state -> WITHDRAWN (sticky: station reports never move it back, the engine never offers it). The
    change goes on the inventory feed in this transaction, so every replica's engine learns it."""
    pack.state = WITHDRAWN
    pack.version += 1
    session.add(pack)
    record(session, pack, now, f"withdrawn: {reason}", actor)
    await inventory.pack_written(session, pack)
    return pack


async def swap_moves(
    session: AsyncSession,
    now: dt.datetime,
    *,
    station_id: str,
    session_id: str,
    vehicle_id: str | None,
    pack_out_id: str | None,
    pack_in_id: str | None,
    pack_out_slot: int | None,
    pack_out_soc: int,
    pack_in_soc: int,
) -> tuple[Pack | None, Pack | None]:
    """Moves the packs of a completed swap: out of the vehicle into a slot (CHARGING, one more cycle), and
    out of the slot into the vehicle (IN_VEHICLE). Both get a flow-history entry."""
    out_pack = await session.get(Pack, pack_out_id) if pack_out_id else None
    in_pack = await session.get(Pack, pack_in_id) if pack_in_id else None
    station = await session.get(Station, station_id)
    for moved in (out_pack, in_pack):
        if moved is not None and moved.operator_id is None and station is not None:
            moved.operator_id = station.operator_id  # the swap operator takes custody of a pack without one
    if in_pack is not None:
        # What happened physically is recorded; a sticky pack stays QUARANTINED/WITHDRAWN (the caller alarms).
        in_pack.station_id, in_pack.slot_no, in_pack.vehicle_id = None, None, vehicle_id
        if in_pack.state not in STICKY:
            in_pack.state = IN_VEHICLE
        if pack_in_soc:
            in_pack.soc_permille = pack_in_soc
        in_pack.version += 1
        session.add(in_pack)
        record(session, in_pack, now, "swap in", session_id=session_id)
        await inventory.pack_written(session, in_pack)
    if out_pack is not None:
        out_pack.station_id, out_pack.slot_no, out_pack.vehicle_id = station_id, pack_out_slot or None, None
        if out_pack.state not in STICKY:
            out_pack.state = CHARGING
        if pack_out_soc:
            out_pack.soc_permille = pack_out_soc
        out_pack.cycles += 1
        out_pack.version += 1
        session.add(out_pack)
        record(session, out_pack, now, "swap out", session_id=session_id)
        await inventory.pack_written(session, out_pack, placed=True)
    return out_pack, in_pack
