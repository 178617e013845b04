"""Engineer dispatch (issue 14, maint-field): the time of PlanDispatch (travel matrix + route solver + offers,
one transaction) for a batch of open work orders among many engineers, and of AssignWorkOrder picking the
nearest qualified engineer for one, over real gRPC against an in-process platform with the demo city.

    python bench/bench_engineer_dispatch.py --engineers 200 --work-orders 60 --rounds 5
    python bench/bench_engineer_dispatch.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/vc_bench_eng

The database must be empty (migrated and seeded here). Prints the median and max in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from sqlmodel import col, select

from voltcloud.api.v1 import common_pb2, maintenance_pb2, maintenance_pb2_grpc
from voltcloud.config import Settings
from voltcloud.maintenance import workorders
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.stations.models import Station

OPERATOR = "op-0001"


async def _work_orders(platform: Platform, stations: list[Station], n: int, tag: str) -> list[str]:
    ids = []
    async with platform.db.transaction() as session:
        for i in range(n):
            new = workorders.NewWorkOrder(
                source=4, level=3, title=f"bench {tag} {i}", operator_id=OPERATOR,
                station_id=stations[i % len(stations)].id, required_skills=("hv",),
            )  # fmt: skip
            order = await workorders.open_work_order(
                session, new, now=dt.datetime.now(dt.UTC), actor_id="bench", actor_role="bench"
            )
            ids.append(order.id)
    return ids


async def run(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="vc-bench-eng-"))
    url = args.database_url or f"sqlite+aiosqlite:///{data / 'bench.db'}"
    settings = Settings(listen="127.0.0.1:0", data_dir=data, database_url=url, seed_demo=True,  # type: ignore[call-arg]
                        jwt_key="bench-engineer-dispatch-key-0123456789", maintenance_field_sweep_s=0)  # fmt: skip
    platform = Platform(settings)
    await platform.start()
    try:
        md = (
            ("authorization", "Bearer " + platform.tokens.mint("bench", Role.OPERATOR, Tenant("operator", OPERATOR))),
        )
        async with platform.db.transaction() as session:
            stations = list(
                await session.exec(select(Station).where(Station.operator_id == OPERATOR).order_by(col(Station.id)))
            )
        rng = random.Random(7)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.port}") as channel:
            api = maintenance_pb2_grpc.MaintenanceServiceStub(channel)
            for i in range(args.engineers):
                s = rng.choice(stations)
                home = common_pb2.LatLng(lat=s.lat + rng.uniform(-0.03, 0.03), lng=s.lng + rng.uniform(-0.03, 0.03))
                engineer = maintenance_pb2.Engineer(
                    name=f"eng {i}", skills=["hv"], operator_id=OPERATOR, home_position=home
                )
                await api.RegisterEngineer(maintenance_pb2.RegisterEngineerRequest(engineer=engineer), metadata=md)
            plan_ms, assign_ms = [], []
            for r in range(args.rounds):
                ids = await _work_orders(platform, stations, args.work_orders, f"p{r}")
                started = time.perf_counter()
                reply = await api.PlanDispatch(
                    maintenance_pb2.PlanDispatchRequest(operator_id=OPERATOR, work_order_ids=ids), metadata=md
                )
                plan_ms.append((time.perf_counter() - started) * 1000)
                print(f"round {r}: {len(reply.assignments)} assigned, {len(reply.unassigned_work_order_ids)} not, "
                      f"total travel {reply.total_travel_s} s")  # fmt: skip
                await _release(platform, ids)
                for wid in await _work_orders(platform, stations, 5, f"a{r}"):
                    started = time.perf_counter()
                    await api.AssignWorkOrder(maintenance_pb2.AssignWorkOrderRequest(work_order_id=wid), metadata=md)
                    assign_ms.append((time.perf_counter() - started) * 1000)
        print(f"{args.engineers} engineers, {args.work_orders} work orders per plan, {platform.db.dialect}")
        for name, ms in (("PlanDispatch", plan_ms), ("AssignWorkOrder", assign_ms)):
            print(f"{name:16} median {statistics.median(ms):7.1f} ms  max {max(ms):7.1f} ms  (n={len(ms)})")
    finally:
        await platform.stop(grace=0)


async def _release(platform: Platform, ids: list[str]) -> None:
    """Cancels a round's work orders so its engineers are free for the next round."""
    async with platform.db.transaction() as session:
        for wid in ids:
            await workorders.transition(
                session, wid, to_state=6, actor_id="bench", actor_role="bench", now=dt.datetime.now(dt.UTC)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engineers", type=int, default=200)
    parser.add_argument("--work-orders", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", default="")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
