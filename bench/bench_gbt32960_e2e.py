#!/usr/bin/env python3
"""GB/T 32960 end to end, open loop: N terminals over TCP -> the gateway (`python -m voltcloud_gateways.gbt32960`,
its own process, VINs resolved by the platform) -> the uplink -> the platform (its own process: telemetry
store, remediation, live state, alerts, change feed) -> the fleet manager's WatchVehicles.

This process onboards a fleet and `--terminals` vehicles over the API, starts both processes, logs every
terminal in, then sends real-time frames (2016 edition: vehicle, position, extremes and alarm blocks, built by
the codec) at `--rate` frames/s spread over the terminals, on a fixed schedule whatever the answers (open
loop). Each frame of a vehicle carries the next second of data time, so every frame is one WatchVehicles
update. Measured: frames answered with success per second at the gateway, frames ingested per second (the
clock stops when the map shows every vehicle's last frame), frame send -> WatchVehicles update p50/p99, and the
gateway process's CPU per frame (user + system seconds from /proc over the same window / frames).
`--gateway-root` runs the gateway from another checkout (e.g. main before a change) for a before/after pair.

    python bench/bench_gbt32960_e2e.py --terminals 200 --rate 1000 --seconds 20
    python bench/bench_gbt32960_e2e.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench ...
    python bench/bench_gbt32960_e2e.py --terminals 200 --rate 1000 --seconds 15 --gateway-root ../main
"""

from __future__ import annotations

import argparse
import asyncio
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_telemetry_ingest as platform_bench  # the platform process, onboarding, tokens

from voltcloud.api.v1 import fleet_pb2, fleet_pb2_grpc
from voltcloud.platform.auth import Role, Tenant, TokenService
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
from voltcloud_gateways.gbt32960.fields import GbTime

