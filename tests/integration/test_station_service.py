"""StationService over real gRPC: registry writes, twin, watch with resume and offline detection, commands,
packs and inspections."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2

from tests.stationkit import (
    CHARGING_STATION,
    CONNECTOR,
    OPERATOR,
    OTHER_OPERATOR,
    SWAP_STATION,
    RawUplink,
    event,
    hello,
)
from voltcloud.api.v1 import common_pb2, ingest_pb2, stations_pb2, stations_pb2_grpc
from voltcloud.ingest.hub import hub_for
from voltcloud.maintenance.models import Alarm, WorkOrder
from voltcloud.platform.auth import Role, Tenant
from voltcloud_gateways.uplink import UplinkClient

from .conftest import RunningPlatform
from .conftest import field_violations as violations

OP = Tenant("operator", OPERATOR)


async def test_operator_and_station_lifecycle(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    admin = running.metadata(Role.PLATFORM_ADMIN)
    created = await stub.CreateOperator(
        stations_pb2.CreateOperatorRequest(idempotency_key="k1", name="Volt Ops", country="CN", currency="CNY"),
        metadata=admin,
    )
    again = await stub.CreateOperator(
        stations_pb2.CreateOperatorRequest(idempotency_key="k1", name="Volt Ops", country="CN", currency="CNY"),
        metadata=admin,
    )
    assert again.operator.operator_id == created.operator.operator_id
    op_id = created.operator.operator_id
    operator = running.metadata(Role.OPERATOR, Tenant("operator", op_id))
    station = stations_pb2.Station(
        operator_id=op_id,
        kind=common_pb2.STATION_KIND_CHARGING,
        name="Depot",
        position=common_pb2.LatLng(lat=31.2, lng=121.5),
        charging=stations_pb2.ChargingStationSpec(
            chargers=[
                stations_pb2.Charger(
                    connectors=[
                        stations_pb2.Connector(standard=common_pb2.CONNECTOR_STANDARD_GBT_DC, max_power_w=120_000),
                        stations_pb2.Connector(standard=common_pb2.CONNECTOR_STANDARD_CCS2, max_power_w=120_000),
                    ]
                )
            ]
        ),
    )
    made = (await stub.CreateStation(stations_pb2.CreateStationRequest(station=station), metadata=operator)).station
    assert len(made.charging.chargers[0].connectors) == 2 and made.version == 1
    made.name = "Depot North"
    updated = (
        await stub.UpdateStation(
            stations_pb2.UpdateStationRequest(station=made, update_paths=["name"]), metadata=operator
        )
    ).station
    assert updated.name == "Depot North" and updated.version == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:  # stale version
        await stub.UpdateStation(
            stations_pb2.UpdateStationRequest(station=made, update_paths=["name"]), metadata=operator
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    # Bad input names the field.
    bad = stations_pb2.Station(
        operator_id=op_id, kind=common_pb2.STATION_KIND_CHARGING, name="x", position=common_pb2.LatLng(lat=95, lng=0)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateStation(stations_pb2.CreateStationRequest(station=bad), metadata=operator)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f.startswith("station.position") for f in violations(err.value))
    # Another operator's station cannot be created.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateStation(
            stations_pb2.CreateStationRequest(station=station), metadata=running.metadata(Role.OPERATOR, OP)
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_twin_watch_resume_and_offline(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    hub = hub_for(running.platform.db)
    hub.twins.heartbeat_timeout = dt.timedelta(seconds=0.6)
    stub = stations_pb2_grpc.StationServiceStub(channel)
    staff = running.metadata(Role.OPERATOR, OP)
    twin = (
        await stub.GetStationTwin(stations_pb2.GetStationTwinRequest(station_id=CHARGING_STATION), metadata=staff)
    ).twin
    assert not twin.online and any(c.connector_id == CONNECTOR for c in twin.connectors)

    token = running.platform.tokens.mint("gw-w", Role.GATEWAY, OP)
    uplink = RawUplink(channel, (("authorization", f"Bearer {token}"),))
    uplink.send(hello("gw-w", [CHARGING_STATION]))
    await uplink.read()
    watch = stub.WatchStation(stations_pb2.WatchStationRequest(station_id=CHARGING_STATION), metadata=staff)
    first = await asyncio.wait_for(watch.read(), 5)
    assert first.snapshot and first.twin.online
    uplink.send(
        event(
            1,
            connector_status=ingest_pb2.ConnectorStatusChanged(
                connector_id=CONNECTOR, status=common_pb2.CONNECTOR_STATUS_FAULTED, error_code="GroundFailure"
            ),
        )
    )
    change = await asyncio.wait_for(watch.read(), 5)
    assert change.changed_connector_ids == [CONNECTOR] and not change.snapshot
    state = next(c for c in change.twin.connectors if c.connector_id == CONNECTOR)
    assert state.status == common_pb2.CONNECTOR_STATUS_FAULTED and state.error_code == "GroundFailure"
    watch.cancel()
    # Resume after the revision we saw: nothing missed, no snapshot; then missed heartbeats -> offline.
    resumed = stub.WatchStation(
        stations_pb2.WatchStationRequest(station_id=CHARGING_STATION, after_revision=first.twin.revision),
        metadata=staff,
    )
    again = await asyncio.wait_for(resumed.read(), 5)
    assert not again.snapshot and CONNECTOR in again.changed_connector_ids
    offline = await asyncio.wait_for(resumed.read(), 5)
    assert not offline.twin.online
    assert all(c.status == common_pb2.CONNECTOR_STATUS_OFFLINE for c in offline.twin.connectors)
    resumed.cancel()
    await uplink.finish()


async def test_send_station_command(running: RunningPlatform, channel: grpc.aio.Channel, tmp_path: Path) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    operator = running.metadata(Role.OPERATOR, OP)

    async def on_command(command: ingest_pb2.Command) -> stations_pb2.StationCommandResult:
        return stations_pb2.StationCommandResult(status=stations_pb2.COMMAND_STATUS_ACCEPTED, detail="Accepted")

    request = stations_pb2.SendStationCommandRequest(
        idempotency_key="c1",
        station_id=CHARGING_STATION,
        command=stations_pb2.StationCommand(
            unlock_connector=stations_pb2.UnlockConnectorCommand(connector_id=CONNECTOR)
        ),
        timeout=duration_pb2.Duration(seconds=5),
    )
    offline = await stub.SendStationCommand(request, metadata=operator)
    assert offline.result.status == stations_pb2.COMMAND_STATUS_OFFLINE
    client = UplinkClient(
        running.target,
        gateway_id="gw-c",
        kind=ingest_pb2.GATEWAY_KIND_OCPP,
        token=running.platform.tokens.mint("gw-c", Role.GATEWAY, OP),
        station_ids=[CHARGING_STATION],
        outbox_path=tmp_path / "o.db",
        on_command=on_command,
    )
    client.start()
    try:
        await asyncio.wait_for(client.connected.wait(), 10)
        request.idempotency_key = "c2"
        done = await stub.SendStationCommand(request, metadata=operator)
        assert done.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
        replay = await stub.SendStationCommand(request, metadata=operator)
        assert replay.command_id == done.command_id
        bad = stations_pb2.SendStationCommandRequest(
            station_id=CHARGING_STATION,
            command=stations_pb2.StationCommand(
                unlock_connector=stations_pb2.UnlockConnectorCommand(connector_id="cn-elsewhere")
            ),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SendStationCommand(bad, metadata=operator)
        assert violations(err.value) == ["command.unlock_connector.connector_id"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SendStationCommand(
                stations_pb2.SendStationCommandRequest(station_id=CHARGING_STATION), metadata=operator
            )
        assert violations(err.value) == ["command"]
    finally:
        await client.stop()


async def test_packs_registry_history_and_inspection(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    operator = running.metadata(Role.OPERATOR, OP)
    pack = stations_pb2.Pack(
        pack_id="PK-NEW-1",
        pack_type_id="1",
        soc_permille=950,
        soh_permille=990,
        location=stations_pb2.PackLocation(station_slot=stations_pb2.StationSlot(station_id=SWAP_STATION, slot=40)),
    )
    registered = (await stub.RegisterPack(stations_pb2.RegisterPackRequest(pack=pack), metadata=operator)).pack
    assert registered.state == common_pb2.PACK_STATE_READY and registered.operator_id == OPERATOR
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterPack(stations_pb2.RegisterPackRequest(pack=pack), metadata=operator)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    bad = stations_pb2.Pack(pack_id="x", pack_type_id="one", soc_permille=1200)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterPack(stations_pb2.RegisterPackRequest(pack=bad), metadata=operator)
    assert set(violations(err.value)) == {"pack.pack_type_id", "pack.soc_permille"}
    listed = await stub.ListPacks(
        stations_pb2.ListPacksRequest(station_id=SWAP_STATION, states=[common_pb2.PACK_STATE_READY]), metadata=operator
    )
    assert "PK-NEW-1" in {p.pack_id for p in listed.packs}
    # Another operator does not see it.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPack(
            stations_pb2.GetPackRequest(pack_id="PK-NEW-1"),
            metadata=running.metadata(Role.OPERATOR, Tenant("operator", OTHER_OPERATOR)),
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    report = await stub.ReportInspection(
        stations_pb2.ReportInspectionRequest(
            idempotency_key="i1",
            pack_id="PK-NEW-1",
            station_id=SWAP_STATION,
            defect=stations_pb2.DEFECT_KIND_CASING_DAMAGE,
            level=common_pb2.ALARM_LEVEL_MAJOR,
            notes="bump marks",
        ),
        metadata=running.metadata(Role.ENGINEER, OP),
    )
    assert report.inspection.quarantined and report.pack.state == common_pb2.PACK_STATE_QUARANTINED
    assert report.inspection.alarm_id
    async with running.platform.db.transaction() as session:
        orders = list((await session.exec(sa.select(WorkOrder).where(WorkOrder.pack_id == "PK-NEW-1"))).scalars())  # type: ignore[call-overload]
        alarms = list((await session.exec(sa.select(Alarm).where(Alarm.pack_id == "PK-NEW-1"))).scalars())  # type: ignore[call-overload]
    assert len(orders) == 1 and len(alarms) == 1 and orders[0].alarm_id == alarms[0].id
    history = await stub.GetPackHistory(stations_pb2.GetPackHistoryRequest(pack_id="PK-NEW-1"), metadata=operator)
    assert history.entries[0].reason == "registered"
    assert history.entries[-1].state == common_pb2.PACK_STATE_QUARANTINED
    twin = (
        await stub.GetStationTwin(stations_pb2.GetStationTwinRequest(station_id=SWAP_STATION), metadata=operator)
    ).twin
    slot = next(s for s in twin.slots if s.pack_id == "PK-NEW-1")
    assert slot.pack_state == common_pb2.PACK_STATE_QUARANTINED
