"""Charging tokens issued through FleetService (issue 12): a card issued by a new fleet's manager to its driver
authorises at a real OCPP 1.6 charge point (the `ocpp` library against the gateway), and the session becomes an
order settled on the sub-fleet allocation the card belongs to; blocked and expired cards are refused."""

from __future__ import annotations

import csv
import datetime as dt
import io

import grpc
import pytest
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus

from tests.integration.conftest import RunningPlatform, field_violations
from tests.integration.fleet_support import OTHER_VIN, balance, onboard
from tests.stationkit import CHARGING_STATION, OPERATOR
from voltcloud.api.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, ingest_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.fleet.carbon import carbon_of

from .test_ocpp16 import Setup, eventually
from .test_ocpp_authorize import booted, run_session, setup, stored_session

__all__ = ["setup"]


def _issue(fleet_id: str, key: str, id_tag: str, **fields: str) -> fleet_pb2.IssueChargingTokenRequest:
    return fleet_pb2.IssueChargingTokenRequest(
        idempotency_key=key, fleet_id=fleet_id, id_tag=id_tag, operator_id=OPERATOR, **fields
    )


async def test_a_fleet_card_charges_at_a_real_charge_point(setup: Setup, channel: grpc.aio.Channel) -> None:
    running = setup.running
    onboarded = await onboard(running, channel, funded=500_000, allocated=200_000)
    fleet, sub, manager = onboarded.fleet, onboarded.sub_fleet, onboarded.manager
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)

    # A card for the driver: their vehicle and sub-fleet are the defaults, so the allocation pays.
    card = (
        await fleets.IssueChargingToken(
            _issue(fleet.fleet_id, "t1", "FLEET2-CARD", driver_id=onboarded.driver.driver_id), metadata=manager
        )
    ).token
    assert (card.vehicle_id, card.sub_fleet_id, card.account_id) == (
        onboarded.vehicle.vehicle_id,
        sub.sub_fleet_id,
        sub.account_id,
    )
    assert card.status == ingest_pb2.ID_TAG_STATUS_ACCEPTED and card.fleet_id == fleet.fleet_id
    lost = (
        await fleets.IssueChargingToken(
            _issue(fleet.fleet_id, "t2", "FLEET2-LOST", vehicle_id=onboarded.vehicle.vehicle_id), metadata=manager
        )
    ).token
    assert lost.account_id == fleet.account_id  # no sub-fleet, no driver: the fleet's own account
    blocked = await fleets.BlockChargingToken(
        fleet_pb2.BlockChargingTokenRequest(fleet_id=fleet.fleet_id, token_id=lost.token_id, blocked=True),
        metadata=manager,
    )
    assert blocked.token.status == ingest_pb2.ID_TAG_STATUS_BLOCKED
    old = (
        await fleets.IssueChargingToken(
            _issue(fleet.fleet_id, "t3", "FLEET2-OLD", driver_id=onboarded.driver.driver_id), metadata=manager
        )
    ).token
    past = fleet_pb2.SetChargingTokenExpiryRequest(fleet_id=fleet.fleet_id, token_id=old.token_id)
    past.expiry_time.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    expired = await fleets.SetChargingTokenExpiry(past, metadata=manager)
    assert expired.token.status == ingest_pb2.ID_TAG_STATUS_EXPIRED
    listed = await fleets.ListChargingTokens(
        fleet_pb2.ListChargingTokensRequest(fleet_id=fleet.fleet_id, sub_fleet_id=sub.sub_fleet_id), metadata=manager
    )
    assert sorted(t.id_tag for t in listed.tokens) == ["FLEET2-CARD", "FLEET2-OLD"]

    charger = await booted(setup)
    for tag, status in {
        "FLEET2-LOST": AuthorizationStatus.blocked,
        "FLEET2-OLD": AuthorizationStatus.expired,
        "FLEET2-CARD": AuthorizationStatus.accepted,
    }.items():
        assert (await charger.call(call.Authorize(id_tag=tag))).id_tag_info["status"] == status, tag

    start, tx_id = await run_session(charger, "FLEET2-CARD", 40_000, 52_000)
    assert start.id_tag_info["status"] == AuthorizationStatus.accepted
    row = await stored_session(running, tx_id)
    assert row.energy_wh == 12_000 and row.order_id and row.station_id == CHARGING_STATION
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)

    async def completed() -> ordering_pb2.Order | None:
        got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=row.order_id or ""), metadata=manager)
        return got.order if got.order.state == common_pb2.ORDER_STATE_COMPLETED else None

    order = await eventually(completed)
    amount = order.final_price.amount_minor
    assert amount > 0 and order.vehicle_id == onboarded.vehicle.vehicle_id
    assert await balance(channel, sub.account_id, manager) == (200_000 - amount, 0)  # the allocation paid
    assert await balance(channel, fleet.account_id, manager) == (300_000, 0)

    # The manager's statement shows the settled order on the sub-fleet's line.
    request = fleet_pb2.GetFleetStatementRequest(fleet_id=fleet.fleet_id)
    request.period.start.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    request.period.end.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    statement = await fleets.GetFleetStatement(request, metadata=manager)
    [line] = statement.lines
    assert (line.sub_fleet_id, line.order_count, line.amount.amount_minor) == (sub.sub_fleet_id, 1, amount)
    assert statement.total_amount.amount_minor == amount
    assert statement.closing_balance.amount_minor == 500_000 - amount
    # ... and the day's report, the charged energy and cost on the vehicle's line, also as CSV.
    today = dt.datetime.now(dt.UTC).date().isoformat()
    report = await fleets.GetFleetDailyReport(
        fleet_pb2.GetFleetDailyReportRequest(fleet_id=fleet.fleet_id, date=today, time_zone="UTC"), metadata=manager
    )
    [day] = report.lines
    assert (day.vehicle_id, day.order_count, day.completed_count) == (onboarded.vehicle.vehicle_id, 1, 1)
    assert (day.swap_energy_wh, day.charge_energy_wh, day.cost.amount_minor) == (0, 12_000, amount)
    rows = list(csv.DictReader(io.StringIO(report.csv)))
    assert [(r["vehicle_id"], r["charge_energy_wh"], r["cost_minor"]) for r in rows] == [
        (onboarded.vehicle.vehicle_id, "12000", str(amount))
    ]
    # Carbon: the 12 kWh drive the vehicle at its registered consumption, against a gasoline car's CO2.
    carbon = carbon_of(12_000, onboarded.vehicle.consumption_wh_per_km)
    assert carbon.co2_avoided_g > 0
    assert (day.electric_distance_m, day.co2_avoided_g) == (carbon.electric_distance_m, carbon.co2_avoided_g)
    assert report.total_co2_avoided_g == carbon.co2_avoided_g
    assert rows[0]["co2_avoided_g"] == str(carbon.co2_avoided_g)
    [settled] = [e for e in statement.entries if e.kind == "order_settlement"]
    assert (settled.order_id, settled.sub_fleet_id, settled.amount.amount_minor) == (
        order.order_id,
        sub.sub_fleet_id,
        -amount,
    )


