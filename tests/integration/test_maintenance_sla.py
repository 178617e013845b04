"""SLA clocks and notifications over real gRPC, a real SMTP server and a real HTTP server, on a clock the test
moves: policy per operator and equipment kind, warning before the respond deadline, escalation to the supervisor
at it and to the operator after it, each once even with several timers racing (replicas); the notifier's
outbox delivers by email and webhook, retries with backoff and de-duplicates."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlmodel import select

from tests.stationkit import CHARGING_STATION, CONNECTOR
from voltcloud.api.v1 import common_pb2
from voltcloud.api.v1 import maintenance_pb2 as m
from voltcloud.maintenance import notify, workorders
from voltcloud.maintenance.models import Notification
from voltcloud.maintenance.sla_timer import SlaTimer
from voltcloud.platform.enums import WorkOrderState as S
from voltcloud.server import Platform

from .maintenance_support import OP1, OP2, callers, frozen_now, maintenance_platform, smtp_server, webhook_server

MIN = dt.timedelta(minutes=1)


def minutes(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=60 * n)


async def until(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # type: ignore[misc]  # noqa: ASYNC110 - the state is in the database
            await asyncio.sleep(0.05)


def prefs(kind: str, ident: str, **kw: object) -> m.SetNotificationPreferencesRequest:
    base = {"email_on": True, "sms_on": True, "webhook_on": True, "operator_id": OP1}
    return m.SetNotificationPreferencesRequest(
        preferences=m.NotificationPreferences(recipient_kind=kind, recipient_id=ident, **{**base, **kw})  # type: ignore[arg-type]
    )


async def test_sla_warning_and_escalations_notify_once(tmp_path: Path, database_url: str) -> None:
    clock = frozen_now()
    async with smtp_server() as smtp, webhook_server() as hook:  # noqa: SIM117 - the platform needs the port
        async with maintenance_platform(tmp_path, database_url, clock, smtp_host="127.0.0.1", smtp_port=smtp.port) as (
            platform,
            stub,
        ):
            who = callers(platform)
            await stub.SetNotificationPreferences(
                prefs("operator", OP1, email="ops@op1.example"), metadata=who.operator
            )
            await stub.SetNotificationPreferences(prefs("staff", "sup-1", webhook_url=hook.url, supervisor=True),
                                                  metadata=who.operator)  # fmt: skip
            await stub.SetNotificationPreferences(prefs("engineer", "eng-1", email="eng1@op1.example"),
                                                  metadata=who.engineer)  # fmt: skip
            rule = m.SlaPolicyRule(level=common_pb2.ALARM_LEVEL_MAJOR, equipment_kind="connector",
                                   respond_within=minutes(10), resolve_within=minutes(60), warn_before=minutes(2),
                                   escalate_after=minutes(5), auto_work_order=True)  # fmt: skip
            policy = await stub.SetSlaPolicy(
                m.SetSlaPolicyRequest(idempotency_key="p", rules=[rule]), metadata=who.operator
            )
            assert [r.respond_within.seconds for r in policy.rules] == [600]
            got = await stub.GetSlaPolicy(m.GetSlaPolicyRequest(), metadata=who.engineer)
            assert len(got.rules) == 1 and {d.respond_within.seconds for d in got.defaults} >= {900}
            order = (await stub.ReportFault(m.ReportFaultRequest(
                equipment_code=f"voltcloud://c/{CHARGING_STATION}/{CONNECTOR}", description="sparks"),
                metadata=who.operator)).work_order  # fmt: skip
            assert order.respond_by.ToDatetime(dt.UTC) == clock.now() + 10 * MIN
            created = await smtp.wait_for(1)
            assert created[0]["To"] == "ops@op1.example" and created[0]["Subject"].startswith("New work order")
            async with platform.db.transaction() as session:
                await workorders.transition(session, order.work_order_id, to_state=S.ASSIGNED, actor_id="dispatch",
                                            actor_role="platform", now=clock.now(), engineer_id="eng-1")  # fmt: skip
            mails = await smtp.wait_for(3)  # the engineer's assignment and the operator's progress
            assert {(x["To"], x["Subject"].split(":")[0]) for x in mails[1:]} == {
                ("eng1@op1.example", "Work order assigned to you"), ("ops@op1.example", "Work order assigned"),
            }  # fmt: skip

            async def fetch() -> m.WorkOrder:
                request = m.GetWorkOrderRequest(work_order_id=order.work_order_id)
                return (await stub.GetWorkOrder(request, metadata=who.operator)).work_order

            async def move(delta: dt.timedelta) -> None:
                clock.advance(delta)
                platform.maintenance.timer.wake()
                platform.maintenance.sender.wake()

            await move(7 * MIN)  # not yet: the warning is due at 8 minutes
            await asyncio.sleep(0.3)
            assert not (await fetch()).sla_warned
            await move(MIN + dt.timedelta(seconds=1))
            await until(lambda: _is(fetch, lambda o: o.sla_warned and not o.sla_breached))
            warning = (await smtp.wait_for(4))[3]
            assert warning["To"] == "eng1@op1.example" and warning["Subject"].startswith("SLA warning: respond")
            await move(2 * MIN)  # the respond deadline: breached, the supervisor (webhook) is told
            await until(lambda: _is(fetch, lambda o: o.sla_breached and o.escalation_level == 1))
            posts = await hook.wait_for(1)
            assert str(posts[0]["subject"]).startswith("SLA escalation (level 1): respond")
            await move(5 * MIN)  # five minutes later: the operator
            await until(lambda: _is(fetch, lambda o: o.escalation_level == 2))
            escalation = (await smtp.wait_for(5))[4]
            assert escalation["To"] == "ops@op1.example" and "level 2" in escalation["Subject"]
            full = await fetch()
            sla_steps = [
                s.reason for s in full.steps if s.actor.subject_id == "platform" and s.reason.startswith("SLA")
            ]
            assert [r.split(":")[0] for r in sla_steps] == [
                "SLA warning", "SLA escalation to the supervisor", "SLA escalation to the operator",
            ]  # fmt: skip
            # On site: the respond clock stops; nothing more until the resolve deadline's warning (58 min).
            await stub.UpdateWorkOrderProgress(m.UpdateWorkOrderProgressRequest(work_order_id=order.work_order_id,
                                               state=S.ACCEPTED), metadata=who.engineer)  # fmt: skip
            await stub.UpdateWorkOrderProgress(m.UpdateWorkOrderProgressRequest(work_order_id=order.work_order_id,
                                               state=S.ON_SITE), metadata=who.engineer)  # fmt: skip
            await move(30 * MIN)
            await asyncio.sleep(0.3)
            assert len([s for s in (await fetch()).steps if s.actor.subject_id == "platform"]) == 3
            # Other operators neither see nor set this operator's policy.
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.GetSlaPolicy(m.GetSlaPolicyRequest(operator_id=OP1), metadata=who.other_operator)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as not_theirs:
                await stub.SetNotificationPreferences(
                    prefs("operator", OP1, operator_id=OP1), metadata=who.other_operator
                )
            assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert OP2


async def _is(fetch: Callable[[], object], test: Callable[[m.WorkOrder], bool]) -> bool:
    return test(await fetch())  # type: ignore[misc]


async def test_racing_timers_fire_each_event_once(tmp_path: Path, database_url: str) -> None:
    """Three timers (as on three replicas) race over twenty due orders: every event fires exactly once."""
    clock = frozen_now()
    async with maintenance_platform(tmp_path, database_url, clock, maintenance_timers=False) as (platform, stub):
        who = callers(platform)
        for i in range(20):
            await stub.CreateWorkOrder(m.CreateWorkOrderRequest(title=f"wo {i}", station_id=CHARGING_STATION,
                                       level=common_pb2.ALARM_LEVEL_CRITICAL), metadata=who.operator)  # fmt: skip
        clock.advance(dt.timedelta(minutes=50))  # past the respond warning, deadline and escalation (15+30 min)
        timers = [SlaTimer(platform.db, clock) for _ in range(3)]
        fired = await asyncio.gather(*(t.fire_due() for t in timers))
        assert sum(fired) == 20 * 3, fired
        assert sum(await asyncio.gather(*(t.fire_due() for t in timers))) == 0
        listed = await stub.ListWorkOrders(m.ListWorkOrdersRequest(sla_breached_only=True), metadata=who.operator)
        assert len(listed.work_orders) == 20 and all(o.escalation_level == 2 for o in listed.work_orders)
        async with platform.db.transaction() as session:
            rows = list(await session.exec(select(Notification.dedup_key)))
        assert len(rows) == len(set(rows))


async def test_webhook_retries_with_backoff_and_dedups(tmp_path: Path, database_url: str) -> None:
    clock = frozen_now()
    async with (
        webhook_server(fail_first=2) as hook,
        maintenance_platform(tmp_path, database_url, clock, notify_backoff_s=30) as (platform, stub),
    ):
        who = callers(platform)
        await stub.SetNotificationPreferences(prefs("operator", OP1, webhook_url=hook.url), metadata=who.operator)
        async with platform.db.transaction() as session:
            kw = {"operator_id": OP1, "recipient_kind": "operator", "recipient_id": OP1, "topic": "test"}
            first = await notify.enqueue(session, **kw, subject="hello", body="b", dedup_key="k1", now=clock.now())
            second = await notify.enqueue(session, **kw, subject="hello", body="b", dedup_key="k1", now=clock.now())
        assert (first, second) == (True, False)
        sender = platform.maintenance.sender
        await until(lambda: _attempts(platform, 1))
        assert hook.attempts == 1 and not hook.posts
        clock.advance(dt.timedelta(seconds=29))
        sender.wake()
        await asyncio.sleep(0.3)
        assert hook.attempts == 1  # the backoff (30 s) has not passed
        clock.advance(dt.timedelta(seconds=2))
        sender.wake()
        await until(lambda: _attempts(platform, 2))
        clock.advance(dt.timedelta(seconds=61))  # second backoff: 60 s
        sender.wake()
        posts = await hook.wait_for(1)
        assert posts[0]["subject"] == "hello" and hook.keys == ["k1:webhook"]

        async def sent() -> bool:
            async with platform.db.transaction() as session:
                row = (await session.exec(select(Notification))).one()
            return (row.state, row.attempts, row.channel) == (notify.SENT, 3, "webhook")

        await until(sent)


async def _attempts(platform: Platform, n: int) -> bool:
    async with platform.db.transaction() as session:
        rows = list(await session.exec(select(Notification.attempts)))
    return bool(rows) and rows[0] >= n and platform.maintenance.sender is not None
