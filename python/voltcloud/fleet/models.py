"""Tables of fleets, vehicles and drivers."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column

# Rows the demo seed wrote before FleetService existed have no account id and no creation time: the account
# is opened on first use (settlement's ensure is idempotent) and the time stays unknown.


class Fleet(SQLModel, table=True):
    """A tenant that owns vehicles and employs drivers."""

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    currency: str = Field(default="CNY", max_length=3)
    payment_mode: int = Field(default=1, description="1 real-time, 2 post-settlement (monthly)")
    credit_limit_minor: int = Field(default=0, ge=0)
    account_id: str | None = Field(default=None, max_length=64)
    created_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class SubFleet(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    fleet_id: str = Field(foreign_key="fleet.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    payment_mode: int = Field(default=0, description="0 inherits the fleet's; else as Fleet.payment_mode")
    credit_limit_minor: int = Field(default=0, ge=0)
    account_id: str | None = Field(default=None, max_length=64)
    created_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Vehicle(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    vin: str = Field(unique=True, min_length=17, max_length=17)
    model: str = Field(max_length=100)
    fleet_id: str | None = Field(default=None, foreign_key="fleet.id", index=True, max_length=64)
    sub_fleet_id: str | None = Field(default=None, foreign_key="subfleet.id", max_length=64)
    # The registered owner of a private car (fleet_id is None): the one driver who may order for it. No foreign
    # key: driver.vehicle_id already points here, and a cycle of keys would need deferred constraints.
    owner_driver_id: str | None = Field(default=None, index=True, max_length=64)
    pack_type_id: int | None = Field(default=None, foreign_key="packtype.id", description="None: fixed battery")
    connector_mask: int = Field(description="Bit (1 << ConnectorStandard) per supported standard")
    usable_capacity_wh: int = Field(gt=0)
    consumption_wh_per_km: int = Field(gt=0)
    max_dc_power_w: int = Field(gt=0)
    max_ac_power_w: int = Field(default=0, ge=0)
    plate: str | None = Field(default=None, max_length=16)
    created_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # RetireVehicle: no new orders from then on; the row stays for its history (orders, statements, reports).
    retired_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    retire_reason: str | None = Field(default=None, max_length=200)


class Driver(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    # Membership: only an approved driver has fleet_id (ordering reads it to let a driver order for the fleet's
    # vehicles, settlement to let them spend its money), so an applicant gets nothing before approval.
    fleet_id: str | None = Field(default=None, foreign_key="fleet.id", index=True, max_length=64)
    vehicle_id: str | None = Field(default=None, foreign_key="vehicle.id", max_length=64)
    sub_fleet_id: str | None = Field(default=None, foreign_key="subfleet.id", max_length=64)
    phone: str | None = Field(default=None, max_length=16)
    account_id: str | None = Field(default=None, max_length=64)
    status: int = Field(
        default=2, description="DriverStatus: 1 pending, 2 approved, 3 rejected, 4 suspended, 5 removed"
    )
    applied_fleet_id: str | None = Field(default=None, foreign_key="fleet.id", index=True, max_length=64)
    rejection_reason: str | None = Field(default=None, max_length=200)
    created_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
