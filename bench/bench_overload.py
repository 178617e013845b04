"""Overload, open loop: QuotePowerUp offered at fixed rates to `voltcloud serve` with admission on (the
defaults: rpc_max_running=32, rpc_max_queued=64, rpc_deadline_floor_s=0.01) and, in the same invocation, to a
second server with admission effectively off (1,000,000 running / 1,000,000 queued, floor 0).

Each server is its own single process (`python -m voltcloud.cli serve --workers 1`, embedded SQLite in a temporary
directory, the demo city seeded). The client is this process: one gRPC channel per server, a fleet manager's token,
a quote for the first fleet vehicle of the demo city. At rate R for S seconds, call i is scheduled at t0 + i/R and sent
at that time whatever happened to earlier calls (open loop: a slow server does not slow the offered load); its deadline
is 2 s after its scheduled time and its latency is measured from the scheduled time, so a client that falls
behind shows up as latency, not as a lower offered rate (its send lag is printed too). The two servers take
turns rate by rate (off, then on, --repeats times), with a pause between runs, so drift of the shared machine
hits both alike.

Each run is printed as it ends; then one row per rate and server: the medians over the repeats of goodput (OK
answers per second of offered load; with its range), of the p50/p99 latency of the OK calls and of the p50
latency of RESOURCE_EXHAUSTED answers (they must be fast), the answers by status summed over the repeats, and
the goodput ratio on/off.

    python bench/bench_overload.py    # rates 25 100 150 200 400, 3 x 6 s each per server (~4.5 min)
    python bench/bench_overload.py --rates 50 200 --seconds 5 --repeats 1 --json /tmp/overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
from _openloop import (  # bench/ is this script's directory, so first on sys.path
    DEADLINE_S,
    Run,
    Server,
    median,
    open_loop,
    run_of,
    server_env,
    start_server,
    stop_server,
    timeout_for,
)

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.platform.auth import Role, Tenant, TokenService

JWT_KEY = "overload-bench-key-0123456789abcdef0123456789"
SETTLE_S = 1.0  # after the last call of a run ended, so the next run starts on an idle machine
ADMISSION_OFF = {
    "VOLTCLOUD_RPC_MAX_RUNNING": "1000000",
    "VOLTCLOUD_RPC_MAX_QUEUED": "1000000",
    "VOLTCLOUD_RPC_DEADLINE_FLOOR_S": "0",
}
ADMISSION_ON: dict[str, str] = {}  # the shipped defaults of voltcloud.config.Settings
POSITION = common_pb2.LatLng(lat=31.23, lng=121.47)  # central Shanghai, inside the demo city


@contextlib.asynccontextmanager
async def servers(root: Path) -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    try:
        for name, env in (("admission off", ADMISSION_OFF), ("admission on", ADMISSION_ON)):
            data_dir = root / name.replace(" ", "_")
            started.append(
                await start_server(name, data_dir, server_env(JWT_KEY, env), ["--seed-demo", "--workers", "1"])
            )
        yield started
    finally:
        for server in started:
            await stop_server(server)


def fleet_vehicle(data_dir: Path) -> tuple[str, str]:
    """(vehicle id, fleet id) of the first fleet vehicle the server seeded: its fleet manager may order for it."""
    with contextlib.closing(sqlite3.connect(data_dir / "voltcloud.db")) as db:
        row = db.execute("SELECT id, fleet_id FROM vehicle WHERE fleet_id IS NOT NULL ORDER BY id LIMIT 1").fetchone()
    if row is None:
        raise RuntimeError("the demo seed has no fleet vehicle")
    return str(row[0]), str(row[1])


class Client:
    def __init__(self, server: Server) -> None:
        vehicle_id, fleet_id = fleet_vehicle(server.data_dir)
        tokens = TokenService(JWT_KEY, "voltcloud", dt.timedelta(hours=1))
        token = tokens.mint("bench-fleet-manager", Role.FLEET_MANAGER, Tenant("fleet", fleet_id))
        self.server = server
        self.fleet_id = fleet_id
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.request = ordering_pb2.QuotePowerUpRequest(
            vehicle_id=vehicle_id, position=POSITION, target_soc_permille=800
        )
        self.channel = grpc.aio.insecure_channel(server.target)
        self.stub = ordering_pb2_grpc.OrderingServiceStub(self.channel)

    async def warm(self, calls: int = 20) -> None:
        for _ in range(calls):  # connects the channel and warms the server's caches; any failure stops the bench
            await self.stub.QuotePowerUp(self.request, metadata=self.metadata, timeout=10)

    async def call(self, _index: int, scheduled: float) -> str:
        try:
            await self.stub.QuotePowerUp(self.request, metadata=self.metadata, timeout=timeout_for(scheduled))
            return "OK"
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)

    async def run(self, rate: float, seconds: float) -> Run:
        t0 = asyncio.get_running_loop().time() + 0.05
        return run_of(self.server.name, rate, seconds, await open_loop(self.call, rate, seconds, t0))


async def bench(rates: list[float], seconds: float, repeats: int) -> list[Run]:
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="overload-bench-") as tmp:
        async with servers(Path(tmp)) as started:
            clients = [Client(server) for server in started]
            print(f"request: {clients[0].request.vehicle_id}, as the manager of its fleet {clients[0].fleet_id}")
            print(
                f"QuotePowerUp open loop, {seconds:g} s per run, deadline {DEADLINE_S:g} s from the scheduled send; "
                f"Python {platform.python_version()}, {os.cpu_count()} CPUs\nruns:"
            )
            for client in clients:
                await client.warm()
            for rate in rates:
                for _ in range(repeats):
                    for client in clients:
                        runs.append(await client.run(rate, seconds))
                        print(f"  {asdict(runs[-1])}", flush=True)
                        await asyncio.sleep(SETTLE_S)
            for client in clients:
                await client.channel.close()
    return runs


def summarize(runs: list[Run]) -> None:
    """One row per rate, the servers side by side: medians over the repeats (goodput also with its range),
    answers summed over them, and the ratio of the median goodputs on/off."""
    groups: dict[float, dict[str, list[Run]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for run in runs:
        groups[run.offered_per_s][run.server].append(run)
    repeats = max(len(group) for by_server in groups.values() for group in by_server.values())
    print(f"\nmedians over {repeats} run(s) per rate and server; answers summed over them; off | on")
    columns = ["offered/s", "goodput/s off", "goodput/s on", "on/off", "OK p50 / p99 ms off", "OK p50 / p99 ms on"]
    print("| " + " | ".join([*columns, "RESOURCE_EXHAUSTED p50 ms on", "answers off", "answers on"]) + " |")
    print("|" + "---|" * (len(columns) + 3))
    lags: list[float | None] = []
    for rate, by_server in groups.items():
        off, on = by_server["admission off"], by_server["admission on"]
        lags += [median([r.send_lag_p99_ms for r in group]) for group in (off, on)]
        goodput_off, goodput_on = median([r.goodput_per_s for r in off]), median([r.goodput_per_s for r in on])
        ratio = f"{goodput_on / goodput_off:.2f}" if goodput_on is not None and goodput_off else "-"
        cells = [f"{rate:g}", goodput(off), goodput(on), ratio, latencies(off), latencies(on)]
        cells += [str(median([r.exhausted_p50_ms for r in on]) or "-"), answers(off), answers(on)]
        print("| " + " | ".join(cells) + " |")
    print(f"client send lag, p99 (median over runs): at most {max(v for v in lags if v is not None):g} ms")


def goodput(group: list[Run]) -> str:
    values = [r.goodput_per_s for r in group]
    return f"{median(list(values))} ({min(values):g}-{max(values):g})"


def latencies(group: list[Run]) -> str:
    p50, p99 = median([r.ok_p50_ms for r in group]), median([r.ok_p99_ms for r in group])
    return f"{p50 if p50 is not None else '-'} / {p99 if p99 is not None else '-'}"


def answers(group: list[Run]) -> str:
    total: collections.Counter[str] = collections.Counter()
    for run in group:
        total.update(run.by_status)
    return ", ".join(f"{code} {n:,}" for code, n in total.most_common())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[25.0, 100.0, 150.0, 200.0, 400.0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load duration of one run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate and server (medians are reported)")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--summarize", type=Path, help="print the table of a --json file written before, run nothing")
    args = parser.parse_args()
    if args.summarize:
        summarize([Run(**run) for run in json.loads(args.summarize.read_text())["runs"]])
        return 0
    runs = asyncio.run(bench(args.rates, args.seconds, args.repeats))
    summarize(runs)
    if args.json:
        meta: dict[str, Any] = {
            "rpc": "voltcloud.v1.OrderingService/QuotePowerUp",
            "deadline_s": DEADLINE_S,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "admission_off_env": ADMISSION_OFF,
        }
        args.json.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
