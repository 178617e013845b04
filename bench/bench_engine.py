"""Engine benchmark: ResourceIndex bulk load, power-up option queries, online updates, battery matching and
the 96-slot station charging schedule, on the shared deterministic country world (`voltcloud.world`).

    python bench/bench_engine.py [--seed 0] [--queries 2000] [--repeats 3] [--json out.json]

Every figure is measured through the real extension from Python (so it includes the call overhead);
the world generation itself is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np

from voltcloud import _core
from voltcloud.world import PACK_CAPACITY_WH, World, demand_factor, generate_world

UTC_OFFSET_S = 8 * 3600
DAY0_UTC = 1_795_219_200  # 2026-11-21 00:00 UTC
ALL_MODES = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)


def now_for(world: World) -> int:
    """The world's local "now" (spec.local_time_s, Shanghai time) as unix seconds."""
    return DAY0_UTC + world.spec.local_time_s - UTC_OFFSET_S


def load(world: World) -> tuple[_core.ResourceIndex, dict[str, float]]:
    st, pk, cn, un = world.stations, world.packs, world.connectors, world.units
    day_start = DAY0_UTC - UTC_OFFSET_S
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    idx = _core.ResourceIndex(cell_size_m=2000.0)
    idx.load_stations(st.handle, st.kind, st.operator_idx, st.lat, st.lng, st.lanes, st.swap_time_s)
    idx.set_queues(np.arange(len(st), dtype=np.uint32), st.queue)
    t["stations"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    idx.load_packs(pk.station_idx, pk.pack_type, pk.soc_permille, pk.soh_permille, pk.cycles, pk.state)
    t["packs"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    idx.load_connectors(cn.station_idx, cn.standard, cn.max_power_w, cn.status)
    t["connectors"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    idx.load_mobile(
        un.handle,
        un.kind,
        un.operator_idx,
        un.lat,
        un.lng,
        un.status,
        energy_wh=un.energy_wh,
        power_w=un.max_power_w,
        connector_mask=un.connector_mask,
        skills=un.skills,
        shift_start=day_start + un.shift_start_s.astype(np.int64),
        shift_end=day_start + un.shift_end_s.astype(np.int64),
    )
    t["units"] = time.perf_counter() - t1
    t["total"] = time.perf_counter() - t0
    return idx, t


def travel_model(world: World) -> _core.TravelModel:
    tm = _core.TravelModel(cell_size_m=1000.0, detour_factor=1.3, utc_offset_s=UTC_OFFSET_S)
    for c in range(4):
        tm.set_speed_profile(c, world.road_classes.speed_kmh[c].astype(np.float64))
    return tm


def bench_queries(world: World, opts: _core.Options, n: int, rng: np.random.Generator) -> dict[str, Any]:
    v = world.vehicles
    now = now_for(world)
    picks = rng.integers(0, len(v), n + 200)
    n_ops = len(world.operators)
    lat = v.lat[picks] + rng.normal(0, 0.005, len(picks))
    lng = v.lng[picks] + rng.normal(0, 0.005, len(picks))
    lat_ns: list[int] = []
    modes_seen = {m: 0 for m in (1, 2, 3, 4)}
    n_options = 0
    for q, i in enumerate(picks):
        ops = None
        if q % 4 == 3:
            ops = sorted({int(x) for x in rng.integers(0, n_ops, 4)})
        t0 = time.perf_counter_ns()
        out = opts.query(
            float(lat[q]),
            float(lng[q]),
            int(v.soc_permille[i]),
            float(v.usable_capacity_wh[i]),
            float(v.consumption_wh_per_km[i]),
            int(v.pack_type[i]),
            int(v.connector_mask[i]),
            900,
            ALL_MODES,
            now + 4 * 3600,
            now,
            operators=ops,
            max_charge_power_w=float(max(int(v.max_dc_power_w[i]), 11_000)),
        )
        dt = time.perf_counter_ns() - t0
        if q >= 200:  # warm-up
            lat_ns.append(dt)
            n_options += len(out)
            for m in {o.mode for o in out}:
                modes_seen[m] += 1
    arr = np.array(lat_ns) / 1000.0
    return {
        "queries": len(lat_ns),
        "p50_us": float(np.percentile(arr, 50)),
        "p90_us": float(np.percentile(arr, 90)),
        "p99_us": float(np.percentile(arr, 99)),
        "max_us": float(arr.max()),
        "mean_options": n_options / len(lat_ns),
        "share_with_mode": {str(m): c / len(lat_ns) for m, c in modes_seen.items()},
    }


def bench_updates(world: World, idx: _core.ResourceIndex, n: int, rng: np.random.Generator) -> dict[str, float]:
    n_cn, n_pk, n_un, n_st = len(world.connectors), len(world.packs), len(world.units), len(world.stations)
    cn = rng.integers(0, n_cn, n)
    pk = rng.integers(0, n_pk, n)
    un = rng.integers(0, n_un, n)
    st = rng.integers(0, n_st, n)
    dlat = rng.normal(0, 0.003, n)
    ulat, ulng = world.units.lat, world.units.lng
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    for k in range(n):
        idx.set_connector_status(int(cn[k]), 1 + (k & 1))
    out["set_connector_status_per_s"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(n):
        idx.set_pack(int(pk[k]), 900, 950, 2 + (k & 1))
    out["set_pack_per_s"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(n):
        u = int(un[k])
        idx.move_unit(u, float(ulat[u] + dlat[k]), float(ulng[u] - dlat[k]))
    out["move_unit_per_s"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(n):
        idx.set_queue(int(st[k]), k & 3)
    out["set_queue_per_s"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    done = 0
    for k in range(n):
        c = int(cn[k])
        try:
            ver = idx.reserve_connector(c)
            idx.release_connector(c, ver)
            done += 2
        except _core.ConflictError:
            done += 1
    out["reserve_release_per_s"] = done / (time.perf_counter() - t0)
    return out


def bench_matching(world: World, rng: np.random.Generator, runs: int) -> dict[str, float]:
    pk = world.packs
    counts = np.bincount(pk.station_idx[pk.station_idx >= 0])
    station = int(np.argmax(counts >= 20))
    rows = np.flatnonzero(pk.station_idx == station)[:20]
    times = []
    served = 0
    for _ in range(runs):
        vt = rng.choice(pk.pack_type[rows], 10)
        t0 = time.perf_counter_ns()
        m = _core.match_packs(
            pk.handle[rows],
            pk.pack_type[rows],
            pk.soc_permille[rows],
            pk.soh_permille[rows],
            pk.cycles[rows],
            pk.state[rows],
            vt,
            rng.integers(700, 951, 10),
            rng.uniform(5, 400, 10),
        )
        times.append(time.perf_counter_ns() - t0)
        served += int((m.vehicle_pack >= 0).sum())
    arr = np.array(times) / 1000.0
    return {"p50_us": float(np.median(arr)), "p99_us": float(np.percentile(arr, 99)), "served_per_run": served / runs}


def bench_schedule(world: World, rng: np.random.Generator, runs: int) -> dict[str, float]:
    n = 40
    slots_h = np.arange(96) / 4.0
    prices = np.where(
        slots_h < 7,
        300_000,
        np.where(((slots_h >= 10) & (slots_h < 12)) | ((slots_h >= 18) & (slots_h < 21)), 1_200_000, 700_000),
    ).astype(np.int64)
    # Forecast swaps; each brings back a depleted pack (20 %) that is recharged for later demand.
    demand = np.array([round(3 * demand_factor(int(t * 900))) for t in range(96)], dtype=np.uint32)
    cap = int(world.stations.power_cap_w[world.stations.kind == 1][0])
    times = []
    unmet = 0
    for _ in range(runs):
        pt = rng.integers(1, 4, n)
        ready_by = np.full(n, -1, dtype=np.int32)
        ready_by[:2] = [30, 60]
        t0 = time.perf_counter_ns()
        plan = _core.schedule_charging(
            rng.integers(100, 1001, n).astype(np.uint16),
            np.array([PACK_CAPACITY_WH[int(p)] for p in pt], dtype=np.uint32),
            np.full(n, 950, dtype=np.uint16),
            ready_by,
            float(cap),
            60_000.0,
            prices,
            demand,
            returned_soc_permille=200,
        )
        times.append(time.perf_counter_ns() - t0)
        unmet += plan.total_unmet
        assert (plan.slot_power_w <= cap).all()
    arr = np.array(times) / 1000.0
    return {
        "p50_us": float(np.median(arr)),
        "p99_us": float(np.percentile(arr, 99)),
        "packs": n,
        "demand_per_day": int(demand.sum()),
        "power_cap_w": cap,
        "unmet_per_run": unmet / runs,
        "returned_soc_permille": 200,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    world = generate_world("country", seed=args.seed)
    gen_s = time.perf_counter() - t0
    print(
        f"world: {world.resource_count():,} resources ({len(world.stations):,} stations, {len(world.packs):,} packs, "
        f"{len(world.connectors):,} connectors, {len(world.units):,} units, {len(world.cities)} cities); "
        f"generated in {gen_s:.2f} s (not timed)"
    )

    loads = []
    idx = None
    for _ in range(args.repeats):
        idx, t = load(world)
        loads.append(t)
    assert idx is not None
    load_med = {k: statistics.median(x[k] for x in loads) for k in loads[0]}
    print(f"bulk load (median of {args.repeats}): " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in load_med.items()))
    assert sum(idx.counts()) == world.resource_count()

    opts = _core.Options(idx, travel_model(world))
    rng = np.random.default_rng(args.seed)
    runs = [bench_queries(world, opts, args.queries, rng) for _ in range(args.repeats)]
    q = {k: statistics.median(r[k] for r in runs) for k in ("p50_us", "p90_us", "p99_us", "max_us", "mean_options")}
    q["share_with_mode"] = runs[0]["share_with_mode"]
    q["queries_per_run"] = runs[0]["queries"]
    shares = "/".join(f"{v:.2f}" for v in runs[0]["share_with_mode"].values())
    print(
        f"options query (median of {args.repeats} runs of {runs[0]['queries']}): p50 {q['p50_us']:.0f} us, "
        f"p90 {q['p90_us']:.0f} us, p99 {q['p99_us']:.0f} us, max {q['max_us']:.0f} us; "
        f"{q['mean_options']:.1f} options per query; share with SWAP/CHARGE/VALET/VAN: {shares}"
    )

    upd_runs = [bench_updates(world, idx, args.updates, rng) for _ in range(args.repeats)]
    upd = {k: statistics.median(r[k] for r in upd_runs) for k in upd_runs[0]}
    print("updates per second (median): " + ", ".join(f"{k} {v:,.0f}" for k, v in upd.items()))

    match = bench_matching(world, rng, 2000)
    print(
        f"battery matching 20 packs x 10 vehicles: p50 {match['p50_us']:.1f} us, p99 {match['p99_us']:.1f} us "
        f"({match['served_per_run']:.1f} served per run)"
    )
    sched = bench_schedule(world, rng, 500)
    print(
        f"charging schedule 40 packs x 96 slots: p50 {sched['p50_us']:.1f} us, p99 {sched['p99_us']:.1f} us "
        f"(demand {sched['demand_per_day']} packs/day, cap {sched['power_cap_w']} W, "
        f"unmet {sched['unmet_per_run']:.2f} per run)"
    )

    result = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "seed": args.seed,
        "resources": world.resource_count(),
        "load_s": load_med,
        "query": q,
        "updates_per_s": upd,
        "matching": match,
        "schedule": sched,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
