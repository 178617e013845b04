"""Tables of fleets, vehicles and drivers."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class Fleet(SQLModel, table=True):
    """A tenant that owns vehicles and employs drivers."""

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    currency: str = Field(default="CNY", max_length=3)
    payment_mode: int = Field(default=1, description="1 real-time, 2 post-settlement (monthly)")
    credit_limit_minor: int = Field(default=0, ge=0)


class SubFleet(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    fleet_id: str = Field(foreign_key="fleet.id", index=True, max_length=64)
    name: str = Field(max_length=200)


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


class Driver(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    fleet_id: str | None = Field(default=None, foreign_key="fleet.id", index=True, max_length=64)
    vehicle_id: str | None = Field(default=None, foreign_key="vehicle.id", max_length=64)
