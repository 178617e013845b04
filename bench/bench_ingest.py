#!/usr/bin/env python3
"""Ingest benchmarks: uplink telemetry readings/s through real gRPC, and OCPP messages/s through the gateway.

The platform runs in its own process (embedded SQLite, demo world); this process is the gateway side.

    python bench/bench_ingest.py                       # both, default sizes
    python bench/bench_ingest.py --batches 400 --batch-size 10000 --ocpp-clients 50 --ocpp-messages 200

Uplink: pre-built TelemetryBatch messages (columnar readings over the connectors of one station) are sent on
one Uplink stream; the rate counts readings until the platform acked the last seq (every reading applied to
the live twin). `--via-client` sends through UplinkClient instead (on-disk outbox included).
OCPP: N charge points on real WebSockets, each sending MeterValues CALLs back to back (one outstanding CALL
per connection, as OCPP-J requires); the rate counts CALLRESULTs received.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from voltcloud.api.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc
from voltcloud.config import Settings
from voltcloud.platform.auth import Role, Tenant, TokenService

KEY = "bench-ingest-key-0123456789abcdef0123456789abcdef"
STATION = "st-000013"
OPERATOR = "op-0001"
CONNECTORS = [f"cn-{i:07d}" for i in range(1, 9)]


def _serve(data_dir: str, port_queue: Any) -> None:
    from voltcloud.server import serve

    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=Path(data_dir),
        jwt_key=KEY,
        seed_demo=True,
        log_level="WARNING",
        grace_period_s=0.5,
        drain_s=0.0,
    )
    asyncio.run(serve(settings, on_ready=lambda p: port_queue.put(p.port)))


def token(subject: str) -> str:
    return TokenService(KEY, "voltcloud", dt.timedelta(hours=1)).mint(
        subject, Role.GATEWAY, Tenant("operator", OPERATOR)
    )


def batch(size: int) -> ingest_pb2.TelemetryBatch:
    b = ingest_pb2.TelemetryBatch(
        sources=[ingest_pb2.TelemetrySource(station_id=STATION, resource_id=c) for c in CONNECTORS]
    )
    b.base_time.FromDatetime(dt.datetime.now(dt.UTC))
    n = len(CONNECTORS)
    metrics = [common_pb2.METRIC_POWER_W, common_pb2.METRIC_ENERGY_WH]
    b.col_source_index.extend(i % n for i in range(size))
    b.col_metric.extend(metrics[(i // n) % 2] for i in range(size))
    b.col_offset_ms.extend(i // 100 for i in range(size))
    b.col_int_value.extend(1000 + i for i in range(size))
    return b


async def bench_uplink(target: str, batches: int, size: int) -> float:
    template = batch(size)
    payloads = [ingest_pb2.GatewayToPlatform(seq=i + 1, telemetry=template) for i in range(batches)]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        started = asyncio.Event()

        async def requests() -> Any:
            yield ingest_pb2.GatewayToPlatform(
                hello=ingest_pb2.Hello(gateway_id="gw-bench", kind=ingest_pb2.GATEWAY_KIND_OCPP, station_ids=[STATION])
            )
            await started.wait()
            for p in payloads:
                yield p

        call = stub.Uplink(requests(), metadata=(("authorization", f"Bearer {token('gw-bench')}"),))
        first = await call.read()
        assert first.ack.acked_seq == 0, "fresh platform expected"
        t0 = time.perf_counter()
        started.set()
        while True:
            response = await call.read()
            if response.WhichOneof("msg") == "ack" and response.ack.acked_seq >= batches:
                break
        elapsed = time.perf_counter() - t0
        call.cancel()
    return batches * size / elapsed


async def bench_uplink_client(target: str, batches: int, size: int, tmp: Path) -> float:
    from voltcloud_gateways.uplink import UplinkClient

    client = UplinkClient(
        target,
        gateway_id="gw-bench-client",
        kind=ingest_pb2.GATEWAY_KIND_OCPP,
        token=token("gw-bench-client"),
        station_ids=[STATION],
        outbox_path=tmp / "outbox.db",
    )
    client.start()
    await asyncio.wait_for(client.connected.wait(), 10)
    template = batch(size)
    t0 = time.perf_counter()
    last = 0
    for _ in range(batches):
        last = client.publish_telemetry(template)
        if client.outbox.count > 200:
            await asyncio.sleep(0)
    await client.wait_acked(last, wait_s=600)
    elapsed = time.perf_counter() - t0
    await client.stop()
    return batches * size / elapsed


async def bench_ocpp(target: str, clients: int, messages: int, tmp: Path) -> float:
    from websockets.asyncio.client import connect

    from voltcloud_gateways.ocpp.central import ChargePointConfig, OcppState, hash_password
    from voltcloud_gateways.ocpp.server import OcppGateway
    from voltcloud_gateways.uplink import UplinkClient

    uplink = UplinkClient(
        target,
        gateway_id="gw-bench-ocpp",
        kind=ingest_pb2.GATEWAY_KIND_OCPP,
        token=token("gw-bench-ocpp"),
        station_ids=[STATION],
        outbox_path=tmp / "ocpp-outbox.db",
    )
    cps = [
        ChargePointConfig(f"cp-{i}", STATION, hash_password("pw"), {1: CONNECTORS[i % len(CONNECTORS)]})
        for i in range(clients)
    ]
    gateway = OcppGateway(uplink, cps, OcppState(tmp / "ocpp.db"))
    port = await gateway.start()
    uplink.start()
    await asyncio.wait_for(uplink.connected.wait(), 10)

    async def one(i: int) -> int:
        header = {"Authorization": "Basic " + base64.b64encode(f"cp-{i}:pw".encode()).decode()}
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/cp-{i}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=header,
            compression=None,
        ) as ws:
            for n in range(messages):
                frame = json.dumps(
                    [
                        2,
                        f"m{n}",
                        "MeterValues",
                        {
                            "connectorId": 1,
                            "meterValue": [
                                {
                                    "timestamp": "2026-01-01T00:00:00Z",
                                    "sampledValue": [
                                        {"value": str(1000 + n), "measurand": "Energy.Active.Import.Register"}
                                    ],
                                }
                            ],
                        },
                    ]
                )
                await ws.send(frame)
                await ws.recv()
        return messages

    t0 = time.perf_counter()
    total = sum(await asyncio.gather(*(one(i) for i in range(clients))))
    elapsed = time.perf_counter() - t0
    await uplink.wait_acked(uplink.outbox.last_seq, wait_s=120)
    await gateway.stop()
    await uplink.stop()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--via-client", action="store_true", help="also measure through UplinkClient")
    parser.add_argument("--ocpp-clients", type=int, default=50)
    parser.add_argument("--ocpp-messages", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        queue: Any = multiprocessing.get_context("spawn").Queue()
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(tmp, queue), daemon=True)
        server.start()
        target = f"127.0.0.1:{queue.get(timeout=120)}"
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {dt.date.today().isoformat()}"
        )
        rate = asyncio.run(bench_uplink(target, args.batches, args.batch_size))
        print(f"uplink (raw stream): {args.batches} batches x {args.batch_size} readings: {rate:,.0f} readings/s")
        if args.via_client:
            rate = asyncio.run(bench_uplink_client(target, args.batches, args.batch_size, Path(tmp)))
            print(f"uplink (UplinkClient, on-disk outbox): {rate:,.0f} readings/s")
        rate = asyncio.run(bench_ocpp(target, args.ocpp_clients, args.ocpp_messages, Path(tmp)))
        print(f"ocpp: {args.ocpp_clients} charge points x {args.ocpp_messages} MeterValues: {rate:,.0f} messages/s")
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
