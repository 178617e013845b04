"""The vehicle telemetry RPCs of FleetService (GetVehicleState, GetVehicleTrack, WatchVehicles,
ListVehicleAlerts). The FleetService servicer forwards them here (a port wired by `server.py`: fleet sits
below telemetry). Translation only: the rules are in `views`, `store` and `alerts`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from voltcloud.api.v1 import fleet_pb2
from voltcloud.platform import idempotency
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.telemetry import alerts, convert, views
from voltcloud.telemetry.vehicles import VehicleTelemetry
from voltcloud.telemetry.watch import Update


class VehicleTelemetryRpcs:
    def __init__(self, telemetry: VehicleTelemetry) -> None:
        self._t = telemetry
        self._db = telemetry.db

    async def GetVehicleState(
        self, request: fleet_pb2.GetVehicleStateRequest, context: Any
    ) -> fleet_pb2.GetVehicleStateResponse:
        async with self._db.transaction("telemetry.GetVehicleState") as session:
            view = await views.vehicle_state(session, current_principal(), self._t.facts, request.vehicle_id)
        return fleet_pb2.GetVehicleStateResponse(state=convert.state_message(view.payload, view.from_telemetry))

    async def GetVehicleTrack(
        self, request: fleet_pb2.GetVehicleTrackRequest, context: Any
    ) -> fleet_pb2.GetVehicleTrackResponse:
        start, end = convert.window(request)
        size = views.track_page(request.page_size)
        after = views.parse_track_after(parse_page(0, request.page_token).after)
        query = views.TrackQuery(request.vehicle_id, start, end, list(request.metrics), size, after)
        async with self._db.transaction("telemetry.GetVehicleTrack") as session:
            rows = await views.track(session, current_principal(), query)
        return fleet_pb2.GetVehicleTrackResponse(
            readings=[convert.reading_message(r) for r in rows], next_page_token=views.track_token(rows, size)
        )

    async def ListVehicleAlerts(
        self, request: fleet_pb2.ListVehicleAlertsRequest, context: Any
    ) -> fleet_pb2.ListVehicleAlertsResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("telemetry.ListVehicleAlerts") as session:
            rows = await views.list_alerts(
                session, current_principal(), fleet_id=request.fleet_id, vehicle_id=request.vehicle_id,
                open_only=request.open_only, page=page,
            )  # fmt: skip
        return fleet_pb2.ListVehicleAlertsResponse(
            alerts=[convert.alert_message(r) for r in rows],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )

    async def SetFleetAlertLimits(
        self, request: fleet_pb2.SetFleetAlertLimitsRequest, context: Any
    ) -> fleet_pb2.SetFleetAlertLimitsResponse:
        if not request.idempotency_key:
            raise InvalidArgument.for_field("idempotency_key", "is required")
        wanted = convert.limits_value(request)
        principal = current_principal()
        async with self._db.transaction("telemetry.SetFleetAlertLimits") as session:

            async def work() -> fleet_pb2.SetFleetAlertLimitsResponse:
                limits = await alerts.set_fleet_limits(
                    session, principal, request.fleet_id, wanted, self._t.rules.limits
                )
                return fleet_pb2.SetFleetAlertLimitsResponse(limits=convert.limits_message(limits))

            return await idempotency.once(
                session, "FleetService.SetFleetAlertLimits", principal.subject, request,
                fleet_pb2.SetFleetAlertLimitsResponse.FromString, work, now=self._t.clock.now(),
            )  # fmt: skip

    async def WatchVehicles(
        self, request: fleet_pb2.WatchVehiclesRequest, context: Any
    ) -> AsyncIterator[fleet_pb2.WatchVehiclesResponse]:
        box = convert.bounds(request)
        async with self._db.transaction("telemetry.WatchVehicles.check") as session:
            selection = await views.selection(
                session, current_principal(), fleet_id=request.fleet_id, sub_fleet_id=request.sub_fleet_id,
                vehicle_id=request.vehicle_id, box=box, alerts=request.alerts,
            )  # fmt: skip
        watcher = self._t.watch.watch(selection)  # before the snapshot: nothing committed between is missed
        try:
            async with self._db.transaction("telemetry.WatchVehicles.snapshot") as session:
                states = await views.snapshot(session, selection)
            for payload in states:
                yield fleet_pb2.WatchVehiclesResponse(state=convert.state_message(payload))
            yield fleet_pb2.WatchVehiclesResponse(snapshot_done=True)
            while True:
                yield _update(await watcher.queue.get())
        finally:
            self._t.watch.forget(watcher)


def _update(update: Update) -> fleet_pb2.WatchVehiclesResponse:
    if update.kind == "alert":
        return fleet_pb2.WatchVehiclesResponse(alert=convert.alert_from_payload(update.payload))
    return fleet_pb2.WatchVehiclesResponse(state=convert.state_message(update.payload))
