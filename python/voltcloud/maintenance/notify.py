"""The notifier: an outbox of notifications written in the writer's transaction (`enqueue`), delivered later by
the sender (`Sender`) over pluggable channels — email (SMTP), webhook (HTTP POST), SMS (an interface; no
provider ships) — with retries, backoff and de-duplication.

`enqueue` resolves the recipient's preferences (addresses and channels on/off) at once and writes one row per
channel; a recipient with no usable channel gets one "none" row (state SKIPPED), so the audit trail shows the
notification was due. The row's `dedup_key` (the caller's key plus the channel) is unique: a repeated enqueue
(a retried RPC, two replicas firing the same SLA event) writes nothing and returns False."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance.models import Notification, NotificationPreference
from voltcloud.platform.db import insert_ignore
from voltcloud.platform.ids import new_id

PENDING, SENT, FAILED, SKIPPED = 1, 2, 3, 4
EMAIL, SMS, WEBHOOK, NONE = "email", "sms", "webhook", "none"
# Topics whose message is "progress": sent by SMS when SMS is configured and the recipient takes it, else email.
PROGRESS_TOPICS = frozenset({"work_order.progress"})


@dataclass(frozen=True)
class Channels:
    """Which channels this process can deliver on (the sender's adapters)."""

    email: bool = True
    sms: bool = False
    webhook: bool = True


_channels = Channels()


def configure_channels(channels: Channels) -> None:
    """Set by the composition root from the settings: enqueue plans only channels that can be delivered."""
    global _channels
    _channels = channels


def plan(pref: NotificationPreference | None, topic: str, channels: Channels) -> list[tuple[str, str]]:
    """(channel, address) pairs for one notification to this recipient."""
    if pref is None:
        return []
    email = [(EMAIL, pref.email)] if pref.email and pref.email_on and channels.email else []
    sms = [(SMS, pref.phone)] if pref.phone and pref.sms_on and channels.sms else []
    webhook = [(WEBHOOK, pref.webhook_url)] if pref.webhook_url and pref.webhook_on and channels.webhook else []
    if topic in PROGRESS_TOPICS:
        return (sms or email) + webhook
    return email + sms + webhook


async def enqueue(
    session: AsyncSession,
    *,
    operator_id: str | None,
    recipient_kind: str,
    recipient_id: str,
    topic: str,
    subject: str,
    body: str,
    dedup_key: str,
    now: dt.datetime,
) -> bool:
    """Queues a notification in the caller's transaction; False when `dedup_key` was queued before."""
    pref = await session.get(NotificationPreference, (recipient_kind, recipient_id))
    targets = plan(pref, topic, _channels) or [(NONE, "")]
    inserted = False
    for channel, address in targets:
        row = {
            "id": new_id("ntf"),
            "dedup_key": f"{dedup_key[:280]}:{channel}",
            "operator_id": operator_id,
            "recipient_kind": recipient_kind[:32],
            "recipient_id": recipient_id[:64],
            "channel": channel,
            "address": address,
            "topic": topic[:64],
            "subject": subject[:300],
            "body": body[:10_000],
            "state": SKIPPED if channel == NONE else PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "last_error": "no channel" if channel == NONE else "",
        }
        inserted = await insert_ignore(session, Notification, row) or inserted
    return inserted
