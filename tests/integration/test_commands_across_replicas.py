"""Commands and twins across replicas: two `voltcloud serve` processes on one database, a gateway's uplink on
process A, every call on process B. B learns the link and the twin from the change feed; its
SendStationCommand and StartByScan reach the gateway on A exactly once and get the gateway's answer; once the
gateway leaves, B answers OFFLINE at once (not after the command's timeout)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlmodel import col, select

from voltcloud.api.v1 import (
    common_pb2,
    ingest_pb2,
    ordering_pb2,
    ordering_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.fleet.models import Vehicle
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.stations.models import Connector

from ..stationkit import CHARGING_STATION, CONNECTOR, OPERATOR, RawUplink, event, hello
from .conftest import JWT_KEY, channel_to, platform_settings, serving
from .powerup_support import driver_md, fund

GW = "gw-replicas"
DRIVER = "drv-replicas"
QR = f"voltcloud://c/{CHARGING_STATION}/{CONNECTOR}"
WAIT_S = 20.0  # generous on a loaded 2-core machine: the test proves the behaviour, not its speed


async def _serve(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voltcloud.cli", "serve", "--listen", "127.0.0.1:0", "--seed-demo",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode()
    port = re.search(r":(\d+) ", line)
    assert port, line
    return process, f"127.0.0.1:{port.group(1)}"


@pytest.fixture
async def two_replicas(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[Platform, list[str], list[asyncio.subprocess.Process]]]:
    """Processes A and B (A first: it migrates and seeds), and a local, unstarted view of the database.
    PostgreSQL, and SQLite with both processes on one file."""
    env = {
        **os.environ,
        "VOLTCLOUD_DATA_DIR": str(tmp_path / "data"),
        "VOLTCLOUD_DATABASE_URL": database_url,
        "VOLTCLOUD_JWT_KEY": JWT_KEY,
        "VOLTCLOUD_REOPTIMIZE_INTERVAL_S": "0",
    }
    processes: list[asyncio.subprocess.Process] = []
    targets: list[str] = []
    try:
        for _ in range(2):
            process, target = await _serve(env)
            processes.append(process)
            targets.append(target)
        local = Platform(platform_settings(tmp_path, database_url, seed_demo=False))
        yield local, targets, processes
        await local.db.dispose()
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 30)


@dataclass
class Gateway:
    """A raw uplink that answers every command it gets with `answer` and remembers each one."""

    uplink: RawUplink
    answer: int = stations_pb2.COMMAND_STATUS_ACCEPTED
    commands: list[ingest_pb2.Command] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 0

    async def serve(self) -> None:
        while True:
            message = await self.uplink.call.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("msg") != "command":
                continue
            self.commands.append(message.command)
            self.arrived.set()
            self.seq += 1
            result = stations_pb2.StationCommandResult(command_id=message.command.command_id, status=self.answer)
            self.uplink.send(
                ingest_pb2.GatewayToPlatform(seq=self.seq, command_result=ingest_pb2.CommandResult(result=result))
            )

    def report(self, **kind: object) -> None:
        self.seq += 1
        self.uplink.send(event(self.seq, **kind))

    def power(self, watts: int) -> None:
        self.seq += 1
        batch = ingest_pb2.TelemetryBatch(
            sources=[ingest_pb2.TelemetrySource(station_id=CHARGING_STATION, resource_id=CONNECTOR)],
            col_source_index=[0], col_metric=[common_pb2.METRIC_POWER_W], col_offset_ms=[0], col_int_value=[watts],
        )  # fmt: skip
        self.uplink.send(ingest_pb2.GatewayToPlatform(seq=self.seq, telemetry=batch))


class Watch:
    """WatchStation on one replica, read in the background."""

    def __init__(self, stub: stations_pb2_grpc.StationServiceStub, md: tuple[tuple[str, str], ...]) -> None:
        self.call = stub.WatchStation(stations_pb2.WatchStationRequest(station_id=CHARGING_STATION), metadata=md)
        self.latest: stations_pb2.StationTwin | None = None

    async def until(self, predicate: Callable[[stations_pb2.StationTwin], bool]) -> stations_pb2.StationTwin:
        async def wait() -> stations_pb2.StationTwin:
            while self.latest is None or not predicate(self.latest):
                self.latest = (await self.call.read()).twin
            return self.latest

        return await asyncio.wait_for(wait(), WAIT_S)


def _connector(twin: stations_pb2.StationTwin) -> stations_pb2.ConnectorState:
    return next(c for c in twin.connectors if c.connector_id == CONNECTOR)


async def _vehicle(local: Platform) -> str:
    async with local.db.transaction() as session:
        connector = await session.get(Connector, CONNECTOR)
        assert connector is not None
        rows = await session.exec(select(Vehicle).where(col(Vehicle.fleet_id).is_(None)).order_by(col(Vehicle.id)))
        vehicle = next(v for v in rows if v.connector_mask & (1 << connector.standard))
        vehicle.owner_driver_id = DRIVER
        session.add(vehicle)
        return vehicle.id


def _unlock(key: str, timeout_s: int) -> stations_pb2.SendStationCommandRequest:
    return stations_pb2.SendStationCommandRequest(
        idempotency_key=key,
        station_id=CHARGING_STATION,
        command=stations_pb2.StationCommand(
            unlock_connector=stations_pb2.UnlockConnectorCommand(connector_id=CONNECTOR)
        ),
        timeout=duration_pb2.Duration(seconds=timeout_s),
    )


async def test_a_gateway_on_one_replica_is_commanded_and_watched_from_the_other(
    two_replicas: tuple[Platform, list[str], list[asyncio.subprocess.Process]],
) -> None:
    local, (target_a, target_b), processes = two_replicas
    operator = (("authorization", f"Bearer {local.tokens.mint('ops', Role.OPERATOR, Tenant('operator', OPERATOR))}"),)
    gateway_md = (("authorization", f"Bearer {local.tokens.mint(GW, Role.GATEWAY, Tenant('operator', OPERATOR))}"),)
    await fund(local, "driver", DRIVER)
    vehicle_id = await _vehicle(local)
    async with grpc.aio.insecure_channel(target_a) as channel_a, grpc.aio.insecure_channel(target_b) as channel_b:
        stations_b = stations_pb2_grpc.StationServiceStub(channel_b)
        ordering_b = ordering_pb2_grpc.OrderingServiceStub(channel_b)
        watch = Watch(stations_b, operator)
        assert not (await watch.until(lambda twin: True)).online

        gateway = Gateway(RawUplink(channel_a, gateway_md))
        gateway.uplink.send(hello(GW, [CHARGING_STATION]))
        await gateway.uplink.ack_at_least(0)
        serving = asyncio.ensure_future(gateway.serve())
        await watch.until(lambda twin: twin.online)  # B learnt from the feed that A holds the gateway

        # A status the gateway reports to A shows on B's watch.
        gateway.report(
            connector_status=ingest_pb2.ConnectorStatusChanged(
                connector_id=CONNECTOR, status=common_pb2.CONNECTOR_STATUS_FAULTED, error_code="GroundFailure"
            )
        )
        faulted = await watch.until(lambda twin: _connector(twin).status == common_pb2.CONNECTOR_STATUS_FAULTED)
        assert _connector(faulted).error_code == "GroundFailure"
        gateway.report(
            connector_status=ingest_pb2.ConnectorStatusChanged(
                connector_id=CONNECTOR, status=common_pb2.CONNECTOR_STATUS_AVAILABLE
            )
        )
        await watch.until(lambda twin: _connector(twin).status == common_pb2.CONNECTOR_STATUS_AVAILABLE)
        gateway.power(7_000)  # telemetry: memory only on A, published (coalesced) for the other replicas
        await watch.until(lambda twin: _connector(twin).power_w == 7_000)

        # A command sent on B reaches the gateway on A, and the gateway's answer comes back to B.
        sent = await stations_b.SendStationCommand(_unlock("u1", 10), metadata=operator, timeout=WAIT_S)
        assert sent.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
        replay = await stations_b.SendStationCommand(_unlock("u1", 10), metadata=operator, timeout=WAIT_S)
        assert replay.command_id == sent.command_id  # idempotent as on one replica: not sent again

        # StartByScan on B: the remote start goes down A's stream; the order starts.
        started = await ordering_b.StartByScan(
            ordering_pb2.StartByScanRequest(idempotency_key="s1", qr_payload=QR, vehicle_id=vehicle_id),
            metadata=driver_md(local, DRIVER),
            timeout=WAIT_S,
        )
        assert started.order.state == common_pb2.ORDER_STATE_EN_ROUTE

        # Every replica saw both command changes; the gateway got each command exactly once.
        await asyncio.sleep(0.5)  # time for a second copy to arrive, were one sent
        kinds = [c.command.WhichOneof("command") for c in gateway.commands]
        assert kinds == ["unlock_connector", "remote_start"], kinds
        assert gateway.commands[0].command_id == sent.command_id
        assert gateway.commands[1].command.remote_start.order_id == started.order.order_id

        # The gateway leaves A: B knows at once, and a command on B answers OFFLINE without waiting.
        gateway.uplink.close()
        await asyncio.wait_for(serving, WAIT_S)
        await watch.until(lambda twin: not twin.online)
        offline = await stations_b.SendStationCommand(_unlock("u2", 300), metadata=operator, timeout=WAIT_S)
        assert offline.result.status == stations_pb2.COMMAND_STATUS_OFFLINE
        assert len(gateway.commands) == 2

        # The gateway is back on A, and A is killed: B stops routing to it once A's links expire (15 s after
        # A was last heard from), answering OFFLINE at once from then on.
        back = Gateway(RawUplink(channel_a, gateway_md), seq=gateway.seq)
        back.uplink.send(hello(GW, [CHARGING_STATION], last_acked=gateway.seq))
        await back.uplink.ack_at_least(gateway.seq)
        await watch.until(lambda twin: twin.online)
        processes[0].kill()
        await processes[0].wait()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        statuses = []
        while loop.time() < give_up:
            answer = await stations_b.SendStationCommand(
                _unlock(f"k{len(statuses)}", 1), metadata=operator, timeout=WAIT_S
            )
            statuses.append(answer.result.status)
            if answer.result.status == stations_pb2.COMMAND_STATUS_OFFLINE:
                break
        assert statuses[-1] == stations_pb2.COMMAND_STATUS_OFFLINE, statuses
        assert set(statuses[:-1]) <= {stations_pb2.COMMAND_STATUS_TIMEOUT}  # sent to A before the expiry

        # The gateway reconnects to B, as a real one would: commands on B reach it there.
        moved = Gateway(RawUplink(channel_b, gateway_md), seq=back.seq)
        moved.uplink.send(hello(GW, [CHARGING_STATION], last_acked=back.seq))
        await moved.uplink.ack_at_least(0)
        moving = asyncio.ensure_future(moved.serve())
        again = await stations_b.SendStationCommand(_unlock("m1", 10), metadata=operator, timeout=WAIT_S)
        assert again.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
        assert [c.command_id for c in moved.commands] == [again.command_id]
        moved.uplink.close()
        await asyncio.wait_for(moving, WAIT_S)
        watch.call.cancel()


async def test_a_newer_stream_on_another_replica_ends_the_older_one(tmp_path: Path, database_url: str) -> None:
    """Two replicas in one process (each hub has its own name on the feed): the gateway opens a second stream
    on B while its stream on A is still open (A has not noticed the first is dead). A ends the older stream,
    as one replica does for a second stream of the same gateway, and routes its commands to B."""
    async with serving(tmp_path, database_url) as a, serving(tmp_path, database_url, seed_demo=False) as b:
        gateway_md = (("authorization", f"Bearer {a.tokens.mint(GW, Role.GATEWAY, Tenant('operator', OPERATOR))}"),)
        operator = (("authorization", f"Bearer {a.tokens.mint('ops', Role.OPERATOR, Tenant('operator', OPERATOR))}"),)
        async with channel_to(a) as channel_a, channel_to(b) as channel_b:
            old = RawUplink(channel_a, gateway_md)
            old.send(hello(GW, [CHARGING_STATION]))
            await old.ack_at_least(0)
            new = Gateway(RawUplink(channel_b, gateway_md))
            new.uplink.send(hello(GW, [CHARGING_STATION]))
            await new.uplink.ack_at_least(0)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    await asyncio.wait_for(old.call.read(), WAIT_S)
            assert ended.value.code() == grpc.StatusCode.ABORTED
            serving_new = asyncio.ensure_future(new.serve())
            stations_a = stations_pb2_grpc.StationServiceStub(channel_a)
            sent = await stations_a.SendStationCommand(_unlock("n1", 10), metadata=operator, timeout=WAIT_S)
            assert sent.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED
            assert [c.command_id for c in new.commands] == [sent.command_id]
            new.uplink.close()
            await asyncio.wait_for(serving_new, WAIT_S)
