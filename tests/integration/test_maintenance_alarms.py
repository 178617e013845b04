"""Alarms over real gRPC and the real uplink: raised by a station, de-duplicated, flapping kept open with one
work order, acknowledged (idempotently), cleared by the station and by a person; WatchAlarms follows it all
within the caller's scope."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest

from tests.stationkit import CHARGING_STATION, CONNECTOR, RawUplink, event, hello
from voltcloud.api.v1 import common_pb2, ingest_pb2
from voltcloud.api.v1 import maintenance_pb2 as m
from voltcloud.platform.auth import Role, Tenant

from .maintenance_support import OP1, callers, maintenance_platform

GW = "gw-maint-1"


def alarm_event(
    seq: int, code: str, *, level: int = common_pb2.ALARM_LEVEL_MAJOR, cleared: bool = False
) -> ingest_pb2.GatewayToPlatform:
    report = ingest_pb2.AlarmReport(resource_id=CONNECTOR, code=code, level=level, message=f"{code} on connector",
                                    cleared=cleared)  # fmt: skip
    return event(seq, alarm=report)


async def next_change(stream: object, timeout_s: float = 5.0) -> m.WatchAlarmsResponse:
    message = await asyncio.wait_for(stream.read(), timeout_s)  # type: ignore[attr-defined]
    assert message is not grpc.aio.EOF
    return message  # type: ignore[no-any-return]


async def test_station_alarms_dedup_flap_ack_clear_and_watch(tmp_path: Path, database_url: str) -> None:
    async with maintenance_platform(tmp_path, database_url, maintenance_flap_threshold=2) as (platform, stub):
        who = callers(platform)
        watch = stub.WatchAlarms(m.WatchAlarmsRequest(), metadata=who.operator)
        other_watch = stub.WatchAlarms(m.WatchAlarmsRequest(), metadata=who.other_operator)
        assert (await next_change(watch)).change == m.ALARM_CHANGE_SNAPSHOT
        assert (await next_change(other_watch)).change == m.ALARM_CHANGE_SNAPSHOT
        gateway = platform.tokens.mint(GW, Role.GATEWAY, Tenant("operator", OP1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.port}") as channel:
            uplink = RawUplink(channel, (("authorization", f"Bearer {gateway}"),))
            uplink.send(hello(GW, [CHARGING_STATION]))
            await uplink.read()
            # A level-3 (MAJOR) alarm opens a work order by the default rule.
            uplink.send(alarm_event(1, "E_OVERTEMP"))
            raised = await next_change(watch)
            assert raised.change == m.ALARM_CHANGE_RAISED
            alarm = raised.alarms[0]
            assert alarm.code == "E_OVERTEMP" and alarm.operator_id == OP1 and alarm.work_order_id
            # The same fault again while open: one alarm, occurrences 2, no second work order.
            uplink.send(alarm_event(2, "E_OVERTEMP"))
            repeated = await next_change(watch)
            assert repeated.change == m.ALARM_CHANGE_REPEATED
            assert repeated.alarms[0].alarm_id == alarm.alarm_id and repeated.alarms[0].occurrences == 2
            # Acknowledged twice: the first acknowledgement stands.
            ack = m.AcknowledgeAlarmRequest(idempotency_key="a1", alarm_id=alarm.alarm_id, note="looking")
            first = await stub.AcknowledgeAlarm(ack, metadata=who.operator)
            again = await stub.AcknowledgeAlarm(
                m.AcknowledgeAlarmRequest(idempotency_key="a2", alarm_id=alarm.alarm_id, note="again"),
                metadata=who.engineer,
            )
            assert first.alarm.state == m.ALARM_STATE_ACKNOWLEDGED and again.alarm.ack_time == first.alarm.ack_time
            assert again.alarm.ack_note == "looking"
            assert (await next_change(watch)).change == m.ALARM_CHANGE_ACKNOWLEDGED
            # The station says it cleared.
            uplink.send(alarm_event(3, "E_OVERTEMP", cleared=True))
            cleared = await next_change(watch)
            assert cleared.change == m.ALARM_CHANGE_CLEARED and cleared.alarms[0].state == m.ALARM_STATE_CLEARED
            # Raised again (2nd time in the window): a new alarm joining the open work order.
            uplink.send(alarm_event(4, "E_OVERTEMP"))
            second = (await next_change(watch)).alarms[0]
            assert second.alarm_id != alarm.alarm_id and second.work_order_id == alarm.work_order_id
            assert not second.flapping
            uplink.send(alarm_event(5, "E_OVERTEMP", cleared=True))
            assert (await next_change(watch)).change == m.ALARM_CHANGE_CLEARED
            # 3rd raise within the window (threshold 2): flapping; the station's clear leaves it open.
            uplink.send(alarm_event(6, "E_OVERTEMP"))
            flapping = await next_change(watch)
            assert flapping.change == m.ALARM_CHANGE_FLAPPING and flapping.alarms[0].flapping
            assert flapping.alarms[0].work_order_id == alarm.work_order_id
            uplink.send(alarm_event(7, "E_OVERTEMP", cleared=True))
            assert await uplink.ack_at_least(7) == 7
            await uplink.finish()
        listed = await stub.ListAlarms(m.ListAlarmsRequest(states=[m.ALARM_STATE_ACTIVE]), metadata=who.operator)
        assert [a.alarm_id for a in listed.alarms] == [flapping.alarms[0].alarm_id]
        orders = await stub.ListWorkOrders(m.ListWorkOrdersRequest(), metadata=who.operator)
        assert [o.work_order_id for o in orders.work_orders] == [alarm.work_order_id]
        # A person clears the flapping alarm.
        clear = m.ClearAlarmRequest(idempotency_key="c1", alarm_id=flapping.alarms[0].alarm_id, note="fan replaced")
        done = await stub.ClearAlarm(clear, metadata=who.engineer)
        assert done.alarm.state == m.ALARM_STATE_CLEARED
        assert (await next_change(watch)).change == m.ALARM_CHANGE_CLEARED
        # Another operator saw nothing, may not touch it, and may not filter on op-0001.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(other_watch.read(), 0.5)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.AcknowledgeAlarm(m.AcknowledgeAlarmRequest(alarm_id=alarm.alarm_id), metadata=who.other_operator)
        assert denied.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListAlarms(m.ListAlarmsRequest(operator_id=OP1), metadata=who.other_operator)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        watch.cancel()
        other_watch.cancel()


async def test_watch_filters_by_level_and_station(tmp_path: Path, database_url: str) -> None:
    from voltcloud.maintenance import api

    async with maintenance_platform(tmp_path, database_url) as (platform, stub):
        who = callers(platform)
        majors = stub.WatchAlarms(m.WatchAlarmsRequest(min_level=common_pb2.ALARM_LEVEL_MAJOR), metadata=who.operator)
        here = stub.WatchAlarms(m.WatchAlarmsRequest(station_id=CHARGING_STATION), metadata=who.operator)
        assert (await next_change(majors)).change == m.ALARM_CHANGE_SNAPSHOT
        assert (await next_change(here)).change == m.ALARM_CHANGE_SNAPSHOT
        now, station = dt.datetime.now(dt.UTC), api.ALARM_SOURCE_STATION
        async with platform.db.transaction() as session:
            for level, code, station_id in ((common_pb2.ALARM_LEVEL_WARNING, "W1", CHARGING_STATION),
                                            (common_pb2.ALARM_LEVEL_CRITICAL, "C1", "st-000001")):  # fmt: skip
                await api.raise_alarm(session, now=now, source=station, level=level, code=code, message=code,
                                      operator_id=OP1, station_id=station_id)  # fmt: skip
        assert (await next_change(majors)).alarms[0].code == "C1"
        assert (await next_change(here)).alarms[0].code == "W1"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(here.read(), 0.5)
        # A WARNING opens no work order by default; the CRITICAL one did.
        orders = await stub.ListWorkOrders(m.ListWorkOrdersRequest(), metadata=who.operator)
        assert [o.fault_code for o in orders.work_orders] == ["C1"]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await next_change(stub.WatchAlarms(m.WatchAlarmsRequest(station_id="st-000002"), metadata=who.operator))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        majors.cancel()
        here.cancel()


async def test_concurrent_raises_of_one_fault_make_one_alarm(tmp_path: Path, database_url: str) -> None:
    """Twenty transactions raise the same fault at once (as twenty gateway events on several replicas would):
    one alarm with twenty occurrences, one work order."""
    from voltcloud.maintenance import api

    async with maintenance_platform(tmp_path, database_url) as (platform, stub):

        async def raise_one() -> str:
            async with platform.db.transaction() as session:
                opened = await api.raise_alarm(
                    session, now=dt.datetime.now(dt.UTC), source=api.ALARM_SOURCE_STATION,
                    level=common_pb2.ALARM_LEVEL_CRITICAL, code="RACE", message="race", operator_id=OP1,
                    station_id=CHARGING_STATION, resource_id=CONNECTOR,
                )  # fmt: skip
            return opened.alarm_id

        ids = await asyncio.gather(*(raise_one() for _ in range(20)))
        assert len(set(ids)) == 1
        who = callers(platform)
        listed = await stub.ListAlarms(m.ListAlarmsRequest(station_id=CHARGING_STATION), metadata=who.operator)
        assert [(a.code, a.occurrences) for a in listed.alarms] == [("RACE", 20)]
        orders = await stub.ListWorkOrders(m.ListWorkOrdersRequest(), metadata=who.operator)
        assert len(orders.work_orders) == 1
