"""MaintenanceService servicer: each RPC converts its request (`convert`), asks the maintenance modules (which
hold every rule, including whose alarms and work orders the caller may see) and converts their answer back.

RPCs not overridden here answer UNIMPLEMENTED (the generated base). maint-core's RPCs come first; the engineers'
and field RPCs (maint-field) go in the block marked at the end of the class."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import maintenance_pb2, maintenance_pb2_grpc
from voltcloud.maintenance import access, alarms, analysis, closedloop, convert, notify, sla
from voltcloud.maintenance.ports import EquipmentDirectory
from voltcloud.maintenance.watch import AlarmHub
from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument, NotFound
from voltcloud.platform.limits import optional_datetime
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


def _parts(detail: closedloop.Detail) -> tuple[Any, Any, Any]:
    return detail.order, detail.steps, detail.alarm_ids
