"""The notifier: an outbox of notifications written in the writer's transaction (`enqueue`), delivered later by
the sender (`Sender`) over pluggable channels — email (SMTP), webhook (HTTP POST), SMS (an interface; no
provider ships) — with retries, backoff and de-duplication.

`enqueue` resolves the recipient's preferences (addresses and channels on/off) at once and writes one row per
channel; a recipient with no usable channel gets one "none" row (state SKIPPED), so the audit trail shows the
notification was due. The row's `dedup_key` (the caller's key plus the channel) is unique: a repeated enqueue
(a retried RPC, two replicas firing the same SLA event) writes nothing and returns False."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import smtplib
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance.models import Notification, NotificationPreference
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database, insert_ignore
from voltcloud.platform.errors import InvalidArgument, PermissionDenied
from voltcloud.platform.feed import ChangeFeed
from voltcloud.platform.ids import new_id

log = logging.getLogger(__name__)

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
    if inserted:
        await feed.publish(session, NOTIFICATION_TOPIC, dedup_key[:200], {"recipient_id": recipient_id[:64]})
    return inserted


async def set_preferences(session: AsyncSession, principal: Principal, pref: NotificationPreference,
                          now: dt.datetime) -> NotificationPreference:  # fmt: skip
    """Stores a recipient's addresses and channels. An engineer sets their own; an operator its staff's, its
    engineers' and its own contact's; the admin anyone's."""
    _check_recipient(principal, pref)
    if pref.webhook_url and not pref.webhook_url.startswith(("http://", "https://")):
        raise InvalidArgument.for_field("preferences.webhook_url", "must be an http or https URL")
    if pref.email and "@" not in pref.email:
        raise InvalidArgument.for_field("preferences.email", "is not an email address")
    row = await session.get(NotificationPreference, (pref.recipient_kind, pref.recipient_id))
    if row is not None and not principal.is_admin and row.operator_id != pref.operator_id:
        raise PermissionDenied(f"{pref.recipient_kind} {pref.recipient_id} belongs to another operator")
    row = row or NotificationPreference(
        recipient_kind=pref.recipient_kind, recipient_id=pref.recipient_id, updated_at=now
    )
    for name in ("operator_id", "email", "phone", "webhook_url", "email_on", "sms_on", "webhook_on", "supervisor"):
        setattr(row, name, getattr(pref, name))
    row.updated_at = now
    session.add(row)
    await session.flush()
    return row


RECIPIENT_KINDS = ("staff", "engineer", "operator")


def _check_recipient(principal: Principal, pref: NotificationPreference) -> None:
    if pref.recipient_kind not in RECIPIENT_KINDS:
        raise InvalidArgument.for_field("preferences.recipient_kind", f"must be one of {', '.join(RECIPIENT_KINDS)}")
    if not pref.recipient_id:
        raise InvalidArgument.for_field("preferences.recipient_id", "is required")
    if pref.recipient_kind == "operator" and pref.operator_id != pref.recipient_id:
        raise InvalidArgument.for_field("preferences.operator_id", "must be the recipient_id for an operator contact")
    if principal.is_admin:
        return
    own = principal.tenant.id if principal.tenant and principal.tenant.kind == "operator" else None
    if own is None or pref.operator_id != own:
        raise PermissionDenied(f"{principal.subject} may not set preferences for operator {pref.operator_id}")
    if principal.role is Role.ENGINEER and (pref.recipient_kind, pref.recipient_id) != ("engineer", principal.subject):
        raise PermissionDenied("an engineer sets only their own preferences")


# ---- delivery ---------------------------------------------------------------------------------------------

NOTIFICATION_TOPIC = "notification"  # published by enqueue: wakes the senders of every replica


class Adapter(Protocol):
    """One channel's delivery. Raises on failure (the sender retries with backoff)."""

    async def send(self, address: str, subject: str, body: str, *, key: str) -> None: ...


class SmsProvider(Protocol):
    """The SMS interface: a provider plugged in by the composition root (none ships; see docs/maintenance.md)."""

    async def send_sms(self, phone: str, text: str, *, key: str) -> None: ...


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_s: float = 10.0


