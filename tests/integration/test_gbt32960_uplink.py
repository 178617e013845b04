"""The GB/T 32960 gateway on the real uplink: terminal frames over TCP become sequenced uplink messages that a
real platform (in process, real gRPC; SQLite and PostgreSQL) acknowledges, so the outbox drains. What the
platform then does with vehicle telemetry and alarms is the platform side's (issue 13, gbt-platform)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conformance.gbt32960_vectors import T, blocks_2016, blocks_2025
from tests.stationkit import OPERATOR
from voltcloud.api.v1 import ingest_pb2
from voltcloud.platform.auth import Role, Tenant
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.codec import (
    Command,
    Edition,
    Flag,
    Frame,
    FrameReader,
    build_vehicle_login,
    encode_frame,
)
from voltcloud_gateways.gbt32960.config import GatewayConfig
from voltcloud_gateways.gbt32960.server import DictDirectory, Gbt32960Gateway
from voltcloud_gateways.uplink import UplinkClient

from .conftest import RunningPlatform

GW = "gw-gbt-1"
VIN = "LGHC4V1D3HE202652"


async def exchange(port: int, frames: list[bytes]) -> list[Frame]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framer = FrameReader()
    answers: list[Frame] = []
    for raw in frames:
        writer.write(raw)
        async with asyncio.timeout(10):
            while len(answers) < frames.index(raw) + 1:
                answers += [f for f in framer.feed(await reader.read(4096)) if isinstance(f, Frame)]
    writer.close()
    return answers


async def test_frames_reach_the_platform_and_are_acked(running: RunningPlatform, tmp_path: Path) -> None:
    token = running.platform.tokens.mint(GW, Role.GATEWAY, Tenant("operator", OPERATOR))
    uplink = UplinkClient(
        running.target,
        gateway_id=GW,
        kind=ingest_pb2.GATEWAY_KIND_GBT32960,
        token=token,
        station_ids=[],
        outbox_path=tmp_path / "outbox.db",
    )
    config = GatewayConfig.from_dict(
        {"gateway_id": GW, "platform": running.target, "token": token, "listen": "127.0.0.1:0"}
    )
    gateway = Gbt32960Gateway(uplink, DictDirectory({VIN: "vh-000001"}), config)
    uplink.start()
    await gateway.start()
    try:
        frames = [
            build_vehicle_login(Edition.V2016, VIN, T, 1, "8986" * 5, ["P1"]),
            encode_frame(
                Edition.V2016, Command.REALTIME, Flag.COMMAND, VIN, rt.encode_realtime(T, blocks_2016(), Edition.V2016)
            ),
            encode_frame(
                Edition.V2025, Command.REISSUE, Flag.COMMAND, VIN, rt.encode_realtime(T, blocks_2025(), Edition.V2025)
            ),
        ]
        answers = await exchange(gateway.port, frames)
        assert [(a.command, a.flag) for a in answers] == [
            (Command.VEHICLE_LOGIN, Flag.SUCCESS),
            (Command.REALTIME, Flag.SUCCESS),
            (Command.REISSUE, Flag.SUCCESS),
        ]
        last = uplink.outbox.last_seq
        assert last >= 2  # the level-3 alarm event and at least one telemetry batch
        await uplink.wait_acked(last, 20)
        assert uplink.outbox.count == 0
        # An operator's gateway reports no fleet's vehicles: readings and the alarm are refused by the platform,
        # named, acked (not replayed). The fleet gateway's whole path is tests/e2e/test_gbt32960_e2e.py.
        assert {r.field for r in uplink.rejections} == {"telemetry.sources.vehicle_id", "event.alarm.vehicle_id"}
    finally:
        await gateway.stop()
        await uplink.stop()
