"""Battery health from a pack's station reports (trend, temperature stress, fast-charge share, the predicted
retirement month: numbers checked against a hand calculation) and the withdrawal flow (WITHDRAWN, the engine
stops offering the pack, a withdraw command goes to the station), over real gRPC on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlmodel import col, select

from tests.integration.conftest import RunningPlatform
from voltcloud.api.v1 import common_pb2, ingest_pb2, maintenance_pb2, stations_pb2
from voltcloud.platform.auth import Role, Tenant
from voltcloud.stations import packs
from voltcloud.stations.models import Pack, PackType
from voltcloud_gateways.uplink import UplinkClient

from .maintenance_field_support import OTHER, operator, stations_of, stub, ts

T0 = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
# day, SOH permille, cycles since the first report, temperature m°C, charging power in units of the pack's 1C
READINGS = [
    (0, 950, 0, 30_000, 0.0),
    (30, 940, 30, 46_000, 1.0),
    (60, 930, 60, 50_000, 0.5),
    (90, 920, 90, 25_000, 2.0),
]


def fleet_manager(running_platform: object) -> tuple[tuple[str, str], ...]:
    platform: Any = running_platform
    token = platform.tokens.mint("fm", Role.FLEET_MANAGER, Tenant("fleet", "fl-0001"))
    return (("authorization", f"Bearer {token}"),)


async def _swap_pack(running: RunningPlatform) -> tuple[Pack, int]:
    platform = running.platform
    station_ids = [s.id for s in await stations_of(platform, kind=1)]
    async with platform.db.transaction() as session:
        pack = (
            await session.exec(select(Pack).where(col(Pack.station_id).in_(station_ids), Pack.state == 3).limit(1))
        ).one()
        pack_type = await session.get(PackType, pack.pack_type_id)
    assert pack_type is not None
    return pack, pack_type.capacity_wh


async def test_battery_health_fits_the_trend_and_predicts_the_retirement_month(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform, api = running.platform, stub(channel)
    pack, capacity = await _swap_pack(running)
    base = pack.cycles
    for day, soh, cycles, temp, c_rate in READINGS:
        async with platform.db.transaction() as session:
            await packs.apply_report(
                session, T0 + dt.timedelta(days=day), pack_id=pack.id, station_id=pack.station_id or "", slot_no=None,
                soc_permille=900, soh_permille=soh, temperature_milli_c=temp, cycles=base + cycles, state=None,
                power_w=int(capacity * c_rate),
            )  # fmt: skip
    request = maintenance_pb2.GetBatteryHealthRequest(pack_id=pack.id, start_time=ts(T0), page_size=3)
    health = await api.GetBatteryHealth(request, metadata=operator(platform))
    # By hand: SOH falls 10 permille per 30 days (slope -1/3 per day) from 950 at day 0; it reaches 800 after
    # (800 - 950) / (-1/3) = 450 days: 2031-01-01 + 450 days = 2032-03-26.
    assert health.soh_permille == 920 and health.cycle_count == base + 90
    assert health.trend_permille_per_30_days == -10
    assert health.trend_permille_per_100_cycles == -33  # -10 per 30 cycles
    assert health.predicted_retirement_month == "2032-03" and health.retirement_threshold_permille == 800
    assert health.fitted_samples == 4
    assert health.hot_share_permille == 500 and health.max_temperature_milli_c == 50_000  # 46 and 50 °C of 4
    assert health.fast_charge_share_permille == 667  # 1C and 2C of the 3 charging samples
    assert [s.soh_permille for s in health.samples] == [950, 940, 930] and health.next_page_token
    rest = await api.GetBatteryHealth(
        maintenance_pb2.GetBatteryHealthRequest(
            pack_id=pack.id, start_time=ts(T0), page_size=3, page_token=health.next_page_token
        ),
        metadata=operator(platform),
    )
    assert [(s.soh_permille, s.cycle_count) for s in rest.samples] == [(920, base + 90)] and not rest.next_page_token

    # The operator's own threshold: 900 is crossed (900 - 950) / (-1/3) = 150 days after 2031-01-01: 2031-05-31.
    policy = maintenance_pb2.SetBatteryPolicyRequest(idempotency_key="bp", retirement_soh_permille=900)
    assert (await api.SetBatteryPolicy(policy, metadata=operator(platform))).operator_id == "op-0001"
    again = await api.GetBatteryHealth(request, metadata=operator(platform))
    assert (again.retirement_threshold_permille, again.predicted_retirement_month) == (900, "2031-05")
    with pytest.raises(grpc.aio.AioRpcError) as low:
        await api.SetBatteryPolicy(
            maintenance_pb2.SetBatteryPolicyRequest(idempotency_key="bp2", retirement_soh_permille=10),
            metadata=operator(platform),
        )
    assert low.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for meta in (operator(platform, OTHER), fleet_manager(platform)):
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await api.GetBatteryHealth(maintenance_pb2.GetBatteryHealthRequest(pack_id=pack.id), metadata=meta)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


async def test_withdrawn_pack_leaves_circulation_and_the_station_is_told(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform, api = running.platform, stub(channel)
    pack, _ = await _swap_pack(running)
    engine = platform.powerup.engine

    def engine_state() -> int:
        _, seen = engine.station_resources(pack.station_id or "")
        return int(next(p for p in seen if p["id"] == pack.id)["state"])

    assert engine_state() == common_pb2.PACK_STATE_READY
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await api.WithdrawPack(
            maintenance_pb2.WithdrawPackRequest(idempotency_key="w0", pack_id=pack.id, reason="SOH"),
            metadata=operator(platform, OTHER),
        )
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    request = maintenance_pb2.WithdrawPackRequest(idempotency_key="w1", pack_id=pack.id, reason="SOH below 800")
    done = await api.WithdrawPack(request, metadata=operator(platform))
    assert done.pack_state == common_pb2.PACK_STATE_WITHDRAWN and done.station_id == pack.station_id
    assert done.command_status == "OFFLINE"  # no gateway holds the demo stations: the sticky state waits for it
    for _ in range(100):  # the engine learns it from the inventory feed
        if engine_state() == common_pb2.PACK_STATE_WITHDRAWN:
            break
        await asyncio.sleep(0.05)
    assert engine_state() == common_pb2.PACK_STATE_WITHDRAWN
    async with platform.db.transaction() as session:
        row = await session.get(Pack, pack.id)
        assert row is not None and row.state == common_pb2.PACK_STATE_WITHDRAWN
        # A station report cannot bring it back (sticky).
        await packs.apply_report(
            session, dt.datetime.now(dt.UTC), pack_id=pack.id, station_id=pack.station_id or "", slot_no=None,
            soc_permille=None, soh_permille=None, temperature_milli_c=None, cycles=None, state=3,
        )  # fmt: skip
    async with platform.db.transaction() as session:
        row = await session.get(Pack, pack.id)
        assert row is not None and row.state == common_pb2.PACK_STATE_WITHDRAWN
    again = await api.WithdrawPack(request, metadata=operator(platform))  # a retry replays the first answer
    assert again == done


async def test_the_withdraw_command_reaches_the_station_gateway(
    running: RunningPlatform, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    """A real gateway client (voltcloud_gateways' uplink) holds the pack's station: it receives the command."""
    platform, api = running.platform, stub(channel)
    pack, _ = await _swap_pack(running)
    seen: list[ingest_pb2.Command] = []

    async def on_command(command: ingest_pb2.Command) -> stations_pb2.StationCommandResult:
        seen.append(command)
        return stations_pb2.StationCommandResult(status=stations_pb2.COMMAND_STATUS_ACCEPTED, detail="slot locked")

    gateway = "gw-withdraw"
    client = UplinkClient(
        running.target, gateway_id=gateway, kind=ingest_pb2.GATEWAY_KIND_SWAP,
        token=platform.tokens.mint(gateway, Role.GATEWAY, Tenant("operator", "op-0001")),
        station_ids=[pack.station_id or ""], outbox_path=tmp_path / "outbox.db", on_command=on_command,
    )  # fmt: skip
    client.start()
    try:
        await asyncio.wait_for(client.connected.wait(), 10)
        done = await api.WithdrawPack(
            maintenance_pb2.WithdrawPackRequest(idempotency_key="g1", pack_id=pack.id, reason="thermal event"),
            metadata=operator(platform),
        )
    finally:
        await client.stop()
    assert done.command_status == "ACCEPTED" and done.pack_state == common_pb2.PACK_STATE_WITHDRAWN
    assert [(c.station_id, c.command.withdraw_pack.pack_id, c.command.withdraw_pack.reason) for c in seen] == [
        (pack.station_id, pack.id, "thermal event")
    ]
