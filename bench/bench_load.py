"""The decision path under load (issue 11), open loop, on the country world (432,643 resources).

For each database (SQLite, PostgreSQL): a fresh copy of the seeded country world (`voltcloud seed --scale
country`, cached under /tmp keyed by the code's migration heads: a SQLite file, or a PostgreSQL template
database `voltcloud_bench_<key>` copied into `voltcloud_bench_run_<label>`), with every fleet's wallet funded; one
`voltcloud serve` process (with `--workers N` when given) started as a subprocess; then

- time to ready: process start -> the ready line and health SERVING (with workers: all of them serving);
- idle CPU: the server's processes (supervisor and workers) over `--idle-seconds`, from /proc/<pid>/stat, in %
  of one core;
- QuotePowerUp swept over `--quote-rates`, then CreateOrder over `--order-rates`. Each call is a fleet manager's
  for one of the fleet's vehicles at a point near a random station of the country. Each CreateOrder orders
  the best option of its own quote (`allow_fallback`), quoted before its run (closed loop, not measured;
  the server's quote TTL is raised so the quotes stay valid).

The driver runs in `--senders` processes of its own (call i of a run goes to sender i mod k; each spreads its
calls over `--channels` connections, so every worker of the server gets some); calls are scheduled at fixed
rates with their latency and deadline (2 s) counted from the scheduled time (`_openloop.py`), and each
sender's send lag is reported. Output in `--out` (bench/results/): `load-<label>.json` and per database and
RPC a latency-vs-rate plot (`-rate.png`: p50/p99 of the OK answers, goodput) and a latency histogram per
rate (`-hist.png`).

    python bench/bench_load.py --label main --source /work/main         # the code of another checkout
    python bench/bench_load.py --label workers2 --workers 2
    python bench/bench_load.py --db sqlite --rpc quote --quote-rates 10 50 --seconds 5 --label smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from _openloop import (  # bench/ is this script's directory, so first on sys.path
    DEADLINE_S,
    Outcome,
    Server,
    ms,
    open_loop,
    percentile,
    run_of,
    server_env,
    start_server,
    stop_server,
    timeout_for,
)

from voltcloud.api.v1 import common_pb2, ordering_pb2
from voltcloud.platform.auth import Role, Tenant, TokenService

REPO = Path(__file__).resolve().parent.parent
JWT_KEY = "load-bench-key-0123456789abcdef0123456789abcdef"
QUOTE = "/voltcloud.v1.OrderingService/QuotePowerUp"
ORDER = "/voltcloud.v1.OrderingService/CreateOrder"
CACHE = Path(tempfile.gettempdir()) / "voltcloud-bench"
FUND_MINOR = 10_000_000_000  # per fleet wallet: 100 M CNY, far more than any run holds
SERVER_ENV = {
    "VOLTCLOUD_QUOTE_TTL_S": "3600",  # pre-made quotes must outlive the order sweep
    "VOLTCLOUD_REOPTIMIZE_INTERVAL_S": "0",  # batch re-optimisation is not the decision path
}
HIST_BINS = [round(10 ** (k / 10), 2) for k in range(0, 35)]  # 1 ms .. 2.5 s, 10 bins per decade


# --- the world: cached seed, a fresh copy per server -------------------------------------------------------


def migration_key(source: Path) -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(source / "python" / "voltcloud" / "migrations")).get_heads()
    return hashlib.sha256(",".join(sorted(heads)).encode()).hexdigest()[:10]


def seed(source: Path, url: str, data_dir: Path, world_seed: int) -> None:
    env = server_env(JWT_KEY, {}, source)
    argv = [sys.executable, "-m", "voltcloud.cli", "seed", "--scale", "country", "--seed", str(world_seed)]
    subprocess.run([*argv, "--data-dir", str(data_dir), "--database-url", url], env=env, check=True)


async def fund_fleets(url: str) -> None:
    """Every fleet's wallet funded, so a fleet manager's orders are never refused for money."""
    from voltcloud.platform.db import Database
    from voltcloud.settlement import api as settlement

    db = Database(url)
    try:
        async with db.transaction() as session:
            connection = await session.connection()
            fleets = [str(f) for f in (await connection.execute(sa.text("SELECT id FROM fleet ORDER BY id"))).scalars()]
            for fleet in fleets:
                account = await settlement.ensure_customer_account(session, owner_kind="fleet", owner_id=fleet)
                await settlement.top_up(
                    session, account_id=account, amount_minor=FUND_MINOR, currency="CNY", provider="simulated",
                    provider_token="bench", idempotency_key=f"bench-fund-{fleet}",
                )  # fmt: skip
    finally:
        await db.dispose()


def psql(sql: str, database: str = "postgres") -> str:
    argv = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"


def sqlite_world(source: Path, key: str, world_seed: int, run_dir: Path, label: str) -> str:
    cached = CACHE / f"country-{key}-seed{world_seed}.db"
    if not cached.exists():
        building = CACHE / f"building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        url = f"sqlite+aiosqlite:///{building / 'voltcloud.db'}"
        seed(source, url, building, world_seed)
        asyncio.run(fund_fleets(url))
        with contextlib.closing(sqlite3.connect(building / "voltcloud.db")) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the whole world in the one file
        (building / "voltcloud.db").rename(cached)
        shutil.rmtree(building)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, run_dir / "voltcloud.db")
    return f"sqlite+aiosqlite:///{run_dir / 'voltcloud.db'}"


def pg_run_database(label: str) -> str:
    """The run's copy of the world, named by its label so that benches of several checkouts can run side by side."""
    return "voltcloud_bench_run_" + "".join(c if c.isalnum() else "_" for c in label.lower())


