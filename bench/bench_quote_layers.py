"""Per-layer cost of one QuotePowerUp: the database path (before) against the in-memory path (after).

An in-process platform (real gRPC server on an ephemeral port, embedded SQLite in a temporary directory, the
demo city seeded; or a country world seeded beforehand with `voltcloud seed --scale country`, passed with
--db). The caller is a driver ordering for the private car it owns. Each of `--n` rounds picks a position
(a random station's, jittered by up to 2 km) and times, for the old and the new path alternately (so drift of
the shared machine hits both alike), every layer of one quote in isolation, then the whole domain call and
the whole gRPC call:

  auth         TokenService.authenticate of the bearer token (the same for both paths)
  customer     vehicle + permission + preferences: a read transaction (old) / the profile cache (new)
  engine       nearest-resource check + engine options query (the same for both paths)
  pricing      one database round trip per option in a transaction (old) / the price book in one pass (new)
  ranking      personal re-ranking and the option list (the same for both paths)
  persistence  the quote row inserted and committed (old) / handed to the batch writer (new); the writer's
               own cost per quote (one batch insert over the quotes pending) is reported beside it
  domain       quoting.quote_power_up as a whole
  grpc         QuotePowerUp over a real channel: interceptor (auth, permission, limits), servicer, domain

Medians (and p90) in microseconds. The engine's periodic sync is switched off so that it does not land in
one path's samples more than the other's.

`--profile FILE...` instead splits a worker's CPU under real load into the same layers and those around them,
from py-spy samples (`bench_load.py --profile DIR` writes them: native frames, 200 Hz, one file per worker and
run). Each sample of a busy thread goes to the deepest frame that names a layer (PROFILE_LAYERS, first match
per frame); waiting threads (epoll, futex, queue and lock waits) are left out. With `--cpu-ms-per-call` (the
`server_cpu_ms_per_call` of the same bench_load run, measured from /proc without py-spy) each share is also
given in µs per call.

    python bench/bench_quote_layers.py                         # demo city, 300 rounds
    voltcloud seed --scale country  (with VOLTCLOUD_DATABASE_URL=sqlite+aiosqlite:////tmp/country.db)
    python bench/bench_quote_layers.py --db /tmp/country.db --scale country --n 300
    python bench/bench_load.py --db sqlite --rpc quote --quote-rates 250 --seconds 20 --workers 2 \
        --idle-seconds 0 --label prof --profile /tmp/prof
    python bench/bench_quote_layers.py --profile /tmp/prof/prof-sqlite-quote-250-*.txt --cpu-ms-per-call 2.7
    PYTHONPATH=<checkout>/python python bench/bench_quote_layers.py --db /tmp/country.db --misses 1500
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import sqlalchemy as sa
from sqlmodel import col, select

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.config import Settings
from voltcloud.fleet.models import Vehicle
from voltcloud.ordering import payments, quoting
from voltcloud.ordering.quote_store import PendingQuote
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.ids import new_id
from voltcloud.server import Platform

JWT_KEY = "quote-layers-bench-key-0123456789abcdef0123456789"
DRIVER = "drv-bench"
LAYERS = ("auth", "customer", "engine", "pricing", "ranking", "persistence", "domain", "grpc")
T = TypeVar("T")


async def timed(samples: list[float], call: Callable[[], Awaitable[T]]) -> T:
    started = time.perf_counter()
    result = await call()
    samples.append((time.perf_counter() - started) * 1e6)
    return result


def timed_sync(samples: list[float], call: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = call()
    samples.append((time.perf_counter() - started) * 1e6)
    return result


async def own_a_car(p: Platform) -> Vehicle:
    async with p.db.transaction() as s:
        car = (
            await s.exec(
                select(Vehicle)
                .where(col(Vehicle.fleet_id).is_(None), col(Vehicle.pack_type_id).is_not(None))
                .order_by(col(Vehicle.id))
                .limit(1)
            )
        ).one()
        await s.exec(sa.update(Vehicle).where(col(Vehicle.id) == car.id).values(owner_driver_id=DRIVER))
        car.owner_driver_id = DRIVER
    return car


def positions(p: Platform, n: int, rng: random.Random) -> list[tuple[float, float]]:
    stations = list(p.powerup.engine._maps.station_by_id.values())
    out = []
    for _ in range(n):
        s = rng.choice(stations)
        out.append((s.lat + rng.uniform(-0.018, 0.018), s.lng + rng.uniform(-0.018, 0.018)))
    return out


async def one_round(
    p: Platform,
    principal: Principal,
    bearer: str,
    inp: quoting.QuoteInput,
    path: quoting.QuotePath | None,
    samples: dict[str, list[float]],
) -> None:
    uow, settings, now = p.powerup.uow, p.settings, dt.datetime.now(dt.UTC)
    timed_sync(samples["auth"], lambda: p.tokens.authenticate(bearer))
    vehicle, prefs = await timed(samples["customer"], lambda: quoting.customer(uow, principal, inp, path))
    options = timed_sync(samples["engine"], lambda: quoting.engine_options(uow.engine, settings, inp, vehicle, now))
    located = [(o, o.station_id or quoting._pricing_station(uow.engine, o)) for o in options]
    located2 = [(o, s) for o, s in located if s is not None]
    requests = [
        payments.PriceRequest(s, now + dt.timedelta(seconds=o.eta_s + o.wait_s), o.energy_wh, o.service_s)
        for o, s in located2
    ]

    async def price() -> list[payments.Price]:
        if path is not None:
            return await quoting.price_in_memory(uow, path, "driver", principal.subject, requests)
        async with uow.db.transaction("bench.price") as session:
            return await payments.estimate_all(session, "driver", principal.subject, requests)

    prices = await timed(samples["pricing"], price)
    ranked = timed_sync(samples["ranking"], lambda: quoting.rank_options(inp, now, prefs, located2, prices))
    quote = PendingQuote(
        id=new_id("qt"), requested_by=principal.subject, vehicle_id=vehicle.id, fleet_id=None, lat=inp.lat,
        lng=inp.lng, soc_permille=inp.soc_permille, target_soc_permille=inp.target_soc_permille, created_at=now,
        expires_at=now + dt.timedelta(seconds=120), options_json=quoting.options_json(ranked),
    )  # fmt: skip

    async def persist() -> None:
        if path is not None:
            path.store.add(quote)
            return
        async with uow.db.transaction("bench.persist") as session:
            session.add(quote.model())

    await timed(samples["persistence"], persist)
    await timed(samples["domain"], lambda: quoting.quote_power_up(uow, p.powerup.clock, settings, principal, inp, path))


async def grpc_round(
    p: Platform, stub: Any, md: Any, inp: quoting.QuoteInput, path: quoting.QuotePath | None, out: list[float]
) -> None:
    p.powerup.deps.quote_path = path  # the servicer quotes through whichever path the deps name
    request = ordering_pb2.QuotePowerUpRequest(
        vehicle_id=inp.vehicle_id,
        position=common_pb2.LatLng(lat=inp.lat, lng=inp.lng),
        soc_permille=inp.soc_permille,
        target_soc_permille=inp.target_soc_permille,
    )
    await timed(out, lambda: stub.QuotePowerUp(request, metadata=md, timeout=10))


async def full_batch_us_per_quote(p: Platform, principal: Principal, car: Vehicle, size: int = 250) -> float:
    """The batch writer's cost per quote when a flush holds `size` quotes (as under load), median of 5."""
    store, now, runs = p.powerup.quote_path.store, dt.datetime.now(dt.UTC), []
    for _ in range(5):
        for _ in range(size):
            store.add(
                PendingQuote(
                    id=new_id("qt"), requested_by=principal.subject, vehicle_id=car.id, fleet_id=None, lat=31.2,
                    lng=121.5, soc_permille=200, target_soc_permille=900, created_at=now,
                    expires_at=now + dt.timedelta(seconds=120), options_json="[" + "{}," * 5 + "{}]",
                )
            )  # fmt: skip
        started = time.perf_counter()
        await store.flush()
        runs.append((time.perf_counter() - started) * 1e6 / size)
    return statistics.median(runs)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 1),
        "p90_us": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
        "n": len(ordered),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="quote-layers-"))
    db_file = tmp / "voltcloud.db"
    if args.db:
        shutil.copy(args.db, db_file)
    settings = Settings(
        listen="127.0.0.1:0", data_dir=tmp / "data", database_url=f"sqlite+aiosqlite:///{db_file}",
        jwt_key=JWT_KEY, seed_demo=not args.db, reoptimize_interval_s=0, engine_reconcile_interval_s=0,
    )  # fmt: skip
    p = Platform(settings)
    started = time.perf_counter()
    await p.start()
    ready_s = time.perf_counter() - started
    try:
        return await measure(p, args, ready_s)
    finally:
        await p.stop(grace=0)
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(p: Platform, args: argparse.Namespace, ready_s: float) -> dict[str, Any]:
    car = await own_a_car(p)
    principal = Principal(DRIVER, Role.DRIVER, None)
    token = p.tokens.mint(DRIVER, Role.DRIVER, None)
    bearer, md = f"Bearer {token}", (("authorization", f"Bearer {token}"),)
    path = p.powerup.quote_path
    assert path is not None
    rng = random.Random(args.seed)
    spots = positions(p, args.n + args.warmup, rng)
    samples: dict[str, dict[str, list[float]]] = {"before": defaultdict(list), "after": defaultdict(list)}
    flushes: list[tuple[int, float]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") as channel:
        stub = ordering_pb2_grpc.OrderingServiceStub(channel)
        for i, (lat, lng) in enumerate(spots):
            inp = quoting.QuoteInput(car.id, lat, lng, rng.randrange(100, 400), 900)
            keep = i >= args.warmup
            for name, which in (("before", None), ("after", path)) if i % 2 else (("after", path), ("before", None)):
                bucket = samples[name] if keep else defaultdict(list)
                await one_round(p, principal, bearer, inp, which, bucket)
                await grpc_round(p, stub, md, inp, which, bucket["grpc"])
            pending = path.store.backlog
            if pending:
                started = time.perf_counter()
                await path.store.flush()
                if keep:
                    flushes.append((pending, (time.perf_counter() - started) * 1e6))
    p.powerup.deps.quote_path = path
    per_quote_flush = statistics.median(us / n for n, us in flushes) if flushes else 0.0
    full_batch = await full_batch_us_per_quote(p, principal, car)
    layers = {name: {layer: summary(s[layer]) for layer in LAYERS} for name, s in samples.items()}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "scale": args.scale,
        "rounds": args.n,
        "ready_s": round(ready_s, 2),
        "layers": layers,
        "batch_writer_us_per_quote": round(per_quote_flush, 1),
        "batch_writer_full_batch_us_per_quote": round(full_batch, 1),
        "book_stations": len(path.book._stations),
    }