ROOT = Path(__file__).resolve().parent.parent
GW = "gbt-e2e-bench"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frame(vin: str, at: dt.datetime, k: int) -> bytes:
    """One real-time frame: a vehicle driving steadily (no spike, no speeding, no alarm)."""
    blocks: list[rt.Block] = [
        rt.Vehicle(1, 3, 1, 60_000, 1_000_000 + 100 * (k // 6), 384_500, 12_300, 800 - 10 * (k // 600), 1,
                   0x2E, 5_000, 12, 0),
        rt.Position(0, 121_400_000 + 15 * k, 31_200_000 + 10 * k),
        rt.Extremes(1, 12, 4_123, 1, 40, 3_998, 1, 3, 35_000, 1, 7, 21_000),
        rt.Alarms(0, 0, (), (), (), ()),
    ]  # fmt: skip
    data = rt.encode_realtime(GbTime.from_utc(at), blocks, Edition.V2016)
    return encode_frame(Edition.V2016, Command.REALTIME, Flag.COMMAND, vin, data)


class Terminal:
    def __init__(self, vin: str, vehicle_id: str) -> None:
        self.vin, self.vehicle_id = vin, vehicle_id
        self.framer = FrameReader()
        self.answers: dict[int, int] = {}  # flag -> count

    async def login(self, port: int, at: dt.datetime) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(build_vehicle_login(Edition.V2016, self.vin, GbTime.from_utc(at), 1, "8986" * 5, ["P1"]))
        while True:
            answers = [f for f in self.framer.feed(await self.reader.read(4096)) if isinstance(f, Frame)]
            if answers:
                if answers[0].flag != Flag.SUCCESS:
                    raise SystemExit(f"login of {self.vin} refused: {answers[0].flag}")
                return

    async def read_answers(self) -> None:
        while chunk := await self.reader.read(65536):
            for f in self.framer.feed(chunk):
                if isinstance(f, Frame):
                    self.answers[f.flag] = self.answers.get(f.flag, 0) + 1


async def run(target: str, port: int, vins: list[str], ids: list[str], fleet_id: str, args: Any) -> dict[str, Any]:
    terminals = [Terminal(v, i) for v, i in zip(vins, ids, strict=True)]
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    total = int(args.rate * args.seconds)
    per = total // len(terminals)
    plan = [(terminals[n % len(terminals)], n // len(terminals)) for n in range(per * len(terminals))]
    payload = [frame(t.vin, t0 + dt.timedelta(seconds=k), k) for t, k in plan]
    sent: dict[tuple[str, dt.datetime], float] = {}
    latencies: list[float] = []
    last_seen: dict[str, float] = {}
    final = t0 + dt.timedelta(seconds=per - 1)
    done = asyncio.Event()
    async with grpc.aio.insecure_channel(target) as channel:
        manager = platform_bench.md("mgr", Role.FLEET_MANAGER, Tenant("fleet", fleet_id))
        watch = fleet_pb2_grpc.FleetServiceStub(channel).WatchVehicles(
            fleet_pb2.WatchVehiclesRequest(fleet_id=fleet_id), metadata=manager
        )

        async def follow() -> None:
            async for update in watch:
                if update.WhichOneof("update") != "state":
                    continue
                key = (update.state.vehicle_id, update.state.report_time.ToDatetime(dt.UTC))
                if key in sent:
                    latencies.append(time.perf_counter() - sent[key])
                if key[1] == final:
                    last_seen[key[0]] = time.perf_counter()
                    if len(last_seen) == len(terminals):
                        done.set()

        watcher = asyncio.create_task(follow())
        for i in range(0, len(terminals), 200):
            await asyncio.gather(*(t.login(port, t0) for t in terminals[i : i + 200]))
        readers = [asyncio.create_task(t.read_answers()) for t in terminals]
        await asyncio.sleep(1.0)
        started = time.perf_counter()
        cpu_started = cpu_seconds(args.gateway_pid)
        step = 1 / args.rate
        for n, ((terminal, k), raw) in enumerate(zip(plan, payload, strict=True)):
            due = started + n * step
            if (pause := due - time.perf_counter()) > 0:
                await asyncio.sleep(pause)
            sent[terminal.vehicle_id, t0 + dt.timedelta(seconds=k)] = time.perf_counter()
            terminal.writer.write(raw)
        sending = time.perf_counter() - started
        try:
            await asyncio.wait_for(done.wait(), args.drain_timeout)
        except TimeoutError:
            print(f"not every vehicle's last frame reached the map within {args.drain_timeout} s")
        gateway_cpu = cpu_seconds(args.gateway_pid) - cpu_started
        ingested_s = (max(last_seen.values()) if last_seen else time.perf_counter()) - started
        answered = sum(t.answers.get(Flag.SUCCESS, 0) for t in terminals)
        errors = sum(v for t in terminals for f, v in t.answers.items() if f != Flag.SUCCESS)
        for t in terminals:
            t.writer.close()
        for task in (*readers, watcher):
            task.cancel()
        watch.cancel()
    lat = sorted(latencies)
    return {
        "frames": len(plan),
        "offered_per_s": len(plan) / sending,
        "ingested_per_s": len(plan) / ingested_s if len(last_seen) == len(terminals) else float("nan"),
        "answered": answered,
        "errors": errors,
        "updates": len(lat),
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        "gateway_cpu_s": gateway_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (its public schema is wiped!)")
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1000.0, help="frames/s offered, over all terminals")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--port", type=int, default=39662)
    parser.add_argument("--gateway-root", type=Path, default=ROOT, help="checkout whose gateway code runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        if url.startswith("postgresql"):
            asyncio.run(platform_bench._fresh_postgres(url))
        ports: Any = multiprocessing.get_context("spawn").Queue()
        server = multiprocessing.get_context("spawn").Process(
            target=platform_bench._serve, args=(url, tmp, ports), daemon=True
        )
        server.start()
        gateway: subprocess.Popen[bytes] | None = None
        try:
            target = f"127.0.0.1:{ports.get(timeout=120)}"

            async def onboard() -> tuple[str, list[str]]:
                async with grpc.aio.insecure_channel(target) as channel:
                    return await platform_bench.onboard(channel, args.terminals)

            fleet_id, ids = asyncio.run(onboard())
            vins = [platform_bench.vin(i) for i in range(args.terminals)]
            token = TokenService(platform_bench.KEY, "voltcloud", dt.timedelta(hours=2)).mint(
                GW, Role.GATEWAY, Tenant("fleet", fleet_id)
            )
            config = {"gateway_id": GW, "platform": target, "token": token, "listen": f"127.0.0.1:{args.port}",
                      "state_dir": tmp, "read_timeout_s": 600}  # fmt: skip
            path = Path(tmp) / "gateway.json"
            path.write_text(json.dumps(config))
            root = args.gateway_root.resolve()
            env = {**os.environ, "PYTHONPATH": f"{root / 'python'}:{root / 'gateways'}"}
            cmd = [sys.executable, "-m", "voltcloud_gateways.gbt32960", "--config", str(path)]
            gateway = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
            time.sleep(2.0)
            args.gateway_pid = gateway.pid
            result = asyncio.run(run(target, args.port, vins, ids, fleet_id, args))
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(10)
            server.terminate()
            server.join(10)
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(
        f"{dialect}: {args.terminals} terminals, {result['frames']} frames offered "
        f"at {result['offered_per_s']:,.0f}/s; "
        f"answered success {result['answered']}, errors {result['errors']}; ingested {result['ingested_per_s']:,.0f} "
        f"frames/s; frame->WatchVehicles p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms "
        f"({result['updates']} updates)"
    )
    print(
        f"gateway ({args.gateway_root}): {result['gateway_cpu_s']:.2f} CPU-s over the run = "
        f"{1e6 * result['gateway_cpu_s'] / result['frames']:.0f} µs CPU per frame"
    )
    print(
        f"host: {host.processor() or host.machine()}, {os.cpu_count()} cpus, Python {host.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )


if __name__ == "__main__":
    main()
