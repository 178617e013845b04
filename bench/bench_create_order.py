"""CreateOrder in-process, closed loop: SQL statements per order and orders per second, before vs after.

Each measurement is a child process on a fresh database (SQLite file in a temporary directory, or a new
PostgreSQL database) seeded with the "city" world (about 1,500 connectors and 1,400 packs). Its setup, not
timed: N private cars get an owner driver each (so every order has its own customer and account, as in
production, not one contended wallet), every driver is funded, and a quote is stored per driver naming one
free connector (charge) or one ready pack (swap), alternately, priced by settlement. Then `--concurrency`
tasks call `ordering.orders.create_order` (the domain function the CreateOrder servicer calls; no gRPC, no
auth) until the N quotes are used: orders/s = N / wall time. Statements are counted with SQLAlchemy's
`before_cursor_execute` event on the process's engine, over the timed loop only, divided by N; `--trace`
prints the statements of one order.

The parent runs each code tree given (`--tree NAME=PYTHONPATH`, default: this checkout as "after") in turn,
`--repeats` times, alternating trees so drift of the shared machine hits both alike, and prints one row per
tree and dialect: median orders/s (with the range), statements per order and the ratio to the first tree.

    python bench/bench_create_order.py --tree before=/tmp/orders-base/python --tree after=python
    python bench/bench_create_order.py --dialect sqlite --orders 300 --repeats 1 --trace
    VOLTCLOUD_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres python bench/...
    python bench/bench_create_order.py --micro --tree before=... --tree after=python   # CPU per statement
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

POSTGRES_URL = os.environ.get("VOLTCLOUD_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
JWT_KEY = "create-order-bench-key-0123456789abcdef0123456789"


# ---- the child: one measurement ----------------------------------------------------------------------------


async def _setup(url: str, data_dir: Path, n: int) -> tuple[Any, list[tuple[Any, str]]]:
    """A started platform on a seeded city and n (principal, quote id) pairs, one driver each."""
    from voltcloud.config import Settings
    from voltcloud.server import Platform

    pairs = await prepare(url, n)
    settings = Settings(  # type: ignore[call-arg]
        listen="127.0.0.1:0", data_dir=data_dir, database_url=url, jwt_key=JWT_KEY, seed_demo=False,
        reoptimize_interval_s=0, sweep_interval_s=3600, engine_reconcile_interval_s=0,
    )  # fmt: skip
    plat = Platform(settings)
    await plat.start()
    return plat, pairs


async def prepare(url: str, n: int, world: str = "city") -> list[tuple[Any, str]]:
    """Migrates and seeds an empty database with `world`, then gives n drivers a private car, a funded wallet
    and a one-option quote each (a free connector or a ready pack, alternately); returns (principal, quote
    id) pairs. Used by this bench and the kill drill (bench/drills/)."""

    from voltcloud.engine import Engine
    from voltcloud.platform.db import Database, upgrade_database_async
    from voltcloud.seed import seed_world
    from voltcloud.world import generate_world

    await upgrade_database_async(url)
    db = Database(url)
    await seed_world(db, generate_world(world, seed=0))
    engine = Engine()
    await engine.load(db)
    try:
        return await _quotes(db, engine, n)
    finally:
        await db.dispose()


async def _quotes(db: Any, engine: Any, n: int) -> list[tuple[Any, str]]:
    import datetime as dt
    from dataclasses import asdict

    from sqlmodel import col, select

    from voltcloud.engine import EngineOption
    from voltcloud.fleet.models import Vehicle
    from voltcloud.ordering import payments
    from voltcloud.ordering.models import Quote
    from voltcloud.ordering.quoting import _quoted
    from voltcloud.ordering.states import Mode, ResourceKind
    from voltcloud.platform.auth import Principal, Role
    from voltcloud.settlement import api as settlement

    now = dt.datetime.now(dt.UTC)
    resources: list[tuple[str, Any]] = []  # (mode, engine station, resource id)
    for station in engine._maps.station_by_id.values():
        connectors, packs = engine.station_resources(station.id)
        resources += [("charge", station, c["id"]) for c in connectors if c["status"] == 1]
        resources += [("swap", station, p["id"]) for p in packs if p["state"] == 3]
    charge = [r for r in resources if r[0] == "charge"]
    swap = [r for r in resources if r[0] == "swap"]
    mixed = [r for pair in zip(charge, swap, strict=False) for r in pair]
    async with db.transaction() as session:
        query = select(Vehicle).where(col(Vehicle.fleet_id).is_(None)).order_by(col(Vehicle.id))
        cars = list((await session.exec(query)).all())
    if len(cars) < n or len(mixed) < n:
        raise SystemExit(f"the city world has {len(cars)} private cars and {len(mixed)} resource pairs; ask for fewer")
    pairs = []
    for i in range(n):
        driver, car, (mode, station, resource) = f"drv-bench-{i:05d}", cars[i], mixed[i]
        async with db.transaction() as session:
            car = await session.get(Vehicle, car.id)
            car.owner_driver_id = driver
            session.add(car)
            account = await settlement.ensure_customer_account(session, owner_kind="driver", owner_id=driver)
            await settlement.top_up(
                session, account_id=account, amount_minor=10_000_000, currency="CNY", provider="simulated",
                provider_token="tok", idempotency_key=f"bench-topup-{i}",
            )  # fmt: skip
            option = EngineOption(
                mode=int(Mode.CHARGE if mode == "charge" else Mode.SWAP),
                resource_kind=int(ResourceKind.CONNECTOR if mode == "charge" else ResourceKind.SWAP_LANE),
                resource_id=resource if mode == "charge" else "0", operator_id=station.operator_id,
                station_id=station.id, connector_id=resource if mode == "charge" else None,
                pack_id=resource if mode == "swap" else None, unit_id=None, eta_s=600, wait_s=0, service_s=300,
                finish_at=now + dt.timedelta(seconds=900), energy_wh=40_000, distance_m=3000,
                arrival_soc_permille=150, service_lat=station.lat, service_lng=station.lng,
            )  # fmt: skip
            price = await payments.estimate(
                session, station_id=station.id, customer_kind="driver", customer_id=driver, start=now,
                energy_wh=option.energy_wh, duration_s=option.service_s,
            )  # fmt: skip
            quote_id = f"qt-bench-{i:05d}"
            session.add(
                Quote(
                    id=quote_id, requested_by=driver, vehicle_id=car.id, fleet_id=None, lat=station.lat,
                    lng=station.lng, soc_permille=150, target_soc_permille=900, created_at=now,
                    expires_at=now + dt.timedelta(hours=1),
                    options_json=json.dumps([asdict(_quoted("o1", 1, 5, option, price, station.id))]),
                )
            )  # fmt: skip
        pairs.append((Principal(subject=driver, role=Role.DRIVER, tenant=None), quote_id))
    return pairs


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa

    from voltcloud.ordering import orders

    with tempfile.TemporaryDirectory(prefix="bench-create-order-") as tmp:
        url, drop = await _database(args.dialect, Path(tmp))
        try:
            plat, pairs = await _setup(url, Path(tmp) / "data", args.orders)
            statements: collections.Counter[str] = collections.Counter()
            traced: list[str] = []
            tracing: dict[str, Any] = {"on": False, "t0": 0.0}

            def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
                statements["all"] += 1
                if tracing["on"]:
                    at = (time.perf_counter() - tracing["t0"]) * 1000
                    traced.append(f"{at:8.2f} ms " + " ".join(statement.split())[:140])

            sa.event.listen(plat.db.engine.sync_engine, "before_cursor_execute", count)
            deps = plat.powerup.deps
            queue: asyncio.Queue[tuple[Any, str]] = asyncio.Queue()
            for pair in pairs[2:]:
                queue.put_nowait(pair)
            failures: collections.Counter[str] = collections.Counter()

            async def one(principal: Any, quote_id: str) -> None:
                inp = orders.CreateInput(quote_id=quote_id, option_id="o1", idempotency_key=uuid.uuid4().hex)
                try:
                    await orders.create_order(deps, principal, inp)
                except Exception as error:  # counted and shown: a bench must not hide refusals
                    failures[type(error).__name__] += 1

            if args.quote_memory:
                await _hand_quotes_to_store(plat, [q for _, q in pairs])
            idle = time.process_time()
            await asyncio.sleep(2.0)
            idle = (time.process_time() - idle) / 2.0  # the platform's own background cost, per second
            await one(*pairs[0])  # warms the caches (compiled statements, mappers)
            warm = statements["all"]
            tracing["t0"] = time.perf_counter()
            tracing["on"] = True  # the second order alone, traced: its statements, without others interleaved
            await one(*pairs[1])
            tracing["on"] = False
            traced.append(f"{(time.perf_counter() - tracing['t0']) * 1000:8.2f} ms done")
            first = statements["all"]

            async def worker() -> None:
                while not queue.empty():
                    await one(*queue.get_nowait())

            profiler = cProfile.Profile() if args.profile else None
            started, cpu = time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            if profiler:
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats(
                    os.environ.get("BENCH_SORT", "tottime")
                ).print_stats(args.profile)
            done = len(pairs) - 2
            print("loop done", file=sys.stderr, flush=True)
            await asyncio.wait_for(plat.stop(grace=0), 30)
            print("stopped", file=sys.stderr, flush=True)
        finally:
            await drop()
    return {
        "dialect": args.dialect,
        "orders": done,
        "concurrency": args.concurrency,
        "wall_s": round(wall, 3),
        "orders_per_s": round(done / wall, 1),
        "cpu_ms_per_order": round(cpu / done * 1000, 2),
        "idle_cpu_share": round(idle, 3),
        "quote_memory": bool(args.quote_memory),
        "statements_per_order": round((statements["all"] - first) / done, 2),
        "statements_traced_order": first - warm,
        "failures": dict(failures),
        "trace": traced if args.trace else [],
    }


async def _hand_quotes_to_store(plat: Any, quote_ids: list[str]) -> None:
    """As if this replica had made the quotes (QuotePowerUp hands them to its batched writer): the store
    writes them again (ignored) and, in a tree that keeps recent quotes, CreateOrder finds them in memory."""
    from voltcloud.ordering.models import Quote
    from voltcloud.ordering.quote_store import PendingQuote

    store = plat.powerup.quote_path.store
    async with plat.db.transaction() as session:
        for quote_id in quote_ids:
            q = await session.get(Quote, quote_id)
            store.add(PendingQuote(**{name: getattr(q, name) for name in PendingQuote.__dataclass_fields__}))


async def _database(dialect: str, tmp: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh database for one run and how to drop it."""
    if dialect == "sqlite":

        async def nothing() -> None:
            return None

        return f"sqlite+aiosqlite:///{tmp / 'bench.db'}", nothing
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    base = sa.engine.make_url(POSTGRES_URL)
    name = f"bench_co_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
        await engine.dispose()

    async def drop() -> None:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    await admin(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False), drop


