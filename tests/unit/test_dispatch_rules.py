"""Dispatch rules without I/O: the steps a task is made of, who may see a task, which states are still open."""

from __future__ import annotations

import datetime as dt

import pytest

from voltcloud.dispatch.models import Task
from voltcloud.dispatch.tasks import OPEN_TASK_STATES, StepKind, TaskKind, TaskState, _may_see, _steps_for, unfinished
from voltcloud.ordering.api import Place
from voltcloud.platform.auth import Principal, Role, Tenant

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CAR, STATION, HOME = Place(31.0, 121.0), Place(31.1, 121.1, "st-1"), Place(31.2, 121.2)


def test_a_valet_task_fetches_the_car_powers_it_up_at_the_station_and_brings_it_back() -> None:
    steps = _steps_for(TaskKind.VALET, CAR, STATION, HOME, NOW, service_s=600)
    assert [k for k, _, _ in steps] == [
        StepKind.GO_TO_VEHICLE, StepKind.PICK_UP_VEHICLE, StepKind.GO_TO_STATION,
        StepKind.POWER_UP, StepKind.RETURN_VEHICLE, StepKind.HAND_OVER,
    ]  # fmt: skip
    assert [p for _, p, _ in steps] == [CAR, CAR, STATION, STATION, HOME, HOME]
    # Only the power-up takes the service time; the hand-overs take three minutes each.
    assert [s for _, _, s in steps] == [0, 180, 0, 600, 0, 180]


def test_a_valet_task_without_a_station_powers_up_where_the_car_is() -> None:
    steps = _steps_for(TaskKind.VALET, CAR, None, HOME, NOW, service_s=600)
    assert [p for k, p, _ in steps if k in (StepKind.GO_TO_STATION, StepKind.POWER_UP)] == [CAR, CAR]


def test_a_van_task_charges_the_car_on_the_spot() -> None:
    steps = _steps_for(TaskKind.MOBILE_CHARGE, CAR, STATION, HOME, NOW, service_s=900)
    assert steps == [(StepKind.GO_TO_VEHICLE, CAR, 0), (StepKind.CONNECT, CAR, 120), (StepKind.DISCONNECT, CAR, 900)]


def _task(operator: str = "op-1", unit: str | None = None, offered_to: str | None = None) -> Task:
    return Task(
        id="tk-1", kind=int(TaskKind.VALET), state=int(TaskState.OFFERED), operator_id=operator, unit_id=unit,
        offered_to=offered_to, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("principal", "visible"),
    [
        (Principal("admin", Role.PLATFORM_ADMIN, None), True),
        (Principal("ops", Role.OPERATOR, Tenant("operator", "op-1")), True),
        (Principal("ops", Role.OPERATOR, Tenant("operator", "op-2")), False),
        (Principal("ops", Role.OPERATOR, None), False),
        (Principal("u-assigned", Role.SPECIALIST, Tenant("operator", "op-1")), True),
        (Principal("u-offered", Role.SPECIALIST, Tenant("operator", "op-1")), True),
        (Principal("u-other", Role.SPECIALIST, Tenant("operator", "op-1")), False),
        (Principal("drv", Role.DRIVER, None), False),
    ],
    ids=lambda p: p.subject if isinstance(p, Principal) else str(p),
)
def test_a_task_is_seen_by_the_admin_its_operator_and_its_unit_only(principal: Principal, visible: bool) -> None:
    assert _may_see(principal, _task(unit="u-assigned", offered_to="u-offered")) is visible


def test_offered_accepted_and_in_progress_tasks_are_unfinished() -> None:
    assert {TaskState.OFFERED, TaskState.ACCEPTED, TaskState.IN_PROGRESS} == OPEN_TASK_STATES
    for state in TaskState:
        assert unfinished([int(TaskState.COMPLETED), int(state)]) is (state in OPEN_TASK_STATES)
    assert unfinished([]) is False
