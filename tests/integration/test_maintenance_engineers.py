"""Engineers, the certificate registry and its expiry reminders, site inspections and safety incidents, over
real gRPC against a demo platform on SQLite and PostgreSQL (issue 14, maint-field)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlmodel import col, select

from tests.integration.conftest import RunningPlatform, field_violations
from tests.integration.maintenance_support import SmtpServer, maintenance_platform, smtp_server
from voltcloud.api.v1 import common_pb2, maintenance_pb2
from voltcloud.maintenance.field_models import CertificateReminder
from voltcloud.maintenance.models import Notification, WorkOrder
from voltcloud.platform.auth import Role
from voltcloud.platform.clock import FrozenClock
from voltcloud.platform.feed import Change
from voltcloud.server import Platform

from .maintenance_field_support import OTHER, certify, md, operator, register, stations_of, stub, ts


async def test_engineer_profile_lifecycle_and_tenancy(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    platform, api = running.platform, stub(channel)
    boss, rival = operator(platform), operator(platform, OTHER)
    eng = await register(api, boss, "e1", name="Wang", at=(31.23, 121.47), skills=("hv", "swap_robot"))
    assert eng.engineer_id and eng.version == 1 and list(eng.skills) == ["hv", "swap_robot"] and eng.available

    window = common_pb2.TimeWindow(
        start=ts(dt.datetime(2030, 1, 1, 8, tzinfo=dt.UTC)), end=ts(dt.datetime(2030, 1, 1, 20, tzinfo=dt.UTC))
    )
    box = common_pb2.BoundingBox(
        south_west=common_pb2.LatLng(lat=31.0, lng=121.0), north_east=common_pb2.LatLng(lat=31.5, lng=122.0)
    )
    profile = maintenance_pb2.Engineer(
        engineer_id=eng.engineer_id, name="Wang Wei", skills=["hv"], equipment_kinds=["station", "robot"],
        regions=[box], shifts=[window], home_position=common_pb2.LatLng(lat=31.2, lng=121.4), email="w@example.com",
    )  # fmt: skip
    updated = (
        await api.UpdateEngineer(
            maintenance_pb2.UpdateEngineerRequest(idempotency_key="u1", engineer=profile, expected_version=1),
            metadata=boss,
        )
    ).engineer
    assert updated.version == 2 and updated.name == "Wang Wei" and list(updated.equipment_kinds) == ["robot", "station"]
    assert len(updated.regions) == 1 and len(updated.shifts) == 1

    with pytest.raises(grpc.aio.AioRpcError) as stale:  # optimistic check
        await api.UpdateEngineer(
            maintenance_pb2.UpdateEngineerRequest(idempotency_key="u2", engineer=profile, expected_version=1),
            metadata=boss,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED

    bad = maintenance_pb2.Engineer(engineer_id=eng.engineer_id, name="x", equipment_kinds=["toaster"])
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await api.UpdateEngineer(
            maintenance_pb2.UpdateEngineerRequest(idempotency_key="u3", engineer=bad), metadata=boss
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(invalid.value) == ["engineer.equipment_kinds[0]"]

    with pytest.raises(grpc.aio.AioRpcError) as hidden:  # another operator cannot even see it
        await api.GetEngineer(maintenance_pb2.GetEngineerRequest(engineer_id=eng.engineer_id), metadata=rival)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    engineer_md = md(platform, eng.engineer_id, Role.ENGINEER)
    seen = await api.GetEngineer(maintenance_pb2.GetEngineerRequest(engineer_id=eng.engineer_id), metadata=engineer_md)
    assert seen.engineer.name == "Wang Wei"

    listed = await api.ListEngineers(maintenance_pb2.ListEngineersRequest(skill="hv"), metadata=boss)
    assert eng.engineer_id in [e.engineer_id for e in listed.engineers]
    assert not (await api.ListEngineers(maintenance_pb2.ListEngineersRequest(), metadata=rival)).engineers

    retired = await api.RetireEngineer(
        maintenance_pb2.RetireEngineerRequest(idempotency_key="r1", engineer_id=eng.engineer_id, reason="left"),
        metadata=boss,
    )
    assert retired.engineer.retired and not retired.engineer.available
    listed = await api.ListEngineers(maintenance_pb2.ListEngineersRequest(), metadata=boss)
    assert eng.engineer_id not in [e.engineer_id for e in listed.engineers]


async def test_certificates_and_expiry_reminders_on_the_moving_clock(tmp_path: Path, database_url: str) -> None:
    start = dt.datetime(2031, 3, 1, 9, tzinfo=dt.UTC)
    clock = FrozenClock(start)
    async with (
        smtp_server() as smtp,
        maintenance_platform(
            tmp_path, database_url, clock, smtp_host="127.0.0.1", smtp_port=smtp.port, maintenance_field_sweep_s=0
        ) as (platform, api),
    ):
        await _reminders(platform, api, clock, start, smtp)


async def _reminders(platform: Platform, api: Any, clock: FrozenClock, start: dt.datetime, smtp: SmtpServer) -> None:
    boss = operator(platform)
    heard: list[Change] = []
    platform.feed.subscribe("certificate_reminder", heard.extend)

    eng = await register(api, boss, "c-e", name="Li", at=(31.2, 121.4))
    with pytest.raises(grpc.aio.AioRpcError) as backwards:
        await certify(api, boss, "c0", eng.engineer_id, issued=start, expires=start - dt.timedelta(days=1))
    assert field_violations(backwards.value) == ["certificate.expire_time"]
    cert = await certify(
        api, boss, "c1", eng.engineer_id, issued=start - dt.timedelta(days=700), expires=start + dt.timedelta(days=10)
    )
    assert not cert.lapsed
    soon = await api.ListCertificates(
        maintenance_pb2.ListCertificatesRequest(expires_before=ts(start + dt.timedelta(days=30))), metadata=boss
    )
    assert [c.certificate_id for c in soon.certificates] == [cert.certificate_id]
    rival = operator(platform, OTHER)
    assert not (await api.ListCertificates(maintenance_pb2.ListCertificatesRequest(), metadata=rival)).certificates

    async def stages() -> list[str]:
        async with platform.db.transaction() as session:
            rows = await session.exec(
                select(CertificateReminder.stage)
                .where(CertificateReminder.certificate_id == cert.certificate_id)
                .order_by(col(CertificateReminder.sent_at))
            )
            return list(rows)

    assert (await platform.field_hub.sweep_once())[1] == 1  # 10 days left: the 30-day reminder
    assert (await platform.field_hub.sweep_once())[1] == 0  # once only
    # The sweep sleeps until the next stage: the 7-day one, 3 days from now (not a period, not the expiry).
    assert await platform.field_hub.next_due() == start + dt.timedelta(days=3)
    clock.advance(dt.timedelta(days=4))
    await platform.field_hub.sweep_once()
    clock.advance(dt.timedelta(days=7))
    await platform.field_hub.sweep_once()
    assert await stages() == ["30d", "7d", "lapsed"]
    got = (
        await api.GetEngineer(maintenance_pb2.GetEngineerRequest(engineer_id=eng.engineer_id), metadata=boss)
    ).engineer
    assert got.certificates[0].lapsed
    async with platform.db.transaction() as session:
        queued = list(await session.exec(select(Notification).where(Notification.recipient_id == eng.engineer_id)))
    assert len({n.dedup_key.rsplit(":", 1)[0] for n in queued}) == 3  # one notification per stage, via the outbox
    # The profile's email is the engineer's address: each reminder went out by email (a real SMTP server).
    assert sorted((n.channel, n.address) for n in queued) == [("email", "li@example.com")] * 3
    mails = await smtp.wait_for(3)
    assert sorted(m["To"] for m in mails) == ["li@example.com"] * 3
    assert any("lapsed" in str(m["Subject"]) for m in mails)
    await platform.feed.catch_up()
    assert [c.payload["stage"] for c in heard if c.key == cert.certificate_id] == ["30d", "7d", "lapsed"]


async def test_six_s_inspection_opens_follow_ups_and_reconciliation(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform, api = running.platform, stub(channel)
    boss = operator(platform)
    inspector = md(platform, "eng-inspector", Role.ENGINEER)
    station = (await stations_of(platform))[0]
    codes = {
        "sort.no_idle_items": 5, "set_in_order.tools_labelled": 4, "shine.bays_clean": 2,
        "standardize.signage": 5, "sustain.last_actions_closed": 3, "safety.fire_equipment": 3,
        "safety.emergency_stops": 5,
    }  # fmt: skip
    items = [
        maintenance_pb2.InspectionItem(code=c, score=s, photo_uris=[f"https://p/{c}.jpg"]) for c, s in codes.items()
    ]
    request = maintenance_pb2.SubmitSiteInspectionRequest(
        idempotency_key="six", kind=maintenance_pb2.SITE_INSPECTION_KIND_SIX_S, station_id=station.id, items=items
    )
    done = (await api.SubmitSiteInspection(request, metadata=inspector)).inspection
    assert (done.score, done.max_score) == (27, 35)
    failed = {i.code: i.work_order_id for i in done.items if not i.passed}
    assert set(failed) == {"shine.bays_clean", "safety.fire_equipment"} and all(failed.values())
    async with platform.db.transaction() as session:
        orders = [await session.get(WorkOrder, w) for w in failed.values()]
    assert all(o is not None and o.station_id == station.id and o.source == 2 for o in orders)
    again = (await api.SubmitSiteInspection(request, metadata=inspector)).inspection  # a retry: nothing new
    assert again.inspection_id == done.inspection_id

    with pytest.raises(grpc.aio.AioRpcError) as partial:
        await api.SubmitSiteInspection(
            maintenance_pb2.SubmitSiteInspectionRequest(
                idempotency_key="p", kind=maintenance_pb2.SITE_INSPECTION_KIND_SIX_S, station_id=station.id,
                items=items[:3],
            ),
            metadata=inspector,
        )  # fmt: skip
    assert partial.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(partial.value) == ["items"]

    recon = [
        maintenance_pb2.InspectionItem(code=c, score=1)
        for c in ("recon.sessions_match_orders", "recon.payments_match", "recon.packs_counted",
                  "recon.energy_meter_read", "recon.alarms_reviewed")
    ]  # fmt: skip
    daily = await api.SubmitSiteInspection(
        maintenance_pb2.SubmitSiteInspectionRequest(
            idempotency_key="d", kind=maintenance_pb2.SITE_INSPECTION_KIND_DAILY_RECONCILIATION,
            station_id=station.id, items=recon, business_date="2031-03-01",
        ),
        metadata=inspector,
    )  # fmt: skip
    assert daily.inspection.score == daily.inspection.max_score == 5
    listed = await api.ListSiteInspections(
        maintenance_pb2.ListSiteInspectionsRequest(station_id=station.id), metadata=boss
    )
    assert [i.inspection_id for i in listed.inspections] == [daily.inspection.inspection_id, done.inspection_id]
    rival = operator(platform, OTHER)
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await api.SubmitSiteInspection(request, metadata=rival)
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND


async def test_safety_incident_report_and_closure(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    platform, api = running.platform, stub(channel)
    boss, engineer = operator(platform), md(platform, "eng-safety", Role.ENGINEER)
    station = (await stations_of(platform))[0]
    incident = maintenance_pb2.SafetyIncident(
        severity=maintenance_pb2.INCIDENT_SEVERITY_MAJOR, station_id=station.id,
        occur_time=ts(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)),
        description="Pack slipped from the robot gripper in bay 2", people=["Wang Wei", "Li Na"],
        actions=["area cordoned", "robot locked out"], photo_uris=["https://p/bay2.jpg"],
    )  # fmt: skip
    made = (
        await api.ReportSafetyIncident(
            maintenance_pb2.ReportSafetyIncidentRequest(idempotency_key="i1", incident=incident), metadata=engineer
        )
    ).incident
    assert made.operator_id == "op-0001" and list(made.people) == ["Wang Wei", "Li Na"] and not made.closed
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.ReportSafetyIncident(
            maintenance_pb2.ReportSafetyIncidentRequest(
                idempotency_key="i2", incident=maintenance_pb2.SafetyIncident(description="x", station_id=station.id)
            ),
            metadata=engineer,
        )
    assert field_violations(missing.value) == ["incident.severity"]
    open_now = await api.ListSafetyIncidents(maintenance_pb2.ListSafetyIncidentsRequest(open_only=True), metadata=boss)
    assert made.incident_id in [i.incident_id for i in open_now.incidents]
    closed = await api.CloseSafetyIncident(
        maintenance_pb2.CloseSafetyIncidentRequest(
            idempotency_key="c1", incident_id=made.incident_id, resolution="gripper pads replaced; SOP updated"
        ),
        metadata=boss,
    )
    assert closed.incident.closed and closed.incident.resolution.startswith("gripper")
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await api.CloseSafetyIncident(
            maintenance_pb2.CloseSafetyIncidentRequest(
                idempotency_key="c2", incident_id=made.incident_id, resolution="x"
            ),
            metadata=boss,
        )
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    rival = operator(platform, OTHER)
    assert not (await api.ListSafetyIncidents(maintenance_pb2.ListSafetyIncidentsRequest(), metadata=rival)).incidents
