"""Issue 9 finding 4: no free energy over OCPP. The real `ocpp` v16 ChargePoint against the gateway, which asks
the platform about every idTag: unknown -> Invalid, blocked -> Blocked, expired -> Expired; an accepted tag's
session ends in a priced, settled order on the token's account; energy delivered with a tag the platform does
not accept ends in an abnormal-session record and an alarm, and no money moves."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus, RegistrationStatus
from sqlmodel import col, select

from tests.stationkit import CHARGING_STATION, CONNECTOR, OPERATOR, OTHER_OPERATOR
from voltcloud.api.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.fleet.models import Driver, Vehicle
from voltcloud.maintenance.models import Alarm
from voltcloud.platform.auth import Role, Tenant
from voltcloud.settlement.models import JournalEntry, LedgerAccount
from voltcloud.stations.models import StationSession
from voltcloud.stations.token_models import AbnormalSession
from voltcloud.stations.tokens import TagStatus
from voltcloud_gateways.ocpp.authorize import Authorizer
from voltcloud_gateways.ocpp.central import LocalAuth, OcppState

from ..integration.conftest import RunningPlatform
from ..integration.powerup_support import account_state, code_of, driver_md, fund
from .test_ocpp16 import Charger, Setup, eventually, now_iso, open_charger, setup

__all__ = ["setup"]  # the gateway + platform fixture of the OCPP 1.6 conformance tests

FLEET = "fl-0001"


def fleet_md(running: RunningPlatform, fleet: str = FLEET) -> tuple[tuple[str, str], ...]:
    return running.metadata(Role.FLEET_MANAGER, Tenant("fleet", fleet))


def operator_md(running: RunningPlatform, operator: str = OPERATOR) -> tuple[tuple[str, str], ...]:
    return running.metadata(Role.OPERATOR, Tenant("operator", operator))


async def fleet_vehicle(running: RunningPlatform, fleet: str = FLEET) -> str:
    async with running.platform.db.transaction() as session:
        rows = await session.exec(select(Vehicle).where(Vehicle.fleet_id == fleet).order_by(col(Vehicle.id)))
        return rows.first().id  # type: ignore[union-attr]


async def register(
    running: RunningPlatform,
    md: tuple[tuple[str, str], ...],
    id_tag: str,
    *,
    vehicle_id: str = "",
    operator_id: str = OPERATOR,
    expiry: dt.datetime | None = None,
) -> ingest_pb2.ChargingToken:
    request = ingest_pb2.RegisterChargingTokenRequest(
        idempotency_key=f"reg-{id_tag}", id_tag=id_tag, operator_id=operator_id, vehicle_id=vehicle_id
    )
    if expiry is not None:
        request.expiry_time.FromDatetime(expiry)
    async with grpc.aio.insecure_channel(running.target) as channel:
        reply = await ingest_pb2_grpc.IngestServiceStub(channel).RegisterChargingToken(request, metadata=md)
    token: ingest_pb2.ChargingToken = reply.token
    return token


async def set_blocked(
    running: RunningPlatform, md: tuple[tuple[str, str], ...], token_id: str, blocked: bool
) -> ingest_pb2.ChargingToken:
    async with grpc.aio.insecure_channel(running.target) as channel:
        reply = await ingest_pb2_grpc.IngestServiceStub(channel).SetChargingTokenStatus(
            ingest_pb2.SetChargingTokenStatusRequest(token_id=token_id, blocked=blocked), metadata=md
        )
    token: ingest_pb2.ChargingToken = reply.token
    return token


async def booted(setup: Setup) -> Charger:
    charger, _ = await open_charger(setup)
    boot = await charger.call(call.BootNotification(charge_point_model="VC-1", charge_point_vendor="Volt"))
    assert boot.status == RegistrationStatus.accepted
    return charger


async def money(running: RunningPlatform) -> tuple[int, list[tuple[str, int, int]]]:
    """(journal entries, every account's (id, balance, held)): what 'no money moved' is checked against."""
    async with running.platform.db.transaction() as session:
        entries = len(list(await session.exec(select(JournalEntry))))
        accounts = sorted((a.id, a.balance_minor, a.held_minor) for a in await session.exec(select(LedgerAccount)))
    return entries, accounts


async def stored_session(running: RunningPlatform, tx_id: int) -> StationSession:
    async def ended() -> StationSession | None:
        async with running.platform.db.transaction() as session:
            row = (
                await session.exec(
                    select(StationSession).where(
                        StationSession.station_id == CHARGING_STATION, StationSession.external_id == str(tx_id)
                    )
                )
            ).first()
        return row if row is not None and row.ended_at is not None else None

    result: StationSession = await eventually(ended)
    return result


async def run_session(charger: Charger, id_tag: str, meter_start: int, meter_stop: int) -> tuple[Any, int]:
    start = await charger.call(
        call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=meter_start, timestamp=now_iso())
    )
    await charger.call(
        call.StopTransaction(
            meter_stop=meter_stop, timestamp=now_iso(), transaction_id=start.transaction_id, reason="Local"
        )
    )
    return start, start.transaction_id


