"""The telemetry room's one long-lived object (built by the composition root): applies gateways' vehicle
readings and alarms, and answers the fleet room's report port with telemetry figures."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import DrivingDay
from voltcloud.platform.auth import Principal
from voltcloud.platform.clock import Clock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import FieldViolation
from voltcloud.telemetry import alerts, frames, store, views
from voltcloud.telemetry.models import VehicleLiveState
from voltcloud.telemetry.ports import PowerUpFinder, VehicleFacts
from voltcloud.telemetry.remediation import Raw
from voltcloud.telemetry.watch import VehicleWatch

SCOPE_TTL = dt.timedelta(seconds=5)
SCOPE_MAX = 100_000


@dataclass(frozen=True)
class VehicleAlarm:
    vehicle_id: str
    code: str
    level: int
    message: str
    cleared: bool


class VehicleTelemetry:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        rules: store.Rules,
        finder: PowerUpFinder,
        facts: VehicleFacts,
    ) -> None:
        self.db = db
        self.clock = clock
        self.rules = rules
        self.finder = finder
        self.facts = facts
        self.watch = VehicleWatch()
        # vehicle id -> (its registration and current driver, read at); see `_scope`
        self._scope_cache: dict[str, tuple[store.VehicleInfo, dt.datetime]] = {}

    async def ingest(self, principal: Principal, readings: Mapping[str, list[Raw]]) -> tuple[store.Applied, list[str]]:
        """One uplink batch in one transaction. Vehicles the gateway may not report (unknown, another
        tenant's) are returned and their readings not stored."""
        now = self.clock.now()
        async with self.db.transaction("telemetry.ingest") as session:
            allowed, refused = await views.gateway_vehicles(session, principal, list(readings), self._scope(now))
            mine = {vid: rows for vid, rows in readings.items() if vid in allowed}
            applied = await store.apply_readings(session, self.rules, self.finder, allowed, mine, now)
        self._remember(allowed, now)
        return applied, refused

    def _scope(self, now: dt.datetime) -> dict[str, store.VehicleInfo]:
        """Vehicles (fleet, current driver) read within SCOPE_TTL: every batch of a stream names the same
        vehicles, and reading them (vehicle and driver rows) was a sixth of a batch's cost. A vehicle moved to
        another fleet, or a driver change, is seen within SCOPE_TTL; an unknown vehicle is never cached."""
        fresh = now - SCOPE_TTL
        return {vid: info for vid, (info, at) in self._scope_cache.items() if fresh < at <= now}

    def _remember(self, infos: Mapping[str, store.VehicleInfo], now: dt.datetime) -> None:
        if len(self._scope_cache) + len(infos) > SCOPE_MAX:
            fresh = now - SCOPE_TTL
            self._scope_cache = {vid: entry for vid, entry in self._scope_cache.items() if entry[1] > fresh}
            if len(self._scope_cache) + len(infos) > SCOPE_MAX:
                self._scope_cache.clear()
        for vid, info in infos.items():
            cached = self._scope_cache.get(vid)
            if cached is None or cached[0] is not info:  # read now (not served from the cache): restamp
                self._scope_cache[vid] = (info, now)

    async def alarm(
        self, session: AsyncSession, principal: Principal, alarm: VehicleAlarm, at: dt.datetime
    ) -> FieldViolation | None:
        """A GB/T alarm of a vehicle, in the caller's (the events') transaction; a violation when the gateway
        may not report this vehicle."""
        allowed, _ = await views.gateway_vehicles(session, principal, [alarm.vehicle_id])
        info = allowed.get(alarm.vehicle_id)
        if info is None:
            return FieldViolation("event.alarm.vehicle_id", f"vehicle {alarm.vehicle_id} is not this gateway's")
        now = self.clock.now()
        subject = alerts.Subject(info.id, info.vehicle.fleet_id, info.driver_id)
        await alerts.vehicle_alarm(
            session, subject, code=alarm.code, level=alarm.level, message=alarm.message, cleared=alarm.cleared,
            at=at, now=now,
        )  # fmt: skip
        await self._alarm_state(session, info, alarm, at, now)
        return None

    async def _alarm_state(
        self, session: AsyncSession, info: store.VehicleInfo, alarm: VehicleAlarm, at: dt.datetime, now: dt.datetime
    ) -> None:
        """The live state's raised codes and highest level follow the alarms."""
        state = await session.get(VehicleLiveState, info.id)
        if state is None:  # an alarm before any reading: the state has no reading time yet
            state = VehicleLiveState(vehicle_id=info.id, reading_at=store.NO_READING, updated_at=now, version=0)
        codes = [c for c in state.alarm_codes.split(",") if c]
        levels = dict(c.split("=", 1) for c in codes if "=" in c)
        code = alarm.code or f"GBT_LEVEL_{alarm.level}"
        if alarm.cleared:
            levels.pop(code, None)
        else:
            levels[code] = str(alerts.gbt_level(alarm.level))
        state.alarm_codes = ",".join(f"{k}={v}" for k, v in sorted(levels.items()))[:1000]
        state.alarm_level = max((int(v) for v in levels.values()), default=0)
        state.driver_id = info.driver_id
        state.updated_at = now
        state.version += 1
        session.add(state)
        await store.publish_state(session, state, info)

    # ---- fleet's DrivingFacts port ----

    async def driving_days(
        self, session: AsyncSession, *, vehicle_ids: Sequence[str], start: dt.datetime, end: dt.datetime
    ) -> list[DrivingDay]:
        """Per vehicle with telemetry in [start, end): distance (odometer span of accepted readings) and driving
        time (intervals between consecutive speed readings while moving, each at most the gap threshold)."""
        if not vehicle_ids:
            return []
        table = frames.TABLE
        query = (
            sa.select(table.c.vehicle_id, table.c.time, table.c.odometer_m, table.c.speed_m_per_h)
            .where(
                table.c.vehicle_id.in_(list(vehicle_ids)),
                table.c.time >= start,
                table.c.time < end,
                (table.c.odometer_m.is_not(None)) | (table.c.speed_m_per_h.is_not(None)),
            )
            .order_by(table.c.vehicle_id, table.c.time)
        )
        odometers: dict[str, list[int]] = {}
        speeds: dict[str, list[tuple[dt.datetime, int]]] = {}
        for vehicle_id, time, odometer, speed in await (await session.connection()).execute(query):
            if odometer is not None:
                odometers.setdefault(vehicle_id, []).append(odometer)
            if speed is not None:
                speeds.setdefault(vehicle_id, []).append((time, speed))
        gap = self.rules.thresholds.gap
        out = []
        for vid in sorted(set(odometers) | set(speeds)):
            odo = odometers.get(vid, [])
            distance = max(odo) - min(odo) if odo else 0
            out.append(DrivingDay(vid, distance, int(_driving_seconds(speeds.get(vid, []), gap))))
        return out


def _driving_seconds(speeds: Sequence[tuple[dt.datetime, int]], gap: dt.timedelta) -> float:
    total = 0.0
    for (t0, v0), (t1, _v1) in itertools.pairwise(speeds):
        if v0 >= alerts.MOVING_M_PER_H and t1 - t0 <= gap:
            total += (t1 - t0).total_seconds()
    return total
