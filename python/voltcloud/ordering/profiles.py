"""Vehicles, drivers and customers' preferences held in memory for QuotePowerUp.

What a quote reads before it asks the engine (the vehicle and who may order for it, the customer's profile
and last completed orders) changes rarely and is read on every quote. This cache holds it, kept current by
the change feed: topics `vehicle`, `driver` and `customer_profile` (key: the row's id / subject) drop the
entry, topic `order` with a completed state drops the preferences of the order's `created_by`. A miss reads
the database, as before; a row that is not there is never cached (a refusal always re-reads).

The permission decision itself is `quoting.may_order_for`, the same function the database path uses: only
where its facts come from differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from sqlmodel import col, select

from voltcloud.fleet.api import Driver, Vehicle
from voltcloud.ordering.ranking import Preferences
from voltcloud.ordering.states import OrderState
from voltcloud.platform.db import Database
from voltcloud.platform.feed import Change, ChangeFeed

MAX_ENTRIES = 200_000  # per map; beyond it the map is cleared (a cache, the database stays the truth)
READ_BATCH = 500  # ids per query of a coalesced read (well inside SQLite's bound parameters)

Row = TypeVar("Row", Vehicle, Driver)


class Profiles:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._vehicles: dict[str, Vehicle] = {}
        self._drivers: dict[str, Driver] = {}
        self._preferences: dict[str, Preferences] = {}  # subject → preferences (soc_permille set per quote)
        self.hits = 0
        self.misses = 0
        # Bumped by every invalidation: a read that started before one must not store what it read.
        self.generation = 0
        self._vehicle_reads = _Reads(self, Vehicle, self._vehicles)
        self._driver_reads = _Reads(self, Driver, self._drivers)

    async def vehicle(self, vehicle_id: str) -> Vehicle | None:
        found = self._vehicles.get(vehicle_id)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        return await self._vehicle_reads.get(vehicle_id)

    async def driver(self, driver_id: str) -> Driver | None:
        found = self._drivers.get(driver_id)
        if found is not None:
            return found
        return await self._driver_reads.get(driver_id)

    def preferences_of(self, subject: str) -> Preferences | None:
        return self._preferences.get(subject)

    def remember_preferences(self, subject: str, preferences: Preferences, generation: int) -> None:
        """Stores what a read that began at `generation` found, unless something was invalidated since."""
        if generation == self.generation:
            _put(self._preferences, subject, preferences)

    # --- the change feed ------------------------------------------------------------------------------

    def on_vehicles(self, changes: Sequence[Change]) -> None:
        self.generation += 1
        for change in changes:
            self._vehicles.pop(change.key, None)

    def on_drivers(self, changes: Sequence[Change]) -> None:
        self.generation += 1
        for change in changes:
            self._drivers.pop(change.key, None)

    def on_customer_profiles(self, changes: Sequence[Change]) -> None:
        self.generation += 1
        for change in changes:
            self._preferences.pop(change.key, None)

    def on_orders(self, changes: Sequence[Change]) -> None:
        """A completed order joins its creator's history (the ranking's past stations and modes)."""
        for change in changes:
            payload = change.payload
            if payload.get("state") == int(OrderState.COMPLETED) and payload.get("created_by"):
                self.generation += 1
                self._preferences.pop(str(payload["created_by"]), None)

    def subscribe(self, changes: ChangeFeed) -> None:
        changes.subscribe("vehicle", self.on_vehicles)
        changes.subscribe("driver", self.on_drivers)
        changes.subscribe("customer_profile", self.on_customer_profiles)
        changes.subscribe("order", self.on_orders)


class _Reads(Generic[Row]):
    """Cache misses read together: the ids missed while a read is under way go in the next one, one query for
    all of them. Under load (a fleet's vehicles quoting for the first time) a transaction and a round trip per
    quote was a fifth of a worker's CPU; alone, a miss is read at once as before."""

    def __init__(self, profiles: Profiles, model: type[Row], cache: dict[str, Row]) -> None:
        self._profiles = profiles
        self._model: type[Row] = model
        self._cache: dict[str, Row] = cache
        self._waiting: dict[str, asyncio.Future[Row | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._name = f"ordering.profiles.{model.__name__.lower()}"

    async def get(self, key: str) -> Row | None:
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
            if self._reader is None:
                self._reader = asyncio.create_task(self._read())  # it ends once nothing waits
        return await asyncio.shield(future)  # one caller giving up must not fail the others waiting for it

    async def _read(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[:READ_BATCH]
                batch = {key: self._waiting.pop(key) for key in keys}
                generation = self._profiles.generation
                try:
                    async with self._profiles.db.transaction(self._name) as session:
                        if len(keys) == 1:  # alone: the identity lookup, ~0.2 ms cheaper than an IN query
                            one = await session.get(self._model, keys[0])
                            rows = {one.id: one} if one is not None else {}
                        else:
                            query = select(self._model).where(col(self._model.id).in_(keys))
                            rows = {row.id: row for row in await session.exec(query)}
                except Exception as error:  # each waiting quote fails as its own read would have
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(error)
                    continue
                except BaseException:  # cancelled (shutdown): so are the quotes waiting for this read
                    for future in batch.values():
                        future.cancel()
                    raise
                for key, future in batch.items():
                    found = rows.get(key)
                    if found is not None and generation == self._profiles.generation:
                        _put(self._cache, key, found)  # a row that is not there is never cached
                    if not future.done():
                        future.set_result(found)
        finally:
            self._reader = None


def _put(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= MAX_ENTRIES:
        cache.clear()
    cache[key] = value