def postgres_world(source: Path, key: str, world_seed: int, run_dir: Path, label: str) -> str:
    template = f"voltcloud_bench_{key}_s{world_seed}"
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{template}'"):
        building = f"{template}_building"
        psql(f"DROP DATABASE IF EXISTS {building} WITH (FORCE)")
        psql(f"CREATE DATABASE {building}")
        seed(source, pg_url(building), run_dir, world_seed)
        asyncio.run(fund_fleets(pg_url(building)))
        psql(f"ALTER DATABASE {building} RENAME TO {template}")  # only a complete world gets the name
    run = pg_run_database(label)
    psql(f"DROP DATABASE IF EXISTS {run} WITH (FORCE)")
    psql(f"CREATE DATABASE {run} TEMPLATE {template}")
    return pg_url(run)


@dataclasses.dataclass
class Fixtures:
    """What the calls are made of: fleet vehicles with their fleets, and station positions to stand near."""

    vehicles: list[tuple[str, str]]
    positions: list[tuple[float, float]]
    tokens: dict[str, str]  # fleet id -> its manager's token

    @classmethod
    async def read(cls, url: str) -> Fixtures:
        from voltcloud.platform.db import Database

        db = Database(url)
        try:
            async with db.transaction() as session:
                connection = await session.connection()
                query = "SELECT id, fleet_id FROM vehicle WHERE fleet_id IS NOT NULL ORDER BY id"
                vehicles = [(str(v), str(f)) for v, f in (await connection.execute(sa.text(query))).all()]
                rows = (await connection.execute(sa.text("SELECT lat, lng FROM station ORDER BY id"))).all()
                positions = [(float(lat), float(lng)) for lat, lng in rows]
        finally:
            await db.dispose()
        minter = TokenService(JWT_KEY, "voltcloud", dt.timedelta(hours=6))
        fleets = sorted({fleet for _, fleet in vehicles})
        tokens = {f: minter.mint(f"bench-fm-{f}", Role.FLEET_MANAGER, Tenant("fleet", f)) for f in fleets}
        return cls(vehicles, positions, tokens)

    def quote(self, i: int) -> tuple[str, bytes]:
        """Call i's (fleet, QuotePowerUpRequest bytes): a deterministic vehicle and point for each i."""
        pick = random.Random(i)
        vehicle, fleet = self.vehicles[pick.randrange(len(self.vehicles))]
        lat, lng = self.positions[pick.randrange(len(self.positions))]
        request = ordering_pb2.QuotePowerUpRequest(
            vehicle_id=vehicle,
            position=common_pb2.LatLng(lat=lat + pick.uniform(-0.01, 0.01), lng=lng + pick.uniform(-0.01, 0.01)),
            soc_permille=pick.randint(150, 450),
            target_soc_permille=800,
        )
        return fleet, request.SerializeToString()


