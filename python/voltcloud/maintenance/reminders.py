"""Certificate expiry reminders: a scheduled check on the injectable clock.

Stages: 30 days before expiry, 7 days before, and lapsed. Each (certificate, stage) is reminded once: the row's
unique pair makes the check safe to run on every replica and after restarts (a lost race is a duplicate, not a
second reminder). Only the most urgent due stage is sent (a certificate first seen 3 days before expiry gets
the 7-day reminder, not both). Each reminder is published on the feed ("certificate_reminder") and handed to
the notifier (email to the engineer, copy to the operator)."""

from __future__ import annotations

import datetime as dt
from typing import cast

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import notify_hooks
from voltcloud.maintenance.field_models import CertificateReminder, Engineer, EngineerCertificate
from voltcloud.platform import feed
from voltcloud.platform.ids import new_id

REMINDER_TOPIC = "certificate_reminder"
STAGES: tuple[tuple[str, dt.timedelta], ...] = (
    ("lapsed", dt.timedelta(0)),
    ("7d", dt.timedelta(days=7)),
    ("30d", dt.timedelta(days=30)),
)
LAPSED_LOOKBACK = dt.timedelta(days=30)  # lapsed longer ago than this: reminded already, or moot
BATCH = 500


def due_stage(expires_at: dt.datetime, now: dt.datetime) -> str | None:
    for stage, before in STAGES:
        if expires_at - before <= now:
            return stage
    return None


async def next_due(session: AsyncSession, now: dt.datetime) -> dt.datetime | None:
    """When the next stage of any certificate of a serving engineer falls due after `now` (None: none will):
    for each stage, the earliest expiry whose stage time is still ahead."""
    due: list[dt.datetime] = []
    for _, before in STAGES:
        query = (
            select(sa.func.min(col(EngineerCertificate.expires_at)))
            .join(Engineer, col(Engineer.id) == col(EngineerCertificate.engineer_id))
            .where(col(EngineerCertificate.expires_at) > now + before, col(Engineer.retired_at).is_(None))
        )
        expires_at = cast("dt.datetime | None", (await session.exec(query)).one())
        if expires_at is not None:
            due.append(expires_at - before)
    return min(due, default=None)


async def remind_due(session: AsyncSession, now: dt.datetime) -> list[CertificateReminder]:
    """Writes (and announces) the reminders due at `now`; returns them."""
    query = (
        select(EngineerCertificate, Engineer)
        .join(Engineer, col(Engineer.id) == col(EngineerCertificate.engineer_id))
        .where(
            col(EngineerCertificate.expires_at) <= now + STAGES[-1][1],
            col(EngineerCertificate.expires_at) > now - LAPSED_LOOKBACK,
            col(Engineer.retired_at).is_(None),
        )
        .order_by(col(EngineerCertificate.id))
        .limit(BATCH)
    )
    candidates = list(await session.exec(query))
    if not candidates:
        return []
    ids = [c.id for c, _ in candidates]
    sent = await session.exec(
        select(CertificateReminder.certificate_id, CertificateReminder.stage).where(
            col(CertificateReminder.certificate_id).in_(ids)
        )
    )
    done = {(cid, stage) for cid, stage in sent}
    written = []
    for cert, engineer in candidates:
        stage = due_stage(cert.expires_at, now)
        if stage is None or (cert.id, stage) in done:
            continue
        if _more_urgent_sent(done, cert.id, stage):
            continue
        reminder = CertificateReminder(
            id=new_id("crem"),
            certificate_id=cert.id,
            engineer_id=cert.engineer_id,
            operator_id=cert.operator_id,
            stage=stage,
            expires_at=cert.expires_at,
            sent_at=now,
        )
        session.add(reminder)
        payload = {
            "certificate_id": cert.id,
            "engineer_id": cert.engineer_id,
            "operator_id": cert.operator_id,
            "kind": cert.kind,
            "stage": stage,
            "expires_at": cert.expires_at,
        }
        await feed.publish(session, REMINDER_TOPIC, cert.id, payload)
        await notify_hooks.certificate_expiry(session, engineer, cert, stage, now)
        written.append(reminder)
    return written


def _more_urgent_sent(done: set[tuple[str, str]], certificate_id: str, stage: str) -> bool:
    order = [s for s, _ in STAGES]
    return any((certificate_id, s) in done for s in order[: order.index(stage)])
