"""The settlement scheduler: one asyncio task that periodically

- expires holds past their expiry (freeing the customers' available balance),
- runs the T+3 operator payouts once per local day (batch key `scheduler:payouts:<date>`),
- generates the previous month's bills from the 1st of each month, local time of each account's owner
  (operators: the time zone of their stations; fleets and drivers: the platform's default zone).

Every job is idempotent (hold rows are locked, payout batches and monthly bills are keyed), so several
`voltcloud serve` replicas may each run a scheduler: the second one replays what the first did. A tick that
fails is logged and retried at the next tick. Tests call the job functions directly with a `FrozenClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.settlement import billing, payouts
from voltcloud.settlement.holds import SYSTEM_CLOCK, expire_due_holds
from voltcloud.settlement.models import LedgerAccount
from voltcloud.settlement.money import AccountKind
from voltcloud.settlement.providers import DEFAULT_PROVIDERS, ProviderRegistry
from voltcloud.stations.api import Station  # read-only: an operator's local time zone

log = logging.getLogger(__name__)

EXPIRY_BATCH = 500
BILLED_KINDS = (AccountKind.CUSTOMER, AccountKind.FLEET, AccountKind.OPERATOR)


@dataclass(frozen=True)
class TickResult:
    holds_expired: int
    payouts_made: int
    bills_generated: int


def previous_month(local: dt.datetime) -> tuple[int, int]:
    return (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)


async def expire_holds(db: Database, *, clock: Clock = SYSTEM_CLOCK) -> int:
    """Expires every due hold, in transactions of at most EXPIRY_BATCH holds."""
    total = 0
    while True:
        async with db.transaction("settlement.scheduler.expire_holds") as session:
            expired = await expire_due_holds(session, clock=clock, limit=EXPIRY_BATCH)
        total += expired
        if expired < EXPIRY_BATCH:
            return total


async def run_daily_payouts(
    db: Database,
    *,
    clock: Clock = SYSTEM_CLOCK,
    tz: str = "Asia/Shanghai",
    provider: str = "simulated",
    providers: ProviderRegistry = DEFAULT_PROVIDERS,
) -> int:
    """Today's (local date) T+3 payout batch; a second run the same day replays it. Returns payouts made."""
    day = clock.now().astimezone(ZoneInfo(tz)).date()
    async with db.transaction("settlement.scheduler.payouts") as session:
        made = await payouts.run_payouts(
            session,
            idempotency_key=f"scheduler:payouts:{day.isoformat()}",
            provider=provider,
            clock=clock,
            providers=providers,
        )
    return len(made)


async def account_time_zones(db: Database, *, default_tz: str) -> dict[str, list[str]]:
    """Billed account ids grouped by their owner's time zone."""
    async with db.transaction("settlement.scheduler.time_zones") as session:
        rows = list(
            await session.exec(
                select(LedgerAccount.id, LedgerAccount.kind, LedgerAccount.owner_id).where(
                    col(LedgerAccount.kind).in_([int(k) for k in BILLED_KINDS])
                )
            )
        )
        zones: dict[str, Counter[str]] = defaultdict(Counter)
        for operator_id, zone in await session.exec(select(Station.operator_id, Station.timezone)):
            zones[operator_id][zone] += 1
    grouped: dict[str, list[str]] = defaultdict(list)
    for account_id, kind, owner_id in rows:
        tz = default_tz
        if kind == AccountKind.OPERATOR and zones.get(owner_id):
            tz = min(zones[owner_id].items(), key=lambda item: (-item[1], item[0]))[0]  # most stations
        grouped[tz].append(account_id)
    return dict(grouped)


async def run_monthly_bills(
    db: Database, *, clock: Clock = SYSTEM_CLOCK, default_tz: str = "Asia/Shanghai", done: set[str] | None = None
) -> int:
    """Bills the previous local month of every time zone's accounts (from 00:00 on the 1st, local time).
    `done` remembers "<tz>:<yyyy-mm>" already billed by this process; replays are harmless but cost queries."""
    made = 0
    for tz, account_ids in sorted((await account_time_zones(db, default_tz=default_tz)).items()):
        year, month = previous_month(clock.now().astimezone(ZoneInfo(tz)))
        marker = f"{tz}:{year:04d}-{month:02d}"
        if done is not None and marker in done:
            continue
        async with db.transaction("settlement.scheduler.monthly_bills") as session:
            bills = await billing.generate_monthly_bills(
                session, year=year, month=month, tz=tz, clock=clock, account_ids=account_ids
            )
        made += len(bills)
        if done is not None:
            done.add(marker)
    return made


class SettlementScheduler:
    """Runs the jobs every `interval_s` seconds (first run one interval after start); 0 = disabled."""

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float,
        clock: Clock = SYSTEM_CLOCK,
        default_tz: str = "Asia/Shanghai",
        payout_provider: str = "simulated",
        providers: ProviderRegistry = DEFAULT_PROVIDERS,
    ) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must be >= 0")
        self._db = db
        self._interval = interval_s
        self._clock = clock
        self._tz = default_tz
        self._provider = payout_provider
        self._providers = providers
        self._billed: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._interval <= 0 or self.running:
            return
        self._task = asyncio.create_task(self._loop(), name="settlement-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def run_once(self) -> TickResult:
        """One tick: each job on its own, so one failing does not stop the others."""
        results: list[int] = []
        jobs: tuple[tuple[str, Callable[[], Awaitable[int]]], ...] = (
            ("expire holds", lambda: expire_holds(self._db, clock=self._clock)),
            (
                "payouts",
                lambda: run_daily_payouts(
                    self._db, clock=self._clock, tz=self._tz, provider=self._provider, providers=self._providers
                ),
            ),
            (
                "monthly bills",
                lambda: run_monthly_bills(self._db, clock=self._clock, default_tz=self._tz, done=self._billed),
            ),
        )
        for name, job in jobs:
            try:
                results.append(await job())
            except Exception:
                log.exception("settlement scheduler: %s failed; retrying next tick", name)
                results.append(0)
        self.ticks += 1
        return TickResult(*results)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            result = await self.run_once()
            if any((result.holds_expired, result.payouts_made, result.bills_generated)):
                log.info(
                    "settlement scheduler: %d holds expired, %d payouts, %d bills",
                    result.holds_expired,
                    result.payouts_made,
                    result.bills_generated,
                )
