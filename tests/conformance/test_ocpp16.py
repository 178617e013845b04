"""OCPP 1.6J conformance: the real `ocpp` library's v16 ChargePoint over a real WebSocket against the gateway,
which feeds the platform through the real uplink."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import websockets
from google.protobuf import duration_pb2
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    AuthorizationStatus,
    CancelReservationStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    ChargingProfileStatus,
    RegistrationStatus,
    RemoteStartStopStatus,
    ReservationStatus,
)
from sqlmodel import col, select
from websockets.asyncio.client import connect

from tests.stationkit import CHARGING_STATION, CONNECTOR, OPERATOR
from voltcloud.api.v1 import (
    common_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    ordering_pb2,
    ordering_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.fleet.models import Vehicle
from voltcloud.platform.auth import Role, Tenant
from voltcloud.settlement.models import JournalEntry
from voltcloud.stations.models import Connector, StationSession
from voltcloud_gateways.ocpp.central import ChargePointConfig, OcppState, hash_password
from voltcloud_gateways.ocpp.server import OcppGateway
from voltcloud_gateways.uplink import UplinkClient

from ..integration.conftest import RunningPlatform
from ..integration.powerup_support import account_state, driver_md, fund

CP_ID = f"{CHARGING_STATION}-c1"
OTHER_CP = f"{CHARGING_STATION}-c2"
PASSWORD = "s3cret-password"
SCAN_DRIVER = "drv-ocpp-scan"


class Charger(ChargePoint):  # type: ignore[misc]
    """A charge point that accepts what the central system asks and remembers it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[tuple[str, dict[str, Any]]] = []

    @on("RemoteStartTransaction")
    def remote_start(self, id_tag: str, **kwargs: Any) -> call_result.RemoteStartTransaction:
        self.received.append(("RemoteStartTransaction", {"id_tag": id_tag, **kwargs}))
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @on("RemoteStopTransaction")
    def remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        self.received.append(("RemoteStopTransaction", {"transaction_id": transaction_id}))
        return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)

    @on("ReserveNow")
    def reserve_now(self, **kwargs: Any) -> call_result.ReserveNow:
        self.received.append(("ReserveNow", kwargs))
        return call_result.ReserveNow(status=ReservationStatus.accepted)

    @on("CancelReservation")
    def cancel_reservation(self, reservation_id: int) -> call_result.CancelReservation:
        self.received.append(("CancelReservation", {"reservation_id": reservation_id}))
        return call_result.CancelReservation(status=CancelReservationStatus.accepted)

    @on("SetChargingProfile")
    def set_profile(self, **kwargs: Any) -> call_result.SetChargingProfile:
        self.received.append(("SetChargingProfile", kwargs))
        return call_result.SetChargingProfile(status=ChargingProfileStatus.accepted)


@dataclass
class Setup:
    running: RunningPlatform
    gateway: OcppGateway
    uplink: UplinkClient
    stub: stations_pb2_grpc.StationServiceStub
    operator: tuple[tuple[str, str], ...]
    url: str
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def setup(running: RunningPlatform, channel: grpc.aio.Channel, tmp_path: Path) -> AsyncIterator[Setup]:
    uplink = UplinkClient(
        running.target,
        gateway_id="gw-ocpp",
        kind=ingest_pb2.GATEWAY_KIND_OCPP,
        token=running.platform.tokens.mint("gw-ocpp", Role.GATEWAY, Tenant("operator", OPERATOR)),
        station_ids=[CHARGING_STATION],
        outbox_path=tmp_path / "outbox.db",
    )
    chargers = [
        ChargePointConfig(CP_ID, CHARGING_STATION, hash_password(PASSWORD), {1: CONNECTOR}),
        ChargePointConfig(OTHER_CP, CHARGING_STATION, hash_password("other"), {1: "cn-0000002"}),
    ]
    gateway = OcppGateway(
        uplink, chargers, OcppState(tmp_path / "ocpp.db"), max_frame_bytes=16 * 1024, call_timeout_s=5
    )
    port = await gateway.start()
    uplink.start()
    await asyncio.wait_for(uplink.connected.wait(), 10)
    setup = Setup(
        running,
        gateway,
        uplink,
        stations_pb2_grpc.StationServiceStub(channel),
        running.metadata(Role.OPERATOR, Tenant("operator", OPERATOR)),
        f"ws://127.0.0.1:{port}/ocpp",
    )
    try:
        yield setup
    finally:
        for task in setup.tasks:
            task.cancel()
        await asyncio.gather(*setup.tasks, return_exceptions=True)
        await gateway.stop()
        await uplink.stop()


