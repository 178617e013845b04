"""What telemetry needs from rooms above it, as ports the composition root fills (runtime.py / server.py):
the engine's nearest reachable swap/charge option (low-battery alerts) and ordering's last known facts of a
vehicle (GetVehicleState without telemetry)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Vehicle


@dataclass(frozen=True)
class PowerUpHint:
    """The nearest reachable option, with what a one-click QuotePowerUp needs to quote exactly it."""

    mode: int  # PowerUpMode
    station_id: str
    distance_m: int
    eta_s: int
    arrival_soc_permille: int
    # The QuotePowerUp request: vehicle, position, SOC, target, the mode and the station.
    vehicle_id: str
    lat: float
    lng: float
    soc_permille: int
    target_soc_permille: int


class PowerUpFinder(Protocol):
    async def nearest(
        self, session: AsyncSession, vehicle: Vehicle, lat: float, lng: float, soc_permille: int, now: dt.datetime
    ) -> PowerUpHint | None: ...


@dataclass(frozen=True)
class LastKnown:
    """A vehicle's last facts from its orders: where and at what SOC it last asked for a power-up."""

    lat: float
    lng: float
    soc_permille: int
    at: dt.datetime


class VehicleFacts(Protocol):
    async def last_known(self, session: AsyncSession, vehicle_id: str) -> LastKnown | None: ...


class NoPowerUps:
    """The finder when no engine runs (tests of the store alone): no hint."""

    async def nearest(
        self, session: AsyncSession, vehicle: Vehicle, lat: float, lng: float, soc_permille: int, now: dt.datetime
    ) -> PowerUpHint | None:
        return None


class NoFacts:
    async def last_known(self, session: AsyncSession, vehicle_id: str) -> LastKnown | None:
        return None
