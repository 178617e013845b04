"""ingest/convert.py: every event kind decodes field for field; the downlink encodes what the hub queued."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from voltcloud.api.v1 import common_pb2, ingest_pb2, stations_pb2
from voltcloud.ingest import convert, events
from voltcloud.platform.errors import InvalidArgument

KINDS = [
    "connector_status",
    "session_started",
    "session_stopped",
    "swap_started",
    "swap_completed",
    "pack_report",
    "inspection_defect",
    "alarm",
    "vehicle_arrived",
]


def _filled(kind: str) -> ingest_pb2.StationEvent:
    """An event whose body has every field set to a value that is not its default."""
    message = ingest_pb2.StationEvent(station_id="st-1")
    body = getattr(message, kind)
    for n, field in enumerate(body.DESCRIPTOR.fields, start=1):
        if field.type == field.TYPE_STRING:
            setattr(body, field.name, f"{field.name}-{n}")
        elif field.type == field.TYPE_BOOL:
            setattr(body, field.name, True)
        else:
            setattr(body, field.name, n)
    return message


@pytest.mark.parametrize("kind", KINDS)
def test_every_body_field_the_domain_names_is_copied(kind: str) -> None:
    message = _filled(kind)
    event = convert.station_event(message)
    assert (event.station_id, event.kind, event.time) == ("st-1", kind, None)
    assert event.payload == message.SerializeToString()
    assert event.body is not None
    wire = getattr(message, kind)
    for field in dataclasses.fields(event.body):
        assert getattr(event.body, field.name) == getattr(wire, field.name), field.name


def test_kinds_without_a_body_and_no_kind_at_all() -> None:
    heartbeat = convert.station_event(ingest_pb2.StationEvent(station_id="st-1", heartbeat=ingest_pb2.Heartbeat()))
    assert (heartbeat.kind, heartbeat.body) == ("heartbeat", None)
    assert convert.station_event(ingest_pb2.StationEvent(station_id="st-1")).kind == ""


def test_event_time_is_decoded_and_an_invalid_one_names_the_field() -> None:
    ok = ingest_pb2.StationEvent(station_id="st-1", time=Timestamp(seconds=1_700_000_000))
    assert convert.station_event(ok).time == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)
    bad = ingest_pb2.StationEvent(station_id="st-1", time=Timestamp(seconds=-(10**12)))
    with pytest.raises(InvalidArgument) as raised:
        convert.station_event(bad)
    assert raised.value.violations[0].field == "event.time"


def test_telemetry_columns_and_rows() -> None:
    batch = ingest_pb2.TelemetryBatch(
        sources=[ingest_pb2.TelemetrySource(station_id="st-1", resource_id="cn-1", pack_id="pk-1")],
        col_source_index=[0, 0],
        col_metric=[common_pb2.METRIC_SOC_PERMILLE, common_pb2.METRIC_SOH_PERMILLE],
        col_offset_ms=[0, 5],
        col_int_value=[10, 20],
        readings=[ingest_pb2.Reading(source_index=0, metric=common_pb2.METRIC_TEMPERATURE_MILLI_C, double_value=7.9)],
    )
    decoded = convert.telemetry(batch)
    assert decoded.sources == [events.TelemetrySource("st-1", "cn-1", "pk-1")]
    assert list(decoded.col_int_value) == [10, 20] and list(decoded.col_metric) == [1, 2]
    assert decoded.readings == [(0, 3, 7)]


def test_downlink_encodes_acks_rejections_and_commands() -> None:
    assert convert.downlink(events.Ack(7)).ack.acked_seq == 7
    rejection = convert.downlink(events.Rejection(8, "event.station_id", "is required")).rejection
    assert (rejection.seq, rejection.field, rejection.description) == (8, "event.station_id", "is required")
    deadline = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    reserve = events.ReserveCommand(reservation_id="rsv-1", lane=2, pack_id="pk-1")
    command = convert.downlink(events.GatewayCommand("cmd-1", "st-1", reserve, deadline)).command
    assert (command.command_id, command.station_id) == ("cmd-1", "st-1")
    assert command.deadline.ToDatetime(dt.UTC) == deadline
    assert command.command.reserve == stations_pb2.ReserveCommand(reservation_id="rsv-1", lane=2, pack_id="pk-1")
    start = events.RemoteStartCommand(connector_id="cn-1", order_id="or-1", id_tag="tag")
    encoded = convert.downlink(events.GatewayCommand("cmd-2", "st-1", start, deadline)).command.command
    assert encoded.remote_start.order_id == "or-1" and encoded.remote_start.id_tag == "tag"
    operator = stations_pb2.StationCommand(remote_stop=stations_pb2.RemoteStopCommand(session_id="s-1"))
    assert convert.downlink(events.GatewayCommand("cmd-3", "st-1", operator, deadline)).command.command == operator


def test_command_result_with_an_invalid_time_is_stamped_by_the_hub() -> None:
    result = stations_pb2.StationCommandResult(
        command_id="cmd-1", status=stations_pb2.COMMAND_STATUS_ACCEPTED, detail="ok"
    )
    result.result_time.seconds = -(10**12)
    decoded = convert.command_result(ingest_pb2.CommandResult(station_id="st-1", result=result))
    assert (decoded.command_id, decoded.status, decoded.detail, decoded.result_time) == ("cmd-1", 1, "ok", None)
