"""Risk rules (issue 14): PREVENTIVE work orders opened before a fault, not after it.

Two rules, each with at most one open preventive work order per equipment (the order's `fault_code` names the
rule, so a later trigger joins the open one instead of writing a twin):

- RISK_RECURRING: the same fault code on the same equipment raised `recurrence_count` times within
  `recurrence_window`, even when every one of those alarms cleared itself (a fault that keeps coming back is
  about to stay). Evaluated in `alarms.raise_alarm` for every new alarm row (a repeat of an open alarm is the same
  occurrence, not a recurrence), whichever room raised it, directly or from the feed; not when the alarm joined
  or opened a work order for the fault (that work is already under way).
- RISK_SOH_RETIREMENT: a pack whose fitted SOH line (`battery.predict_month`, the model battery health shows)
  crosses its operator's retirement threshold within `soh_months` months. Evaluated by the maintenance field
  sweep (`EngineerHub.sweep_once`) for the packs with new SOH samples since the sweep's last pass; no loop of
  its own.

A missing or lapsing certificate is not a risk rule: certificates are reminded (`reminders`), not repaired.
The thresholds come from the settings through `configure` (composition root); a count or a month span of 0
turns that rule off."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import battery, workorders
from voltcloud.maintenance.models import Alarm, WorkOrder
from voltcloud.maintenance.ports import PackFacts, Stations
from voltcloud.maintenance.states import ACTIVE_STATES
from voltcloud.platform.db import dialect
from voltcloud.platform.enums import AlarmLevel, PackState, WorkOrderSource

WORK_ORDER_SOURCE_PREVENTIVE = int(WorkOrderSource.PREVENTIVE)
RECURRING, SOH_RETIREMENT = "RISK_RECURRING", "RISK_SOH_RETIREMENT"
LEVEL = int(AlarmLevel.WARNING)  # nothing has failed yet: planned work, the SLA policy's warning-level clock
PACK_BATCH = 500  # packs evaluated per sweep pass; the rest on the next pass
WITHDRAWN = int(PackState.WITHDRAWN)


@dataclass(frozen=True)
class RiskRules:
    recurrence_count: int = 3  # the same fault this many times ...
    recurrence_window: dt.timedelta = dt.timedelta(days=7)  # ... within this window: preventive work
    soh_months: int = 3  # a pack crossing its retirement SOH within this many months: preventive work


_rules = RiskRules()


def configure(rules: RiskRules) -> None:
    """Set once by the composition root from the settings (rooms raising alarms do not carry them)."""
    global _rules
    _rules = rules


@dataclass(frozen=True)
class Equipment:
    operator_id: str | None
    station_id: str | None
    resource_id: str | None
    pack_id: str | None
    kind: str


async def _lock(session: AsyncSession, rule: str, equipment: Equipment) -> None:
    """Two triggers of one rule for one equipment wait for each other (PostgreSQL: an advisory lock; SQLite
    serialises writers already, and the alarm raise path has written by now)."""
    if dialect(session) != "postgresql":
        return
    key = "|".join(("risk", rule, equipment.station_id or "", equipment.resource_id or "", equipment.pack_id or ""))
    connection = await session.connection()
    await connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


def _same(column: object, value: str | None) -> sa.ColumnElement[bool]:
    c = col(column)
    return c.is_(None) if value is None else c == value


async def open_preventive(
    session: AsyncSession, rule: str, equipment: Equipment, *, title: str, why: str, now: dt.datetime
) -> tuple[WorkOrder | None, bool]:
    """(the rule's open preventive work order for the equipment, whether it was opened now)."""
    await _lock(session, rule, equipment)
    existing = await session.exec(
        select(WorkOrder)
        .where(
            WorkOrder.source == WORK_ORDER_SOURCE_PREVENTIVE,
            WorkOrder.fault_code == rule,
            col(WorkOrder.state).in_([int(s) for s in ACTIVE_STATES]),
            _same(WorkOrder.station_id, equipment.station_id),
            _same(WorkOrder.resource_id, equipment.resource_id),
            _same(WorkOrder.pack_id, equipment.pack_id),
        )
        .limit(1)
    )
    found = existing.first()
    if found is not None:
        return found, False
    new = workorders.NewWorkOrder(
        source=WORK_ORDER_SOURCE_PREVENTIVE, level=LEVEL, title=title, description=why,
        operator_id=equipment.operator_id, station_id=equipment.station_id, resource_id=equipment.resource_id,
        pack_id=equipment.pack_id, equipment_kind=equipment.kind, fault_code=rule,
    )  # fmt: skip
    order = await workorders.open_work_order(session, new, now=now, actor_id="platform", actor_role="platform")
    return order, True


async def after_alarm(session: AsyncSession, alarm: Alarm, kind: str, now: dt.datetime) -> WorkOrder | None:
    """RISK_RECURRING for a newly written alarm row (the row itself is counted): the open preventive work order
    when the fault recurred often enough, else None."""
    count = _rules.recurrence_count
    if count <= 0 or alarm.work_order_id is not None:
        return None  # off, or someone is already at work on this very fault (a flapping fault joins that order)
    earlier = await session.exec(
        select(func.count())
        .select_from(Alarm)
        .where(
            Alarm.dedup_key == alarm.dedup_key,
            col(Alarm.raised_at) > now - _rules.recurrence_window,
            Alarm.id != alarm.id,
        )
    )
    seen = int(earlier.one()) + 1
    if seen < count:
        return None
    equipment = Equipment(alarm.operator_id, alarm.station_id, alarm.resource_id or alarm.vehicle_id,
                          alarm.pack_id, kind)  # fmt: skip
    days = _rules.recurrence_window.total_seconds() / 86400
    why = f"fault {alarm.code} raised {seen} times within {days:g} days on this equipment (each may have cleared)"
    order, _ = await open_preventive(
        session, RECURRING, equipment, title=f"Preventive: recurring {alarm.code}", why=why, now=now
    )
    return order


def months_until(month: str, now: dt.datetime) -> int | None:
    """Whole months from `now`'s month to `month` ("YYYY-MM"; "now" is 0; "" is never: None)."""
    if month == "now":
        return 0
    if not month:
        return None
    year, mon = (int(p) for p in month.split("-"))
    return (year * 12 + mon) - (now.year * 12 + now.month)


async def check_pack(
    session: AsyncSession, stations: Stations, pack: PackFacts, now: dt.datetime
) -> tuple[WorkOrder | None, bool]:
    """RISK_SOH_RETIREMENT for one pack: (the open preventive work order when its fitted SOH crosses the
    operator's retirement threshold within `soh_months`, else None; whether it was opened now)."""
    if _rules.soh_months <= 0 or pack.state == WITHDRAWN:
        return None, False
    samples = await stations.pack_samples(
        session, pack.pack_id, start=None, end=None, after_seq=0, limit=battery.MODEL_SAMPLES
    )
    threshold = await battery.threshold_of(session, pack.operator_id)
    month, _ = battery.predict_month(samples, threshold, pack.soh_permille)
    months = months_until(month, now)
    if months is None or months > _rules.soh_months:
        return None, False
    equipment = Equipment(pack.operator_id, pack.station_id, None, pack.pack_id, "pack")
    when = "already" if month == "now" else f"in {month}"
    why = f"pack {pack.pack_id}'s fitted SOH reaches the retirement threshold {threshold}‰ {when}"
    title = f"Preventive: pack {pack.pack_id} nears retirement"
    return await open_preventive(session, SOH_RETIREMENT, equipment, title=title, why=why, now=now)


async def sweep_packs(session: AsyncSession, stations: Stations, now: dt.datetime, after_seq: int) -> tuple[int, int]:
    """Evaluates the packs with SOH samples newer than `after_seq` (the caller's cursor; 0 after a start: every
    sampled pack once). Returns (the cursor for the next pass, preventive work orders opened)."""
    sampled = await stations.packs_sampled_after(session, after_seq, limit=PACK_BATCH)
    opened = 0
    for pack_id in dict.fromkeys(pack_id for _, pack_id in sampled):
        pack = await stations.pack(session, pack_id)
        if pack is None:
            continue
        _, new = await check_pack(session, stations, pack, now)
        opened += new
    return (sampled[-1][0] if sampled else after_seq), opened
