"""Issue 12, money and access: a fleet card works only while its driver is an approved member of the fleet and
its vehicle is in service. The rule is checked at every authorisation (not cleaned up on the event), so the
real `ocpp` charge point is refused a suspended driver's card (Blocked), accepted again once he is reinstated,
refused a retired vehicle's card and a removed driver's (Invalid); a session started anyway is ordered for
nobody: it is flagged abnormal and no money moves."""

from __future__ import annotations

import grpc
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus
from sqlmodel import select

from tests.integration.fleet_support import onboard
from tests.stationkit import OPERATOR
from voltcloud.api.v1 import fleet_pb2, fleet_pb2_grpc
from voltcloud.stations.token_models import AbnormalSession

from .test_ocpp16 import Charger, Setup
from .test_ocpp_authorize import booted, money, run_session, setup, stored_session

__all__ = ["setup"]


async def _status(setup: Setup, charger: Charger, tag: str) -> str:
    setup.gateway.authorizer.forget(tag)  # the gateway's ~1 minute answer cache is not what is under test
    status: str = (await charger.call(call.Authorize(id_tag=tag))).id_tag_info["status"]
    return status


async def _refused_session(setup: Setup, charger: Charger, tag: str, reason: str) -> None:
    """A charger that starts anyway (stale local list): no order, an abnormal session, no money moved."""
    before = await money(setup.running)
    setup.gateway.authorizer.forget(tag)
    start, tx_id = await run_session(charger, tag, 10_000, 30_000)
    assert start.id_tag_info["status"] != AuthorizationStatus.accepted
    row = await stored_session(setup.running, tx_id)
    assert row.energy_wh == 20_000 and not row.order_id
    async with setup.running.platform.db.transaction() as session:
        [flag] = list(await session.exec(select(AbnormalSession).where(AbnormalSession.session_id == row.id)))
    assert flag.reason == reason and flag.id_tag == tag
    assert await money(setup.running) == before


async def test_cards_follow_driver_membership_and_vehicle_service(setup: Setup, channel: grpc.aio.Channel) -> None:
    onboarded = await onboard(setup.running, channel, funded=500_000, allocated=200_000)
    fleet_id, manager = onboarded.fleet.fleet_id, onboarded.manager
    driver_id, vehicle_id = onboarded.driver.driver_id, onboarded.vehicle.vehicle_id
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    for key, tag, fields in (
        ("c1", "DRV-CARD", {"driver_id": driver_id}),
        ("c2", "VAN-CARD", {"vehicle_id": vehicle_id}),
    ):
        await fleets.IssueChargingToken(
            fleet_pb2.IssueChargingTokenRequest(
                idempotency_key=key, fleet_id=fleet_id, id_tag=tag, operator_id=OPERATOR, **fields
            ),
            metadata=manager,
        )

    async def suspend(key: str, suspended: bool) -> None:
        request = fleet_pb2.SuspendDriverRequest(
            idempotency_key=key, fleet_id=fleet_id, driver_id=driver_id, suspended=suspended, reason="audit"
        )
        await fleets.SuspendDriver(request, metadata=manager)

    charger = await booted(setup)
    assert await _status(setup, charger, "DRV-CARD") == AuthorizationStatus.accepted
    await suspend("s1", True)
    assert await _status(setup, charger, "DRV-CARD") == AuthorizationStatus.blocked
    assert await _status(setup, charger, "VAN-CARD") == AuthorizationStatus.accepted  # not the driver's card
    await _refused_session(setup, charger, "DRV-CARD", "BLOCKED_TAG")
    await suspend("s2", False)
    assert await _status(setup, charger, "DRV-CARD") == AuthorizationStatus.accepted

    await fleets.RetireVehicle(
        fleet_pb2.RetireVehicleRequest(idempotency_key="r1", vehicle_id=vehicle_id, reason="sold"), metadata=manager
    )
    assert await _status(setup, charger, "VAN-CARD") == AuthorizationStatus.invalid
    assert await _status(setup, charger, "DRV-CARD") == AuthorizationStatus.invalid
    await _refused_session(setup, charger, "VAN-CARD", "UNKNOWN_TAG")


async def test_a_removed_drivers_card_is_invalid(setup: Setup, channel: grpc.aio.Channel) -> None:
    onboarded = await onboard(setup.running, channel, funded=500_000, allocated=200_000)
    fleet_id, manager, driver_id = onboarded.fleet.fleet_id, onboarded.manager, onboarded.driver.driver_id
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    await fleets.IssueChargingToken(
        fleet_pb2.IssueChargingTokenRequest(
            idempotency_key="c1", fleet_id=fleet_id, id_tag="GONE-CARD", operator_id=OPERATOR, driver_id=driver_id
        ),
        metadata=manager,
    )
    charger = await booted(setup)
    assert await _status(setup, charger, "GONE-CARD") == AuthorizationStatus.accepted
    await fleets.RemoveDriver(
        fleet_pb2.RemoveDriverRequest(idempotency_key="d1", fleet_id=fleet_id, driver_id=driver_id, reason="left"),
        metadata=manager,
    )
    assert await _status(setup, charger, "GONE-CARD") == AuthorizationStatus.invalid
    await _refused_session(setup, charger, "GONE-CARD", "UNKNOWN_TAG")