def report(result: dict[str, Any]) -> None:
    print(f"# quote path per layer, {result['scale']} world, {result['rounds']} rounds, {result['date']}")
    print(f"# {result['machine']}; platform ready in {result['ready_s']} s")
    print(f"{'layer':12s} {'before µs':>12s} {'after µs':>12s} {'ratio':>7s}   (median; p90 before / after)")
    for layer in LAYERS:
        b, a = result["layers"]["before"][layer], result["layers"]["after"][layer]
        ratio = b["median_us"] / a["median_us"] if a["median_us"] else float("inf")
        print(
            f"{layer:12s} {b['median_us']:12.1f} {a['median_us']:12.1f} {ratio:7.1f}   "
            f"({b['p90_us']:.0f} / {a['p90_us']:.0f})"
        )
    print(
        f"batch writer, per quote: {result['batch_writer_us_per_quote']} µs (flushes of 2-3 quotes, as in this "
        f"sequential run); {result['batch_writer_full_batch_us_per_quote']} µs (flushes of 250 quotes)"
    )


# (layer, substrings of a py-spy frame "function (file:line)"); the deepest matching frame of a sample decides.
PROFILE_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("(logging/",)),
    ("tracing (OpenTelemetry spans, context)", ("(opentelemetry/", "(trace/", "(context/",
                                                "voltcloud/platform/tracing.py")),
    ("database (profile cache misses, reads)", ("(sqlalchemy/", "(aiosqlite/", "(asyncpg/", "greenlet", "(sqlmodel/")),
    ("domain: customer (vehicle, permission, preferences)", ("voltcloud/ordering/profiles.py", "cached_vehicle_for",
                                                             "customer (voltcloud/ordering/quoting.py")),
    ("domain: engine (nearest + options)", ("_core::", "voltcloud/ordering/quoting.py:29", "voltcloud/powerup/engine",
                                             "engine_options", "_pricing_station", "voltcloud/engine")),
    ("domain: pricing", ("voltcloud/ordering/payments.py", "price_in_memory", "voltcloud/settlement/",
                         "voltcloud/pricing", "tariff")),
    ("domain: ranking", ("voltcloud/ordering/ranking.py", "rank_options")),
    ("domain: quote record (options JSON, batch writer)", ("voltcloud/ordering/quote_store.py", "options_json",
                                                          "encoder_", "(json/")),
    ("domain: other (validation, ids, clock)", ("voltcloud/ordering/quoting.py", "voltcloud/platform/ids.py",
                                                "voltcloud/platform/clock.py")),
    ("servicer: request in, response built", ("voltcloud/ordering/service.py", "voltcloud/ordering/convert.py",
                                              "voltcloud/platform/convert", "voltcloud/api/")),
    ("interceptor: auth", ("voltcloud/platform/auth.py", "_authorize", "(jwt/")),
    ("interceptor: request decode + limits", ("_decode", "voltcloud/platform/limits.py")),
    ("interceptor: admission", ("_Gate.", "Admission.")),
    ("interceptor: other (wrapper, errors, deadline)", ("voltcloud/platform/rpc.py",)),
    ("gRPC (cygrpc, core, HTTP/2, serialisation)", ("grpc", "(google/protobuf")),
]  # fmt: skip
IDLE_FRAMES = ("epoll_wait", "PyThread_acquire_lock_timed", "pthread_cond_", "sem_wait", "Condition.wait",
               "_queue_SimpleQueue_get", "select_epoll_poll", "poll (libc", "nanosleep", "recv (libc")  # fmt: skip


