"""Sans-IO codec of the swap-station MQTT uplink (topic tree and JSON payloads in docs/protocols/swap-mqtt.md).

`decode(topic, payload)` turns one MQTT message from a station into uplink messages (or a SwapError naming
the offending field); `encode_command` turns a platform command into the station's command message.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2

from voltcloud.api.v1 import common_pb2, ingest_pb2, stations_pb2

PREFIX = "voltcloud/v1/swap"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS = 100_000
SUBSCRIPTIONS = (f"{PREFIX}/+/evt/+", f"{PREFIX}/+/telemetry", f"{PREFIX}/+/cmd_result")

DEFECTS = {
    "none": stations_pb2.DEFECT_KIND_NONE,
    "casing_damage": stations_pb2.DEFECT_KIND_CASING_DAMAGE,
    "connector_damage": stations_pb2.DEFECT_KIND_CONNECTOR_DAMAGE,
    "leak": stations_pb2.DEFECT_KIND_LEAK,
    "thermal": stations_pb2.DEFECT_KIND_THERMAL,
    "insulation": stations_pb2.DEFECT_KIND_INSULATION,
    "cell_imbalance": stations_pb2.DEFECT_KIND_CELL_IMBALANCE,
    "other": stations_pb2.DEFECT_KIND_OTHER,
}
LEVELS = {
    "info": common_pb2.ALARM_LEVEL_INFO,
    "warning": common_pb2.ALARM_LEVEL_WARNING,
    "major": common_pb2.ALARM_LEVEL_MAJOR,
    "critical": common_pb2.ALARM_LEVEL_CRITICAL,
}
PACK_STATES = {"charging": common_pb2.PACK_STATE_CHARGING, "ready": common_pb2.PACK_STATE_READY}
METRICS = {
    "soc_permille": common_pb2.METRIC_SOC_PERMILLE,
    "soh_permille": common_pb2.METRIC_SOH_PERMILLE,
    "temperature_milli_c": common_pb2.METRIC_TEMPERATURE_MILLI_C,
    "voltage_mv": common_pb2.METRIC_VOLTAGE_MV,
    "current_ma": common_pb2.METRIC_CURRENT_MA,
    "power_w": common_pb2.METRIC_POWER_W,
    "energy_wh": common_pb2.METRIC_ENERGY_WH,
    "site_power_w": common_pb2.METRIC_SITE_POWER_W,
}
COMMAND_STATUSES = {
    "accepted": stations_pb2.COMMAND_STATUS_ACCEPTED,
    "rejected": stations_pb2.COMMAND_STATUS_REJECTED,
    "not_supported": stations_pb2.COMMAND_STATUS_NOT_SUPPORTED,
    "failed": stations_pb2.COMMAND_STATUS_FAILED,
}


class SwapError(Exception):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


@dataclass
class Decoded:
    station_id: str
    msg_id: str
    events: list[ingest_pb2.StationEvent] = field(default_factory=list)
    telemetry: ingest_pb2.TelemetryBatch | None = None
    command_result: tuple[str, stations_pb2.StationCommandResult] | None = None


def _stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


class _Body:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def text(self, name: str, *, required: bool = False, max_len: int = 64) -> str:
        value = self.data.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise SwapError(name, "must be a string")
        if required and not value:
            raise SwapError(name, "is required")
        if len(value) > max_len:
            raise SwapError(name, f"is longer than {max_len} characters")
        return value

    def integer(self, name: str, *, lo: int = 0, hi: int = 2**53, default: int = 0, required: bool = False) -> int:
        if name not in self.data or self.data[name] is None:
            if required:
                raise SwapError(name, "is required")
            return default
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise SwapError(name, "must be an integer")
        if not lo <= value <= hi:
            raise SwapError(name, f"must be {lo}..{hi}, got {value}")
        return value

    def choice(self, name: str, options: dict[str, int], *, default: int | None = None) -> int:
        value = self.data.get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or value not in options:
            raise SwapError(name, f"must be one of {sorted(options)}")
        return options[value]

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise SwapError(name, "must be true or false")
        return value

    def time(self, name: str = "time") -> dt.datetime | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise SwapError(name, "must be an RFC 3339 timestamp")
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise SwapError(name, "must be an RFC 3339 timestamp") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _load(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SwapError("payload", f"{len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise SwapError("payload", f"invalid JSON: {str(error)[:120]}") from None
    if not isinstance(data, dict):
        raise SwapError("payload", "must be a JSON object")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode(topic: str, payload: bytes, now: dt.datetime | None = None) -> Decoded:
    parts = topic.split("/")
    base = PREFIX.split("/")
    if parts[: len(base)] != base or len(parts) < len(base) + 2:
        raise SwapError("topic", f"not under {PREFIX}/<station_id>/...")
    station_id, channel = parts[len(base)], parts[len(base) + 1 :]
    if not station_id or len(station_id) > 64:
        raise SwapError("topic", "station id missing or too long")
    body = _Body(_load(payload))
    msg_id = body.text("msg_id", required=True, max_len=128) if channel[0] != "cmd_result" else ""
    when = body.time() or now or dt.datetime.now(dt.UTC)
    out = Decoded(station_id, msg_id)
    if channel == ["telemetry"]:
        out.telemetry = _telemetry(station_id, body, when)
    elif channel == ["cmd_result"]:
        command_id = body.text("command_id", required=True)
        result = stations_pb2.StationCommandResult(
            command_id=command_id,
            status=body.choice("status", COMMAND_STATUSES),  # type: ignore[arg-type]
            detail=body.text("detail", max_len=400),
            result_time=_stamp(when),
        )
        out.command_result = (station_id, result)
        out.msg_id = f"result:{command_id}"
    elif len(channel) == 2 and channel[0] == "evt":
        out.events.append(_event(station_id, channel[1], body, when))
    else:
        raise SwapError("topic", f"unknown channel {'/'.join(channel)[:64]}")
    return out


def event_from_body(station_id: str, kind: str, body: dict[str, Any], when: dt.datetime) -> ingest_pb2.StationEvent:
    """The uplink event of one station message body (the `evt/<kind>` channel's JSON object, as documented);
    other station adapters (the Modbus rack poller) build their events through this same mapping."""
    return _event(station_id, kind, _Body(body), when)


def telemetry_from_body(station_id: str, body: dict[str, Any], when: dt.datetime) -> ingest_pb2.TelemetryBatch:
    """The uplink telemetry batch of one `telemetry` channel body (`sources` and `readings`)."""
    return _telemetry(station_id, _Body(body), when)


def _event(station_id: str, kind: str, b: _Body, when: dt.datetime) -> ingest_pb2.StationEvent:
    event = ingest_pb2.StationEvent(station_id=station_id, time=_stamp(when))
    if kind == "heartbeat":
        event.heartbeat.CopyFrom(ingest_pb2.Heartbeat(station_time=_stamp(when)))
    elif kind == "vehicle_arrived":
        event.vehicle_arrived.CopyFrom(
            ingest_pb2.VehicleArrived(
                lane=b.integer("lane", lo=1, hi=64, required=True),
                vehicle_id=b.text("vehicle_id", required=True),
                pack_out_id=b.text("pack_out_id"),
                order_id=b.text("order_id"),
            )
        )
    elif kind == "swap_started":
        event.swap_started.CopyFrom(
            ingest_pb2.SwapStarted(
                session_id=b.text("session_id", required=True),
                lane=b.integer("lane", lo=1, hi=64, required=True),
                vehicle_id=b.text("vehicle_id"),
                order_id=b.text("order_id"),
                pack_out_id=b.text("pack_out_id"),
                pack_in_id=b.text("pack_in_id"),
            )
        )
    elif kind == "swap_completed":
        event.swap_completed.CopyFrom(
            ingest_pb2.SwapCompleted(
                session_id=b.text("session_id", required=True),
                lane=b.integer("lane", lo=1, hi=64, required=True),
                vehicle_id=b.text("vehicle_id"),
                pack_out_id=b.text("pack_out_id"),
                pack_in_id=b.text("pack_in_id"),
                pack_out_soc_permille=b.integer("pack_out_soc_permille", hi=1000),
                pack_in_soc_permille=b.integer("pack_in_soc_permille", hi=1000),
                energy_wh=b.integer("energy_wh", hi=10**9),
                pack_out_slot=b.integer("pack_out_slot", hi=10_000),
                success=b.flag("success", True),
                failure_reason=b.text("failure_reason", max_len=200),
            )
        )
    elif kind == "pack_report":
        event.pack_report.CopyFrom(
            ingest_pb2.PackReport(
                pack_id=b.text("pack_id", required=True),
                slot=b.integer("slot", hi=10_000),
                soc_permille=b.integer("soc_permille", hi=1000, required=True),
                soh_permille=b.integer("soh_permille", hi=1000),
                temperature_milli_c=b.integer("temperature_milli_c", lo=-100_000, hi=200_000),
                cycle_count=b.integer("cycle_count", hi=1_000_000),
                state=b.choice("state", PACK_STATES, default=0),  # type: ignore[arg-type]
                power_w=b.integer("power_w", lo=-(10**7), hi=10**7),
            )
        )
    elif kind == "inspection":
        event.inspection_defect.CopyFrom(
            ingest_pb2.InspectionDefect(
                pack_id=b.text("pack_id", required=True),
                defect=b.choice("defect", DEFECTS),  # type: ignore[arg-type]
                level=b.choice("level", LEVELS, default=common_pb2.ALARM_LEVEL_MAJOR),  # type: ignore[arg-type]
                notes=b.text("notes", max_len=1000),
            )
        )
    elif kind == "alarm":
        event.alarm.CopyFrom(
            ingest_pb2.AlarmReport(
                resource_id=b.text("resource_id"),
                pack_id=b.text("pack_id"),
                code=b.text("code", required=True),
                level=b.choice("level", LEVELS, default=common_pb2.ALARM_LEVEL_WARNING),  # type: ignore[arg-type]
                message=b.text("message", max_len=1000),
                cleared=b.flag("cleared", False),
            )
        )
    else:
        raise SwapError("topic", f"unknown event type {kind[:64]}")
    return event


def _telemetry(station_id: str, b: _Body, when: dt.datetime) -> ingest_pb2.TelemetryBatch:
    sources = b.data.get("sources", [])
    readings = b.data.get("readings", [])
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise SwapError("sources", "must be a list of objects")
    if not isinstance(readings, list) or len(readings) > MAX_READINGS:
        raise SwapError("readings", f"must be a list of at most {MAX_READINGS} readings")
    batch = ingest_pb2.TelemetryBatch(base_time=_stamp(when))
    for i, s in enumerate(sources):
        src = _Body(s)
        try:
            batch.sources.append(
                ingest_pb2.TelemetrySource(
                    station_id=station_id, resource_id=src.text("resource_id"), pack_id=src.text("pack_id")
                )
            )
        except SwapError as error:
            raise SwapError(f"sources[{i}].{error.field}", error.description) from None
    for i, r in enumerate(readings):
        if not isinstance(r, list) or len(r) != 4:
            raise SwapError(f"readings[{i}]", "must be [source_index, metric, offset_ms, value]")
        index, metric, offset, value = r
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(sources):
            raise SwapError(f"readings[{i}][0]", "source_index out of range")
        if metric not in METRICS:
            raise SwapError(f"readings[{i}][1]", f"metric must be one of {sorted(METRICS)}")
        if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 86_400_000:
            raise SwapError(f"readings[{i}][2]", "offset_ms must be an integer within a day")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SwapError(f"readings[{i}][3]", "value must be a finite number")
        if abs(value) > 2**62:
            raise SwapError(f"readings[{i}][3]", "value out of range")
        batch.col_source_index.append(index)
        batch.col_metric.append(METRICS[metric])
        batch.col_offset_ms.append(offset)
        batch.col_int_value.append(round(value))
    return batch


def encode_command(command: ingest_pb2.Command) -> tuple[str, bytes]:
    """The station's command message (topic, JSON bytes); raises SwapError for commands a swap station
    does not take."""
    kind = command.command.WhichOneof("command")
    body: dict[str, Any] = {"command_id": command.command_id, "type": kind}
    if command.HasField("deadline"):
        body["deadline"] = command.deadline.ToDatetime(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")
    if kind == "reserve":
        r = command.command.reserve
        body.update(reservation_id=r.reservation_id, lane=r.lane, pack_id=r.pack_id)
    elif kind == "cancel_reservation":
        body.update(reservation_id=command.command.cancel_reservation.reservation_id)
    elif kind == "withdraw_pack":
        w = command.command.withdraw_pack
        body.update(pack_id=w.pack_id, reason=w.reason)
    elif kind == "change_availability":
        body.update(available=command.command.change_availability.available)
    elif kind == "set_charging_profile":
        periods = command.command.set_charging_profile.profile.periods
        body.update(periods=[[int(p.start_offset.ToTimedelta().total_seconds()), p.limit_w] for p in periods])
    else:
        raise SwapError("command", f"{kind} is not a swap-station command")
    return f"{PREFIX}/{command.station_id}/cmd", json.dumps(body, separators=(",", ":")).encode()
