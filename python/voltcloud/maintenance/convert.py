"""Maintenance messages <-> domain values. No rules here beyond the shape of a field."""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

from voltcloud.api.v1 import common_pb2, maintenance_pb2
from voltcloud.maintenance import alarms, analysis, closedloop, sla, workorders
from voltcloud.maintenance.models import Alarm, NotificationPreference, WorkOrder, WorkOrderStep
from voltcloud.platform.auth import Role
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.geo import parse_position
from voltcloud.platform.limits import optional_datetime, to_duration, to_timedelta, to_timestamp

MICRO = 1_000_000


def alarm_message(a: Alarm) -> maintenance_pb2.Alarm:
    return maintenance_pb2.Alarm(
        alarm_id=a.id, source=a.source, level=a.level, state=a.state, station_id=a.station_id or "",  # type: ignore[arg-type]
        resource_id=a.resource_id or "", vehicle_id=a.vehicle_id or "", pack_id=a.pack_id or "", code=a.code,
        message=a.message, raise_time=to_timestamp(a.raised_at), ack_time=to_timestamp(a.acked_at),
        acked_by=common_pb2.Actor(subject_id=a.acked_by) if a.acked_by else None,
        clear_time=to_timestamp(a.cleared_at), work_order_id=a.work_order_id or "", operator_id=a.operator_id or "",
        occurrences=a.occurrences, last_seen_time=to_timestamp(a.last_seen_at), flapping=a.flapping,
        ack_note=a.ack_note,
    )  # fmt: skip


def alarm_filter(r: maintenance_pb2.ListAlarmsRequest, operator_id: str | None) -> alarms.AlarmFilter:
    return alarms.AlarmFilter(
        operator_id=operator_id, station_id=r.station_id, vehicle_id=r.vehicle_id, pack_id=r.pack_id,
        states=tuple(r.states), min_level=r.min_level, sources=tuple(r.sources),
        raised_from=optional_datetime(r, "raise_time_from", zero="unset"),
        raised_to=optional_datetime(r, "raise_time_to", zero="unset"),
    )  # fmt: skip


def _role_number(name: str) -> int:
    try:
        return int(Role[name.upper()])
    except KeyError:
        return 0  # "platform": the platform's own rules


def step_message(s: WorkOrderStep) -> maintenance_pb2.WorkOrderStep:
    position = None
    if s.lat_microdeg is not None and s.lng_microdeg is not None:
        position = common_pb2.LatLng(lat=s.lat_microdeg / MICRO, lng=s.lng_microdeg / MICRO)
    return maintenance_pb2.WorkOrderStep(
        step_id=s.id, time=to_timestamp(s.at),
        actor=common_pb2.Actor(subject_id=s.actor_id, role=_role_number(s.actor_role)),  # type: ignore[arg-type]
        from_state=s.from_state, to_state=s.to_state, note=s.note, reason=s.reason, conclusion=s.conclusion,  # type: ignore[arg-type]
        position=position, attachment_uris=json.loads(s.attachments),
        percent_complete=-1 if s.percent_complete is None else s.percent_complete,
    )  # fmt: skip


