"""The telemetry room's scope cache: a vehicle read for one batch serves the next batches for SCOPE_TTL (by the
injectable clock), then is read again; the gateway's tenant is checked on cached vehicles all the same."""

from __future__ import annotations

import datetime as dt

from voltcloud.fleet.api import Vehicle
from voltcloud.platform.clock import FrozenClock
from voltcloud.telemetry.store import VehicleInfo
from voltcloud.telemetry.vehicles import SCOPE_TTL, VehicleTelemetry

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def telemetry(clock: FrozenClock) -> VehicleTelemetry:
    return VehicleTelemetry(None, clock, None, None, None)  # type: ignore[arg-type]  # only the cache is used


def info(vid: str, driver: str | None = "drv-1") -> VehicleInfo:
    return VehicleInfo(Vehicle(id=vid, vin="1M8GDM9AXKP042788", model="e-van", fleet_id="fl-1"), driver)


def test_cached_for_the_ttl_then_read_again() -> None:
    clock = FrozenClock(T0)
    room = telemetry(clock)
    first = info("veh-1")
    room._remember({"veh-1": first}, clock.now())
    assert room._scope(clock.now()) == {"veh-1": first}
    clock.advance(SCOPE_TTL - dt.timedelta(milliseconds=1))
    room._remember({"veh-1": first}, clock.now())  # served from the cache: not restamped
    assert room._scope(clock.now()) == {"veh-1": first}
    clock.advance(dt.timedelta(milliseconds=1))
    assert room._scope(clock.now()) == {}  # expired: the next batch reads the vehicle (and its driver) again
    second = info("veh-1", "drv-2")
    room._remember({"veh-1": second}, clock.now())
    assert room._scope(clock.now())["veh-1"].driver_id == "drv-2"


def test_a_clock_moved_back_does_not_serve_entries_from_the_future() -> None:
    clock = FrozenClock(T0)
    room = telemetry(clock)
    room._remember({"veh-1": info("veh-1")}, T0)
    assert room._scope(T0 - dt.timedelta(seconds=1)) == {}
