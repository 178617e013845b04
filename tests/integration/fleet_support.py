"""A fleet onboarded over real gRPC with no seed (fleet, sub-fleet, vehicle in it, approved driver, money
allocated), for the tests of what happens after onboarding: ordering, tokens, statements."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from voltcloud.api.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from voltcloud.platform.auth import Role, Tenant

from .conftest import RunningPlatform

VIN = "1M8GDM9AXKP042788"  # a real VIN with a valid check digit ('X')
OTHER_VIN = "1HGCM82633A004352"  # another real one (check digit 3)

Metadata = tuple[tuple[str, str], ...]


def md(running: RunningPlatform, subject: str, role: Role, tenant: Tenant | None = None) -> Metadata:
    return (("authorization", f"Bearer {running.platform.tokens.mint(subject, role, tenant)}"),)


def cny(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="CNY")


@dataclass
class OnboardedFleet:
    fleet: fleet_pb2.Fleet
    sub_fleet: fleet_pb2.SubFleet
    vehicle: fleet_pb2.Vehicle
    driver: fleet_pb2.Driver
    admin: Metadata
    manager: Metadata
    driver_md: Metadata


async def onboard(
    running: RunningPlatform, channel: grpc.aio.Channel, *, funded: int, allocated: int, tag: str = "f", vin: str = VIN
) -> OnboardedFleet:
    """A fleet with `funded` minor units on its account, `allocated` of them moved to its one sub-fleet, a
    vehicle in that sub-fleet and an approved driver assigned to it."""
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    admin = md(running, "admin", Role.PLATFORM_ADMIN)
    fleet = (
        await fleets.CreateFleet(
            fleet_pb2.CreateFleetRequest(idempotency_key=f"{tag}-fleet", name=f"Fleet {tag}"), metadata=admin
        )
    ).fleet
    manager = md(running, f"mgr-{tag}", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))
    sub = (
        await fleets.CreateSubFleet(
            fleet_pb2.CreateSubFleetRequest(idempotency_key=f"{tag}-sub", fleet_id=fleet.fleet_id, name="Day shift"),
            metadata=manager,
        )
    ).sub_fleet
    vehicle = fleet_pb2.Vehicle(
        vin=vin,
        model_id="e-van 2",
        fleet_id=fleet.fleet_id,
        sub_fleet_id=sub.sub_fleet_id,
        connector_standards=[common_pb2.CONNECTOR_STANDARD_GBT_DC, common_pb2.CONNECTOR_STANDARD_GBT_AC],
        battery_capacity_wh=60_000,
        consumption_wh_per_km=180,
        max_dc_power_w=90_000,
        max_ac_power_w=7_000,
    )
    registered = (
        await fleets.RegisterVehicle(
            fleet_pb2.RegisterVehicleRequest(idempotency_key=f"{tag}-veh", vehicle=vehicle), metadata=manager
        )
    ).vehicle
    driver = (
        await fleets.RegisterDriver(
            fleet_pb2.RegisterDriverRequest(
                idempotency_key=f"{tag}-drv",
                driver=fleet_pb2.Driver(
                    name="Li Wei",
                    fleet_id=fleet.fleet_id,
                    sub_fleet_id=sub.sub_fleet_id,
                    vehicle_ids=[registered.vehicle_id],
                ),
            ),
            metadata=manager,
        )
    ).driver
    if funded:
        await settlement_pb2_grpc.SettlementServiceStub(channel).TopUp(
            settlement_pb2.TopUpRequest(
                idempotency_key=f"{tag}-top",
                account_id=fleet.account_id,
                amount=cny(funded),
                provider="simulated",
                provider_token="tok",
            ),
            metadata=manager,
        )
    if allocated:
        await allocate(fleets, fleet, sub, allocated, manager, key=f"{tag}-alloc")
    return OnboardedFleet(fleet, sub, registered, driver, admin, manager, md(running, driver.driver_id, Role.DRIVER))


async def allocate(
    fleets: fleet_pb2_grpc.FleetServiceStub,
    fleet: fleet_pb2.Fleet,
    sub: fleet_pb2.SubFleet,
    amount: int,
    manager: Metadata,
    *,
    key: str,
) -> None:
    await fleets.AllocateBalance(
        fleet_pb2.AllocateBalanceRequest(
            idempotency_key=key, fleet_id=fleet.fleet_id, sub_fleet_id=sub.sub_fleet_id, amount=cny(amount)
        ),
        metadata=manager,
    )


async def balance(channel: grpc.aio.Channel, account_id: str, who: Metadata) -> tuple[int, int]:
    """(balance, held) of an account, in minor units."""
    account = (
        await settlement_pb2_grpc.SettlementServiceStub(channel).GetAccount(
            settlement_pb2.GetAccountRequest(account_id=account_id), metadata=who
        )
    ).account
    return account.balance.amount_minor, account.held.amount_minor
