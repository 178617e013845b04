"""Start-up and idle cost of `voltcloud serve` on the country world (issue 11: ready <= 5 s, idle <= 2 % of a core).

For each `--source` checkout in turn (this one by default; e.g. `--source /tmp/main-python-tree .` to compare the
code of main with this checkout, `git archive HEAD python` unpacked with the built `_core*.so` beside it), and
`--repeats` times, alternating so drift of a shared machine hits every checkout alike: a fresh copy of the
seeded country world (SQLite, cached by `bench_load.py`; or with `--db postgresql` a copy of its PostgreSQL
template in a database of the run's own name, `--pg-database`), `voltcloud serve --workers N` started, and measured

- ready: process start -> the ready line and health SERVING (all workers), wall seconds;
- start-up CPU: CPU seconds the server's processes (supervisor and workers) used until then, in all and per
  process (the supervisor; the workers' median); on a machine shared with other work the wall time stretches,
  the CPU seconds much less;
- idle: % of one core the server's processes use over `--idle-seconds` right after ready (utime + stime from
  /proc), with no calls.

    python bench/bench_idle.py --source /tmp/main-tree . --repeats 3 --json bench/results/idle-<date>.json

With `--compile-bytecode` each checkout's `python/` is byte-compiled first, as an installed package is: in an
environment with PYTHONDONTWRITEBYTECODE set every process otherwise compiles every module it imports.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _openloop import server_env, start_server, stop_server  # bench/ is this script's directory
from bench_load import JWT_KEY, SERVER_ENV, cpu_seconds, migration_key, pg_url, process_tree, psql, sqlite_world


def postgres_copy(source: Path, world_seed: int, database: str) -> str:
    """A fresh copy of the country world's PostgreSQL template (built once by `bench_load.py --db postgresql`), in
    a database of this run's own name: other benchmarks may be using theirs."""
    template = f"voltcloud_bench_{migration_key(source)}_s{world_seed}"
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{template}'"):
        raise SystemExit(f"no database {template}: build it once with bench/bench_load.py --db postgresql")
    psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql(f"CREATE DATABASE {database} TEMPLATE {template}")
    return pg_url(database)


async def one(source: Path, args: argparse.Namespace) -> dict[str, Any]:
    workers, idle_s, world_seed = args.workers, args.idle_seconds, args.world_seed
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        run_dir = Path(tmp)
        if args.db == "postgresql":
            url = await asyncio.to_thread(postgres_copy, source, world_seed, args.pg_database)
        else:
            url = await asyncio.to_thread(sqlite_world, source, migration_key(source), world_seed, run_dir, "idle")
        env = server_env(JWT_KEY, {**SERVER_ENV, "VOLTCLOUD_DATABASE_URL": url}, source)
        server = await start_server(str(source), run_dir, env, ["--workers", str(workers)])
        try:
            pids = process_tree(server.process.pid)
            startup_cpu = cpu_seconds(pids)
            supervisor_cpu = cpu_seconds([server.process.pid]) if len(server.pids) > 1 else 0.0
            worker_cpu = statistics.median(cpu_seconds([pid]) for pid in server.pids)
            before = cpu_seconds(pids)
            await asyncio.sleep(idle_s)
            idle = 100 * (cpu_seconds(pids) - before) / idle_s
        finally:
            await stop_server(server)
    return {
        "source": str(source),
        "db": args.db,
        "ready_s": round(server.ready_s, 2),
        "startup_cpu_s": round(startup_cpu, 2),
        "supervisor_cpu_s": round(supervisor_cpu, 2),
        "worker_cpu_s": round(worker_cpu, 2),
        "idle_percent": round(idle, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


async def main(args: argparse.Namespace) -> None:
    runs: list[dict[str, Any]] = []
    if args.compile_bytecode:  # as an installed package has it (pip compiles at install); the rest pay per start
        for source in args.source:
            compileall.compile_dir(source.resolve() / "python", quiet=1)
    for repeat in range(args.repeats):
        for source in args.source:
            run = await one(source.resolve(), args)
            run["repeat"] = repeat
            print(run, flush=True)
            runs.append(run)
    keys = ("ready_s", "startup_cpu_s", "supervisor_cpu_s", "worker_cpu_s", "idle_percent")
    print("\n| checkout | ready s (median, runs) | start-up CPU s, all | supervisor | a worker | idle % of a core |")
    print("|---|---|---|---|---|---|")
    for source in args.source:
        mine = [r for r in runs if r["source"] == str(source.resolve())]
        cells = [f"{statistics.median(r[k] for r in mine):.2f} ({', '.join(str(r[k]) for r in mine)})" for k in keys]
        print(f"| {source} | " + " | ".join(cells) + " |")
    if args.json:
        meta = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "workers": args.workers,
            "db": args.db,
            "idle_seconds": args.idle_seconds,
        }
        args.json.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, nargs="+", default=[Path(__file__).resolve().parent.parent])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-database", default="bench_idle_run", help="the scratch database of this run")
    parser.add_argument("--compile-bytecode", action="store_true", help="byte-compile each checkout's python/ first")
    asyncio.run(main(parser.parse_args()))