def test_status_numbers_follow_the_proto() -> None:
    assert {s.name: int(s) for s in TagStatus} == {
        name.removeprefix("ID_TAG_STATUS_"): number
        for name, number in ingest_pb2.IdTagStatus.items()
        if number != ingest_pb2.ID_TAG_STATUS_UNSPECIFIED
    }


async def test_unknown_blocked_expired_and_valid_tags(setup: Setup) -> None:
    running = setup.running
    vehicle = await fleet_vehicle(running)
    await register(running, fleet_md(running), "FLEET-OK", vehicle_id=vehicle)
    blocked = await register(running, fleet_md(running), "FLEET-BLK", vehicle_id=vehicle)
    await set_blocked(running, operator_md(running), blocked.token_id, True)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    await register(running, fleet_md(running), "FLEET-EXP", vehicle_id=vehicle, expiry=soon)
    # Valid at another operator's chargers only: unknown here.
    await register(running, fleet_md(running), "ELSEWHERE", vehicle_id=vehicle, operator_id=OTHER_OPERATOR)
    await asyncio.sleep(max((soon - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 0.2)

    charger = await booted(setup)
    expected = {
        "NOBODY-42": AuthorizationStatus.invalid,
        "ELSEWHERE": AuthorizationStatus.invalid,
        "FLEET-BLK": AuthorizationStatus.blocked,
        "FLEET-EXP": AuthorizationStatus.expired,
        "FLEET-OK": AuthorizationStatus.accepted,
    }
    for tag, status in expected.items():
        answer = await charger.call(call.Authorize(id_tag=tag))
        assert answer.id_tag_info["status"] == status, tag
    # Answered from the gateway's short cache the second time: no platform round trip.
    asked = setup.gateway.authorizer.asked
    assert (await charger.call(call.Authorize(id_tag="FLEET-OK"))).id_tag_info["status"] == "Accepted"
    assert setup.gateway.authorizer.asked == asked
    # StartTransaction answers the same verdict (OCPP 1.6: the charge point must then stop).
    start = await charger.call(
        call.StartTransaction(connector_id=1, id_tag="NOBODY-42", meter_start=0, timestamp=now_iso())
    )
    assert start.id_tag_info["status"] == AuthorizationStatus.invalid and start.transaction_id > 0


@pytest.mark.parametrize("tag_kind", ["unknown", "blocked"])
async def test_energy_with_an_unaccepted_tag_is_abnormal_not_free(setup: Setup, tag_kind: str) -> None:
    """The charger started offline (stale local list) and delivered 50 kWh: no order, no money, an open
    abnormal-session record and an alarm for the operator."""
    running = setup.running
    id_tag = "NOBODY-7"
    if tag_kind == "blocked":
        token = await register(running, fleet_md(running), "LOST-CARD", vehicle_id=await fleet_vehicle(running))
        await fund(running.platform, "fleet", FLEET)
        await set_blocked(running, fleet_md(running), token.token_id, True)
        id_tag = "LOST-CARD"
    before = await money(running)
    charger = await booted(setup)
    start, tx_id = await run_session(charger, id_tag, 100_000, 150_000)
    assert start.id_tag_info["status"] != AuthorizationStatus.accepted

    row = await stored_session(running, tx_id)
    assert row.energy_wh == 50_000 and not row.order_id
    async with running.platform.db.transaction() as session:
        [flag] = list(await session.exec(select(AbnormalSession).where(AbnormalSession.session_id == row.id)))
        alarm = await session.get(Alarm, flag.alarm_id or "")
    assert flag.reason == ("UNKNOWN_TAG" if tag_kind == "unknown" else "BLOCKED_TAG")
    assert flag.state == 1 and flag.energy_wh == 50_000 and flag.id_tag == id_tag
    assert flag.connector_id == CONNECTOR and flag.operator_id == OPERATOR
    assert alarm is not None and alarm.code == "UNPAID_SESSION" and alarm.station_id == CHARGING_STATION
    assert await money(running) == before  # no order, no hold, no entry: nothing moved


async def test_accepted_tag_session_is_ordered_priced_and_settled(setup: Setup, channel: grpc.aio.Channel) -> None:
    running = setup.running
    async with running.platform.db.transaction() as session:
        rows = await session.exec(
            select(Driver).where(col(Driver.vehicle_id).is_not(None), col(Driver.fleet_id).is_(None))
        )
        driver = rows.first()
        assert driver is not None
    md = driver_md(running.platform, driver.id)
    account = await fund(running.platform, "driver", driver.id)
    token = await register(running, md, "DRIVER-CARD")
    assert token.account_id == account and token.vehicle_id == driver.vehicle_id
    assert token.status == ingest_pb2.ID_TAG_STATUS_ACCEPTED
    balance_before, held_before = await account_state(running.platform, account)
    assert held_before == 0

    charger = await booted(setup)
    assert (await charger.call(call.Authorize(id_tag="DRIVER-CARD"))).id_tag_info["status"] == "Accepted"
    start, tx_id = await run_session(charger, "DRIVER-CARD", 40_000, 52_000)
    assert start.id_tag_info["status"] == AuthorizationStatus.accepted

    row = await stored_session(running, tx_id)
    assert row.energy_wh == 12_000 and row.order_id
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)

    async def completed() -> ordering_pb2.Order | None:
        got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=row.order_id or ""), metadata=md)
        return got.order if got.order.state == common_pb2.ORDER_STATE_COMPLETED else None

    order = await eventually(completed)
    amount = order.final_price.amount_minor
    assert order.energy_wh == 12_000 and amount > 0 and order.option.station_id == CHARGING_STATION
    assert await account_state(running.platform, account) == (balance_before - amount, 0)
    async with running.platform.db.transaction() as session:
        entries = [e for e in await session.exec(select(JournalEntry)) if row.order_id in e.description]
        flags = list(await session.exec(select(AbnormalSession).where(AbnormalSession.session_id == row.id)))
    assert len(entries) == 1 and not flags


