#!/usr/bin/env python3
"""Vehicle telemetry ingest, end to end: GB/T-like frames up the gateway uplink over real gRPC into the
telemetry store (history rows, remediation, live state, alerts, the "vehicle_state" feed change), and the
latency from a frame's send to the fleet manager's WatchVehicles update.

The platform runs in its own process (SQLite file by default, or --database-url for PostgreSQL); this
process is the GB/T gateway and the manager's map. A fleet and its vehicles are onboarded over the API first.

    python bench/bench_telemetry_ingest.py                                   # SQLite
    python bench/bench_telemetry_ingest.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench
    python bench/bench_telemetry_ingest.py --in-process          # the telemetry store alone, no gRPC
    python bench/bench_telemetry_ingest.py --source /tmp/before --source . --rounds 3   # alternated, medians

`--in-process`: the fleet is onboarded over the API as above, then the platform process stops and this process
calls `VehicleTelemetry.ingest` (scope check, remediation, history, live state, alerts, feed change: one
transaction per batch) on the same database; it reports frames/s and this process's CPU time per frame.
`--source DIR` (repeatable): each round runs the bench once per source tree, in a subprocess importing
`DIR/python` (e.g. `git archive main python | tar -x -C /tmp/before`, plus the built `_core*.so`), alternating
sources so that a load change hits both alike; medians per source and their ratio are printed.

A frame = one vehicle at one time with READINGS_PER_FRAME readings (what one GB/T 32960 real-time frame's
vehicle, position, extremes and pack blocks give). A batch = `--frames-per-batch` frames of distinct vehicles
(what a gateway gathers in a few ms from many terminals); the clock stops at the ack of the last batch (every
reading stored and every live state moved, committed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import json
import multiprocessing
import os
import platform as host
import statistics
import subprocess
import sys
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


async def onboard_only(target: str, vehicles: int) -> tuple[str, list[str]]:
    async with grpc.aio.insecure_channel(target) as channel:
        return await onboard(channel, vehicles)


def raw_batch(vehicle_ids: list[str], base: dt.datetime, tick: int) -> dict[str, list[Any]]:
    """`batch` as the ingest service hands it to the telemetry room: per vehicle, its readings."""
    from voltcloud.telemetry.api import Raw

    message = batch(vehicle_ids, base, tick)
    return {v: [Raw(base, m, x) for m, x in zip(METRICS, message.col_int_value[:READINGS_PER_FRAME], strict=True)]
            for v in vehicle_ids}  # fmt: skip


async def run_in_process(
    url: str, fleet_id: str, ids: list[str], batches: int, frames_per_batch: int, profile: str = ""
) -> dict[str, float]:
    from voltcloud.platform.auth import Principal
    from voltcloud.platform.clock import SystemClock
    from voltcloud.platform.db import Database
    from voltcloud.telemetry import api as telemetry

    defaults = Settings(jwt_key=KEY)
    limits = telemetry.Limits(
        speed_m_per_h=defaults.telemetry_speed_limit_m_per_h,
        fatigue_drive=dt.timedelta(seconds=defaults.telemetry_fatigue_drive_s),
        fatigue_rest=dt.timedelta(seconds=defaults.telemetry_fatigue_rest_s),
        low_soc_permille=defaults.telemetry_low_soc_permille,
    )
    rules = telemetry.Rules(telemetry.Thresholds(), limits)
    db = Database(url)
    vehicles = telemetry.VehicleTelemetry(db, SystemClock(), rules, telemetry.NoPowerUps(), telemetry.NoFacts())
    gateway = Principal(GW, Role.GATEWAY, Tenant("fleet", fleet_id))
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    groups = [ids[i : i + frames_per_batch] for i in range(0, len(ids), frames_per_batch)]
    plan = [
        raw_batch(groups[k % len(groups)], t0 + dt.timedelta(seconds=10 * (k // len(groups))), k // len(groups))
        for k in range(batches)
    ]
    profiler = cProfile.Profile() if profile else None
    started, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    for readings in plan:
        _, refused = await vehicles.ingest(gateway, readings)
        if refused:
            raise SystemExit(f"refused: {refused[:3]}")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    await db.dispose()
    frames = sum(len(r) for r in plan)
    return {
        "frames": frames,
        "seconds": elapsed,
        "frames_per_s": frames / elapsed,
        "readings_per_s": frames * READINGS_PER_FRAME / elapsed,
        "cpu_us_per_frame": 1e6 * cpu / frames,
    }


async def _fresh_postgres(url: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


def measure(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        if url.startswith("postgresql"):
            asyncio.run(_fresh_postgres(url))
        ports: Any = multiprocessing.get_context("spawn").Queue()
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(url, tmp, ports), daemon=True)
        server.start()
        try:
            port = ports.get(timeout=120)
            target = f"127.0.0.1:{port}"
            if not args.in_process:
                return asyncio.run(run(target, args.vehicles, args.batches, args.frames_per_batch, args.pace_ms / 1000))
            fleet_id, ids = asyncio.run(onboard_only(target, args.vehicles))
        finally:
            server.terminate()
            server.join(10)
        return asyncio.run(run_in_process(url, fleet_id, ids, args.batches, args.frames_per_batch, args.profile))


def describe(dialect: str, r: dict[str, float]) -> str:
    text = (
        f"{dialect}: {r['frames']:.0f} frames ({READINGS_PER_FRAME} readings each) in {r['seconds']:.2f} s: "
        f"{r['frames_per_s']:,.0f} frames/s, {r['readings_per_s']:,.0f} readings/s"
    )
    if "cpu_us_per_frame" in r:
        return text + f"; {r['cpu_us_per_frame']:.1f} us CPU per frame (in process)"
    latency = f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms ({r['watch_updates']:.0f} updates)"
    return text + f"; WatchVehicles frame->update {latency}"


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"load average {load}; host: {host.machine()}, {os.cpu_count()} cpus, Python {host.python_version()}"


def alternate(args: argparse.Namespace, argv: list[str]) -> None:
    """Runs this bench once per source tree per round, in subprocesses, alternating; prints medians."""
    passed, skip = [], False
    for arg in argv:  # everything but --source/--rounds goes to the child runs
        if skip:
            skip = False
            continue
        if arg in ("--source", "--rounds"):
            skip = True
            continue
        if not arg.startswith(("--source=", "--rounds=")):
            passed.append(arg)
    results: dict[str, list[dict[str, float]]] = {src: [] for src in args.source}
    for round_ in range(args.rounds):
        for src in args.source:
            env = dict(os.environ, PYTHONPATH=str(Path(src).resolve() / "python"))
            out = subprocess.run(
                [sys.executable, __file__, *passed, "--json"], env=env, check=True, capture_output=True, text=True
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results[src].append(result)
            print(f"round {round_ + 1} {src}: {result['frames_per_s']:,.0f} frames/s", flush=True)
    dialect = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    medians = {}
    for src, runs in results.items():
        medians[src] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"median of {len(runs)}, {src}: " + describe(dialect, medians[src]))
    first, *others = args.source
    for src in others:
        print(f"{src} / {first}: {medians[src]['frames_per_s'] / medians[first]['frames_per_s']:.2f}x frames/s")
    print(machine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (its public schema is wiped!)")
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--frames-per-batch", type=int, default=500)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument(
        "--pace-ms", type=float, default=0.0, help="pause between batches: latency at a given load, not saturation"
    )
    parser.add_argument("--in-process", action="store_true", help="the telemetry store alone, without gRPC")
    parser.add_argument("--source", action="append", default=[], help="a source tree to run (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="with --source: runs per source, alternated")
    parser.add_argument("--profile", default="", help="with --in-process: cProfile stats of the ingest to this file")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.source:
        alternate(args, sys.argv[1:])
        return
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    dialect = "postgresql" if (args.database_url or "").startswith("postgresql") else "sqlite"
    print(describe(dialect, result))
    print(machine())


if __name__ == "__main__":
    main()
