"""Dispatch's converters: app and request messages → domain inputs, tasks → messages. No rules here: who may
report or connect is the servicer's and the domain's (tasks, planning) business; this module only moves fields
between the generated messages and their types."""

from __future__ import annotations

import json

from voltcloud.api.v1 import common_pb2, dispatch_pb2
from voltcloud.dispatch import planning, tasks
from voltcloud.dispatch.models import TaskStep
from voltcloud.platform.convert import lat_lng_message
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.geo import Box, parse_box, parse_position
from voltcloud.platform.limits import optional_datetime, to_duration, to_timestamp
from voltcloud.stations.api import MobileUnit, units

DEFAULT_TIME_BUDGET_MS = 200


def step_message(s: TaskStep) -> dispatch_pb2.TaskStep:
    message = dispatch_pb2.TaskStep(
        index=s.index,
        kind=s.kind,  # type: ignore[arg-type]
        position=lat_lng_message(s.lat, s.lng),
        station_id=s.station_id or "",
        service_duration=to_duration(s.service_s),
        status=s.status,  # type: ignore[arg-type]
    )
    if s.window_start is not None and s.window_end is not None:
        message.window.CopyFrom(
            common_pb2.TimeWindow(start=to_timestamp(s.window_start), end=to_timestamp(s.window_end))
        )
    if s.planned_arrival is not None:
        message.planned_arrival_time.CopyFrom(to_timestamp(s.planned_arrival))
    if s.status_time is not None:
        message.status_time.CopyFrom(to_timestamp(s.status_time))
    return message


def task_message(view: tasks.TaskView, unit_kind: int | None = None) -> dispatch_pb2.Task:
    t = view.task
    worker = t.unit_id or t.offered_to or ""
    is_van = t.kind == tasks.TaskKind.MOBILE_CHARGE
    notes = t.notes
    proofs = {s.index: json.loads(s.proof_refs) for s in view.steps if s.proof_refs != "[]"}
    if proofs:
        notes = (notes + " " if notes else "") + "proofs: " + json.dumps(proofs)
    return dispatch_pb2.Task(
        task_id=t.id,
        kind=t.kind,  # type: ignore[arg-type]
        state=t.state,  # type: ignore[arg-type]
        order_id=t.order_id or "",
        specialist_id="" if is_van else worker,
        van_id=worker if is_van else "",
        vehicle_id=t.vehicle_id or "",
        steps=[step_message(s) for s in view.steps],
        energy_wh=t.energy_wh,
        operator_id=t.operator_id,
        version=t.version,
        create_time=to_timestamp(t.created_at),
        update_time=to_timestamp(t.updated_at),
        notes=notes,
    )


def step_input(step: dispatch_pb2.StepUpdate) -> tasks.StepInput:
    if not step.task_id:
        raise InvalidArgument.for_field("step.task_id", "is required")
    lat = lng = None
    if step.HasField("position"):
        position = parse_position("step.position", step.position.lat, step.position.lng)
        lat, lng = position.lat, position.lng
    return tasks.StepInput(
        task_id=step.task_id,
        step_index=step.step_index,
        status=int(step.status),
        lat=lat,
        lng=lng,
        at=optional_datetime(step, "time", "step.time"),
        note=step.note,
        photo_uris=tuple(step.photo_uris),
        energy_wh=int(step.energy_wh),
        soc_permille=int(step.soc_permille),
    )


def task_of(message: dispatch_pb2.ConnectRequest) -> str:
    """The task an app message is about ("" for position, status, hello)."""
    kind = message.WhichOneof("msg")
    if kind == "accept":
        return message.accept.task_id
    if kind == "decline":
        return message.decline.task_id
    if kind == "step":
        return message.step.task_id
    return ""


def task_filter(request: dispatch_pb2.ListTasksRequest) -> tasks.TaskFilter:
    return tasks.TaskFilter(
        unit_id=request.specialist_id or request.van_id or None,
        order_id=request.order_id or None,
        operator_id=request.operator_id or None,
        states=frozenset(int(s) for s in request.states),
        kinds=frozenset(int(k) for k in request.kinds),
    )


def reoptimize_region(request: dispatch_pb2.ReoptimizeNowRequest) -> Box | None:
    if not request.HasField("region"):
        return None
    sw, ne = request.region.south_west, request.region.north_east
    return parse_box(
        "region",
        parse_position("region.south_west", sw.lat, sw.lng),
        parse_position("region.north_east", ne.lat, ne.lng),
    )


def time_budget_ms(request: dispatch_pb2.ReoptimizeNowRequest) -> int:
    if not request.HasField("time_budget"):
        return DEFAULT_TIME_BUDGET_MS
    budget_ms = int(request.time_budget.ToMilliseconds())
    if not 1 <= budget_ms <= 10_000:
        raise InvalidArgument.for_field("time_budget", "must be within [1 ms, 10 s]")
    return budget_ms


def reoptimize_response(outcome: planning.Outcome) -> dispatch_pb2.ReoptimizeNowResponse:
    return dispatch_pb2.ReoptimizeNowResponse(
        tasks_changed=outcome.tasks_changed,
        tasks_unassigned=outcome.tasks_unassigned,
        travel_time_before=to_duration(outcome.travel_before_s),
        travel_time_after=to_duration(outcome.travel_after_s),
    )


# ---- fleet-swap: the operator's workforce (vans and specialists) ----


def unit_spec(message: dispatch_pb2.MobileUnit) -> units.UnitSpec:
    """The `unit` message as the stations room's description; a home base not set stays None (required)."""
    home = None
    if message.HasField("home"):
        position = parse_position("unit.home", message.home.lat, message.home.lng)
        home = (position.lat, position.lng)
    return units.UnitSpec(
        operator_id=message.operator_id, kind=int(message.kind), name=message.name, home=home,
        energy_wh=message.energy_on_board_wh, connector_standards=tuple(int(s) for s in message.connector_standards),
        skills=message.skills, regions=tuple(message.regions), shift_start_s=message.shift_start_s,
        shift_end_s=message.shift_end_s,
    )  # fmt: skip


def keyed(key: str) -> None:
    if not key:
        raise InvalidArgument.for_field("idempotency_key", "is required")


def unit_message(unit: MobileUnit) -> dispatch_pb2.MobileUnit:
    home = (unit.home_lat, unit.home_lng) if unit.home_lat is not None and unit.home_lng is not None else None
    lat, lng = home or (unit.lat, unit.lng)
    return dispatch_pb2.MobileUnit(
        unit_id=unit.id, operator_id=unit.operator_id, kind=unit.kind,  # type: ignore[arg-type]
        name=unit.name, home=lat_lng_message(lat, lng), energy_on_board_wh=unit.energy_wh,
        connector_standards=[s for s in range(32) if unit.connector_mask & (1 << s)],  # type: ignore[misc]
        skills=unit.skills, regions=[r for r in unit.regions.split(",") if r], shift_start_s=unit.shift_start_s,
        shift_end_s=unit.shift_end_s, status=unit.status, version=unit.version,  # type: ignore[arg-type]
    )  # fmt: skip


def unit_filter(request: dispatch_pb2.ListMobileUnitsRequest) -> units.UnitFilter:
    return units.UnitFilter(request.operator_id, int(request.kind), int(request.status))
