"""The ingest room's converter: uplink messages into `ingest.events` values, and back (the edge of the room;
apply.py and hub.py work on the domain values only)."""

from __future__ import annotations

import dataclasses

from voltcloud.api.v1 import ingest_pb2, stations_pb2
from voltcloud.ingest import events
from voltcloud.platform.limits import optional_datetime

# The oneof name of StationEvent.event -> the domain body it decodes to (kinds not listed carry no body).
_BODIES: dict[str, type[events.EventBody]] = {
    "connector_status": events.ConnectorStatusChanged,
    "session_started": events.SessionStarted,
    "session_stopped": events.SessionStopped,
    "swap_started": events.SwapStarted,
    "swap_completed": events.SwapCompleted,
    "pack_report": events.PackReport,
    "inspection_defect": events.InspectionDefect,
    "alarm": events.AlarmReport,
    "vehicle_arrived": events.VehicleArrived,
}


def station_event(message: ingest_pb2.StationEvent) -> events.StationEvent:
    """Decodes one event; an invalid time raises InvalidArgument naming `event.time`."""
    kind = message.WhichOneof("event") or ""
    body_type = _BODIES.get(kind)
    body = None
    if body_type is not None:
        wire = getattr(message, kind)
        body = body_type(**{f.name: getattr(wire, f.name) for f in dataclasses.fields(body_type)})
    return events.StationEvent(
        station_id=message.station_id,
        kind=kind,
        time=optional_datetime(message, "time", "event.time", zero="unset"),
        body=body,
        payload=message.SerializeToString(),
    )


def telemetry(batch: ingest_pb2.TelemetryBatch) -> events.TelemetryBatch:
    """Decodes a batch; the columns are passed through (the repeated fields themselves, no copy)."""
    return events.TelemetryBatch(
        sources=[events.TelemetrySource(s.station_id, s.resource_id, s.pack_id) for s in batch.sources],
        col_source_index=batch.col_source_index,
        col_metric=batch.col_metric,
        col_offset_ms=batch.col_offset_ms,
        col_int_value=batch.col_int_value,
        readings=[(r.source_index, r.metric, r.int_value or int(r.double_value)) for r in batch.readings],
    )


def reserve_command(command: events.ReserveCommand) -> stations_pb2.StationCommand:
    return stations_pb2.StationCommand(
        reserve=stations_pb2.ReserveCommand(
            reservation_id=command.reservation_id, lane=command.lane, pack_id=command.pack_id
        )
    )