def work_order_message(
    o: WorkOrder, steps: list[WorkOrderStep] | None = None, alarm_ids: list[str] | None = None
) -> maintenance_pb2.WorkOrder:
    message = maintenance_pb2.WorkOrder(
        work_order_id=o.id, source=o.source, level=o.level, state=o.state, title=o.title,  # type: ignore[arg-type]
        description=o.description, station_id=o.station_id or "", resource_id=o.resource_id or "",
        pack_id=o.pack_id or "", alarm_ids=alarm_ids if alarm_ids is not None else ([o.alarm_id] if o.alarm_id else []),
        required_skills=json.loads(o.required_skills), engineer_id=o.engineer_id or "",
        respond_by=to_timestamp(o.respond_by), resolve_by=to_timestamp(o.resolve_by), sla_breached=o.sla_breached,
        resolution=o.resolution, operator_id=o.operator_id or "", version=o.version,
        create_time=to_timestamp(o.created_at), close_time=to_timestamp(o.closed_at),
        equipment_kind=o.equipment_kind or "", equipment_code=o.equipment_code or "", fault_code=o.fault_code or "",
        required_certificate=o.required_certificate or "", reported_by=o.reported_by or "",
        assign_time=to_timestamp(o.assigned_at), accept_time=to_timestamp(o.accepted_at),
        on_site_time=to_timestamp(o.on_site_at), diagnose_time=to_timestamp(o.diagnosed_at),
        resolve_time=to_timestamp(o.resolved_at), sla_warned=o.sla_warned, escalation_level=o.escalation_level,
        reopen_count=o.reopen_count, diagnosis=o.diagnosis,
    )  # fmt: skip
    for s in steps or []:
        message.steps.append(step_message(s))
        if s.to_state != s.from_state or s.note or s.attachments != "[]":
            message.progress.append(
                maintenance_pb2.WorkOrderProgress(
                    time=to_timestamp(s.at),
                    actor=message.steps[-1].actor,
                    state=s.to_state,  # type: ignore[arg-type]
                    note=s.note or s.conclusion or s.reason,
                    position=message.steps[-1].position if s.lat_microdeg is not None else None,
                    photo_uris=json.loads(s.attachments),
                    percent_complete=s.percent_complete or 0,
                )
            )
    return message


def _duration(
    r: maintenance_pb2.CreateWorkOrderRequest, name: Literal["respond_within", "resolve_within"]
) -> dt.timedelta | None:
    if not r.HasField(name):
        return None
    value = to_timedelta(getattr(r, name), name)
    if value < dt.timedelta(minutes=1):
        raise InvalidArgument.for_field(name, "must be at least one minute")
    return value


def new_work_order(r: maintenance_pb2.CreateWorkOrderRequest) -> workorders.NewWorkOrder:
    source = r.source or maintenance_pb2.WORK_ORDER_SOURCE_MANUAL
    if source == maintenance_pb2.WORK_ORDER_SOURCE_ALARM and not r.alarm_ids:
        raise InvalidArgument.for_field("alarm_ids", "a work order from an alarm names the alarm")
    return workorders.NewWorkOrder(
        source=source, level=r.level or common_pb2.ALARM_LEVEL_MAJOR, title=r.title, description=r.description,
        operator_id=r.operator_id or None, station_id=r.station_id or None, resource_id=r.resource_id or None,
        pack_id=r.pack_id or None, equipment_kind=r.equipment_kind or None, fault_code=r.fault_code or None,
        required_skills=tuple(r.required_skills), required_certificate=r.required_certificate or None,
        respond_within=_duration(r, "respond_within"), resolve_within=_duration(r, "resolve_within"),
    )  # fmt: skip


def work_order_filter(r: maintenance_pb2.ListWorkOrdersRequest) -> closedloop.WorkOrderFilter:
    return closedloop.WorkOrderFilter(
        operator_id=r.operator_id, station_id=r.station_id, engineer_id=r.engineer_id, states=tuple(r.states),
        min_level=r.min_level, sla_breached_only=r.sla_breached_only, equipment_kind=r.equipment_kind,
    )  # fmt: skip


def _position(r: maintenance_pb2.UpdateWorkOrderProgressRequest) -> tuple[int, int] | None:
    if not r.HasField("position"):
        return None
    p = parse_position("position", r.position.lat, r.position.lng)
    return round(p.lat * MICRO), round(p.lng * MICRO)


def progress(r: maintenance_pb2.UpdateWorkOrderProgressRequest) -> closedloop.Progress:
    return closedloop.Progress(
        work_order_id=r.work_order_id, state=r.state, note=r.note, reason=r.reason, conclusion=r.conclusion,
        position=_position(r), attachments=tuple(r.photo_uris),
        percent_complete=r.percent_complete or None, expected_version=r.expected_version,
    )  # fmt: skip


