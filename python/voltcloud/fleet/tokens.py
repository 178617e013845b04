"""A fleet's charging tokens (RFID cards, OCPP idTags): who may issue, block, expire and list them, and for
which vehicle and account. The rows are stations' (the gateways authorise against them): fleet decides whose
fleet, sub-fleet, driver and vehicle a token is for, then hands the row to the `ChargingTokens` port.

A card handed to a driver is the fleet's token for that driver's vehicle and sub-fleet: its sessions are the
fleet's orders, paid from the sub-fleet's allocation when there is one (as the driver's app orders are)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.models import Driver, Fleet, Vehicle
from voltcloud.fleet.ports import ChargingTokens, TokenIssue, TokenView
from voltcloud.platform.auth import Principal
from voltcloud.platform.enums import DriverStatus, TagStatus
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.paging import Page


@dataclass(frozen=True)
class NewToken:
    fleet_id: str
    sub_fleet_id: str
    driver_id: str
    vehicle_id: str
    id_tag: str
    operator_id: str
    expires_at: dt.datetime | None


async def issue(
    session: AsyncSession, port: ChargingTokens, principal: Principal, new: NewToken, *, now: dt.datetime
) -> TokenView:
    fleet = await managed_fleet(session, principal, new.fleet_id)
    driver = await _member(session, fleet, new.driver_id) if new.driver_id else None
    sub_fleet_id = new.sub_fleet_id or (driver.sub_fleet_id if driver is not None else None) or ""
    if sub_fleet_id:
        await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")
    vehicle_id = new.vehicle_id or (driver.vehicle_id if driver is not None else None) or ""
    if not vehicle_id:
        raise InvalidArgument.for_field("vehicle_id", "is required (no driver with an assigned vehicle is named)")
    vehicle = await session.get(Vehicle, vehicle_id)
    if vehicle is None or vehicle.fleet_id != fleet.id:
        raise NotFound(f"vehicle {vehicle_id} not found in fleet {fleet.id}")
    if vehicle.retired_at is not None:
        raise FailedPrecondition(f"vehicle {vehicle.id} is retired: no new tokens for it")
    issued = TokenIssue(
        fleet.id, sub_fleet_id, vehicle.id, new.id_tag, new.operator_id, new.expires_at, driver.id if driver else ""
    )
    return await port.issue(session, principal, now, issued)


async def holder_refusal(
    session: AsyncSession, *, fleet_id: str | None, vehicle_id: str, driver_id: str | None
) -> TagStatus | None:
    """Why a token may not charge now, as the OCPP answer (None: it may). The rule behind every authorisation,
    not a clean-up on suspension: a retired vehicle's token is INVALID; a token of a driver who is no longer an
    approved member of the token's fleet (`fleet_id`: the owning fleet, or the fleet of a driver's own token's
    vehicle) is BLOCKED while he is suspended (reinstating him lifts it) and INVALID once removed."""
    vehicle = await session.get(Vehicle, vehicle_id)
    if vehicle is None or vehicle.retired_at is not None:
        return TagStatus.INVALID
    fleet_id = fleet_id or vehicle.fleet_id
    if not driver_id or not fleet_id:
        return None
    driver = await session.get(Driver, driver_id)
    if driver is not None and driver.fleet_id == fleet_id and driver.status == DriverStatus.APPROVED:
        return None
    if driver is not None and driver.status == DriverStatus.SUSPENDED and driver.applied_fleet_id == fleet_id:
        return TagStatus.BLOCKED
    return TagStatus.INVALID


async def _member(session: AsyncSession, fleet: Fleet, driver_id: str) -> Driver:
    driver = await session.get(Driver, driver_id)
    if driver is None or driver.fleet_id != fleet.id:
        raise NotFound(f"driver {driver_id} not found in fleet {fleet.id}")
    return driver


async def set_blocked(
    session: AsyncSession,
    port: ChargingTokens,
    principal: Principal,
    *,
    fleet_id: str,
    token_id: str,
    blocked: bool,
    now: dt.datetime,
) -> TokenView:
    fleet = await managed_fleet(session, principal, fleet_id)
    if not token_id:
        raise InvalidArgument.for_field("token_id", "is required")
    return await port.set_blocked(session, principal, now, fleet.id, token_id, blocked)


async def set_expiry(
    session: AsyncSession,
    port: ChargingTokens,
    principal: Principal,
    *,
    fleet_id: str,
    token_id: str,
    expires_at: dt.datetime | None,
    now: dt.datetime,
) -> TokenView:
    fleet = await managed_fleet(session, principal, fleet_id)
    if not token_id:
        raise InvalidArgument.for_field("token_id", "is required")
    return await port.set_expiry(session, principal, now, fleet.id, token_id, expires_at)


async def list_tokens(
    session: AsyncSession,
    port: ChargingTokens,
    principal: Principal,
    *,
    fleet_id: str,
    sub_fleet_id: str,
    page: Page,
    now: dt.datetime,
) -> list[TokenView]:
    fleet = await managed_fleet(session, principal, fleet_id)
    if sub_fleet_id:
        await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")
    return await port.list_tokens(session, now, fleet.id, sub_fleet_id, after=page.after, limit=page.size)
