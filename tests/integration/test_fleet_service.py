"""FleetService over real gRPC: a fleet onboarded from the API alone (no seeded fleet, vehicle or driver) until
its driver quotes a power-up for the new vehicle on the demo world's stations; the rules at the edges."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from voltcloud.api.v1 import (
    common_pb2,
    fleet_pb2,
    fleet_pb2_grpc,
    ordering_pb2,
    ordering_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.fleet.vin import check_digit
from voltcloud.platform.auth import Role, Tenant

from .conftest import RunningPlatform, field_violations

VIN = "1M8GDM9AXKP042788"  # a real VIN with a valid check digit ('X')
VIN_BAD = "1M8GDM9A1KP042788"  # the same with its check digit changed


def _md(
    running: RunningPlatform, subject: str, role: Role, tenant: Tenant | None = None
) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {running.platform.tokens.mint(subject, role, tenant)}"),)


def _cny(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="CNY")


def _vehicle(vin: str, **fields: object) -> fleet_pb2.Vehicle:
    values: dict[str, object] = dict(
        vin=vin,
        plate="沪A·D12345",
        model_id="e-van 2",
        connector_standards=[common_pb2.CONNECTOR_STANDARD_GBT_DC, common_pb2.CONNECTOR_STANDARD_GBT_AC],
        battery_capacity_wh=60_000,
        consumption_wh_per_km=180,
        max_dc_power_w=90_000,
        max_ac_power_w=7_000,
    )
    values.update(fields)
    return fleet_pb2.Vehicle(**values)  # type: ignore[arg-type]


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


async def test_a_fleet_is_onboarded_from_the_api_alone(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    money = settlement_pb2_grpc.SettlementServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)

    created = await fleets.CreateFleet(
        fleet_pb2.CreateFleetRequest(idempotency_key="f1", name="Pudong Logistics", currency="CNY"), metadata=admin
    )
    fleet = created.fleet
    assert fleet.fleet_id and fleet.account_id and fleet.payment_mode == fleet_pb2.PAYMENT_MODE_REAL_TIME
    replay = await fleets.CreateFleet(
        fleet_pb2.CreateFleetRequest(idempotency_key="f1", name="Pudong Logistics", currency="CNY"), metadata=admin
    )
    assert replay.fleet.fleet_id == fleet.fleet_id  # a retry creates nothing new
    manager = _md(running, "mgr-1", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))

    sub = (
        await fleets.CreateSubFleet(
            fleet_pb2.CreateSubFleetRequest(idempotency_key="s1", fleet_id=fleet.fleet_id, name="Night shift"),
            metadata=manager,
        )
    ).sub_fleet
    assert sub.account_id and sub.account_id != fleet.account_id

    bad = await _error(
        fleets.RegisterVehicle(
            fleet_pb2.RegisterVehicleRequest(idempotency_key="v0", vehicle=_vehicle(VIN_BAD)), metadata=manager
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad) == ["vehicle.vin"]
    assert "check digit" in (bad.details() or "")

    vehicle = (
        await fleets.RegisterVehicle(
            fleet_pb2.RegisterVehicleRequest(
                idempotency_key="v1", vehicle=_vehicle(VIN, fleet_id=fleet.fleet_id, sub_fleet_id=sub.sub_fleet_id)
            ),
            metadata=manager,
        )
    ).vehicle
    assert vehicle.vin == VIN and vehicle.sub_fleet_id == sub.sub_fleet_id
    assert list(vehicle.connector_standards) == [
        common_pb2.CONNECTOR_STANDARD_GBT_DC,
        common_pb2.CONNECTOR_STANDARD_GBT_AC,
    ]
    dup = await _error(
        fleets.RegisterVehicle(
            fleet_pb2.RegisterVehicleRequest(idempotency_key="v2", vehicle=_vehicle(VIN, fleet_id=fleet.fleet_id)),
            metadata=manager,
        )
    )
    assert dup.code() == grpc.StatusCode.ALREADY_EXISTS

    driver = (
        await fleets.RegisterDriver(
            fleet_pb2.RegisterDriverRequest(
                idempotency_key="d1",
                driver=fleet_pb2.Driver(
                    name="Li Wei", phone="+8613800138000", fleet_id=fleet.fleet_id, vehicle_ids=[vehicle.vehicle_id]
                ),
            ),
            metadata=manager,
        )
    ).driver
    assert driver.status == fleet_pb2.DRIVER_STATUS_APPROVED and driver.account_id
    listed = await fleets.ListDrivers(fleet_pb2.ListDriversRequest(fleet_id=fleet.fleet_id), metadata=manager)
    assert [d.driver_id for d in listed.drivers] == [driver.driver_id]

    # Fund the fleet (settlement's own RPC), then allocate to the sub-fleet and part of it back.
    await money.TopUp(
        settlement_pb2.TopUpRequest(
            idempotency_key="top1",
            account_id=fleet.account_id,
            amount=_cny(50_000),
            provider="simulated",
            provider_token="tok",
        ),
        metadata=manager,
    )
    to_sub = fleet_pb2.AllocateBalanceRequest(
        idempotency_key="a1", fleet_id=fleet.fleet_id, sub_fleet_id=sub.sub_fleet_id, amount=_cny(20_000)
    )
    allocated = await fleets.AllocateBalance(to_sub, metadata=manager)
    assert (allocated.fleet_balance.amount_minor, allocated.sub_fleet_balance.amount_minor) == (30_000, 20_000)
    again = await fleets.AllocateBalance(to_sub, metadata=manager)
    assert again.entry_id == allocated.entry_id  # replayed, not posted twice
    back = await fleets.AllocateBalance(
        fleet_pb2.AllocateBalanceRequest(
            idempotency_key="a2", fleet_id=fleet.fleet_id, sub_fleet_id=sub.sub_fleet_id, amount=_cny(-5_000)
        ),
        metadata=manager,
    )
    assert (back.fleet_balance.amount_minor, back.sub_fleet_balance.amount_minor) == (35_000, 15_000)
    overdraw = await _error(
        fleets.AllocateBalance(
            fleet_pb2.AllocateBalanceRequest(
                idempotency_key="a3", fleet_id=fleet.fleet_id, sub_fleet_id=sub.sub_fleet_id, amount=_cny(-15_001)
            ),
            metadata=manager,
        )
    )
    assert overdraw.code() == grpc.StatusCode.FAILED_PRECONDITION
    sub_account = await money.GetAccount(settlement_pb2.GetAccountRequest(account_id=sub.account_id), metadata=manager)
    assert sub_account.account.balance.amount_minor == 15_000  # the refused move left nothing behind
    # Credit the admin extends to the sub-fleet is spent on orders, never passed back as the fleet's cash.
    await fleets.SetPaymentMode(
        fleet_pb2.SetPaymentModeRequest(
            fleet_id=fleet.fleet_id,
            sub_fleet_id=sub.sub_fleet_id,
            payment_mode=fleet_pb2.PAYMENT_MODE_POST_SETTLEMENT,
            credit_limit=_cny(10_000),
        ),
        metadata=admin,
    )
    credit_back = await _error(
        fleets.AllocateBalance(
            fleet_pb2.AllocateBalanceRequest(
                idempotency_key="a4", fleet_id=fleet.fleet_id, sub_fleet_id=sub.sub_fleet_id, amount=_cny(-15_001)
            ),
            metadata=manager,
        )
    )
    assert credit_back.code() == grpc.StatusCode.FAILED_PRECONDITION

    # The new driver quotes for the new vehicle on the demo world's stations.
    station = (
        await stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(page_size=1), metadata=admin
        )
    ).stations[0]
    quote = await ordering_pb2_grpc.OrderingServiceStub(channel).QuotePowerUp(
        ordering_pb2.QuotePowerUpRequest(
            vehicle_id=vehicle.vehicle_id, position=station.position, soc_permille=250, target_soc_permille=800
        ),
        metadata=_md(running, driver.driver_id, Role.DRIVER),
    )
    assert quote.quote_id and quote.options
    # ... and orders it, paid from the sub-fleet's allocation: the hold lands on that account.
    order = await ordering_pb2_grpc.OrderingServiceStub(channel).CreateOrder(
        ordering_pb2.CreateOrderRequest(
            idempotency_key="o1",
            quote_id=quote.quote_id,
            option_id=quote.options[0].option_id,
            allow_fallback=True,
            payer=common_pb2.Payer(account_id=sub.account_id),
        ),
        metadata=_md(running, driver.driver_id, Role.DRIVER),
    )
    assert order.order.order_id
    held = await money.GetAccount(settlement_pb2.GetAccountRequest(account_id=sub.account_id), metadata=manager)
    assert held.account.held.amount_minor > 0


async def test_a_driver_applies_and_the_manager_decides(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    fleet = (
        await fleets.CreateFleet(fleet_pb2.CreateFleetRequest(idempotency_key="f", name="Taxi Co"), metadata=admin)
    ).fleet
    manager = _md(running, "mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))
    vehicle = (
        await fleets.RegisterVehicle(fleet_pb2.RegisterVehicleRequest(vehicle=_vehicle(VIN)), metadata=manager)
    ).vehicle
    assert vehicle.fleet_id == fleet.fleet_id  # a manager registers into their own fleet
    applicant = _md(running, "drv-new", Role.DRIVER)
    applied = await fleets.RegisterDriver(
        fleet_pb2.RegisterDriverRequest(driver=fleet_pb2.Driver(name="Wang Fang", fleet_id=fleet.fleet_id)),
        metadata=applicant,
    )
    assert applied.driver.status == fleet_pb2.DRIVER_STATUS_PENDING and not applied.driver.fleet_id
    hidden = await _error(
        fleets.GetVehicle(fleet_pb2.GetVehicleRequest(vehicle_id=vehicle.vehicle_id), metadata=applicant)
    )
    assert hidden.code() == grpc.StatusCode.NOT_FOUND  # an applicant is not a member yet

    pending = await fleets.ListDrivers(
        fleet_pb2.ListDriversRequest(status=fleet_pb2.DRIVER_STATUS_PENDING), metadata=manager
    )
    assert [d.driver_id for d in pending.drivers] == ["drv-new"]
    no_reason = await _error(
        fleets.ReviewDriver(
            fleet_pb2.ReviewDriverRequest(fleet_id=fleet.fleet_id, driver_id="drv-new", approve=False), metadata=manager
        )
    )
    assert field_violations(no_reason) == ["reason"]
    approved = await fleets.ReviewDriver(
        fleet_pb2.ReviewDriverRequest(fleet_id=fleet.fleet_id, driver_id="drv-new", approve=True), metadata=manager
    )
    assert approved.driver.status == fleet_pb2.DRIVER_STATUS_APPROVED and approved.driver.fleet_id == fleet.fleet_id
    seen = await fleets.GetVehicle(fleet_pb2.GetVehicleRequest(vehicle_id=vehicle.vehicle_id), metadata=applicant)
    assert seen.vehicle.vin == VIN

    # A rejected applicant keeps no membership and learns why.
    other = _md(running, "drv-late", Role.DRIVER)
    await fleets.RegisterDriver(
        fleet_pb2.RegisterDriverRequest(driver=fleet_pb2.Driver(name="Zhao Lei", fleet_id=fleet.fleet_id)),
        metadata=other,
    )
    rejected = await fleets.ReviewDriver(
        fleet_pb2.ReviewDriverRequest(fleet_id=fleet.fleet_id, driver_id="drv-late", reason="licence expired"),
        metadata=manager,
    )
    assert rejected.driver.status == fleet_pb2.DRIVER_STATUS_REJECTED
    assert rejected.driver.rejection_reason == "licence expired" and not rejected.driver.fleet_id


async def test_vehicles_move_and_fleets_stay_apart(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    ids = []
    for name in ("A", "B"):
        reply = await fleets.CreateFleet(fleet_pb2.CreateFleetRequest(name=f"Fleet {name}"), metadata=admin)
        ids.append(reply.fleet.fleet_id)
    manager_a = _md(running, "mgr-a", Role.FLEET_MANAGER, Tenant("fleet", ids[0]))
    manager_b = _md(running, "mgr-b", Role.FLEET_MANAGER, Tenant("fleet", ids[1]))
    sub_a = (
        await fleets.CreateSubFleet(fleet_pb2.CreateSubFleetRequest(fleet_id=ids[0], name="North"), metadata=manager_a)
    ).sub_fleet
    vehicle = (
        await fleets.RegisterVehicle(fleet_pb2.RegisterVehicleRequest(vehicle=_vehicle(VIN)), metadata=manager_a)
    ).vehicle
    moved = await fleets.MoveVehicle(
        fleet_pb2.MoveVehicleRequest(vehicle_id=vehicle.vehicle_id, sub_fleet_id=sub_a.sub_fleet_id), metadata=manager_a
    )
    assert moved.vehicle.sub_fleet_id == sub_a.sub_fleet_id
    listed = await fleets.ListVehicles(
        fleet_pb2.ListVehiclesRequest(sub_fleet_id=sub_a.sub_fleet_id), metadata=manager_a
    )
    assert [v.vehicle_id for v in listed.vehicles] == [vehicle.vehicle_id]

    for call in (
        fleets.GetFleet(fleet_pb2.GetFleetRequest(fleet_id=ids[0]), metadata=manager_b),
        fleets.GetVehicle(fleet_pb2.GetVehicleRequest(vehicle_id=vehicle.vehicle_id), metadata=manager_b),
        fleets.MoveVehicle(fleet_pb2.MoveVehicleRequest(vehicle_id=vehicle.vehicle_id), metadata=manager_b),
        fleets.ListVehicles(fleet_pb2.ListVehiclesRequest(fleet_id=ids[0]), metadata=manager_b),
    ):
        assert (await _error(call)).code() == grpc.StatusCode.NOT_FOUND
    # B's manager cannot move A's vehicle into B's sub-fleet, nor take money from A's sub-fleet.
    steal = await _error(
        fleets.AllocateBalance(
            fleet_pb2.AllocateBalanceRequest(
                idempotency_key="x", fleet_id=ids[1], sub_fleet_id=sub_a.sub_fleet_id, amount=_cny(-1)
            ),
            metadata=manager_b,
        )
    )
    assert steal.code() == grpc.StatusCode.NOT_FOUND

    credit = await _error(
        fleets.SetPaymentMode(
            fleet_pb2.SetPaymentModeRequest(
                fleet_id=ids[0], payment_mode=fleet_pb2.PAYMENT_MODE_POST_SETTLEMENT, credit_limit=_cny(100_000)
            ),
            metadata=manager_a,
        )
    )
    assert credit.code() == grpc.StatusCode.PERMISSION_DENIED  # credit is the platform's to extend
    post = await fleets.SetPaymentMode(
        fleet_pb2.SetPaymentModeRequest(
            fleet_id=ids[0], payment_mode=fleet_pb2.PAYMENT_MODE_POST_SETTLEMENT, credit_limit=_cny(100_000)
        ),
        metadata=admin,
    )
    assert post.fleet.payment_mode == fleet_pb2.PAYMENT_MODE_POST_SETTLEMENT
    account = await settlement_pb2_grpc.SettlementServiceStub(channel).GetAccount(
        settlement_pb2.GetAccountRequest(account_id=post.fleet.account_id), metadata=manager_a
    )
    assert account.account.credit_limit.amount_minor == 100_000  # the ledger enforces it

    state = await _error(
        fleets.GetVehicleState(fleet_pb2.GetVehicleStateRequest(vehicle_id=vehicle.vehicle_id), metadata=manager_a)
    )
    assert state.code() == grpc.StatusCode.FAILED_PRECONDITION and "telemetry" in (state.details() or "")


async def test_one_vin_one_vehicle_even_when_registered_at_once(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    fleet = (await fleets.CreateFleet(fleet_pb2.CreateFleetRequest(name="Racers"), metadata=admin)).fleet
    manager = _md(running, "mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))

    async def register(key: str) -> str:
        try:
            await fleets.RegisterVehicle(
                fleet_pb2.RegisterVehicleRequest(idempotency_key=key, vehicle=_vehicle(VIN)), metadata=manager
            )
        except grpc.aio.AioRpcError as err:
            return str(err.code().name)
        return "OK"

    outcomes = await asyncio.gather(*(register(f"k{i}") for i in range(4)))
    assert sorted(outcomes) == ["ALREADY_EXISTS"] * 3 + ["OK"], outcomes
    listed = await fleets.ListVehicles(fleet_pb2.ListVehiclesRequest(vin=VIN.lower()), metadata=manager)
    assert len(listed.vehicles) == 1


def _vin(serial: int) -> str:
    """A valid VIN per serial number (the check digit computed as GB 16735 says)."""
    body = f"LFV2A21K07{serial:07d}"
    return body[:8] + check_digit(body) + body[9:]


async def test_lists_page_and_bad_terms_name_their_field(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    fleet = (await fleets.CreateFleet(fleet_pb2.CreateFleetRequest(name="Pager"), metadata=admin)).fleet
    manager = _md(running, "mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))
    registered = set()
    for serial in range(3):
        reply = await fleets.RegisterVehicle(
            fleet_pb2.RegisterVehicleRequest(vehicle=_vehicle(_vin(serial))), metadata=manager
        )
        registered.add(reply.vehicle.vehicle_id)
    first = await fleets.ListVehicles(fleet_pb2.ListVehiclesRequest(page_size=2), metadata=manager)
    assert len(first.vehicles) == 2 and first.next_page_token
    second = await fleets.ListVehicles(
        fleet_pb2.ListVehiclesRequest(page_size=2, page_token=first.next_page_token), metadata=manager
    )
    assert len(second.vehicles) == 1 and not second.next_page_token
    assert {v.vehicle_id for v in [*first.vehicles, *second.vehicles]} == registered
    bad_token = await _error(fleets.ListVehicles(fleet_pb2.ListVehiclesRequest(page_token="nope"), metadata=manager))
    assert field_violations(bad_token) == ["page_token"]

    cases = [
        (fleet_pb2.CreateFleetRequest(name="X", currency="yuan"), "currency"),
        (fleet_pb2.CreateFleetRequest(name="X", credit_limit=_cny(5)), "credit_limit"),
        (fleet_pb2.CreateFleetRequest(name=" "), "name"),
    ]
    for request, field in cases:
        err = await _error(fleets.CreateFleet(request, metadata=admin))
        assert field_violations(err) == [field], (request, err.details())
    for vehicle, field in [
        (_vehicle(_vin(9), connector_standards=[]), "vehicle.connector_standards"),
        (_vehicle(_vin(9), battery_capacity_wh=0), "vehicle.battery_capacity_wh"),
        (_vehicle(_vin(9), consumption_wh_per_km=90_000), "vehicle.consumption_wh_per_km"),
        (_vehicle(_vin(9), max_dc_power_w=0), "vehicle.max_dc_power_w"),
        (_vehicle(_vin(9), pack_type_id="999"), "vehicle.pack_type_id"),
        (_vehicle(_vin(9), plate="!"), "vehicle.plate"),
        (_vehicle("1M8GDM9AXKP04278"), "vehicle.vin"),
    ]:
        err = await _error(fleets.RegisterVehicle(fleet_pb2.RegisterVehicleRequest(vehicle=vehicle), metadata=manager))
        assert field_violations(err) == [field], (field, err.details())
    phone = await _error(
        fleets.RegisterDriver(
            fleet_pb2.RegisterDriverRequest(driver=fleet_pb2.Driver(name="A", phone="12345", fleet_id=fleet.fleet_id)),
            metadata=manager,
        )
    )
    assert field_violations(phone) == ["driver.phone"]


async def test_concurrent_allocations_conserve_money(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    money = settlement_pb2_grpc.SettlementServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    fleet = (await fleets.CreateFleet(fleet_pb2.CreateFleetRequest(name="Busy"), metadata=admin)).fleet
    manager = _md(running, "mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))
    subs = [
        (
            await fleets.CreateSubFleet(
                fleet_pb2.CreateSubFleetRequest(fleet_id=fleet.fleet_id, name=n), metadata=manager
            )
        ).sub_fleet
        for n in ("east", "west")
    ]
    await money.TopUp(
        settlement_pb2.TopUpRequest(
            idempotency_key="t",
            account_id=fleet.account_id,
            amount=_cny(1_000),
            provider="simulated",
            provider_token="x",
        ),
        metadata=manager,
    )

    async def allocate(i: int) -> str:
        request = fleet_pb2.AllocateBalanceRequest(
            idempotency_key=f"c{i}", fleet_id=fleet.fleet_id, sub_fleet_id=subs[i % 2].sub_fleet_id, amount=_cny(100)
        )
        try:
            await fleets.AllocateBalance(request, metadata=manager)
        except grpc.aio.AioRpcError as err:
            return str(err.code().name)
        return "OK"

    outcomes = await asyncio.gather(*(allocate(i) for i in range(12)))
    assert set(outcomes) <= {"OK", "FAILED_PRECONDITION", "ABORTED"}, outcomes
    balances = []
    for account_id in (fleet.account_id, subs[0].account_id, subs[1].account_id):
        reply = await money.GetAccount(settlement_pb2.GetAccountRequest(account_id=account_id), metadata=manager)
        balances.append(reply.account.balance.amount_minor)
    assert sum(balances) == 1_000 and min(balances) >= 0, balances  # conserved, nothing overdrawn
    assert balances[1] + balances[2] == 100 * outcomes.count("OK")
