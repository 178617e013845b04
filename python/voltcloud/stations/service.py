"""StationService servicer: parses requests (convert), calls the stations domain, builds responses. No rules."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import stations_pb2, stations_pb2_grpc
from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.ids import new_id
from voltcloud.platform.limits import optional_datetime, to_timestamp
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.stations import commands, convert, packs, registry
from voltcloud.stations.commands import CommandResult
from voltcloud.stations.ports import Settlement
from voltcloud.stations.twin import Twin, TwinOp, TwinStore


class LiveTwins(Protocol):
    """The live twins and command routes of stations, kept by the gateway hub (`ingest.hub.Hub`, wired by
    server.py): ingest sits above stations, so the servicer gets it rather than importing it."""

    @property
    def clock(self) -> Clock: ...

    @property
    def twins(self) -> TwinStore: ...

    async def twin(self, station_id: str) -> Twin: ...

    def forget(self, station_id: str) -> None: ...

    async def publish_reload(self, session: AsyncSession, station_id: str) -> None: ...

    async def publish_twin(self, session: AsyncSession, station_id: str, ops: list[TwinOp]) -> None: ...

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
        return stations_pb2.GetStationResponse(station=convert.station_message(view))

    async def ListStations(
        self, request: stations_pb2.ListStationsRequest, context: Any
    ) -> stations_pb2.ListStationsResponse:
        page = parse_page(request.page_size, request.page_token)
        filters = convert.station_filter(request)
        async with self._db.transaction() as session:
            views = await registry.list_stations(session, current_principal(), filters, page)
        last = views[-1].station.id if views else None
        return stations_pb2.ListStationsResponse(
            stations=[convert.station_message(v) for v in views],
            next_page_token=next_page_token(last, len(views), page),
        )

    async def CreateOperator(
        self, request: stations_pb2.CreateOperatorRequest, context: Any
    ) -> stations_pb2.CreateOperatorResponse:
        principal = current_principal()
        name, country, currency = convert.operator_fields(request)
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "CreateOperator", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.CreateOperatorResponse.FromString)) is not None:
                return replay
            op = await registry.create_operator(
                session, principal, self._now(), name=name, country=country, currency=currency
            )
            response = stations_pb2.CreateOperatorResponse(operator=convert.operator_message(op))
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def CreateStation(
        self, request: stations_pb2.CreateStationRequest, context: Any
    ) -> stations_pb2.CreateStationResponse:
        principal = current_principal()
        spec = convert.new_station(request)
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "CreateStation", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.CreateStationResponse.FromString)) is not None:
                return replay
            view = await registry.create_station(session, principal, spec)
            response = stations_pb2.CreateStationResponse(station=convert.station_message(view))
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def UpdateStation(
        self, request: stations_pb2.UpdateStationRequest, context: Any
    ) -> stations_pb2.UpdateStationResponse:
        principal = current_principal()
        paths, spec = convert.station_update(request)
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "UpdateStation", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.UpdateStationResponse.FromString)) is not None:
                return replay
            view = await registry.update_station(
                session, principal, request.station.station_id, request.station.version, paths, spec
            )
            response = stations_pb2.UpdateStationResponse(station=convert.station_message(view))
            await idempotency.complete(session, claim, response.SerializeToString())
            if paths & {"lane_count", "slot_count"}:
                await self.hub.publish_reload(session, request.station.station_id)
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
        return stations_pb2.GetStationTwinResponse(twin=convert.twin_message(twin))

    async def WatchStation(
        self, request: stations_pb2.WatchStationRequest, context: Any
    ) -> AsyncIterator[stations_pb2.WatchStationResponse]:
        if request.after_revision < 0:
            raise InvalidArgument.for_field("after_revision", "must not be negative")
        twin = await self._visible_twin(request.station_id)
        last = request.after_revision
        change = twin.changes_since(last) if last else None
        if change is None or last > twin.revision:
            yield stations_pb2.WatchStationResponse(twin=convert.twin_message(twin), snapshot=True)
        elif twin.revision > last:
            yield stations_pb2.WatchStationResponse(
                twin=convert.twin_message(twin),
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
                yield stations_pb2.WatchStationResponse(twin=convert.twin_message(twin), snapshot=True)
                continue
            if twin.revision == last:
                continue
            change = twin.changes_since(last)
            last = twin.revision
            if change is None:
                yield stations_pb2.WatchStationResponse(twin=convert.twin_message(twin), snapshot=True)
            else:
                yield stations_pb2.WatchStationResponse(
                    twin=convert.twin_message(twin),
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
        timeout = convert.command_timeout(request)
        checked = convert.command_request(request)
        command_id = new_id("cmd")
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "SendStationCommand", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.SendStationCommandResponse.FromString)) is not None:
                return replay
            external_id = await commands.record_command(session, principal, self._now(), command_id, checked)
        command = convert.command_to_station(request.command, external_id)
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
            await commands.record_result(session, command_id, result.status, result.detail, self._now())
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def RegisterPack(
        self, request: stations_pb2.RegisterPackRequest, context: Any
    ) -> stations_pb2.RegisterPackResponse:
        principal = current_principal()
        new = convert.new_pack(request, principal)
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "RegisterPack", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.RegisterPackResponse.FromString)) is not None:
                return replay
            pack = await packs.register_pack(session, principal, self._now(), new)
            await session.flush()
            response = stations_pb2.RegisterPackResponse(pack=convert.pack_message(await packs.view(session, pack)))
            await idempotency.complete(session, claim, response.SerializeToString())
            if pack.station_id:
                await self.hub.publish_reload(session, pack.station_id)
        if pack.station_id:
            self.hub.forget(pack.station_id)
        return response

    async def GetPack(self, request: stations_pb2.GetPackRequest, context: Any) -> stations_pb2.GetPackResponse:
        pack_id = convert.pack_id(request)
        async with self._db.transaction() as session:
            pack = await packs.load_pack(session, current_principal(), pack_id)
            return stations_pb2.GetPackResponse(pack=convert.pack_message(await packs.view(session, pack)))

    async def ListPacks(self, request: stations_pb2.ListPacksRequest, context: Any) -> stations_pb2.ListPacksResponse:
        page = parse_page(request.page_size, request.page_token)
        where = convert.pack_filter(request)
        async with self._db.transaction() as session:
            rows = await packs.list_packs(session, current_principal(), page, where)
            messages = [convert.pack_message(await packs.view(session, p)) for p in rows]
        last = rows[-1].id if rows else None
        return stations_pb2.ListPacksResponse(packs=messages, next_page_token=next_page_token(last, len(rows), page))

    async def GetPackHistory(
        self, request: stations_pb2.GetPackHistoryRequest, context: Any
    ) -> stations_pb2.GetPackHistoryResponse:
        pack_id = convert.pack_id(request)
        page = parse_page(request.page_size, request.page_token)
        start, end = convert.history_range(request)
        async with self._db.transaction() as session:
            await packs.load_pack(session, current_principal(), pack_id)
            rows = await packs.history(session, pack_id, page, start, end)
        last = str(rows[-1].id) if rows else None
        return stations_pb2.GetPackHistoryResponse(
            entries=[convert.history_message(e) for e in rows], next_page_token=next_page_token(last, len(rows), page)
        )

    async def ReportInspection(
        self, request: stations_pb2.ReportInspectionRequest, context: Any
    ) -> stations_pb2.ReportInspectionResponse:
        principal = current_principal()
        report = convert.inspection_report(request)
        now = self._now()
        async with self._db.transaction() as session:
            claim = await idempotency.claim_request(
                session, "ReportInspection", principal.subject, request, now=self._now()
            )
            if (replay := idempotency.replayed(claim, stations_pb2.ReportInspectionResponse.FromString)) is not None:
                return replay
            pack = await packs.load_pack(session, principal, report.pack_id, lock=True)
            station_id = await packs.inspection_station(session, pack, report.station_id)
            outcome = await packs.report_inspection(
                session,
                now,
                pack=pack,
                station_id=station_id,
                defect=report.defect,
                level=report.level,
                notes=report.notes,
                attachment_uris=report.attachment_uris,
                inspected_at=report.inspected_at or now,
                actor=packs.ActorRef.of(principal),
            )
            await session.flush()
            pack_message = convert.pack_message(await packs.view(session, outcome.pack))
            response = convert.inspection_response(outcome, report, principal, pack_message)
            await idempotency.complete(session, claim, response.SerializeToString())
            op: TwinOp = ["pack_state", outcome.pack.id, outcome.pack.state]
            if outcome.pack.station_id:
                await self.hub.publish_twin(session, outcome.pack.station_id, [op])
        if outcome.pack.station_id:
            twin = self.hub.twins.get(outcome.pack.station_id)
            if twin is not None:
                self.hub.twins.apply(twin, op)
                twin.commit(now)
        return response

    async def ListStationSessions(
        self, request: stations_pb2.ListStationSessionsRequest, context: Any
    ) -> stations_pb2.ListStationSessionsResponse:
        if not request.station_id and not request.order_id:
            raise InvalidArgument.for_field("station_id", "station_id or order_id is required")
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction() as session:
            rows = await registry.list_visible_sessions(
                session,
                current_principal(),
                page,
                station_id=request.station_id or None,
                order_id=request.order_id or None,
            )
        last = rows[-1].id if rows else None
        return stations_pb2.ListStationSessionsResponse(
            sessions=[convert.session_message(r) for r in rows], next_page_token=next_page_token(last, len(rows), page)
        )
