"""The running one-click power-up: engine, order feed, dispatch hub and their background loops.

A composition module beside `server.py` (not inside a room): it wires ordering's `Dispatcher` port to
dispatch, which sits above ordering.

Built by the composition root (`server.Platform.start`). On start the engine is rebuilt from the database,
so a restarted server resumes every in-flight order (orders, tasks, offers and reservations all live in the
database; nothing is kept only in memory). From then on the engine follows the change feed (`self.changes`,
started by the composition root before the engine loads): no timer reads domain tables to learn changes; a slow
reconciliation (`engine_reconcile_interval_s`) only repairs what the feed could not bring.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.config import Settings
from voltcloud.dispatch.api import DISPATCH_TOPIC, DispatchHub, OrderTasks, planning
from voltcloud.engine import Engine, OptionRequest
from voltcloud.fleet.api import Vehicle
from voltcloud.ordering import orders, reservations, roads, station_sessions
from voltcloud.ordering.lifecycle import ORDER_TOPIC, OrderFeed, UnitOfWork
from voltcloud.ordering.profiles import Profiles
from voltcloud.ordering.quote_store import QuoteStore
from voltcloud.ordering.quoting import QuotePath, profile_of
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database
from voltcloud.platform.enums import PowerUpMode
from voltcloud.platform.feed import Change, ChangeFeed
from voltcloud.settlement.api import PriceBook
from voltcloud.stations.api import SessionLink, SessionReport, StationCommands
from voltcloud.telemetry.api import PowerUpHint

log = logging.getLogger(__name__)

CONGESTION_PURGE_S = 60.0  # expired congestion entries leave the engine's memory (no database involved)


class PowerUp:
    def __init__(
        self, settings: Settings, db: Database, clock: Clock | None = None, feed: ChangeFeed | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.changes = feed or ChangeFeed(db)  # the change feed this replica follows
        self.clock: Clock = clock or SystemClock()
        self.engine = Engine(rebuild_debounce_s=settings.engine_rebuild_debounce_s)
        self.feed = OrderFeed(self.changes)  # WatchOrder streams follow the feed's order topics
        self.uow = UnitOfWork(db, self.engine, self.feed)
        self.hub = DispatchHub(self.uow, self.clock, settings)
        self.hub.follow(self.changes)  # offers made on other replicas reach the app streams held here
        self.quote_path = QuotePath(PriceBook(db), Profiles(db), QuoteStore(db))
        self.quote_path.book.subscribe(self.changes)  # rate models: recompiled when one changes anywhere
        self.quote_path.profiles.subscribe(self.changes)  # vehicles, drivers, profiles, completed orders
        self.deps = orders.OrderingDeps(self.uow, self.clock, settings, OrderTasks(self.hub), self.quote_path)
        self.station_commands: StationCommands | None = None  # set by the composition root
        self._loops: list[asyncio.Task[None]] = []
        self._sweep_wake = asyncio.Event()
        self._road_seen: set[str] = set()
        self._follow(self.changes)

    def _follow(self, changes: ChangeFeed) -> None:
        """Subscribes the engine to the feed before it loads, so a change committed meanwhile is not missed (the
        engine keeps the changes delivered during a load and applies them, version-checked, to the new view)."""
        engine, db = self.engine, self.db
        changes.subscribe("inventory", functools.partial(engine.follow_inventory, db))
        changes.subscribe("station", functools.partial(engine.follow_stations, db))
        changes.subscribe("pack", functools.partial(engine.follow_packs, db))
        changes.subscribe("unit", functools.partial(engine.follow_units, db))
        changes.subscribe(roads.ROAD_CONDITION_TOPIC, self._road_conditions)
        # A new order, offer or reservation may fall due before the sweep's next planned run.
        changes.subscribe(ORDER_TOPIC, self._wake_sweep)
        changes.subscribe(DISPATCH_TOPIC, self._wake_sweep)
        changes.subscribe(reservations.RESERVATION_TOPIC, self._wake_sweep)

    def _wake_sweep(self, _batch: Sequence[Change]) -> None:
        self._sweep_wake.set()

    def _road_conditions(self, batch: Sequence[Change]) -> None:
        for change in batch:
            roads.apply_published(self.engine, self._road_seen, change.payload)

    async def start(self, *, background: bool = True) -> None:
        counts = await self.engine.load(self.db)
        await self.quote_path.book.load()
        self.quote_path.store.start()
        await self.replay_road_conditions()
        log.info("engine built from the database: %s", counts)
        if not background:
            return
        s = self.settings
        self._loops.append(asyncio.create_task(self._sweep_when_due()))
        self._loops.append(asyncio.create_task(self._every(CONGESTION_PURGE_S, "congestion purge", self._purge)))
        if s.engine_reconcile_interval_s > 0:
            self._loops.append(
                asyncio.create_task(self._every(s.engine_reconcile_interval_s, "engine reconcile", self.reconcile))
            )
        if s.reoptimize_interval_s > 0:
            self._loops.append(
                asyncio.create_task(self._every(s.reoptimize_interval_s, "reoptimize", self._reoptimize))
            )

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        self._loops.clear()
        await self.quote_path.store.stop()  # quotes answered but not yet written
        await self.engine.stop()

    async def station_session(self, session: AsyncSession, report: SessionReport) -> SessionLink | None:
        """Subscriber of station sessions (wired by the composition root): moves self-service orders."""
        return await station_sessions.on_station_session(self.uow, self.clock, session, report)

    async def sweep_once(self) -> None:
        """Lapsed offers re-dispatched, orders not started in time expired, no-show reservations freed."""
        await self.hub.sweep_once()
        await orders.expire_due(self.deps)
        await reservations.expire_no_shows(self.uow, self.clock, self.settings)

    async def next_due(self) -> dt.datetime | None:
        """When the sweep next has work: the earliest offer lapse, order expiry or reservation no-show."""
        async with self.db.transaction("ordering.sweep.next") as session:
            due = [await orders.next_expiry(session), await reservations.next_no_show(session, self.settings)]
        due.append(await self.hub.next_due())
        return min((t for t in due if t is not None), default=None)

    async def _sweep_when_due(self) -> None:
        """Sweeps when something falls due, not on a timer: an idle replica with nothing pending sleeps
        `sweep_idle_s`. A change announcing a new order, offer or reservation wakes it to look again;
        two sweeps are at least `sweep_interval_s` apart."""
        s = self.settings
        loop = asyncio.get_running_loop()
        while True:
            self._sweep_wake.clear()  # a change committed from here on wakes the wait below
            started = loop.time()
            try:
                await self.sweep_once()
                due = await self.next_due()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a background job must never die: log and go on
                log.warning("sweep failed: %s", error, exc_info=log.isEnabledFor(logging.DEBUG))
                due = None
            until_due = s.sweep_idle_s if due is None else (due - self.clock.now()).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_wake.wait(), min(max(until_due, 0.0), s.sweep_idle_s))
            await asyncio.sleep(max(0.0, started + s.sweep_interval_s - loop.time()))

    async def reconcile(self) -> int:
        """The slow repair: every status compared with the database, stored road conditions replayed. Returns
        the number of resources the feed had not brought (-1: the engine was rebuilt)."""
        repaired = await self.engine.sync(self.db)
        await self.replay_road_conditions()
        if repaired:
            log.info("engine reconciliation repaired %s", "a rebuild" if repaired < 0 else f"{repaired} resources")
        return repaired

    async def _purge(self) -> None:
        self.engine.travel_model.purge_expired(int(self.clock.now().timestamp()))

    async def replay_road_conditions(self) -> int:
        """Road-condition batches stored before this engine loaded (or missed by the feed) into this engine."""
        since = self.clock.now() - dt.timedelta(days=1)
        async with self.db.transaction("ordering.road_conditions.replay") as session:
            return await roads.replay_new(session, self.engine, self._road_seen, since)

    async def _reoptimize(self) -> None:
        await planning.reoptimize(self.uow, self.clock, self.settings, self.hub)

    async def _every(self, period_s: float, name: str, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a background job must never die: log and go on
                log.warning("%s failed: %s", name, error, exc_info=log.isEnabledFor(logging.DEBUG))


LOW_BATTERY_TARGET_PERMILLE = 900  # what a one-click power-up offered by a low-battery alert aims at
_DRIVE_TO = frozenset({int(PowerUpMode.SWAP), int(PowerUpMode.CHARGE)})


class EngineFinder:
    """Telemetry's `PowerUpFinder` port: the engine's soonest reachable swap or charge option for a vehicle
    (the engine's options already exclude what the vehicle cannot reach on its SOC)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def nearest(
        self, session: AsyncSession, vehicle: Vehicle, lat: float, lng: float, soc_permille: int, now: dt.datetime
    ) -> PowerUpHint | None:
        request = OptionRequest(
            vehicle=profile_of(vehicle), lat=lat, lng=lng, soc_permille=soc_permille,
            target_soc_permille=max(LOW_BATTERY_TARGET_PERMILLE, soc_permille), modes=_DRIVE_TO, now=now,
            max_options=4,
        )  # fmt: skip
        try:
            options = self.engine.options(request)
        except Exception:  # an engine not loaded yet or a refused request: the alert goes out without a hint
            log.exception("no power-up option for low-battery alert of %s", vehicle.id)
            return None
        if not options:
            return None
        best = min(options, key=lambda o: (o.eta_s, o.distance_m))
        return PowerUpHint(
            mode=best.mode, station_id=best.station_id or "", distance_m=best.distance_m, eta_s=best.eta_s,
            arrival_soc_permille=best.arrival_soc_permille, vehicle_id=vehicle.id, lat=lat, lng=lng,
            soc_permille=soc_permille, target_soc_permille=request.target_soc_permille,
        )  # fmt: skip
