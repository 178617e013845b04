"""Engineer dispatch over real gRPC (SQLite and PostgreSQL): a level-3 station alarm's work order goes to the
nearest qualified engineer by road (never the nearer one whose certificate lapsed), the offer arrives on the
engineer's app stream, is accepted, and the engineer reports on site and the resolution; declines and timeouts
re-dispatch; PlanDispatch assigns several work orders jointly."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.conftest import RunningPlatform, channel_to, serving
from voltcloud.api.v1 import common_pb2, maintenance_pb2
from voltcloud.maintenance import api as maintenance
from voltcloud.maintenance import workorders
from voltcloud.maintenance.models import WorkOrder
from voltcloud.platform.auth import Role
from voltcloud.platform.clock import FrozenClock
from voltcloud.platform.enums import WorkOrderState as S
from voltcloud.server import Platform
from voltcloud.stations.models import Station

from .maintenance_field_support import OP, certify, md, operator, register, stations_of, stub

READ_S = 5.0


async def _alarm_work_order(
    platform: Platform, station: Station, *, certificate: str | None = "hv", code: str = "E_HV_INSULATION"
) -> str:
    """A level-3 (MAJOR) station alarm opens a work order; the fault needs an HV-certified engineer."""
    async with platform.db.transaction() as session:
        opened = await maintenance.raise_alarm(
            session, now=platform.field_hub.clock.now(), source=maintenance.ALARM_SOURCE_STATION, level=3,
            code=code, message="insulation fault on the charger bus", operator_id=OP,
            station_id=station.id,
        )  # fmt: skip
        assert opened.work_order_id
        order = await session.get(WorkOrder, opened.work_order_id)
        assert order is not None and order.state == int(S.OPEN)
        order.required_skills, order.required_certificate = json.dumps(["hv"]), certificate
        session.add(order)
        return opened.work_order_id


async def _crew(platform: Platform, api: Any, station: Station, now: dt.datetime) -> dict[str, str]:
    """Three HV engineers north of the station: `near` (its certificate lapsed yesterday), `mid`, `far`."""
    boss = operator(platform)
    ids = {}
    for name, offset in (("near", 0.002), ("mid", 0.02), ("far", 0.06)):
        eng = await register(api, boss, f"reg-{name}", name=name, at=(station.lat + offset, station.lng))
        ids[name] = eng.engineer_id
        expires = now - dt.timedelta(days=1) if name == "near" else now + dt.timedelta(days=365)
        await certify(api, boss, f"cert-{name}", eng.engineer_id, issued=now - dt.timedelta(days=700), expires=expires)
    return ids


class App:
    """An engineer's app: one EngineerConnect stream."""

    def __init__(self, platform: Platform, api: Any, engineer_id: str) -> None:
        self.call = api.EngineerConnect(metadata=md(platform, engineer_id, Role.ENGINEER))
        self.engineer_id = engineer_id
        self.seq = 0

    async def send(self, **msg: Any) -> None:
        self.seq += 1
        await self.call.write(maintenance_pb2.EngineerConnectRequest(seq=self.seq, **msg))

    async def next(self, kind: str) -> Any:
        """The next message of `kind`, skipping acks."""
        while True:
            reply = await asyncio.wait_for(self.call.read(), READ_S)
            assert reply is not grpc.aio.EOF, f"stream ended waiting for {kind}"
            got = reply.WhichOneof("msg")
            if got == kind:
                return getattr(reply, kind)
            assert got == "acked_seq", (kind, reply)

    async def hello(self) -> None:
        await self.send(hello=maintenance_pb2.EngineerHello(engineer_id=self.engineer_id))
        await self.next("acked_seq")


