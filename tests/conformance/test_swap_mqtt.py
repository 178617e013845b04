"""A full battery swap over real MQTT (the local Mosquitto): vehicle arrives, the platform chooses the pack,
the station swaps it, SOC/SOH are reported; a defect report quarantines a pack that is then never chosen."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from sqlmodel import col, select

from tests.stationkit import OPERATOR, SWAP_STATION
from voltcloud import _core
from voltcloud.api.v1 import common_pb2, ingest_pb2, stations_pb2, stations_pb2_grpc
from voltcloud.platform.auth import Role, Tenant
from voltcloud.stations.models import Pack
from voltcloud_gateways.swap.codec import PREFIX
from voltcloud_gateways.swap.mqtt import SwapMqttGateway
from voltcloud_gateways.uplink import UplinkClient

from ..integration.conftest import RunningPlatform


def broker_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=0.5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not broker_up(), reason="no MQTT broker on 127.0.0.1:1883")


class Station:
    """The swap station's edge box, simulated with a plain paho client."""

    def __init__(self, station_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.station_id = station_id
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: loop.call_soon_threadsafe(
            self.commands.put_nowait, json.loads(m.payload)
        )
        self.client.connect("127.0.0.1", 1883)
        self.client.subscribe(f"{PREFIX}/{station_id}/cmd", qos=1)
        self.client.loop_start()

    def publish(self, channel: str, **body: Any) -> None:
        body.setdefault("msg_id", uuid.uuid4().hex)
        self.client.publish(f"{PREFIX}/{self.station_id}/{channel}", json.dumps(body), qos=1).wait_for_publish(5)

    def result(self, command_id: str, status: str = "accepted") -> None:
        self.client.publish(
            f"{PREFIX}/{self.station_id}/cmd_result", json.dumps({"command_id": command_id, "status": status}), qos=1
        )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
async def swap(running: RunningPlatform, tmp_path: Path) -> AsyncIterator[tuple[SwapMqttGateway, Station]]:
    uplink = UplinkClient(
        running.target,
        gateway_id="gw-swap",
        kind=ingest_pb2.GATEWAY_KIND_SWAP,
        token=running.platform.tokens.mint("gw-swap", Role.GATEWAY, Tenant("operator", OPERATOR)),
        station_ids=[SWAP_STATION],
        outbox_path=tmp_path / "outbox.db",
    )
    gateway = SwapMqttGateway(uplink, client_id=f"vc-swap-{uuid.uuid4().hex[:8]}", command_timeout_s=5)
    uplink.start()
    await gateway.start()
    await asyncio.wait_for(uplink.connected.wait(), 10)
    station = Station(SWAP_STATION, asyncio.get_running_loop())
    try:
        yield gateway, station
    finally:
        station.close()
        await gateway.stop()
        await uplink.stop()


async def pack(stub: stations_pb2_grpc.StationServiceStub, md: Any, pack_id: str) -> stations_pb2.Pack:
    return (await stub.GetPack(stations_pb2.GetPackRequest(pack_id=pack_id), metadata=md)).pack


async def until(check: Any, wait_s: float = 8.0) -> Any:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def matcher_choice(running: RunningPlatform, pack_type_id: int, never: str | None = None) -> str:
    """What `_core.match_packs` picks from the station's packs as stored right now, for one vehicle of
    `pack_type_id` with the documented defaults (need SOC 800 permille, unknown trip = 0 km)."""
    async with running.platform.db.transaction() as session:
        rows = list(await session.exec(select(Pack).where(Pack.station_id == SWAP_STATION).order_by(col(Pack.id))))
    assert never is None or never in [p.id for p in rows]  # the quarantined pack is in the matcher's input
    m = _core.match_packs(
        np.arange(len(rows), dtype=np.uint64),
        [p.pack_type_id for p in rows],
        [p.soc_permille for p in rows],
        [p.soh_permille for p in rows],
        [p.cycles for p in rows],
        [p.state for p in rows],
        [pack_type_id],
        [800],
        [0.0],
    )
    row = int(m.vehicle_pack[0])
    assert row >= 0
    assert rows[row].state == 3 and rows[row].id != never
    return rows[row].id


async def run_swap(station: Station, lane: int, vehicle_id: str, pack_out_id: str, out_slot: int) -> str:
    station.publish("evt/vehicle_arrived", lane=lane, vehicle_id=vehicle_id, pack_out_id=pack_out_id)
    command = await asyncio.wait_for(station.commands.get(), 10)
    assert command["type"] == "reserve" and command["lane"] == lane
    station.result(command["command_id"])
    pack_in = str(command["pack_id"])
    session = f"swap-{uuid.uuid4().hex[:6]}"
    station.publish(
        "evt/swap_started",
        session_id=session,
        lane=lane,
        vehicle_id=vehicle_id,
        pack_out_id=pack_out_id,
        pack_in_id=pack_in,
    )
    station.publish(
        "evt/swap_completed",
        session_id=session,
        lane=lane,
        vehicle_id=vehicle_id,
        pack_out_id=pack_out_id,
        pack_in_id=pack_in,
        pack_out_soc_permille=180,
        pack_in_soc_permille=975,
        energy_wh=59_000,
        pack_out_slot=out_slot,
        success=True,
    )
    station.publish(
        "evt/pack_report",
        pack_id=pack_out_id,
        slot=out_slot,
        soc_permille=185,
        soh_permille=912,
        temperature_milli_c=31_500,
        cycle_count=700,
        state="charging",
    )
    return pack_in


async def test_full_swap_chosen_pack_and_defect_quarantine(
    running: RunningPlatform, channel: grpc.aio.Channel, swap: tuple[SwapMqttGateway, Station]
) -> None:
    gateway, station = swap
    stub = stations_pb2_grpc.StationServiceStub(channel)
    md = running.metadata(Role.OPERATOR, Tenant("operator", OPERATOR))
    async with running.platform.db.transaction() as session:
        out_pack = await session.get(Pack, "pk-0000154")
    assert out_pack is not None and out_pack.vehicle_id
    vehicle = out_pack.vehicle_id
    station.publish("evt/heartbeat")

    expected = await matcher_choice(running, out_pack.pack_type_id)
    pack_in = await run_swap(station, 1, vehicle, "pk-0000154", out_slot=1)
    assert pack_in == expected  # the engine's battery matching chose the pack handed out

    async def swapped() -> bool:
        try:
            p_out = await pack(stub, md, "pk-0000154")
        except grpc.aio.AioRpcError:  # not visible to the operator until it enters the operator's station
            return False
        return p_out.soh_permille == 912

    await until(swapped)
    p_in, p_out = await pack(stub, md, pack_in), await pack(stub, md, "pk-0000154")
    assert p_in.state == common_pb2.PACK_STATE_IN_VEHICLE and p_in.location.vehicle_id == vehicle
    assert p_out.state == common_pb2.PACK_STATE_CHARGING and p_out.location.station_slot.slot == 1
    assert p_out.soc_permille == 185 and p_out.temperature_milli_c == 31_500
    history = (await stub.GetPackHistory(stations_pb2.GetPackHistoryRequest(pack_id=pack_in), metadata=md)).entries
    assert [e.reason for e in history][-2:] == ["chosen for " + vehicle, "swap in"]
    [record] = (
        await stub.ListStationSessions(stations_pb2.ListStationSessionsRequest(station_id=SWAP_STATION), metadata=md)
    ).sessions
    assert record.kind == stations_pb2.STATION_SESSION_KIND_SWAP and record.ended and record.energy_wh == 59_000
    assert (record.pack_out_id, record.pack_in_id) == ("pk-0000154", pack_in)
    twin = (await stub.GetStationTwin(stations_pb2.GetStationTwinRequest(station_id=SWAP_STATION), metadata=md)).twin
    assert twin.online and next(s for s in twin.slots if s.slot == 1).pack_id == "pk-0000154"

    # A defect report quarantines pk-0000008 (type 2, highest SOC of its type): never handed out.
    station.publish("evt/inspection", pack_id="pk-0000008", defect="casing_damage", level="major", notes="bump")

    async def quarantined() -> bool:
        return (await pack(stub, md, "pk-0000008")).state == common_pb2.PACK_STATE_QUARANTINED

    await until(quarantined)
    async with running.platform.db.transaction() as session:
        type2 = await session.get(Pack, "pk-0000158")
    assert type2 is not None and type2.vehicle_id
    expected = await matcher_choice(running, type2.pack_type_id, never="pk-0000008")
    second = await run_swap(station, 2, type2.vehicle_id, "pk-0000158", out_slot=8)
    assert second == expected and second != "pk-0000008"
    # Bad station input is refused with the field named, and the gateway keeps going.
    station.publish("evt/pack_report", pack_id="pk-0000002", soc_permille=4000)
    station.publish("telemetry", sources=[{"pack_id": "pk-0000002"}], readings=[[0, "soc_permille", 0, 950]])

    async def refused() -> bool:
        return any(field == "soc_permille" for _, field, _ in gateway.errors)

    await until(refused)
