"""Safety incident reports: severity, people, immediate actions, closure with corrective actions."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance.engineers import operator_scope, require_operator
from voltcloud.maintenance.field_models import SafetyIncident
from voltcloud.maintenance.ports import Stations
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page

SEVERITIES = range(1, 5)  # IncidentSeverity: near miss .. critical


@dataclass(frozen=True)
class Report:
    severity: int
    occurred_at: dt.datetime | None
    description: str
    station_id: str = ""
    operator_id: str = ""
    people: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    photo_uris: tuple[str, ...] = ()


async def _operator_for(session: AsyncSession, principal: Principal, stations: Stations, report: Report) -> str:
    if report.station_id:
        site = await stations.site(session, report.station_id)
        if site is None:
            raise NotFound(f"station {report.station_id} not found")
        require_operator(principal, site.operator_id, f"station {report.station_id}")
        if report.operator_id and report.operator_id != site.operator_id:
            raise InvalidArgument.for_field("operator_id", "is not the station's operator")
        return site.operator_id
    scope = operator_scope(principal)
    operator_id = report.operator_id or scope or ""
    if not operator_id:
        raise InvalidArgument.for_field("operator_id", "is required when no station is named")
    require_operator(principal, operator_id, f"operator {operator_id}")
    return operator_id


async def report_incident(
    session: AsyncSession, principal: Principal, stations: Stations, report: Report, *, now: dt.datetime
) -> SafetyIncident:
    if report.severity not in SEVERITIES:
        raise InvalidArgument.for_field("incident.severity", "is required")
    if report.occurred_at is None:
        raise InvalidArgument.for_field("incident.occur_time", "is required")
    if report.occurred_at > now + dt.timedelta(minutes=5):
        raise InvalidArgument.for_field("incident.occur_time", "must not be in the future")
    if not report.description.strip():
        raise InvalidArgument.for_field("incident.description", "is required")
    row = SafetyIncident(
        id=new_id("inc"),
        operator_id=await _operator_for(session, principal, stations, report),
        station_id=report.station_id or None,
        severity=report.severity,
        occurred_at=report.occurred_at,
        description=report.description.strip(),
        people=json.dumps(list(report.people)),
        actions=json.dumps(list(report.actions)),
        photo_uris=json.dumps(list(report.photo_uris)),
        reporter_subject=principal.subject,
        reporter_role=int(principal.role),
        reported_at=now,
    )
    session.add(row)
    return row


async def close_incident(
    session: AsyncSession, principal: Principal, incident_id: str, *, resolution: str, now: dt.datetime
) -> SafetyIncident:
    if not incident_id:
        raise InvalidArgument.for_field("incident_id", "is required")
    if not resolution.strip():
        raise InvalidArgument.for_field("resolution", "is required: the corrective actions")
    row = (await session.exec(select(SafetyIncident).where(SafetyIncident.id == incident_id).with_for_update())).first()
    if row is None:
        raise NotFound(f"incident {incident_id} not found")
    require_operator(principal, row.operator_id, f"incident {incident_id}")
    if row.closed_at is not None:
        raise FailedPrecondition(f"incident {incident_id} is closed already")
    row.closed_at, row.resolution, row.closed_by = now, resolution.strip(), principal.subject
    session.add(row)
    return row


async def list_incidents(
    session: AsyncSession, principal: Principal, *, operator_id: str, open_only: bool, min_severity: int, page: Page
) -> list[SafetyIncident]:
    scope = operator_scope(principal)
    if operator_id and scope is not None and operator_id != scope:
        return []
    query = select(SafetyIncident).order_by(col(SafetyIncident.id).desc())
    if scope is not None or operator_id:
        query = query.where(SafetyIncident.operator_id == (operator_id or scope))
    if open_only:
        query = query.where(col(SafetyIncident.closed_at).is_(None))
    if min_severity:
        query = query.where(col(SafetyIncident.severity) >= min_severity)
    if page.after:
        query = query.where(col(SafetyIncident.id) < page.after)
    return list(await session.exec(query.limit(page.size)))
