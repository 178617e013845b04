"""CPU cost of building the engine adapter from the database (`Engine.load`) and of its slow reconciliation
(`Engine.sync`) on the country world: the layer of a worker's start-up that reads ~370,000 rows.

For each `--source` checkout in turn, `--repeats` times, alternating: a fresh process (that checkout's code on
PYTHONPATH) on a fresh copy of the world (SQLite cached by `bench_load.py`, or `--db postgresql` a copy of its
template in `--pg-database`) builds an `Engine` from the database and reconciles it twice, and reports the CPU
seconds (`time.process_time`, all threads of the process) and wall seconds of each. Imports are not timed.

    python bench/bench_engine_load.py --source /tmp/main-tree . --repeats 3 [--db postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_idle import postgres_copy  # bench/ is this script's directory
from bench_load import migration_key, sqlite_world

CHILD = """
import asyncio, json, sys, time
from voltcloud.engine import Engine
from voltcloud.platform.db import Database

async def main():
    db = Database(sys.argv[1])
    engine = Engine()
    out = {}
    try:
        for name in ("load", "sync", "sync_again"):
            cpu, wall = time.process_time(), time.perf_counter()
            await (engine.load(db) if name == "load" else engine.sync(db))
            out[name + "_cpu_s"] = round(time.process_time() - cpu, 3)
            out[name + "_wall_s"] = round(time.perf_counter() - wall, 3)
    finally:
        await db.dispose()
    out["resources"] = sum(engine.counts())
    print(json.dumps(out))

asyncio.run(main())
"""


def one(source: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-engine-load-") as tmp:
        if args.db == "postgresql":
            url = postgres_copy(source, args.world_seed, args.pg_database)
        else:
            url = sqlite_world(source, migration_key(source), args.world_seed, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(source / "python")}
        out = subprocess.run([sys.executable, "-c", CHILD, url], env=env, check=True, capture_output=True, text=True)
    run: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"source": str(source), "db": args.db, **run, "loadavg_1m_after": round(os.getloadavg()[0], 2)}


def main(args: argparse.Namespace) -> None:
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for source in args.source:
            run = {**one(source.resolve(), args), "repeat": repeat}
            print(run, flush=True)
            runs.append(run)
    keys = ("load_cpu_s", "load_wall_s", "sync_cpu_s", "sync_again_cpu_s")
    print("\n| checkout | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for source in args.source:
        mine = [r for r in runs if r["source"] == str(source.resolve())]
        cells = [f"{statistics.median(r[k] for r in mine):.2f} ({', '.join(str(r[k]) for r in mine)})" for k in keys]
        print(f"| {source} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, nargs="+", default=[Path(__file__).resolve().parent.parent])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-database", default="bench_engine_load_run", help="the scratch database of this run")
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    main(parser.parse_args())
