"""Station commands and twin updates across replicas: two `voltcloud serve` processes on one database, a gateway
(answering every command at once) on replica A. Measures, interleaved in one run so both columns share the
machine's conditions:

- SendStationCommand round trip called on A (the gateway's own replica: the local path) and on B (through the
  change feed: command change -> A -> gateway -> result change -> B);
- a connector status reported to A until WatchStation on B shows it (event transaction -> "twin" change).

    python bench/bench_commands_across_replicas.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/vc_bench_cmd
    python bench/bench_commands_across_replicas.py   # SQLite: both processes on one temporary file

The database must be empty (it is migrated and seeded with the demo world). Prints medians and p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from voltcloud.api.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc, stations_pb2, stations_pb2_grpc
from voltcloud.platform.auth import Role, Tenant, TokenService

KEY = "bench-commands-across-replicas-key-0123456789"
OPERATOR, STATION, CONNECTOR, GW = "op-0001", "st-000013", "cn-0000001", "gw-bench"


async def serve(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voltcloud.cli", "serve", "--listen", "127.0.0.1:0", "--seed-demo",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
    port = re.search(r":(\d+) ", line)
    assert port, line
    return process, f"127.0.0.1:{port.group(1)}"


class Gateway:
    def __init__(self, channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...]) -> None:
        self.queue: asyncio.Queue[ingest_pb2.GatewayToPlatform] = asyncio.Queue()
        self.call = ingest_pb2_grpc.IngestServiceStub(channel).Uplink(self._requests(), metadata=md)
        self.seq = 0

    async def _requests(self) -> AsyncIterator[ingest_pb2.GatewayToPlatform]:
        while True:
            yield await self.queue.get()

    async def run(self, ready: asyncio.Event) -> None:
        hello = ingest_pb2.Hello(gateway_id=GW, kind=ingest_pb2.GATEWAY_KIND_OCPP, station_ids=[STATION])
        self.queue.put_nowait(ingest_pb2.GatewayToPlatform(hello=hello))
        while True:
            message = await self.call.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("msg") == "ack":
                ready.set()
            elif message.WhichOneof("msg") == "command":
                self.seq += 1
                result = stations_pb2.StationCommandResult(
                    command_id=message.command.command_id, status=stations_pb2.COMMAND_STATUS_ACCEPTED
                )
                self.queue.put_nowait(
                    ingest_pb2.GatewayToPlatform(seq=self.seq, command_result=ingest_pb2.CommandResult(result=result))
                )

    def status(self, status: int) -> None:
        self.seq += 1
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(dt.datetime.now(dt.UTC))
        change = ingest_pb2.ConnectorStatusChanged(connector_id=CONNECTOR, status=status)  # type: ignore[arg-type]
        event = ingest_pb2.StationEvent(station_id=STATION, time=now, connector_status=change)
        self.queue.put_nowait(ingest_pb2.GatewayToPlatform(seq=self.seq, event=event))


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name:<44} n={len(samples):4d}  median {statistics.median(samples):7.2f} ms  p99 {p99:7.2f} ms"


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="vc-bench-cmd-"))
    url = args.database_url or f"sqlite+aiosqlite:///{data / 'voltcloud.db'}"
    env = {**os.environ, "VOLTCLOUD_DATA_DIR": str(data), "VOLTCLOUD_DATABASE_URL": url, "VOLTCLOUD_JWT_KEY": KEY}
    env["VOLTCLOUD_REOPTIMIZE_INTERVAL_S"] = "0"
    tokens = TokenService(KEY, "voltcloud", dt.timedelta(hours=1))
    gateway_md = (("authorization", f"Bearer {tokens.mint(GW, Role.GATEWAY, Tenant('operator', OPERATOR))}"),)
    operator = (("authorization", f"Bearer {tokens.mint('ops', Role.OPERATOR, Tenant('operator', OPERATOR))}"),)
    processes = []
    try:
        for _ in range(2):
            processes.append(await serve(env))
        (_, target_a), (_, target_b) = processes
        async with grpc.aio.insecure_channel(target_a) as channel_a, grpc.aio.insecure_channel(target_b) as channel_b:
            gateway = Gateway(channel_a, gateway_md)
            ready = asyncio.Event()
            runner = asyncio.ensure_future(gateway.run(ready))
            await asyncio.wait_for(ready.wait(), 30)
            stubs = {
                "A": stations_pb2_grpc.StationServiceStub(channel_a),
                "B": stations_pb2_grpc.StationServiceStub(channel_b),
            }
            watch = stubs["B"].WatchStation(stations_pb2.WatchStationRequest(station_id=STATION), metadata=operator)
            twin = (await watch.read()).twin
            while not twin.online:  # B learns the link from the feed
                twin = (await watch.read()).twin
            times: dict[str, list[float]] = {"A": [], "B": [], "watch": []}
            statuses = [common_pb2.CONNECTOR_STATUS_FAULTED, common_pb2.CONNECTOR_STATUS_AVAILABLE]
            for i in range(args.warmup + args.n):
                for replica in ("A", "B"):
                    request = stations_pb2.SendStationCommandRequest(
                        idempotency_key=f"{replica}{i}", station_id=STATION,
                        command=stations_pb2.StationCommand(
                            unlock_connector=stations_pb2.UnlockConnectorCommand(connector_id=CONNECTOR)
                        ),
                        timeout=duration_pb2.Duration(seconds=10),
                    )  # fmt: skip
                    started = time.perf_counter()
                    answer = await stubs[replica].SendStationCommand(request, metadata=operator, timeout=30)
                    assert answer.result.status == stations_pb2.COMMAND_STATUS_ACCEPTED, answer
                    if i >= args.warmup:
                        times[replica].append((time.perf_counter() - started) * 1000)
                status = statuses[i % 2]
                started = time.perf_counter()
                gateway.status(status)
                while next(c for c in twin.connectors if c.connector_id == CONNECTOR).status != status:
                    twin = (await asyncio.wait_for(watch.read(), 30)).twin
                if i >= args.warmup:
                    times["watch"].append((time.perf_counter() - started) * 1000)
            watch.cancel()
            gateway.call.cancel()
            runner.cancel()
        print(f"database: {url.split(':')[0]}, {args.n} rounds after {args.warmup} warm-up")
        print(summary("SendStationCommand on A (gateway's replica)", times["A"]))
        print(summary("SendStationCommand on B (via the feed)", times["B"]))
        print(summary("status reported to A -> WatchStation on B", times["watch"]))
    finally:
        for process, _ in processes:
            process.terminate()
            await process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
