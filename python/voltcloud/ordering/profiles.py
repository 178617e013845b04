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

from collections.abc import Sequence
from typing import Any

from voltcloud.fleet.api import Driver, Vehicle
from voltcloud.ordering.ranking import Preferences
from voltcloud.ordering.states import OrderState
from voltcloud.platform.db import Database
from voltcloud.platform.feed import Change, ChangeFeed

MAX_ENTRIES = 200_000  # per map; beyond it the map is cleared (a cache, the database stays the truth)


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

    async def vehicle(self, vehicle_id: str) -> Vehicle | None:
        found = self._vehicles.get(vehicle_id)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        generation = self.generation
        async with self.db.transaction("ordering.profiles.vehicle") as session:
            found = await session.get(Vehicle, vehicle_id)
        if found is not None and generation == self.generation:
            _put(self._vehicles, vehicle_id, found)
        return found

    async def driver(self, driver_id: str) -> Driver | None:
        found = self._drivers.get(driver_id)
        if found is not None:
            return found
        generation = self.generation
        async with self.db.transaction("ordering.profiles.driver") as session:
            found = await session.get(Driver, driver_id)
        if found is not None and generation == self.generation:
            _put(self._drivers, driver_id, found)
        return found

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


def _put(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= MAX_ENTRIES:
        cache.clear()
    cache[key] = value