async def test_fleet_token_rules(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    ours = await onboard(running, channel, funded=0, allocated=0, tag="a")
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    fleet_id = ours.fleet.fleet_id

    async def refused(
        request: object, md: tuple[tuple[str, str], ...], method: str = "IssueChargingToken"
    ) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(fleets, method)(request, metadata=md)
        return err.value

    no_key = await refused(_issue(fleet_id, "", "X1", driver_id=ours.driver.driver_id), ours.manager)
    assert field_violations(no_key) == ["idempotency_key"]
    bad_tag = await refused(_issue(fleet_id, "k0", "no spaces!", driver_id=ours.driver.driver_id), ours.manager)
    assert field_violations(bad_tag) == ["id_tag"]
    stranger = await refused(_issue(fleet_id, "k1", "X2", driver_id="drv-nobody"), ours.manager)
    assert stranger.code() == grpc.StatusCode.NOT_FOUND
    no_vehicle = await refused(_issue(fleet_id, "k2", "X3"), ours.manager)
    assert field_violations(no_vehicle) == ["vehicle_id"]
    # A manager of another fleet learns nothing about this one, nor about its tokens.
    theirs = await onboard(running, channel, funded=0, allocated=0, tag="b", vin=OTHER_VIN)
    other = await refused(_issue(fleet_id, "k3", "X4", vehicle_id=ours.vehicle.vehicle_id), theirs.manager)
    assert other.code() == grpc.StatusCode.NOT_FOUND
    foreign_vehicle = await refused(_issue(fleet_id, "k4", "X5", vehicle_id=theirs.vehicle.vehicle_id), ours.manager)
    assert foreign_vehicle.code() == grpc.StatusCode.NOT_FOUND
    card = (
        await fleets.IssueChargingToken(
            _issue(fleet_id, "k5", "X6", driver_id=ours.driver.driver_id), metadata=ours.manager
        )
    ).token
    hidden = await refused(
        fleet_pb2.BlockChargingTokenRequest(fleet_id=theirs.fleet.fleet_id, token_id=card.token_id, blocked=True),
        theirs.manager,
        "BlockChargingToken",
    )
    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    again = await fleets.IssueChargingToken(
        _issue(fleet_id, "k5", "X6", driver_id=ours.driver.driver_id), metadata=ours.manager
    )
    assert again.token.token_id == card.token_id  # a retry issues nothing new
