"""maint-field's call sites of the notifier (maint-core's `maintenance/notify.enqueue`, outbox with retries,
de-duplication and per-recipient preferences): dispatch offers and certificate-expiry reminders.

Each call is in the writer's transaction, keyed so a retried or re-run check never notifies twice."""

from __future__ import annotations

import datetime as dt

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance import notify
from voltcloud.maintenance.field_models import Engineer, EngineerCertificate


async def certificate_expiry(
    session: AsyncSession, engineer: Engineer, cert: EngineerCertificate, stage: str, now: dt.datetime
) -> bool:
    """The engineer is told their certificate lapses (or has lapsed)."""
    subject = f"Certificate {cert.kind} {cert.number}: " + (
        "lapsed" if stage == "lapsed" else f"expires on {cert.expires_at.date().isoformat()}"
    )
    body = f"{engineer.name}, your {cert.kind} certificate {cert.number} " + (
        "has lapsed: you will not be sent work that requires it until a new one is registered."
        if stage == "lapsed"
        else f"expires on {cert.expires_at.isoformat()}. Please renew it."
    )
    return await _enqueue(session, engineer, "certificate_expiry", subject, body, f"cert:{cert.id}:{stage}", now)


async def dispatch_offer(
    session: AsyncSession, engineer: Engineer, work_order_id: str, title: str, now: dt.datetime, offer_id: str
) -> bool:
    """The engineer is told of a work order offered to them (the app stream shows it too)."""
    subject = f"Work order offered: {title}"[:200]
    body = f"Work order {work_order_id} ({title}) is offered to you. Accept or decline in the app."
    return await _enqueue(session, engineer, "dispatch_offer", subject, body, f"offer:{offer_id}", now)


async def _enqueue(
    session: AsyncSession, engineer: Engineer, topic: str, subject: str, body: str, dedup_key: str, now: dt.datetime
) -> bool:
    return await notify.enqueue(
        session,
        operator_id=engineer.operator_id,
        recipient_kind="engineer",
        recipient_id=engineer.id,
        topic=topic,
        subject=subject,
        body=body,
        dedup_key=dedup_key,
        now=now,
    )
