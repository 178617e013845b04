"""Stations' converters: request messages -> domain values and domain views -> response messages. Only the
shape of a request is checked here (required fields, known enum numbers, ranges a message field can break);
what a value may be against the engine and the tenant is the registry's and the packs' business."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from voltcloud.api.v1 import common_pb2, stations_pb2
from voltcloud.platform.auth import Principal
from voltcloud.platform.convert import lat_lng_message
from voltcloud.platform.errors import FieldViolation, InvalidArgument
from voltcloud.platform.geo import parse_box, parse_position
from voltcloud.platform.limits import optional_datetime, to_duration, to_timedelta, to_timestamp
from voltcloud.stations import commands, packs, registry
from voltcloud.stations.models import Operator, PackEvent, StationSession
from voltcloud.stations.twin import Twin

_KINDS = frozenset(common_pb2.StationKind.values()) - {common_pb2.STATION_KIND_UNSPECIFIED}
_STANDARDS = frozenset(common_pb2.ConnectorStandard.values()) - {common_pb2.CONNECTOR_STANDARD_UNSPECIFIED}


def station_message(view: registry.StationView) -> stations_pb2.Station:
    s = view.station
    message = stations_pb2.Station(
        station_id=s.id,
        operator_id=s.operator_id,
        kind=s.kind,  # type: ignore[arg-type]
        name=s.name,
        position=lat_lng_message(s.lat, s.lng),
        time_zone=s.timezone,
        address=s.address,
        gateway_id=s.gateway_id or "",
        enabled=s.enabled,
        version=s.version,
    )
    if s.kind == common_pb2.STATION_KIND_SWAP:
        message.swap.CopyFrom(
            stations_pb2.SwapStationSpec(
                lane_count=s.lanes,
                slot_count=s.slot_count,
                swap_duration=to_duration(s.swap_time_s),
                charging_power_cap_w=s.power_cap_w,
            )
        )
    else:
        chargers: dict[int, stations_pb2.Charger] = {}
        for c in view.connectors:
            charger = chargers.setdefault(
                c.charger_no,
                stations_pb2.Charger(
                    charger_id=f"{s.id}-c{c.charger_no}", charge_point_identity=f"{s.id}-c{c.charger_no}"
                ),
            )
            charger.max_power_w = max(charger.max_power_w, c.max_power_w)
            charger.connectors.append(
                stations_pb2.Connector(
                    connector_id=c.id,
                    standard=c.standard,  # type: ignore[arg-type]
                    max_power_w=c.max_power_w,
                    ocpp_connector_number=c.connector_no,
                )
            )
        message.charging.CopyFrom(
            stations_pb2.ChargingStationSpec(chargers=list(chargers.values()), site_power_cap_w=s.power_cap_w)
        )
    return message


def station_filter(request: stations_pb2.ListStationsRequest) -> registry.StationFilter:
    if request.kind and request.kind not in _KINDS:
        raise InvalidArgument.for_field("kind", f"unknown station kind {request.kind}")
    unknown = [s for s in request.connector_standards if s not in _STANDARDS]
    if unknown:
        raise InvalidArgument.for_field("connector_standards", f"unknown connector standards {unknown}")
    box = None
    if request.HasField("bbox"):
        sw, ne = request.bbox.south_west, request.bbox.north_east
        box = parse_box(
            "bbox",
            parse_position("bbox.south_west", sw.lat, sw.lng),
            parse_position("bbox.north_east", ne.lat, ne.lng),
        )
    return registry.StationFilter(
        operator_id=request.operator_id or None,
        kind=request.kind or None,
        box=box,
        connector_standards=frozenset(request.connector_standards),
    )


def twin_message(twin: Twin) -> stations_pb2.StationTwin:
    message = stations_pb2.StationTwin(
        station_id=twin.station_id,
        online=twin.online,
        site_power_w=twin.site_power_w,
        queue_length=twin.queue_length,
        revision=twin.revision,
        last_heartbeat_time=to_timestamp(twin.last_heartbeat),
        update_time=to_timestamp(twin.update_time),
    )
    for c in sorted(twin.connectors.values(), key=lambda c: c.connector_id):
        message.connectors.append(
            stations_pb2.ConnectorState(
                connector_id=c.connector_id,
                status=c.status if twin.online else common_pb2.CONNECTOR_STATUS_OFFLINE,  # type: ignore[arg-type]
                session_id=c.session_id,
                reservation_id=c.reservation_id,
                power_w=c.power_w,
                session_energy_wh=c.session_energy_wh,
                error_code=c.error_code,
                status_time=to_timestamp(c.status_time),
            )
        )
    for slot in sorted(twin.slots.values(), key=lambda s: s.slot):
        message.slots.append(
            stations_pb2.SlotState(
                slot=slot.slot,
                pack_id=slot.pack_id,
                soc_permille=slot.soc_permille,
                pack_state=slot.pack_state,  # type: ignore[arg-type]
                power_w=slot.power_w,
            )
        )
    for lane in sorted(twin.lanes.values(), key=lambda lane: lane.lane):
        message.lanes.append(
            stations_pb2.LaneState(
                lane=lane.lane,
                busy=lane.busy,
                session_id=lane.session_id,
                vehicle_id=lane.vehicle_id,
                reservation_id=lane.reservation_id,
            )
        )
    for type_id, n in twin.ready_packs_by_type().items():
        message.ready_packs_by_type[type_id] = n
    return message


def pack_message(view: packs.PackView) -> stations_pb2.Pack:
    p = view.pack
    message = stations_pb2.Pack(
        pack_id=p.id,
        pack_type_id=str(p.pack_type_id),
        capacity_wh=view.pack_type.capacity_wh if view.pack_type else 0,
        chemistry=view.pack_type.chemistry if view.pack_type else "",
        state=p.state,  # type: ignore[arg-type]
        soc_permille=p.soc_permille,
        soh_permille=p.soh_permille,
        cycle_count=p.cycles,
        temperature_milli_c=p.temperature_milli_c,
        location=_location(p.station_id, p.slot_no, p.vehicle_id, p.transit_id),
        operator_id=view.operator_id,
        version=p.version,
        update_time=to_timestamp(view.update_time),
    )
    return message


def _location(
    station_id: str | None, slot_no: int | None, vehicle_id: str | None, transit_id: str | None
) -> stations_pb2.PackLocation:
    if station_id:
        return stations_pb2.PackLocation(
            station_slot=stations_pb2.StationSlot(station_id=station_id, slot=slot_no or 0)
        )
    if vehicle_id:
        return stations_pb2.PackLocation(vehicle_id=vehicle_id)
    if transit_id:
        return stations_pb2.PackLocation(transit_id=transit_id)
    return stations_pb2.PackLocation()


def history_message(e: PackEvent) -> stations_pb2.PackHistoryEntry:
    return stations_pb2.PackHistoryEntry(
        time=to_timestamp(e.time),
        state=e.state,  # type: ignore[arg-type]
        location=_location(e.station_id, e.slot_no, e.vehicle_id, e.transit_id),
        soc_permille=e.soc_permille,
        soh_permille=e.soh_permille,
        temperature_milli_c=e.temperature_milli_c,
        reason=e.reason,
        session_id=e.session_id or "",
        actor=common_pb2.Actor(subject_id=e.actor_subject, role=e.actor_role),  # type: ignore[arg-type]
    )


def session_message(row: StationSession) -> stations_pb2.StationSession:
    return stations_pb2.StationSession(
        session_id=row.id,
        station_id=row.station_id,
        kind=row.kind,  # type: ignore[arg-type]
        external_id=row.external_id,
        connector_id=row.connector_id or "",
        lane=row.lane,
        vehicle_id=row.vehicle_id or "",
        order_id=row.order_id or "",
        id_tag=row.id_tag or "",
        meter_start_wh=row.meter_start_wh,
        meter_stop_wh=row.meter_stop_wh,
        energy_wh=row.energy_wh,
        pack_out_id=row.pack_out_id or "",
        pack_in_id=row.pack_in_id or "",
        start_time=to_timestamp(row.started_at),
        end_time=to_timestamp(row.ended_at),
        reason=row.reason,
        ended=row.ended_at is not None,
    )


_PERMILLE_FIELDS = ("soc_permille", "soh_permille")
_DEFECTS = frozenset(stations_pb2.DefectKind.values()) - {stations_pb2.DEFECT_KIND_UNSPECIFIED}
_LEVELS = frozenset(common_pb2.AlarmLevel.values()) - {common_pb2.ALARM_LEVEL_UNSPECIFIED}
_PACK_STATES = frozenset(common_pb2.PackState.values()) - {common_pb2.PACK_STATE_UNSPECIFIED}
DEFAULT_COMMAND_TIMEOUT = dt.timedelta(seconds=30)
MAX_COMMAND_TIMEOUT = dt.timedelta(minutes=5)
CONNECTOR_COMMANDS = {
    "remote_start": "remote_start.connector_id",
    "reserve": "reserve.connector_id",
    "unlock_connector": "unlock_connector.connector_id",
    "change_availability": "change_availability.connector_id",
    "set_charging_profile": "set_charging_profile.connector_id",
}


def station_spec(message: stations_pb2.Station, field: str, *, creating: bool) -> registry.StationSpec:
    violations: list[FieldViolation] = []
    if creating:
        if not message.operator_id:
            violations.append(FieldViolation(f"{field}.operator_id", "is required"))
        if message.kind not in _KINDS:
            violations.append(FieldViolation(f"{field}.kind", "must be SWAP or CHARGING"))
        if not message.name.strip():
            violations.append(FieldViolation(f"{field}.name", "is required"))
        if not message.HasField("position"):
            violations.append(FieldViolation(f"{field}.position", "is required"))
    if len(message.name) > 200:
        violations.append(FieldViolation(f"{field}.name", "is longer than 200 characters"))
    if violations:
        raise InvalidArgument.for_fields(violations)
    lat, lng = message.position.lat, message.position.lng
    if message.HasField("position"):
        parse_position(f"{field}.position", lat, lng)
    connectors: list[registry.ConnectorSpec] = []
    lanes = slots = swap_s = 0
    power = 0
    if message.HasField("swap"):
        lanes, slots = message.swap.lane_count, message.swap.slot_count
        swap_s, power = message.swap.swap_duration.seconds, message.swap.charging_power_cap_w
    if message.HasField("charging"):
        power = message.charging.site_power_cap_w
        for ci, charger in enumerate(message.charging.chargers):
            for ki, c in enumerate(charger.connectors):
                path = f"{field}.charging.chargers[{ci}].connectors[{ki}]"
                if c.standard not in _STANDARDS:
                    raise InvalidArgument.for_field(f"{path}.standard", f"unknown connector standard {c.standard}")
                if c.max_power_w <= 0:
                    raise InvalidArgument.for_field(f"{path}.max_power_w", "must be positive")
                connectors.append(
                    registry.ConnectorSpec(ci + 1, c.ocpp_connector_number or ki + 1, c.standard, c.max_power_w, ki)
                )
    if creating and message.kind == common_pb2.STATION_KIND_SWAP and message.HasField("charging"):
        raise InvalidArgument.for_field(f"{field}.charging", "a swap station has no chargers")
    # The engine cannot serve a swap station without lanes, nor lanes on a charging station; the values
    # themselves are checked against the engine's limits by the registry.
    if creating and message.kind == common_pb2.STATION_KIND_SWAP and not message.HasField("swap"):
        raise InvalidArgument.for_field(f"{field}.swap", "is required for a swap station (lane_count, swap_duration)")
    if creating and message.kind == common_pb2.STATION_KIND_CHARGING and message.HasField("swap"):
        raise InvalidArgument.for_field(f"{field}.swap", "a charging station has no swap block")
    if power < 0:
        raise InvalidArgument.for_field(f"{field}.power_cap_w", "must not be negative")
    return registry.StationSpec(
        operator_id=message.operator_id,
        kind=message.kind,
        name=message.name.strip(),
        lat=lat,
        lng=lng,
        timezone=message.time_zone,
        address=message.address,
        power_cap_w=power,
        lanes=lanes,
        slot_count=slots,
        swap_time_s=swap_s,
        enabled=message.enabled if not creating else True,
        gateway_id=message.gateway_id or None,
        connectors=tuple(connectors),
    )


def command_timeout(request: stations_pb2.SendStationCommandRequest) -> dt.timedelta:
    if not request.station_id:
        raise InvalidArgument.for_field("station_id", "is required")
    kind = request.command.WhichOneof("command")
    if kind is None:
        raise InvalidArgument.for_field("command", "exactly one command kind must be set")
    body = getattr(request.command, kind)
    if kind in ("remote_start", "unlock_connector") and not body.connector_id:
        raise InvalidArgument.for_field(CONNECTOR_COMMANDS[kind], "is required")
    if kind == "remote_start" and not body.id_tag:
        raise InvalidArgument.for_field("command.remote_start.id_tag", "is required")
    if kind == "remote_stop" and not body.session_id:
        raise InvalidArgument.for_field("command.remote_stop.session_id", "is required")
    if kind in ("reserve", "cancel_reservation") and not body.reservation_id:
        raise InvalidArgument.for_field(f"command.{kind}.reservation_id", "is required")
    if kind == "set_charging_profile" and not body.profile.periods:
        raise InvalidArgument.for_field("command.set_charging_profile.profile.periods", "needs at least one period")
    if kind == "withdraw_pack" and not body.pack_id:
        raise InvalidArgument.for_field("command.withdraw_pack.pack_id", "is required")
    timeout = DEFAULT_COMMAND_TIMEOUT
    if request.HasField("timeout"):
        timeout = to_timedelta(request.timeout, "timeout")
        if timeout <= dt.timedelta(0) or timeout > MAX_COMMAND_TIMEOUT:
            raise InvalidArgument.for_field("timeout", "must be between 0 and 300 seconds")
    return timeout


def operator_fields(request: stations_pb2.CreateOperatorRequest) -> tuple[str, str, str]:
    """The new operator's name, country and currency, trimmed and upper-cased."""
    violations = []
    if not request.name.strip():
        violations.append(FieldViolation("name", "is required"))
    if request.country and (len(request.country) != 2 or not request.country.isalpha()):
        violations.append(FieldViolation("country", "must be an ISO 3166-1 alpha-2 code"))
    if request.currency and (len(request.currency) != 3 or not request.currency.isalpha()):
        violations.append(FieldViolation("currency", "must be an ISO 4217 code"))
    if violations:
        raise InvalidArgument.for_fields(violations)
    return request.name.strip(), request.country.upper(), request.currency.upper()


