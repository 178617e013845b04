"""Solomon VRPTW benchmark: solve the 56 instances, verify each plan, compare with distance-only BKS.

    python bench/bench_vrptw.py [--time-limit-ms 300] [--seed 1] [--only R1] [--json out.json]

Feasibility is re-checked here in plain Python from the instance file (windows, capacity, vehicle
count, every customer exactly once) and the cost is recomputed; gap = 100 * (cost / BKS - 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

from voltcloud import _core

DATA = Path(__file__).resolve().parent / "data" / "vrptw"


def read_instance(path: Path) -> tuple[int, float, list[tuple[float, ...]]]:
    lines = [ln.split() for ln in path.read_text().splitlines()]
    vi = next(i for i, ln in enumerate(lines) if ln and ln[0].upper() == "VEHICLE")
    number, capacity = next(ln for ln in lines[vi + 1 :] if ln and ln[0].isdigit())
    ci = next(i for i, ln in enumerate(lines) if ln and ln[0].upper() == "CUSTOMER")
    rows = [tuple(float(x) for x in ln) for ln in lines[ci + 1 :] if ln and ln[0].isdigit()]
    return int(number), float(capacity), rows


def check(path: Path, routes: list[list[int]], reported: float) -> float:
    """Raises AssertionError if the plan is infeasible; returns the recomputed float cost."""
    max_vehicles, capacity, rows = read_instance(path)
    depot = rows[0]

    def dist(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return math.hypot(a[1] - b[1], a[2] - b[2])

    served = sorted(c for r in routes for c in r)
    assert served == list(range(1, len(rows))), "every customer exactly once"
    assert len(routes) <= max_vehicles, f"{len(routes)} routes > {max_vehicles} vehicles"
    total = 0.0
    for r in routes:
        assert r, "empty route reported"
        assert sum(rows[c][3] for c in r) <= capacity, "capacity"
        t, prev = depot[4], depot
        for c in r:
            row = rows[c]
            t = max(t + prev[6] + dist(prev, row), row[4])
            assert t <= row[5] + 1e-6, f"customer {c} served at {t} after due {row[5]}"
            total += dist(prev, row)
            prev = row
        t += prev[6] + dist(prev, depot)
        assert t <= depot[5] + 1e-6, "late back at the depot"
        total += dist(prev, depot)
    assert abs(total - reported) < 1e-6 * max(1.0, total), f"reported {reported} != recomputed {total}"
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-limit-ms", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="", help="run instances whose name starts with this prefix")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, help="write per-instance results here")
    args = ap.parse_args(argv)

    with (args.data / "solomon_bks.csv").open() as f:
        bks = {row["instance"]: float(row["distonly_distance"]) for row in csv.DictReader(f)}
    files = sorted(p for p in args.data.glob("*.txt") if p.stem.startswith(args.only))
    if not files:
        print(f"no instances in {args.data}", file=sys.stderr)
        return 2

    results = []
    print(f"{'instance':<8} {'veh':>4} {'cost':>10} {'bks':>10} {'gap%':>7} {'ms':>7} {'iters':>8}")
    for path in files:
        t0 = time.perf_counter()
        sol = _core.solve_vrptw_file(str(path), time_limit_ms=args.time_limit_ms, seed=args.seed)
        ms = (time.perf_counter() - t0) * 1e3
        cost = check(path, sol.routes, sol.cost)
        ref = bks[path.stem]
        gap = 100.0 * (cost / ref - 1.0)
        results.append(
            {
                "instance": path.stem,
                "vehicles": sol.vehicles,
                "cost": round(cost, 4),
                "bks": ref,
                "gap_pct": round(gap, 4),
                "ms": round(ms, 2),
                "iterations": sol.iterations,
            }
        )
        print(
            f"{path.stem:<8} {sol.vehicles:>4} {cost:>10.2f} {ref:>10.2f} {gap:>7.2f} {ms:>7.1f} {sol.iterations:>8}",
            flush=True,
        )

    gaps = [r["gap_pct"] for r in results]
    times = [r["ms"] for r in results]
    summary = {
        "instances": len(results),
        "time_limit_ms": args.time_limit_ms,
        "seed": args.seed,
        "mean_gap_pct": round(statistics.fmean(gaps), 3),
        "median_gap_pct": round(statistics.median(gaps), 3),
        "worst_gap_pct": round(max(gaps), 3),
        "mean_ms": round(statistics.fmean(times), 1),
        "max_ms": round(max(times), 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    print(
        f"\n{summary['instances']} instances, all feasible | gap mean {summary['mean_gap_pct']:.2f}% "
        f"median {summary['median_gap_pct']:.2f}% worst {summary['worst_gap_pct']:.2f}% | "
        f"time mean {summary['mean_ms']:.0f} ms max {summary['max_ms']:.0f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
