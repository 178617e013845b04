"""A customer's own preferences (the `customer_profile` row the quote ranking reads) and reminder settings.

SetPreferences replaces the caller's row whole and publishes topic "customer_profile" (key: the subject) in the
same transaction, so every replica's quote cache (`profiles.Profiles.on_customer_profiles`) drops its copy at
commit. Reminder settings (low battery, fatigue) are stored here for the telemetry ingest to raise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.ordering.models import CustomerProfile
from voltcloud.platform import feed
from voltcloud.platform.auth import Principal
from voltcloud.platform.enums import PowerUpMode
from voltcloud.platform.errors import InvalidArgument
from voltcloud.stations.api import Station

PROFILE_TOPIC = "customer_profile"  # followed by ordering/profiles.py
MAX_FAVOURITES = 20  # DriverPreferences.favourite_station_ids (proto "Limit:")
MAX_FATIGUE_MINUTES = 1440
_FIELD = "preferences"


@dataclass(frozen=True)
class PreferencesView:
    favourite_station_ids: tuple[str, ...] = ()
    price_sensitivity_permille: int = 500
    preferred_modes: tuple[int, ...] = ()
    low_battery_reminder_permille: int = 0
    fatigue_limit_minutes: int = 0


def _view(row: CustomerProfile | None) -> PreferencesView:
    if row is None:
        return PreferencesView()
    return PreferencesView(
        favourite_station_ids=tuple(json.loads(row.favourite_station_ids)),
        price_sensitivity_permille=row.price_sensitivity_permille,
        preferred_modes=tuple(int(m) for m in json.loads(row.preferred_modes)),
        low_battery_reminder_permille=row.low_battery_reminder_permille,
        fatigue_limit_minutes=row.fatigue_limit_minutes,
    )


async def get_preferences(session: AsyncSession, principal: Principal) -> PreferencesView:
    return _view(await session.get(CustomerProfile, principal.subject))


def _bad(field: str, why: str) -> InvalidArgument:
    return InvalidArgument.for_field(f"{_FIELD}.{field}", why)


def _check_ranges(prefs: PreferencesView) -> None:
    if not 0 <= prefs.price_sensitivity_permille <= 1000:
        raise _bad("price_sensitivity_permille", "must be within [0, 1000]")
    if not 0 <= prefs.low_battery_reminder_permille <= 1000:
        raise _bad("low_battery_reminder_permille", "must be within [0, 1000] (0 = no reminder)")
    if not 0 <= prefs.fatigue_limit_minutes <= MAX_FATIGUE_MINUTES:
        raise _bad("fatigue_limit_minutes", f"must be within [0, {MAX_FATIGUE_MINUTES}] (0 = no reminder)")
    known = {int(m) for m in PowerUpMode}
    for i, mode in enumerate(prefs.preferred_modes):
        if mode not in known:
            raise _bad(f"preferred_modes[{i}]", "must be a power-up mode")
    if len(prefs.favourite_station_ids) > MAX_FAVOURITES:
        raise _bad("favourite_station_ids", f"at most {MAX_FAVOURITES} stations")


async def _check_stations(session: AsyncSession, station_ids: tuple[str, ...]) -> None:
    if not station_ids:
        return
    found = set(await session.exec(select(Station.id).where(col(Station.id).in_(station_ids))))
    for i, station_id in enumerate(station_ids):
        if station_id not in found:
            raise _bad(f"favourite_station_ids[{i}]", f"station {station_id!r} does not exist")


async def set_preferences(session: AsyncSession, principal: Principal, prefs: PreferencesView) -> PreferencesView:
    """Replaces the caller's preferences (duplicates dropped, order kept) and tells every replica."""
    prefs = PreferencesView(
        favourite_station_ids=tuple(dict.fromkeys(prefs.favourite_station_ids)),
        price_sensitivity_permille=prefs.price_sensitivity_permille,
        preferred_modes=tuple(dict.fromkeys(prefs.preferred_modes)),
        low_battery_reminder_permille=prefs.low_battery_reminder_permille,
        fatigue_limit_minutes=prefs.fatigue_limit_minutes,
    )
    _check_ranges(prefs)
    await _check_stations(session, prefs.favourite_station_ids)
    row = await session.get(CustomerProfile, principal.subject) or CustomerProfile(subject=principal.subject)
    row.favourite_station_ids = json.dumps(list(prefs.favourite_station_ids))
    row.preferred_modes = json.dumps(list(prefs.preferred_modes))
    row.price_sensitivity_permille = prefs.price_sensitivity_permille
    row.low_battery_reminder_permille = prefs.low_battery_reminder_permille
    row.fatigue_limit_minutes = prefs.fatigue_limit_minutes
    session.add(row)
    await feed.publish(session, PROFILE_TOPIC, principal.subject, {"subject": principal.subject})
    await session.flush()
    return prefs