def operator_message(op: Operator) -> stations_pb2.Operator:
    return stations_pb2.Operator(
        operator_id=op.id,
        name=op.name,
        country=op.country,
        currency=op.currency,
        create_time=to_timestamp(op.created_at),
    )


def new_station(request: stations_pb2.CreateStationRequest) -> registry.StationSpec:
    if not request.HasField("station"):
        raise InvalidArgument.for_field("station", "is required")
    return station_spec(request.station, "station", creating=True)


def station_update(request: stations_pb2.UpdateStationRequest) -> tuple[frozenset[str], registry.StationSpec]:
    """The paths to update (all mutable ones when none are named) and the new values."""
    if not request.station.station_id:
        raise InvalidArgument.for_field("station.station_id", "is required")
    if not request.station.version:
        raise InvalidArgument.for_field("station.version", "is required (the version you read)")
    paths = frozenset(request.update_paths) or registry.MUTABLE_PATHS
    unknown = sorted(paths - registry.MUTABLE_PATHS)
    if unknown:
        raise InvalidArgument.for_field(
            "update_paths", f"cannot update {unknown}; mutable: {sorted(registry.MUTABLE_PATHS)}"
        )
    spec = station_spec(request.station, "station", creating=False)
    if "name" in paths and not spec.name:
        raise InvalidArgument.for_field("station.name", "must not be empty")
    return paths, spec