class EmailAdapter:
    """Email over SMTP (the standard library's client, in a thread so the loop keeps serving)."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, address: str, subject: str, body: str, *, key: str) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.config.sender, address, subject
        message["Message-ID"] = f"<{key.replace(':', '.')[:200]}@voltcloud>"  # lets a mail system drop repeats
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        c = self.config
        with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
            if c.starttls:
                smtp.starttls()
            if c.username:
                smtp.login(c.username, c.password)
            smtp.send_message(message)


class WebhookAdapter:
    """An HTTP POST of the notification as JSON; any 2xx is delivered. The `Idempotency-Key` header carries the
    notification's de-dup key, so a receiver can drop a repeat after a lost answer."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s

    async def send(self, address: str, subject: str, body: str, *, key: str) -> None:
        payload = json.dumps({"subject": subject, "body": body, "key": key}).encode()
        await asyncio.to_thread(self._post, address, payload, key)

    def _post(self, url: str, payload: bytes, key: str) -> None:
        request = urllib.request.Request(
            url, data=payload, method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": key[:200]},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            if not 200 <= response.status < 300:
                raise OSError(f"webhook answered {response.status}")


class SmsAdapter:
    def __init__(self, provider: SmsProvider) -> None:
        self.provider = provider

    async def send(self, address: str, subject: str, body: str, *, key: str) -> None:
        await self.provider.send_sms(address, f"{subject}\n{body}"[:480], key=key)


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 6
    base: dt.timedelta = dt.timedelta(seconds=30)  # 30 s, 1 min, 2 min, 4 min, 8 min
    cap: dt.timedelta = dt.timedelta(hours=1)
    lease: dt.timedelta = dt.timedelta(minutes=2)  # a claimed row another replica may retry after this

    def backoff(self, attempts: int) -> dt.timedelta:
        step: dt.timedelta = self.base * (2 ** max(attempts - 1, 0))
        return min(step, self.cap)


class Sender:
    """Delivers due outbox rows. Sleeps until the earliest due row; woken by the feed's "notification" topic
    (an enqueue on any replica). A row is claimed with a compare-and-set on `attempts` (and leased), so two
    replicas never send it at once; a replica dying mid-send leaves it to be retried after the lease."""

    def __init__(self, db: Database, clock: Clock, adapters: dict[str, Adapter], retry: Retry = Retry()) -> None:
        self.db, self.clock, self.adapters, self.retry = db, clock, adapters, retry
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def follow(self, changes: ChangeFeed) -> None:
        changes.subscribe(NOTIFICATION_TOPIC, lambda batch: self.wake())

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maintenance.notify")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
                wait = await self._seconds_to_next()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notify: delivery round failed")
                wait = 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _seconds_to_next(self) -> float | None:
        async with self.db.transaction("notify.next") as session:
            retries = select(func.min(Notification.next_attempt_at)).where(
                Notification.state == PENDING, col(Notification.attempts) > 0
            )
            due = (await session.exec(retries)).one()
        return None if due is None else max((due - self.clock.now()).total_seconds(), 0.0)

    async def deliver_due(self) -> int:
        """Sends every due row once (this round); returns how many went out."""
        now = self.clock.now()
        async with self.db.transaction("notify.due") as session:
            rows = await session.exec(
                select(Notification)
                # A new row is due at once, whatever the writer's clock said (replicas' clocks differ a little).
                .where(
                    Notification.state == PENDING,
                    sa.or_(col(Notification.attempts) == 0, col(Notification.next_attempt_at) <= now),
                )
                .order_by(col(Notification.next_attempt_at))
                .limit(100)
            )
            due = list(rows)
        sent = 0
        for row in due:
            if await self._claim(row, now):
                sent += await self._deliver(row)
        return sent

    async def _claim(self, row: Notification, now: dt.datetime) -> bool:
        async with self.db.transaction("notify.claim") as session:
            result = await session.exec(
                sa.update(Notification)
                .where(
                    col(Notification.id) == row.id,
                    col(Notification.state) == PENDING,
                    col(Notification.attempts) == row.attempts,
                )
                .values(attempts=row.attempts + 1, next_attempt_at=now + self.retry.lease)
                .execution_options(synchronize_session=False)
            )
        if result.rowcount:
            row.attempts += 1
        return bool(result.rowcount)

    async def _deliver(self, row: Notification) -> int:
        adapter = self.adapters.get(row.channel)
        error = ""
        if adapter is None:
            error = f"no {row.channel} adapter configured"
        else:
            try:
                await adapter.send(row.address, row.subject, row.body, key=row.dedup_key)
            except Exception as exc:  # any failure of the far side is retried
                error = f"{type(exc).__name__}: {exc}"[:1000]
        now = self.clock.now()
        if not error:
            values: dict[str, Any] = {"state": SENT, "sent_at": now, "last_error": ""}
        elif row.attempts >= self.retry.max_attempts or adapter is None:
            values = {"state": FAILED, "last_error": error}
        else:
            values = {"next_attempt_at": now + self.retry.backoff(row.attempts), "last_error": error}
        async with self.db.transaction("notify.done") as session:
            await session.exec(
                sa.update(Notification).where(col(Notification.id) == row.id).values(**values)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
        if error:
            log.warning("notify: %s to %s failed (attempt %d): %s", row.channel, row.recipient_id, row.attempts, error)
            return 0
        self.sent += 1
        return 1