async def open_charger(setup: Setup, cp_id: str = CP_ID, password: str = PASSWORD) -> tuple[Charger, Any]:
    ws = await connect(
        f"{setup.url}/{cp_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=basic(cp_id, password),
    )
    charger = Charger(cp_id, ws)
    setup.tasks.append(asyncio.create_task(charger.start()))
    return charger, ws


async def twin_connector(setup: Setup) -> stations_pb2.ConnectorState:
    twin = (
        await setup.stub.GetStationTwin(
            stations_pb2.GetStationTwinRequest(station_id=CHARGING_STATION), metadata=setup.operator
        )
    ).twin
    return next(c for c in twin.connectors if c.connector_id == CONNECTOR)


async def sessions(setup: Setup) -> list[stations_pb2.StationSession]:
    response = await setup.stub.ListStationSessions(
        stations_pb2.ListStationSessionsRequest(station_id=CHARGING_STATION), metadata=setup.operator
    )
    return list(response.sessions)


async def eventually(check: Any, wait_s: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def register_fleet_tag(running: RunningPlatform, id_tag: str, fleet: str = "fl-0001") -> str:
    """Registers `id_tag` at OPERATOR for a vehicle of `fleet` and funds the fleet; returns the token id."""
    async with running.platform.db.transaction() as session:
        rows = await session.exec(select(Vehicle).where(Vehicle.fleet_id == fleet).order_by(col(Vehicle.id)))
        vehicle = rows.first()
        assert vehicle is not None
    await fund(running.platform, "fleet", fleet)
    async with grpc.aio.insecure_channel(running.target) as channel:
        reply = await ingest_pb2_grpc.IngestServiceStub(channel).RegisterChargingToken(
            ingest_pb2.RegisterChargingTokenRequest(
                idempotency_key=f"reg-{id_tag}", id_tag=id_tag, operator_id=OPERATOR, vehicle_id=vehicle.id
            ),
            metadata=running.metadata(Role.FLEET_MANAGER, Tenant("fleet", fleet)),
        )
    return str(reply.token.token_id)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


async def test_full_charge_session_and_remote_control(setup: Setup) -> None:
    # Issue 9: the platform judges idTags, so TAG-1 is a registered (and funded) fleet card.
    await register_fleet_tag(setup.running, "TAG-1")
    charger, _ = await open_charger(setup)
    boot = await charger.call(call.BootNotification(charge_point_model="VC-1", charge_point_vendor="Volt"))
    assert boot.status == RegistrationStatus.accepted and boot.interval > 0
    assert (await charger.call(call.Heartbeat())).current_time
    await charger.call(
        call.StatusNotification(
            connector_id=1, error_code=ChargePointErrorCode.no_error, status=ChargePointStatus.preparing
        )
    )
    auth = await charger.call(call.Authorize(id_tag="TAG-1"))
    assert auth.id_tag_info["status"] == AuthorizationStatus.accepted
    started_at = now_iso()
    start = await charger.call(
        call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=10_000, timestamp=started_at)
    )
    tx_id = start.transaction_id
    await charger.call(
        call.MeterValues(
            connector_id=1,
            transaction_id=tx_id,
            meter_value=[
                {
                    "timestamp": now_iso(),
                    "sampledValue": [
                        {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                        {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                    ],
                }
            ],
        )
    )

    async def live() -> bool:
        c = await twin_connector(setup)
        return bool(c.session_id) and c.session_energy_wh == 2500 and c.power_w == 7400

    await eventually(live)
    # Offline transaction replayed by the charger: same id back, recorded once.
    again = await charger.call(
        call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=10_000, timestamp=started_at)
    )
    assert again.transaction_id == tx_id
    for _ in range(2):
        stop = await charger.call(
            call.StopTransaction(meter_stop=16_000, timestamp=now_iso(), transaction_id=tx_id, reason="Local")
        )
        assert stop.id_tag_info["status"] == AuthorizationStatus.accepted

    async def ended() -> list[stations_pb2.StationSession]:
        found = [s for s in await sessions(setup) if s.external_id == str(tx_id)]
        return found if found and found[0].ended else []

    [session] = await eventually(ended)
    assert session.energy_wh == 6000 and session.meter_start_wh == 10_000 and session.id_tag == "TAG-1"
    assert not (await twin_connector(setup)).session_id

    # Remote start from the platform: the charger gets RemoteStartTransaction, then starts for the order.
    result = await setup.stub.SendStationCommand(
        stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION,
            command=stations_pb2.StationCommand(
                remote_start=stations_pb2.RemoteStartCommand(connector_id=CONNECTOR, id_tag="APP-7", order_id="ord-123")
            ),
            timeout=duration_pb2.Duration(seconds=5),
        ),
        metadata=setup.operator,
    )
    assert result.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED, result.result.detail
    assert charger.received[-1] == ("RemoteStartTransaction", {"id_tag": "APP-7", "connector_id": 1})
    remote = await charger.call(
        call.StartTransaction(connector_id=1, id_tag="APP-7", meter_start=16_000, timestamp=now_iso())
    )

    async def for_order() -> list[stations_pb2.StationSession]:
        return list(
            (
                await setup.stub.ListStationSessions(
                    stations_pb2.ListStationSessionsRequest(order_id="ord-123"), metadata=setup.operator
                )
            ).sessions
        )

    [ordered] = await eventually(for_order)
    assert ordered.external_id == str(remote.transaction_id)
    stop_cmd = await setup.stub.SendStationCommand(
        stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION,
            command=stations_pb2.StationCommand(
                remote_stop=stations_pb2.RemoteStopCommand(session_id=ordered.session_id)
            ),
        ),
        metadata=setup.operator,
    )
    assert stop_cmd.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
    assert charger.received[-1] == ("RemoteStopTransaction", {"transaction_id": remote.transaction_id})

    # Reservation and a charging profile.
    expire = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    reserve = stations_pb2.ReserveCommand(reservation_id="rsv-1", connector_id=CONNECTOR, id_tag="APP-7")
    reserve.expire_time.FromDatetime(expire)
    answer = await setup.stub.SendStationCommand(
        stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION, command=stations_pb2.StationCommand(reserve=reserve)
        ),
        metadata=setup.operator,
    )
    assert answer.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
    action, body = charger.received[-1]
    assert action == "ReserveNow" and body["connector_id"] == 1 and isinstance(body["reservation_id"], int)
    cancel = await setup.stub.SendStationCommand(
        stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION,
            command=stations_pb2.StationCommand(
                cancel_reservation=stations_pb2.CancelReservationCommand(reservation_id="rsv-1")
            ),
        ),
        metadata=setup.operator,
    )
    assert cancel.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
    assert charger.received[-1] == ("CancelReservation", {"reservation_id": body["reservation_id"]})
    profile = stations_pb2.ChargingProfile(
        profile_id=3,
        stack_level=1,
        periods=[
            stations_pb2.ChargingSchedulePeriod(start_offset=duration_pb2.Duration(seconds=0), limit_w=11_000),
            stations_pb2.ChargingSchedulePeriod(start_offset=duration_pb2.Duration(seconds=600), limit_w=7_000),
        ],
    )
    answer = await setup.stub.SendStationCommand(
        stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION,
            command=stations_pb2.StationCommand(
                set_charging_profile=stations_pb2.SetChargingProfileCommand(connector_id=CONNECTOR, profile=profile)
            ),
        ),
        metadata=setup.operator,
    )
    assert answer.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
    action, body = charger.received[-1]
    periods = body["cs_charging_profiles"]["charging_schedule"]["charging_schedule_period"]
    assert action == "SetChargingProfile" and [p["limit"] for p in periods] == [11000, 7000]


