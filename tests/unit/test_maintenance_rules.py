"""Maintenance's pure rules: the work order's state machine and each order's SLA events."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from voltcloud.maintenance import sla
from voltcloud.maintenance.models import WorkOrder
from voltcloud.maintenance.states import allowed, is_reopen, normalize
from voltcloud.platform.enums import AlarmLevel
from voltcloud.platform.enums import WorkOrderState as S

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)

HAPPY = [S.OPEN, S.ASSIGNED, S.ACCEPTED, S.ON_SITE, S.DIAGNOSED, S.RESOLVED, S.CLOSED]


def test_the_happy_path_and_only_forward_steps() -> None:
    for here, there in itertools.pairwise(HAPPY):
        assert allowed(here, there)
    skips = [(a, b) for i, a in enumerate(HAPPY) for b in HAPPY[i + 2 :]]
    assert [(a, b) for a, b in skips if allowed(a, b)] == [(S.ON_SITE, S.RESOLVED)]  # the one shortcut
    backwards = [(b, a) for i, a in enumerate(HAPPY) for b in HAPPY[i + 1 :]]
    assert sorted((a.name, b.name) for a, b in backwards if allowed(a, b)) == [
        ("ASSIGNED", "OPEN"), ("CLOSED", "OPEN"), ("RESOLVED", "OPEN"),
    ]  # fmt: skip


@pytest.mark.parametrize("state", [S.OPEN, S.ASSIGNED, S.ACCEPTED, S.ON_SITE, S.DIAGNOSED])
def test_hold_returns_only_where_it_left_and_any_open_state_cancels(state: S) -> None:
    assert allowed(state, S.ON_HOLD) and allowed(state, S.CANCELLED)
    assert allowed(S.ON_HOLD, state, held_from=state) and allowed(S.ON_HOLD, S.CANCELLED, held_from=state)
    others = [s for s in HAPPY if s != state and s != S.CLOSED]
    assert not any(allowed(S.ON_HOLD, s, held_from=state) for s in others)


def test_final_states_and_the_legacy_name() -> None:
    assert not any(allowed(S.CANCELLED, s) for s in S)
    assert not allowed(S.RESOLVED, S.CANCELLED) and not allowed(S.CLOSED, S.ON_HOLD)
    assert normalize(S.IN_PROGRESS) == S.ON_SITE and allowed(S.ACCEPTED, S.IN_PROGRESS)
    assert is_reopen(S.CLOSED, S.OPEN) and not is_reopen(S.ASSIGNED, S.OPEN)


def _order(level: int = AlarmLevel.MAJOR) -> WorkOrder:
    order = WorkOrder(id="wo-1", source=1, level=level, title="t", created_at=T0)
    sla.start_clock(order, sla.default_policy(level), T0)
    return order


def test_a_major_orders_events_follow_the_seed_defaults() -> None:
    order = _order()
    assert (order.respond_by, order.resolve_by) == (T0 + 15 * MIN, T0 + dt.timedelta(hours=12))
    assert order.sla_due_at == T0 + 10 * MIN  # the respond warning, 5 minutes before
    due = sla.due(order, T0 + 46 * MIN)
    assert [(e.deadline, e.escalation_level, e.at - T0) for e in due] == [
        ("respond", 0, 10 * MIN), ("respond", 1, 15 * MIN), ("respond", 2, 45 * MIN),
    ]  # fmt: skip
    for e in due:
        order.sla_fired |= e.bit
    assert sla.next_due(order) == T0 + dt.timedelta(hours=12) - 5 * MIN  # the resolve warning


def test_on_site_stops_the_respond_clock_and_final_states_stop_all() -> None:
    order = _order()
    order.state, order.on_site_at = int(S.ON_SITE), T0 + 3 * MIN
    assert {e.deadline for e in sla.events(order)} == {"resolve"}
    order.state = int(S.RESOLVED)
    assert sla.events(order) == [] and sla.next_due(order) is None
    held = _order()
    held.state = int(S.ON_HOLD)
    assert {e.deadline for e in sla.events(held)} == {"respond", "resolve"}  # the clock runs on hold


def test_defaults_open_work_orders_from_major_up() -> None:
    assert [level.name for level in AlarmLevel if sla.default_policy(level).auto_work_order] == ["MAJOR", "CRITICAL"]