def closing(r: maintenance_pb2.CloseWorkOrderRequest) -> closedloop.Closing:
    if r.release_pack:
        raise InvalidArgument.for_field("release_pack", "is not supported yet: release the pack with StationService")
    return closedloop.Closing(
        work_order_id=r.work_order_id, final_state=r.final_state, resolution=r.resolution, reason=r.reason,
        clear_alarms=r.clear_alarms, expected_version=r.expected_version,
    )  # fmt: skip


def fault_report(r: maintenance_pb2.ReportFaultRequest) -> closedloop.FaultReport:
    return closedloop.FaultReport(r.equipment_code, r.description, tuple(r.photo_uris), r.level, r.fault_code)


def rule_message(rule: sla.Rule) -> maintenance_pb2.SlaPolicyRule:
    p = rule.policy
    return maintenance_pb2.SlaPolicyRule(
        level=rule.level, equipment_kind=rule.equipment_kind,  # type: ignore[arg-type]
        respond_within=to_duration(p.respond.total_seconds()), resolve_within=to_duration(p.resolve.total_seconds()),
        warn_before=to_duration(p.warn_before.total_seconds()),
        escalate_after=to_duration(p.escalate_after.total_seconds()), auto_work_order=p.auto_work_order,
        is_default=rule.is_default,
    )  # fmt: skip


def rules(r: maintenance_pb2.SetSlaPolicyRequest) -> list[sla.Rule]:
    out = []
    for i, m in enumerate(r.rules):
        out.append(
            sla.Rule(m.level, m.equipment_kind, sla.Policy(
                to_timedelta(m.respond_within, f"rules[{i}].respond_within"),
                to_timedelta(m.resolve_within, f"rules[{i}].resolve_within"),
                to_timedelta(m.warn_before, f"rules[{i}].warn_before"),
                to_timedelta(m.escalate_after, f"rules[{i}].escalate_after"),
                m.auto_work_order,
            ))
        )  # fmt: skip
    return out


def preferences(m: maintenance_pb2.NotificationPreferences) -> NotificationPreference:
    return NotificationPreference(
        recipient_kind=m.recipient_kind, recipient_id=m.recipient_id, operator_id=m.operator_id or None,
        email=m.email, phone=m.phone, webhook_url=m.webhook_url, email_on=m.email_on, sms_on=m.sms_on,
        webhook_on=m.webhook_on, supervisor=m.supervisor, updated_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def preferences_message(p: NotificationPreference) -> maintenance_pb2.NotificationPreferences:
    return maintenance_pb2.NotificationPreferences(
        recipient_kind=p.recipient_kind, recipient_id=p.recipient_id, operator_id=p.operator_id or "", email=p.email,
        phone=p.phone, webhook_url=p.webhook_url, email_on=p.email_on, sms_on=p.sms_on, webhook_on=p.webhook_on,
        supervisor=p.supervisor,
    )  # fmt: skip


def analysis_message(a: analysis.Analysis, *, include_csv: bool) -> maintenance_pb2.GetFaultAnalysisResponse:
    return maintenance_pb2.GetFaultAnalysisResponse(
        figures=[
            maintenance_pb2.FaultFigures(
                dimension=f.dimension,
                key=f.key,
                work_orders=f.work_orders,
                resolved=f.resolved,
                mttr_s=f.mttr_s,
                mtbf_s=f.mtbf_s,
                sla_compliance_permille=f.sla_compliance_permille,
                sla_breached=f.sla_breached,
            )
            for f in a.figures
        ],
        top_faults=[
            maintenance_pb2.RecurringFault(
                fault_code=r.fault_code,
                station_id=r.station_id,
                equipment_id=r.equipment_id,
                work_orders=r.work_orders,
            )
            for r in a.top
        ],
        csv=analysis.to_csv(a) if include_csv else "",
    )