async def test_handshake_refusals(setup: Setup) -> None:
    for path, headers, subprotocols, status in [
        (CP_ID, basic(CP_ID, "wrong"), ["ocpp1.6"], 401),
        (CP_ID, {}, ["ocpp1.6"], 401),
        ("nobody", basic("nobody", PASSWORD), ["ocpp1.6"], 404),
        (CP_ID, basic(CP_ID, PASSWORD), ["ocpp2.0.1"], 400),
    ]:
        with pytest.raises(websockets.InvalidStatus) as err:
            await connect(
                f"{setup.url}/{path}",
                subprotocols=subprotocols,  # type: ignore[arg-type]
                additional_headers=headers,
            )
        assert err.value.response.status_code == status, path


async def test_bad_frames_are_answered_and_other_chargers_keep_working(setup: Setup) -> None:
    raw = await connect(
        f"{setup.url}/{OTHER_CP}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=basic(OTHER_CP, "other"),
    )
    charger, _ = await open_charger(setup)
    cases = [
        ("not json", "-1", "FormationViolation"),
        ('{"a": 1}', "-1", "ProtocolError"),
        ('[2, "u1", "Foo", {}]', "u1", "NotImplemented"),
        ('[2, "u2", "RemoteStartTransaction", {"idTag": "x"}]', "u2", "NotSupported"),
        ('[2, "u3", "BootNotification", {"chargePointModel": "m"}]', "u3", "ProtocolError"),
        ('[2, "u4", "Heartbeat", {"x": 1}]', "u4", "FormationViolation"),
        (
            '[2, "u5", "StatusNotification", {"connectorId": "1", "errorCode": "NoError", "status": "Available"}]',
            "u5",
            "TypeConstraintViolation",
        ),
        (
            '[2, "u6", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}]',
            "u6",
            "PropertyConstraintViolation",
        ),
        ('[7, "u7", "Heartbeat", {}]', "u7", "PropertyConstraintViolation"),
    ]
    for frame, unique_id, code in cases:
        await raw.send(frame)
        answer = json.loads(await asyncio.wait_for(raw.recv(), 5))
        assert answer[:3] == [4, unique_id, code], frame
        # The other charger is served meanwhile.
        assert (await charger.call(call.Heartbeat())).current_time
    await raw.send("x" * (20 * 1024))  # over max_size: the connection is closed with 1009
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(raw.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert (await charger.call(call.Heartbeat())).current_time


async def test_command_to_unresponsive_charger_times_out(setup: Setup) -> None:
    raw = await connect(
        f"{setup.url}/{CP_ID}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=basic(CP_ID, PASSWORD),
    )
    setup.gateway.call_timeout_s = 0.5
    answer = await setup.stub.SendStationCommand(
        stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION,
            command=stations_pb2.StationCommand(
                unlock_connector=stations_pb2.UnlockConnectorCommand(connector_id=CONNECTOR)
            ),
        ),
        metadata=setup.operator,
    )
    assert answer.result.status == stations_pb2.COMMAND_STATUS_TIMEOUT
    frame = json.loads(await asyncio.wait_for(raw.recv(), 5))
    assert frame[0] == 2 and frame[2] == "UnlockConnector" and frame[3] == {"connectorId": 1}
    answer = await setup.stub.SendStationCommand(
        stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION,
            command=stations_pb2.StationCommand(
                unlock_connector=stations_pb2.UnlockConnectorCommand(connector_id=CONNECTOR)
            ),
            timeout=duration_pb2.Duration(nanos=200_000_000),
        ),
        metadata=setup.operator,
    )
    assert answer.result.status == stations_pb2.COMMAND_STATUS_TIMEOUT
    assert common_pb2  # keep import for clarity of status enums used above