async def _micro(dialect: str) -> dict[str, Any]:
    """The platform's fixed costs, without CreateOrder: CPU per statement (`SELECT 1` on one connection, in one
    transaction) and per empty write transaction (`Database.transaction(write=True)` with one `SELECT 1`), in
    µs of this process's CPU (all threads)."""
    import sqlalchemy as sa

    from voltcloud.platform.db import Database

    with tempfile.TemporaryDirectory(prefix="bench-create-order-") as tmp:
        url, drop = await _database(dialect, Path(tmp))
        db = Database(url)
        try:
            one = sa.text("SELECT 1")
            async with db.transaction() as session:
                connection = await session.connection()
                for _ in range(200):  # warm-up
                    await connection.execute(one)
                cpu = time.process_time()
                for _ in range(3000):
                    await connection.execute(one)
                statement_us = (time.process_time() - cpu) / 3000 * 1e6
            cpu = time.process_time()
            for _ in range(1000):
                async with db.transaction("bench", write=True) as session:
                    await (await session.connection()).execute(one)
            transaction_us = (time.process_time() - cpu) / 1000 * 1e6 - statement_us
        finally:
            await db.dispose()
            await drop()
    return {"dialect": dialect, "statement_us": round(statement_us, 1), "transaction_us": round(transaction_us, 1)}


