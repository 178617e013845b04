"""Fault analysis over gRPC against work orders whose figures are computed here by hand: a small month written
out with its numbers, and a generated month (fixed seed) checked against an independent computation."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections import defaultdict
from pathlib import Path

from google.protobuf import timestamp_pb2

from voltcloud.api.v1 import common_pb2
from voltcloud.api.v1 import maintenance_pb2 as m
from voltcloud.maintenance.models import WorkOrder

from .maintenance_support import OP1, OP2, callers, maintenance_platform

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)  # 30 days: 2,592,000 s
H = dt.timedelta(hours=1)


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def wo(n: int, *, day: int, station: str, kind: str, code: str, engineer: str | None, repair: dt.timedelta | None,
       breached: bool, resource: str | None = None, pack: str | None = None, operator: str = OP1,
       month: int = 11) -> WorkOrder:  # fmt: skip
    created = dt.datetime(2026, month, day, tzinfo=dt.UTC)
    return WorkOrder(
        id=f"wo-an-{n:04d}", source=4, level=3, state=5 if repair else 1, title=f"wo {n}", operator_id=operator,
        station_id=station, resource_id=resource, pack_id=pack, equipment_kind=kind, fault_code=code,
        engineer_id=engineer, created_at=created, resolved_at=created + repair if repair else None,
        sla_breached=breached,
    )  # fmt: skip


async def analysis(stub: object, md: object, **kw: object) -> m.GetFaultAnalysisResponse:
    request = m.GetFaultAnalysisRequest(period=common_pb2.TimeWindow(start=ts(START), end=ts(END)), **kw)  # type: ignore[arg-type]
    return await stub.GetFaultAnalysis(request, metadata=md)  # type: ignore[attr-defined, no-any-return]


def table(reply: m.GetFaultAnalysisResponse) -> dict[tuple[str, str], tuple[int, ...]]:
    return {
        (f.dimension, f.key): (f.work_orders, f.resolved, f.mttr_s, f.mtbf_s, f.sla_compliance_permille, f.sla_breached)
        for f in reply.figures
    }


async def test_a_small_month_by_hand(tmp_path: Path, database_url: str) -> None:
    rows = [
        wo(
            1, day=2, station="A", kind="charger", code="E1", engineer="e1", repair=2 * H, breached=False, resource="r1"
        ),
        wo(
            2, day=10, station="A", kind="charger", code="E1", engineer="e1", repair=4 * H, breached=True, resource="r1"
        ),
        wo(3, day=15, station="B", kind="pack", code="E2", engineer="e2", repair=None, breached=True, pack="p1"),
        wo(4, day=20, station="A", kind="station", code="E3", engineer=None, repair=H, breached=False),
        wo(5, day=2, station="A", kind="charger", code="E1", engineer="e1", repair=H, breached=False, month=12),
        wo(6, day=3, station="C", kind="charger", code="E1", engineer="e9", repair=H, breached=False, operator=OP2),
    ]
    async with maintenance_platform(tmp_path, database_url) as (platform, stub):
        async with platform.db.transaction() as session:
            session.add_all(rows)
        reply = await analysis(stub, callers(platform).operator, include_csv=True, top=5)
    got = table(reply)
    # (work orders, resolved, MTTR s, MTBF s, SLA compliance permille, breached), worked out by hand:
    # all: MTTR (7200 + 14400 + 3600) / 3; MTBF 2,592,000 s x 3 pieces of equipment (A/r1, B/p1, A) / 4.
    assert got[("all", "")] == (4, 3, 8400, 1_944_000, 500, 2)
    assert got[("station", "A")] == (3, 3, 8400, 1_728_000, 666, 1)  # 2,592,000 x 2 / 3; 2000 / 3 permille
    assert got[("station", "B")] == (1, 0, 0, 2_592_000, 0, 1)
    assert got[("equipment_kind", "charger")] == (2, 2, 10800, 1_296_000, 500, 1)
    assert got[("fault_code", "E1")] == (2, 2, 10800, 1_296_000, 500, 1)
    assert got[("engineer", "e1")] == (2, 2, 10800, 1_296_000, 500, 1)
    assert got[("engineer", "")] == (1, 1, 3600, 2_592_000, 1000, 0)
    assert ("station", "C") not in got  # another operator's
    assert [(t.fault_code, t.station_id, t.equipment_id, t.work_orders) for t in reply.top_faults] == [
        ("E1", "A", "r1", 2)
    ]
    lines = list(csv.reader(io.StringIO(reply.csv)))
    assert lines[0][:3] == ["dimension", "key", "work_orders"] and len(lines) == len(reply.figures) + 1
    assert lines[1] == ["all", "", "4", "3", "8400", "1944000", "500", "2"]


async def test_a_generated_month(tmp_path: Path, database_url: str) -> None:
    rnd = random.Random(14)
    rows = []
    for n in range(300):
        repair = rnd.choice([None, None, *(dt.timedelta(minutes=rnd.randint(5, 2000)) for _ in range(6))])
        rows.append(
            wo(
                n,
                day=rnd.randint(1, 30),
                station=f"st-{rnd.randint(1, 6)}",
                kind=rnd.choice(["charger", "pack", "lane"]),
                code=f"E{rnd.randint(1, 8)}",
                engineer=rnd.choice([None, "e1", "e2", "e3"]),
                repair=repair,
                breached=rnd.random() < 0.3,
                resource=f"r{rnd.randint(1, 4)}",
            )
        )
    async with maintenance_platform(tmp_path, database_url) as (platform, stub):
        async with platform.db.transaction() as session:
            session.add_all(rows)
        reply = await analysis(stub, callers(platform).admin, operator_id=OP1, top=3)
    got = table(reply)
    period = 30 * 24 * 3600
    keys = {"all": lambda r: "", "station": lambda r: r.station_id, "equipment_kind": lambda r: r.equipment_kind,
            "fault_code": lambda r: r.fault_code, "engineer": lambda r: r.engineer_id or ""}  # fmt: skip
    for dimension, key_of in keys.items():
        groups: dict[str, list[WorkOrder]] = defaultdict(list)
        for r in rows:
            groups[key_of(r)].append(r)
        for key, members in groups.items():
            fixes = [(r.resolved_at - r.created_at).total_seconds() for r in members if r.resolved_at]
            bad = len([r for r in members if r.sla_breached])
            pieces = len({(r.station_id, r.resource_id) for r in members})
            expect = (len(members), len(fixes), int(sum(fixes)) // len(fixes) if fixes else 0,
                      period * pieces // len(members), (len(members) - bad) * 1000 // len(members), bad)  # fmt: skip
            assert got[(dimension, key)] == expect, (dimension, key)
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in rows:
        counts[(r.fault_code or "", r.station_id or "", r.resource_id or "")] += 1
    best = max(counts.values())
    assert reply.top_faults[0].work_orders == best and len(reply.top_faults) == 3
