"""DispatchService servicer: the specialists' and vans' app stream and task reads. No rules here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import dispatch_pb2, dispatch_pb2_grpc
from voltcloud.config import Settings
from voltcloud.dispatch import planning, tasks
from voltcloud.dispatch.convert import (
    keyed,
    reoptimize_region,
    reoptimize_response,
    step_input,
    task_filter,
    task_message,
    task_of,
    time_budget_ms,
    unit_filter,
    unit_message,
    unit_spec,
)
from voltcloud.dispatch.hub import Connection, DispatchHub, Outgoing
from voltcloud.dispatch.models import Task
from voltcloud.engine import Engine
from voltcloud.ordering.api import Actor, Effects, OrderFeed, UnitOfWork
from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.enums import WorkerStatus
from voltcloud.platform.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from voltcloud.platform.geo import parse_position
from voltcloud.platform.limits import to_timestamp
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal
from voltcloud.stations.api import MobileUnit, inventory, units

WORKER_AVAILABLE, WORKER_BUSY, WORKER_ON_BREAK, WORKER_OFF_SHIFT = (int(s) for s in WorkerStatus)


class DispatchRuntime(Protocol):
    """What the servicer uses of the running power-up (`voltcloud.runtime.PowerUp`, built by server.py)."""

    @property
    def db(self) -> Database: ...

    @property
    def hub(self) -> DispatchHub: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def feed(self) -> OrderFeed: ...

    @property
    def uow(self) -> UnitOfWork: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def settings(self) -> Settings: ...


class DispatchServicer(dispatch_pb2_grpc.DispatchServiceServicer):
    def __init__(self, powerup: DispatchRuntime) -> None:
        self._p = powerup

    # ---- the app stream ---------------------------------------------------------------------------------

    async def _hello(self, principal: Principal, hello: dispatch_pb2.AppHello) -> MobileUnit:
        unit_id = hello.van_id or hello.specialist_id
        if not unit_id:
            raise InvalidArgument.for_field("hello.specialist_id", "is required")
        if principal.role is Role.SPECIALIST and principal.subject not in (hello.specialist_id, hello.van_id):
            raise PermissionDenied(f"{principal.subject} may not connect as {unit_id}")
        async with self._p.db.transaction("dispatch.hello") as session:
            unit = await session.get(MobileUnit, unit_id)
        if unit is None or unit.kind not in (tasks.UNIT_VAN, tasks.UNIT_SPECIALIST):
            raise NotFound(f"specialist or van {unit_id} not found")
        if not principal.is_admin and (principal.tenant is None or principal.tenant.id != unit.operator_id):
            raise NotFound(f"specialist or van {unit_id} not found")
        return unit

    async def Connect(
        self, request_iterator: AsyncIterator[dispatch_pb2.ConnectRequest], context: Any
    ) -> AsyncIterator[dispatch_pb2.ConnectResponse]:
        principal = current_principal()
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        if first.WhichOneof("msg") != "hello":
            raise FailedPrecondition("the first message of the stream must be a hello")
        unit = await self._hello(principal, first.hello)
        hub = self._p.hub
        conn = hub.connect(unit.id)
        conn.acked_seq = int(first.seq)
        conn.queue.put_nowait(Outgoing("ack", acked_seq=conn.acked_seq))
        await hub.resume(conn)
        reader = asyncio.create_task(self._read(principal, unit, conn, request_iterator))
        pump = asyncio.create_task(self._pump(conn))
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
                message = await self._outgoing(out)
                if message is not None:
                    yield message
        finally:
            hub.disconnect(conn)
            for job in (reader, pump):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, DomainError):
                    await job

    async def _pump(self, conn: Connection) -> None:
        """Delivers offers when woken (after a commit here, or by the sweep for other replicas' offers)."""
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            await self._p.hub.deliver_offers(conn)

    async def _outgoing(self, out: Outgoing) -> dispatch_pb2.ConnectResponse | None:
        if out.kind == "ack":
            return dispatch_pb2.ConnectResponse(ack=dispatch_pb2.AppAck(acked_seq=out.acked_seq))
        if out.kind == "cancel":
            return dispatch_pb2.ConnectResponse(
                cancellation=dispatch_pb2.TaskCancellation(task_id=out.task_id, reason=out.reason)
            )
        async with self._p.db.transaction("dispatch.task.read") as session:
            task = await session.get(Task, out.task_id)
            if task is None:
                return None
            view = tasks.TaskView(task, await tasks.steps_of(session, task.id))
        if out.kind == "offer":
            if task.state != tasks.TaskState.OFFERED:
                return None
            return dispatch_pb2.ConnectResponse(
                offer=dispatch_pb2.TaskOffer(task=task_message(view), respond_by=to_timestamp(out.respond_by))
            )
        return dispatch_pb2.ConnectResponse(update=dispatch_pb2.TaskUpdate(task=task_message(view), reason=out.reason))

    async def _read(
        self,
        principal: Principal,
        unit: MobileUnit,
        conn: Connection,
        requests: AsyncIterator[dispatch_pb2.ConnectRequest],
    ) -> None:
        async for message in requests:
            seq = int(message.seq)
            if seq and seq <= conn.acked_seq:
                conn.queue.put_nowait(Outgoing("ack", acked_seq=conn.acked_seq))  # a replayed duplicate
                continue
            task_id = ""
            try:
                task_id = await self._handle(principal, unit, message)
            except DomainError as error:
                if not task_id:
                    task_id = task_of(message)
                if not task_id:
                    raise
                # The stream stays up; the app learns why through an update of that task.
                conn.queue.put_nowait(Outgoing("update", task_id=task_id, reason=f"rejected: {error.message}"))
            conn.acked_seq = max(conn.acked_seq, seq)
            conn.queue.put_nowait(Outgoing("ack", acked_seq=conn.acked_seq))

    async def _handle(self, principal: Principal, unit: MobileUnit, message: dispatch_pb2.ConnectRequest) -> str:
        p = self._p
        actor = Actor.of(principal)
        now = p.clock.now()
        kind = message.WhichOneof("msg")
        if kind == "position":
            pos = parse_position("position.position", message.position.position.lat, message.position.position.lng)
            energy = int(message.position.van_energy_wh) if unit.kind == tasks.UNIT_VAN else None

            async def moved(session: AsyncSession, effects: Effects) -> list[str]:
                served = await tasks.move_worker(
                    session, effects, p.feed, unit_id=unit.id, lat=pos.lat, lng=pos.lng, energy_wh=energy
                )
                for order_id in served:  # other replicas' watchers of these orders
                    await p.feed.publish_position(session, order_id, pos.lat, pos.lng, now)
                return served

            for order_id in await p.uow.run("dispatch.position", moved):
                p.feed.move(order_id, pos.lat, pos.lng, None, now)
            return ""
        if kind == "status":
            status = int(message.status.status)
            if status not in (WORKER_AVAILABLE, WORKER_BUSY, WORKER_ON_BREAK, WORKER_OFF_SHIFT):
                raise InvalidArgument.for_field("status.status", f"unknown worker status {status}")
            if status == WORKER_BUSY:
                return ""

            async def availability(session: AsyncSession, effects: Effects) -> None:
                change = await inventory.set_unit_availability(session, unit.id, status == WORKER_AVAILABLE)
                if change:
                    effects.changes.append(change)

            await p.uow.run("dispatch.status", availability)
            return ""
        if kind == "accept":
            task_id = message.accept.task_id

            async def accept(session: AsyncSession, effects: Effects) -> None:
                await tasks.accept(session, effects, unit_id=unit.id, task_id=task_id, actor=actor, now=now)

            await p.uow.run("dispatch.accept", accept)
            return task_id
        if kind == "decline":
            task_id = message.decline.task_id
            reason = message.decline.reason

            async def decline(session: AsyncSession, effects: Effects) -> None:
                await tasks.decline(
                    session, effects, p.hub, p.engine, p.settings,
                    unit_id=unit.id, task_id=task_id, reason=reason, actor=actor, now=now, clock=p.clock,
                )  # fmt: skip

            await p.uow.run("dispatch.decline", decline)
            return task_id
        if kind == "step":
            step = step_input(message.step)
            await self._report(unit.id, step, actor)
            return step.task_id
        if kind == "hello":
            raise FailedPrecondition("hello may only be the first message")
        return ""

    async def _report(self, unit_id: str, step: tasks.StepInput, actor: Actor) -> tasks.TaskView:
        p = self._p
        now = p.clock.now()

        async def report(session: AsyncSession, effects: Effects) -> tasks.TaskView:
            return await tasks.report_step(
                session, effects, unit_id=unit_id, step=step, actor=actor, now=now, clock=p.clock
            )

        return await p.uow.run("dispatch.step", report)

    # ---- unary ------------------------------------------------------------------------------------------

    async def ListTasks(self, request: dispatch_pb2.ListTasksRequest, context: Any) -> dispatch_pb2.ListTasksResponse:
        page = parse_page(request.page_size, request.page_token)
        filters = task_filter(request)
        async with self._p.db.transaction("dispatch.tasks.list") as session:
            found = await tasks.list_tasks(session, current_principal(), filters, page)
        last = found[-1].task.id if found else None
        return dispatch_pb2.ListTasksResponse(
            tasks=[task_message(v) for v in found], next_page_token=next_page_token(last, len(found), page)
        )

    async def GetTask(self, request: dispatch_pb2.GetTaskRequest, context: Any) -> dispatch_pb2.GetTaskResponse:
        if not request.task_id:
            raise InvalidArgument.for_field("task_id", "is required")
        async with self._p.db.transaction("dispatch.tasks.get") as session:
            view = await tasks.get_task(session, current_principal(), request.task_id)
        return dispatch_pb2.GetTaskResponse(task=task_message(view))

    async def ReportTaskStep(
        self, request: dispatch_pb2.ReportTaskStepRequest, context: Any
    ) -> dispatch_pb2.ReportTaskStepResponse:
        principal = current_principal()
        step = step_input(request.step)
        async with self._p.db.transaction("dispatch.tasks.owner") as session:
            task = await session.get(Task, step.task_id)
        if task is None or not (principal.is_admin or principal.subject in (task.unit_id, task.offered_to)):
            raise NotFound(f"task {step.task_id} not found")
        unit_id = principal.subject if not principal.is_admin else task.unit_id or ""
        p = self._p
        now = p.clock.now()

        async def report(session: AsyncSession, effects: Effects) -> dispatch_pb2.ReportTaskStepResponse:
            async def first() -> dispatch_pb2.ReportTaskStepResponse:
                view = await tasks.report_step(
                    session, effects, unit_id=unit_id, step=step, actor=Actor.of(principal), now=now, clock=p.clock
                )
                return dispatch_pb2.ReportTaskStepResponse(task=task_message(view))

            parse = dispatch_pb2.ReportTaskStepResponse.FromString
            return await idempotency.once(session, "ReportTaskStep", principal.subject, request, parse, first, now=now)

        return await p.uow.run("dispatch.step", report)

    async def ReoptimizeNow(
        self, request: dispatch_pb2.ReoptimizeNowRequest, context: Any
    ) -> dispatch_pb2.ReoptimizeNowResponse:
        principal = current_principal()
        operator_id = request.operator_id or (principal.tenant.id if principal.tenant else "")
        if not operator_id and not principal.is_admin:
            raise InvalidArgument.for_field("operator_id", "is required")
        if operator_id:
            principal.require_tenant("operator", operator_id)
        region = reoptimize_region(request)
        budget_ms = time_budget_ms(request)
        p = self._p
        outcome = await planning.reoptimize(
            p.uow, p.clock, p.settings, p.hub, operator_id=operator_id or None, region=region, time_limit_ms=budget_ms,
            idempotency_key=request.idempotency_key, caller=principal.subject,
        )  # fmt: skip
        return reoptimize_response(outcome)

    # ---- fleet-swap: onboarding of the operator's workforce ---------------------------------------------------

    async def _keyed(self, name: str, request: Any, parse: Any, work: Any) -> Any:
        """One transaction: the key is claimed with the work, so a retry replays the first response."""
        keyed(request.idempotency_key)
        principal = current_principal()
        async with self._p.db.transaction(f"dispatch.{name}") as session:
            return await idempotency.once(
                session, f"DispatchService.{name}", principal.subject, request, parse, lambda: work(session),
                now=self._p.clock.now(),
            )  # fmt: skip

    async def CreateMobileUnit(
        self, request: dispatch_pb2.CreateMobileUnitRequest, context: Any
    ) -> dispatch_pb2.CreateMobileUnitResponse:
        spec = unit_spec(request.unit)

        async def work(session: AsyncSession) -> dispatch_pb2.CreateMobileUnitResponse:
            unit = await units.create_unit(session, current_principal(), spec)
            return dispatch_pb2.CreateMobileUnitResponse(unit=unit_message(unit))

        response: dispatch_pb2.CreateMobileUnitResponse = await self._keyed(
            "CreateMobileUnit", request, dispatch_pb2.CreateMobileUnitResponse.FromString, work
        )
        return response

    async def UpdateMobileUnit(
        self, request: dispatch_pb2.UpdateMobileUnitRequest, context: Any
    ) -> dispatch_pb2.UpdateMobileUnitResponse:
        fields = tuple(request.update_fields)
        changes = unit_spec(request.unit)

        async def work(session: AsyncSession) -> dispatch_pb2.UpdateMobileUnitResponse:
            unit = await units.update_unit(session, current_principal(), request.unit_id, changes, fields)
            return dispatch_pb2.UpdateMobileUnitResponse(unit=unit_message(unit))

        response: dispatch_pb2.UpdateMobileUnitResponse = await self._keyed(
            "UpdateMobileUnit", request, dispatch_pb2.UpdateMobileUnitResponse.FromString, work
        )
        return response

    async def RetireMobileUnit(
        self, request: dispatch_pb2.RetireMobileUnitRequest, context: Any
    ) -> dispatch_pb2.RetireMobileUnitResponse:
        async def work(session: AsyncSession) -> dispatch_pb2.RetireMobileUnitResponse:
            unit = await units.retire_unit(session, current_principal(), request.unit_id)
            return dispatch_pb2.RetireMobileUnitResponse(unit=unit_message(unit))

        response: dispatch_pb2.RetireMobileUnitResponse = await self._keyed(
            "RetireMobileUnit", request, dispatch_pb2.RetireMobileUnitResponse.FromString, work
        )
        return response

    async def ListMobileUnits(
        self, request: dispatch_pb2.ListMobileUnitsRequest, context: Any
    ) -> dispatch_pb2.ListMobileUnitsResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._p.db.transaction("dispatch.ListMobileUnits") as session:
            rows = await units.list_units(session, current_principal(), unit_filter(request), page)
        return dispatch_pb2.ListMobileUnitsResponse(
            units=[unit_message(u) for u in rows],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )
