"""SLA policies and the SLA clock of one work order.

A policy row (operator, equipment kind, level) says: respond (be on site) within, resolve within, warn this long
before a deadline, escalate to the operator this long after it (the supervisor is told at the deadline), and
whether an alarm of that level opens a work order by itself. Missing rows fall back to the operator's row for
every kind (""), then to `DEFAULTS` (seed 001: respond within 15 minutes, a swap-station fault resolved within
12 hours).

Each deadline has three events, one bit each in `WorkOrder.sla_fired`: the warning, the escalation to the
supervisor (at the deadline: the SLA is breached), and the escalation to the operator. The respond deadline
counts until the engineer is on site; the resolve deadline until the order is resolved (or cancelled).
`next_due` is the next instant an unfired event is due: the order's `sla_due_at`, which the timer sleeps to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance.models import SlaPolicy, WorkOrder
from voltcloud.maintenance.states import FINAL_STATES, normalize
from voltcloud.platform.enums import AlarmLevel
from voltcloud.platform.enums import WorkOrderState as S
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.ids import new_id

EQUIPMENT_KINDS = ("station", "charger", "connector", "lane", "pack", "robot", "vehicle")


@dataclass(frozen=True)
class Policy:
    respond: dt.timedelta
    resolve: dt.timedelta
    warn_before: dt.timedelta
    escalate_after: dt.timedelta
    auto_work_order: bool


def _p(respond_min: int, resolve_h: int, warn_min: int, escalate_min: int, auto: bool) -> Policy:
    minute = dt.timedelta(minutes=1)
    return Policy(respond_min * minute, dt.timedelta(hours=resolve_h), warn_min * minute, escalate_min * minute, auto)


DEFAULTS: dict[int, Policy] = {
    AlarmLevel.CRITICAL: _p(15, 12, 5, 30, True),
    AlarmLevel.MAJOR: _p(15, 12, 5, 30, True),
    AlarmLevel.WARNING: _p(120, 48, 30, 120, False),
    AlarmLevel.INFO: _p(24 * 60, 7 * 24, 120, 24 * 60, False),
}


def default_policy(level: int) -> Policy:
    return DEFAULTS.get(level, DEFAULTS[AlarmLevel.WARNING])


async def policy_for(session: AsyncSession, operator_id: str | None, equipment_kind: str | None, level: int) -> Policy:
    """The operator's row for this kind and level, else its row for every kind, else the default."""
    if operator_id:
        rows = list(
            await session.exec(
                select(SlaPolicy).where(
                    SlaPolicy.operator_id == operator_id,
                    SlaPolicy.level == level,
                    col(SlaPolicy.equipment_kind).in_([equipment_kind or "", ""]),
                )
            )
        )
        rows.sort(key=lambda r: r.equipment_kind == "")  # the kind's own row first
        if rows:
            r = rows[0]
            return Policy(
                dt.timedelta(seconds=r.respond_s),
                dt.timedelta(seconds=r.resolve_s),
                dt.timedelta(seconds=r.warn_before_s),
                dt.timedelta(seconds=r.escalate_after_s),
                r.auto_work_order,
            )
    return default_policy(level)


def start_clock(order: WorkOrder, policy: Policy, now: dt.datetime) -> None:
    """Sets both deadlines from `now` (a new or reopened order) and arms the timer."""
    order.respond_by, order.resolve_by = now + policy.respond, now + policy.resolve
    order.sla_warn_before_s = int(policy.warn_before.total_seconds())
    order.sla_escalate_after_s = int(policy.escalate_after.total_seconds())
    order.sla_fired = 0
    order.sla_due_at = next_due(order)


# The bits of WorkOrder.sla_fired: (deadline, event).
RESPOND_WARN, RESPOND_SUPERVISOR, RESPOND_OPERATOR = 1, 2, 4
RESOLVE_WARN, RESOLVE_SUPERVISOR, RESOLVE_OPERATOR = 8, 16, 32
WARNINGS = RESPOND_WARN | RESOLVE_WARN


@dataclass(frozen=True)
class Event:
    bit: int
    at: dt.datetime
    deadline: str  # "respond" or "resolve"
    escalation_level: int  # 0 warning, 1 supervisor, 2 operator


def events(order: WorkOrder) -> list[Event]:
    """Every SLA event that still applies to the order in its current state (fired or not)."""
    state = normalize(order.state)
    if state in FINAL_STATES:
        return []
    out: list[Event] = []
    warn = dt.timedelta(seconds=order.sla_warn_before_s)
    escalate = dt.timedelta(seconds=order.sla_escalate_after_s)
    phases = [("resolve", order.resolve_by, (RESOLVE_WARN, RESOLVE_SUPERVISOR, RESOLVE_OPERATOR))]
    if order.on_site_at is None and state in (S.OPEN, S.ASSIGNED, S.ACCEPTED, S.ON_HOLD):
        phases.insert(0, ("respond", order.respond_by, (RESPOND_WARN, RESPOND_SUPERVISOR, RESPOND_OPERATOR)))
    for name, deadline, (w, sup, op) in phases:
        if deadline is None:
            continue
        out += [
            Event(w, deadline - warn, name, 0),
            Event(sup, deadline, name, 1),
            Event(op, deadline + escalate, name, 2),
        ]
    return out


def due(order: WorkOrder, now: dt.datetime) -> list[Event]:
    """The unfired events due at `now`, oldest first."""
    return sorted((e for e in events(order) if not order.sla_fired & e.bit and e.at <= now), key=lambda e: e.at)


def next_due(order: WorkOrder) -> dt.datetime | None:
    pending = [e.at for e in events(order) if not order.sla_fired & e.bit]
    return min(pending) if pending else None


@dataclass(frozen=True)
class Rule:
    level: int
    equipment_kind: str
    policy: Policy
    is_default: bool = False


_MAX_SPAN = dt.timedelta(days=366)


def _check_rule(i: int, r: Rule) -> None:
    at = f"rules[{i}]"
    if r.level not in {int(v) for v in AlarmLevel}:
        raise InvalidArgument.for_field(f"{at}.level", "must be INFO, WARNING, MAJOR or CRITICAL")
    if r.equipment_kind and r.equipment_kind not in EQUIPMENT_KINDS:
        raise InvalidArgument.for_field(f"{at}.equipment_kind", f"must be empty or one of {', '.join(EQUIPMENT_KINDS)}")
    p = r.policy
    if not dt.timedelta(minutes=1) <= p.respond <= p.resolve <= _MAX_SPAN:
        raise InvalidArgument.for_field(f"{at}.respond_within", "needs 1 minute <= respond_within <= resolve_within")
    if p.warn_before >= p.respond:
        raise InvalidArgument.for_field(f"{at}.warn_before", "must be shorter than respond_within")
    if p.escalate_after <= dt.timedelta(0):
        raise InvalidArgument.for_field(f"{at}.escalate_after", "must be positive")


async def set_rules(
    session: AsyncSession, operator_id: str, rules: list[Rule], *, actor_id: str, now: dt.datetime
) -> list[Rule]:
    """Upserts the operator's rows named by (level, kind); returns all its rows."""
    for i, rule in enumerate(rules):
        _check_rule(i, rule)
    for rule in rules:
        row = (
            await session.exec(
                select(SlaPolicy).where(
                    SlaPolicy.operator_id == operator_id,
                    SlaPolicy.level == rule.level,
                    SlaPolicy.equipment_kind == rule.equipment_kind,
                )
            )
        ).first() or SlaPolicy(id=new_id("sla"), operator_id=operator_id, equipment_kind=rule.equipment_kind,
                               level=rule.level, respond_s=0, resolve_s=0, warn_before_s=0, escalate_after_s=0,
                               updated_at=now)  # fmt: skip
        p = rule.policy
        row.respond_s, row.resolve_s = int(p.respond.total_seconds()), int(p.resolve.total_seconds())
        row.warn_before_s, row.escalate_after_s = (
            int(p.warn_before.total_seconds()),
            int(p.escalate_after.total_seconds()),
        )
        row.auto_work_order, row.updated_at, row.updated_by = p.auto_work_order, now, actor_id[:64]
        session.add(row)
    await session.flush()
    return await rules_of(session, operator_id)


async def rules_of(session: AsyncSession, operator_id: str) -> list[Rule]:
    rows = await session.exec(
        select(SlaPolicy)
        .where(SlaPolicy.operator_id == operator_id)
        .order_by(col(SlaPolicy.level), col(SlaPolicy.equipment_kind))
    )
    return [
        Rule(
            r.level,
            r.equipment_kind,
            Policy(
                dt.timedelta(seconds=r.respond_s),
                dt.timedelta(seconds=r.resolve_s),
                dt.timedelta(seconds=r.warn_before_s),
                dt.timedelta(seconds=r.escalate_after_s),
                r.auto_work_order,
            ),
        )
        for r in rows
    ]


def default_rules() -> list[Rule]:
    return [Rule(level, "", policy, is_default=True) for level, policy in sorted(DEFAULTS.items())]
