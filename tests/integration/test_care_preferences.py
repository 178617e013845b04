"""Preferences are writable over real gRPC (SQLite + PostgreSQL): SetPreferences writes the row the quote
ranking reads and publishes "customer_profile", so the quote cache drops its copy at commit and the next quote
ranks with the new preferences; reminder settings are stored; bad input names its field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.server import Platform

from .conftest import channel_to, serving
from .powerup_support import _near, driver_md, swappable_vehicle

DRIVER = "drv-prefs"


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    async with serving(tmp_path, database_url, reoptimize_interval_s=0) as running:
        yield running


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with channel_to(platform) as ch:
        yield ch


async def test_preferences_written_and_followed_by_the_quote_cache(
    platform: Platform, channel: grpc.aio.Channel
) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    md = driver_md(platform, DRIVER)
    profiles = platform.powerup.quote_path.profiles
    delivered = asyncio.Event()
    platform.powerup.changes.subscribe("customer_profile", lambda _: delivered.set())  # after the cache's own

    defaults = (await ordering.GetPreferences(ordering_pb2.GetPreferencesRequest(), metadata=md)).preferences
    assert defaults.price_sensitivity_permille == 500 and not defaults.favourite_station_ids

    vehicle = await swappable_vehicle(platform, owner=DRIVER)
    lat, lng = _near(platform)
    quote = ordering_pb2.QuotePowerUpRequest(
        vehicle_id=vehicle.id, position=common_pb2.LatLng(lat=lat, lng=lng), soc_permille=200, target_soc_permille=800
    )
    await ordering.QuotePowerUp(quote, metadata=md)
    cached = profiles.preferences_of(DRIVER)
    assert cached is not None and not cached.favourite_stations  # the quote cached the defaults

    stations = sorted(platform.powerup.engine._maps.station_by_id)[:2]
    wanted = ordering_pb2.DriverPreferences(
        favourite_station_ids=[stations[1], stations[0], stations[1]],
        price_sensitivity_permille=900,
        preferred_modes=[common_pb2.POWER_UP_MODE_CHARGE, common_pb2.POWER_UP_MODE_SWAP],
        low_battery_reminder_permille=150,
        fatigue_limit_minutes=240,
    )
    stored = (
        await ordering.SetPreferences(ordering_pb2.SetPreferencesRequest(preferences=wanted), metadata=md)
    ).preferences
    assert list(stored.favourite_station_ids) == [stations[1], stations[0]]  # duplicates dropped, order kept
    await asyncio.wait_for(delivered.wait(), 10)
    assert profiles.preferences_of(DRIVER) is None  # dropped at commit, through the feed
    await ordering.QuotePowerUp(quote, metadata=md)
    ranked = profiles.preferences_of(DRIVER)
    assert ranked is not None
    assert ranked.favourite_stations == frozenset(stations) and ranked.price_sensitivity == 0.9
    assert ranked.preferred_modes == (common_pb2.POWER_UP_MODE_CHARGE, common_pb2.POWER_UP_MODE_SWAP)

    got = (await ordering.GetPreferences(ordering_pb2.GetPreferencesRequest(), metadata=md)).preferences
    assert (got.low_battery_reminder_permille, got.fatigue_limit_minutes) == (150, 240)
    other = (
        await ordering.GetPreferences(ordering_pb2.GetPreferencesRequest(), metadata=driver_md(platform, "drv-x"))
    ).preferences
    assert not other.favourite_station_ids  # always the caller's own

    for bad, field in (
        (ordering_pb2.DriverPreferences(favourite_station_ids=["st-nope"]), "preferences.favourite_station_ids[0]"),
        (ordering_pb2.DriverPreferences(price_sensitivity_permille=1001), "preferences.price_sensitivity_permille"),
        (ordering_pb2.DriverPreferences(fatigue_limit_minutes=2000), "preferences.fatigue_limit_minutes"),
        (ordering_pb2.DriverPreferences(preferred_modes=[0]), "preferences.preferred_modes[0]"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ordering.SetPreferences(ordering_pb2.SetPreferencesRequest(preferences=bad), metadata=md)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in refused.value.details()
    after = (await ordering.GetPreferences(ordering_pb2.GetPreferencesRequest(), metadata=md)).preferences
    assert after == got  # nothing half-written
