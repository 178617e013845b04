"""Online route planner at fleet scale: insertion latency, re-optimisation and a batch solve.

    python bench/bench_route_planner.py [--tasks 2000] [--vehicles 50] [--seed 1]

Random depot-based instance on a 20 km square (travel time = distance / 10 m/s), tasks with 2-hour windows
spread over a day, 5-minute service, vehicles of capacity 60 on a 24-hour shift.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from voltcloud import _core


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--vehicles", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    n = args.tasks + 1
    pts = rng.uniform(0, 20_000, (n, 2))
    matrix = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1]) / 10.0
    fleet = [_core.Vehicle(k, 0, shift_end=86_400.0, capacity=60) for k in range(args.vehicles)]

    t0 = time.perf_counter()
    planner = _core.RoutePlanner(fleet, matrix)
    print(f"planner over a {n}x{n} matrix built in {(time.perf_counter() - t0) * 1e3:.0f} ms")

    latencies, rejected = [], 0
    for i in range(1, n):
        ready = float(rng.uniform(0, 80_000))
        task = _core.Task(i, i, ready=ready, due=ready + 7_200, service=300.0, demand=1)
        t0 = time.perf_counter()
        try:
            planner.insert(task)
        except _core.InfeasibleError:
            rejected += 1
        latencies.append(time.perf_counter() - t0)
    lat = np.array(latencies) * 1e6
    print(
        f"insert: {len(planner)} planned, {rejected} infeasible; latency p50 {np.percentile(lat, 50):.0f} us, "
        f"p99 {np.percentile(lat, 99):.0f} us, max {lat.max():.0f} us"
    )
    for budget in (1_000, 3_000):
        t0 = time.perf_counter()
        r = planner.reoptimize(time_limit_ms=budget, seed=args.seed)
        print(
            f"reoptimize {budget} ms: cost {r.cost_before:.0f} -> {r.cost_after:.0f} "
            f"({r.iterations} iterations, {(time.perf_counter() - t0) * 1e3:.0f} ms)"
        )

    m = min(1_000, args.tasks) + 1
    tasks = [_core.Task(i, i, due=86_400.0, service=300.0, demand=1) for i in range(1, m)]
    t0 = time.perf_counter()
    sol = _core.solve_routes(fleet, tasks, matrix[:m, :m], time_limit_ms=500, seed=args.seed)
    used = sum(1 for r in sol.routes if r.task_ids)
    print(
        f"batch solve, {m - 1} tasks, 500 ms: cost {sol.cost:.0f}, {used} vehicles, {len(sol.unassigned)} "
        f"unassigned, {sol.iterations} iterations, {(time.perf_counter() - t0) * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
