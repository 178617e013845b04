"""Site inspections: the 6S checklist and the daily operational reconciliation of a station.

Each kind has a fixed template (code -> max score, pass mark); a submission scores every template item once.
A failed item opens a follow-up work order for the station (source INSPECTION) through `followups`, so the
fault loop (dispatch, SLA) takes it from there."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance.engineers import operator_scope, require_operator
from voltcloud.maintenance.field_models import SiteInspection, SiteInspectionItem
from voltcloud.maintenance.ports import Site, Stations
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import InvalidArgument, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.platform.paging import Page

SIX_S, DAILY_RECONCILIATION = 1, 2  # SiteInspectionKind


@dataclass(frozen=True)
class TemplateItem:
    max_score: int
    pass_mark: int
    title: str


TEMPLATES: dict[int, dict[str, TemplateItem]] = {
    SIX_S: {
        "sort.no_idle_items": TemplateItem(5, 3, "Sort: no idle tools, parts or packs left in the bays"),
        "set_in_order.tools_labelled": TemplateItem(5, 3, "Set in order: tools and spares in labelled places"),
        "shine.bays_clean": TemplateItem(5, 3, "Shine: swap bays, lanes and robot rails clean"),
        "standardize.signage": TemplateItem(5, 3, "Standardize: signage, floor markings and SOP sheets posted"),
        "sustain.last_actions_closed": TemplateItem(5, 3, "Sustain: the last inspection's actions are closed"),
        "safety.fire_equipment": TemplateItem(5, 4, "Safety: extinguishers, sand and thermal-runaway kit in date"),
        "safety.emergency_stops": TemplateItem(5, 4, "Safety: emergency stops and interlocks tested"),
    },
    DAILY_RECONCILIATION: {
        "recon.sessions_match_orders": TemplateItem(1, 1, "Station sessions match the platform's orders"),
        "recon.payments_match": TemplateItem(1, 1, "Payments and refunds match the settlement report"),
        "recon.packs_counted": TemplateItem(1, 1, "Packs counted in slots match the inventory"),
        "recon.energy_meter_read": TemplateItem(1, 1, "Energy meter read and matches the metered sessions"),
        "recon.alarms_reviewed": TemplateItem(1, 1, "Open alarms reviewed and handed over"),
    },
}

FollowUp = Callable[[AsyncSession, Site, str, str, dt.datetime], Awaitable[str | None]]


@dataclass(frozen=True)
class ItemInput:
    code: str
    score: int
    note: str
    photo_uris: tuple[str, ...]


@dataclass(frozen=True)
class Submission:
    kind: int
    station_id: str
    items: tuple[ItemInput, ...]
    business_date: str = ""


@dataclass(frozen=True)
class InspectionView:
    inspection: SiteInspection
    items: list[SiteInspectionItem]


def check(submission: Submission) -> dict[str, TemplateItem]:
    template = TEMPLATES.get(submission.kind)
    if template is None:
        raise InvalidArgument.for_field("kind", "must be SIX_S or DAILY_RECONCILIATION")
    if not submission.station_id:
        raise InvalidArgument.for_field("station_id", "is required")
    seen: set[str] = set()
    for i, item in enumerate(submission.items):
        spec = template.get(item.code)
        if spec is None:
            raise InvalidArgument.for_field(f"items[{i}].code", f"not an item of this checklist: {item.code!r}")
        if item.code in seen:
            raise InvalidArgument.for_field(f"items[{i}].code", f"{item.code} is scored twice")
        if not 0 <= item.score <= spec.max_score:
            raise InvalidArgument.for_field(f"items[{i}].score", f"must be 0..{spec.max_score}")
        seen.add(item.code)
    missing = sorted(set(template) - seen)
    if missing:
        raise InvalidArgument.for_field("items", f"missing checklist items: {', '.join(missing)}")
    if submission.kind == DAILY_RECONCILIATION:
        try:
            dt.date.fromisoformat(submission.business_date)
        except ValueError:
            raise InvalidArgument.for_field("business_date", "must be a date YYYY-MM-DD") from None
    elif submission.business_date:
        raise InvalidArgument.for_field("business_date", "is only for the daily reconciliation")
    return template


async def submit(
    session: AsyncSession,
    principal: Principal,
    stations: Stations,
    submission: Submission,
    *,
    now: dt.datetime,
    follow_up: FollowUp,
) -> InspectionView:
    template = check(submission)
    site = await stations.site(session, submission.station_id)
    if site is None:
        raise NotFound(f"station {submission.station_id} not found")
    require_operator(principal, site.operator_id, f"station {submission.station_id}")
    row = SiteInspection(
        id=new_id("sinsp"),
        operator_id=site.operator_id,
        station_id=site.station_id,
        kind=submission.kind,
        business_date=submission.business_date,
        inspector_subject=principal.subject,
        inspector_role=int(principal.role),
        submitted_at=now,
    )
    items = []
    for item in submission.items:
        spec = template[item.code]
        passed = item.score >= spec.pass_mark
        work_order_id = None
        if not passed:
            detail = f"{spec.title}: scored {item.score}/{spec.max_score}. {item.note}".strip()
            work_order_id = await follow_up(session, site, f"Inspection follow-up: {item.code}", detail, now)
        items.append(
            SiteInspectionItem(
                id=new_id("sitem"),
                inspection_id=row.id,
                code=item.code,
                score=item.score,
                max_score=spec.max_score,
                passed=passed,
                note=item.note,
                photo_uris=json.dumps(list(item.photo_uris)),
                work_order_id=work_order_id,
            )
        )
    row.score = sum(i.score for i in items)
    row.max_score = sum(i.max_score for i in items)
    session.add(row)
    session.add_all(items)
    return InspectionView(row, items)


async def list_inspections(
    session: AsyncSession, principal: Principal, *, operator_id: str, station_id: str, kind: int, page: Page
) -> list[InspectionView]:
    scope = operator_scope(principal)
    if operator_id and scope is not None and operator_id != scope:
        return []
    query = select(SiteInspection).order_by(col(SiteInspection.id).desc())
    if scope is not None or operator_id:
        query = query.where(SiteInspection.operator_id == (operator_id or scope))
    if station_id:
        query = query.where(SiteInspection.station_id == station_id)
    if kind:
        query = query.where(SiteInspection.kind == kind)
    if page.after:
        query = query.where(col(SiteInspection.id) < page.after)
    rows = list(await session.exec(query.limit(page.size)))
    return [InspectionView(r, await _items(session, r.id)) for r in rows]


async def _items(session: AsyncSession, inspection_id: str) -> list[SiteInspectionItem]:
    found = await session.exec(
        select(SiteInspectionItem)
        .where(SiteInspectionItem.inspection_id == inspection_id)
        .order_by(col(SiteInspectionItem.code))
    )
    return list(found)


def photo_uris(item: SiteInspectionItem) -> Sequence[str]:
    return list(json.loads(item.photo_uris))
