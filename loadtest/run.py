"""One command: a country-scale server, locust headless against it, and a report.

Prepares the country world (the cached seed of `bench/bench_load.py`: SQLite file or PostgreSQL template,
fleets funded), starts `voltcloud serve` on it (`--workers N` when given), runs `loadtest/locustfile.py`
headless with every user class (drivers, specialists, gateways, fleet managers), stops the server, and writes
`report.md` (req/s, failures, p50/p95/p99 per RPC) beside locust's CSV files in `--out`.

    python loadtest/run.py                                   # SQLite, 100 users, 60 s
    python loadtest/run.py --db postgresql --users 200 --time 120 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))  # the world cache and server helpers of the benchmarks

from _openloop import server_env, start_server, stop_server  # noqa: E402
from bench_load import JWT_KEY, SERVER_ENV, machine, migration_key, postgres_world, sqlite_world  # noqa: E402

COLUMNS = ["Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%", "Max Response Time"]


async def run(args: argparse.Namespace, work: Path) -> Path:
    source = REPO
    make_world = sqlite_world if args.db == "sqlite" else postgres_world
    url = await asyncio.to_thread(make_world, source, migration_key(source), args.world_seed, work / "data")
    env = server_env(JWT_KEY, {**SERVER_ENV, "VOLTCLOUD_DATABASE_URL": url})
    extra = ["--workers", str(args.workers)] if args.workers else []
    server = await start_server(args.db, work / "data", env, extra)
    print(f"{args.db} server ready in {server.ready_s:.1f} s on {server.target}, pids {server.pids}", flush=True)
    prefix = work / "locust"  # locust's own CSV files; the report and the stats go to --out
    try:
        locust = [
            sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"), "--headless",
            "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.time}s", "--host", server.target,
            "--csv", str(prefix), "--only-summary", "--stop-timeout", "5",
        ]  # fmt: skip
        locust_env = {**env, "VOLTCLOUD_DATA_DIR": str(work / "data")}
        process = await asyncio.create_subprocess_exec(*locust, env=locust_env)
        await process.wait()
    finally:
        await stop_server(server)
    return report(args, prefix, server.ready_s, process.returncode)


def report(args: argparse.Namespace, prefix: Path, ready_s: float, exit_code: int | None) -> Path:
    with Path(f"{prefix}_stats.csv").open() as stats:
        rows = list(csv.DictReader(stats))
    lines = [
        f"# Load test report, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `python {' '.join(sys.argv)}`; {args.db}, country world, {args.users} users "
        f"(spawn {args.spawn_rate}/s), {args.time} s, server workers: {args.workers or 'default'}, "
        f"server ready in {ready_s:.1f} s; locust exit code {exit_code}.",
        f"Machine: {machine()}.",
        "",
        "| RPC | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["Name"], *(_number(row[c]) for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        lines += ["", "Failures, by RPC and status (one example each):", "", "| RPC | status | count | example |"]
        lines.append("|---|---|---|---|")
        for (name, status), (count, example) in sorted(failure_kinds(failures).items()):
            lines.append(f"| {name} | {status} | {count} | {example} |")
    shutil.copyfile(f"{prefix}_stats.csv", args.out / "locust_stats.csv")
    path = args.out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def failure_kinds(path: Path) -> dict[tuple[str, str], tuple[int, str]]:
    """Locust lists each distinct error text; ids make every text distinct, so group by RPC and status."""
    kinds: dict[tuple[str, str], tuple[int, str]] = {}
    with path.open() as file:
        for row in csv.DictReader(file):
            error = row["Error"]
            found = re.search(r"StatusCode\.(\w+)", error)
            status = found.group(1) if found else error.split(":")[0][:40]
            details = re.search(r'details = "([^"]*)', error)
            example = (details.group(1) if details else error)[:140].replace("|", "/").replace("\n", " ")
            count, first = kinds.get((row["Name"], status), (0, example))
            kinds[(row["Name"], status)] = (count + int(row["Occurrences"]), first)
    return kinds


def _number(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:,.1f}" if not number.is_integer() else f"{int(number):,}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--time", type=int, default=60, help="seconds of load")
    parser.add_argument("--workers", type=int, help="pass --workers N to the server (default: its own default)")
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "loadtest" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("VOLTCLOUD_DATABASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="voltcloud-load-") as tmp:
        path = asyncio.run(run(args, Path(tmp)))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