def profile_layers(files: list[str], cpu_ms_per_call: float | None) -> dict[str, Any]:
    """Busy samples of the event-loop thread by layer, and of the other threads by what they are."""
    loop: dict[str, int] = defaultdict(int)
    threads: dict[str, int] = defaultdict(int)
    for name in files:
        for line in Path(name).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if any(idle in frame for frame in frames[-4:] for idle in IDLE_FRAMES):
                continue
            if not any("Runner.run" in frame for frame in frames):
                thread = next((f for f in frames if "aiosqlite" in f or "grpc" in f or "Thread.run" in f), "other")
                threads[thread.split(" (")[0] if "(" in thread else thread] += int(count)
                continue
            layer = "event loop (asyncio)"
            for frame in reversed(frames):
                found = next((lay for lay, marks in PROFILE_LAYERS if any(m in frame for m in marks)), None)
                if found:
                    layer = found
                    break
            loop[layer] += int(count)
    total = sum(loop.values())
    rows = {
        layer: {"samples": n, "share": round(n / total, 3),
                **({"us_per_call": round(1000 * cpu_ms_per_call * n / (total + sum(threads.values())), 1)}
                   if cpu_ms_per_call else {})}
        for layer, n in sorted(loop.items(), key=lambda item: -item[1])
    }  # fmt: skip
    return {"files": files, "loop_samples": total, "layers": rows, "other_threads": dict(threads)}


