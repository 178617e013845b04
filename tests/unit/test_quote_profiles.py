"""The profile cache decides who may order for a vehicle exactly as the database path does, and forgets what
the change feed says has changed (vehicles, drivers, customer profiles, completed orders)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from voltcloud.fleet.models import Driver, Vehicle
from voltcloud.ordering import quoting
from voltcloud.ordering.models import CustomerProfile
from voltcloud.ordering.profiles import Profiles
from voltcloud.ordering.states import OrderState
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal, Role, Tenant
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.platform.errors import NotFound
from voltcloud.seed import seed_world
from voltcloud.world import generate_world


def Change(key: str, payload: dict[str, Any]) -> feed.Change:
    return feed.Change(0, "", key, payload, "test", dt.datetime.now(dt.UTC))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_database_async(database_url)
    database = Database(database_url)
    await seed_world(database, generate_world("demo", seed=7))
    async with database.transaction() as s:
        private = (await s.exec(select(Vehicle).where(col(Vehicle.fleet_id).is_(None)).limit(1))).one()
        private.owner_driver_id = "drv-owner"
        s.add(private)
    yield database
    await database.dispose()


async def _allowed_from_db(db: Database, principal: Principal, vehicle_id: str) -> bool:
    async with db.transaction() as s:
        try:
            await quoting.vehicle_for(s, principal, vehicle_id)
        except NotFound:
            return False
    return True


async def _allowed_cached(profiles: Profiles, principal: Principal, vehicle_id: str) -> bool:
    try:
        await quoting.cached_vehicle_for(profiles, principal, vehicle_id)
    except NotFound:
        return False
    return True


async def test_the_cache_decides_like_the_database(db: Database) -> None:
    async with db.transaction() as s:
        vehicles = list(await s.exec(select(Vehicle).order_by(col(Vehicle.fleet_id).is_(None), col(Vehicle.id))))
        drivers = list(await s.exec(select(Driver).where(col(Driver.fleet_id).is_not(None)).limit(3)))
    picked = vehicles[:4] + [v for v in vehicles if v.fleet_id is None][:3]
    fleets = sorted({v.fleet_id for v in vehicles if v.fleet_id})[:2]
    principals = [
        Principal("admin", Role.PLATFORM_ADMIN, None),
        Principal("op", Role.OPERATOR, Tenant("operator", "op-0001")),
        Principal("drv-owner", Role.DRIVER, None),
        Principal("drv-stranger", Role.DRIVER, None),
        *(Principal(d.id, Role.DRIVER, None) for d in drivers),
        *(Principal(f"mgr-{f}", Role.FLEET_MANAGER, Tenant("fleet", f)) for f in fleets),
        Principal("mgr-x", Role.FLEET_MANAGER, Tenant("operator", fleets[0])),
    ]
    profiles = Profiles(db)
    decisions = []
    for principal, vehicle in itertools.product(principals, [*picked, Vehicle(id="vh-none")]):
        want = await _allowed_from_db(db, principal, vehicle.id)
        for _ in range(2):  # a miss, then a hit
            assert await _allowed_cached(profiles, principal, vehicle.id) == want, (principal, vehicle.id)
        decisions.append(want)
    assert any(decisions) and not all(decisions)
    assert profiles.hits > profiles.misses


async def test_a_published_change_is_seen_and_an_unpublished_one_is_not(db: Database) -> None:
    owner = Principal("drv-owner", Role.DRIVER, None)
    async with db.transaction() as s:
        car = (await s.exec(select(Vehicle).where(Vehicle.owner_driver_id == "drv-owner"))).one()
    profiles = Profiles(db)
    assert await _allowed_cached(profiles, owner, car.id)
    async with db.transaction() as s:
        await s.exec(sa.update(Vehicle).where(col(Vehicle.id) == car.id).values(owner_driver_id="drv-new"))
    assert await _allowed_cached(profiles, owner, car.id)  # the cache follows the feed, not the table
    profiles.on_vehicles([Change(car.id, {})])
    assert not await _allowed_cached(profiles, owner, car.id)
    assert await _allowed_cached(profiles, Principal("drv-new", Role.DRIVER, None), car.id)


async def test_misses_that_arrive_together_are_read_together(db: Database) -> None:
    """Quotes missing the cache in the same turn of the event loop share one query, each gets its own row, an
    unknown id is answered None and not cached, and a caller that gives up fails no one else."""
    async with db.transaction() as s:
        ids = list(await s.exec(select(Vehicle.id).order_by(col(Vehicle.id)).limit(40)))
    profiles = Profiles(db)
    reads = 0
    transaction = db.transaction

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return transaction(*args, **kwargs)

    db.transaction = counted  # type: ignore[method-assign]
    wanted = [*ids, ids[3], "veh-none"]
    found = await asyncio.gather(*(profiles.vehicle(v) for v in wanted))
    assert [v.id if v else None for v in found] == [*ids, ids[3], None]
    assert reads == 1
    assert await profiles.vehicle(ids[5]) is found[5] and reads == 1  # cached
    assert await profiles.vehicle("veh-none") is None and reads == 2  # a refusal always re-reads

    profiles.on_vehicles([Change(ids[0], {})])
    quitter = asyncio.create_task(profiles.vehicle(ids[0]))
    stayer = asyncio.create_task(profiles.vehicle(ids[0]))
    await asyncio.sleep(0)
    quitter.cancel()
    assert (await stayer) is not None and (await stayer).id == ids[0]
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_a_driver_moved_to_another_fleet_loses_its_vehicles(db: Database) -> None:
    async with db.transaction() as s:
        driver = (await s.exec(select(Driver).where(col(Driver.fleet_id).is_not(None)).limit(1))).one()
        vehicle = (await s.exec(select(Vehicle).where(Vehicle.fleet_id == driver.fleet_id).limit(1))).one()
        other = (await s.exec(select(Driver.fleet_id).where(Driver.fleet_id != driver.fleet_id).limit(1))).one()
    principal = Principal(driver.id, Role.DRIVER, None)
    profiles = Profiles(db)
    assert await _allowed_cached(profiles, principal, vehicle.id)
    async with db.transaction() as s:
        await s.exec(sa.update(Driver).where(col(Driver.id) == driver.id).values(fleet_id=other))
    profiles.on_drivers([Change(driver.id, {})])
    assert not await _allowed_cached(profiles, principal, vehicle.id)


async def test_preferences_are_dropped_by_a_profile_change_or_a_completed_order(db: Database) -> None:
    profiles = Profiles(db)
    async with db.transaction() as s:
        s.add(CustomerProfile(subject="drv-p", favourite_station_ids=json.dumps(["st-1"])))
        prefs = await quoting.preferences(s, "drv-p", 300)
    profiles.remember_preferences("drv-p", prefs, profiles.generation)
    assert profiles.preferences_of("drv-p") == prefs
    profiles.on_orders([Change("ord-1", {"state": int(OrderState.CANCELLED), "created_by": "drv-p"})])
    assert profiles.preferences_of("drv-p") == prefs  # only a completion changes the history
    profiles.on_orders([Change("ord-1", {"state": int(OrderState.COMPLETED), "created_by": "drv-p"})])
    assert profiles.preferences_of("drv-p") is None
    profiles.remember_preferences("drv-p", prefs, profiles.generation)
    profiles.on_customer_profiles([Change("drv-p", {})])
    assert profiles.preferences_of("drv-p") is None
    stale_read = profiles.generation
    profiles.on_customer_profiles([Change("drv-q", {})])
    profiles.remember_preferences("drv-p", prefs, stale_read)  # read before an invalidation: not kept
    assert profiles.preferences_of("drv-p") is None
