"""Reservation of physical resources with optimistic version checks: connectors, packs, mobile units.

Every change is one conditional UPDATE (`... WHERE id = :id AND version = :v AND status = <free>`) whose row
count tells whether this writer won. A lost race raises `Aborted`, so two transactions, in one process or in
two replicas on the same PostgreSQL, never both hold the same connector, pack or specialist. The functions
take the caller's session and never commit; ordering and dispatch call them inside their own transaction.

Each function returns an `InventoryChange` describing the committed-to-be state, so the caller can update
the engine's in-memory view after its transaction commits (never before), and publishes it on the change feed
("inventory") in the same transaction, so every other replica's engine learns it when (and only if) it commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.platform import feed
from voltcloud.platform.enums import ConnectorStatus, PackState, UnitStatus
from voltcloud.platform.errors import Aborted, FailedPrecondition, NotFound
from voltcloud.stations.models import Connector, MobileUnit, Pack, Station

# Plain ints for the columns and the engine; the numbers come from voltcloud.platform.enums.
CONNECTOR_AVAILABLE = int(ConnectorStatus.AVAILABLE)
CONNECTOR_OCCUPIED = int(ConnectorStatus.OCCUPIED)
CONNECTOR_RESERVED = int(ConnectorStatus.RESERVED)

PACK_IN_VEHICLE = int(PackState.IN_VEHICLE)
PACK_CHARGING = int(PackState.CHARGING)
PACK_READY = int(PackState.READY)
PACK_RESERVED = int(PackState.RESERVED)

UNIT_IDLE = int(UnitStatus.IDLE)
UNIT_BUSY = int(UnitStatus.BUSY)
UNIT_OFF_SHIFT = int(UnitStatus.OFF_SHIFT)
UNIT_RETIRED = int(UnitStatus.RETIRED)

ResourceType = Literal["connector", "pack", "unit", "station"]


@dataclass(frozen=True)
class InventoryChange:
    """The state a resource will have once the caller's transaction commits."""

    kind: ResourceType
    id: str
    status: int
    version: int
    lat: float | None = None
    lng: float | None = None
    station_id: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> InventoryChange:
        """The change as published on the feed (`publish`)."""
        lat, lng, station = payload.get("lat"), payload.get("lng"), payload.get("station_id")
        return cls(
            kind=cast(ResourceType, str(payload["kind"])),
            id=str(payload["id"]),
            status=int(payload["status"]),
            version=int(payload["version"]),
            lat=float(lat) if lat is not None else None,
            lng=float(lng) if lng is not None else None,
            station_id=str(station) if station is not None else None,
        )


INVENTORY_TOPIC = "inventory"


async def publish(session: AsyncSession, change: InventoryChange) -> InventoryChange:
    """Announces a change on the feed in the writer's transaction (the one way an InventoryChange is published);
    returns it for the caller's own engine, which applies it after the commit."""
    await feed.publish(session, INVENTORY_TOPIC, f"{change.kind}:{change.id}", asdict(change))
    return change


async def _conditional_update(
    session: AsyncSession,
    table: Any,
    resource: ResourceType,
    resource_id: str,
    status_column: str,
    from_status: int,
    to_status: int,
    expected_version: int | None,
    extra: dict[str, Any] | None = None,
    *,
    at_station: str | None = None,
) -> int:
    """Moves one row from `from_status` to `to_status` (and, with `at_station`, only while it sits there or in
    no station), bumping its version; returns the new version. One statement when it wins (UPDATE ...
    RETURNING); a lost race reads the row once more, only to say why."""
    column = getattr(table, status_column)
    conditions = [table.id == resource_id, column == from_status]
    if expected_version is not None:
        conditions.append(table.version == expected_version)
    if at_station is not None:
        conditions.append(sa.or_(table.station_id.is_(None), table.station_id == at_station))
    values: dict[str, Any] = {status_column: to_status, "version": table.version + 1}
    values.update(extra or {})
    stmt = sa.update(table).where(*conditions).values(**values).returning(table.version)
    version = (await (await session.connection()).execute(stmt)).scalar_one_or_none()
    if version is not None:
        return int(version)
    raise await _why_not(session, table, resource, resource_id, column, from_status, expected_version, at_station)


async def _why_not(
    session: AsyncSession,
    table: Any,
    resource: ResourceType,
    resource_id: str,
    column: Any,
    from_status: int,
    expected_version: int | None,
    at_station: str | None,
) -> NotFound | Aborted:
    """Why a conditional update matched no row (the error to raise)."""
    station = table.station_id if at_station is not None else sa.null()
    query = sa.select(table.version, column, station).where(table.id == resource_id)
    current = (await (await session.connection()).execute(query)).one_or_none()
    if current is None:
        return NotFound(f"{resource} {resource_id} not found")
    version, status, where = int(current[0]), int(current[1]), current[2]
    if at_station is not None and where is not None and where != at_station:
        return Aborted(f"{resource} {resource_id} is no longer at station {at_station}")
    if expected_version is not None and version != expected_version:
        return Aborted(f"{resource} {resource_id} changed meanwhile (version {version}, expected {expected_version})")
    if status != from_status:
        return Aborted(f"{resource} {resource_id} is no longer free (status {status})")
    return Aborted(f"{resource} {resource_id} was taken by a concurrent order")


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# ---- connectors ------------------------------------------------------------------------------------------