async def miss_costs(db_file: str, rounds: int, together: int) -> dict[str, Any]:
    """CPU (process time) per profile-cache miss of a vehicle: each alone, then `together` at a time (the misses
    of concurrent quotes). Runs with whichever checkout's `voltcloud` is on PYTHONPATH (before/after pairs)."""
    from voltcloud.ordering.profiles import Profiles
    from voltcloud.platform.db import Database

    db = Database(f"sqlite+aiosqlite:///{db_file}")
    async with db.transaction() as session:
        ids = list(await session.exec(select(Vehicle.id).limit(200 + 2 * rounds)))
    profiles = Profiles(db)
    for vehicle_id in ids[:200]:  # warm: connections, statement caches
        await profiles.vehicle(vehicle_id)
    alone, grouped = ids[200 : 200 + rounds], ids[200 + rounds :]
    started = time.process_time()
    for vehicle_id in alone:
        await profiles.vehicle(vehicle_id)
    alone_us = (time.process_time() - started) / len(alone) * 1e6
    started = time.process_time()
    for first in range(0, len(grouped), together):
        await asyncio.gather(*(profiles.vehicle(v) for v in grouped[first : first + together]))
    grouped_us = (time.process_time() - started) / len(grouped) * 1e6
    await db.dispose()
    return {"alone_us_per_miss": round(alone_us, 1), f"{together}_together_us_per_miss": round(grouped_us, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="demo", help="label of the world (seeded demo unless --db is given)")
    parser.add_argument("--db", help="a seeded SQLite file to copy and serve (e.g. the country world)")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--profile", nargs="+", help="py-spy raw files of workers under load: layers of their CPU")
    parser.add_argument("--cpu-ms-per-call", type=float, help="server CPU per call of that run (bench_load.py)")
    parser.add_argument("--misses", type=int, help="only the CPU per profile-cache miss (needs --db), this many")
    args = parser.parse_args()
    if args.misses:
        result = asyncio.run(miss_costs(args.db, args.misses, together=50))
        print(result)
    elif args.profile:
        result = profile_layers(args.profile, args.cpu_ms_per_call)
        print(f"# event-loop thread, {result['loop_samples']} busy samples; other threads: {result['other_threads']}")
        for layer, row in result["layers"].items():
            print(f"{layer:55s} {row['share']:6.1%} {row.get('us_per_call', ''):>8}")
    else:
        result = asyncio.run(run(args))
        report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