def _micro_runs(trees: list[list[str]], dialects: list[str], repeats: int) -> None:
    for dialect in dialects:
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
        for _ in range(repeats):
            for name, tree in trees:
                command = [sys.executable, __file__, "--child", "--micro", "--dialect", dialect]
                out = subprocess.run(
                    command, env={**os.environ, "PYTHONPATH": tree}, check=True, capture_output=True, text=True
                ).stdout
                results[name].append(json.loads(out.strip().splitlines()[-1]))
        for name, mine in results.items():
            st = statistics.median(r["statement_us"] for r in mine)
            tx = statistics.median(r["transaction_us"] for r in mine)
            print(
                f"{dialect:10s} {name:8s} CPU per statement {st:7.1f} µs, per empty write transaction (besides its "
                f"statement) {tx:7.1f} µs (medians of {repeats}), load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


# ---- the parent: trees x dialects x repeats ------------------------------------------------------------------


def _run_child(tree: str, dialect: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": tree}
    command = [
        sys.executable, __file__, "--child", "--dialect", dialect, "--orders", str(args.orders),
        "--concurrency", str(args.concurrency),
    ] + (["--trace"] if args.trace else []) + (["--quote-memory"] if args.quote_memory else [])  # fmt: skip
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", action="append", default=[], help="NAME=PYTHONPATH of a code tree to measure")
    parser.add_argument("--dialect", action="append", choices=["sqlite", "postgresql"], default=[])
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trace", action="store_true", help="print the statements of one order")
    parser.add_argument(
        "--quote-memory", action="store_true",
        help="hand the quotes to the platform's quote store first, as if this replica had made them",
    )  # fmt: skip
    parser.add_argument("--profile", type=int, default=0, help="child only: cProfile's top N functions on stderr")
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument(
        "--micro", action="store_true", help="only the fixed costs: CPU per statement and per write transaction"
    )
    args = parser.parse_args()
    if args.child and args.micro:
        print(json.dumps(asyncio.run(_micro(args.dialect[0] if args.dialect else "sqlite"))))
        return
    if args.child:
        args.dialect = args.dialect[0] if args.dialect else "sqlite"

        print(json.dumps(asyncio.run(_child(args))))
        return
    trees = [t.split("=", 1) for t in args.tree] or [["after", str(Path(__file__).resolve().parents[1] / "python")]]
    dialects = args.dialect or ["sqlite", "postgresql"]
    if args.micro:
        _micro_runs(trees, dialects, args.repeats)
        return
    runs: list[dict[str, Any]] = []
    for dialect in dialects:
        for repeat in range(args.repeats):
            for name, tree in trees:
                result = _run_child(tree, dialect, args) | {"tree": name, "repeat": repeat}
                runs.append(result)
                print(
                    f"{dialect:10s} {name:8s} #{repeat}: {result['orders_per_s']:7.1f} orders/s, "
                    f"{result['cpu_ms_per_order']:.2f} CPU ms/order, {result['statements_per_order']:.1f} "
                    f"statements/order, failures {result['failures']}, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                for line in result["trace"]:
                    print("    " + line)
    print(f"\n{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{args.orders} orders per run, concurrency {args.concurrency}, {args.repeats} repeats")  # fmt: skip
    print(
        f"{'dialect':10s} {'tree':8s} {'orders/s median (range)':>26s} {'CPU ms/order (range)':>22s} "
        f"{'stmts/order':>12s} {'ratio':>7s}"
    )
    for dialect in dialects:
        base: float | None = None
        for name, _ in trees:
            mine = [r for r in runs if r["dialect"] == dialect and r["tree"] == name]
            rates = [r["orders_per_s"] for r in mine]
            median = statistics.median(rates)
            base = base or median
            stmts = statistics.median(r["statements_per_order"] for r in mine)
            cpu = [r["cpu_ms_per_order"] for r in mine]
            print(
                f"{dialect:10s} {name:8s} {median:10.1f} ({min(rates):.1f}-{max(rates):.1f}) "
                f"{statistics.median(cpu):9.2f} ({min(cpu):.2f}-{max(cpu):.2f}) {stmts:12.1f} {median / base:7.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
