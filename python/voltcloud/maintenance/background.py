"""Maintenance's running parts in one process: the alarm hub (WatchAlarms), the SLA timer and the notification
sender, configured from the settings and started by the composition root after the change feed."""

from __future__ import annotations

import datetime as dt
import importlib

from voltcloud.config import Settings
from voltcloud.maintenance import alarms, notify, risk
from voltcloud.maintenance.sla_timer import SlaTimer
from voltcloud.maintenance.watch import AlarmHub
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.feed import ChangeFeed


def adapters(settings: Settings) -> dict[str, notify.Adapter]:
    out: dict[str, notify.Adapter] = {}
    if settings.smtp_host:
        out[notify.EMAIL] = notify.EmailAdapter(
            notify.SmtpConfig(
                settings.smtp_host, settings.smtp_port, settings.smtp_sender, settings.smtp_username,
                settings.smtp_password, settings.smtp_starttls,
            )
        )  # fmt: skip
    if settings.notify_webhooks:
        out[notify.WEBHOOK] = notify.WebhookAdapter()
    if settings.sms_provider:
        module, _, factory = settings.sms_provider.partition(":")
        provider: notify.SmsProvider = getattr(importlib.import_module(module), factory)(settings)
        out[notify.SMS] = notify.SmsAdapter(provider)
    return out


class MaintenanceWorkers:
    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.hub = AlarmHub(db)
        self.timer = SlaTimer(db, clock)
        retry = notify.Retry(settings.notify_max_attempts, dt.timedelta(seconds=settings.notify_backoff_s))
        self.sender = notify.Sender(db, clock, adapters(settings), retry)
        alarms.configure(
            alarms.FlapRule(
                settings.maintenance_flap_threshold, dt.timedelta(seconds=settings.maintenance_flap_window_s)
            )
        )
        risk.configure(
            risk.RiskRules(
                settings.maintenance_risk_recurrence_count,
                dt.timedelta(seconds=settings.maintenance_risk_recurrence_window_s),
                settings.maintenance_risk_soh_months,
            )
        )
        channels = self.sender.adapters
        notify.configure_channels(
            notify.Channels(notify.EMAIL in channels, notify.SMS in channels, notify.WEBHOOK in channels)
        )

    def follow(self, changes: ChangeFeed) -> None:
        self.hub.follow(changes)
        self.timer.follow(changes)
        self.sender.follow(changes)

    def start(self) -> None:
        if self.settings.maintenance_timers:
            self.timer.start()
            self.sender.start()

    async def stop(self) -> None:
        await self.timer.stop()
        await self.sender.stop()
