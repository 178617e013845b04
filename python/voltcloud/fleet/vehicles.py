"""Vehicles: registration by VIN, who sees which, listing, moving between sub-fleets, updating, retiring."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, manages, sub_fleet_of
from voltcloud.fleet.models import Driver, Vehicle
from voltcloud.fleet.ports import PackTypes
from voltcloud.fleet.vin import normalise_vin
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import ConnectorStandard
from voltcloud.platform.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page

DC_STANDARDS = frozenset({ConnectorStandard.GBT_DC, ConnectorStandard.CCS2, ConnectorStandard.CHADEMO})
MAX_CAPACITY_WH = 1_000_000  # 1 MWh: beyond the largest truck pack on the road
MAX_CONSUMPTION_WH_PER_KM = 5_000  # a heavy truck uses ~1.5 kWh/km
MAX_POWER_W = 2_000_000  # megawatt charging (MCS) is 1-3.75 MW; 2 MW covers every inlet the stations serve
_PLATE = re.compile(r"^[\w\- ·]{2,16}$")


@dataclass(frozen=True)
class NewVehicle:
    vin: str
    plate: str
    model: str
    pack_type_id: str
    connector_standards: tuple[int, ...]
    capacity_wh: int
    consumption_wh_per_km: int
    max_dc_power_w: int
    max_ac_power_w: int
    fleet_id: str
    sub_fleet_id: str
    owner_driver_id: str


def _range(field: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise InvalidArgument.for_field(field, f"must be in [{lo}, {hi}], got {value}")


def _connector_mask(standards: tuple[int, ...]) -> int:
    if not standards:
        raise InvalidArgument.for_field("vehicle.connector_standards", "at least one inlet standard is required")
    mask = 0
    for standard in standards:
        try:
            mask |= 1 << ConnectorStandard(standard)
        except ValueError:
            raise InvalidArgument.for_field("vehicle.connector_standards", f"unknown standard {standard}") from None
    return mask


def _check_specs(new: NewVehicle) -> int:
    """The connector mask, once the vehicle's figures are in range."""
    mask = _connector_mask(new.connector_standards)
    if not new.model.strip():
        raise InvalidArgument.for_field("vehicle.model_id", "is required")
    if new.plate and not _PLATE.match(new.plate):
        raise InvalidArgument.for_field("vehicle.plate", "must be 2-16 letters, digits, spaces or dashes")
    _range("vehicle.battery_capacity_wh", new.capacity_wh, 1, MAX_CAPACITY_WH)
    _range("vehicle.consumption_wh_per_km", new.consumption_wh_per_km, 1, MAX_CONSUMPTION_WH_PER_KM)
    has_dc = any(ConnectorStandard(s) in DC_STANDARDS for s in new.connector_standards)
    _range("vehicle.max_dc_power_w", new.max_dc_power_w, 1 if has_dc else 0, MAX_POWER_W)
    _range("vehicle.max_ac_power_w", new.max_ac_power_w, 0, MAX_POWER_W)
    return mask


