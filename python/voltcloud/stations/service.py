"""StationService servicer: parses requests, calls the registry, builds responses. No rules here."""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2

from voltcloud.api.v1 import common_pb2, stations_pb2, stations_pb2_grpc
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.geo import parse_box, parse_position
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.stations import registry

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
        enabled=True,
        version=s.version,
    )
    if s.kind == common_pb2.STATION_KIND_SWAP:
        message.swap.CopyFrom(
            stations_pb2.SwapStationSpec(
                lane_count=s.lanes,
                swap_duration=duration_pb2.Duration(seconds=s.swap_time_s),
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


class StationServicer(stations_pb2_grpc.StationServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db

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
