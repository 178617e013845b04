"""What a gateway reports, as domain values: the uplink's station events and telemetry batches, decoded from
the wire by `ingest.convert` so the apply step and the hub never see a generated message.

Field names follow the wire's (one generic decoder fills them); zero/empty means "not reported", as on the
wire. Enum fields carry the numbers of `platform.enums`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectorStatusChanged:
    connector_id: str
    status: int
    error_code: str


@dataclass(frozen=True)
class SessionStarted:
    session_id: str
    connector_id: str
    meter_start_wh: int
    id_tag: str
    reservation_id: str
    order_id: str


@dataclass(frozen=True)
class SessionStopped:
    session_id: str
    connector_id: str
    meter_stop_wh: int
    energy_wh: int
    reason: str
    id_tag: str


@dataclass(frozen=True)
class SwapStarted:
    session_id: str
    lane: int
    vehicle_id: str
    order_id: str
    pack_out_id: str
    pack_in_id: str


@dataclass(frozen=True)
class SwapCompleted:
    session_id: str
    lane: int
    vehicle_id: str
    pack_out_id: str
    pack_in_id: str
    pack_out_soc_permille: int
    pack_in_soc_permille: int
    energy_wh: int
    pack_out_slot: int
    success: bool
    failure_reason: str


@dataclass(frozen=True)
class PackReport:
    pack_id: str
    slot: int
    soc_permille: int
    soh_permille: int
    temperature_milli_c: int
    cycle_count: int
    state: int
    power_w: int = 0  # charging power into the pack (battery health's fast-charge share)


@dataclass(frozen=True)
class InspectionDefect:
    pack_id: str
    defect: int  # 0: not given
    level: int
    notes: str


@dataclass(frozen=True)
class AlarmReport:
    resource_id: str
    vehicle_id: str
    pack_id: str
    code: str
    level: int
    message: str
    cleared: bool


@dataclass(frozen=True)
class VehicleArrived:
    lane: int
    vehicle_id: str
    pack_out_id: str
    order_id: str


EventBody = (
    ConnectorStatusChanged
    | SessionStarted
    | SessionStopped
    | SwapStarted
    | SwapCompleted
    | PackReport
    | InspectionDefect
    | AlarmReport
    | VehicleArrived
)


@dataclass(frozen=True)
class StationEvent:
    """One station event. `kind` is the wire's name of the body ("" when none was set); `body` is None for
    kinds without content (heartbeat). `payload` is the event as received, for the event log."""

    station_id: str
    kind: str
    time: dt.datetime | None
    body: EventBody | None
    payload: bytes


@dataclass(frozen=True)
class TelemetrySource:
    station_id: str
    resource_id: str
    pack_id: str
    vehicle_id: str = ""  # a vehicle source (GB/T 32960) names only this


@dataclass(frozen=True)
class TelemetryBatch:
    """A batch of readings. The columns are passed through as they came (no object per reading): the fast
    path reads them with zip. `readings` holds the older row form as (source_index, metric, value)."""

    sources: Sequence[TelemetrySource]
    col_source_index: Sequence[int]
    col_metric: Sequence[int]
    col_offset_ms: Sequence[int]
    col_int_value: Sequence[int]
    readings: Sequence[tuple[int, int, int]] = ()
    reading_offsets_ms: Sequence[int] = ()  # offset_ms of each of `readings`
    base_time: dt.datetime | None = None  # None: not given (readings are then "now")


@dataclass(frozen=True)
class ReserveCommand:
    """Tells a swap station which pack to hand out on a lane (sent by the platform after VehicleArrived)."""

    reservation_id: str
    lane: int
    pack_id: str


@dataclass(frozen=True)
class CancelReservationCommand:
    """Tells a swap station a reservation made with a ReserveCommand is void (a scanned swap that failed)."""

    reservation_id: str


@dataclass(frozen=True)
class RemoteStartCommand:
    """Asks a charging station to start a session for an order (StartByScan)."""

    connector_id: str
    order_id: str
    id_tag: str


# ---- down the uplink stream (the servicer encodes them with `ingest.convert.downlink`) ----


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Rejection:
    seq: int
    field: str
    description: str


@dataclass(frozen=True)
class GatewayCommand:
    """A command routed to a station's gateway. The hub never reads `command`: a ReserveCommand or
    RemoteStartCommand of the platform's own, or a command an operator sent (passed through as received)."""

    command_id: str
    station_id: str
    command: object
    deadline: dt.datetime


Downlink = Ack | Rejection | GatewayCommand
