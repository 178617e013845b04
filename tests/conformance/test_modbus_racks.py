"""Modbus TCP battery racks: pymodbus's real async TCP server plays the rack, the poller reads it with the
vendor register map and feeds the real platform through the real uplink. The packs' SOC/SOH reach the
station twin and the pack registry; a BMS fault bit raises an alarm and, where it maps to a defect, takes the
platform's inspection path (the pack is quarantined); a dead rack does not stop the live one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sqlmodel import select

from tests.stationkit import OPERATOR, SWAP_STATION
from voltcloud.api.v1 import common_pb2, ingest_pb2, stations_pb2, stations_pb2_grpc
from voltcloud.maintenance.models import Alarm
from voltcloud.platform.auth import Role, Tenant
from voltcloud.stations.models import Pack
from voltcloud_gateways.swap import regmap
from voltcloud_gateways.swap.modbus import ModbusRackGateway, RackConfig
from voltcloud_gateways.uplink import UplinkClient

from ..integration.conftest import RunningPlatform

MAP = regmap.bundled_map("acme_br16")


class Rack:
    """A simulated rack: a register array served by pymodbus' TCP server (holding registers, unit 1)."""

    def __init__(self) -> None:
        self.regs = [0] * (MAP.slot_base + MAP.slot_count * MAP.slot_stride + 8)
        self.reads = 0
        device = SimDevice(
            id=1, simdata=[SimData(0, values=[0] * len(self.regs), datatype=DataType.REGISTERS)], action=self._action
        )
        self.server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        self.task: asyncio.Task[Any] | None = None

    async def _action(self, fc: int, start: int, address: int, count: int, current: list[int], values: Any) -> None:
        self.reads += 1
        current[:] = self.regs[start : start + len(current)]

    async def start(self) -> int:
        self.task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):
            if self.server.transport is not None:
                break
            await asyncio.sleep(0.02)
        return int(self.server.transport.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self.server.shutdown()
        if self.task is not None:
            self.task.cancel()

    def put(self, slot: int, name: str, value: int | str) -> None:
        spec = MAP.fields[name]
        base = MAP.slot_base + (slot - 1) * MAP.slot_stride + spec.offset
        if isinstance(value, str):
            data = value.encode().ljust(2 * spec.count, b"\0")
            words = [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
        else:
            raw = value & ((1 << (16 * spec.count)) - 1)
            words = [(raw >> (16 * (spec.count - 1 - i))) & 0xFFFF for i in range(spec.count)]
        self.regs[base : base + spec.count] = words

    def pack(self, slot: int, pack_id: str, soc: int, soh: int, temp_deci_c: int) -> None:
        self.put(slot, "pack_id", pack_id)
        self.put(slot, "soc_permille", soc)
        self.put(slot, "soh_permille", soh)
        self.put(slot, "temperature_milli_c", temp_deci_c)
        self.put(slot, "voltage_mv", 38_450)  # 384.50 V
        self.put(slot, "current_ma", 1_200)  # 120.0 A
        self.put(slot, "cycle_count", 321)
        self.put(slot, "state", 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Setup:
    rack: Rack
    gateway: ModbusRackGateway
    uplink: UplinkClient


@pytest.fixture
async def racks(running: RunningPlatform, tmp_path: Path) -> AsyncIterator[Setup]:
    rack = Rack()
    port = await rack.start()
    uplink = UplinkClient(
        running.target,
        gateway_id="gw-racks",
        kind=ingest_pb2.GATEWAY_KIND_SWAP,
        token=running.platform.tokens.mint("gw-racks", Role.GATEWAY, Tenant("operator", OPERATOR)),
        station_ids=[SWAP_STATION],
        outbox_path=tmp_path / "outbox.db",
    )
    gateway = ModbusRackGateway(
        uplink,
        [
            RackConfig("rack-dead", SWAP_STATION, "127.0.0.1", free_port(), MAP, interval_s=0.1, timeout_s=0.5),
            RackConfig("rack-1", SWAP_STATION, "127.0.0.1", port, MAP, interval_s=0.1, timeout_s=1.0),
        ],
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        unreachable_after=2,
    )
    uplink.start()
    await asyncio.wait_for(uplink.connected.wait(), 10)
    setup = Setup(rack, gateway, uplink)
    try:
        yield setup
    finally:
        await gateway.stop()
        await uplink.stop()
        await rack.stop()


async def until(check: Any, wait_s: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_rack_poll_reaches_twin_and_fault_quarantines(
    running: RunningPlatform, channel: grpc.aio.Channel, racks: Setup
) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    md = running.metadata(Role.OPERATOR, Tenant("operator", OPERATOR))
    async with running.platform.db.transaction() as session:
        query = (
            select(Pack)
            .where(Pack.station_id == SWAP_STATION, Pack.slot_no.is_not(None))  # type: ignore[union-attr]
            .order_by(Pack.slot_no)  # type: ignore[arg-type]
            .limit(2)
        )
        rows = (await session.exec(query)).all()
        (a, slot_a), (b, slot_b) = [(p.id, int(p.slot_no or 0)) for p in rows]
    racks.rack.pack(slot_a, a, soc=640, soh=876, temp_deci_c=312)
    racks.rack.pack(slot_b, b, soc=990, soh=955, temp_deci_c=-45)
    racks.gateway.start()

    async def twin_shows_it() -> bool:
        twin = (
            await stub.GetStationTwin(stations_pb2.GetStationTwinRequest(station_id=SWAP_STATION), metadata=md)
        ).twin
        slots = {s.slot: s for s in twin.slots}
        return slots[slot_a].pack_id == a and slots[slot_a].soc_permille == 640 and slots[slot_b].soc_permille == 990

    await until(twin_shows_it)
    pack_a = (await stub.GetPack(stations_pb2.GetPackRequest(pack_id=a), metadata=md)).pack
    assert (pack_a.soc_permille, pack_a.soh_permille, pack_a.temperature_milli_c) == (640, 876, 31_200)
    pack_b = (await stub.GetPack(stations_pb2.GetPackRequest(pack_id=b), metadata=md)).pack
    assert (pack_b.soh_permille, pack_b.temperature_milli_c) == (955, -4_500)
    assert pack_a.state == common_pb2.PACK_STATE_CHARGING

    # The dead rack keeps failing (and says so) while the live one is polled.
    dead = racks.gateway.pollers["rack-dead"]
    await until(lambda: asyncio.sleep(0, dead.unreachable))
    assert racks.gateway.pollers["rack-1"].polls > 0 and dead.polls == 0

    # Over-temperature (bit 0 -> defect "thermal") on pack b: an alarm, and the inspection path quarantines it.
    racks.rack.put(slot_b, "faults", 0b1)

    async def quarantined() -> bool:
        pack = (await stub.GetPack(stations_pb2.GetPackRequest(pack_id=b), metadata=md)).pack
        return pack.state == common_pb2.PACK_STATE_QUARANTINED

    await until(quarantined)
    # Comm-lost (bit 3, no defect) on pack a: an alarm only; the pack stays in service.
    racks.rack.put(slot_a, "faults", 0b1000)

    async def alarms() -> dict[str | None, set[str]]:
        async with running.platform.db.transaction() as session:
            found = (await session.exec(select(Alarm).where(Alarm.station_id == SWAP_STATION))).all()
            out: dict[str | None, set[str]] = {}
            for alarm in found:
                out.setdefault(alarm.pack_id, set()).add(alarm.code)
            return out

    async def both_alarms() -> bool:
        found = await alarms()
        return "bms_over_temperature" in found.get(b, set()) and "bms_comm_lost" in found.get(a, set())

    await until(both_alarms)
    found = await alarms()
    assert "rack_unreachable" in found.get(None, set())
    pack_a = (await stub.GetPack(stations_pb2.GetPackRequest(pack_id=a), metadata=md)).pack
    assert pack_a.state == common_pb2.PACK_STATE_CHARGING
    # A later report of the quarantined pack never takes it out of quarantine.
    racks.rack.put(slot_b, "soc_permille", 991)
    await asyncio.sleep(0.5)
    assert (await stub.GetPack(stations_pb2.GetPackRequest(pack_id=b), metadata=md)).pack.state == (
        common_pb2.PACK_STATE_QUARANTINED
    )
    assert not racks.uplink.rejections