async def reserve_connector(
    session: AsyncSession, connector_id: str, *, expected_version: int | None = None
) -> InventoryChange:
    """AVAILABLE → RESERVED. Aborted when another writer reserved or changed it first."""
    version = await _conditional_update(
        session, Connector, "connector", connector_id, "status", CONNECTOR_AVAILABLE, CONNECTOR_RESERVED,
        expected_version,
    )  # fmt: skip
    return await publish(session, InventoryChange("connector", connector_id, CONNECTOR_RESERVED, version))


async def release_connector(session: AsyncSession, connector_id: str) -> InventoryChange | None:
    """RESERVED → AVAILABLE; None when the connector was not reserved (already released or in use)."""
    try:
        version = await _conditional_update(
            session, Connector, "connector", connector_id, "status", CONNECTOR_RESERVED, CONNECTOR_AVAILABLE, None
        )
    except Aborted:
        return None
    return await publish(session, InventoryChange("connector", connector_id, CONNECTOR_AVAILABLE, version))


async def lock_connector(session: AsyncSession, connector_id: str, expected_version: int) -> int:
    """Bumps the connector's version (no status change): serialises writers of its reservation windows."""
    result = await (await session.connection()).execute(
        sa.update(Connector)
        .where(col(Connector.id) == connector_id, col(Connector.version) == expected_version)
        .values(version=expected_version + 1)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        raise Aborted(f"connector {connector_id} changed meanwhile; retry")
    return expected_version + 1


async def set_connector_status(
    session: AsyncSession, connector_id: str, station_id: str, status: int
) -> InventoryChange | None:
    """A station's own report of a connector's status, written as reported (the station sees the plug); None
    when the connector is unknown, belongs to another station or already has that status."""
    connector = await session.get(Connector, connector_id)
    if connector is None or connector.station_id != station_id or connector.status == status:
        return None
    connector.status = status
    connector.version += 1
    session.add(connector)
    return await publish(
        session, InventoryChange("connector", connector_id, status, connector.version, station_id=station_id)
    )


# ---- packs -----------------------------------------------------------------------------------------------


def pack_change(pack: Pack) -> InventoryChange:
    """The change event for a pack row the caller has just written in its transaction."""
    return InventoryChange("pack", pack.id, pack.state, pack.version, station_id=pack.station_id)


async def pack_written(session: AsyncSession, pack: Pack, *, placed: bool = False) -> InventoryChange:
    """Publishes the change of a pack row the caller has just written (packs.py's writers); `placed`: it was
    registered at, or moved into, a station (structural: see `pack_placed`)."""
    if placed:
        await pack_placed(session, pack.id, pack.station_id, pack.version)
    return await publish(session, pack_change(pack))


PACK_TOPIC = "pack"


async def pack_placed(session: AsyncSession, pack_id: str, station_id: str | None, version: int) -> None:
    """A pack registered at, or moved into, a station: each engine (re)places it there, which a status change
    alone cannot do."""
    await feed.publish(session, PACK_TOPIC, pack_id, {"id": pack_id, "station_id": station_id, "version": version})


async def reserve_pack(
    session: AsyncSession, pack_id: str, *, station_id: str | None = None, expected_version: int | None = None
) -> InventoryChange:
    """READY → RESERVED (optionally checking it still sits in `station_id`)."""
    version = await _conditional_update(
        session, Pack, "pack", pack_id, "state", PACK_READY, PACK_RESERVED, expected_version, at_station=station_id
    )
    return await publish(session, InventoryChange("pack", pack_id, PACK_RESERVED, version, station_id=station_id))


async def release_pack(session: AsyncSession, pack_id: str) -> InventoryChange | None:
    """RESERVED → READY; None when the pack was not reserved."""
    try:
        version = await _conditional_update(session, Pack, "pack", pack_id, "state", PACK_RESERVED, PACK_READY, None)
    except Aborted:
        return None
    return await publish(session, InventoryChange("pack", pack_id, PACK_READY, version))


async def swap_packs(
    session: AsyncSession, *, station_id: str, pack_in_id: str, vehicle_id: str
) -> tuple[str | None, list[InventoryChange]]:
    """Completes a swap: the reserved pack goes into the vehicle, the vehicle's pack takes its slot (charging).

    Returns the id of the pack taken out of the vehicle (None when the vehicle had none on record).
    """
    pack_in = (
        await (await session.connection()).execute(
            sa.select(col(Pack.slot_no), col(Pack.station_id)).where(col(Pack.id) == pack_in_id)
        )
    ).one_or_none()
    if pack_in is None:
        raise NotFound(f"pack {pack_in_id} not found")
    slot_no, at_station = pack_in
    if at_station != station_id:
        raise FailedPrecondition(f"pack {pack_in_id} is not at station {station_id}")
    changes: list[InventoryChange] = []
    version = await _conditional_update(
        session, Pack, "pack", pack_in_id, "state", PACK_RESERVED, PACK_IN_VEHICLE, None,
        {"station_id": None, "slot_no": None, "vehicle_id": vehicle_id},
    )  # fmt: skip
    changes.append(await publish(session, InventoryChange("pack", pack_in_id, PACK_IN_VEHICLE, version)))
    pack_out_id = (
        await (await session.connection()).execute(
            sa.select(col(Pack.id)).where(
                col(Pack.vehicle_id) == vehicle_id, col(Pack.state) == PACK_IN_VEHICLE, col(Pack.id) != pack_in_id
            )
        )
    ).scalar()
    if pack_out_id is not None:
        version = await _conditional_update(
            session, Pack, "pack", str(pack_out_id), "state", PACK_IN_VEHICLE, PACK_CHARGING, None,
            {"station_id": station_id, "slot_no": slot_no, "vehicle_id": None},
        )  # fmt: skip
        out = InventoryChange("pack", str(pack_out_id), PACK_CHARGING, version, station_id=station_id)
        await pack_placed(session, out.id, station_id, version)
        changes.append(await publish(session, out))
    return (str(pack_out_id) if pack_out_id is not None else None), changes


# ---- mobile units ----------------------------------------------------------------------------------------


async def reserve_unit(session: AsyncSession, unit_id: str, *, expected_version: int | None = None) -> InventoryChange:
    """A specialist or van: IDLE → BUSY. Aborted when another order took it first."""
    version = await _conditional_update(
        session, MobileUnit, "unit", unit_id, "status", UNIT_IDLE, UNIT_BUSY, expected_version
    )
    return await publish(session, InventoryChange("unit", unit_id, UNIT_BUSY, version))


async def release_unit(session: AsyncSession, unit_id: str) -> InventoryChange | None:
    """BUSY → IDLE; None when the unit was not busy."""
    try:
        version = await _conditional_update(session, MobileUnit, "unit", unit_id, "status", UNIT_BUSY, UNIT_IDLE, None)
    except Aborted:
        return None
    return await publish(session, InventoryChange("unit", unit_id, UNIT_IDLE, version))


async def move_unit(session: AsyncSession, unit_id: str, lat: float, lng: float) -> InventoryChange:
    """Records a unit's live position (no version bump: positions must not break reservations in flight)."""
    await (await session.connection()).execute(
        sa.update(MobileUnit)
        .where(col(MobileUnit.id) == unit_id)
        .values(lat=lat, lng=lng)
        .execution_options(synchronize_session=False)
    )
    return await publish(session, InventoryChange("unit", unit_id, -1, -1, lat=lat, lng=lng))


# ---- stations --------------------------------------------------------------------------------------------


async def lock_station(session: AsyncSession, station_id: str) -> int:
    """Bumps the station's version: serialises writers of its lane reservations. Returns the new version."""
    version = (
        await (await session.connection()).execute(sa.select(col(Station.version)).where(col(Station.id) == station_id))
    ).scalar()
    if version is None:
        raise NotFound(f"station {station_id} not found")
    result = await (await session.connection()).execute(
        sa.update(Station)
        .where(col(Station.id) == station_id, col(Station.version) == version)
        .values(version=int(version) + 1)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        raise Aborted(f"station {station_id} changed meanwhile; retry")
    return int(version) + 1


async def set_unit_availability(session: AsyncSession, unit_id: str, available: bool) -> InventoryChange | None:
    """A worker going on/off shift: IDLE ↔ OFF_SHIFT. A BUSY unit (serving a task) is left alone (None)."""
    target, source = (UNIT_IDLE, UNIT_OFF_SHIFT) if available else (UNIT_OFF_SHIFT, UNIT_IDLE)
    try:
        version = await _conditional_update(session, MobileUnit, "unit", unit_id, "status", source, target, None)
    except Aborted:
        return None
    return await publish(session, InventoryChange("unit", unit_id, target, version))


async def retire_unit(session: AsyncSession, unit_id: str) -> InventoryChange:
    """IDLE or OFF_SHIFT → RETIRED, for good (nothing moves a unit out of RETIRED); a BUSY unit is refused."""
    for source in (UNIT_IDLE, UNIT_OFF_SHIFT):
        try:
            version = await _conditional_update(
                session, MobileUnit, "unit", unit_id, "status", source, UNIT_RETIRED, None
            )
        except Aborted:
            continue
        return await publish(session, InventoryChange("unit", unit_id, UNIT_RETIRED, version))
    raise FailedPrecondition(f"unit {unit_id} is serving a task or already retired")