def new_pack(request: stations_pb2.RegisterPackRequest, principal: Principal) -> packs.NewPack:
    p = request.pack
    violations = []
    if not p.pack_id:
        violations.append(FieldViolation("pack.pack_id", "is required"))
    elif len(p.pack_id) > 64:
        violations.append(FieldViolation("pack.pack_id", "is longer than 64 characters"))
    if not p.pack_type_id.isdigit():
        violations.append(FieldViolation("pack.pack_type_id", "must be a pack type id (a number)"))
    for name in _PERMILLE_FIELDS:
        if not 0 <= getattr(p, name) <= 1000:
            violations.append(FieldViolation(f"pack.{name}", "must be 0..1000"))
    if p.cycle_count < 0:
        violations.append(FieldViolation("pack.cycle_count", "must not be negative"))
    # An operator's staff register packs for their own operator unless they name it.
    operator_id = p.operator_id or (principal.tenant.id if principal.tenant else "")
    if not operator_id:
        violations.append(FieldViolation("pack.operator_id", "is required"))
    if violations:
        raise InvalidArgument.for_fields(violations)
    where = p.location.WhichOneof("where")
    return packs.NewPack(
        pack_id=p.pack_id,
        pack_type_id=int(p.pack_type_id),
        operator_id=operator_id,
        station_id=p.location.station_slot.station_id if where == "station_slot" else None,
        slot_no=p.location.station_slot.slot or None if where == "station_slot" else None,
        vehicle_id=p.location.vehicle_id if where == "vehicle_id" else None,
        soc_permille=p.soc_permille,
        soh_permille=p.soh_permille or 1000,
        cycles=p.cycle_count,
        temperature_milli_c=p.temperature_milli_c or 25000,
    )