async def test_alarm_work_order_goes_to_the_nearest_certified_engineer_on_the_app_stream(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform, api = running.platform, stub(channel)
    boss = operator(platform)
    station = (await stations_of(platform))[0]
    now = platform.field_hub.clock.now()
    crew = await _crew(platform, api, station, now)
    work_order_id = await _alarm_work_order(platform, station)

    with pytest.raises(grpc.aio.AioRpcError) as lapsed:  # named explicitly, the lapsed one is refused
        await api.AssignWorkOrder(
            maintenance_pb2.AssignWorkOrderRequest(
                idempotency_key="a0", work_order_id=work_order_id, engineer_id=crew["near"]
            ),
            metadata=boss,
        )
    assert lapsed.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "lapsed" in (lapsed.value.details() or "")

    mid = App(platform, api, crew["mid"])
    await mid.hello()
    assigned = await api.AssignWorkOrder(
        maintenance_pb2.AssignWorkOrderRequest(idempotency_key="a1", work_order_id=work_order_id), metadata=boss
    )
    assert assigned.work_order.engineer_id == crew["mid"]  # not `near`, who is nearer
    assert assigned.work_order.state == maintenance_pb2.WORK_ORDER_STATE_ASSIGNED
    offer = await mid.next("offer")
    assert offer.work_order.work_order_id == work_order_id and offer.travel_s > 0
    assert offer.respond_by.ToDatetime(tzinfo=dt.UTC) > now

    await mid.send(
        position=maintenance_pb2.EngineerPosition(position=common_pb2.LatLng(lat=station.lat + 0.01, lng=station.lng))
    )
    await mid.send(accept=maintenance_pb2.EngineerAccept(work_order_id=work_order_id))
    update = await mid.next("update")
    assert update.work_order.state == maintenance_pb2.WORK_ORDER_STATE_ACCEPTED

    # On site, then resolved: the engineer's progress steps (maint-core's UpdateWorkOrderProgress).
    engineer_md = md(platform, crew["mid"], Role.ENGINEER)
    for key, state, extra in (
        ("p1", S.ON_SITE, {"position": common_pb2.LatLng(lat=station.lat, lng=station.lng), "note": "on site"}),
        ("p2", S.RESOLVED, {"conclusion": "insulation restored, bus re-tested"}),
    ):
        await api.UpdateWorkOrderProgress(
            maintenance_pb2.UpdateWorkOrderProgressRequest(
                idempotency_key=key, work_order_id=work_order_id, state=int(state), **extra
            ),
            metadata=engineer_md,
        )
    assert (await mid.next("update")).work_order.state == maintenance_pb2.WORK_ORDER_STATE_ON_SITE
    assert (await mid.next("withdrawn")).reason == "work order is resolved"  # off the app's list
    async with platform.db.transaction() as session:
        done = await session.get(WorkOrder, work_order_id)
        steps = await workorders.steps_of(session, work_order_id)
    assert done is not None and done.state == int(S.RESOLVED) and done.engineer_id == crew["mid"]
    assert [s.to_state for s in steps] == [int(s) for s in (S.OPEN, S.ASSIGNED, S.ACCEPTED, S.ON_SITE, S.RESOLVED)]
    got = await api.GetEngineer(maintenance_pb2.GetEngineerRequest(engineer_id=crew["mid"]), metadata=boss)
    assert got.engineer.position.lat == pytest.approx(station.lat + 0.01)
    mid.call.cancel()


async def test_decline_and_timeout_redispatch_to_the_next_nearest(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform, api = running.platform, stub(channel)
    clock = FrozenClock(dt.datetime.now(dt.UTC))
    platform.field_hub.clock = clock
    boss = operator(platform)
    station = (await stations_of(platform))[0]
    crew = await _crew(platform, api, station, clock.now())
    work_order_id = await _alarm_work_order(platform, station, certificate=None)  # `near` qualifies now
    near, mid = App(platform, api, crew["near"]), App(platform, api, crew["mid"])
    await near.hello()
    await mid.hello()
    await api.AssignWorkOrder(
        maintenance_pb2.AssignWorkOrderRequest(idempotency_key="d1", work_order_id=work_order_id), metadata=boss
    )
    assert (await near.next("offer")).work_order.work_order_id == work_order_id
    await near.send(decline=maintenance_pb2.EngineerDecline(work_order_id=work_order_id, reason="at another site"))
    assert (await mid.next("offer")).work_order.work_order_id == work_order_id  # the next nearest
    assert (await near.next("withdrawn")).work_order_id == work_order_id  # its app drops the declined offer
    await near.send(accept=maintenance_pb2.EngineerAccept(work_order_id=work_order_id))  # too late: rejected
    assert "not offered" in await near.next("rejected")

    clock.advance(dt.timedelta(seconds=platform.settings.engineer_offer_timeout_s + 1))  # `mid` never answers
    expired, _ = await platform.field_hub.sweep_once()
    assert expired == 1
    assert (await mid.next("withdrawn")).work_order_id == work_order_id
    async with platform.db.transaction() as session:
        order = await session.get(WorkOrder, work_order_id)
    assert order is not None and order.state == int(S.ASSIGNED) and order.engineer_id == crew["far"]
    for app in (near, mid):
        app.call.cancel()


async def test_a_lapsed_offer_is_swept_at_its_deadline_and_an_idle_desk_does_not_poll(
    tmp_path: Path, database_url: str
) -> None:
    """The sweep sleeps until the earliest offer deadline (idle safety net an hour away here): the offer is
    re-dispatched once it lapses, and while nothing is due the desk reads nothing (the old 50 ms period swept
    some twenty times a second)."""
    timing = {"maintenance_field_sweep_s": 0.05, "sweep_idle_s": 3600.0, "engineer_offer_timeout_s": 1.5}
    async with serving(tmp_path, database_url, **timing) as platform, channel_to(platform) as channel:
        api, boss, hub = stub(channel), operator(platform), platform.field_hub
        sweeps = 0
        sweep_once = hub.sweep_once

        async def counted() -> tuple[int, int]:
            nonlocal sweeps
            sweeps += 1
            return await sweep_once()

        hub.sweep_once = counted  # type: ignore[method-assign]
        station = (await stations_of(platform))[0]
        crew = await _crew(platform, api, station, hub.clock.now())
        work_order_id = await _alarm_work_order(platform, station, certificate=None)
        await asyncio.sleep(0.5)  # the registrations' wake-ups are swept
        before = sweeps
        await asyncio.sleep(1.0)
        assert sweeps - before <= 1, f"{sweeps - before} sweeps in an idle second"

        await api.AssignWorkOrder(
            maintenance_pb2.AssignWorkOrderRequest(idempotency_key="lapse", work_order_id=work_order_id),
            metadata=boss,
        )
        assert await _engineer_of(platform, work_order_id) == crew["near"]
        deadline = asyncio.get_running_loop().time() + 1.5 + 5.0
        while await _engineer_of(platform, work_order_id) == crew["near"]:  # nobody answers
            assert asyncio.get_running_loop().time() < deadline, "the lapsed offer was never swept"
            await asyncio.sleep(0.1)
        assert await _engineer_of(platform, work_order_id) == crew["mid"]


async def _engineer_of(platform: Platform, work_order_id: str) -> str | None:
    async with platform.db.transaction() as session:
        order = await session.get(WorkOrder, work_order_id)
    assert order is not None
    return order.engineer_id


async def test_plan_dispatch_assigns_jointly_not_greedily(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    platform, api = running.platform, stub(channel)
    boss = operator(platform)
    s1, s2 = (await stations_of(platform))[:2]
    now = platform.field_hub.clock.now()
    # `both` sits between the stations, a little nearer to s2; `one` is near s2 only. Greedy in order (s2's work
    # order first) would send `both` to s2 and leave s1 to `one`, far away; the joint plan sends `both` to s1.
    mid_lat, mid_lng = (s1.lat * 0.45 + s2.lat * 0.55), (s1.lng * 0.45 + s2.lng * 0.55)
    both = await register(api, boss, "p-both", name="both", at=(mid_lat, mid_lng))
    one = await register(api, boss, "p-one", name="one", at=(s2.lat + 0.001, s2.lng))
    for key, eng in (("cb", both), ("co", one)):
        await certify(
            api, boss, key, eng.engineer_id, issued=now - dt.timedelta(days=10), expires=now + dt.timedelta(days=300)
        )
    w2 = await _alarm_work_order(platform, s2)
    w1 = await _alarm_work_order(platform, s1)
    plan = await api.PlanDispatch(
        maintenance_pb2.PlanDispatchRequest(idempotency_key="plan", operator_id=OP, work_order_ids=[w2, w1]),
        metadata=boss,
    )
    chosen = {a.work_order_id: a.engineer_id for a in plan.assignments}
    assert chosen == {w1: both.engineer_id, w2: one.engineer_id}, plan
    assert not plan.unassigned_work_order_ids and plan.total_travel_s == sum(a.travel_s for a in plan.assignments)
    again = await api.PlanDispatch(
        maintenance_pb2.PlanDispatchRequest(idempotency_key="plan2", operator_id=OP), metadata=boss
    )
    assert not again.assignments  # nothing OPEN is left; both engineers are busy
    w3 = await _alarm_work_order(platform, s1, code="E_HV_BREAKER")  # another fault: its own work order
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await api.AssignWorkOrder(
            maintenance_pb2.AssignWorkOrderRequest(
                idempotency_key="busy", work_order_id=w3, engineer_id=both.engineer_id
            ),
            metadata=boss,
        )
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "busy" in (busy.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await api.PlanDispatch(
            maintenance_pb2.PlanDispatchRequest(idempotency_key="plan3", operator_id="op-0002"), metadata=boss
        )
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
async def replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Platform, Platform]]:
    quiet = {"maintenance_field_sweep_s": 0, "sweep_interval_s": 3600.0, "reoptimize_interval_s": 0}
    async with (
        serving(tmp_path / "a", database_url, **quiet) as a,  # migrates and seeds first
        serving(tmp_path / "b", database_url, seed_demo=False, **quiet) as b,
    ):
        yield a, b


async def test_an_offer_decided_on_one_replica_reaches_the_engineer_on_another(
    replicas: tuple[Platform, Platform],
) -> None:
    """Only the feed's "work_order" topic can carry it: replica B's sweep is off and nothing else reads offers."""
    a, b = replicas
    async with channel_to(a) as channel_a, channel_to(b) as channel_b:
        api_a = stub(channel_a)
        station = (await stations_of(a))[0]
        crew = await _crew(a, api_a, station, a.field_hub.clock.now())
        work_order_id = await _alarm_work_order(a, station)
        app = App(b, stub(channel_b), crew["mid"])
        try:
            await app.hello()
            boss = operator(a)
            await api_a.AssignWorkOrder(
                maintenance_pb2.AssignWorkOrderRequest(idempotency_key="r1", work_order_id=work_order_id), metadata=boss
            )
            assert (await app.next("offer")).work_order.work_order_id == work_order_id
            await api_a.AssignWorkOrder(  # the operator gives it to someone else: B's app drops it
                maintenance_pb2.AssignWorkOrderRequest(
                    idempotency_key="r2", work_order_id=work_order_id, engineer_id=crew["far"]
                ),
                metadata=boss,
            )
            withdrawn = await app.next("withdrawn")
            assert withdrawn.work_order_id == work_order_id and "another engineer" in withdrawn.reason
        finally:
            app.call.cancel()


async def test_availability_from_the_app_and_retirement(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    platform, api = running.platform, stub(channel)
    boss = operator(platform)
    station = (await stations_of(platform))[0]
    crew = await _crew(platform, api, station, platform.field_hub.clock.now())
    near = App(platform, api, crew["near"])
    await near.hello()
    await near.send(availability=maintenance_pb2.EngineerAvailability(available=False))
    await near.next("acked_seq")
    first = await _alarm_work_order(platform, station, certificate=None)
    assigned = await api.AssignWorkOrder(
        maintenance_pb2.AssignWorkOrderRequest(idempotency_key="v1", work_order_id=first), metadata=boss
    )
    assert assigned.work_order.engineer_id == crew["mid"]  # `near` said it is not available
    await near.send(availability=maintenance_pb2.EngineerAvailability(available=True))
    await near.next("acked_seq")
    second = await _alarm_work_order(platform, station, certificate=None, code="E_DOOR")
    assigned = await api.AssignWorkOrder(
        maintenance_pb2.AssignWorkOrderRequest(idempotency_key="v2", work_order_id=second), metadata=boss
    )
    assert assigned.work_order.engineer_id == crew["near"]
    assert (await near.next("offer")).work_order.work_order_id == second
    # Retired: the stream closes and the pending offer goes to the next engineer (`far`: `mid` is busy).
    await api.RetireEngineer(
        maintenance_pb2.RetireEngineerRequest(idempotency_key="v3", engineer_id=crew["near"], reason="left"),
        metadata=boss,
    )
    while (reply := await asyncio.wait_for(near.call.read(), READ_S)) is not grpc.aio.EOF:
        assert reply.WhichOneof("msg") in ("acked_seq", "withdrawn"), reply
    got = await api.GetWorkOrder(maintenance_pb2.GetWorkOrderRequest(work_order_id=second), metadata=boss)
    assert got.work_order.engineer_id == crew["far"]


async def test_automatic_dispatch_offers_an_alarm_work_order_without_an_operator(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url, engineer_autodispatch_s=0.2) as platform, channel_to(platform) as ch:
        api = stub(ch)
        station = (await stations_of(platform))[0]
        crew = await _crew(platform, api, station, platform.field_hub.clock.now())
        mid = App(platform, api, crew["mid"])
        try:
            await mid.hello()
            work_order_id = await _alarm_work_order(platform, station)  # needs hv: `near` has lapsed
            assert (await mid.next("offer")).work_order.work_order_id == work_order_id
        finally:
            mid.call.cancel()