# --- the senders: processes of the driver ------------------------------------------------------------------


@dataclasses.dataclass
class Batch:
    """One sender's share of a run: its calls (index, metadata token, request bytes)."""

    method: str
    rate: float
    t0_wall: float
    calls: list[tuple[int, str, bytes]]


def _sender_main(target: str, channels: int, inbox: Any, outbox: Any) -> None:
    while (batch := inbox.get()) is not None:
        outbox.put(asyncio.run(_send(target, channels, batch)))


async def _send(target: str, channels: int, batch: Batch) -> list[Outcome]:
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel: spread over the workers
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    try:
        stubs = [channel.unary_unary(batch.method) for channel in opened]  # bytes in, bytes out
        for channel in opened:
            await asyncio.wait_for(channel.channel_ready(), 10)
        loop = asyncio.get_running_loop()
        by_index = {i: (token, payload) for i, token, payload in batch.calls}

        async def call(i: int, scheduled: float) -> str:
            token, payload = by_index[i]
            try:
                await stubs[i % len(stubs)](
                    payload, metadata=(("authorization", f"Bearer {token}"),), timeout=timeout_for(scheduled)
                )
                return "OK"
            except grpc.aio.AioRpcError as error:
                return str(error.code().name)

        t0 = batch.t0_wall - (time.time() - loop.time())
        return await open_loop(call, batch.rate, 0, t0, [i for i, _, _ in batch.calls])
    finally:
        for channel in opened:
            await channel.close()


