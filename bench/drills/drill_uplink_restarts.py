"""Drill: gateway and platform restarts during uplink streaming; no accepted event lost, none counted twice.

A `voltcloud serve` process (SQLite file in a temporary directory by default, or `--postgres`; the demo city
seeded) on a fixed port, and a gateway: `voltcloud_gateways.uplink.UplinkClient` with its on-disk outbox.
A producer publishes `--events` station events (heartbeats of a demo charging station) at `--rate` per
second; each is accepted once the outbox has it (it gets its seq then). During the stream:

- at 1/4 of the events the platform gets SIGKILL and is started again (same database, same port);
- at 1/2 the gateway is stopped and a new gateway started on the same outbox file (a gateway restart);
- at 3/4 the platform gets SIGTERM (graceful) and is started again.

The producer keeps publishing throughout (into the outbox while the platform is away). At the end the
gateway must see every seq acknowledged, and the database must hold exactly one event-log row per accepted
seq, 1..N, each with the payload the gateway accepted under that seq, and the gateway cursor at N.
Prints a JSON report (exit status 1 on any violation). Also run (small) by tests/integration/test_drill_uplink.py.

    python bench/drills/drill_uplink_restarts.py                 # 2,000 events at 200/s, SQLite
    python bench/drills/drill_uplink_restarts.py --postgres --events 4000 --rate 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from voltcloud.api.v1 import ingest_pb2
from voltcloud.config import Settings
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import token_service
from voltcloud_gateways.uplink import UplinkClient

JWT_KEY = "uplink-drill-key-0123456789abcdef0123456789abcdef"
GATEWAY = "gw-drill-1"
OPERATOR = "op-0001"
STATION = "st-000013"  # a charging station of the demo city, operator op-0001
POSTGRES_URL = os.environ.get("VOLTCLOUD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


@dataclass
class Report:
    database: str = ""
    events_accepted: int = 0
    rows: int = 0
    cursor_last_seq: int = 0
    platform_restarts: list[str] = field(default_factory=list)
    gateway_restarts: int = 0
    drain_s: float = 0.0  # from the last event accepted to the last acknowledged
    violations: list[str] = field(default_factory=list)


class Server:
    """One `voltcloud serve` process on a fixed port; `restart` kills (or stops) it and starts another."""

    def __init__(self, url: str, data_dir: Path, port: int) -> None:
        self.url, self.data_dir, self.port = url, data_dir, port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {
            **os.environ,
            "VOLTCLOUD_DATA_DIR": str(self.data_dir),
            "VOLTCLOUD_DATABASE_URL": self.url,
            "VOLTCLOUD_JWT_KEY": JWT_KEY,
            "VOLTCLOUD_REOPTIMIZE_INTERVAL_S": "0",
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voltcloud.cli", "serve", "--listen", f"127.0.0.1:{self.port}", "--seed-demo",
            env=env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = (await asyncio.wait_for(self.process.stdout.readline(), 120)).decode()
        if not re.search(rf":{self.port} ", line):
            raise RuntimeError(f"the server did not start: {line!r}")

    async def stop(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            await asyncio.wait_for(self.process.wait(), 60)
        self.process = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gateway(port: int, token: str, outbox: Path) -> UplinkClient:
    client = UplinkClient(
        f"127.0.0.1:{port}", gateway_id=GATEWAY, kind=ingest_pb2.GATEWAY_KIND_OCPP, token=token,
        station_ids=[STATION], outbox_path=outbox, backoff_initial_s=0.05, backoff_max_s=0.5,
    )  # fmt: skip
    client.start()
    return client


async def drill(events: int, rate: float, postgres: bool = False, base_url: str = POSTGRES_URL) -> Report:
    report = Report(database="postgresql" if postgres else "sqlite")
    with tempfile.TemporaryDirectory(prefix="drill-uplink-") as tmp:
        admin = None
        name = f"drill_uplink_{uuid.uuid4().hex[:10]}"
        if postgres:
            base = sa.engine.make_url(base_url)
            admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
            async with admin.connect() as c:
                await c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            url = base.set(database=name).render_as_string(hide_password=False)
        else:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'voltcloud.db'}"
        server = Server(url, Path(tmp) / "data", free_port())
        client: UplinkClient | None = None
        try:
            await server.start()
            settings = Settings(jwt_key=JWT_KEY, data_dir=Path(tmp) / "data")  # type: ignore[call-arg]
            token = token_service(settings).mint(GATEWAY, Role.GATEWAY, Tenant("operator", OPERATOR))
            outbox = Path(tmp) / "outbox.db"
            client = gateway(server.port, token, outbox)
            accepted: dict[int, bytes] = {}
            restarts: list[asyncio.Task[None]] = []

            one_at_a_time = asyncio.Lock()

            async def restart(sig: int) -> None:
                async with one_at_a_time:  # a slow start may outlast the producer's gap to the next restart
                    await server.stop(sig)
                    await server.start()

            started = time.perf_counter()
            for i in range(events):
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                event = ingest_pb2.StationEvent(station_id=STATION, heartbeat=ingest_pb2.Heartbeat())
                seq = client.publish_event(event)
                accepted[seq] = event.SerializeToString()
                if i in (events // 4, 3 * events // 4):  # the producer goes on while the platform is away
                    sig = signal.SIGKILL if i == events // 4 else signal.SIGTERM
                    restarts.append(asyncio.create_task(restart(sig)))
                    report.platform_restarts.append(f"{sig.name} at event {i}")
                elif i == events // 2:
                    await client.stop()
                    client = gateway(server.port, token, outbox)
                    report.gateway_restarts += 1
            await asyncio.gather(*restarts)
            last = time.perf_counter()
            report.events_accepted = len(accepted)
            await client.wait_acked(max(accepted), wait_s=120)
            report.drain_s = round(time.perf_counter() - last, 2)
            await client.stop()
            client = None
            await server.stop(signal.SIGTERM)
            await check(url, accepted, report)
        finally:
            if client is not None:
                await client.stop()
            await server.stop(signal.SIGKILL)
            if admin is not None:
                async with admin.connect() as c:
                    await c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                await admin.dispose()
    return report


async def check(url: str, accepted: dict[int, bytes], report: Report) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as c:
        rows = (
            await c.execute(
                sa.text("SELECT seq, payload FROM stationeventlog WHERE gateway_id = :g ORDER BY seq"), {"g": GATEWAY}
            )
        ).all()
        cursor = (
            await c.execute(sa.text("SELECT last_seq FROM gatewaycursor WHERE gateway_id = :g"), {"g": GATEWAY})
        ).scalar_one_or_none()
    await engine.dispose()
    report.rows, report.cursor_last_seq = len(rows), int(cursor or 0)
    bad = report.violations
    seen: dict[int, int] = {}
    for row in rows:
        seen[row.seq] = seen.get(row.seq, 0) + 1
        stored = ingest_pb2.StationEvent.FromString(bytes(row.payload))
        sent = ingest_pb2.StationEvent.FromString(accepted.get(row.seq, b""))
        if row.seq not in accepted:
            bad.append(f"seq {row.seq} stored but never accepted by the gateway")
        elif stored != sent:  # the same event (station, time, kind) the gateway accepted under that seq
            bad.append(f"seq {row.seq} stored as {stored} but accepted as {sent}")
    bad += [f"seq {s} stored {n} times" for s, n in seen.items() if n > 1]
    lost = sorted(set(accepted) - set(seen))
    if lost:
        bad.append(f"{len(lost)} accepted events lost, e.g. seqs {lost[:10]}")
    if report.cursor_last_seq != max(accepted):
        bad.append(f"gateway cursor at {report.cursor_last_seq}, accepted up to {max(accepted)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(drill(args.events, args.rate, args.postgres))
    print(json.dumps(asdict(report), indent=1))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
