"""What fleet cannot answer yet, said plainly after the caller's access is checked (so another tenant's ids
still read NOT_FOUND): live vehicle state needs the GB/T 32960 telemetry feed, statements need the orders of
the ordering room above fleet. Both are later slices of issue 12 (docs/fleets.md)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.vehicles import visible_vehicle
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import FailedPrecondition


async def vehicle_state(session: AsyncSession, principal: Principal, vehicle_id: str) -> FailedPrecondition:
    """The error to answer with, once the caller is known to see the vehicle."""
    vehicle = await visible_vehicle(session, principal, vehicle_id)
    return FailedPrecondition(
        f"no live state for vehicle {vehicle.id}: vehicle telemetry (GB/T 32960) is not ingested yet"
    )


async def fleet_statement(
    session: AsyncSession, principal: Principal, fleet_id: str, sub_fleet_id: str
) -> FailedPrecondition:
    """The error to answer with, once the caller is known to manage the fleet."""
    fleet = await managed_fleet(session, principal, fleet_id)
    if sub_fleet_id:
        await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")
    return FailedPrecondition(
        f"fleet statements are not built yet for fleet {fleet.id}: read the fleet's journal "
        "(SettlementService.ListJournalEntries) meanwhile"
    )
