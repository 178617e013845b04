"""The gateway uplink end to end: sequence numbers, acks, duplicates, restarts, buffering, commands."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from tests.stationkit import (
    CHARGING_STATION,
    CONNECTOR,
    OPERATOR,
    OTHER_STATION,
    SWAP_STATION,
    RawUplink,
    event,
    hello,
)
from voltcloud.api.v1 import common_pb2, ingest_pb2, stations_pb2
from voltcloud.ingest.hub import hub_for
from voltcloud.ingest.models import GatewayCursor, StationEventLog
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.stations.models import Pack, StationSession
from voltcloud_gateways.uplink import UplinkClient

from .conftest import RunningPlatform, platform_settings

GW = "gw-test-1"


def gateway_metadata(running: RunningPlatform, gateway_id: str = GW) -> tuple[tuple[str, str], ...]:
    token = running.platform.tokens.mint(gateway_id, Role.GATEWAY, Tenant("operator", OPERATOR))
    return (("authorization", f"Bearer {token}"),)


async def count(running: RunningPlatform, table: type, *where: object) -> int:
    async with running.platform.db.transaction() as session:
        query = sa.select(sa.func.count()).select_from(table)
        for clause in where:
            query = query.where(clause)  # type: ignore[arg-type]
        return int((await session.exec(query)).one()[0])  # type: ignore[call-overload]


async def reserved_packs(running: RunningPlatform, station_id: str) -> set[str]:
    async with running.platform.db.transaction() as session:
        query = sa.select(Pack.id).where(Pack.station_id == station_id, Pack.state == common_pb2.PACK_STATE_RESERVED)  # type: ignore[arg-type]
        return set((await session.exec(query)).scalars())  # type: ignore[call-overload]


def session_events(seq0: int) -> list[ingest_pb2.GatewayToPlatform]:
    return [
        event(
            seq0,
            connector_status=ingest_pb2.ConnectorStatusChanged(
                connector_id=CONNECTOR, status=common_pb2.CONNECTOR_STATUS_OCCUPIED
            ),
        ),
        event(
            seq0 + 1,
            session_started=ingest_pb2.SessionStarted(
                session_id="tx-1", connector_id=CONNECTOR, meter_start_wh=1000, id_tag="TAG"
            ),
        ),
        ingest_pb2.GatewayToPlatform(
            seq=seq0 + 2,
            telemetry=ingest_pb2.TelemetryBatch(
                sources=[ingest_pb2.TelemetrySource(station_id=CHARGING_STATION, resource_id=CONNECTOR)],
                col_source_index=[0, 0, 0],
                col_metric=[common_pb2.METRIC_ENERGY_WH, common_pb2.METRIC_POWER_W, common_pb2.METRIC_ENERGY_WH],
                col_offset_ms=[0, 0, 1000],
                col_int_value=[1500, 7000, 1800],
            ),
        ),
    ]


async def test_events_are_applied_once_acked_and_twin_follows(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    uplink = RawUplink(channel, gateway_metadata(running))
    uplink.send(hello(GW, [CHARGING_STATION]))
    first = await uplink.read()
    assert first.ack.acked_seq == 0
    uplink.send(*session_events(1))
    assert await uplink.ack_at_least(3) == 3
    twin = hub_for(running.platform.db).twins.get(CHARGING_STATION)
    assert twin is not None and twin.online
    connector = twin.connectors[CONNECTOR]
    assert connector.session_id and connector.session_energy_wh == 800 and connector.power_w == 7000
    # Replays (same seqs) are dropped; the next new seq is applied.
    uplink.send(*session_events(1))
    uplink.send(
        event(
            4,
            session_stopped=ingest_pb2.SessionStopped(
                session_id="tx-1", connector_id=CONNECTOR, meter_stop_wh=2200, reason="Local"
            ),
        )
    )
    assert await uplink.ack_at_least(4) == 4
    await uplink.finish()
    assert await count(running, StationEventLog, StationEventLog.gateway_id == GW) == 3
    async with running.platform.db.transaction() as session:
        rows = list((await session.exec(sa.select(StationSession))).scalars())  # type: ignore[call-overload]
    assert len(rows) == 1 and rows[0].energy_wh == 1200 and rows[0].ended_at is not None
    assert not twin.connectors[CONNECTOR].session_id


async def test_platform_restart_still_drops_replays(tmp_path: Path, database_url: str) -> None:
    settings = platform_settings(tmp_path, database_url)
    for attempt in range(2):
        platform = Platform(settings)
        port = await platform.start()
        running = RunningPlatform(platform, f"127.0.0.1:{port}")
        try:
            async with grpc.aio.insecure_channel(running.target) as channel:
                uplink = RawUplink(channel, gateway_metadata(running))
                # The gateway lost its ack (it thinks nothing was acked) and replays everything.
                uplink.send(hello(GW, [CHARGING_STATION]))
                assert (await uplink.read()).ack.acked_seq == (0 if attempt == 0 else 3)
                uplink.send(*session_events(1))
                if attempt == 1:
                    uplink.send(event(4, heartbeat=ingest_pb2.Heartbeat()))
                assert await uplink.ack_at_least(3 + attempt) == 3 + attempt
                await uplink.finish()
            assert await count(running, StationEventLog) == 2 + attempt
            assert await count(running, StationSession) == 1
        finally:
            await platform.stop(grace=0)


async def test_engine_learns_station_reported_changes_at_once(tmp_path: Path, database_url: str) -> None:
    """Station events go through the stations domain's writers, whose change events reach the engine after
    the commit: with the periodic sync off, the engine still sees the connector and the pack change."""
    platform = Platform(platform_settings(tmp_path, database_url, engine_reconcile_interval_s=0))
    port = await platform.start()
    running = RunningPlatform(platform, f"127.0.0.1:{port}")
    engine = platform.powerup.engine
    try:
        async with platform.db.transaction() as session:
            pack = (
                (
                    await session.exec(sa.select(Pack).where(Pack.station_id == SWAP_STATION, Pack.state == 3))  # type: ignore[arg-type,call-overload]
                )
                .scalars()
                .first()
            )
        assert pack is not None and pack.slot_no
        connector_idx, pack_idx = engine._maps.connector_idx[CONNECTOR], engine._maps.pack_idx[pack.id]
        assert engine.index.connector(connector_idx)["status"] == common_pb2.CONNECTOR_STATUS_AVAILABLE
        async with grpc.aio.insecure_channel(running.target) as channel:
            uplink = RawUplink(channel, gateway_metadata(running))
            uplink.send(hello(GW, [CHARGING_STATION, SWAP_STATION]))
            assert (await uplink.read()).ack.acked_seq == 0
            uplink.send(
                event(
                    1,
                    connector_status=ingest_pb2.ConnectorStatusChanged(
                        connector_id=CONNECTOR, status=common_pb2.CONNECTOR_STATUS_FAULTED
                    ),
                ),
                event(
                    2,
                    SWAP_STATION,
                    pack_report=ingest_pb2.PackReport(
                        pack_id=pack.id, slot=pack.slot_no, soc_permille=300, soh_permille=950,
                        state=common_pb2.PACK_STATE_CHARGING,
                    ),
                ),
            )  # fmt: skip
            assert await uplink.ack_at_least(2) == 2
            await uplink.finish()
        connector = engine.index.connector(connector_idx)
        assert connector["status"] == common_pb2.CONNECTOR_STATUS_FAULTED and connector["version"] > 0
        assert engine.index.pack(pack_idx)["state"] == common_pb2.PACK_STATE_CHARGING
    finally:
        await platform.stop(grace=0)


async def test_engine_learns_a_swap_reservation_and_its_release_at_once(tmp_path: Path, database_url: str) -> None:
    """A vehicle arriving reserves a pack (chosen by the matcher); a failed swap releases it. The engine sees
    both without a sync."""
    platform = Platform(platform_settings(tmp_path, database_url, engine_reconcile_interval_s=0))
    port = await platform.start()
    running = RunningPlatform(platform, f"127.0.0.1:{port}")
    engine = platform.powerup.engine
    try:
        async with platform.db.transaction() as session:
            out_pack = await session.get(Pack, "pk-0000154")  # in a vehicle, of a type the swap station stocks
        assert out_pack is not None and out_pack.vehicle_id
        before = await reserved_packs(running, SWAP_STATION)
        async with grpc.aio.insecure_channel(running.target) as channel:
            uplink = RawUplink(channel, gateway_metadata(running))
            uplink.send(hello(GW, [SWAP_STATION]))
            assert (await uplink.read()).ack.acked_seq == 0
            arrived = ingest_pb2.VehicleArrived(lane=1, vehicle_id=out_pack.vehicle_id, pack_out_id=out_pack.id)
            uplink.send(event(1, SWAP_STATION, vehicle_arrived=arrived))
            assert await uplink.ack_at_least(1) == 1
            [reserved] = await reserved_packs(running, SWAP_STATION) - before
            pack_idx = engine._maps.pack_idx[reserved]
            assert engine.index.pack(pack_idx)["state"] == common_pb2.PACK_STATE_RESERVED
            failed = ingest_pb2.SwapCompleted(
                session_id="swap-1", lane=1, vehicle_id=out_pack.vehicle_id, pack_in_id=reserved, success=False
            )
            uplink.send(event(2, SWAP_STATION, swap_completed=failed))
            assert await uplink.ack_at_least(2) == 2
            await uplink.finish()
        assert engine.index.pack(pack_idx)["state"] == common_pb2.PACK_STATE_READY
    finally:
        await platform.stop(grace=0)


async def test_bad_messages_are_rejected_by_field_and_do_not_block(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    uplink = RawUplink(channel, gateway_metadata(running))
    uplink.send(hello(GW, [CHARGING_STATION]))
    await uplink.read()
    uplink.send(
        event(1, station_id=OTHER_STATION, heartbeat=ingest_pb2.Heartbeat()),
        event(2, session_started=ingest_pb2.SessionStarted(connector_id=CONNECTOR)),
        ingest_pb2.GatewayToPlatform(seq=3, telemetry=ingest_pb2.TelemetryBatch(col_source_index=[0], col_metric=[])),
        event(4, heartbeat=ingest_pb2.Heartbeat()),
    )
    fields = []
    while True:
        message = await uplink.read()
        if message.WhichOneof("msg") == "rejection":
            fields.append(message.rejection.field)
        elif message.ack.acked_seq == 4:
            break
    assert fields == ["event.station_id", "event.session_started.session_id", "telemetry.col_metric"]
    # A gap aborts the stream: the gateway must replay from the ack.
    uplink.send(event(9, heartbeat=ingest_pb2.Heartbeat()))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            await uplink.read()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "seq" in (err.value.details() or "")


async def test_hello_is_checked(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    cases = [
        (gateway_metadata(running), hello("someone-else", [CHARGING_STATION]), grpc.StatusCode.PERMISSION_DENIED),
        (gateway_metadata(running), hello(GW, ["st-nope"]), grpc.StatusCode.INVALID_ARGUMENT),
        (gateway_metadata(running), hello(GW, [OTHER_STATION]), grpc.StatusCode.PERMISSION_DENIED),
        (gateway_metadata(running), event(1), grpc.StatusCode.INVALID_ARGUMENT),
        (running.metadata(Role.DRIVER), hello(GW, [CHARGING_STATION]), grpc.StatusCode.PERMISSION_DENIED),
    ]
    for metadata, first, code in cases:
        uplink = RawUplink(channel, metadata)
        uplink.send(first)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await uplink.read()
        assert err.value.code() == code, first


async def test_client_buffers_while_platform_is_down_and_replays(tmp_path: Path, database_url: str) -> None:
    settings = platform_settings(tmp_path, database_url)
    platform = Platform(settings)
    port = await platform.start()
    token = platform.tokens.mint(GW, Role.GATEWAY, Tenant("operator", OPERATOR), ttl=dt.timedelta(hours=1))
    await platform.stop(grace=0)
    client = UplinkClient(
        f"127.0.0.1:{port}",
        gateway_id=GW,
        kind=ingest_pb2.GATEWAY_KIND_OCPP,
        token=token,
        station_ids=[CHARGING_STATION],
        outbox_path=tmp_path / "outbox.db",
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    client.start()
    try:
        for _ in range(5):
            client.publish_event(event(0, heartbeat=ingest_pb2.Heartbeat()).event)
        await asyncio.sleep(0.3)
        assert client.outbox.count == 5 and not client.connected.is_set()
        platform = Platform(settings.model_copy(update={"listen": f"127.0.0.1:{port}"}))
        await platform.start()
        await client.wait_acked(5, wait_s=15)
        assert client.outbox.count == 0
        running = RunningPlatform(platform, f"127.0.0.1:{port}")
        assert await count(running, StationEventLog) == 5
        async with platform.db.transaction() as session:
            cursor = await session.get(GatewayCursor, GW)
        assert cursor is not None and cursor.last_seq == 5
    finally:
        await client.stop()
        await platform.stop(grace=0)


async def test_commands_round_trip_timeout_and_offline(
    running: RunningPlatform, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    seen: list[ingest_pb2.Command] = []

    async def on_command(command: ingest_pb2.Command) -> stations_pb2.StationCommandResult:
        seen.append(command)
        if command.command.WhichOneof("command") == "unlock_connector":
            await asyncio.sleep(5)
        return stations_pb2.StationCommandResult(status=stations_pb2.COMMAND_STATUS_ACCEPTED, detail="ok")

    client = UplinkClient(
        running.target,
        gateway_id=GW,
        kind=ingest_pb2.GATEWAY_KIND_OCPP,
        token=running.platform.tokens.mint(GW, Role.GATEWAY, Tenant("operator", OPERATOR)),
        station_ids=[CHARGING_STATION],
        outbox_path=tmp_path / "outbox.db",
        on_command=on_command,
    )
    client.start()
    hub = hub_for(running.platform.db)
    try:
        await asyncio.wait_for(client.connected.wait(), 10)
        stop = stations_pb2.StationCommand(remote_stop=stations_pb2.RemoteStopCommand(session_id="x"))
        result = await hub.send_command(CHARGING_STATION, stop, dt.timedelta(seconds=5))
        assert result.status == stations_pb2.COMMAND_STATUS_ACCEPTED and result.detail == "ok"
        unlock = stations_pb2.StationCommand(
            unlock_connector=stations_pb2.UnlockConnectorCommand(connector_id=CONNECTOR)
        )
        result = await hub.send_command(CHARGING_STATION, unlock, dt.timedelta(seconds=0.3))
        assert result.status == stations_pb2.COMMAND_STATUS_TIMEOUT
        result = await hub.send_command(OTHER_STATION, stop, dt.timedelta(seconds=1))
        assert result.status == stations_pb2.COMMAND_STATUS_OFFLINE
        assert len(seen) == 2
    finally:
        await client.stop()
