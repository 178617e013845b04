"""Fault analysis over a period: the work orders created in [start, end), grouped by station, equipment kind,
fault code and engineer (and all together), with

- work_orders: how many; resolved: how many reached RESOLVED (closed ones count);
- MTTR: the mean of (resolved_at - created_at) over the resolved ones, whole seconds (floor);
- MTBF: the period's length times the number of distinct pieces of equipment in the group (station + resource
  or pack), over the group's work orders, whole seconds (floor): operating time per failure;
- SLA compliance: work orders not breached, permille of the group (floor);

and the top recurring faults: the same fault code on the same equipment, two work orders or more, most first."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance.models import WorkOrder

DIMENSIONS: tuple[tuple[str, Callable[[WorkOrder], str]], ...] = (
    ("all", lambda o: ""),
    ("station", lambda o: o.station_id or ""),
    ("equipment_kind", lambda o: o.equipment_kind or ""),
    ("fault_code", lambda o: o.fault_code or ""),
    ("engineer", lambda o: o.engineer_id or ""),
)


@dataclass(frozen=True)
class Figures:
    dimension: str
    key: str
    work_orders: int
    resolved: int
    mttr_s: int
    mtbf_s: int
    sla_compliance_permille: int
    sla_breached: int


@dataclass(frozen=True)
class Recurring:
    fault_code: str
    station_id: str
    equipment_id: str
    work_orders: int


@dataclass(frozen=True)
class Analysis:
    figures: list[Figures]
    top: list[Recurring]


def _equipment(o: WorkOrder) -> tuple[str, str]:
    return o.station_id or "", o.resource_id or o.pack_id or ""


def figures(dimension: str, key: str, orders: list[WorkOrder], period_s: int) -> Figures:
    n = len(orders)
    repairs = [int((o.resolved_at - o.created_at).total_seconds()) for o in orders if o.resolved_at is not None]
    breached = sum(1 for o in orders if o.sla_breached)
    equipment = len({_equipment(o) for o in orders})
    return Figures(
        dimension, key, n, len(repairs), sum(repairs) // len(repairs) if repairs else 0,
        period_s * equipment // n if n else 0, (n - breached) * 1000 // n if n else 1000, breached,
    )  # fmt: skip


async def analyze(
    session: AsyncSession, operator_id: str | None, start: dt.datetime, end: dt.datetime, *, top: int
) -> Analysis:
    query = select(WorkOrder).where(col(WorkOrder.created_at) >= start, col(WorkOrder.created_at) < end)
    if operator_id is not None:
        query = query.where(WorkOrder.operator_id == operator_id)
    orders = list(await session.exec(query))
    period_s = int((end - start).total_seconds())
    out: list[Figures] = []
    for dimension, key_of in DIMENSIONS:
        groups: dict[str, list[WorkOrder]] = defaultdict(list)
        for order in orders:
            groups[key_of(order)].append(order)
        if dimension == "all":
            groups.setdefault("", [])
        out += [figures(dimension, key, groups[key], period_s) for key in sorted(groups)]
    return Analysis(out, recurring(orders, top))


def recurring(orders: list[WorkOrder], top: int) -> list[Recurring]:
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for o in orders:
        if o.fault_code:
            counts[(o.fault_code, *_equipment(o))] += 1
    ranked = sorted(((n, k) for k, n in counts.items() if n >= 2), key=lambda x: (-x[0], x[1]))
    return [Recurring(code, station, equipment, n) for n, (code, station, equipment) in ranked[:top]]


CSV_HEADER = [
    "dimension", "key", "work_orders", "resolved", "mttr_s", "mtbf_s", "sla_compliance_permille", "sla_breached",
]  # fmt: skip


def to_csv(analysis: Analysis) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for f in analysis.figures:
        writer.writerow([f.dimension, f.key, f.work_orders, f.resolved, f.mttr_s, f.mtbf_s,
                         f.sla_compliance_permille, f.sla_breached])  # fmt: skip
    return out.getvalue()