async def _pack_type(session: AsyncSession, pack_types: PackTypes, text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0 or int(text) > 2**31 - 1:
        raise InvalidArgument.for_field("vehicle.pack_type_id", f"must be a pack type id, got {text!r}")
    if not await pack_types(session, int(text)):
        raise InvalidArgument.for_field("vehicle.pack_type_id", f"no pack type {text}")
    return int(text)


async def _owner(
    session: AsyncSession, principal: Principal, new: NewVehicle
) -> tuple[str | None, str | None, str | None]:
    """(fleet, sub-fleet, private owner) of a new vehicle: a manager registers into their fleet, a driver their
    own private car; the admin either."""
    if principal.role is Role.DRIVER and new.fleet_id:
        raise PermissionDenied("a driver registers only their own car; the fleet's manager registers its vehicles")
    if principal.role is Role.FLEET_MANAGER and new.owner_driver_id:
        raise PermissionDenied("a fleet manager registers the fleet's vehicles, not private cars")
    if new.fleet_id or principal.role is Role.FLEET_MANAGER:
        if new.owner_driver_id:
            raise InvalidArgument.for_field("vehicle.owner_driver_id", "a fleet vehicle has no private owner")
        fleet_id = new.fleet_id or (principal.tenant.id if principal.tenant else "")
        fleet = await managed_fleet(session, principal, fleet_id, field="vehicle.fleet_id")
        if not new.sub_fleet_id:
            return fleet.id, None, None
        sub_fleet = await sub_fleet_of(session, fleet, new.sub_fleet_id, field="vehicle.sub_fleet_id")
        return fleet.id, sub_fleet.id, None
    if new.sub_fleet_id:
        raise InvalidArgument.for_field("vehicle.sub_fleet_id", "needs vehicle.fleet_id")
    if principal.role is Role.DRIVER:
        if new.owner_driver_id and new.owner_driver_id != principal.subject:
            raise PermissionDenied(f"{principal.subject} may register only their own car")
        return None, None, principal.subject
    if not new.owner_driver_id:
        raise InvalidArgument.for_field("vehicle.fleet_id", "a vehicle needs a fleet or an owner_driver_id")
    return None, None, new.owner_driver_id


async def register_vehicle(
    session: AsyncSession, principal: Principal, pack_types: PackTypes, new: NewVehicle, *, now: dt.datetime
) -> Vehicle:
    vin = normalise_vin(new.vin)
    mask = _check_specs(new)
    pack_type_id = await _pack_type(session, pack_types, new.pack_type_id)
    fleet_id, sub_fleet_id, owner = await _owner(session, principal, new)
    if (await session.exec(select(Vehicle.id).where(Vehicle.vin == vin))).first() is not None:
        raise _vin_taken(vin)
    vehicle = Vehicle(
        id=new_id("veh"),
        vin=vin,
        model=new.model.strip(),
        plate=new.plate or None,
        fleet_id=fleet_id,
        sub_fleet_id=sub_fleet_id,
        owner_driver_id=owner,
        pack_type_id=pack_type_id,
        connector_mask=mask,
        usable_capacity_wh=new.capacity_wh,
        consumption_wh_per_km=new.consumption_wh_per_km,
        max_dc_power_w=max(new.max_dc_power_w, 1),  # AC-only: the column is positive; the mask says "no DC inlet"
        max_ac_power_w=new.max_ac_power_w,
        created_at=now,
    )
    session.add(vehicle)
    try:
        await session.flush()
    except sa.exc.IntegrityError as exc:
        # A concurrent registration of the same VIN committed between our check and our insert (PostgreSQL);
        # the fleet, sub-fleet and pack type were read in this transaction, so the unique VIN is what broke.
        raise _vin_taken(vin) from exc
    await _announce(session, vehicle)
    return vehicle


async def _announce(session: AsyncSession, vehicle: Vehicle) -> None:
    """Topic `vehicle` on the change feed: QuotePowerUp's profile cache on every replica drops its copy."""
    await feed.publish(
        session, "vehicle", vehicle.id, {"fleet_id": vehicle.fleet_id, "owner_driver_id": vehicle.owner_driver_id}
    )


def _vin_taken(vin: str) -> AlreadyExists:
    return AlreadyExists(f"vehicle.vin: a vehicle with VIN {vin} is already registered")


async def sees(session: AsyncSession, principal: Principal, vehicle: Vehicle) -> bool:
    """Its fleet's manager and approved drivers, its private owner, the admin."""
    if principal.is_admin or manages(principal, vehicle.fleet_id):
        return True
    if principal.role is not Role.DRIVER:
        return False
    if vehicle.fleet_id is None:
        return vehicle.owner_driver_id == principal.subject
    driver = await session.get(Driver, principal.subject)
    return driver is not None and driver.fleet_id == vehicle.fleet_id


async def visible_vehicle(session: AsyncSession, principal: Principal, vehicle_id: str) -> Vehicle:
    if not vehicle_id:
        raise InvalidArgument.for_field("vehicle_id", "is required")
    vehicle = await session.get(Vehicle, vehicle_id)
    if vehicle is None or not await sees(session, principal, vehicle):
        raise NotFound(f"vehicle {vehicle_id} not found")
    return vehicle


@dataclass(frozen=True)
class VehicleFilter:
    fleet_id: str
    sub_fleet_id: str
    model: str
    vin: str


async def list_vehicles(session: AsyncSession, principal: Principal, where: VehicleFilter, page: Page) -> list[Vehicle]:
    """A fleet's vehicles (a manager's own fleet by default); the admin may list all."""
    fleet_id = where.fleet_id or ("" if principal.is_admin else (principal.tenant.id if principal.tenant else ""))
    query = select(Vehicle).order_by(col(Vehicle.id)).limit(page.size)
    if fleet_id:
        fleet = await managed_fleet(session, principal, fleet_id)
        query = query.where(Vehicle.fleet_id == fleet.id)
    elif not principal.is_admin:
        raise InvalidArgument.for_field("fleet_id", "is required")
    if where.sub_fleet_id:
        query = query.where(Vehicle.sub_fleet_id == where.sub_fleet_id)
    if where.model:
        query = query.where(Vehicle.model == where.model)
    if where.vin:
        query = query.where(Vehicle.vin == where.vin.strip().upper())
    if page.after is not None:
        query = query.where(col(Vehicle.id) > page.after)
    return list(await session.exec(query))


async def move_vehicle(session: AsyncSession, principal: Principal, vehicle_id: str, sub_fleet_id: str) -> Vehicle:
    """Moves a fleet vehicle to another sub-fleet of its fleet (empty: the fleet itself)."""
    vehicle = await visible_vehicle(session, principal, vehicle_id)
    if vehicle.fleet_id is None or not manages(principal, vehicle.fleet_id):
        raise NotFound(f"vehicle {vehicle_id} not found")
    fleet = await managed_fleet(session, principal, vehicle.fleet_id)
    vehicle.sub_fleet_id = (
        (await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")).id if sub_fleet_id else None
    )
    session.add(vehicle)
    await session.flush()
    await _announce(session, vehicle)
    return vehicle


# ---- lifecycle: update and retire (issue 12) ----

# UpdateVehicle's field names (the proto's) -> NewVehicle's attributes.
UPDATABLE = {
    "plate": "plate",
    "model_id": "model",
    "pack_type_id": "pack_type_id",
    "connector_standards": "connector_standards",
    "battery_capacity_wh": "capacity_wh",
    "consumption_wh_per_km": "consumption_wh_per_km",
    "max_dc_power_w": "max_dc_power_w",
    "max_ac_power_w": "max_ac_power_w",
}


async def _changeable(session: AsyncSession, principal: Principal, vehicle_id: str) -> Vehicle:
    """A vehicle the caller may change: its fleet's manager, a private car's owner, the admin. A fleet's driver
    sees the fleet's vehicles but changes none (PERMISSION_DENIED); a retired vehicle changes no more."""
    vehicle = await visible_vehicle(session, principal, vehicle_id)
    if vehicle.fleet_id is not None and not manages(principal, vehicle.fleet_id):
        raise PermissionDenied(f"only the manager of fleet {vehicle.fleet_id} changes vehicle {vehicle.id}")
    if vehicle.retired_at is not None:
        raise FailedPrecondition(f"vehicle {vehicle.id} was retired at {vehicle.retired_at.isoformat()}")
    return vehicle


def _as_new(vehicle: Vehicle) -> NewVehicle:
    """The vehicle's current description, in RegisterVehicle's terms (the base an update is checked on)."""
    return NewVehicle(
        vin=vehicle.vin, plate=vehicle.plate or "", model=vehicle.model,
        pack_type_id=str(vehicle.pack_type_id) if vehicle.pack_type_id is not None else "",
        connector_standards=tuple(int(s) for s in ConnectorStandard if vehicle.connector_mask & (1 << s)),
        capacity_wh=vehicle.usable_capacity_wh, consumption_wh_per_km=vehicle.consumption_wh_per_km,
        max_dc_power_w=vehicle.max_dc_power_w, max_ac_power_w=vehicle.max_ac_power_w,
        fleet_id=vehicle.fleet_id or "", sub_fleet_id=vehicle.sub_fleet_id or "",
        owner_driver_id=vehicle.owner_driver_id or "",
    )  # fmt: skip


async def update_vehicle(
    session: AsyncSession,
    principal: Principal,
    pack_types: PackTypes,
    vehicle_id: str,
    changes: NewVehicle,
    fields: tuple[str, ...],
) -> Vehicle:
    """Changes the named fields of a vehicle, each checked as RegisterVehicle checks it (on the merged
    description, so a DC power without a DC inlet is refused whichever of the two changed)."""
    if not fields:
        raise InvalidArgument.for_field("update_fields", f"name at least one of {', '.join(UPDATABLE)}")
    unknown = sorted(set(fields) - UPDATABLE.keys())
    if unknown:
        raise InvalidArgument.for_field("update_fields", f"cannot change {', '.join(unknown)[:200]}")
    vehicle = await _changeable(session, principal, vehicle_id)
    merged = replace(_as_new(vehicle), **{UPDATABLE[f]: getattr(changes, UPDATABLE[f]) for f in fields})
    mask = _check_specs(merged)
    if "pack_type_id" in fields:
        vehicle.pack_type_id = await _pack_type(session, pack_types, merged.pack_type_id)
    vehicle.plate, vehicle.model, vehicle.connector_mask = merged.plate or None, merged.model.strip(), mask
    vehicle.usable_capacity_wh, vehicle.consumption_wh_per_km = merged.capacity_wh, merged.consumption_wh_per_km
    vehicle.max_dc_power_w, vehicle.max_ac_power_w = max(merged.max_dc_power_w, 1), merged.max_ac_power_w
    session.add(vehicle)
    await session.flush()
    await _announce(session, vehicle)
    return vehicle


async def retire_vehicle(
    session: AsyncSession, principal: Principal, vehicle_id: str, reason: str, *, now: dt.datetime
) -> Vehicle:
    """No new orders for the vehicle from now (ordering's `vehicle_for` refuses it); its row and history stay."""
    if not reason.strip():
        raise InvalidArgument.for_field("reason", "is required")
    vehicle = await _changeable(session, principal, vehicle_id)
    vehicle.retired_at, vehicle.retire_reason = now, reason.strip()
    session.add(vehicle)
    await session.flush()
    await _announce(session, vehicle)
    return vehicle
