#!/usr/bin/env python3
"""Vehicle telemetry ingest, end to end: GB/T-like frames up the gateway uplink over real gRPC into the
telemetry store (history rows, remediation, live state, alerts, the "vehicle_state" feed change), and the
latency from a frame's send to the fleet manager's WatchVehicles update.

The platform runs in its own process (SQLite file by default, or --database-url for PostgreSQL); this
process is the GB/T gateway and the manager's map. A fleet and its vehicles are onboarded over the API first.

    python bench/bench_telemetry_ingest.py                                   # SQLite
    python bench/bench_telemetry_ingest.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench

A frame = one vehicle at one time with READINGS_PER_FRAME readings (what one GB/T 32960 real-time frame's
vehicle, position, extremes and pack blocks give). A batch = `--frames-per-batch` frames of distinct vehicles
(what a gateway gathers in a few ms from many terminals); the clock stops at the ack of the last batch (every
reading stored and every live state moved, committed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import platform as host
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from voltcloud.api.v1 import common_pb2 as c
from voltcloud.api.v1 import fleet_pb2, fleet_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from voltcloud.config import Settings
from voltcloud.fleet.vin import check_digit
from voltcloud.platform.auth import Role, Tenant, TokenService
from voltcloud.platform.limits import to_timestamp

KEY = "bench-telemetry-key-0123456789abcdef0123456789abcdef"
GW = "gbt-bench"
METRICS = [
    c.METRIC_SOC_PERMILLE, c.METRIC_SPEED_M_PER_H, c.METRIC_ODOMETER_M, c.METRIC_LATITUDE_MICRODEG,
    c.METRIC_LONGITUDE_MICRODEG, c.METRIC_VOLTAGE_MV, c.METRIC_CURRENT_MA, c.METRIC_TEMPERATURE_MAX_MILLI_C,
    c.METRIC_INSULATION_KOHM, c.METRIC_CELL_VOLTAGE_MAX_MV, c.METRIC_CELL_VOLTAGE_MIN_MV,
    c.METRIC_TEMPERATURE_MILLI_C, c.METRIC_SOH_PERMILLE, c.METRIC_ENERGY_WH, c.METRIC_POWER_W,
]  # fmt: skip
READINGS_PER_FRAME = len(METRICS)


def _serve(url: str, data_dir: str, port_queue: Any) -> None:
    from voltcloud.server import serve

    settings = Settings(
        listen="127.0.0.1:0", data_dir=Path(data_dir), database_url=url, jwt_key=KEY, seed_demo=False,
        log_level="WARNING", grace_period_s=0.5, drain_s=0.0, workers=1,
    )  # fmt: skip
    asyncio.run(serve(settings, on_ready=lambda p: port_queue.put(p.port)))


def md(subject: str, role: Role, tenant: Tenant | None = None) -> tuple[tuple[str, str], ...]:
    token = TokenService(KEY, "voltcloud", dt.timedelta(hours=2)).mint(subject, role, tenant)
    return (("authorization", f"Bearer {token}"),)


def vin(i: int) -> str:
    raw = f"LBV{i:06d}0AB{i:05d}"[:17]
    raw = raw[:8] + "0" + raw[9:]
    return raw[:8] + check_digit(raw) + raw[9:]


async def onboard(channel: grpc.aio.Channel, vehicles: int) -> tuple[str, list[str]]:
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    admin = md("admin", Role.PLATFORM_ADMIN)
    fleet = (
        await fleets.CreateFleet(fleet_pb2.CreateFleetRequest(idempotency_key="f", name="Bench"), metadata=admin)
    ).fleet
    manager = md("mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet.fleet_id))
    ids: list[str] = []
    for i in range(vehicles):
        vehicle = fleet_pb2.Vehicle(
            vin=vin(i), model_id="e-truck", fleet_id=fleet.fleet_id, battery_capacity_wh=80_000,
            consumption_wh_per_km=200, max_dc_power_w=100_000, connector_standards=[c.CONNECTOR_STANDARD_GBT_DC],
        )  # fmt: skip
        reply = await fleets.RegisterVehicle(
            fleet_pb2.RegisterVehicleRequest(idempotency_key=f"v{i}", vehicle=vehicle), metadata=manager
        )
        ids.append(reply.vehicle.vehicle_id)
    return fleet.fleet_id, ids


def batch(vehicle_ids: list[str], base: dt.datetime, tick: int) -> ingest_pb2.TelemetryBatch:
    """One frame per vehicle at `base`: plausible values that move a little with each tick (no alerts)."""
    b = ingest_pb2.TelemetryBatch(
        base_time=to_timestamp(base), sources=[ingest_pb2.TelemetrySource(vehicle_id=v) for v in vehicle_ids]
    )
    n = len(vehicle_ids)
    values = [800 - tick % 100, 60_000, 1_000_000 + tick * 160, 31_200_000 + tick * 10, 121_400_000 + tick * 10,
              380_000, 50_000, 30_000, 5_000, 4_100, 4_050, 28_000, 990, 0, 20_000]  # fmt: skip
    for i in range(n):
        b.col_source_index.extend([i] * READINGS_PER_FRAME)
        b.col_metric.extend(METRICS)
        b.col_offset_ms.extend([0] * READINGS_PER_FRAME)
        b.col_int_value.extend(values)
    return b


async def run(target: str, vehicles: int, batches: int, frames_per_batch: int, pace_s: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        fleet_id, ids = await onboard(channel, vehicles)
        gw = md(GW, Role.GATEWAY, Tenant("fleet", fleet_id))
        manager = md("mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet_id))
        t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
        groups = [ids[i : i + frames_per_batch] for i in range(0, len(ids), frames_per_batch)]
        plan = []  # (seq, message, base time)
        for k in range(batches):
            base = t0 + dt.timedelta(seconds=10 * (k // len(groups)), milliseconds=k % len(groups))
            message = batch(groups[k % len(groups)], base, k // len(groups))
            plan.append((k + 1, ingest_pb2.GatewayToPlatform(seq=k + 1, telemetry=message), base))
        sent_at: dict[dt.datetime, float] = {}
        latencies: list[float] = []

        watch = fleet_pb2_grpc.FleetServiceStub(channel).WatchVehicles(
            fleet_pb2.WatchVehiclesRequest(fleet_id=fleet_id), metadata=manager
        )

        async def follow() -> None:
            async for update in watch:
                if update.WhichOneof("update") != "state":
                    continue
                at = update.state.report_time.ToDatetime(dt.UTC)
                if at in sent_at:
                    latencies.append(time.perf_counter() - sent_at[at])

        watcher = asyncio.create_task(follow())
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def requests() -> Any:
            while (item := await queue.get()) is not None:
                yield item

        uplink = ingest_pb2_grpc.IngestServiceStub(channel).Uplink(requests(), metadata=gw)
        queue.put_nowait(ingest_pb2.GatewayToPlatform(hello=ingest_pb2.Hello(gateway_id=GW, kind=2)))
        await uplink.read()
        await asyncio.sleep(0.5)  # the watch stream's snapshot is done
        window = 8  # batches in flight, as a gateway's outbox sends ahead of the acks
        acked = 0
        started = time.perf_counter()
        for seq, message, base in plan:
            while seq - acked > window:
                reply = await uplink.read()
                if reply.WhichOneof("msg") == "ack":
                    acked = reply.ack.acked_seq
            if pace_s:
                await asyncio.sleep(pace_s)
            sent_at[base] = time.perf_counter()
            queue.put_nowait(message)
        while acked < len(plan):
            reply = await uplink.read()
            if reply.WhichOneof("msg") == "ack":
                acked = reply.ack.acked_seq
            elif reply.WhichOneof("msg") == "rejection":
                raise SystemExit(f"rejected: {reply.rejection}")
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.0)
        queue.put_nowait(None)
        watch.cancel()
        watcher.cancel()
        frames = sum(len(m.telemetry.sources) for _, m, _ in plan)
        lat = sorted(latencies)
        return {
            "frames": frames,
            "seconds": elapsed,
            "frames_per_s": frames / elapsed,
            "readings_per_s": frames * READINGS_PER_FRAME / elapsed,
            "watch_updates": len(lat),
            "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        }


async def _fresh_postgres(url: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (its public schema is wiped!)")
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--frames-per-batch", type=int, default=500)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument(
        "--pace-ms", type=float, default=0.0, help="pause between batches: latency at a given load, not saturation"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        if url.startswith("postgresql"):
            asyncio.run(_fresh_postgres(url))
        ports: Any = multiprocessing.get_context("spawn").Queue()
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(url, tmp, ports), daemon=True)
        server.start()
        try:
            port = ports.get(timeout=120)
            result = asyncio.run(
                run(f"127.0.0.1:{port}", args.vehicles, args.batches, args.frames_per_batch, args.pace_ms / 1000)
            )
        finally:
            server.terminate()
            server.join(10)
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(
        f"{dialect}: {result['frames']:.0f} frames ({READINGS_PER_FRAME} readings each) in {result['seconds']:.2f} s: "
        f"{result['frames_per_s']:,.0f} frames/s, {result['readings_per_s']:,.0f} readings/s; "
        f"WatchVehicles frame->update p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms "
        f"({result['watch_updates']} updates)"
    )
    print(f"host: {host.processor() or host.machine()}, {os.cpu_count()} cpus, Python {host.python_version()}")


if __name__ == "__main__":
    main()
