"""Telemetry's converters: domain values (feed payloads, rows) into fleet.proto messages, and requests in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from voltcloud.api.v1 import fleet_pb2, ordering_pb2
from voltcloud.platform.convert import lat_lng_message
from voltcloud.platform.enums import VehicleStateSource
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.geo import Box, parse_box, parse_position
from voltcloud.platform.limits import to_datetime, to_duration, to_timedelta, to_timestamp
from voltcloud.telemetry.alerts import Limits
from voltcloud.telemetry.frames import TrackRow
from voltcloud.telemetry.models import VehicleAlert
from voltcloud.telemetry.views import alert_detail


def _time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def state_message(payload: dict[str, Any], from_telemetry: bool = True) -> fleet_pb2.VehicleState:
    """A VehicleState from a `store.state_payload` (fed by the feed or read from the table)."""
    lat, lng = payload.get("lat"), payload.get("lng")
    codes = [c.split("=", 1)[0] for c in (payload.get("alarm_codes") or "").split(",") if c]
    source = VehicleStateSource.TELEMETRY if from_telemetry else VehicleStateSource.ORDERS
    message = fleet_pb2.VehicleState(
        vehicle_id=payload["vehicle_id"],
        soc_permille=payload.get("soc") or 0,
        speed_m_per_h=payload.get("speed") or 0,
        odometer_m=payload.get("odometer") or 0,
        charging=bool(payload.get("charging")),
        alarm_level=payload.get("alarm_level") or 0,  # type: ignore[arg-type]
        voltage_mv=payload.get("voltage") or 0,
        current_ma=payload.get("current") or 0,
        max_temperature_milli_c=payload.get("max_temp") or 0,
        fleet_id=payload.get("fleet_id") or "",
        sub_fleet_id=payload.get("sub_fleet_id") or "",
        driver_id=payload.get("driver_id") or "",
        alarm_codes=codes,
        source=int(source),  # type: ignore[arg-type]
        insulation_kohm=payload.get("insulation") or 0,
        version=payload.get("version") or 0,
        has_position=lat is not None and lng is not None,
    )
    if lat is not None and lng is not None:
        message.position.CopyFrom(lat_lng_message(lat / 1e6, lng / 1e6))
    at = _time(payload.get("reading_at"))
    if at is not None:
        message.report_time.CopyFrom(to_timestamp(at))
    return message


def reading_message(row: TrackRow) -> fleet_pb2.TrackReading:
    return fleet_pb2.TrackReading(
        time=to_timestamp(row.time),
        metric=row.metric,  # type: ignore[arg-type]
        raw_value=row.raw_value,
        value=row.value if row.value is not None else 0,
        has_value=row.value is not None,
        flags=row.flags,
        repair=row.repair or "",
        reason=row.reason or "",
    )


def alert_message(row: VehicleAlert) -> fleet_pb2.VehicleAlert:
    return alert_from_payload(
        {
            "id": row.id, "vehicle_id": row.vehicle_id, "fleet_id": row.fleet_id, "kind": row.kind,
            "level": row.level, "open": row.open_key is not None, "opened_at": row.opened_at,
            "cleared_at": row.cleared_at, "message": row.message, "detail": alert_detail(row),
            "driver_id": row.driver_id,
        }
    )  # fmt: skip


def alert_from_payload(p: dict[str, Any]) -> fleet_pb2.VehicleAlert:
    detail: dict[str, Any] = p.get("detail") or {}
    message = fleet_pb2.VehicleAlert(
        alert_id=p["id"],
        vehicle_id=p["vehicle_id"],
        fleet_id=p.get("fleet_id") or "",
        kind=p["kind"],
        level=p["level"],
        open=bool(p.get("open")),
        message=p.get("message") or "",
        speed_m_per_h=int(detail.get("speed_m_per_h", 0)),
        limit=int(detail.get("limit", 0)),
        soc_permille=int(detail.get("soc_permille", 0)),
        code=str(detail.get("code", "")),
        driver_id=p.get("driver_id") or "",
    )
    opened, cleared = _time(p.get("opened_at")), _time(p.get("cleared_at"))
    if opened is not None:
        message.open_time.CopyFrom(to_timestamp(opened))
    if cleared is not None:
        message.clear_time.CopyFrom(to_timestamp(cleared))
    if "driving_s" in detail:
        message.driving.CopyFrom(to_duration(float(detail["driving_s"])))
    hint = detail.get("power_up")
    if hint:
        message.power_up.CopyFrom(_hint(hint))
    return message


def _hint(h: dict[str, Any]) -> fleet_pb2.PowerUpHint:
    quote = ordering_pb2.QuotePowerUpRequest(
        vehicle_id=h["vehicle_id"],
        position=lat_lng_message(h["lat"], h["lng"]),
        soc_permille=h["soc_permille"],
        target_soc_permille=h["target_soc_permille"],
        allowed_modes=[h["mode"]],
        station_ids=[h["station_id"]] if h["station_id"] else [],
    )
    return fleet_pb2.PowerUpHint(
        mode=h["mode"],
        station_id=h["station_id"],
        distance_m=h["distance_m"],
        eta=to_duration(float(h["eta_s"])),
        arrival_soc_permille=h["arrival_soc_permille"],
        quote_request=quote,
    )


def window(request: fleet_pb2.GetVehicleTrackRequest) -> tuple[dt.datetime, dt.datetime]:
    if not request.HasField("window"):
        raise InvalidArgument.for_field("window", "is required")
    return to_datetime(request.window.start, "window.start"), to_datetime(request.window.end, "window.end")


def bounds(request: fleet_pb2.WatchVehiclesRequest) -> Box | None:
    if not request.HasField("bounds"):
        return None
    b = request.bounds
    sw = parse_position("bounds.south_west", b.south_west.lat, b.south_west.lng)
    ne = parse_position("bounds.north_east", b.north_east.lat, b.north_east.lng)
    return parse_box("bounds", sw, ne)


def limits_value(request: fleet_pb2.SetFleetAlertLimitsRequest) -> Limits:
    m = request.limits
    return Limits(
        speed_m_per_h=m.speed_limit_m_per_h,
        fatigue_drive=to_timedelta(m.fatigue_driving, "limits.fatigue_driving"),
        fatigue_rest=to_timedelta(m.fatigue_rest, "limits.fatigue_rest"),
        low_soc_permille=m.low_soc_permille,
    )


def limits_message(limits: Limits) -> fleet_pb2.FleetAlertLimits:
    return fleet_pb2.FleetAlertLimits(
        speed_limit_m_per_h=limits.speed_m_per_h,
        fatigue_driving=to_duration(limits.fatigue_drive.total_seconds()),
        fatigue_rest=to_duration(limits.fatigue_rest.total_seconds()),
        low_soc_permille=limits.low_soc_permille,
    )
