"""Who sees and changes which fleet: the platform admin every fleet, a fleet manager only their own. Another
tenant's fleet is reported NOT_FOUND, so fleet ids cannot be probed."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.models import Fleet, SubFleet
from voltcloud.platform.auth import Principal, Role, Tenant
from voltcloud.platform.errors import InvalidArgument, NotFound


def manages(principal: Principal, fleet_id: str | None) -> bool:
    if fleet_id is None:
        return False
    if principal.is_admin:
        return True
    tenant = principal.tenant
    return principal.role is Role.FLEET_MANAGER and tenant is not None and tenant == Tenant("fleet", fleet_id)


async def managed_fleet(
    session: AsyncSession, principal: Principal, fleet_id: str, *, field: str = "fleet_id"
) -> Fleet:
    """The fleet if the caller manages it ; NOT_FOUND otherwise."""
    if not fleet_id:
        raise InvalidArgument.for_field(field, "is required")
    fleet = await session.get(Fleet, fleet_id) if manages(principal, fleet_id) else None
    if fleet is None:
        raise NotFound(f"fleet {fleet_id} not found")
    return fleet


async def sub_fleet_of(session: AsyncSession, fleet: Fleet, sub_fleet_id: str, *, field: str) -> SubFleet:
    """A sub-fleet of `fleet`; NOT_FOUND for an unknown one or one of another fleet."""
    sub_fleet = await session.get(SubFleet, sub_fleet_id)
    if sub_fleet is None or sub_fleet.fleet_id != fleet.id:
        raise NotFound(f"sub-fleet {sub_fleet_id} ({field}) not found in fleet {fleet.id}")
    return sub_fleet
