"""The ingest room's converter: uplink messages into `ingest.events` values, and back (the edge of the room;
apply.py and hub.py work on the domain values only)."""

from __future__ import annotations

import dataclasses

from voltcloud.api.v1 import ingest_pb2, stations_pb2
from voltcloud.ingest import events
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.limits import optional_datetime, to_timestamp
from voltcloud.stations.api import CommandResult

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
    """Decodes a batch; the columns are passed through (the repeated fields themselves, no copy). An invalid
    base time raises InvalidArgument naming `telemetry.base_time`."""
    return events.TelemetryBatch(
        sources=[events.TelemetrySource(s.station_id, s.resource_id, s.pack_id, s.vehicle_id) for s in batch.sources],
        col_source_index=batch.col_source_index,
        col_metric=batch.col_metric,
        col_offset_ms=batch.col_offset_ms,
        col_int_value=batch.col_int_value,
        readings=[(r.source_index, r.metric, r.int_value or int(r.double_value)) for r in batch.readings],
        reading_offsets_ms=[r.offset_ms for r in batch.readings],
        base_time=optional_datetime(batch, "base_time", "telemetry.base_time", zero="unset"),
    )


def command_result(message: ingest_pb2.CommandResult) -> CommandResult:
    result = message.result
    try:
        when = optional_datetime(result, "result_time", "command_result.result.result_time", zero="unset")
    except InvalidArgument:  # a gateway's clock must not end its stream: the hub stamps the arrival instead
        when = None
    return CommandResult(result.command_id, result.status, result.detail, when)


def downlink(item: events.Downlink) -> ingest_pb2.PlatformToGateway:
    if isinstance(item, events.Ack):
        return ingest_pb2.PlatformToGateway(ack=ingest_pb2.Ack(acked_seq=item.seq))
    if isinstance(item, events.Rejection):
        rejection = ingest_pb2.UplinkRejection(seq=item.seq, field=item.field, description=item.description)
        return ingest_pb2.PlatformToGateway(rejection=rejection)
    command = ingest_pb2.Command(
        command_id=item.command_id,
        station_id=item.station_id,
        command=_station_command(item.command),
        deadline=to_timestamp(item.deadline),
    )
    return ingest_pb2.PlatformToGateway(command=command)


def _station_command(command: object) -> stations_pb2.StationCommand:
    """The platform's own commands are encoded here; an operator's (StationService) is already a message."""
    if isinstance(command, events.ReserveCommand):
        reserve = stations_pb2.ReserveCommand(
            reservation_id=command.reservation_id, lane=command.lane, pack_id=command.pack_id
        )
        return stations_pb2.StationCommand(reserve=reserve)
    if isinstance(command, events.CancelReservationCommand):
        cancel = stations_pb2.CancelReservationCommand(reservation_id=command.reservation_id)
        return stations_pb2.StationCommand(cancel_reservation=cancel)
    if isinstance(command, events.RemoteStartCommand):
        start = stations_pb2.RemoteStartCommand(
            connector_id=command.connector_id, order_id=command.order_id, id_tag=command.id_tag
        )
        return stations_pb2.StationCommand(remote_start=start)
    if isinstance(command, stations_pb2.StationCommand):
        return command
    raise TypeError(f"not a station command: {type(command).__name__}")


def command_bytes(command: object) -> bytes:
    """A command as it travels between replicas on the change feed (the wire form the gateway receives)."""
    return _station_command(command).SerializeToString()


def command_from_bytes(data: bytes) -> object:
    """The command `command_bytes` encoded, ready for `downlink` on the replica holding the gateway's stream."""
    return stations_pb2.StationCommand.FromString(data)