class Senders:
    """`count` long-lived processes that each send their share of a run's calls on their own schedule."""

    def __init__(self, target: str, count: int, channels: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._outbox = context.Queue()
        self._inboxes = [context.Queue() for _ in range(count)]
        self._processes = [
            context.Process(target=_sender_main, args=(target, channels, inbox, self._outbox), daemon=True)
            for inbox in self._inboxes
        ]
        for process in self._processes:
            process.start()

    def run(self, method: str, rate: float, calls: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        t0_wall = time.time() + 1.5  # every sender has connected by then
        k = len(self._inboxes)
        for j, inbox in enumerate(self._inboxes):
            share = [(i, token, payload) for i, (token, payload) in enumerate(calls) if i % k == j]
            inbox.put(Batch(method, rate, t0_wall, share))
        outcomes: list[Outcome] = []
        for _ in self._inboxes:
            outcomes += self._outbox.get(timeout=len(calls) / rate + 60)
        return outcomes

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for process in self._processes:
            process.join(10)


# --- the server's processes: idle CPU ----------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo += [int(child) for child in task.read_text().split()]
    return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    ticks = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def idle_cpu_percent(server: Server, seconds: float) -> float:
    pids = process_tree(server.process.pid)
    before = cpu_seconds(pids)
    await asyncio.sleep(seconds)
    return round(100 * (cpu_seconds(pids) - before) / seconds, 1)


# --- a sweep -----------------------------------------------------------------------------------------------


async def pre_quote(
    target: str, fixtures: Fixtures, count: int, first: int, budget_s: float = 1e9
) -> list[tuple[str, bytes]]:
    """Up to `count` CreateOrder requests, each for the best option of a fresh quote (closed loop, not
    measured); fewer when quoting takes longer than `budget_s` (a server that quotes at 1/s)."""
    requests: list[tuple[str, bytes]] = []
    next_index = iter(range(first, first + 10 * count))
    give_up = time.monotonic() + budget_s

    async def worker(channel: grpc.aio.Channel) -> None:
        quote = channel.unary_unary(QUOTE, response_deserializer=ordering_pb2.QuotePowerUpResponse.FromString)
        while len(requests) < count and time.monotonic() < give_up:
            i = next(next_index)
            fleet, payload = fixtures.quote(i)
            token = fixtures.tokens[fleet]
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await quote(payload, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
                if reply.options and len(requests) < count:
                    order = ordering_pb2.CreateOrderRequest(
                        idempotency_key=f"bench-order-{i}", quote_id=reply.quote_id,
                        option_id=reply.options[0].option_id, allow_fallback=True,
                    )  # fmt: skip
                    requests.append((token, order.SerializeToString()))

    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(8)]
    try:
        await asyncio.gather(*(worker(channel) for channel in channels))
    finally:
        for channel in channels:
            await channel.close()
    return requests


def histogram(latencies_ms: Sequence[float]) -> list[int]:
    counts = [0] * (len(HIST_BINS) + 1)
    for value in latencies_ms:
        counts[sum(1 for edge in HIST_BINS if value >= edge)] += 1
    return counts


def run_record(
    db: str, rpc: str, rate: float, seconds: float, outcomes: list[Outcome], server_cpu_s: list[float]
) -> dict[str, Any]:
    ok_ms = [latency * 1000 for code, latency, _ in outcomes if code == "OK"]
    record = dataclasses.asdict(run_of(f"{db} {rpc}", rate, seconds, outcomes))
    record.update(
        db=db,
        rpc=rpc,
        # CPU of the server's processes per call sent (what a shared machine's load stretches least)
        server_cpu_ms_per_call=round(1000 * sum(server_cpu_s) / max(1, len(outcomes)), 3),
        server_cpu_s_by_process=server_cpu_s,  # supervisor first: how evenly the workers were loaded
        ok_p90_ms=ms(percentile([v / 1000 for v in ok_ms], 0.9)),
        send_lag_p50_ms=ms(percentile([lag for _, _, lag in outcomes], 0.5)),
        ok_histogram_ms=histogram(ok_ms),
        loadavg_1m_after=round(os.getloadavg()[0], 2),  # the shared machine: other jobs show up here
    )
    return record


def profile_workers(
    args: argparse.Namespace, server: Server, name: str, seconds: float
) -> list[subprocess.Popen[bytes]]:
    """With `--profile DIR`: py-spy (native frames, 200 Hz) on every worker for the run, one collapsed-stack file
    each (`<label>-<db>-<rpc>-<rate>-<pid>.txt`, input for `bench_quote_layers.py --profile`)."""
    if not args.profile:
        return []
    workers = [pid for pid in process_tree(server.process.pid) if pid != server.process.pid] or [server.process.pid]
    spies = []
    for pid in workers:
        out = args.profile / f"{args.label}-{name}-{pid}.txt"
        argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", "200", "--native",
                "--format", "raw", "--duration", str(max(1, int(seconds))), "--output", str(out)]  # fmt: skip
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


async def sweep(
    args: argparse.Namespace, db: str, server: Server, fixtures: Fixtures, senders: Senders
) -> list[dict[str, Any]]:
    target = server.target
    server_pids = process_tree(server.process.pid)
    records: list[dict[str, Any]] = []
    for rpc in args.rpc:
        rates = args.quote_rates if rpc == "quote" else args.order_rates
        for n, rate in enumerate(rates):
            count = int(rate * args.seconds)
            if rpc == "quote":
                calls = []
                for i in range(count):
                    fleet, payload = fixtures.quote(1_000_000 * (n + 1) + i)
                    calls.append((fixtures.tokens[fleet], payload))
                method = QUOTE
            else:
                first = 50_000_000 + 1_000_000 * n
                calls = await pre_quote(target, fixtures, count, first, budget_s=args.pre_quote_budget)
                method = ORDER
            if not calls:
                print(f"  {db} {rpc} {rate:g}/s: no quote could be made in time; skipped", flush=True)
                continue
            seconds = len(calls) / rate  # shorter than --seconds only when too few quotes could be made
            spies = profile_workers(args, server, f"{db}-{rpc}-{rate:g}", seconds)
            cpu_before = [cpu_seconds([pid]) for pid in server_pids]
            outcomes = await asyncio.to_thread(senders.run, method, rate, calls)
            server_cpu_s = [
                round(cpu_seconds([pid]) - before, 2) for pid, before in zip(server_pids, cpu_before, strict=True)
            ]
            for spy in spies:
                await asyncio.to_thread(spy.wait, 30)
            records.append(run_record(db, rpc, rate, seconds, outcomes, server_cpu_s))
            shown = {k: v for k, v in records[-1].items() if k != "ok_histogram_ms"}
            print(f"  {shown}", flush=True)
            await asyncio.sleep(args.settle)
    return records


async def bench_database(args: argparse.Namespace, db: str, run_dir: Path) -> dict[str, Any]:
    key = migration_key(args.source)
    make_world = sqlite_world if db == "sqlite" else postgres_world
    url = await asyncio.to_thread(make_world, args.source, key, args.world_seed, run_dir, args.label)
    fixtures = await Fixtures.read(url)
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    env = server_env(JWT_KEY, {**SERVER_ENV, **extra_env, "VOLTCLOUD_DATABASE_URL": url}, args.source)
    extra = ["--workers", str(args.workers)] if args.workers else []
    server = await start_server(f"{db}", run_dir, env, extra)
    try:
        print(f"{db}: ready in {server.ready_s:.1f} s, pids {server.pids}", flush=True)
        idle = await idle_cpu_percent(server, args.idle_seconds) if args.idle_seconds else None
        print(f"{db}: idle CPU {idle} % of one core over {args.idle_seconds:g} s", flush=True)
        await pre_quote(server.target, fixtures, 40, first=90_000_000)  # warm: caches, connections, code paths
        senders = Senders(server.target, args.senders, args.channels)
        try:
            runs = await sweep(args, db, server, fixtures, senders)
        finally:
            senders.close()
    finally:
        await stop_server(server)
        if db == "postgresql":
            await asyncio.to_thread(psql, f"DROP DATABASE IF EXISTS {pg_run_database(args.label)} WITH (FORCE)")
    return {"db": db, "ready_s": round(server.ready_s, 2), "idle_cpu_pct": idle, "pids": server.pids, "runs": runs}


# --- output ------------------------------------------------------------------------------------------------


def plot(result: dict[str, Any], out: Path, label: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for db in result["databases"]:
        for rpc in sorted({r["rpc"] for r in db["runs"]}):
            runs = [r for r in db["runs"] if r["rpc"] == rpc]
            name = {"quote": "QuotePowerUp", "order": "CreateOrder"}[rpc]
            rates = [r["offered_per_s"] for r in runs]
            fig, ax = plt.subplots(figsize=(7, 4.2))
            for key, style in (("ok_p50_ms", "o-"), ("ok_p99_ms", "s--")):
                points = [(x, r[key]) for x, r in zip(rates, runs, strict=True) if r[key] is not None]
                ax.plot([p[0] for p in points], [p[1] for p in points], style, label=key[3:6] + " (OK)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("offered rate, calls/s (open loop)")
            ax.set_ylabel("latency from scheduled send, ms")
            ax.axhline(DEADLINE_S * 1000, color="grey", lw=0.8, ls=":", label="deadline")
            right = ax.twinx()
            right.plot(rates, [r["goodput_per_s"] for r in runs], "g^-", label="goodput/s")
            right.plot(rates, rates, color="green", lw=0.6, ls=":", label="offered")
            right.set_xscale("log")
            right.set_yscale("log")
            right.set_ylabel("goodput, OK/s", color="green")
            lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
            names = ax.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
            ax.legend(lines, names, loc="upper left", fontsize=8)
            ax.set_title(f"{name}, country world, {db['db']}, {label}", fontsize=10)
            fig.tight_layout()
            written.append(out / f"load-{label}-{db['db']}-{rpc}-rate.png")
            fig.savefig(written[-1], dpi=110)
            plt.close(fig)

            fig, ax = plt.subplots(figsize=(7, 4.2))
            edges = [0.5, *HIST_BINS, 10**3.6]
            for r in runs:
                counts = r.get("ok_histogram_ms") or [0]
                if sum(counts):
                    ax.stairs(counts, edges, label=f"{r['offered_per_s']:g}/s ({sum(counts)} OK)")
            ax.set_xscale("log")
            ax.set_xlabel("latency of OK answers from scheduled send, ms")
            ax.set_ylabel("calls")
            ax.legend(fontsize=8)
            ax.set_title(f"{name} latency histogram, {db['db']}, {label}", fontsize=10)
            fig.tight_layout()
            written.append(out / f"load-{label}-{db['db']}-{rpc}-hist.png")
            fig.savefig(written[-1], dpi=110)
            plt.close(fig)
    return written


def table(result: dict[str, Any]) -> str:
    lines = []
    for db in result["databases"]:
        lines.append(f"\n{db['db']}: ready {db['ready_s']} s, idle CPU {db['idle_cpu_pct']} % of a core")
        lines.append("| RPC | offered/s | goodput/s | OK p50 / p90 / p99 ms | send lag p99 ms | load avg | answers |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in db["runs"]:
            answers = ", ".join(f"{code} {n:,}" for code, n in r["by_status"].items())
            latency = f"{r['ok_p50_ms']} / {r['ok_p90_ms']} / {r['ok_p99_ms']}"
            name = {"quote": "QuotePowerUp", "order": "CreateOrder"}[r["rpc"]]
            row = [name, f"{r['offered_per_s']:g}", f"{r['goodput_per_s']:g}", latency]
            load = str(r.get("loadavg_1m_after", "-"))
            lines.append("| " + " | ".join([*row, f"{r['send_lag_p99_ms']}", load, answers]) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1), "python": platform.python_version()}


def source_commit(source: Path) -> str:
    result = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every database in turn; the JSON is rewritten after each, so a run cut short keeps what it measured."""
    result: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "label": args.label,
            "source": str(args.source),
            "commit": source_commit(args.source),
            "workers": args.workers or "server default",
            "senders": args.senders,
            "channels_per_sender": args.channels,
            "seconds_per_run": args.seconds,
            "deadline_s": DEADLINE_S,
            "machine": machine(),
            "command": " ".join(["python", *sys.argv]),
            "histogram_edges_ms": HIST_BINS,
        },
        "databases": [],
    }
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        for db in args.db:
            result["databases"].append(await bench_database(args, db, Path(tmp) / db))
            (args.out / f"load-{args.label}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--rpc", nargs="+", default=["quote", "order"], choices=["quote", "order"])
    parser.add_argument("--quote-rates", type=float, nargs="+", default=[10, 25, 50, 100, 200, 500, 1000])
    parser.add_argument("--order-rates", type=float, nargs="+", default=[5, 10, 25, 50, 100, 300])
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration of one run")
    parser.add_argument("--settle", type=float, default=3.0, help="pause between runs")
    parser.add_argument("--workers", type=int, help="pass --workers N to the server (default: its own default)")
    parser.add_argument("--source", type=Path, default=REPO, help="checkout whose code the server runs")
    parser.add_argument("--senders", type=int, default=2, help="driver processes")
    parser.add_argument("--channels", type=int, default=4, help="connections per sender")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument(
        "--server-env", nargs="*", default=[], metavar="NAME=VALUE", help="settings for the server, e.g. "
        "VOLTCLOUD_RPC_ACCEPT_SERVERS=1 (compare a setting in one invocation)",
    )  # fmt: skip
    parser.add_argument(
        "--pre-quote-budget", type=float, default=90.0, help="at most this long quoting for one CreateOrder run"
    )
    parser.add_argument("--profile", type=Path, help="py-spy every worker during each run, files in this directory")
    parser.add_argument("--replot", type=Path, help="plots and table of a JSON written before; runs nothing")
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--label", default="run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    args.source = args.source.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.replot:
        result = json.loads(args.replot.read_text())
        args.label = result["meta"]["label"]
    else:
        result = asyncio.run(bench(args))
    for path in plot(result, args.out, args.label):
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
