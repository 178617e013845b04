"""Drivers: registered by their fleet's manager, or applying to join a fleet and reviewed by its manager.

Only an approved driver carries `fleet_id`: ordering (`quoting.vehicle_for`) lets a driver order for the
vehicles of that fleet and settlement lets them spend its money, so an applicant gets neither until approved.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.models import Driver, Fleet, Vehicle
from voltcloud.fleet.ports import Ledger
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import DriverStatus
from voltcloud.platform.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page

MAX_ID_CHARS = 64  # the driver table's id column
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class NewDriver:
    name: str
    phone: str
    fleet_id: str
    sub_fleet_id: str
    vehicle_ids: tuple[str, ...]


def _check(new: NewDriver) -> None:
    if not new.name.strip():
        raise InvalidArgument.for_field("driver.name", "is required")
    if new.phone and not _E164.match(new.phone):
        raise InvalidArgument.for_field("driver.phone", "must be E.164: '+', country code and number, 8-15 digits")
    if len(new.vehicle_ids) > 1:
        # One assigned car per driver row; a fleet's drivers may order for every vehicle of the fleet anyway.
        raise InvalidArgument.for_field("driver.vehicle_ids", "at most one assigned vehicle")


async def register_driver(
    session: AsyncSession, ledger: Ledger, principal: Principal, new: NewDriver, *, now: dt.datetime
) -> Driver:
    """A manager (or the admin) registers an approved driver of their fleet, with a wallet; a driver calling
    for themself applies to join the fleet and waits for ReviewDriver."""
    _check(new)
    if principal.role is Role.DRIVER:
        return await _apply(session, principal, new, now=now)
    fleet = await managed_fleet(session, principal, new.fleet_id, field="driver.fleet_id")
    sub_fleet_id = (
        (await sub_fleet_of(session, fleet, new.sub_fleet_id, field="driver.sub_fleet_id")).id
        if new.sub_fleet_id
        else None
    )
    vehicle_id = await _fleet_vehicle(session, fleet, new.vehicle_ids)
    driver = Driver(
        id=new_id("drv"),
        name=new.name.strip(),
        phone=new.phone or None,
        fleet_id=fleet.id,
        sub_fleet_id=sub_fleet_id,
        vehicle_id=vehicle_id,
        status=int(DriverStatus.APPROVED),
        created_at=now,
    )
    session.add(driver)
    await session.flush()
    driver.account_id = await ledger.ensure_customer_account(
        session, owner_kind="driver", owner_id=driver.id, currency=fleet.currency
    )
    await session.flush()
    await _announce(session, driver)
    return driver


async def _announce(session: AsyncSession, driver: Driver) -> None:
    """Topic `driver` on the change feed: QuotePowerUp's profile cache on every replica drops its copy (who
    may order for a fleet's vehicle follows the driver's fleet)."""
    await feed.publish(session, "driver", driver.id, {"fleet_id": driver.fleet_id, "status": driver.status})


async def _fleet_vehicle(session: AsyncSession, fleet: Fleet, vehicle_ids: tuple[str, ...]) -> str | None:
    if not vehicle_ids:
        return None
    vehicle = await session.get(Vehicle, vehicle_ids[0])
    if vehicle is None or vehicle.fleet_id != fleet.id:
        raise NotFound(f"vehicle {vehicle_ids[0]} (driver.vehicle_ids) not found in fleet {fleet.id}")
    if vehicle.retired_at is not None:
        raise FailedPrecondition(f"vehicle {vehicle.id} (driver.vehicle_ids) is retired")
    return vehicle.id


async def _apply(session: AsyncSession, principal: Principal, new: NewDriver, *, now: dt.datetime) -> Driver:
    if not new.fleet_id:
        raise InvalidArgument.for_field("driver.fleet_id", "name the fleet to apply to")
    if new.sub_fleet_id or new.vehicle_ids:
        raise InvalidArgument.for_field("driver.sub_fleet_id", "the fleet's manager assigns these on approval")
    if len(principal.subject) > MAX_ID_CHARS:
        raise InvalidArgument.for_field("driver.driver_id", f"a driver id has at most {MAX_ID_CHARS} characters")
    if await session.get(Fleet, new.fleet_id) is None:
        raise NotFound(f"fleet {new.fleet_id} not found")
    driver = await session.get(Driver, principal.subject)
    if driver is None:
        driver = Driver(id=principal.subject, name=new.name.strip(), created_at=now)
    elif driver.fleet_id is not None:
        raise FailedPrecondition(f"driver {driver.id} already belongs to fleet {driver.fleet_id}")
    elif driver.status == DriverStatus.SUSPENDED:
        raise FailedPrecondition(f"driver {driver.id} is suspended by fleet {driver.applied_fleet_id}")
    driver.name, driver.phone = new.name.strip(), new.phone or driver.phone
    driver.status, driver.applied_fleet_id, driver.rejection_reason = int(DriverStatus.PENDING), new.fleet_id, None
    session.add(driver)
    try:
        await session.flush()
    except sa.exc.IntegrityError as exc:  # the same driver's first application, committed meanwhile
        raise Aborted(f"driver {driver.id} applied concurrently; retry") from exc
    await _announce(session, driver)
    return driver


async def review_driver(
    session: AsyncSession,
    ledger: Ledger,
    principal: Principal,
    *,
    fleet_id: str,
    driver_id: str,
    approve: bool,
    reason: str,
    sub_fleet_id: str,
) -> Driver:
    fleet = await managed_fleet(session, principal, fleet_id)
    driver = await session.get(Driver, driver_id) if driver_id else None
    if driver is None or driver.applied_fleet_id != fleet.id:
        raise NotFound(f"no application of driver {driver_id} to fleet {fleet.id}")
    if driver.status != DriverStatus.PENDING:
        raise FailedPrecondition(f"driver {driver_id}'s application was already {DriverStatus(driver.status).name}")
    if approve:
        sub = await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id") if sub_fleet_id else None
        driver.fleet_id, driver.sub_fleet_id = fleet.id, sub.id if sub else None
        driver.status, driver.applied_fleet_id = int(DriverStatus.APPROVED), None
        driver.account_id = driver.account_id or await ledger.ensure_customer_account(
            session, owner_kind="driver", owner_id=driver.id, currency=fleet.currency
        )
    else:
        if not reason.strip():
            raise InvalidArgument.for_field("reason", "is required when rejecting")
        driver.status, driver.rejection_reason = int(DriverStatus.REJECTED), reason.strip()
    session.add(driver)
    await session.flush()
    await _announce(session, driver)
    return driver


@dataclass(frozen=True)
class DriverFilter:
    fleet_id: str
    sub_fleet_id: str
    vehicle_id: str
    status: int


async def list_drivers(session: AsyncSession, principal: Principal, where: DriverFilter, page: Page) -> list[Driver]:
    """A fleet's members and applicants (a manager's own fleet by default)."""
    fleet_id = where.fleet_id or (principal.tenant.id if principal.tenant and not principal.is_admin else "")
    fleet = await managed_fleet(session, principal, fleet_id)
    query = select(Driver).order_by(col(Driver.id)).limit(page.size)
    query = query.where(sa.or_(col(Driver.fleet_id) == fleet.id, col(Driver.applied_fleet_id) == fleet.id))
    if where.status:
        query = query.where(Driver.status == where.status)
    if where.sub_fleet_id:
        query = query.where(Driver.sub_fleet_id == where.sub_fleet_id)
    if where.vehicle_id:
        # Every member may drive a fleet vehicle; the filter names those assigned to it.
        query = query.where(Driver.vehicle_id == where.vehicle_id)
    if page.after is not None:
        query = query.where(col(Driver.id) > page.after)
    return list(await session.exec(query))


# ---- lifecycle: update, suspend, reinstate, remove (issue 12) ----
# A suspended or removed driver loses `fleet_id` (so ordering and settlement refuse them, as an applicant)
# and keeps `applied_fleet_id` = the fleet, so the fleet still lists them with their status and reason.

MEMBERS = (int(DriverStatus.APPROVED), int(DriverStatus.SUSPENDED))
DRIVER_FIELDS = ("name", "phone", "sub_fleet_id", "vehicle_ids")


async def _member(
    session: AsyncSession, principal: Principal, fleet_id: str, driver_id: str, statuses: tuple[int, ...]
) -> tuple[Fleet, Driver]:
    """The fleet (managed by the caller) and its driver in one of `statuses`."""
    fleet = await managed_fleet(session, principal, fleet_id)
    driver = await session.get(Driver, driver_id) if driver_id else None
    if driver is None or fleet.id not in (driver.fleet_id, driver.applied_fleet_id):
        raise NotFound(f"driver {driver_id} not found in fleet {fleet.id}")
    if driver.status not in statuses:
        names = " or ".join(DriverStatus(s).name for s in statuses)
        raise FailedPrecondition(f"driver {driver.id} is {DriverStatus(driver.status).name}, not {names}")
    return fleet, driver


async def _save(session: AsyncSession, driver: Driver) -> Driver:
    session.add(driver)
    await session.flush()
    await _announce(session, driver)
    return driver


async def update_driver(
    session: AsyncSession, principal: Principal, fleet_id: str, driver_id: str, new: NewDriver, fields: tuple[str, ...]
) -> Driver:
    """Changes the named fields of a member (approved or suspended), each checked as RegisterDriver does."""
    if not fields or set(fields) - set(DRIVER_FIELDS):
        raise InvalidArgument.for_field("update_fields", f"name one or more of {', '.join(DRIVER_FIELDS)}")
    fleet, driver = await _member(session, principal, fleet_id, driver_id, MEMBERS)
    name, phone = new.name if "name" in fields else driver.name, new.phone if "phone" in fields else ""
    _check(NewDriver(name, phone, "", "", new.vehicle_ids if "vehicle_ids" in fields else ()))
    if "name" in fields:
        driver.name = new.name.strip()
    if "phone" in fields:
        driver.phone = new.phone or None
    if "sub_fleet_id" in fields:
        field = "driver.sub_fleet_id"
        driver.sub_fleet_id = (
            (await sub_fleet_of(session, fleet, new.sub_fleet_id, field=field)).id if new.sub_fleet_id else None
        )
    if "vehicle_ids" in fields:
        driver.vehicle_id = await _fleet_vehicle(session, fleet, new.vehicle_ids)
    return await _save(session, driver)


async def suspend_driver(
    session: AsyncSession, principal: Principal, fleet_id: str, driver_id: str, *, suspended: bool, reason: str
) -> Driver:
    """Suspends an approved member (reason required) or reinstates a suspended one."""
    if suspended and not reason.strip():
        raise InvalidArgument.for_field("reason", "is required when suspending")
    status = DriverStatus.APPROVED if suspended else DriverStatus.SUSPENDED
    fleet, driver = await _member(session, principal, fleet_id, driver_id, (int(status),))
    if suspended:
        driver.status, driver.fleet_id, driver.applied_fleet_id = int(DriverStatus.SUSPENDED), None, fleet.id
        driver.rejection_reason = reason.strip()
    else:
        driver.status, driver.fleet_id, driver.applied_fleet_id = int(DriverStatus.APPROVED), fleet.id, None
        driver.rejection_reason = None
    return await _save(session, driver)


async def remove_driver(
    session: AsyncSession, principal: Principal, fleet_id: str, driver_id: str, reason: str
) -> Driver:
    """Removes a member from the fleet: no fleet, sub-fleet or assigned car; the wallet stays theirs."""
    if not reason.strip():
        raise InvalidArgument.for_field("reason", "is required")
    fleet, driver = await _member(session, principal, fleet_id, driver_id, MEMBERS)
    driver.status, driver.fleet_id, driver.applied_fleet_id = int(DriverStatus.REMOVED), None, fleet.id
    driver.sub_fleet_id, driver.vehicle_id, driver.rejection_reason = None, None, reason.strip()
    return await _save(session, driver)