async def test_start_by_scan_order_completes_and_settles(setup: Setup, channel: grpc.aio.Channel) -> None:
    """Driver scans the charger's QR: StartByScan -> RemoteStartTransaction to the real ChargePoint, which starts,
    meters and stops; the order goes IN_SERVICE then COMPLETED with the session's energy, captured exactly once."""
    platform = setup.running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    md = driver_md(platform, SCAN_DRIVER)
    account = await fund(platform, "driver", SCAN_DRIVER)
    async with platform.db.transaction() as session:
        connector = await session.get(Connector, CONNECTOR)
        assert connector is not None
        rows = await session.exec(select(Vehicle).where(col(Vehicle.fleet_id).is_(None)).order_by(col(Vehicle.id)))
        vehicle = next(v for v in rows if v.connector_mask & (1 << connector.standard))
        vehicle.owner_driver_id = SCAN_DRIVER  # the driver registered this private car (RegisterVehicle)
        session.add(vehicle)
        vehicle_id = vehicle.id

    charger, _ = await open_charger(setup)
    boot = await charger.call(call.BootNotification(charge_point_model="VC-1", charge_point_vendor="Volt"))
    assert boot.status == RegistrationStatus.accepted
    await charger.call(
        call.StatusNotification(
            connector_id=1, error_code=ChargePointErrorCode.no_error, status=ChargePointStatus.available
        )
    )
    balance_before, _ = await account_state(platform, account)

    started = (
        await ordering.StartByScan(
            ordering_pb2.StartByScanRequest(
                idempotency_key="scan-1",
                qr_payload=f"voltcloud://c/{CHARGING_STATION}/{CONNECTOR}",
                vehicle_id=vehicle_id,
            ),
            metadata=md,
        )
    ).order
    assert started.state == common_pb2.ORDER_STATE_EN_ROUTE and started.option.resource_id == CONNECTOR
    [(_, body)] = [r for r in charger.received if r[0] == "RemoteStartTransaction"]
    assert body["connector_id"] == 1 and body["id_tag"]
    assert (await account_state(platform, account))[1] > 0  # held for the order

    watched: list[ordering_pb2.WatchOrderResponse] = []

    async def watch() -> None:
        async for response in ordering.WatchOrder(
            ordering_pb2.WatchOrderRequest(order_id=started.order_id, after_event_seq=started.last_event_seq),
            metadata=md,
        ):
            watched.append(response)

    watcher = asyncio.create_task(watch())
    setup.tasks.append(watcher)

    start = await charger.call(
        call.StartTransaction(connector_id=1, id_tag=body["id_tag"], meter_start=20_000, timestamp=now_iso())
    )
    tx_id = start.transaction_id

    async def in_service() -> bool:
        got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=started.order_id), metadata=md)
        return got.order.state == common_pb2.ORDER_STATE_IN_SERVICE

    await eventually(in_service)
    await charger.call(
        call.MeterValues(
            connector_id=1,
            transaction_id=tx_id,
            meter_value=[
                {
                    "timestamp": now_iso(),
                    "sampledValue": [
                        {"value": "26.0", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                        {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"},
                    ],
                }
            ],
        )
    )
    stop = await charger.call(
        call.StopTransaction(meter_stop=32_000, timestamp=now_iso(), transaction_id=tx_id, reason="Local")
    )
    assert stop.id_tag_info["status"] == AuthorizationStatus.accepted
    await asyncio.wait_for(watcher, 10)
    assert [w.event.to_state for w in watched if w.event.seq] == [
        common_pb2.ORDER_STATE_IN_SERVICE,
        common_pb2.ORDER_STATE_COMPLETED,
    ]

    order = (await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=started.order_id), metadata=md)).order
    assert order.state == common_pb2.ORDER_STATE_COMPLETED
    assert order.energy_wh == 12_000
    amount = order.final_price.amount_minor
    assert amount > 0 and order.events[-1].amount.amount_minor == amount
    assert await account_state(platform, account) == (balance_before - amount, 0)
    async with platform.db.transaction() as session:
        entries = [e for e in await session.exec(select(JournalEntry)) if started.order_id in e.description]
        assert len(entries) == 1  # one ORDER_SETTLEMENT entry: the capture
        linked = (await session.exec(select(StationSession).where(StationSession.external_id == str(tx_id)))).one()
        assert linked.order_id == started.order_id and linked.energy_wh == 12_000