def pack_id(request: stations_pb2.GetPackRequest | stations_pb2.GetPackHistoryRequest) -> str:
    if not request.pack_id:
        raise InvalidArgument.for_field("pack_id", "is required")
    return request.pack_id


def pack_filter(request: stations_pb2.ListPacksRequest) -> packs.PackFilter:
    bad = [s for s in request.states if s not in _PACK_STATES]
    if bad:
        raise InvalidArgument.for_field("states", f"unknown pack states {bad}")
    if request.pack_type_id and not request.pack_type_id.isdigit():
        raise InvalidArgument.for_field("pack_type_id", "must be a pack type id (a number)")
    if not 0 <= request.max_soh_permille <= 1000:
        raise InvalidArgument.for_field("max_soh_permille", "must be 0..1000")
    return packs.PackFilter(
        operator_id=request.operator_id or None,
        station_id=request.station_id or None,
        states=list(request.states),
        pack_type_id=int(request.pack_type_id) if request.pack_type_id else None,
        max_soh_permille=request.max_soh_permille,
    )


def history_range(request: stations_pb2.GetPackHistoryRequest) -> tuple[dt.datetime | None, dt.datetime | None]:
    start = optional_datetime(request, "start_time")
    end = optional_datetime(request, "end_time")
    if start and end and end <= start:
        raise InvalidArgument.for_field("end_time", "must be after start_time")
    return start, end


