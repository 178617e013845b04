"""MaintenanceService servicer: each RPC converts its request (`convert`), asks the maintenance modules (which
hold every rule, including whose alarms and work orders the caller may see) and converts their answer back.

RPCs not overridden here answer UNIMPLEMENTED (the generated base). maint-core's RPCs come first; the engineers'
and field RPCs (maint-field) go in the block marked at the end of the class."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import common_pb2, maintenance_pb2, maintenance_pb2_grpc
from voltcloud.maintenance import (
    access,
    alarms,
    analysis,
    battery,
    closedloop,
    convert,
    engineers,
    field_app,
    fielddispatch,
    inspections,
    notify,
    safety,
    sla,
    workorders,
)
from voltcloud.maintenance.engineer_hub import Connection, EngineerHub, Outgoing
from voltcloud.maintenance.field_models import EngineerCertificate, SafetyIncident
from voltcloud.maintenance.models import WorkOrder
from voltcloud.maintenance.ports import EquipmentDirectory
from voltcloud.maintenance.watch import AlarmHub
from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.convert import lat_lng_message
from voltcloud.platform.db import Database
from voltcloud.platform.enums import WorkOrderState
from voltcloud.platform.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.geo import parse_box, parse_position
from voltcloud.platform.limits import optional_datetime, to_timestamp
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal

R = TypeVar("R", bound=idempotency.Response)
m = maintenance_pb2
SNAPSHOT_MAX = 1000


class MaintenanceServicer(maintenance_pb2_grpc.MaintenanceServiceServicer):
    def __init__(self, db: Database, directory: EquipmentDirectory, hub: AlarmHub, clock: Clock | None = None) -> None:
        self._db = db
        self._directory = directory
        self._hub = hub
        self._clock: Clock = clock or SystemClock()

    async def _keyed(
        self, name: str, request: Any, response_type: Any, work: Callable[[AsyncSession], Awaitable[R]]
    ) -> R:
        """One transaction: the key is claimed with the work, so a retry replays the first response."""
        async with self._db.transaction(f"maintenance.{name}") as session:
            return await idempotency.once(
                session, f"MaintenanceService.{name}", current_principal().subject, request,
                response_type.FromString, lambda: work(session), now=self._clock.now(),
            )  # fmt: skip

    # ---- alarms -------------------------------------------------------------------------------------------

    async def ListAlarms(self, request: m.ListAlarmsRequest, context: Any) -> m.ListAlarmsResponse:
        page = parse_page(request.page_size, request.page_token)
        f = convert.alarm_filter(request, access.operator_filter(current_principal(), request.operator_id))
        async with self._db.transaction("maintenance.ListAlarms") as session:
            rows = await alarms.list_alarms(session, f, page)
        token = next_page_token(rows[-1].id if rows else None, len(rows), page)
        return m.ListAlarmsResponse(alarms=[convert.alarm_message(a) for a in rows], next_page_token=token)

    async def _visible_alarm(self, session: AsyncSession, alarm_id: str) -> Any:
        alarm = await alarms.get_alarm(session, alarm_id)
        access.require_visible(current_principal(), alarm.operator_id, f"alarm {alarm_id}")
        return alarm

    async def AcknowledgeAlarm(self, request: m.AcknowledgeAlarmRequest, context: Any) -> m.AcknowledgeAlarmResponse:
        principal = current_principal()

        async def work(session: AsyncSession) -> m.AcknowledgeAlarmResponse:
            alarm = await self._visible_alarm(session, request.alarm_id)
            alarm = await alarms.acknowledge(
                session, alarm, actor_id=principal.subject, note=request.note, now=self._clock.now()
            )
            return m.AcknowledgeAlarmResponse(alarm=convert.alarm_message(alarm))

        return await self._keyed("AcknowledgeAlarm", request, m.AcknowledgeAlarmResponse, work)

    async def ClearAlarm(self, request: m.ClearAlarmRequest, context: Any) -> m.ClearAlarmResponse:
        principal = current_principal()

        async def work(session: AsyncSession) -> m.ClearAlarmResponse:
            alarm = await self._visible_alarm(session, request.alarm_id)
            alarm = await alarms.clear_by_person(
                session, alarm, actor_id=principal.subject, note=request.note, now=self._clock.now()
            )
            return m.ClearAlarmResponse(alarm=convert.alarm_message(alarm))

        return await self._keyed("ClearAlarm", request, m.ClearAlarmResponse, work)

    async def WatchAlarms(self, request: m.WatchAlarmsRequest, context: Any) -> AsyncIterator[m.WatchAlarmsResponse]:
        principal = current_principal()
        operator_id = access.operator_filter(principal, request.operator_id)
        if request.station_id:
            async with self._db.transaction("maintenance.WatchAlarms.station") as session:
                owner = await self._directory.station_operator(session, request.station_id)
            if owner is None or (operator_id is not None and owner != operator_id):
                raise NotFound(f"station {request.station_id} not found")
        f = alarms.AlarmFilter(
            operator_id=operator_id, station_id=request.station_id, min_level=request.min_level,
            sources=tuple(request.sources),
        )  # fmt: skip
        watcher = self._hub.watch(f)  # before the snapshot: nothing committed meanwhile is missed
        try:
            async with self._db.transaction("maintenance.WatchAlarms.snapshot") as session:
                snapshot = await alarms.open_alarms(session, f, SNAPSHOT_MAX)
            yield m.WatchAlarmsResponse(
                change=m.ALARM_CHANGE_SNAPSHOT, alarms=[convert.alarm_message(a) for a in snapshot]
            )
            while True:
                item = await watcher.queue.get()
                if item is None:
                    return
                change, alarm = item
                yield m.WatchAlarmsResponse(change=change, alarms=[convert.alarm_message(alarm)])  # type: ignore[arg-type]
        finally:
            self._hub.forget(watcher)

    # ---- work orders --------------------------------------------------------------------------------------

    async def CreateWorkOrder(self, request: m.CreateWorkOrderRequest, context: Any) -> m.CreateWorkOrderResponse:
        new = convert.new_work_order(request)

        async def work(session: AsyncSession) -> m.CreateWorkOrderResponse:
            order = await closedloop.create(
                session, current_principal(), new, self._directory, request.alarm_ids, self._clock.now()
            )
            detail = await closedloop.detail(session, current_principal(), order.id)
            return m.CreateWorkOrderResponse(work_order=convert.work_order_message(*_parts(detail)))

        return await self._keyed("CreateWorkOrder", request, m.CreateWorkOrderResponse, work)

    async def ReportFault(self, request: m.ReportFaultRequest, context: Any) -> m.ReportFaultResponse:
        report = convert.fault_report(request)

        async def work(session: AsyncSession) -> m.ReportFaultResponse:
            order = await closedloop.report_fault(
                session, current_principal(), report, self._directory, self._clock.now()
            )
            detail = await closedloop.detail(session, current_principal(), order.id)
            return m.ReportFaultResponse(work_order=convert.work_order_message(*_parts(detail)))

        return await self._keyed("ReportFault", request, m.ReportFaultResponse, work)

    async def GetWorkOrder(self, request: m.GetWorkOrderRequest, context: Any) -> m.GetWorkOrderResponse:
        async with self._db.transaction("maintenance.GetWorkOrder") as session:
            detail = await closedloop.detail(session, current_principal(), request.work_order_id)
        return m.GetWorkOrderResponse(work_order=convert.work_order_message(*_parts(detail)))

    async def ListWorkOrders(self, request: m.ListWorkOrdersRequest, context: Any) -> m.ListWorkOrdersResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("maintenance.ListWorkOrders") as session:
            rows = await closedloop.list_for(session, current_principal(), convert.work_order_filter(request), page)
        token = next_page_token(rows[-1].id if rows else None, len(rows), page)
        return m.ListWorkOrdersResponse(
            work_orders=[convert.work_order_message(o) for o in rows], next_page_token=token
        )

    async def UpdateWorkOrderProgress(
        self, request: m.UpdateWorkOrderProgressRequest, context: Any
    ) -> m.UpdateWorkOrderProgressResponse:
        step = convert.progress(request)

        async def work(session: AsyncSession) -> m.UpdateWorkOrderProgressResponse:
            order = await closedloop.progress(session, current_principal(), step, self._clock.now())
            detail = await closedloop.detail(session, current_principal(), order.id)
            return m.UpdateWorkOrderProgressResponse(work_order=convert.work_order_message(*_parts(detail)))

        return await self._keyed("UpdateWorkOrderProgress", request, m.UpdateWorkOrderProgressResponse, work)

    async def CloseWorkOrder(self, request: m.CloseWorkOrderRequest, context: Any) -> m.CloseWorkOrderResponse:
        closing = convert.closing(request)

        async def work(session: AsyncSession) -> m.CloseWorkOrderResponse:
            order = await closedloop.close(session, current_principal(), closing, self._clock.now())
            detail = await closedloop.detail(session, current_principal(), order.id)
            return m.CloseWorkOrderResponse(work_order=convert.work_order_message(*_parts(detail)))

        return await self._keyed("CloseWorkOrder", request, m.CloseWorkOrderResponse, work)

    async def ReopenWorkOrder(self, request: m.ReopenWorkOrderRequest, context: Any) -> m.ReopenWorkOrderResponse:
        async def work(session: AsyncSession) -> m.ReopenWorkOrderResponse:
            order = await closedloop.reopen(
                session, current_principal(), request.work_order_id, request.reason, request.expected_version,
                self._clock.now(),
            )  # fmt: skip
            detail = await closedloop.detail(session, current_principal(), order.id)
            return m.ReopenWorkOrderResponse(work_order=convert.work_order_message(*_parts(detail)))

        return await self._keyed("ReopenWorkOrder", request, m.ReopenWorkOrderResponse, work)

    # ---- SLA policy, notification preferences, fault analysis ---------------------------------------------

    def _policy_operator(self, requested: str) -> str:
        operator_id = access.operator_filter(current_principal(), requested)
        if operator_id is None:
            raise InvalidArgument.for_field("operator_id", "is required")
        return operator_id

    async def SetSlaPolicy(self, request: m.SetSlaPolicyRequest, context: Any) -> m.SetSlaPolicyResponse:
        access.require_operator_or_admin(current_principal(), "set an SLA policy")
        operator_id = self._policy_operator(request.operator_id)
        rules = convert.rules(request)

        async def work(session: AsyncSession) -> m.SetSlaPolicyResponse:
            stored = await sla.set_rules(
                session, operator_id, rules, actor_id=current_principal().subject, now=self._clock.now()
            )
            return m.SetSlaPolicyResponse(rules=[convert.rule_message(r) for r in stored])

        return await self._keyed("SetSlaPolicy", request, m.SetSlaPolicyResponse, work)

    async def GetSlaPolicy(self, request: m.GetSlaPolicyRequest, context: Any) -> m.GetSlaPolicyResponse:
        operator_id = self._policy_operator(request.operator_id)
        async with self._db.transaction("maintenance.GetSlaPolicy") as session:
            rules = await sla.rules_of(session, operator_id)
        return m.GetSlaPolicyResponse(
            rules=[convert.rule_message(r) for r in rules],
            defaults=[convert.rule_message(r) for r in sla.default_rules()],
        )

    async def SetNotificationPreferences(
        self, request: m.SetNotificationPreferencesRequest, context: Any
    ) -> m.SetNotificationPreferencesResponse:
        pref = convert.preferences(request.preferences)

        async def work(session: AsyncSession) -> m.SetNotificationPreferencesResponse:
            stored = await notify.set_preferences(session, current_principal(), pref, self._clock.now())
            return m.SetNotificationPreferencesResponse(preferences=convert.preferences_message(stored))

        return await self._keyed("SetNotificationPreferences", request, m.SetNotificationPreferencesResponse, work)

    async def GetFaultAnalysis(self, request: m.GetFaultAnalysisRequest, context: Any) -> m.GetFaultAnalysisResponse:
        operator_id = access.operator_filter(current_principal(), request.operator_id)
        start = optional_datetime(request.period, "start", "period.start", zero="invalid")
        end = optional_datetime(request.period, "end", "period.end", zero="invalid")
        if start is None or end is None or end <= start:
            raise InvalidArgument.for_field("period", "needs a start before its end")
        if request.top < 0:
            raise InvalidArgument.for_field("top", "must not be negative")
        async with self._db.transaction("maintenance.GetFaultAnalysis") as session:
            report = await analysis.analyze(session, operator_id, start, end, top=request.top or 10)
        return convert.analysis_message(report, include_csv=request.include_csv)

    # ---- maint-field: engineers, dispatch, inspections, safety, battery health (append below) ----

    def attach_field(self, hub: EngineerHub) -> None:
        """The field desk (engineer hub with its ports), wired by the composition root."""
        self._field = hub

    def _fnow(self) -> dt.datetime:
        return self._field.clock.now()

    async def _fkeyed(
        self, name: str, request: Any, response_type: Any, work: Callable[[AsyncSession], Awaitable[_R]]
    ) -> _R:
        """One transaction: the key is claimed with the work, so a retry replays the first response."""
        async with self._db.transaction(f"maintenance.{name}") as session:
            return await idempotency.once(
                session,
                f"MaintenanceService.{name}",
                current_principal().subject,
                request,
                response_type.FromString,
                lambda: work(session),
                now=self._fnow(),
            )

    # engineers ----------------------------------------------------------------------------------------------

    async def RegisterEngineer(
        self, request: maintenance_pb2.RegisterEngineerRequest, context: Any
    ) -> maintenance_pb2.RegisterEngineerResponse:
        profile = _profile(request.engineer)
        principal = current_principal()
        operator_id = request.engineer.operator_id or _own_operator(principal)

        async def work(session: AsyncSession) -> maintenance_pb2.RegisterEngineerResponse:
            view = await engineers.register(
                session, principal, operator_id=operator_id, profile=profile, now=self._fnow()
            )
            return maintenance_pb2.RegisterEngineerResponse(engineer=_engineer_message(view, self._fnow()))

        return await self._fkeyed("RegisterEngineer", request, maintenance_pb2.RegisterEngineerResponse, work)

    async def UpdateEngineer(
        self, request: maintenance_pb2.UpdateEngineerRequest, context: Any
    ) -> maintenance_pb2.UpdateEngineerResponse:
        profile = _profile(request.engineer)
        principal = current_principal()

        async def work(session: AsyncSession) -> maintenance_pb2.UpdateEngineerResponse:
            view = await engineers.update(
                session,
                principal,
                request.engineer.engineer_id,
                profile,
                expected_version=request.expected_version,
                now=self._fnow(),
            )
            return maintenance_pb2.UpdateEngineerResponse(engineer=_engineer_message(view, self._fnow()))

        return await self._fkeyed("UpdateEngineer", request, maintenance_pb2.UpdateEngineerResponse, work)

    async def RetireEngineer(
        self, request: maintenance_pb2.RetireEngineerRequest, context: Any
    ) -> maintenance_pb2.RetireEngineerResponse:
        principal = current_principal()

        async def work(session: AsyncSession) -> maintenance_pb2.RetireEngineerResponse:
            now = self._fnow()
            view = await engineers.retire(session, principal, request.engineer_id, reason=request.reason, now=now)
            await fielddispatch.withdraw_engineer(session, self._field.desk, request.engineer_id, now)
            return maintenance_pb2.RetireEngineerResponse(engineer=_engineer_message(view, now))

        return await self._fkeyed("RetireEngineer", request, maintenance_pb2.RetireEngineerResponse, work)

    async def GetEngineer(
        self, request: maintenance_pb2.GetEngineerRequest, context: Any
    ) -> maintenance_pb2.GetEngineerResponse:
        async with self._db.transaction("maintenance.GetEngineer") as session:
            view = await engineers.get(session, current_principal(), request.engineer_id)
        return maintenance_pb2.GetEngineerResponse(engineer=_engineer_message(view, self._fnow()))

    async def ListEngineers(
        self, request: maintenance_pb2.ListEngineersRequest, context: Any
    ) -> maintenance_pb2.ListEngineersResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("maintenance.ListEngineers") as session:
            views = await engineers.list_engineers(
                session,
                current_principal(),
                operator_id=request.operator_id,
                skill=request.skill,
                include_retired=request.include_retired,
                page=page,
            )
        last = views[-1].engineer.id if views else None
        return maintenance_pb2.ListEngineersResponse(
            engineers=[_engineer_message(v, self._fnow()) for v in views],
            next_page_token=next_page_token(last, len(views), page),
        )

    async def AddCertificate(
        self, request: maintenance_pb2.AddCertificateRequest, context: Any
    ) -> maintenance_pb2.AddCertificateResponse:
        c = request.certificate
        new = engineers.NewCertificate(
            engineer_id=c.engineer_id,
            kind=c.kind,
            number=c.number,
            issued_at=_required_time(c, "issue_time", "certificate.issue_time"),
            expires_at=_required_time(c, "expire_time", "certificate.expire_time"),
        )
        if not new.engineer_id:
            raise InvalidArgument.for_field("certificate.engineer_id", "is required")
        principal = current_principal()

        async def work(session: AsyncSession) -> maintenance_pb2.AddCertificateResponse:
            row = await engineers.add_certificate(session, principal, new, self._fnow())
            return maintenance_pb2.AddCertificateResponse(certificate=_certificate_message(row, self._fnow()))

        return await self._fkeyed("AddCertificate", request, maintenance_pb2.AddCertificateResponse, work)

    async def ListCertificates(
        self, request: maintenance_pb2.ListCertificatesRequest, context: Any
    ) -> maintenance_pb2.ListCertificatesResponse:
        page = parse_page(request.page_size, request.page_token)
        before = optional_datetime(request, "expires_before", zero="unset")
        async with self._db.transaction("maintenance.ListCertificates") as session:
            rows = await engineers.list_certificates(
                session,
                current_principal(),
                operator_id=request.operator_id,
                engineer_id=request.engineer_id,
                expires_before=before,
                page=page,
            )
        last = rows[-1].id if rows else None
        return maintenance_pb2.ListCertificatesResponse(
            certificates=[_certificate_message(r, self._fnow()) for r in rows],
            next_page_token=next_page_token(last, len(rows), page),
        )

    # dispatch -----------------------------------------------------------------------------------------------

    async def AssignWorkOrder(
        self, request: maintenance_pb2.AssignWorkOrderRequest, context: Any
    ) -> maintenance_pb2.AssignWorkOrderResponse:
        if not request.work_order_id:
            raise InvalidArgument.for_field("work_order_id", "is required")
        principal = current_principal()
        actor = (principal.subject, principal.role.name.lower())

        async def work(session: AsyncSession) -> maintenance_pb2.AssignWorkOrderResponse:
            now, desk = self._fnow(), self._field.desk
            order = await workorders.get_work_order(session, request.work_order_id)
            engineers.require_operator(principal, order.operator_id or "", f"work order {order.id}")
            if request.engineer_id:
                made = await fielddispatch.assign_named(
                    session,
                    desk,
                    order,
                    request.engineer_id,
                    now=now,
                    actor=actor,
                    expected_version=request.expected_version,
                )
            else:
                made = await fielddispatch.assign_nearest(
                    session, desk, order, now=now, actor=actor, expected_version=request.expected_version
                )
            await session.refresh(order)
            return maintenance_pb2.AssignWorkOrderResponse(
                work_order=convert.work_order_message(order), eta_time=to_timestamp(made.eta)
            )

        return await self._fkeyed("AssignWorkOrder", request, maintenance_pb2.AssignWorkOrderResponse, work)

    async def PlanDispatch(
        self, request: maintenance_pb2.PlanDispatchRequest, context: Any
    ) -> maintenance_pb2.PlanDispatchResponse:
        principal = current_principal()
        operator_id = request.operator_id or _own_operator(principal)
        if not operator_id:
            raise InvalidArgument.for_field("operator_id", "is required")
        actor = (principal.subject, principal.role.name.lower())

        async def work(session: AsyncSession) -> maintenance_pb2.PlanDispatchResponse:
            engineers.require_operator(principal, operator_id, f"operator {operator_id}")
            orders = await _open_orders(session, operator_id, list(request.work_order_ids))
            plan = await fielddispatch.plan(session, self._field.desk, orders, now=self._fnow(), actor=actor)
            return maintenance_pb2.PlanDispatchResponse(
                assignments=[
                    maintenance_pb2.DispatchAssignment(
                        work_order_id=a.work_order_id,
                        engineer_id=a.engineer_id,
                        eta_time=to_timestamp(a.eta),
                        travel_s=round(a.travel_s),
                    )
                    for a in plan.assignments
                ],
                unassigned_work_order_ids=plan.unassigned,
                total_travel_s=round(plan.total_travel_s),
            )

        return await self._fkeyed("PlanDispatch", request, maintenance_pb2.PlanDispatchResponse, work)

    # the engineer's app stream ------------------------------------------------------------------------------

    async def EngineerConnect(
        self, request_iterator: AsyncIterator[maintenance_pb2.EngineerConnectRequest], context: Any
    ) -> AsyncIterator[maintenance_pb2.EngineerConnectResponse]:
        principal = current_principal()
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        if first.WhichOneof("msg") != "hello":
            raise FailedPrecondition("the first message of the stream must be a hello")
        engineer_id = first.hello.engineer_id
        if principal.role is Role.ENGINEER and principal.subject != engineer_id:
            raise PermissionDenied(f"{principal.subject} may not connect as {engineer_id}")
        async with self._db.transaction("maintenance.hello") as session:
            row = await engineers.load(session, principal, engineer_id)
        if row.retired_at is not None:
            raise FailedPrecondition(f"engineer {engineer_id} is retired")
        hub = self._field
        conn = hub.connect(engineer_id)
        conn.acked_seq = int(first.seq)
        conn.queue.put_nowait(Outgoing("ack", acked_seq=conn.acked_seq))
        await hub.resume(conn)
        reader = asyncio.create_task(self._engineer_read(conn, request_iterator))
        pump = asyncio.create_task(self._engineer_pump(conn))
        try:
            while True:
                getter = asyncio.ensure_future(conn.queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    reader.result()  # re-raises a domain error of the reader
                    return
                out = getter.result()
                if out.kind == "close":
                    return
                message = await self._engineer_outgoing(out)
                if message is not None:
                    yield message
        finally:
            hub.disconnect(conn)
            for job in (reader, pump):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, DomainError):
                    await job

    async def _engineer_pump(self, conn: Connection) -> None:
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            await self._field.deliver_offers(conn)

    async def _engineer_outgoing(self, out: Outgoing) -> maintenance_pb2.EngineerConnectResponse | None:
        R = maintenance_pb2.EngineerConnectResponse
        if out.kind == "ack":
            return R(acked_seq=out.acked_seq)
        if out.kind == "rejected":
            return R(rejected=out.reason)
        if out.kind == "withdrawn":
            return R(
                withdrawn=maintenance_pb2.WorkOrderOfferWithdrawn(work_order_id=out.work_order_id, reason=out.reason)
            )
        async with self._db.transaction("maintenance.offer.read") as session:
            order = await session.get(WorkOrder, out.work_order_id)
        if order is None:
            return None
        offer = maintenance_pb2.WorkOrderOffer(
            work_order=convert.work_order_message(order), respond_by=to_timestamp(out.respond_by), travel_s=out.travel_s
        )
        if out.kind == "offer":
            return R(offer=offer) if order.state == int(WorkOrderState.ASSIGNED) else None
        return R(update=offer)

    async def _engineer_read(
        self, conn: Connection, requests: AsyncIterator[maintenance_pb2.EngineerConnectRequest]
    ) -> None:
        async for message in requests:
            seq = int(message.seq)
            if seq and seq <= conn.acked_seq:
                conn.queue.put_nowait(Outgoing("ack", acked_seq=conn.acked_seq))  # a replayed duplicate
                continue
            try:
                await self._engineer_handle(conn, message)
            except DomainError as error:
                if message.WhichOneof("msg") == "hello":
                    raise
                conn.queue.put_nowait(Outgoing("rejected", reason=error.message))  # the stream stays up
            conn.acked_seq = max(conn.acked_seq, seq)
            conn.queue.put_nowait(Outgoing("ack", acked_seq=conn.acked_seq))

    async def _engineer_handle(self, conn: Connection, message: maintenance_pb2.EngineerConnectRequest) -> None:
        kind, now, desk = message.WhichOneof("msg"), self._fnow(), self._field.desk
        async with self._db.transaction(f"maintenance.app.{kind}") as session:
            if kind == "position":
                p = message.position.position
                pos = parse_position("position.position", p.lat, p.lng)
                await field_app.move(session, conn.engineer_id, pos.lat, pos.lng, now)
            elif kind == "availability":
                await field_app.set_available(session, conn.engineer_id, message.availability.available)
            elif kind == "accept":
                await fielddispatch.accept(session, conn.engineer_id, message.accept.work_order_id, now=now)
            elif kind == "decline":
                d = message.decline
                await fielddispatch.decline(session, desk, conn.engineer_id, d.work_order_id, reason=d.reason, now=now)
            elif kind == "hello":
                raise FailedPrecondition("hello may only be the first message")

    # inspections and safety ---------------------------------------------------------------------------------

    async def SubmitSiteInspection(
        self, request: maintenance_pb2.SubmitSiteInspectionRequest, context: Any
    ) -> maintenance_pb2.SubmitSiteInspectionResponse:
        submission = inspections.Submission(
            kind=int(request.kind),
            station_id=request.station_id,
            items=tuple(inspections.ItemInput(i.code, i.score, i.note, tuple(i.photo_uris)) for i in request.items),
            business_date=request.business_date,
        )
        inspections.check(submission)
        principal = current_principal()

        async def work(session: AsyncSession) -> maintenance_pb2.SubmitSiteInspectionResponse:
            view = await inspections.submit(
                session,
                principal,
                self._field.desk.stations,
                submission,
                now=self._fnow(),
                follow_up=field_app.follow_up_work_order(principal),
            )
            return maintenance_pb2.SubmitSiteInspectionResponse(inspection=_inspection_message(view))

        return await self._fkeyed("SubmitSiteInspection", request, maintenance_pb2.SubmitSiteInspectionResponse, work)

    async def ListSiteInspections(
        self, request: maintenance_pb2.ListSiteInspectionsRequest, context: Any
    ) -> maintenance_pb2.ListSiteInspectionsResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("maintenance.ListSiteInspections") as session:
            views = await inspections.list_inspections(
                session,
                current_principal(),
                operator_id=request.operator_id,
                station_id=request.station_id,
                kind=int(request.kind),
                page=page,
            )
        last = views[-1].inspection.id if views else None
        return maintenance_pb2.ListSiteInspectionsResponse(
            inspections=[_inspection_message(v) for v in views], next_page_token=next_page_token(last, len(views), page)
        )

    async def ReportSafetyIncident(
        self, request: maintenance_pb2.ReportSafetyIncidentRequest, context: Any
    ) -> maintenance_pb2.ReportSafetyIncidentResponse:
        i = request.incident
        report = safety.Report(
            severity=int(i.severity),
            occurred_at=optional_datetime(i, "occur_time", "incident.occur_time", zero="unset"),
            description=i.description,
            station_id=i.station_id,
            operator_id=request.operator_id,
            people=tuple(i.people),
            actions=tuple(i.actions),
            photo_uris=tuple(i.photo_uris),
        )
        principal = current_principal()

        async def work(session: AsyncSession) -> maintenance_pb2.ReportSafetyIncidentResponse:
            row = await safety.report_incident(session, principal, self._field.desk.stations, report, now=self._fnow())
            return maintenance_pb2.ReportSafetyIncidentResponse(incident=_incident_message(row))

        return await self._fkeyed("ReportSafetyIncident", request, maintenance_pb2.ReportSafetyIncidentResponse, work)

    async def ListSafetyIncidents(
        self, request: maintenance_pb2.ListSafetyIncidentsRequest, context: Any
    ) -> maintenance_pb2.ListSafetyIncidentsResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("maintenance.ListSafetyIncidents") as session:
            rows = await safety.list_incidents(
                session,
                current_principal(),
                operator_id=request.operator_id,
                open_only=request.open_only,
                min_severity=int(request.min_severity),
                page=page,
            )
        last = rows[-1].id if rows else None
        return maintenance_pb2.ListSafetyIncidentsResponse(
            incidents=[_incident_message(r) for r in rows], next_page_token=next_page_token(last, len(rows), page)
        )

    async def CloseSafetyIncident(
        self, request: maintenance_pb2.CloseSafetyIncidentRequest, context: Any
    ) -> maintenance_pb2.CloseSafetyIncidentResponse:
        principal = current_principal()

        async def work(session: AsyncSession) -> maintenance_pb2.CloseSafetyIncidentResponse:
            row = await safety.close_incident(
                session, principal, request.incident_id, resolution=request.resolution, now=self._fnow()
            )
            return maintenance_pb2.CloseSafetyIncidentResponse(incident=_incident_message(row))

        return await self._fkeyed("CloseSafetyIncident", request, maintenance_pb2.CloseSafetyIncidentResponse, work)

    # battery health -----------------------------------------------------------------------------------------

    async def GetBatteryHealth(
        self, request: maintenance_pb2.GetBatteryHealthRequest, context: Any
    ) -> maintenance_pb2.GetBatteryHealthResponse:
        if not request.pack_id:
            raise InvalidArgument.for_field("pack_id", "is required")
        page = parse_page(request.page_size, request.page_token)
        after = _sample_key(page.after)
        start = optional_datetime(request, "start_time", zero="unset")
        end = optional_datetime(request, "end_time", zero="unset")
        async with self._db.transaction("maintenance.GetBatteryHealth") as session:
            h = await battery.health(
                session,
                current_principal(),
                self._field.desk.stations,
                request.pack_id,
                start=start,
                end=end,
                after_seq=after,
                page_size=page.size,
            )
        last = str(h.samples[-1].seq) if h.samples else None
        return maintenance_pb2.GetBatteryHealthResponse(
            pack_id=h.pack.pack_id,
            soh_permille=h.pack.soh_permille,
            samples=[
                maintenance_pb2.SohSample(
                    time=to_timestamp(s.at),
                    soh_permille=s.soh_permille,
                    cycle_count=s.cycles,
                    capacity_wh=h.pack.capacity_wh * s.soh_permille // 1000,
                    temperature_milli_c=s.temperature_milli_c,
                    power_w=s.power_w,
                )
                for s in h.samples
            ],
            trend_permille_per_100_cycles=h.trend_per_100_cycles,
            next_page_token=next_page_token(last, len(h.samples), page),
            cycle_count=h.pack.cycles,
            trend_permille_per_30_days=h.trend_per_30_days,
            hot_share_permille=h.hot_share_permille,
            max_temperature_milli_c=h.max_temperature_milli_c,
            fast_charge_share_permille=h.fast_charge_share_permille,
            retirement_threshold_permille=h.threshold_permille,
            predicted_retirement_month=h.predicted_month,
            fitted_samples=h.fitted,
            pack_state=h.pack.state,  # type: ignore[arg-type]
        )

    async def WithdrawPack(
        self, request: maintenance_pb2.WithdrawPackRequest, context: Any
    ) -> maintenance_pb2.WithdrawPackResponse:
        if not request.pack_id:
            raise InvalidArgument.for_field("pack_id", "is required")
        principal = current_principal()
        stations = self._field.desk.stations
        async with self._db.transaction("maintenance.WithdrawPack") as session:
            claim = await idempotency.claim_request(
                session, "WithdrawPack", principal.subject, request, now=self._fnow()
            )
            if (replay := idempotency.replayed(claim, maintenance_pb2.WithdrawPackResponse.FromString)) is not None:
                return replay
            done = await battery.withdraw(
                session, principal, stations, request.pack_id, reason=request.reason, now=self._fnow()
            )
        status = ""
        if done.changed and done.pack.station_id:  # after the commit: the station may answer slowly or not at all
            status = await stations.send_withdraw(
                done.pack.station_id, done.pack.pack_id, request.reason, WITHDRAW_ANSWER
            )
        response = maintenance_pb2.WithdrawPackResponse(
            pack_id=done.pack.pack_id,
            pack_state=done.pack.state,  # type: ignore[arg-type]
            station_id=done.pack.station_id or "",
            command_status=status,
        )
        async with self._db.transaction("maintenance.WithdrawPack.done") as session:
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def SetBatteryPolicy(
        self, request: maintenance_pb2.SetBatteryPolicyRequest, context: Any
    ) -> maintenance_pb2.SetBatteryPolicyResponse:
        principal = current_principal()
        operator_id = request.operator_id or _own_operator(principal)

        async def work(session: AsyncSession) -> maintenance_pb2.SetBatteryPolicyResponse:
            value = await battery.set_threshold(session, principal, operator_id, request.retirement_soh_permille)
            return maintenance_pb2.SetBatteryPolicyResponse(operator_id=operator_id, retirement_soh_permille=value)

        return await self._fkeyed("SetBatteryPolicy", request, maintenance_pb2.SetBatteryPolicyResponse, work)


# ---- maint-field: converters of the field RPCs --------------------------------------------------------------

_R = TypeVar("_R", bound=idempotency.Response)
WITHDRAW_ANSWER = dt.timedelta(seconds=10)


def _own_operator(principal: Principal) -> str:
    return principal.tenant.id if principal.tenant is not None and principal.tenant.kind == "operator" else ""


def _required_time(parent: Message, name: str, path: str) -> dt.datetime:
    found = optional_datetime(parent, name, path, zero="invalid")
    if found is None:
        raise InvalidArgument.for_field(path, "is required")
    return found


def _sample_key(after: str | None) -> int:
    if after is None:
        return 0
    if not after.isdigit():
        raise InvalidArgument.for_field("page_token", "is not a token this server issued")
    return int(after)


def _profile(e: maintenance_pb2.Engineer) -> engineers.Profile:
    home = parse_position("engineer.home_position", e.home_position.lat, e.home_position.lng)
    regions = []
    for i, r in enumerate(e.regions):
        sw = parse_position(f"engineer.regions[{i}].south_west", r.south_west.lat, r.south_west.lng)
        ne = parse_position(f"engineer.regions[{i}].north_east", r.north_east.lat, r.north_east.lng)
        regions.append(parse_box(f"engineer.regions[{i}]", sw, ne))
    shifts = []
    for i, w in enumerate(e.shifts):
        start = _required_time(w, "start", f"engineer.shifts[{i}].start")
        shifts.append(engineers.Shift(start, _required_time(w, "end", f"engineer.shifts[{i}].end")))
    return engineers.Profile(
        name=e.name,
        phone=e.phone,
        email=e.email,
        skills=tuple(e.skills),
        equipment_kinds=tuple(e.equipment_kinds),
        regions=tuple(regions),
        shifts=tuple(shifts),
        home_lat=home.lat,
        home_lng=home.lng,
    )


def _engineer_message(view: engineers.EngineerView, now: dt.datetime) -> maintenance_pb2.Engineer:
    e = view.engineer
    message = maintenance_pb2.Engineer(
        engineer_id=e.id,
        name=e.name,
        phone=e.phone,
        skills=view.skills,
        operator_id=e.operator_id,
        home_position=lat_lng_message(e.home_lat, e.home_lng),
        shifts=[common_pb2.TimeWindow(start=to_timestamp(s.start), end=to_timestamp(s.end)) for s in view.shifts],
        create_time=to_timestamp(e.created_at),
        equipment_kinds=view.equipment_kinds,
        regions=[
            common_pb2.BoundingBox(
                south_west=lat_lng_message(b.south, b.west), north_east=lat_lng_message(b.north, b.east)
            )
            for b in view.regions
        ],
        email=e.email,
        certificates=[_certificate_message(c, now) for c in view.certificates],
        retired=e.retired_at is not None,
        retire_time=to_timestamp(e.retired_at),
        version=e.version,
        available=e.available,
    )
    if e.lat is not None and e.lng is not None:
        message.position.CopyFrom(lat_lng_message(e.lat, e.lng))
    return message


def _certificate_message(c: EngineerCertificate, now: dt.datetime) -> maintenance_pb2.Certificate:
    return maintenance_pb2.Certificate(
        certificate_id=c.id,
        engineer_id=c.engineer_id,
        kind=c.kind,
        number=c.number,
        issue_time=to_timestamp(c.issued_at),
        expire_time=to_timestamp(c.expires_at),
        lapsed=c.expires_at <= now,
        operator_id=c.operator_id,
    )


async def _open_orders(session: AsyncSession, operator_id: str, ids: list[str]) -> list[WorkOrder]:
    query = select(WorkOrder).where(WorkOrder.operator_id == operator_id, WorkOrder.state == int(WorkOrderState.OPEN))
    if ids:
        query = query.where(col(WorkOrder.id).in_(ids))
    return list(await session.exec(query.order_by(col(WorkOrder.created_at)).limit(fielddispatch.MAX_BATCH)))


def _inspection_message(view: inspections.InspectionView) -> maintenance_pb2.SiteInspection:
    r = view.inspection
    return maintenance_pb2.SiteInspection(
        inspection_id=r.id,
        kind=r.kind,  # type: ignore[arg-type]
        station_id=r.station_id,
        items=[
            maintenance_pb2.InspectionItem(
                code=i.code,
                score=i.score,
                max_score=i.max_score,
                passed=i.passed,
                note=i.note,
                photo_uris=inspections.photo_uris(i),
                work_order_id=i.work_order_id or "",
            )
            for i in view.items
        ],
        score=r.score,
        max_score=r.max_score,
        inspector=common_pb2.Actor(subject_id=r.inspector_subject, role=r.inspector_role, tenant_id=r.operator_id),  # type: ignore[arg-type]
        submit_time=to_timestamp(r.submitted_at),
        operator_id=r.operator_id,
        business_date=r.business_date,
    )


def _incident_message(r: SafetyIncident) -> maintenance_pb2.SafetyIncident:
    return maintenance_pb2.SafetyIncident(
        incident_id=r.id,
        severity=r.severity,  # type: ignore[arg-type]
        station_id=r.station_id or "",
        occur_time=to_timestamp(r.occurred_at),
        description=r.description,
        people=json.loads(r.people),
        actions=json.loads(r.actions),
        closed=r.closed_at is not None,
        resolution=r.resolution,
        reported_by=common_pb2.Actor(subject_id=r.reporter_subject, role=r.reporter_role, tenant_id=r.operator_id),  # type: ignore[arg-type]
        report_time=to_timestamp(r.reported_at),
        close_time=to_timestamp(r.closed_at),
        operator_id=r.operator_id,
        photo_uris=json.loads(r.photo_uris),
    )


def _parts(detail: closedloop.Detail) -> tuple[Any, Any, Any]:
    return detail.order, detail.steps, detail.alarm_ids
