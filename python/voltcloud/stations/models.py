"""Tables of the station registry. Enum-like columns use the protobuf numbers (see proto/voltcloud/v1)."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column


class Operator(SQLModel, table=True):
    """A tenant that runs stations, vans, specialists and engineers."""

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    currency: str = Field(default="CNY", max_length=3)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))


class Station(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    operator_id: str = Field(foreign_key="operator.id", index=True, max_length=64)
    kind: int = Field(description="StationKind: 1 swap, 2 charging")
    name: str = Field(max_length=200)
    lat: float
    lng: float
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    power_cap_w: int = Field(ge=0)
    lanes: int = Field(default=0, ge=0, description="Swap lanes (swap stations only)")
    swap_time_s: int = Field(default=0, ge=0)
    opening_hours: str = Field(default="00:00-24:00", max_length=200)
    version: int = Field(default=1, description="Optimistic concurrency version")


class Connector(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    station_id: str = Field(foreign_key="station.id", index=True, max_length=64)
    charger_no: int = Field(ge=1, description="Charge point number within the station")
    connector_no: int = Field(ge=1, description="OCPP connectorId on the charger")
    standard: int = Field(description="ConnectorStandard")
    max_power_w: int = Field(gt=0)
    status: int = Field(description="ConnectorStatus")
    version: int = Field(default=1)


class PackType(SQLModel, table=True):
    id: int = Field(primary_key=True)
    name: str = Field(max_length=100)
    capacity_wh: int = Field(gt=0)
    chemistry: str = Field(max_length=20)


class Pack(SQLModel, table=True):
    """A swappable battery. `station_id` is set while it sits in a station slot."""

    id: str = Field(primary_key=True, max_length=64)
    pack_type_id: int = Field(foreign_key="packtype.id", index=True)
    station_id: str | None = Field(default=None, foreign_key="station.id", index=True, max_length=64)
    slot_no: int | None = None
    vehicle_id: str | None = Field(default=None, index=True, max_length=64)
    soc_permille: int = Field(ge=0, le=1000)
    soh_permille: int = Field(ge=0, le=1000)
    cycles: int = Field(ge=0)
    state: int = Field(description="PackState")
    version: int = Field(default=1)
