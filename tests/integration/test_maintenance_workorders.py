"""The work order's closed loop over real gRPC: reported by scanning the equipment's code, assigned (as
dispatch does, through workorders.transition), accepted, on site, diagnosed, resolved, verified and closed,
reopened; every step with who, when, reason and conclusion; illegal moves, other tenants and stale versions
refused with the right status."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest

from tests.stationkit import CHARGING_STATION, CONNECTOR, SWAP_STATION
from voltcloud.api.v1 import common_pb2
from voltcloud.api.v1 import maintenance_pb2 as m
from voltcloud.maintenance import workorders
from voltcloud.platform.enums import WorkOrderState as S

from .conftest import field_violations
from .maintenance_support import OP1, callers, maintenance_platform

S_ = m.WorkOrderState


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_closed_loop_from_a_scanned_code(tmp_path: Path, database_url: str) -> None:
    async with maintenance_platform(tmp_path, database_url) as (platform, stub):
        who = callers(platform)
        report = m.ReportFaultRequest(
            idempotency_key="r1", equipment_code=f"voltcloud://c/{CHARGING_STATION}/{CONNECTOR}",
            description="cable cracked", photo_uris=["https://photos.example/1.jpg"], fault_code="CABLE",
        )  # fmt: skip
        order = (await stub.ReportFault(report, metadata=who.engineer)).work_order
        assert (order.equipment_kind, order.station_id, order.resource_id) == ("connector", CHARGING_STATION, CONNECTOR)
        assert order.operator_id == OP1 and order.state == S_.Value("WORK_ORDER_STATE_OPEN")
        assert order.reported_by == "eng-1" and order.level == common_pb2.ALARM_LEVEL_MAJOR
        assert order.resolve_by.ToDatetime() - order.create_time.ToDatetime() == dt.timedelta(hours=12)
        assert order.respond_by.ToDatetime() - order.create_time.ToDatetime() == dt.timedelta(minutes=15)
        assert [s.attachment_uris for s in order.steps] == [[], ["https://photos.example/1.jpg"]]
        again = (await stub.ReportFault(report, metadata=who.engineer)).work_order  # the same key: replayed
        assert again.work_order_id == order.work_order_id
        # Codes: an unknown one is NOT_FOUND, a malformed one names the field, another operator's is NOT_FOUND.
        for code, status in (("voltcloud://s/st-nope", "NOT_FOUND"), ("barcode-123", "INVALID_ARGUMENT"),
                             ("voltcloud://s/st-000002", "NOT_FOUND")):  # fmt: skip
            err = await refused(stub.ReportFault(m.ReportFaultRequest(equipment_code=code, description="x"),
                                                 metadata=who.operator))  # fmt: skip
            assert err.code().name == status, code
            if status == "INVALID_ARGUMENT":
                assert field_violations(err) == ["equipment_code"]
        lane_code = f"voltcloud://l/{SWAP_STATION}/1"
        lane = await stub.ReportFault(m.ReportFaultRequest(equipment_code=lane_code, description="lane door stuck"),
                                      metadata=who.operator)  # fmt: skip
        assert lane.work_order.equipment_kind == "lane"
        # Dispatch assigns (maint-field's AssignWorkOrder does this through transition).
        async with platform.db.transaction() as session:
            now = dt.datetime.now(dt.UTC)
            await workorders.transition(session, order.work_order_id, to_state=S.ASSIGNED, actor_id="dispatch",
                                        actor_role="platform", now=now, engineer_id="eng-1")  # fmt: skip
        wid = order.work_order_id

        async def step(state: int, md: object = who.engineer, **kw: object) -> m.WorkOrder:
            request = m.UpdateWorkOrderProgressRequest(work_order_id=wid, state=state, **kw)  # type: ignore[arg-type]
            return (await stub.UpdateWorkOrderProgress(request, metadata=md)).work_order  # type: ignore[arg-type]

        # Skipping a step is refused; a stale version too.
        assert (await refused(step(S.DIAGNOSED, conclusion="x"))).code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (await refused(step(S.ACCEPTED, expected_version=1))).code() == grpc.StatusCode.ABORTED
        await step(S.ACCEPTED, note="on my way")
        await step(S.IN_PROGRESS, position=common_pb2.LatLng(lat=31.2, lng=121.5), photo_uris=["https://p/2.jpg"])
        err = await refused(step(S.DIAGNOSED))
        assert field_violations(err) == ["conclusion"]
        await step(S.DIAGNOSED, conclusion="connector pins burnt")
        await step(0, note="waiting for parts", percent_complete=60)
        await step(S.ON_HOLD, reason="part on order")
        await step(S.DIAGNOSED, note="part arrived")  # back to where it was held
        # The engineer resolves; only the operator verifies and closes.
        resolved = (await stub.CloseWorkOrder(m.CloseWorkOrderRequest(work_order_id=wid, final_state=S.RESOLVED,
                    resolution="connector replaced"), metadata=who.engineer)).work_order  # fmt: skip
        assert resolved.state == S.RESOLVED and resolved.resolution == "connector replaced"
        denied = await refused(stub.CloseWorkOrder(m.CloseWorkOrderRequest(work_order_id=wid, final_state=S.CLOSED),
                                                   metadata=who.engineer))  # fmt: skip
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        hidden = await refused(stub.GetWorkOrder(m.GetWorkOrderRequest(work_order_id=wid), metadata=who.other_operator))
        assert hidden.code() == grpc.StatusCode.NOT_FOUND
        closed = (await stub.CloseWorkOrder(m.CloseWorkOrderRequest(work_order_id=wid, final_state=S.CLOSED,
                  resolution="verified on site"), metadata=who.operator)).work_order  # fmt: skip
        assert closed.state == S.CLOSED and closed.HasField("close_time")
        # Reopened (the operator, with a reason): OPEN again, nobody assigned, a fresh SLA clock.
        assert field_violations(await refused(stub.ReopenWorkOrder(m.ReopenWorkOrderRequest(work_order_id=wid),
                                                                   metadata=who.operator))) == ["reason"]  # fmt: skip
        reopened = (await stub.ReopenWorkOrder(m.ReopenWorkOrderRequest(work_order_id=wid, reason="failed again"),
                                               metadata=who.operator)).work_order  # fmt: skip
        assert reopened.state == S.OPEN and reopened.reopen_count == 1 and not reopened.engineer_id
        full = (await stub.GetWorkOrder(m.GetWorkOrderRequest(work_order_id=wid), metadata=who.engineer)).work_order
        moves = [(s.from_state, s.to_state) for s in full.steps]
        assert moves == [
            (0, S.OPEN), (S.OPEN, S.OPEN), (S.OPEN, S.ASSIGNED), (S.ASSIGNED, S.ACCEPTED), (S.ACCEPTED, S.ON_SITE),
            (S.ON_SITE, S.DIAGNOSED), (S.DIAGNOSED, S.DIAGNOSED), (S.DIAGNOSED, S.ON_HOLD), (S.ON_HOLD, S.DIAGNOSED),
            (S.DIAGNOSED, S.RESOLVED), (S.RESOLVED, S.CLOSED), (S.CLOSED, S.OPEN),
        ]  # fmt: skip
        by_state = {s.to_state: s for s in full.steps}
        assert (
            by_state[S.ON_SITE].position.lat == pytest.approx(31.2) and by_state[S.ON_SITE].actor.subject_id == "eng-1"
        )
        assert by_state[S.ON_SITE].attachment_uris == ["https://p/2.jpg"]
        assert by_state[S.ON_HOLD].reason == "part on order"
        assert by_state[S.RESOLVED].conclusion == "connector replaced"
        assert (
            by_state[S.CLOSED].actor.subject_id == "alice" and by_state[S.CLOSED].actor.role == common_pb2.ROLE_OPERATOR
        )
        assert by_state[S.OPEN].reason == "failed again" and full.diagnosis == "connector pins burnt"
        assert full.steps[6].percent_complete == 60 and full.steps[7].percent_complete == -1
        listed = await stub.ListWorkOrders(m.ListWorkOrdersRequest(states=[S.OPEN], equipment_kind="connector"),
                                           metadata=who.operator)  # fmt: skip
        assert [o.work_order_id for o in listed.work_orders] == [wid]


async def test_manual_work_order_links_alarms_and_close_clears_them(tmp_path: Path, database_url: str) -> None:
    from voltcloud.maintenance import api

    async with maintenance_platform(tmp_path, database_url) as (platform, stub):
        who = callers(platform)
        async with platform.db.transaction() as session:
            opened = await api.raise_alarm(session, now=dt.datetime.now(dt.UTC), source=api.ALARM_SOURCE_STATION,
                                           level=common_pb2.ALARM_LEVEL_WARNING, code="W9", message="door ajar",
                                           operator_id=OP1, station_id=SWAP_STATION)  # fmt: skip
        assert opened.work_order_id is None  # a warning opens none by default
        create = m.CreateWorkOrderRequest(idempotency_key="k", title="Door", station_id=SWAP_STATION,
                                          alarm_ids=[opened.alarm_id], equipment_kind="station")  # fmt: skip
        order = (await stub.CreateWorkOrder(create, metadata=who.operator)).work_order
        assert list(order.alarm_ids) == [opened.alarm_id] and order.operator_id == OP1
        foreign = m.CreateWorkOrderRequest(title="x", station_id="st-000002")
        assert (await refused(stub.CreateWorkOrder(foreign, metadata=who.operator))).code() == grpc.StatusCode.NOT_FOUND
        bad_kind = m.CreateWorkOrderRequest(title="x", station_id=SWAP_STATION, equipment_kind="toaster")
        assert field_violations(await refused(stub.CreateWorkOrder(bad_kind, metadata=who.operator))) == [
            "equipment_kind"
        ]
        no_reason = m.CloseWorkOrderRequest(work_order_id=order.work_order_id, final_state=S.CANCELLED)
        assert field_violations(await refused(stub.CloseWorkOrder(no_reason, metadata=who.operator))) == ["reason"]
        cancel = m.CloseWorkOrderRequest(work_order_id=order.work_order_id, final_state=S.CANCELLED, reason="dup",
                                         clear_alarms=True)  # fmt: skip
        assert (await stub.CloseWorkOrder(cancel, metadata=who.operator)).work_order.state == S.CANCELLED
        alarms = await stub.ListAlarms(m.ListAlarmsRequest(station_id=SWAP_STATION), metadata=who.operator)
        assert [(a.alarm_id, a.state) for a in alarms.alarms] == [(opened.alarm_id, m.ALARM_STATE_CLEARED)]
        # Cancelled is final: neither progress nor reopen.
        note = m.UpdateWorkOrderProgressRequest(work_order_id=order.work_order_id, note="hello")
        assert (
            await refused(stub.UpdateWorkOrderProgress(note, metadata=who.operator))
        ).code().name == "FAILED_PRECONDITION"
        reopen = m.ReopenWorkOrderRequest(work_order_id=order.work_order_id, reason="r")
        assert (await refused(stub.ReopenWorkOrder(reopen, metadata=who.operator))).code().name == "FAILED_PRECONDITION"