@dataclass(frozen=True)
class InspectionReport:
    """An inspection as reported; the station is resolved against the pack by the domain."""

    pack_id: str
    station_id: str
    defect: int
    level: int
    notes: str
    attachment_uris: list[str]
    inspected_at: dt.datetime | None


def inspection_report(request: stations_pb2.ReportInspectionRequest) -> InspectionReport:
    violations = []
    if not request.pack_id:
        violations.append(FieldViolation("pack_id", "is required"))
    if request.defect not in _DEFECTS:
        violations.append(FieldViolation("defect", "is required (DEFECT_KIND_NONE when the pack passed)"))
    if request.level and request.level not in _LEVELS:
        violations.append(FieldViolation("level", f"unknown alarm level {request.level}"))
    if violations:
        raise InvalidArgument.for_fields(violations)
    return InspectionReport(
        pack_id=request.pack_id,
        station_id=request.station_id,
        defect=request.defect,
        level=request.level or common_pb2.ALARM_LEVEL_MAJOR,
        notes=request.notes,
        attachment_uris=list(request.attachment_uris),
        inspected_at=optional_datetime(request, "inspect_time"),
    )


def inspection_response(
    outcome: packs.InspectionOutcome, report: InspectionReport, principal: Principal, pack: stations_pb2.Pack
) -> stations_pb2.ReportInspectionResponse:
    i = outcome.inspection
    return stations_pb2.ReportInspectionResponse(
        inspection=stations_pb2.Inspection(
            inspection_id=i.id,
            pack_id=i.pack_id,
            station_id=i.station_id or "",
            defect=i.defect,  # type: ignore[arg-type]
            level=i.level,  # type: ignore[arg-type]
            notes=i.notes,
            attachment_uris=report.attachment_uris,
            inspect_time=to_timestamp(i.inspected_at),
            inspector=common_pb2.Actor(
                subject_id=principal.subject,
                role=int(principal.role),  # type: ignore[arg-type]
                tenant_id=principal.tenant.id if principal.tenant else "",
            ),
            quarantined=i.quarantined,
            alarm_id=i.alarm_id or "",
        ),
        pack=pack,
    )


def command_request(request: stations_pb2.SendStationCommandRequest) -> commands.CommandRequest:
    kind = request.command.WhichOneof("command") or ""
    body = getattr(request.command, kind)
    return commands.CommandRequest(
        station_id=request.station_id,
        kind=kind,
        payload=request.command.SerializeToString(),
        connector_id=getattr(body, "connector_id", "") if kind in CONNECTOR_COMMANDS else "",
        connector_field=CONNECTOR_COMMANDS.get(kind, ""),
        stop_session_id=body.session_id if kind == "remote_stop" else "",
        withdraw_pack_id=body.pack_id if kind == "withdraw_pack" else "",
    )


def command_to_station(command: stations_pb2.StationCommand, external_id: str | None) -> stations_pb2.StationCommand:
    """The command as the gateway gets it: a remote_stop names the station's own session id when known."""
    if external_id is None:
        return command
    sent = stations_pb2.StationCommand()
    sent.CopyFrom(command)
    sent.remote_stop.session_id = external_id
    return sent
