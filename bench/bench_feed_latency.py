"""Change feed benchmark (issue 11): how fast a change committed on one replica shows in another replica's engine,
what an idle server costs without the periodic sync, and what the slow reconciliation and a rebuild cost.

    python bench/bench_feed_latency.py [--changes 600] [--rate 50] [--postgres URL] \
        [--country-dir DIR [--country-only]] [--idle-s 30] [--json out.json]

1. Latency, per database (SQLite file; PostgreSQL with --postgres, in a throwaway database): replica A is a
   writer process of its own (this script with --writer) that commits connector status changes through
   `inventory.set_connector_status` (what the ingest uplink does) on an open-loop schedule (`--rate` per second)
   and records each commit's wall-clock time; replica B is a full `Platform` in this process whose engine follows
   the feed. A change is "visible" when B's feed has delivered it and B's engine applied it (a handler subscribed
   after the engine's records the time). Latency = visible - commit, same machine clock. A also follows its own
   feed, which measures the delay the local immediate apply (`Hub.on_inventory`, `UnitOfWork.apply`) saves.
2. Idle CPU (--country-dir: a data dir seeded by `voltcloud seed --scale country`): a `voltcloud serve` process
   on it, % of one core over --idle-s from /proc/<pid>/stat, with the default reconciliation (600 s) and, as the
   baseline in the same run, with the reconciliation every 2 s (what the removed periodic sync did every 2 s:
   `Engine.sync` + road-condition replay), and with the default but the 1 s sweep (order expiry, offer
   timeouts) at 60 s, to attribute the remainder. Also the time from spawn to serving.
3. Country-scale costs: `Engine.sync` (one reconciliation) and `Engine.load` (one full rebuild), medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col, select

from voltcloud.config import Settings
from voltcloud.engine import Engine
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.platform.feed import Change, ChangeFeed
from voltcloud.seed import seed_demo_if_empty
from voltcloud.server import Platform
from voltcloud.stations import inventory
from voltcloud.stations.models import Connector

JWT_KEY = "bench-feed-key-0123456789abcdef0123456789abcdef"
CONNECTORS = 64  # changes rotate over this many connectors, each flipping AVAILABLE <-> OCCUPIED
FLIP = {
    inventory.CONNECTOR_AVAILABLE: inventory.CONNECTOR_OCCUPIED,
    inventory.CONNECTOR_OCCUPIED: inventory.CONNECTOR_AVAILABLE,
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---- replica A: the writer process ------------------------------------------------------------------------


async def writer(url: str, changes: int, rate: float, out: Path) -> None:
    db = Database(url)
    own = ChangeFeed(db)
    seen_own: dict[str, float] = {}
    all_own = asyncio.Event()

    def on_own(batch: list[Change]) -> None:
        now = time.time()
        for c in batch:
            seen_own.setdefault(f"{c.key}@{c.payload['version']}", now)
        if len(seen_own) >= changes:
            all_own.set()

    own.subscribe("inventory", on_own)
    await own.start()
    async with db.transaction() as session:
        rows = list(
            await session.exec(
                select(Connector).where(col(Connector.status).in_(list(FLIP))).order_by(col(Connector.id))
            )
        )[:CONNECTORS]
    status = {c.id: c.status for c in rows}
    commits: dict[str, float] = {}
    start = time.perf_counter() + 0.5
    for i in range(changes):
        connector = rows[i % len(rows)]
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        async with db.transaction("bench.feed.write") as session:
            change = await inventory.set_connector_status(
                session, connector.id, connector.station_id, FLIP[status[connector.id]]
            )
        assert change is not None
        commits[f"connector:{connector.id}@{change.version}"] = time.time()
        status[connector.id] = change.status
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_own.wait(), 10)
    await own.stop()
    await db.dispose()
    own_lag = [(seen_own[k] - t) * 1000 for k, t in commits.items() if k in seen_own]
    await asyncio.to_thread(out.write_text, json.dumps({"commits": commits, "own_ms": own_lag, "final": status}))


# ---- replica B: a Platform following the feed --------------------------------------------------------------


async def latency_run(name: str, url: str, changes: int, rate: float, root: Path) -> dict[str, Any]:
    await upgrade_database_async(url)
    seed_db = Database(url)
    await seed_demo_if_empty(seed_db, 7)
    await seed_db.dispose()
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=root / name,
        database_url=url,
        jwt_key=JWT_KEY,
        engine_reconcile_interval_s=0,  # the feed alone
        reoptimize_interval_s=0,
    )
    replica_b = Platform(settings)
    await replica_b.start()
    seen: dict[str, float] = {}
    all_seen = asyncio.Event()

    def on_change(batch: list[Change]) -> None:  # subscribed after the engine's handler: the engine has it
        now = time.time()
        for c in batch:
            seen.setdefault(f"{c.key}@{c.payload['version']}", now)
        if len(seen) >= changes:
            all_seen.set()

    replica_b.feed.subscribe("inventory", on_change)
    out = root / f"{name}-writer.json"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--writer", "--url", url, "--changes", str(changes), "--rate", str(rate),
            "--out", str(out),
        )  # fmt: skip
        code = await process.wait()
        if code != 0:
            raise RuntimeError(f"the writer failed ({code})")
        written = json.loads(await asyncio.to_thread(out.read_text))
        commits: dict[str, float] = written["commits"]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), 10)
        engine = replica_b.powerup.engine
        wrong = [
            cid
            for cid, status in written["final"].items()
            if next(c["status"] for c in engine.station_resources(engine.connector_station(cid) or "")[0]
                    if c["id"] == cid) != status
        ]  # fmt: skip
    finally:
        await replica_b.stop(grace=0)
    lags = [(seen[k] - t) * 1000 for k, t in commits.items() if k in seen]
    own = written["own_ms"]
    return {
        "database": name,
        "changes": len(commits),
        "rate_per_s": rate,
        "visible": len(lags),
        "engine_mismatches": len(wrong),
        "p50_ms": round(pct(lags, 50), 2),
        "p99_ms": round(pct(lags, 99), 2),
        "max_ms": round(max(lags), 2),
        "own_replica_p50_ms": round(pct(own, 50), 2) if own else None,
        "own_replica_p99_ms": round(pct(own, 99), 2) if own else None,
    }


async def postgres_database(admin_url: str) -> tuple[str, str]:
    name = f"vc_feedbench_{uuid.uuid4().hex[:10]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False), name


async def drop_postgres_database(admin_url: str, name: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


# ---- idle CPU and country-scale costs ----------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


async def idle_cpu(data_dir: Path, reconcile_s: float, seconds: float, sweep_s: float = 1.0) -> dict[str, Any]:
    env = {
        **os.environ,
        "VOLTCLOUD_DATA_DIR": str(data_dir),
        "VOLTCLOUD_JWT_KEY": JWT_KEY,
        "VOLTCLOUD_ENGINE_RECONCILE_INTERVAL_S": str(reconcile_s),
        "VOLTCLOUD_SWEEP_INTERVAL_S": str(sweep_s),
    }
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voltcloud.cli", "serve", "--listen", "127.0.0.1:0", env=env,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 300)).decode()
        ready_s = time.perf_counter() - started
        if not re.search(r":(\d+) ", line):
            raise RuntimeError(f"the server did not start: {line!r}")
        await asyncio.sleep(5)  # let start-up work settle
        hz = os.sysconf("SC_CLK_TCK")
        before, t0 = cpu_ticks(process.pid), time.perf_counter()
        await asyncio.sleep(seconds)
        used = (cpu_ticks(process.pid) - before) / hz
        elapsed = time.perf_counter() - t0
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)
    return {
        "reconcile_interval_s": reconcile_s,
        "sweep_interval_s": sweep_s,
        "ready_s": round(ready_s, 2),
        "idle_cpu_pct_of_core": round(100 * used / elapsed, 2),
        "over_s": round(elapsed, 1),
    }


async def loop_lag(stop: asyncio.Event, period_s: float = 0.01) -> float:
    """The longest the event loop was late to wake a 10 ms ticker (s): how long other work stalled it."""
    worst = 0.0
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(period_s)
        worst = max(worst, time.perf_counter() - t0 - period_s)
    return worst


async def country_costs(data_dir: Path, repeats: int) -> dict[str, Any]:
    db = Database(f"sqlite+aiosqlite:///{(data_dir / 'voltcloud.db').resolve()}")
    engine = Engine()
    loads, syncs, sync_cpu, stalls = [], [], [], []
    counts: dict[str, int] = {}
    stop = asyncio.Event()
    ticker = asyncio.create_task(loop_lag(stop))
    await asyncio.sleep(5)  # the noise floor: the same ticker with nothing else to do in this process
    stop.set()
    floor = await ticker
    try:
        for _ in range(max(repeats, 1)):
            stop = asyncio.Event()
            ticker = asyncio.create_task(loop_lag(stop))
            t0 = time.perf_counter()
            counts = await engine.load(db)
            loads.append(time.perf_counter() - t0)
            stop.set()
            stalls.append(await ticker)
        sync_stalls = []
        for _ in range(max(repeats, 1) + 2):
            stop = asyncio.Event()
            ticker = asyncio.create_task(loop_lag(stop))
            t0, c0 = time.perf_counter(), time.process_time()
            repaired = await engine.sync(db)
            syncs.append(time.perf_counter() - t0)
            sync_cpu.append(time.process_time() - c0)
            stop.set()
            sync_stalls.append(await ticker)
            assert repaired == 0, repaired
    finally:
        await db.dispose()
    sync_s = statistics.median(syncs)
    return {
        "resources": counts,
        "idle_loop_stall_max_ms": round(1000 * floor, 1),
        "rebuild_s_median": round(statistics.median(loads), 3),
        "rebuild_loop_stall_max_ms_median": round(1000 * statistics.median(stalls), 1),
        "reconcile_s_median": round(sync_s, 3),
        "reconcile_cpu_s_median": round(statistics.median(sync_cpu), 3),
        "reconcile_loop_stall_max_ms_median": round(1000 * statistics.median(sync_stalls), 1),
        "reconcile_pct_of_core_at_600s": round(100 * statistics.median(sync_cpu) / 600, 3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "latency": [],
    }
    if args.country_only:
        result["country"] = await country_costs(args.country_dir, args.repeats)
        print(json.dumps(result["country"]), flush=True)
        return result
    with tempfile.TemporaryDirectory(prefix="feedbench-") as tmp:
        root = Path(tmp)
        sqlite_url = f"sqlite+aiosqlite:///{root / 'feed.db'}"
        result["latency"].append(await latency_run("sqlite", sqlite_url, args.changes, args.rate, root))
        print(json.dumps(result["latency"][-1]), flush=True)
        if args.postgres:
            url, name = await postgres_database(args.postgres)
            try:
                result["latency"].append(await latency_run("postgresql", url, args.changes, args.rate, root))
            finally:
                await drop_postgres_database(args.postgres, name)
            print(json.dumps(result["latency"][-1]), flush=True)
    if args.country_dir:
        result["idle"] = []
        # The default; the removed 2 s sync (baseline); the default with the 1 s order/offer sweep slowed to 60 s,
        # which shows what of the remainder is the sweep.
        for reconcile_s, sweep_s in ((600.0, 1.0), (2.0, 1.0), (600.0, 60.0)):
            result["idle"].append(await idle_cpu(args.country_dir, reconcile_s, args.idle_s, sweep_s))
            print(json.dumps(result["idle"][-1]), flush=True)
        result["country"] = await country_costs(args.country_dir, args.repeats)
        print(json.dumps(result["country"]), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=600)
    parser.add_argument("--rate", type=float, default=50.0, help="changes per second committed on replica A")
    parser.add_argument("--postgres", help="admin URL, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--country-dir", type=Path, help="data dir seeded with `voltcloud seed --scale country`")
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--country-only", action="store_true", help="only the rebuild and reconciliation costs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        asyncio.run(writer(args.url, args.changes, args.rate, args.out))
        return 0
    result = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
