"""StationService servicer: parses requests, calls the registry, builds responses. No rules here."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, Protocol

from voltcloud.api.v1 import common_pb2, stations_pb2, stations_pb2_grpc
from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import FieldViolation, InvalidArgument, NotFound
from voltcloud.platform.geo import parse_box, parse_position
from voltcloud.platform.ids import new_id
from voltcloud.platform.limits import optional_datetime, to_duration, to_timedelta, to_timestamp
from voltcloud.platform.paging import Page, next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.stations import packs, registry, sessions
from voltcloud.stations.commands import CommandResult
from voltcloud.stations.models import Pack, PackEvent, Station, StationCommandRecord, StationSession
from voltcloud.stations.ports import Settlement
from voltcloud.stations.twin import Twin, TwinStore

_KINDS = frozenset(common_pb2.StationKind.values()) - {common_pb2.STATION_KIND_UNSPECIFIED}
_STANDARDS = frozenset(common_pb2.ConnectorStandard.values()) - {common_pb2.CONNECTOR_STANDARD_UNSPECIFIED}


def station_message(view: registry.StationView) -> stations_pb2.Station:
    s = view.station
    message = stations_pb2.Station(
        station_id=s.id,
        operator_id=s.operator_id,
        kind=s.kind,  # type: ignore[arg-type]
        name=s.name,
        position=common_pb2.LatLng(lat=s.lat, lng=s.lng),
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


def _filters(request: stations_pb2.ListStationsRequest) -> registry.StationFilter:
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


def _spec(message: stations_pb2.Station, field: str, *, creating: bool) -> registry.StationSpec:
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


def _check_command(request: stations_pb2.SendStationCommandRequest) -> dt.timedelta:
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


def _page_after_int(page: Page) -> Page:
    return page


def _require_operator_scope(principal: Principal, station: Station) -> None:
    if principal.role is not Role.PLATFORM_ADMIN:
        principal.require_tenant("operator", station.operator_id)


class LiveTwins(Protocol):
    """The live twins and command routes of stations, kept by the gateway hub (`ingest.hub.Hub`, wired by
    server.py): ingest sits above stations, so the servicer gets it rather than importing it."""

    @property
    def clock(self) -> Clock: ...

    @property
    def twins(self) -> TwinStore: ...

    async def twin(self, station_id: str) -> Twin: ...

    def forget(self, station_id: str) -> None: ...

    async def send_command(
        self,
        station_id: str,
        command: stations_pb2.StationCommand,
        answer_within: dt.timedelta,
        command_id: str | None = None,
    ) -> CommandResult: ...  # the command is passed through to the gateway as is


class StationServicer(stations_pb2_grpc.StationServiceServicer):
    def __init__(self, db: Database, hub: LiveTwins, settlement: Settlement) -> None:
        self._db = db
        self.hub = hub
        self._settlement = settlement

    def _now(self) -> dt.datetime:
        return self.hub.clock.now()

    async def GetStation(
        self, request: stations_pb2.GetStationRequest, context: Any
    ) -> stations_pb2.GetStationResponse:
        if not request.station_id:
            raise InvalidArgument.for_field("station_id", "is required")
        async with self._db.transaction() as session:
            view = await registry.get_station(session, current_principal(), request.station_id)
        return stations_pb2.GetStationResponse(station=station_message(view))

    async def ListStations(
        self, request: stations_pb2.ListStationsRequest, context: Any
    ) -> stations_pb2.ListStationsResponse:
        page = parse_page(request.page_size, request.page_token)
        filters = _filters(request)
        async with self._db.transaction() as session:
            views = await registry.list_stations(session, current_principal(), filters, page)
        last = views[-1].station.id if views else None
        return stations_pb2.ListStationsResponse(
            stations=[station_message(v) for v in views], next_page_token=next_page_token(last, len(views), page)
        )

    async def CreateOperator(
        self, request: stations_pb2.CreateOperatorRequest, context: Any
    ) -> stations_pb2.CreateOperatorResponse:
        principal = current_principal()
        violations = []
        if not request.name.strip():
            violations.append(FieldViolation("name", "is required"))
        if request.country and (len(request.country) != 2 or not request.country.isalpha()):
            violations.append(FieldViolation("country", "must be an ISO 3166-1 alpha-2 code"))
        if request.currency and (len(request.currency) != 3 or not request.currency.isalpha()):
            violations.append(FieldViolation("currency", "must be an ISO 4217 code"))
        if violations:
            raise InvalidArgument.for_fields(violations)
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "CreateOperator", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.CreateOperatorResponse.FromString)) is not None:
                return replay
            op = await registry.create_operator(
                session,
                principal,
                self._now(),
                name=request.name.strip(),
                country=request.country.upper(),
                currency=request.currency.upper(),
            )
            response = stations_pb2.CreateOperatorResponse(
                operator=stations_pb2.Operator(
                    operator_id=op.id,
                    name=op.name,
                    country=op.country,
                    currency=op.currency,
                    create_time=to_timestamp(op.created_at),
                )
            )
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def CreateStation(
        self, request: stations_pb2.CreateStationRequest, context: Any
    ) -> stations_pb2.CreateStationResponse:
        principal = current_principal()
        if not request.HasField("station"):
            raise InvalidArgument.for_field("station", "is required")
        spec = _spec(request.station, "station", creating=True)
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "CreateStation", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.CreateStationResponse.FromString)) is not None:
                return replay
            view = await registry.create_station(session, principal, spec)
            response = stations_pb2.CreateStationResponse(station=station_message(view))
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def UpdateStation(
        self, request: stations_pb2.UpdateStationRequest, context: Any
    ) -> stations_pb2.UpdateStationResponse:
        principal = current_principal()
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
        spec = _spec(request.station, "station", creating=False)
        if "name" in paths and not spec.name:
            raise InvalidArgument.for_field("station.name", "must not be empty")
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "UpdateStation", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.UpdateStationResponse.FromString)) is not None:
                return replay
            view = await registry.update_station(
                session, principal, request.station.station_id, request.station.version, paths, spec
            )
            response = stations_pb2.UpdateStationResponse(station=station_message(view))
            await idempotency.complete(session, claim, response.SerializeToString())
        if paths & {"lane_count", "slot_count"}:
            self.hub.forget(request.station.station_id)
        return response

    async def _visible_twin(self, station_id: str) -> Twin:
        if not station_id:
            raise InvalidArgument.for_field("station_id", "is required")
        async with self._db.transaction() as session:
            await registry.get_station(session, current_principal(), station_id)
        twin = await self.hub.twin(station_id)
        self.hub.twins.refresh_online(twin)
        return twin

    async def GetStationTwin(
        self, request: stations_pb2.GetStationTwinRequest, context: Any
    ) -> stations_pb2.GetStationTwinResponse:
        twin = await self._visible_twin(request.station_id)
        return stations_pb2.GetStationTwinResponse(twin=twin_message(twin))

    async def WatchStation(
        self, request: stations_pb2.WatchStationRequest, context: Any
    ) -> AsyncIterator[stations_pb2.WatchStationResponse]:
        if request.after_revision < 0:
            raise InvalidArgument.for_field("after_revision", "must not be negative")
        twin = await self._visible_twin(request.station_id)
        last = request.after_revision
        change = twin.changes_since(last) if last else None
        if change is None or last > twin.revision:
            yield stations_pb2.WatchStationResponse(twin=twin_message(twin), snapshot=True)
        elif twin.revision > last:
            yield stations_pb2.WatchStationResponse(
                twin=twin_message(twin),
                changed_connector_ids=sorted(change.connectors),
                changed_slots=sorted(change.slots),
            )
        last = twin.revision
        while True:
            woken = twin.changed
            if twin.revision == last:
                try:
                    await asyncio.wait_for(woken.wait(), self.hub.twins.seconds_until_stale(twin))
                except TimeoutError:
                    self.hub.twins.refresh_online(twin)
            current = self.hub.twins.get(request.station_id)
            if current is not twin:
                twin = await self.hub.twin(request.station_id)
                last = twin.revision
                yield stations_pb2.WatchStationResponse(twin=twin_message(twin), snapshot=True)
                continue
            if twin.revision == last:
                continue
            change = twin.changes_since(last)
            last = twin.revision
            if change is None:
                yield stations_pb2.WatchStationResponse(twin=twin_message(twin), snapshot=True)
            else:
                yield stations_pb2.WatchStationResponse(
                    twin=twin_message(twin),
                    changed_connector_ids=sorted(change.connectors),
                    changed_slots=sorted(change.slots),
                )

    async def AssignRateModel(
        self, request: stations_pb2.AssignRateModelRequest, context: Any
    ) -> stations_pb2.AssignRateModelResponse:
        principal = current_principal()
        effective = optional_datetime(request, "effective_time")
        async with self._db.transaction("stations.assign_rate_model") as session:
            claim = await idempotency.claim_request(
                session, "AssignRateModel", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.AssignRateModelResponse.FromString)) is not None:
                return replay
            assignment_id = await registry.assign_rate_model(
                session,
                principal,
                station_id=request.station_id,
                rate_model_id=request.rate_model_id,
                customer_account_id=request.customer_account_id,
                fleet_id=request.fleet_id,
                effective_from=effective,
                settlement=self._settlement,
            )
            response = stations_pb2.AssignRateModelResponse(
                assignment_id=assignment_id, station_id=request.station_id, rate_model_id=request.rate_model_id
            )
            response.effective_time.CopyFrom(to_timestamp(effective or self._now()))
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def SendStationCommand(
        self, request: stations_pb2.SendStationCommandRequest, context: Any
    ) -> stations_pb2.SendStationCommandResponse:
        principal = current_principal()
        timeout = _check_command(request)
        kind = request.command.WhichOneof("command") or ""
        command_id = new_id("cmd")
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "SendStationCommand", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.SendStationCommandResponse.FromString)) is not None:
                return replay
            view = await registry.get_station(session, principal, request.station_id)
            _require_operator_scope(principal, view.station)
            connector_field = CONNECTOR_COMMANDS.get(kind)
            connector_id = getattr(getattr(request.command, kind), "connector_id", "") if connector_field else ""
            if connector_id and connector_id not in {c.id for c in view.connectors}:
                raise InvalidArgument.for_field(
                    f"command.{connector_field}", f"connector {connector_id} is not on station {request.station_id}"
                )
            command = request.command
            if kind == "remote_stop":
                # The platform names its own session; the gateway knows the station's (OCPP transaction) id.
                running_session = await session.get(StationSession, command.remote_stop.session_id)
                if running_session is not None and running_session.station_id == request.station_id:
                    command = stations_pb2.StationCommand()
                    command.CopyFrom(request.command)
                    command.remote_stop.session_id = running_session.external_id
            if kind == "withdraw_pack" and await session.get(Pack, request.command.withdraw_pack.pack_id) is None:
                raise NotFound(f"pack {request.command.withdraw_pack.pack_id} not found")
            session.add(
                StationCommandRecord(
                    id=command_id,
                    station_id=request.station_id,
                    kind=kind,
                    payload=request.command.SerializeToString(),
                    requested_by=principal.subject,
                    created_at=self._now(),
                )
            )
        try:
            answer = await self.hub.send_command(request.station_id, command, timeout, command_id)
        except BaseException:  # cancelled: free the key, or its retries would be ABORTED for ever
            async with self._db.transaction() as session:
                await idempotency.abandon(session, claim)
            raise
        result = stations_pb2.StationCommandResult(
            command_id=answer.command_id,
            status=answer.status,  # type: ignore[arg-type]
            detail=answer.detail,
            result_time=to_timestamp(answer.result_time),
        )
        response = stations_pb2.SendStationCommandResponse(command_id=command_id, result=result)
        async with self._db.transaction() as session:
            record = await session.get(StationCommandRecord, command_id)
            if record is not None:
                record.status = result.status
                record.detail = result.detail[:500]
                record.result_at = self._now()
                session.add(record)
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def RegisterPack(
        self, request: stations_pb2.RegisterPackRequest, context: Any
    ) -> stations_pb2.RegisterPackResponse:
        principal = current_principal()
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
        operator_id = p.operator_id or (principal.tenant.id if principal.tenant else "")
        if not operator_id:
            violations.append(FieldViolation("pack.operator_id", "is required"))
        if violations:
            raise InvalidArgument.for_fields(violations)
        where = p.location.WhichOneof("where")
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "RegisterPack", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.RegisterPackResponse.FromString)) is not None:
                return replay
            pack = await packs.register_pack(
                session,
                principal,
                self._now(),
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
            await session.flush()
            response = stations_pb2.RegisterPackResponse(pack=pack_message(await packs.view(session, pack)))
            await idempotency.complete(session, claim, response.SerializeToString())
        if pack.station_id:
            self.hub.forget(pack.station_id)
        return response

    async def GetPack(self, request: stations_pb2.GetPackRequest, context: Any) -> stations_pb2.GetPackResponse:
        if not request.pack_id:
            raise InvalidArgument.for_field("pack_id", "is required")
        async with self._db.transaction() as session:
            pack = await packs.load_pack(session, current_principal(), request.pack_id)
            return stations_pb2.GetPackResponse(pack=pack_message(await packs.view(session, pack)))

    async def ListPacks(self, request: stations_pb2.ListPacksRequest, context: Any) -> stations_pb2.ListPacksResponse:
        page = parse_page(request.page_size, request.page_token)
        bad = [s for s in request.states if s not in _PACK_STATES]
        if bad:
            raise InvalidArgument.for_field("states", f"unknown pack states {bad}")
        if request.pack_type_id and not request.pack_type_id.isdigit():
            raise InvalidArgument.for_field("pack_type_id", "must be a pack type id (a number)")
        if not 0 <= request.max_soh_permille <= 1000:
            raise InvalidArgument.for_field("max_soh_permille", "must be 0..1000")
        async with self._db.transaction() as session:
            rows = await packs.list_packs(
                session,
                current_principal(),
                page,
                operator_id=request.operator_id or None,
                station_id=request.station_id or None,
                states=list(request.states),
                pack_type_id=int(request.pack_type_id) if request.pack_type_id else None,
                max_soh_permille=request.max_soh_permille,
            )
            messages = [pack_message(await packs.view(session, p)) for p in rows]
        last = rows[-1].id if rows else None
        return stations_pb2.ListPacksResponse(packs=messages, next_page_token=next_page_token(last, len(rows), page))

    async def GetPackHistory(
        self, request: stations_pb2.GetPackHistoryRequest, context: Any
    ) -> stations_pb2.GetPackHistoryResponse:
        if not request.pack_id:
            raise InvalidArgument.for_field("pack_id", "is required")
        page = parse_page(request.page_size, request.page_token)
        start = optional_datetime(request, "start_time")
        end = optional_datetime(request, "end_time")
        if start and end and end <= start:
            raise InvalidArgument.for_field("end_time", "must be after start_time")
        async with self._db.transaction() as session:
            await packs.load_pack(session, current_principal(), request.pack_id)
            rows = await packs.history(session, request.pack_id, page, start, end)
        last = str(rows[-1].id) if rows else None
        return stations_pb2.GetPackHistoryResponse(
            entries=[history_message(e) for e in rows], next_page_token=next_page_token(last, len(rows), page)
        )

    async def ReportInspection(
        self, request: stations_pb2.ReportInspectionRequest, context: Any
    ) -> stations_pb2.ReportInspectionResponse:
        principal = current_principal()
        violations = []
        if not request.pack_id:
            violations.append(FieldViolation("pack_id", "is required"))
        if request.defect not in _DEFECTS:
            violations.append(FieldViolation("defect", "is required (DEFECT_KIND_NONE when the pack passed)"))
        if request.level and request.level not in _LEVELS:
            violations.append(FieldViolation("level", f"unknown alarm level {request.level}"))
        if violations:
            raise InvalidArgument.for_fields(violations)
        now = self._now()
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "ReportInspection", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.ReportInspectionResponse.FromString)) is not None:
                return replay
            pack = await packs.load_pack(session, principal, request.pack_id, lock=True)
            station_id = request.station_id or pack.station_id
            if request.station_id and await session.get(Station, request.station_id) is None:
                raise InvalidArgument.for_field("station_id", f"unknown station {request.station_id}")
            outcome = await packs.report_inspection(
                session,
                now,
                pack=pack,
                station_id=station_id,
                defect=request.defect,
                level=request.level or common_pb2.ALARM_LEVEL_MAJOR,
                notes=request.notes,
                attachment_uris=list(request.attachment_uris),
                inspected_at=optional_datetime(request, "inspect_time") or now,
                actor=packs.ActorRef.of(principal),
            )
            await session.flush()
            i = outcome.inspection
            response = stations_pb2.ReportInspectionResponse(
                inspection=stations_pb2.Inspection(
                    inspection_id=i.id,
                    pack_id=i.pack_id,
                    station_id=i.station_id or "",
                    defect=i.defect,  # type: ignore[arg-type]
                    level=i.level,  # type: ignore[arg-type]
                    notes=i.notes,
                    attachment_uris=list(request.attachment_uris),
                    inspect_time=to_timestamp(i.inspected_at),
                    inspector=common_pb2.Actor(
                        subject_id=principal.subject,
                        role=int(principal.role),  # type: ignore[arg-type]
                        tenant_id=principal.tenant.id if principal.tenant else "",
                    ),
                    quarantined=i.quarantined,
                    alarm_id=i.alarm_id or "",
                ),
                pack=pack_message(await packs.view(session, outcome.pack)),
            )
            await idempotency.complete(session, claim, response.SerializeToString())
        if outcome.pack.station_id:
            twin = self.hub.twins.get(outcome.pack.station_id)
            if twin is not None:
                self.hub.twins.pack_state(twin, outcome.pack.id, outcome.pack.state)
                twin.commit(now)
        return response

    async def ListStationSessions(
        self, request: stations_pb2.ListStationSessionsRequest, context: Any
    ) -> stations_pb2.ListStationSessionsResponse:
        if not request.station_id and not request.order_id:
            raise InvalidArgument.for_field("station_id", "station_id or order_id is required")
        page = parse_page(request.page_size, request.page_token)
        principal = current_principal()
        async with self._db.transaction() as session:
            if request.station_id:
                await registry.get_station(session, principal, request.station_id)
            rows = await sessions.list_sessions(
                session, page, station_id=request.station_id or None, order_id=request.order_id or None
            )
            if not request.station_id and principal.role is not Role.PLATFORM_ADMIN:
                visible = []
                for row in rows:
                    try:
                        await registry.get_station(session, principal, row.station_id)
                    except NotFound:
                        continue
                    visible.append(row)
                rows = visible
        last = rows[-1].id if rows else None
        return stations_pb2.ListStationSessionsResponse(
            sessions=[session_message(r) for r in rows], next_page_token=next_page_token(last, len(rows), page)
        )
