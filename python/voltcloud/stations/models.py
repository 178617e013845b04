"""Tables of the station registry. Enum-like columns use the protobuf numbers (see proto/voltcloud/v1)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from voltcloud.platform.db import utc_column


class Operator(SQLModel, table=True):
    """A tenant that runs stations, vans, specialists and engineers."""

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    currency: str = Field(default="CNY", max_length=3)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    country: str = Field(default="", max_length=2, sa_column_kwargs={"server_default": ""})


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
    gateway_id: str | None = Field(default=None, max_length=64, index=True, description="Gateway serving it")
    enabled: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    address: str = Field(default="", max_length=300, sa_column_kwargs={"server_default": ""})
    slot_count: int = Field(default=0, ge=0, sa_column_kwargs={"server_default": "0"})


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
    temperature_milli_c: int = Field(default=25000, sa_column_kwargs={"server_default": "25000"})
    operator_id: str | None = Field(default=None, max_length=64)
    transit_id: str | None = Field(default=None, max_length=64)


class StationSession(SQLModel, table=True):
    """A charge or swap reported by a station's gateway. (station_id, kind, external_id) is unique, so an
    offline transaction replayed by a charger, or an uplink replay, is recorded once."""

    __table_args__ = (sa.UniqueConstraint("station_id", "kind", "external_id", name="uq_stationsession_external"),)

    id: str = Field(primary_key=True, max_length=64)
    station_id: str = Field(foreign_key="station.id", index=True, max_length=64)
    kind: int = Field(description="StationSessionKind: 1 charge, 2 swap")
    external_id: str = Field(max_length=64)
    connector_id: str | None = Field(default=None, max_length=64)
    lane: int = 0
    vehicle_id: str | None = Field(default=None, max_length=64)
    order_id: str | None = Field(default=None, index=True, max_length=64)
    id_tag: str | None = Field(default=None, max_length=64)
    reservation_id: str | None = Field(default=None, max_length=64)
    meter_start_wh: int = Field(default=0, sa_type=sa.BigInteger)
    meter_stop_wh: int = Field(default=0, sa_type=sa.BigInteger)
    energy_wh: int = Field(default=0, sa_type=sa.BigInteger)
    pack_out_id: str | None = Field(default=None, max_length=64)
    pack_in_id: str | None = Field(default=None, max_length=64)
    started_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    ended_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    reason: str = Field(default="", max_length=200)
    gateway_id: str | None = Field(default=None, max_length=64)


class PackEvent(SQLModel, table=True):
    """One entry of a pack's lifecycle and flow history (which station, slot, vehicle; SOC/SOH at the time)."""

    id: int | None = Field(default=None, primary_key=True)
    pack_id: str = Field(foreign_key="pack.id", index=True, max_length=64)
    time: dt.datetime = Field(sa_column=utc_column(nullable=False))
    state: int
    station_id: str | None = Field(default=None, max_length=64)
    slot_no: int | None = None
    vehicle_id: str | None = Field(default=None, max_length=64)
    transit_id: str | None = Field(default=None, max_length=64)
    soc_permille: int = 0
    soh_permille: int = 0
    temperature_milli_c: int = 0
    cycles: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    power_w: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    reason: str = Field(default="", max_length=200)
    session_id: str | None = Field(default=None, max_length=64)
    actor_subject: str = Field(default="", max_length=128)
    actor_role: int = 0


class Inspection(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    pack_id: str = Field(foreign_key="pack.id", index=True, max_length=64)
    station_id: str | None = Field(default=None, max_length=64)
    defect: int = Field(description="DefectKind")
    level: int = Field(description="AlarmLevel")
    notes: str = Field(default="", max_length=2000)
    attachment_uris: str = Field(default="", description="Newline-separated URIs")
    inspected_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    actor_subject: str = Field(default="", max_length=128)
    actor_role: int = 0
    quarantined: bool = False
    alarm_id: str | None = Field(default=None, max_length=64)
    work_order_id: str | None = Field(default=None, max_length=64)


class StationCommandRecord(SQLModel, table=True):
    """A command sent to a station through its gateway, with its outcome (audit trail)."""

    id: str = Field(primary_key=True, max_length=64)
    station_id: str = Field(foreign_key="station.id", index=True, max_length=64)
    kind: str = Field(max_length=40)
    payload: bytes = Field(sa_type=sa.LargeBinary)
    requested_by: str = Field(default="", max_length=128)
    status: int = Field(default=0, description="CommandStatus")
    detail: str = Field(default="", max_length=500)
    created_at: dt.datetime = Field(sa_column=utc_column(nullable=False))
    result_at: dt.datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class MobileUnit(SQLModel, table=True):
    """A charging van, a valet specialist or a maintenance engineer, employed by an operator. Owned here, with
    the operator's other resources, because `inventory` reserves it like a connector or a pack."""

    id: str = Field(primary_key=True, max_length=64)
    operator_id: str = Field(foreign_key="operator.id", index=True, max_length=64)
    kind: int = Field(description="1 van, 2 specialist, 3 engineer")
    name: str = Field(max_length=200)
    lat: float
    lng: float
    energy_wh: int = Field(default=0, ge=0, description="Energy on board (vans)")
    connector_mask: int = Field(default=0)
    skills: int = Field(default=0, description="Skill bitmask (engineers)")
    shift_start_s: int = Field(ge=0, le=86400, description="Seconds after local midnight")
    shift_end_s: int = Field(ge=0, le=2 * 86400)
    regions: str = Field(default="", max_length=1000, description="Comma-separated region codes it serves")
    home_lat: float | None = Field(default=None, description="Home base (DispatchService.CreateMobileUnit)")
    home_lng: float | None = Field(default=None)
    status: int = Field(default=1)
    version: int = Field(default=1)