async def test_token_tenant_rules(setup: Setup) -> None:
    running = setup.running
    vehicle = await fleet_vehicle(running)
    stub_calls: list[tuple[str, Any, tuple[tuple[str, str], ...], grpc.StatusCode]] = []
    other_fleet = "fl-0002"
    # A fleet manager may not register a token on another fleet's vehicle, nor for another fleet.
    stub_calls.append(
        (
            "RegisterChargingToken",
            ingest_pb2.RegisterChargingTokenRequest(
                idempotency_key="x1", id_tag="STEAL-1", operator_id=OPERATOR, vehicle_id=vehicle
            ),
            fleet_md(running, other_fleet),
            grpc.StatusCode.NOT_FOUND,
        )
    )
    stub_calls.append(
        (
            "RegisterChargingToken",
            ingest_pb2.RegisterChargingTokenRequest(
                idempotency_key="x2", id_tag="STEAL-2", operator_id=OPERATOR, owner_kind="fleet", owner_id=FLEET
            ),
            fleet_md(running, other_fleet),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    )
    # An operator may not register tokens, and a gateway may not ask about another operator's station.
    stub_calls.append(
        (
            "RegisterChargingToken",
            ingest_pb2.RegisterChargingTokenRequest(idempotency_key="x3", id_tag="OP-1", operator_id=OPERATOR),
            operator_md(running),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    )
    other_gateway = (
        ("authorization", f"Bearer {running.token(Role.GATEWAY, Tenant('operator', OTHER_OPERATOR), 'gw-2')}"),
    )
    stub_calls.append(
        (
            "AuthorizeIdTag",
            ingest_pb2.AuthorizeIdTagRequest(gateway_id="gw-2", station_id=CHARGING_STATION, id_tag="FLEET-1"),
            other_gateway,
            grpc.StatusCode.NOT_FOUND,
        )
    )
    token = await register(running, fleet_md(running), "FLEET-1", vehicle_id=vehicle)
    # Only the owner, the operator it is valid at and the admin may block it; another operator sees nothing.
    stub_calls.append(
        (
            "SetChargingTokenStatus",
            ingest_pb2.SetChargingTokenStatusRequest(token_id=token.token_id, blocked=True),
            operator_md(running, OTHER_OPERATOR),
            grpc.StatusCode.NOT_FOUND,
        )
    )
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for method, request, md, code in stub_calls:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await getattr(stub, method)(request, metadata=md)
            assert code_of(error.value) == code, (method, request)
    blocked = await set_blocked(running, operator_md(running), token.token_id, True)
    assert blocked.status == ingest_pb2.ID_TAG_STATUS_BLOCKED
    # The owner cannot lift the operator's block; the operator can.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await set_blocked(running, fleet_md(running), token.token_id, False)
    assert code_of(error.value) == grpc.StatusCode.PERMISSION_DENIED
    assert (await set_blocked(running, operator_md(running), token.token_id, False)).status == 1


async def test_gateway_falls_back_to_last_answer_and_local_list_when_platform_is_down(tmp_path: Path) -> None:
    state = OcppState(tmp_path / "ocpp.db")
    authorizer = Authorizer("127.0.0.1:1", lambda: (), "gw-x", state, timeout_s=0.5)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    state.remember_auth("KNOWN-OK", "Accepted", None, past)
    state.remember_auth("KNOWN-BLK", "Blocked", None, past)
    state.remember_auth("LAPSED", "Accepted", past, past)
    state.store_local_list("cp-1", {"LISTED": LocalAuth(), "LAPSED": LocalAuth()}, full=True)
    try:
        answers = {tag: (await authorizer.check("cp-1", "st-x", tag)).status for tag in
                   ("KNOWN-OK", "KNOWN-BLK", "LAPSED", "LISTED", "STRANGER")}  # fmt: skip
    finally:
        await authorizer.close()
        state.close()
    assert answers == {
        "KNOWN-OK": "Accepted",
        "KNOWN-BLK": "Blocked",
        "LAPSED": "Expired",  # the platform's own last answer wins over the list, and it has expired since
        "LISTED": "Accepted",
        "STRANGER": "Invalid",
    }
    assert authorizer.offline_answers == 5
