"""Maintenance benchmark (issue 14): what the control centre and the SLA timer cost on one platform.

    python bench/bench_maintenance.py [--alarms 300] [--orders 300] [--postgres URL]

1. Alarm → WatchAlarms latency: `--alarms` alarms raised through `maintenance.api.raise_alarm`, one transaction
   each, 20 ms apart; a WatchAlarms stream (real gRPC, as the operator) records when each arrives. Latency =
   arrival - commit (same process clock), p50 / p95 / max.
2. ReportFault latency over gRPC (p50 / p95), each opening a work order with its step and notifications.
3. SLA timer: `--orders` work orders opened, the clock moved past every respond event (warning, supervisor,
   operator), one `SlaTimer.fire_due()`: events fired per second (each a compare-and-set, a step, notification
   rows and a feed change).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from voltcloud.api.v1 import maintenance_pb2 as m
from voltcloud.api.v1 import maintenance_pb2_grpc
from voltcloud.config import Settings
from voltcloud.maintenance import api
from voltcloud.maintenance.sla_timer import SlaTimer
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.clock import FrozenClock
from voltcloud.server import Platform

JWT_KEY = "bench-maintenance-key-0123456789abcdef0123456789"
OPERATOR, STATION = "op-0001", "st-000013"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def run(database_url: str, data_dir: Path, alarms: int, orders: int) -> dict[str, float]:
    clock = FrozenClock(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3))
    settings = Settings(listen="127.0.0.1:0", data_dir=data_dir, database_url=database_url, jwt_key=JWT_KEY,
                        seed_demo=True, maintenance_timers=False)  # type: ignore[call-arg]  # fmt: skip
    platform = Platform(settings, clock=clock)
    await platform.start()
    out: dict[str, float] = {}
    try:
        token = platform.tokens.mint("bench", Role.OPERATOR, Tenant("operator", OPERATOR))
        md = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.port}") as channel:
            stub = maintenance_pb2_grpc.MaintenanceServiceStub(channel)
            stream = stub.WatchAlarms(m.WatchAlarmsRequest(), metadata=md)
            await stream.read()  # the snapshot
            committed: dict[str, float] = {}
            arrived: dict[str, float] = {}

            async def reader() -> None:
                while len(arrived) < alarms:
                    message = await stream.read()
                    for a in message.alarms:
                        arrived.setdefault(a.alarm_id, time.perf_counter())

            task = asyncio.create_task(reader())
            for i in range(alarms):
                async with platform.db.transaction() as session:
                    opened = await api.raise_alarm(session, now=clock.now(), source=api.ALARM_SOURCE_STATION, level=2,
                                                   code=f"B{i}", message="bench", operator_id=OPERATOR,
                                                   station_id=STATION)  # fmt: skip
                committed[opened.alarm_id] = time.perf_counter()
                await asyncio.sleep(0.02)
            await asyncio.wait_for(task, 60)
            stream.cancel()
            lat = [(arrived[k] - committed[k]) * 1000 for k in committed]
            out |= {"watch_p50_ms": statistics.median(lat), "watch_p95_ms": pct(lat, 0.95), "watch_max_ms": max(lat)}
            took = []
            for i in range(orders):
                started = time.perf_counter()
                await stub.ReportFault(m.ReportFaultRequest(idempotency_key=f"b{i}", description="bench",
                                       equipment_code=f"voltcloud://s/{STATION}"), metadata=md)  # fmt: skip
                took.append((time.perf_counter() - started) * 1000)
            out |= {"report_p50_ms": statistics.median(took), "report_p95_ms": pct(took, 0.95)}
        clock.advance(dt.timedelta(minutes=50))
        started = time.perf_counter()
        fired = await SlaTimer(platform.db, clock).fire_due()
        while more := await SlaTimer(platform.db, clock).fire_due():
            fired += more
        seconds = time.perf_counter() - started
        out |= {"sla_events": fired, "sla_events_per_s": fired / seconds}
    finally:
        await platform.stop(grace=0)
    return out


async def admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(statement))
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alarms", type=int, default=300)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"sqlite": f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"}
        scratch = f"vc_bench_maint_{uuid.uuid4().hex[:8]}"
        if args.postgres:
            asyncio.run(admin(args.postgres, f'CREATE DATABASE "{scratch}"'))
            runs["postgresql"] = sa.engine.make_url(args.postgres).set(database=scratch).render_as_string(False)
        try:
            for name, url in runs.items():
                figures = asyncio.run(run(url, Path(tmp) / name, args.alarms, args.orders))
                print(name, {k: round(v, 1) for k, v in figures.items()})
        finally:
            if args.postgres:
                asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
