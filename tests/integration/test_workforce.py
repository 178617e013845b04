"""Onboarding of the operator's workforce over real gRPC (SQLite + PostgreSQL): a van and a valet specialist
created, changed and retired through DispatchService; the engine loads a new unit from the feed, offers an
on-shift unit and never a retired one; another operator's units cannot be seen or changed."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tests.stationkit import OPERATOR, OTHER_OPERATOR
from voltcloud.api.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc
from voltcloud.platform.auth import Role, Tenant
from voltcloud.stations.api import inventory

from .conftest import RunningPlatform, field_violations

HOME = common_pb2.LatLng(lat=31.2304, lng=121.4737)


def van(**fields: Any) -> dispatch_pb2.MobileUnit:
    values: dict[str, Any] = dict(
        kind=dispatch_pb2.MOBILE_UNIT_KIND_VAN, name="Van 7", home=HOME, energy_on_board_wh=120_000,
        connector_standards=[common_pb2.CONNECTOR_STANDARD_GBT_DC], regions=["sh-pudong", "sh-xuhui"],
        shift_start_s=7 * 3600, shift_end_s=19 * 3600,
    )  # fmt: skip
    values.update(fields)
    return dispatch_pb2.MobileUnit(**values)


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def until(check: Any, wait_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_vans_and_specialists_onboarded_changed_retired(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    stub = dispatch_pb2_grpc.DispatchServiceStub(channel)
    md = running.metadata(Role.OPERATOR, Tenant("operator", OPERATOR))
    other = running.metadata(Role.OPERATOR, Tenant("operator", OTHER_OPERATOR))
    engine = running.platform.powerup.engine

    def create(key: str, unit: dispatch_pb2.MobileUnit, who: Any = md) -> Any:
        return stub.CreateMobileUnit(dispatch_pb2.CreateMobileUnitRequest(idempotency_key=key, unit=unit), metadata=who)

    # Bad descriptions are refused, naming the field; nothing is written.
    for key, unit, field in (
        ("b1", van(home=None), "unit.home"),
        ("b2", van(kind=dispatch_pb2.MOBILE_UNIT_KIND_ENGINEER), "unit.kind"),
        ("b3", van(energy_on_board_wh=0), "unit.energy_on_board_wh"),
        ("b4", van(connector_standards=[]), "unit.connector_standards"),
        ("b5", van(regions=["sh pudong"]), "unit.regions"),
        ("b6", van(shift_end_s=3600), "unit.shift_end_s"),
        ("b7", van(home=common_pb2.LatLng(lat=91, lng=0)), "unit.home.lat"),
        ("b8", van(kind=dispatch_pb2.MOBILE_UNIT_KIND_SPECIALIST), "unit.energy_on_board_wh"),
    ):
        err = await _error(create(key, unit))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == [field], key
    err = await _error(create("b9", van(operator_id=OTHER_OPERATOR)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

    created = (await create("v1", van())).unit
    assert created.operator_id == OPERATOR and created.status == dispatch_pb2.MOBILE_UNIT_STATUS_OFF_SHIFT
    assert list(created.regions) == ["sh-pudong", "sh-xuhui"] and created.energy_on_board_wh == 120_000
    assert (await create("v1", van())).unit == created  # a retry replays
    specialist = (
        await create(
            "s1",
            van(kind=dispatch_pb2.MOBILE_UNIT_KIND_SPECIALIST, name="Zhang", energy_on_board_wh=0,
                connector_standards=[], skills=0b101),
        )
    ).unit  # fmt: skip
    assert specialist.skills == 0b101
    # The engine learns of both from the feed ("unit").
    await until(lambda: engine.unit(created.unit_id) is not None and engine.unit(specialist.unit_id) is not None)

    # Changed: checked on the merged description; the engine rebuilds with it.
    update = dispatch_pb2.UpdateMobileUnitRequest(
        idempotency_key="u1", unit_id=created.unit_id, unit=van(energy_on_board_wh=90_000, regions=["sh-minhang"]),
        update_fields=["energy_on_board_wh", "regions"],
    )  # fmt: skip
    changed = (await stub.UpdateMobileUnit(update, metadata=md)).unit
    assert changed.energy_on_board_wh == 90_000 and list(changed.regions) == ["sh-minhang"]
    assert changed.name == "Van 7" and changed.version == created.version + 1
    await until(lambda: getattr(engine.unit(created.unit_id), "energy_wh", 0) == 90_000)
    bad = dispatch_pb2.UpdateMobileUnitRequest(
        idempotency_key="u2", unit_id=specialist.unit_id, unit=van(), update_fields=["energy_on_board_wh"]
    )
    err = await _error(stub.UpdateMobileUnit(bad, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["unit.energy_on_board_wh"]
    # Another operator sees none of them and changes nothing.
    update.idempotency_key = "x1"
    err = await _error(stub.UpdateMobileUnit(update, metadata=other))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    theirs = (await stub.ListMobileUnits(dispatch_pb2.ListMobileUnitsRequest(), metadata=other)).units
    assert not {u.unit_id for u in theirs} & {created.unit_id, specialist.unit_id}

    # On shift (as its app would say), the specialist is offered; a busy van cannot retire.
    async with running.platform.db.transaction() as session:
        await inventory.set_unit_availability(session, specialist.unit_id, True)
        await inventory.set_unit_availability(session, created.unit_id, True)
        await inventory.reserve_unit(session, created.unit_id)

    def offered(unit_id: str) -> bool:
        near = engine.nearest_units(HOME.lat, HOME.lng, k=500, radius_m=5_000, idle_only=True)
        return any(info.id == unit_id for info, _ in near)

    await until(lambda: offered(specialist.unit_id))
    retire = dispatch_pb2.RetireMobileUnitRequest
    err = await _error(stub.RetireMobileUnit(retire(idempotency_key="r0", unit_id=created.unit_id), metadata=md))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    retired = (await stub.RetireMobileUnit(retire(idempotency_key="r1", unit_id=specialist.unit_id), metadata=md)).unit
    assert retired.status == dispatch_pb2.MOBILE_UNIT_STATUS_RETIRED
    await until(lambda: not offered(specialist.unit_id))  # never offered again
    async with running.platform.db.transaction() as session:
        assert await inventory.set_unit_availability(session, specialist.unit_id, True) is None  # stays retired
    listed = (await stub.ListMobileUnits(dispatch_pb2.ListMobileUnitsRequest(), metadata=md)).units
    assert created.unit_id in {u.unit_id for u in listed} and specialist.unit_id not in {u.unit_id for u in listed}
    gone = dispatch_pb2.ListMobileUnitsRequest(status=dispatch_pb2.MOBILE_UNIT_STATUS_RETIRED)
    assert [u.unit_id for u in (await stub.ListMobileUnits(gone, metadata=md)).units] == [specialist.unit_id]
    again = dispatch_pb2.UpdateMobileUnitRequest(
        idempotency_key="u3", unit_id=specialist.unit_id, unit=van(name="Z"), update_fields=["name"]
    )
    err = await _error(stub.UpdateMobileUnit(again, metadata=md))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
