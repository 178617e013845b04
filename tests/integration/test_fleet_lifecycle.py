"""Vehicle and driver lifecycle over real gRPC (SQLite + PostgreSQL): a fleet's vehicle updated (checked as at
registration) and retired (no new quote or order; still listed, with its history); a driver updated, suspended
(no ordering, no applying elsewhere), reinstated and removed from the fleet."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from voltcloud.api.v1 import (
    common_pb2,
    fleet_pb2,
    fleet_pb2_grpc,
    ordering_pb2,
    ordering_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.platform.auth import Role, Tenant

from .conftest import RunningPlatform, field_violations
from .fleet_support import OTHER_VIN, md, onboard


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def _quote(running: RunningPlatform, channel: grpc.aio.Channel, vehicle_id: str, who: Any) -> Any:
    admin = md(running, "admin", Role.PLATFORM_ADMIN)
    station = (
        await stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(page_size=1), metadata=admin
        )
    ).stations[0]
    return await ordering_pb2_grpc.OrderingServiceStub(channel).QuotePowerUp(
        ordering_pb2.QuotePowerUpRequest(
            vehicle_id=vehicle_id, position=station.position, soc_permille=250, target_soc_permille=800
        ),
        metadata=who,
    )


async def test_vehicle_update_and_retire(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    f = await onboard(running, channel, funded=0, allocated=0, tag="vl")
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    vid = f.vehicle.vehicle_id

    def update(key: str, fields: list[str], **values: Any) -> Any:
        request = fleet_pb2.UpdateVehicleRequest(
            idempotency_key=key, vehicle_id=vid, vehicle=fleet_pb2.Vehicle(**values), update_fields=fields
        )
        return fleets.UpdateVehicle(request, metadata=f.manager)

    changed = (await update("u1", ["plate", "consumption_wh_per_km", "pack_type_id"], plate="沪A·F0001",
                            consumption_wh_per_km=210, pack_type_id="1")).vehicle  # fmt: skip
    assert (changed.plate, changed.consumption_wh_per_km, changed.pack_type_id) == ("沪A·F0001", 210, "1")
    assert changed.battery_capacity_wh == 60_000 and changed.model_id == "e-van 2"  # unnamed fields kept
    got = (await fleets.GetVehicle(fleet_pb2.GetVehicleRequest(vehicle_id=vid), metadata=f.manager)).vehicle
    assert got.plate == "沪A·F0001" and got.consumption_wh_per_km == 210
    # Checked as at registration, on the merged description; nothing written when refused.
    for fields, values, field in (
        ([], {}, "update_fields"),
        (["vin"], {"vin": OTHER_VIN}, "update_fields"),
        (["battery_capacity_wh"], {"battery_capacity_wh": 0}, "vehicle.battery_capacity_wh"),
        (["pack_type_id"], {"pack_type_id": "999"}, "vehicle.pack_type_id"),
        (["connector_standards"], {"connector_standards": []}, "vehicle.connector_standards"),
        (["connector_standards", "max_dc_power_w"], {"connector_standards": [common_pb2.CONNECTOR_STANDARD_GBT_DC]},
         "vehicle.max_dc_power_w"),  # a DC inlet with no DC power
    ):  # fmt: skip
        err = await _error(update(f"bad-{field}-{len(fields)}", fields, **values))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == [field], field
    # The fleet's driver sees the vehicle but changes nothing; another fleet's manager cannot find it.
    err = await _error(
        fleets.UpdateVehicle(
            fleet_pb2.UpdateVehicleRequest(
                idempotency_key="d1", vehicle_id=vid, vehicle=fleet_pb2.Vehicle(plate="X-1"), update_fields=["plate"]
            ),
            metadata=f.driver_md,
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    stranger = md(running, "mgr-x", Role.FLEET_MANAGER, Tenant("fleet", "fl-nope"))
    err = await _error(
        fleets.RetireVehicle(
            fleet_pb2.RetireVehicleRequest(idempotency_key="x", vehicle_id=vid, reason="r"), metadata=stranger
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND

    quote = await _quote(running, channel, vid, f.driver_md)
    assert quote.quote_id  # in service: quotes
    err = await _error(
        fleets.RetireVehicle(fleet_pb2.RetireVehicleRequest(idempotency_key="r0", vehicle_id=vid), metadata=f.manager)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["reason"]
    retired = (
        await fleets.RetireVehicle(
            fleet_pb2.RetireVehicleRequest(idempotency_key="r1", vehicle_id=vid, reason="sold"), metadata=f.manager
        )
    ).vehicle
    assert retired.HasField("retire_time") and retired.retire_reason == "sold"
    # No new quote or order; the vehicle stays listed (history kept); it changes no more.
    err = await _error(_quote(running, channel, vid, f.driver_md))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "retired" in (err.details() or "")
    err = await _error(
        ordering_pb2_grpc.OrderingServiceStub(channel).CreateOrder(
            ordering_pb2.CreateOrderRequest(
                idempotency_key="o1", quote_id=quote.quote_id, option_id=quote.options[0].option_id
            ),
            metadata=f.driver_md,
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = (
        await fleets.ListVehicles(fleet_pb2.ListVehiclesRequest(fleet_id=f.fleet.fleet_id), metadata=f.manager)
    ).vehicles
    assert [v.retire_reason for v in listed] == ["sold"]
    err = await _error(update("u2", ["plate"], plate="沪A·F0002"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    token = fleet_pb2.IssueChargingTokenRequest(
        idempotency_key="t1", fleet_id=f.fleet.fleet_id, vehicle_id=vid, id_tag="RETIRED01", operator_id="op-0001"
    )
    err = await _error(fleets.IssueChargingToken(token, metadata=f.manager))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "retired" in (err.details() or "")
    again = await fleets.RetireVehicle(
        fleet_pb2.RetireVehicleRequest(idempotency_key="r1", vehicle_id=vid, reason="sold"), metadata=f.manager
    )
    assert again.vehicle == retired  # a retry replays


async def test_driver_update_suspend_remove(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    f = await onboard(running, channel, funded=0, allocated=0, tag="dl")
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    fid, did = f.fleet.fleet_id, f.driver.driver_id

    def update(key: str, fields: list[str], **values: Any) -> Any:
        request = fleet_pb2.UpdateDriverRequest(
            idempotency_key=key, fleet_id=fid, driver_id=did, driver=fleet_pb2.Driver(**values), update_fields=fields
        )
        return fleets.UpdateDriver(request, metadata=f.manager)

    changed = (await update("u1", ["phone", "sub_fleet_id", "vehicle_ids"], phone="+8613800000000")).driver
    assert changed.phone == "+8613800000000" and changed.sub_fleet_id == "" and list(changed.vehicle_ids) == []
    assert changed.name == "Li Wei"
    err = await _error(update("u2", ["phone"], phone="12345"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["driver.phone"]
    err = await _error(update("u3", ["status"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["update_fields"]
    err = await _error(update("u4", ["vehicle_ids"], vehicle_ids=["veh-nope"]))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    def suspend(key: str, suspended: bool, reason: str = "") -> Any:
        request = fleet_pb2.SuspendDriverRequest(
            idempotency_key=key, fleet_id=fid, driver_id=did, suspended=suspended, reason=reason
        )
        return fleets.SuspendDriver(request, metadata=f.manager)

    assert (await _quote(running, channel, f.vehicle.vehicle_id, f.driver_md)).quote_id
    err = await _error(suspend("s0", True))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["reason"]
    suspended = (await suspend("s1", True, "late returns")).driver
    assert suspended.status == fleet_pb2.DRIVER_STATUS_SUSPENDED and suspended.fleet_id == ""
    assert suspended.rejection_reason == "late returns"
    # Suspended: no ordering for the fleet's vehicles, no applying to another fleet; still listed.
    err = await _error(_quote(running, channel, f.vehicle.vehicle_id, f.driver_md))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await _error(
        fleets.RegisterDriver(
            fleet_pb2.RegisterDriverRequest(
                idempotency_key="apply", driver=fleet_pb2.Driver(name="Li Wei", fleet_id=fid)
            ),
            metadata=f.driver_md,
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = (await fleets.ListDrivers(fleet_pb2.ListDriversRequest(fleet_id=fid), metadata=f.manager)).drivers
    assert [(d.driver_id, d.status) for d in listed] == [(did, fleet_pb2.DRIVER_STATUS_SUSPENDED)]
    err = await _error(suspend("s2", True, "again"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    reinstated = (await suspend("s3", False)).driver
    assert reinstated.status == fleet_pb2.DRIVER_STATUS_APPROVED and reinstated.fleet_id == fid
    assert (await _quote(running, channel, f.vehicle.vehicle_id, f.driver_md)).quote_id

    # Removed: out of the fleet (no ordering), listed as removed; may apply again, and only then.
    stranger = md(running, "mgr-x", Role.FLEET_MANAGER, Tenant("fleet", "fl-nope"))
    err = await _error(
        fleets.RemoveDriver(
            fleet_pb2.RemoveDriverRequest(idempotency_key="x", fleet_id=fid, driver_id=did, reason="r"),
            metadata=stranger,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    removed = (
        await fleets.RemoveDriver(
            fleet_pb2.RemoveDriverRequest(idempotency_key="rm", fleet_id=fid, driver_id=did, reason="left"),
            metadata=f.manager,
        )
    ).driver
    assert removed.status == fleet_pb2.DRIVER_STATUS_REMOVED and removed.fleet_id == "" and removed.account_id
    err = await _error(_quote(running, channel, f.vehicle.vehicle_id, f.driver_md))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await _error(update("u5", ["name"], name="Li"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    applied = await fleets.RegisterDriver(
        fleet_pb2.RegisterDriverRequest(idempotency_key="apply2", driver=fleet_pb2.Driver(name="Li Wei", fleet_id=fid)),
        metadata=f.driver_md,
    )
    assert applied.driver.status == fleet_pb2.DRIVER_STATUS_PENDING
