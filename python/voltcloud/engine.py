"""The platform's adapter to the Rust engine (`voltcloud._core`).

Built from the database at startup (`Engine.load`), it keeps the engine's in-memory view of stations,
connectors, packs and mobile units, maps the platform's string ids to the engine's integer handles, and
exposes typed Python methods to the domains. Rules:

- the view changes only after the database transaction that changed a resource has committed
  (`Engine.apply(changes)` is called by the domains after `Database.transaction()` exits);
- every call into `_core` runs inside `tracing.engine_span`;
- other replicas' commits reach this view through the change feed (platform/feed.py), followed by
  `follow_inventory` (statuses, version-checked: a change never regresses the view) and `follow_stations` /
  `follow_packs` / `follow_units` (structure: a new station, pack or unit is loaded on its own; what the index
  cannot change in place, such as a station's position, triggers a debounced rebuild). `sync(db)` is the slow
  reconciliation that repairs anything the feed could not bring (a change older than the feed's retention, a
  row written behind the platform's back). The engine is a fast, possibly slightly stale cache: the database's
  version checks decide every race;
- one bad row never takes the engine down: a row outside the engine's limits (`LIMITS`, exported by the
  engine itself) or refused by the engine is quarantined (left out, logged, and an alarm raised once), and
  the engine serves the rest. A quarantined row is retried when its version changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import itertools
import logging
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any, TypeVar, cast

import numpy as np
import sqlalchemy as sa
from sqlmodel import col, select

from voltcloud import _core
from voltcloud.engine_limits import (
    LIMITS,
    Problem,
    _outside,
    connector_problems,
    pack_problems,
    position_problems,
    station_problems,
)
from voltcloud.engine_limits import STATION_CHARGING as STATION_CHARGING  # re-exported for ordering
from voltcloud.engine_limits import STATION_SWAP as STATION_SWAP
from voltcloud.maintenance import api as workorders
from voltcloud.platform.db import Database
from voltcloud.platform.enums import PowerUpMode, ResourceKind, UnitKind, UnitStatus
from voltcloud.platform.errors import InvalidArgument, ResourceExhausted
from voltcloud.platform.feed import Change
from voltcloud.platform.tracing import engine_span
from voltcloud.stations.api import Connector, InventoryChange, MobileUnit, Pack, PackType, Station

log = logging.getLogger(__name__)

UNIT_VAN = int(UnitKind.VAN)
UNIT_SPECIALIST = int(UnitKind.SPECIALIST)


def _unit_status_to_engine() -> tuple[dict[int, int], int]:
    """MobileUnit.status → the engine's unit status, matched by name (the engine has RESERVED for its own
    reserve/release, which a stored status must never land on), and the engine's OFFLINE for a status it
    does not know: such a unit is never offered."""
    engine = _core.ENUM_NUMBERS["EngineUnitStatus"]
    names = {UnitStatus.IDLE: "AVAILABLE", UnitStatus.BUSY: "BUSY", UnitStatus.OFF_SHIFT: "OFF_SHIFT"}
    return {int(s): engine[n] for s, n in names.items()}, engine["OFFLINE"]


_UNIT_STATUS_TO_ENGINE, _UNIT_STATUS_UNKNOWN = _unit_status_to_engine()

_core_any: Any = _core  # engine classes whose stubs have not landed in _core.pyi yet
AC_ONLY_POWER_W = 7_000
PACK_GONE = 6  # PackState.WITHDRAWN: the state of an index entry a pack has left (never offered)
QUARANTINE_ALARM_CODE = "ENGINE_ROW_QUARANTINED"
_Row = TypeVar("_Row")
# What building one engine column or load call can raise for a bad value: the engine's typed errors, and
# numpy's when a value does not fit the column's dtype.
_LOAD_ERRORS = (_core.VoltcloudCoreError, OverflowError, ValueError, TypeError)


def unit_problems(unit: MobileUnit) -> list[Problem]:
    found = _outside("kind", unit.kind, LIMITS.unit_kind_min, LIMITS.unit_kind_max)
    found += _outside("energy_wh", unit.energy_wh, 0, 2**63 - 1) + _outside("skills", unit.skills, 0, 2**64 - 1)
    if not 0 <= unit.connector_mask <= LIMITS.unit_connector_mask or unit.connector_mask & ~LIMITS.unit_connector_mask:
        found.append(("connector_mask", f"has bits outside {LIMITS.unit_connector_mask:#b}"))
    return found + position_problems(unit.lat, unit.lng)


def _explain(problems: Sequence[Problem]) -> str:
    return "; ".join(f"{column} {reason}" for column, reason in problems)


@dataclass(frozen=True)
class Quarantined:
    """A database row the engine does not serve, and why. `alarm` is False for rows left out only because
    their station is quarantined (the station's alarm covers them)."""

    kind: str
    id: str
    operator_id: str | None
    station_id: str | None
    reason: str
    alarm: bool = True


@contextmanager
def _engine_errors() -> Iterator[None]:
    """The engine's typed errors as the platform's domain errors."""
    try:
        yield
    except _core.InvalidInputError as error:
        raise InvalidArgument(f"the engine refused the request: {error}") from None
    except _core.InfeasibleError as error:
        raise ResourceExhausted(f"no feasible option: {error}") from None


@dataclass(frozen=True)
class StationInfo:
    id: str
    handle: int
    idx: int
    operator_id: str
    kind: int
    name: str
    lat: float
    lng: float
    lanes: int
    swap_time_s: int
    power_cap_w: int


@dataclass(frozen=True)
class UnitInfo:
    id: str
    idx: int
    operator_id: str
    kind: int
    lat: float
    lng: float
    status: int
    energy_wh: int
    connector_mask: int


@dataclass(frozen=True)
class VehicleProfile:
    id: str
    pack_type_id: int | None
    connector_mask: int
    usable_capacity_wh: int
    consumption_wh_per_km: int
    max_dc_power_w: int


@dataclass(frozen=True)
class OptionRequest:
    vehicle: VehicleProfile
    lat: float
    lng: float
    soc_permille: int
    target_soc_permille: int
    modes: frozenset[int]
    now: dt.datetime
    deadline: dt.datetime | None = None
    max_options: int = 8
    return_lat: float | None = None
    return_lng: float | None = None
    station_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EngineOption:
    """One candidate from the engine, before pricing and personal ranking."""

    mode: int
    resource_kind: int
    resource_id: str
    operator_id: str
    station_id: str | None
    connector_id: str | None
    pack_id: str | None
    unit_id: str | None
    eta_s: int
    wait_s: int
    service_s: int
    finish_at: dt.datetime
    energy_wh: int
    distance_m: int
    arrival_soc_permille: int
    service_lat: float
    service_lng: float


@dataclass
class _Maps:
    station_by_id: dict[str, StationInfo] = field(default_factory=dict)
    station_by_idx: list[str] = field(default_factory=list)
    connector_idx: dict[str, int] = field(default_factory=dict)
    connector_ids: list[str] = field(default_factory=list)
    connector_station: dict[str, str] = field(default_factory=dict)
    pack_idx: dict[str, int] = field(default_factory=dict)
    pack_ids: list[str] = field(default_factory=list)
    unit_by_id: dict[str, UnitInfo] = field(default_factory=dict)
    unit_by_idx: list[str] = field(default_factory=list)
    operator_handle: dict[str, int] = field(default_factory=dict)
    pack_capacity_wh: dict[int, int] = field(default_factory=dict)
    pack_station: dict[str, str] = field(default_factory=dict)
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    quarantined: dict[tuple[str, str], Quarantined] = field(default_factory=dict)
    # Engine handles given so far: rows loaded one by one later (`follow_*`) take the next ones.
    station_handles: int = 0
    unit_handles: int = 0

    def operator(self, operator_id: str) -> int:
        """The engine's handle of an operator, a new one for an operator not seen yet."""
        handle = self.operator_handle.get(operator_id)
        if handle is None:
            handle = self.operator_handle[operator_id] = len(self.operator_handle) + 1
        return handle

    def quarantine(self, row: Quarantined, version: int) -> None:
        self.quarantined[(row.kind, row.id)] = row
        self.versions[(row.kind, row.id)] = version

    def count_quarantined(self, kind: str) -> int:
        return sum(1 for k in self.quarantined if k[0] == kind)


class Engine:
    """The engine's view of the resources, rebuilt from the database; see the module docstring."""

    def __init__(
        self, *, index_cell_m: float = 2000.0, travel_cell_m: float = 1000.0, rebuild_debounce_s: float = 1.0
    ) -> None:
        self._index_cell_m = index_cell_m
        self.index: Any = _core_any.ResourceIndex(index_cell_m)
        self.travel_model: Any = _core_any.TravelModel(travel_cell_m)
        self._maps = _Maps()
        self._structure = asyncio.Lock()  # one (re)build or structural load at a time
        self._loading: list[InventoryChange] | None = None  # changes applied while a rebuild reads the tables
        self.rebuild_debounce_s = rebuild_debounce_s
        self._rebuild: asyncio.Task[None] | None = None
        self._debouncing = False
        self._rebuild_again = False
        self._work: dict[str, dict[str, None]] = {"station": {}, "pack": {}, "unit": {}}  # ordered sets of ids
        self._worker: asyncio.Task[None] | None = None
        self.rebuilds = 0  # full rebuilds so far (tests and metrics)
        self._options: Any = None
        self._options_index: Any = None
        self._alarmed: set[tuple[str, str]] = set()  # rows whose quarantine alarm is recorded
        self._refused: dict[tuple[str, str], Quarantined] = {}  # changes `apply` could not mirror

    # ---- building -------------------------------------------------------------------------------------

    async def load(self, db: Database) -> dict[str, int]:
        """(Re)builds the index from the database; returns counts per resource kind (quarantined rows are
        counted under "quarantined", not under their kind)."""
        async with self._structure:
            # Changes delivered while the tables are read are applied to the old view and kept, then applied
            # again to the new one (version-checked), so a change committed after the read is not lost.
            self._loading = []
            try:
                with paused_gc():  # ~400,000 rows and map entries: collections would re-scan them over and over
                    async with db.transaction("engine.load.read") as session:
                        conn = await session.connection()
                        stations = (await _driver_rows(conn, Station, _STATION_COLUMNS)).rows()
                        connectors = await _driver_rows(conn, Connector, _CONNECTOR_COLUMNS)
                        packs = await _driver_rows(conn, Pack, _PACK_COLUMNS, col(Pack.station_id).is_not(None))
                        units = (await _driver_rows(conn, MobileUnit, _UNIT_COLUMNS)).rows()
                        pack_types = (await _driver_rows(conn, PackType, ("id", "capacity_wh"))).rows()
                    # In a worker thread: at country scale building takes seconds of Python, during which the
                    # event loop keeps serving (with the old view) instead of stalling.
                    await asyncio.to_thread(self._build, stations, connectors, packs, units, pack_types)
                    # Freed now, with the collector still off: otherwise its first pass would walk every row.
                    del stations, connectors, packs, units, pack_types
                missed, self._loading = self._loading, None
                self.apply(missed)
            finally:
                self._loading = None
            self.rebuilds += 1
        await self._flush_alarms(db)
        maps = self._maps
        return {
            "stations": len(maps.station_by_id),
            "connectors": len(maps.connector_idx),
            "packs": len(maps.pack_idx),
            "units": len(maps.unit_by_id),
            "quarantined": len(maps.quarantined),
        }

    def _build(
        self,
        stations: Sequence[Station],
        connectors: Sequence[Connector] | _Columns,
        packs: Sequence[Pack] | _Columns,
        units: Sequence[MobileUnit],
        pack_types: Sequence[PackType],
    ) -> None:
        maps = _Maps()
        index: Any = _core_any.ResourceIndex(self._index_cell_m)
        for pt in pack_types:
            maps.pack_capacity_wh[pt.id] = pt.capacity_wh
        for operator in sorted({s.operator_id for s in stations} | {u.operator_id for u in units}):
            maps.operator(operator)
        with engine_span("load", stations=len(stations), connectors=len(connectors), packs=len(packs)):
            _load_stations(index, maps, stations)
            _load_connectors(index, maps, connectors)
            _load_packs(index, maps, packs)
            _load_units(index, maps, units)
        for key, row in maps.quarantined.items():
            if key not in self._maps.quarantined:
                log.warning("engine: %s %s quarantined (not served): %s", row.kind, row.id, row.reason)
        self.index = index
        self._maps = maps

    async def _flush_alarms(self, db: Database) -> None:
        """One alarm per newly quarantined (or refused) row, cleared once the row loads again. Failing to write
        them must not stop the engine: they are retried on the next load or sync."""
        current = {k: q for k, q in {**self._maps.quarantined, **self._refused}.items() if q.alarm}
        new = [q for k, q in current.items() if k not in self._alarmed]
        gone = [k for k in self._alarmed if k not in current]
        if not new and not gone:
            return
        now = dt.datetime.now(dt.UTC)
        try:
            async with db.transaction("engine.quarantine.alarms") as session:
                for q in new:
                    await workorders.raise_alarm_once(
                        session,
                        now=now,
                        code=QUARANTINE_ALARM_CODE,
                        resource_id=q.id,
                        message=f"{q.kind} {q.id} is not served by the engine: {q.reason}",
                        operator_id=q.operator_id,
                        station_id=q.station_id,
                        pack_id=q.id if q.kind == "pack" else None,
                    )
                await workorders.clear_alarms(
                    session, now=now, code=QUARANTINE_ALARM_CODE, resource_ids=[k[1] for k in gone]
                )
        except Exception as error:  # an alarm is worth less than serving: log, retry next time
            log.warning("engine: could not record quarantine alarms: %s", error)
            return
        self._alarmed = set(current)

    # ---- keeping current ------------------------------------------------------------------------------

    def apply(self, changes: Iterable[InventoryChange]) -> None:
        """Mirrors committed inventory changes into the engine. Call only after the commit. A change whose version
        the engine already has (or a newer one) is skipped, so a late or repeated delivery never regresses the
        view; a unit's move (no version) always applies. A change the engine refuses is logged and alarmed (on
        the next feed batch or reconciliation); the rest still apply."""
        for change in changes:
            key = (change.kind, change.id)
            if self._loading is not None:
                self._loading.append(change)
            if 0 < change.version <= self._maps.versions.get(key, 0):
                continue
            try:
                with engine_span(f"apply.{change.kind}", id=change.id):
                    self._apply_one(change)
            except _LOAD_ERRORS as error:
                if key not in self._refused:
                    log.warning("engine: refused a change of %s %s: %s", change.kind, change.id, error)
                self._refused[key] = Quarantined(
                    change.kind, change.id, None, None, f"the engine refused a change: {error}"
                )
            else:
                self._refused.pop(key, None)
            if change.version > 0:
                self._maps.versions[key] = change.version

    def _apply_one(self, change: InventoryChange) -> None:
        maps = self._maps
        if change.kind == "connector" and change.id in maps.connector_idx:
            self.index.set_connector_status(maps.connector_idx[change.id], change.status)
        elif change.kind == "pack" and change.id in maps.pack_idx:
            current = self.index.pack(maps.pack_idx[change.id])
            self.index.set_pack(maps.pack_idx[change.id], current["soc"], current["soh"], change.status)
        elif change.kind == "unit" and change.id in maps.unit_by_id:
            info = maps.unit_by_id[change.id]
            if change.lat is not None and change.lng is not None:
                self.index.move_unit(info.idx, change.lat, change.lng)
                maps.unit_by_id[change.id] = _replace_unit(info, lat=change.lat, lng=change.lng)
            if change.status > 0:
                self.index.set_unit_status(info.idx, _UNIT_STATUS_TO_ENGINE.get(change.status, _UNIT_STATUS_UNKNOWN))
                maps.unit_by_id[change.id] = _replace_unit(maps.unit_by_id[change.id], status=change.status)

    # ---- following the change feed ----------------------------------------------------------------------

    async def follow_inventory(self, db: Database, changes: Sequence[Change]) -> None:
        """Feed handler ("inventory"): statuses committed by any replica (this one's own too: skipped by version).
        A pack that now sits at another station is re-placed from its row, a new unit loaded (both in the
        background); a quarantined row that changed is retried by a rebuild."""
        maps = self._maps
        mirror: list[InventoryChange] = []
        for item in changes:
            change = InventoryChange.from_payload(item.payload)
            key = (change.kind, change.id)
            if key in maps.quarantined:
                if change.version > 0 and maps.versions.get(key) != change.version:
                    self.request_rebuild(db)
            elif change.kind == "pack" and change.station_id and maps.pack_station.get(change.id) != change.station_id:
                self._queue(db, "pack", [change.id])  # its "pack" event usually comes too: placing twice is a no-op
            elif change.kind == "unit" and change.id not in maps.unit_by_id:
                self._queue(db, "unit", [change.id])
            else:
                mirror.append(change)
        self.apply(mirror)
        await self._flush_alarms(db)

    def follow_stations(self, db: Database, changes: Sequence[Change]) -> None:
        """Feed handler ("station"): a new station is loaded with its connectors and packs; a known one's new
        name or power cap is updated in place; anything else rebuilds, debounced (the index cannot move a
        station or change its lanes)."""
        self._queue(db, "station", [str(c.payload["id"]) for c in changes])

    def follow_packs(self, db: Database, changes: Sequence[Change]) -> None:
        """Feed handler ("pack"): a pack registered at, or moved into, a station is placed there."""
        self._queue(db, "pack", [str(c.payload["id"]) for c in changes])

    def follow_units(self, db: Database, changes: Sequence[Change]) -> None:
        """Feed handler ("unit"): a new mobile unit is loaded; a known one's description changed: rebuild."""
        self._queue(db, "unit", [str(c.payload["id"]) for c in changes])

    def _queue(self, db: Database, kind: str, ids: Iterable[str]) -> None:
        """Structural work runs in one background task, never in the feed's handler: it may wait for a rebuild
        (seconds at country scale), and the feed must keep delivering to every other subscriber meanwhile."""
        for resource_id in ids:
            self._work[kind][resource_id] = None
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._structural(db), name="engine.structural")

    async def _structural(self, db: Database) -> None:
        steps = {"station": self._station_changed, "pack": self._place_pack, "unit": self._unit_changed}
        while any(self._work.values()):
            for kind, step in steps.items():
                ids, self._work[kind] = list(self._work[kind]), {}
                for resource_id in ids:
                    try:
                        await step(db, resource_id)
                    except Exception as error:  # the reconciliation repairs what this could not load
                        log.warning("engine: could not load %s %s: %s", kind, resource_id, error)
        await self._flush_alarms(db)

    async def _station_changed(self, db: Database, station_id: str) -> None:
        if ("station", station_id) in self._maps.quarantined:
            self.request_rebuild(db)
        elif station_id in self._maps.station_by_id:
            await self._update_station(db, station_id)
        else:
            await self._add_station(db, station_id)

    async def _unit_changed(self, db: Database, unit_id: str) -> None:
        if unit_id in self._maps.unit_by_id or ("unit", unit_id) in self._maps.quarantined:
            self.request_rebuild(db)
        else:
            await self._add_unit(db, unit_id)

    def request_rebuild(self, db: Database) -> None:
        """A full rebuild soon: requests within the debounce window share one rebuild; a request arriving once
        the rebuild is reading gets another one after it."""
        if self._rebuild is not None and not self._rebuild.done():
            self._rebuild_again = self._rebuild_again or not self._debouncing
            return
        self._rebuild = asyncio.create_task(self._rebuild_later(db), name="engine.rebuild")

    async def _rebuild_later(self, db: Database) -> None:
        again = True
        while again:
            self._debouncing = True
            await asyncio.sleep(self.rebuild_debounce_s)
            self._debouncing, self._rebuild_again = False, False
            try:
                await self.load(db)
            except Exception as error:  # the reconciliation will try again
                log.warning("engine: rebuild failed: %s", error)
            again = self._rebuild_again

    async def settled(self) -> None:
        """Waits until no structural load or rebuild is pending (tests, benchmarks)."""
        while pending := [t for t in (self._worker, self._rebuild) if t is not None and not t.done()]:
            await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)

    async def stop(self) -> None:
        for task in (self._worker, self._rebuild):
            if task is not None and not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._worker = self._rebuild = None

    async def _add_station(self, db: Database, station_id: str) -> None:
        async with self._structure:
            maps = self._maps
            if station_id in maps.station_by_id or ("station", station_id) in maps.quarantined:
                return  # a rebuild got there first
            async with db.transaction("engine.station.read") as session:
                station = await session.get(Station, station_id)
                if station is None:
                    return
                connectors = list(
                    await session.exec(
                        select(Connector).where(col(Connector.station_id) == station_id).order_by(col(Connector.id))
                    )
                )
                packs = list(
                    await session.exec(select(Pack).where(col(Pack.station_id) == station_id).order_by(col(Pack.id)))
                )
            maps.operator(station.operator_id)
            with engine_span("load.station", id=station_id, connectors=len(connectors), packs=len(packs)):
                _load_stations(self.index, maps, [station])
                _load_connectors(self.index, maps, connectors)
                _load_packs(self.index, maps, [p for p in packs if p.id not in maps.pack_idx])
            for p in packs:
                if p.id in maps.pack_idx and maps.pack_station.get(p.id) != station_id:
                    self._move_pack(p)

    async def _update_station(self, db: Database, station_id: str) -> None:
        """A known station's description changed: what only the adapter keeps (name, power cap) is updated in
        place; a change the index holds (position, lanes, swap time, limits) needs a rebuild."""
        async with db.transaction("engine.station.read") as session:
            station = await session.get(Station, station_id)
        info = self._maps.station_by_id.get(station_id)
        if station is None or info is None:
            self.request_rebuild(db)
            return
        indexed = (info.kind, info.lat, info.lng, info.lanes, info.swap_time_s)
        if indexed != (station.kind, station.lat, station.lng, station.lanes, station.swap_time_s) or station_problems(
            kind=station.kind,
            lanes=station.lanes,
            swap_time_s=station.swap_time_s,
            lat=station.lat,
            lng=station.lng,
            power_cap_w=station.power_cap_w,
            slot_count=station.slot_count,
        ):
            self.request_rebuild(db)
            return
        self._maps.station_by_id[station_id] = replace(info, name=station.name, power_cap_w=station.power_cap_w)
        self._maps.versions[("station", station_id)] = station.version

    async def _place_pack(self, db: Database, pack_id: str) -> None:
        async with self._structure:
            async with db.transaction("engine.pack.read") as session:
                pack = await session.get(Pack, pack_id)
            if pack is None:
                return
            maps = self._maps
            if pack.station_id is not None and pack.station_id not in maps.station_by_id:
                return  # a station the engine does not serve (yet): its own event, or the reconciliation, decides
            if pack.station_id is None or maps.pack_station.get(pack_id) == pack.station_id:
                self.apply([InventoryChange("pack", pack.id, pack.state, pack.version)])
            elif pack_id in maps.pack_idx:
                self._move_pack(pack)
            else:
                maps.quarantined.pop(("pack", pack_id), None)
                with engine_span("load.pack", id=pack_id):
                    _load_packs(self.index, maps, [pack])

    def _move_pack(self, pack: Pack) -> None:
        """The index cannot move a pack: its old entry is withdrawn (never offered) and a new one placed."""
        maps = self._maps
        old = maps.pack_idx.pop(pack.id)
        current = self.index.pack(old)
        with engine_span("move.pack", id=pack.id):
            self.index.set_pack(old, current["soc"], current["soh"], PACK_GONE)
            maps.pack_station.pop(pack.id, None)
            maps.quarantined.pop(("pack", pack.id), None)
            _load_packs(self.index, maps, [pack])

    async def _add_unit(self, db: Database, unit_id: str) -> None:
        async with self._structure:
            maps = self._maps
            if unit_id in maps.unit_by_id or ("unit", unit_id) in maps.quarantined:
                return
            async with db.transaction("engine.unit.read") as session:
                unit = await session.get(MobileUnit, unit_id)
            if unit is None:
                return
            maps.operator(unit.operator_id)
            with engine_span("load.unit", id=unit_id):
                _load_units(self.index, maps, [unit])

    # ---- reconciliation ---------------------------------------------------------------------------------

    async def sync(self, db: Database) -> int:
        """The slow reconciliation: compares every status with the database and repairs what the feed did not
        bring; returns how many resources changed (-1: rebuilt). Quarantined rows count as known, so they do
        not trigger a rebuild every time, unless they change."""
        held = [k[1] for k in self._maps.quarantined if k[0] == "station"]
        async with db.transaction("engine.sync.read") as session:
            conn = await session.connection()
            conns = await _driver_fetch(conn, Connector, ("id", "status", "version"))
            packs = await _driver_fetch(
                conn, Pack, ("id", "state", "version", "station_id"), col(Pack.station_id).is_not(None)
            )
            units = await _driver_fetch(conn, MobileUnit, ("id", "status", "version", "lat", "lng"))
            station_count = (await conn.execute(sa.select(sa.func.count()).select_from(Station))).scalar_one()
            held_versions = (
                (
                    await conn.execute(
                        sa.select(col(Station.id), col(Station.version)).where(col(Station.id).in_(held))
                    )
                ).all()
                if held
                else []
            )
        # Comparing ~370,000 rows at country scale takes a second of Python: in a worker thread, so the event
        # loop keeps serving. It only reads the maps; the repairs are applied here, version-checked.
        changes = await asyncio.to_thread(self._compare, station_count, held, held_versions, conns, packs, units)
        if changes is None:
            return await self._reload(db)
        self.apply(changes)
        await self._flush_alarms(db)
        return len(changes)

    def _compare(
        self,
        station_count: int,
        held: list[str],
        held_versions: Sequence[Any],
        conns: Sequence[Any],
        packs: Sequence[Any],
        units: Sequence[Any],
    ) -> list[InventoryChange] | None:
        """The changes the engine lacks, or None when it must be rebuilt (resources appeared or a quarantined
        row changed)."""
        maps = self._maps
        if (
            station_count != len(maps.station_by_id) + len(held)
            or len(conns) != len(maps.connector_idx) + maps.count_quarantined("connector")
            or any(maps.versions.get(("station", sid)) != v for sid, v in held_versions)
        ):
            return None
        changes: list[InventoryChange] = []
        for cid, status, version in conns:
            if maps.versions.get(("connector", cid)) != version:
                if ("connector", cid) in maps.quarantined:
                    return None  # a quarantined connector changed: try it again
                changes.append(InventoryChange("connector", cid, int(status), int(version)))
        for pid, state, version, at in packs:
            quarantined = ("pack", pid) in maps.quarantined
            if (
                (pid not in maps.pack_idx and not quarantined)
                or (quarantined and maps.versions.get(("pack", pid)) != version)
                or (not quarantined and maps.pack_station.get(pid) != at)
            ):
                return None  # a pack arrived at a station, or a quarantined one changed
            if not quarantined and maps.versions.get(("pack", pid)) != version:
                changes.append(InventoryChange("pack", pid, int(state), int(version)))
        for uid, status, version, lat, lng in units:
            info = maps.unit_by_id.get(uid)
            if info is None:
                if ("unit", uid) not in maps.quarantined or maps.versions.get(("unit", uid)) != version:
                    return None
                continue
            newer = maps.versions.get(("unit", uid)) != version
            if newer or abs(info.lat - lat) > 1e-7 or abs(info.lng - lng) > 1e-7:
                # A move alone keeps the version: sent without one, so the version check lets it through.
                changes.append(InventoryChange("unit", uid, int(status), int(version) if newer else -1, lat, lng))
        return changes

    async def _reload(self, db: Database) -> int:
        await self.load(db)
        return -1

    def quarantined(self) -> list[Quarantined]:
        """The rows the engine does not serve, and why (for operators' tooling and tests)."""
        return sorted(self._maps.quarantined.values(), key=lambda q: (q.kind, q.id))

    # ---- lookups ----------------------------------------------------------------------------------------

    def station(self, station_id: str) -> StationInfo | None:
        return self._maps.station_by_id.get(station_id)

    def unit(self, unit_id: str) -> UnitInfo | None:
        return self._maps.unit_by_id.get(unit_id)

    def connector_station(self, connector_id: str) -> str | None:
        return self._maps.connector_station.get(connector_id)

    def pack_capacity_wh(self, pack_type_id: int) -> int:
        return self._maps.pack_capacity_wh.get(pack_type_id, 0)

    def counts(self) -> tuple[int, int, int, int]:
        stations, packs, connectors, units = self.index.counts()
        return int(stations), int(packs), int(connectors), int(units)

    def nearest_stations(
        self, lat: float, lng: float, *, k: int, radius_m: float, kind: int | None = None
    ) -> list[tuple[StationInfo, float]]:
        with engine_span("nearest_stations", k=k, radius_m=radius_m):
            idx, dist = self.index.nearest_stations(lat, lng, k, kind=kind, max_radius_m=radius_m)
        maps = self._maps
        return [(maps.station_by_id[maps.station_by_idx[i]], float(d)) for i, d in zip(idx, dist, strict=True)]

    def nearest_units(
        self, lat: float, lng: float, *, k: int, radius_m: float, kind: int | None = None, idle_only: bool = True
    ) -> list[tuple[UnitInfo, float]]:
        available = _UNIT_STATUS_TO_ENGINE[UnitStatus.IDLE] if idle_only else None
        with engine_span("nearest_units", k=k, radius_m=radius_m):
            idx, dist = self.index.nearest_units(lat, lng, k, kind=kind, status=available, max_radius_m=radius_m)
        maps = self._maps
        return [(maps.unit_by_id[maps.unit_by_idx[i]], float(d)) for i, d in zip(idx, dist, strict=True)]

    def nearest_resource_m(self, lat: float, lng: float, radius_m: float) -> float | None:
        """Distance to the closest station or mobile unit within `radius_m`, None when there is none."""
        stations = self.nearest_stations(lat, lng, k=1, radius_m=radius_m)
        units = self.nearest_units(lat, lng, k=1, radius_m=radius_m, idle_only=False)
        found = [d for _, d in stations] + [d for _, d in units]
        return min(found) if found else None

    def station_resources(self, station_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The live (connectors, packs) of a station as the engine sees them, with their ids."""
        info = self._maps.station_by_id[station_id]
        with engine_span("station", id=station_id):
            view = self.index.station(info.idx)
            connectors = [
                dict(self.index.connector(int(i)), id=self._maps.connector_ids[int(i)]) for i in view["connectors"]
            ]
            packs = [dict(self.index.pack(int(i)), id=self._maps.pack_ids[int(i)]) for i in view["packs"]]
        return connectors, packs

    def travel(self, lat1: float, lng1: float, lat2: float, lng2: float, at: dt.datetime) -> tuple[float, float]:
        """(road distance m, duration s) departing at `at`, with live congestion."""
        with engine_span("travel"):
            distance, duration, _graph = self.travel_model.travel(lat1, lng1, lat2, lng2, int(at.timestamp()))
        return float(distance), float(duration)

    def travel_matrix(self, points: Sequence[tuple[float, float]], at: dt.datetime) -> np.ndarray[Any, Any]:
        """Square matrix of travel durations (s) between points, departing at `at`."""
        n = len(points)
        lat = np.array([p[0] for p in points], dtype=np.float64)
        lng = np.array([p[1] for p in points], dtype=np.float64)
        with engine_span("travel_many", n=n):
            _dist, dur = self.travel_model.travel_many(
                np.repeat(lat, n), np.repeat(lng, n), np.tile(lat, n), np.tile(lng, n), int(at.timestamp())
            )
        return np.asarray(dur, dtype=np.float64).reshape(n, n)

    # ---- road conditions ------------------------------------------------------------------------------

    def cell_of(self, lat: float, lng: float) -> int:
        with engine_span("cell_of"):
            return int(self.travel_model.cell_of(lat, lng))

    def set_congestion(self, cells: Sequence[int], factors: Sequence[float], expires_at: dt.datetime) -> None:
        if not cells:
            return
        with engine_span("set_congestion", cells=len(cells)):
            self.travel_model.set_congestion(
                np.array(cells, dtype=np.uint64), np.array(factors, dtype=np.float64), int(expires_at.timestamp())
            )

    def congestion_at(self, lat: float, lng: float, at: dt.datetime) -> float:
        with engine_span("congestion_at"):
            return float(self.travel_model.congestion_at(lat, lng, int(at.timestamp())))

    # ---- options ----------------------------------------------------------------------------------------

    def options(self, request: OptionRequest) -> list[EngineOption]:
        """The engine's candidates for one power-up request (`_core.Options.query`), with platform ids."""
        if self._options is None or self._options_index is not self.index:
            self._options = _core_any.Options(self.index, self.travel_model)
            self._options_index = self.index
        v = request.vehicle
        modes = request.modes or frozenset({1, 2, 3, 4})
        mask = 0
        for mode in modes:
            mask |= 1 << mode
        now_s = int(request.now.timestamp())
        deadline_s = int(request.deadline.timestamp()) if request.deadline else now_s + 7 * 24 * 3600
        # An AC-only vehicle (no DC inlet) still charges: at a typical on-board charger's 7 kW.
        charge_power_w = float(max(v.max_dc_power_w, AC_ONLY_POWER_W))
        with engine_span("options.query", modes=mask, top_n=request.max_options), _engine_errors():
            found = self._options.query(
                request.lat,
                request.lng,
                request.soc_permille,
                float(v.usable_capacity_wh),
                float(v.consumption_wh_per_km),
                v.pack_type_id or 0,
                v.connector_mask,
                request.target_soc_permille,
                mask,
                deadline_s,
                now_s,
                max_charge_power_w=charge_power_w,
                top_n=max(request.max_options, 1),
            )
        maps = self._maps
        out: list[EngineOption] = []
        for o in found:
            station = maps.station_by_id[maps.station_by_idx[o.station]] if o.station >= 0 else None
            unit = maps.unit_by_id[maps.unit_by_idx[o.unit]] if o.unit >= 0 else None
            if request.station_ids and (station is None or station.id not in request.station_ids):
                continue
            connector_id = maps.connector_ids[o.connector] if o.connector >= 0 else None
            pack_id = maps.pack_ids[o.pack] if o.pack >= 0 else None
            mode = int(o.mode)
            if mode == PowerUpMode.SWAP:
                kind, resource = int(ResourceKind.SWAP_LANE), "0"
            elif mode == PowerUpMode.CHARGE:
                kind, resource = int(ResourceKind.CONNECTOR), connector_id or ""
            elif mode == PowerUpMode.VALET:
                kind, resource = int(ResourceKind.SPECIALIST), unit.id if unit else ""
            else:
                kind, resource = int(ResourceKind.VAN), unit.id if unit else ""
            operator = (station.operator_id if station else None) or (unit.operator_id if unit else "")
            at_car = mode in (PowerUpMode.VALET, PowerUpMode.MOBILE_VAN)
            distance = float(o.distance_m)
            capacity = max(v.usable_capacity_wh, 1)
            used = distance / 1000 * v.consumption_wh_per_km if not at_car else 0.0
            arrival = max(0, int(request.soc_permille - used * 1000 / capacity))
            out.append(
                EngineOption(
                    mode=mode,
                    resource_kind=kind,
                    resource_id=resource,
                    operator_id=operator,
                    station_id=station.id if station else None,
                    connector_id=connector_id,
                    pack_id=pack_id,
                    unit_id=unit.id if unit else None,
                    eta_s=int(o.eta_s),
                    wait_s=int(o.wait_s),
                    service_s=int(o.service_s),
                    finish_at=dt.datetime.fromtimestamp(float(o.finish_at), dt.UTC),
                    energy_wh=int(o.energy_wh),
                    distance_m=int(distance),
                    arrival_soc_permille=min(arrival, 1000),
                    service_lat=request.lat if at_car or station is None else station.lat,
                    service_lng=request.lng if at_car or station is None else station.lng,
                )
            )
        return out


# ---- building, one resource kind at a time: check each row against LIMITS, quarantine the ones outside, load the
# rest in one call, and fall back to row by row if the engine still refuses the batch (loads are all-or-nothing).


def _load_rows(
    kind: str, rows: Sequence[_Row], load: Callable[[Sequence[_Row]], Any], refuse: Callable[[_Row, str], None]
) -> list[tuple[_Row, int]]:
    """(row, engine index) of every row the engine took; `refuse` is told about the others."""
    if not rows:
        return []
    try:
        return list(zip(rows, (int(i) for i in load(rows)), strict=True))
    except _LOAD_ERRORS as error:
        log.warning("engine: refused a batch of %d %s rows (%s); loading them one by one", len(rows), kind, error)
    accepted: list[tuple[_Row, int]] = []
    for row in rows:
        try:
            accepted.append((row, int(load([row])[0])))
        except _LOAD_ERRORS as error:
            refuse(row, f"the engine refused it: {error}")
    return accepted


def _load_stations(index: Any, maps: _Maps, stations: Sequence[Station]) -> None:
    def refuse(s: Station, reason: str) -> None:
        maps.quarantine(Quarantined("station", s.id, s.operator_id, s.id, reason), s.version)

    ok: list[Station] = []
    for s in stations:
        problems = station_problems(
            kind=s.kind,
            lanes=s.lanes,
            swap_time_s=s.swap_time_s,
            lat=s.lat,
            lng=s.lng,
            power_cap_w=s.power_cap_w,
            slot_count=s.slot_count,
        )
        if problems:
            refuse(s, _explain(problems))
        else:
            ok.append(s)
    handle = {s.id: maps.station_handles + i + 1 for i, s in enumerate(ok)}
    maps.station_handles += len(ok)

    def load(rows: Sequence[Station]) -> Any:
        return index.load_stations(
            np.array([handle[s.id] for s in rows], dtype=np.uint64),
            np.array([s.kind for s in rows], dtype=np.uint8),
            np.array([maps.operator_handle[s.operator_id] for s in rows], dtype=np.uint32),
            np.array([s.lat for s in rows], dtype=np.float64),
            np.array([s.lng for s in rows], dtype=np.float64),
            np.array([s.lanes for s in rows], dtype=np.uint16),
            np.array([s.swap_time_s for s in rows], dtype=np.uint32),
        )

    for s, i in _load_rows("station", ok, load, refuse):
        maps.station_by_id[s.id] = StationInfo(
            s.id, handle[s.id], i, s.operator_id, s.kind, s.name, s.lat, s.lng, s.lanes, s.swap_time_s, s.power_cap_w
        )
        _put(maps.station_by_idx, i, s.id)
        maps.quarantined.pop(("station", s.id), None)
        maps.versions[("station", s.id)] = s.version


@dataclass(frozen=True)
class _StationProblem:
    reason: str
    alarm: bool  # False when the station itself is quarantined: its own alarm covers its connectors and packs
    operator_id: str | None


def _station_problem(maps: _Maps, station_id: str, needs_kind: int) -> _StationProblem | None:
    """Why a connector or pack of this station cannot load (None: it can, as far as its station goes)."""
    station = maps.station_by_id.get(station_id)
    if station is None:
        held = maps.quarantined.get(("station", station_id))
        return _StationProblem(f"its station {station_id} is quarantined", False, held.operator_id if held else None)
    if station.kind != needs_kind:
        kind = "swap" if needs_kind == STATION_SWAP else "charging"
        return _StationProblem(f"its station {station_id} is not a {kind} station", True, station.operator_id)
    return None


# Connectors and packs are most of a country (~400,000 rows): they load by columns. Each column is checked
# against LIMITS with numpy, the rows that pass (all of them, normally) load in one call, and the maps are built
# with dict(zip()). A row that fails a check, or a batch the engine refuses, goes the row-by-row way above
# it, which explains and quarantines exactly as before.
_COLUMNAR_MIN = 64  # below this many rows the row-by-row way is as fast


def _column(values: Sequence[Any], dtype: type = np.int64) -> np.ndarray[Any, Any]:
    return np.fromiter(values, dtype=dtype, count=len(values))


def _within(values: np.ndarray[Any, Any], lo: int, hi: int) -> np.ndarray[Any, Any]:
    inside: np.ndarray[Any, Any] = (values >= lo) & (values <= hi)
    return inside


class _Columns:
    """Rows of one table by columns, for the columnar load: either read by the driver (`of_driver`: tuples in
    `names` order) or taken from row objects (`of_objects`). `row(i)` gives the i-th row as an object with the
    column names as attributes, for the row-by-row way (made only for the rows that go that way)."""

    def __init__(self, names: Sequence[str], values: Sequence[Sequence[Any]], row: Callable[[int], Any]) -> None:
        self.columns = dict(zip(names, values, strict=True))
        self.row = row
        self.count = len(values[0]) if values else 0

    def __len__(self) -> int:
        return self.count

    def rows(self, indexes: Iterable[int] | None = None) -> list[Any]:
        return [self.row(i) for i in (range(self.count) if indexes is None else indexes)]

    @classmethod
    def of_driver(cls, kind: str, names: Sequence[str], data: Sequence[Sequence[Any]]) -> _Columns:
        row_type = namedtuple(kind, names)  # type: ignore[misc]  # the names are known only here
        values = list(zip(*data, strict=True)) if data else [() for _ in names]
        return cls(names, values, lambda i: row_type._make(data[i]))

    @classmethod
    def of_objects(cls, rows: Sequence[Any], names: Sequence[str]) -> _Columns:
        values = list(zip(*map(attrgetter(*names), rows), strict=True)) if rows else [() for _ in names]
        return cls(names, values, rows.__getitem__)


def _load_columnar(
    kind: str,
    maps: _Maps,
    rows: Sequence[Any] | _Columns,
    names: tuple[str, ...],
    check: Callable[[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any]], np.ndarray[Any, Any]],
    load: Callable[[np.ndarray[Any, Any], dict[str, np.ndarray[Any, Any]]], Any],
    rowwise: Callable[[Sequence[Any]], None],
    station_idx: dict[str, int],
) -> tuple[list[str], list[str], list[int]] | None:
    """Loads `rows` by columns; returns (ids, station ids, engine indexes) of the rows loaded this way, or None
    when none were (too few rows, or the engine refused the batch: then all went the row-by-row way)."""
    if len(rows) < _COLUMNAR_MIN:
        rowwise(rows.rows() if isinstance(rows, _Columns) else rows)
        return None
    table = rows if isinstance(rows, _Columns) else _Columns.of_objects(rows, ("id", "station_id", "version", *names))
    values = table.columns
    ids, station_ids = cast(list[str], list(values["id"])), [str(s) for s in values["station_id"]]
    try:
        columns = {name: _column(values[name]) for name in names}
    except (OverflowError, TypeError, ValueError):  # a value numpy cannot hold: the row-by-row way explains it
        rowwise(table.rows())
        return None
    stations = _column([station_idx.get(s, -1) for s in station_ids])
    ok = check(columns, stations) & (stations >= 0)
    keep: list[int] | None = None
    if not ok.all():
        rowwise(table.rows(np.flatnonzero(~ok).tolist()))
        keep = np.flatnonzero(ok).tolist()
        ids, station_ids = [ids[i] for i in keep], [station_ids[i] for i in keep]
        versions = [values["version"][i] for i in keep]
        columns, stations = {name: column[ok] for name, column in columns.items()}, stations[ok]
    else:
        versions = list(values["version"])
    if not ids:
        return None
    try:
        indexes: list[int] = np.asarray(load(stations, columns), dtype=np.int64).tolist()
    except _LOAD_ERRORS as error:
        log.warning("engine: refused a batch of %d %s rows (%s); loading them one by one", len(ids), kind, error)
        rowwise(table.rows(keep))
        return None
    maps.versions.update(zip(zip(itertools.repeat(kind), ids), versions, strict=False))
    if maps.quarantined:
        for row_id in ids:
            maps.quarantined.pop((kind, row_id), None)
    return ids, station_ids, indexes


def _put_all(target: list[str], indexes: list[int], ids: list[str]) -> None:
    """target[indexes[k]] = ids[k] for every k; one extend when the indexes simply continue the list."""
    if indexes and indexes[0] == len(target) and indexes == list(range(indexes[0], indexes[0] + len(indexes))):
        target.extend(ids)
        return
    for i, row_id in zip(indexes, ids, strict=True):
        _put(target, i, row_id)


def _station_indexes(maps: _Maps, kind: int) -> dict[str, int]:
    return {s.id: s.idx for s in maps.station_by_id.values() if s.kind == kind}


def _load_connectors(index: Any, maps: _Maps, connectors: Sequence[Connector] | _Columns) -> None:
    def check(c: dict[str, np.ndarray[Any, Any]], _stations: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return cast(
            "np.ndarray[Any, Any]",
            _within(c["standard"], 1, LIMITS.connector_standard_max)
            & _within(c["max_power_w"], LIMITS.min_connector_power_w, LIMITS.max_connector_power_w)
            & _within(c["status"], 1, LIMITS.connector_status_max),
        )

    def load(stations: np.ndarray[Any, Any], c: dict[str, np.ndarray[Any, Any]]) -> Any:
        return index.load_connectors(
            stations.astype(np.uint32),
            c["standard"].astype(np.uint8),
            c["max_power_w"].astype(np.uint32),
            c["status"].astype(np.uint8),
        )

    def rowwise(rows: Sequence[Connector]) -> None:
        _load_connectors_rowwise(index, maps, rows)

    names = ("standard", "max_power_w", "status")
    stations = _station_indexes(maps, STATION_CHARGING) if len(connectors) >= _COLUMNAR_MIN else {}
    loaded = _load_columnar("connector", maps, connectors, names, check, load, rowwise, stations)
    if loaded is not None:
        ids, station_ids, indexes = loaded
        maps.connector_idx.update(zip(ids, indexes, strict=True))
        maps.connector_station.update(zip(ids, station_ids, strict=True))
        _put_all(maps.connector_ids, indexes, ids)


def _load_packs(index: Any, maps: _Maps, packs: Sequence[Pack] | _Columns) -> None:
    def check(c: dict[str, np.ndarray[Any, Any]], _stations: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return cast(
            "np.ndarray[Any, Any]",
            _within(c["pack_type_id"], 0, LIMITS.max_pack_type_id)
            & _within(c["soc_permille"], 0, LIMITS.max_permille)
            & _within(c["soh_permille"], 0, LIMITS.max_permille)
            & _within(c["cycles"], 0, LIMITS.max_pack_cycles)
            & _within(c["state"], 1, LIMITS.pack_state_max),
        )

    def load(stations: np.ndarray[Any, Any], c: dict[str, np.ndarray[Any, Any]]) -> Any:
        return index.load_packs(
            stations.astype(np.uint32),
            c["pack_type_id"].astype(np.uint16),
            c["soc_permille"].astype(np.uint16),
            c["soh_permille"].astype(np.uint16),
            c["cycles"].astype(np.uint32),
            c["state"].astype(np.uint8),
        )

    def rowwise(rows: Sequence[Pack]) -> None:
        _load_packs_rowwise(index, maps, rows)

    names = ("pack_type_id", "soc_permille", "soh_permille", "cycles", "state")
    stations = _station_indexes(maps, STATION_SWAP) if len(packs) >= _COLUMNAR_MIN else {}
    loaded = _load_columnar("pack", maps, packs, names, check, load, rowwise, stations)
    if loaded is not None:
        ids, station_ids, indexes = loaded
        maps.pack_idx.update(zip(ids, indexes, strict=True))
        maps.pack_station.update(zip(ids, station_ids, strict=True))
        _put_all(maps.pack_ids, indexes, ids)


def _load_connectors_rowwise(index: Any, maps: _Maps, connectors: Sequence[Connector]) -> None:
    def refuse(c: Connector, reason: str, alarm: bool = True) -> None:
        operator = maps.station_by_id[c.station_id].operator_id if c.station_id in maps.station_by_id else None
        maps.quarantine(Quarantined("connector", c.id, operator, c.station_id, reason, alarm), c.version)

    ok: list[Connector] = []
    for c in connectors:
        held = _station_problem(maps, c.station_id, STATION_CHARGING)
        problems = connector_problems(standard=c.standard, max_power_w=c.max_power_w, status=c.status)
        if held is not None:
            refuse(c, held.reason, held.alarm)
        elif problems:
            refuse(c, _explain(problems))
        else:
            ok.append(c)

    def load(rows: Sequence[Connector]) -> Any:
        return index.load_connectors(
            np.array([maps.station_by_id[c.station_id].idx for c in rows], dtype=np.uint32),
            np.array([c.standard for c in rows], dtype=np.uint8),
            np.array([c.max_power_w for c in rows], dtype=np.uint32),
            np.array([c.status for c in rows], dtype=np.uint8),
        )

    for c, i in _load_rows("connector", ok, load, refuse):
        maps.connector_idx[c.id] = i
        _put(maps.connector_ids, i, c.id)
        maps.quarantined.pop(("connector", c.id), None)
        maps.connector_station[c.id] = c.station_id
        maps.versions[("connector", c.id)] = c.version


def _load_packs_rowwise(index: Any, maps: _Maps, packs: Sequence[Pack]) -> None:
    def refuse(p: Pack, reason: str, alarm: bool = True, operator: str | None = None) -> None:
        maps.quarantine(Quarantined("pack", p.id, operator or p.operator_id, p.station_id, reason, alarm), p.version)

    ok: list[Pack] = []
    for p in packs:
        held = _station_problem(maps, str(p.station_id), STATION_SWAP)
        problems = pack_problems(
            pack_type_id=p.pack_type_id, soc=p.soc_permille, soh=p.soh_permille, cycles=p.cycles, state=p.state
        )
        if held is not None:
            refuse(p, held.reason, held.alarm, held.operator_id)
        elif problems:
            refuse(p, _explain(problems))
        else:
            ok.append(p)

    def load(rows: Sequence[Pack]) -> Any:
        return index.load_packs(
            np.array([maps.station_by_id[str(p.station_id)].idx for p in rows], dtype=np.uint32),
            np.array([p.pack_type_id for p in rows], dtype=np.uint16),
            np.array([p.soc_permille for p in rows], dtype=np.uint16),
            np.array([p.soh_permille for p in rows], dtype=np.uint16),
            np.array([p.cycles for p in rows], dtype=np.uint32),
            np.array([p.state for p in rows], dtype=np.uint8),
        )

    for p, i in _load_rows("pack", ok, load, refuse):
        maps.pack_idx[p.id] = i
        maps.pack_station[p.id] = str(p.station_id)
        _put(maps.pack_ids, i, p.id)
        maps.quarantined.pop(("pack", p.id), None)
        maps.versions[("pack", p.id)] = p.version


def _load_units(index: Any, maps: _Maps, units: Sequence[MobileUnit]) -> None:
    def refuse(u: MobileUnit, reason: str) -> None:
        maps.quarantine(Quarantined("unit", u.id, u.operator_id, None, reason), u.version)

    ok: list[MobileUnit] = []
    for u in units:
        problems = unit_problems(u)
        if problems:
            refuse(u, _explain(problems))
        else:
            ok.append(u)
    handle = {u.id: maps.unit_handles + i + 1 for i, u in enumerate(ok)}
    maps.unit_handles += len(ok)

    def load(rows: Sequence[MobileUnit]) -> Any:
        return index.load_mobile(
            np.array([handle[u.id] for u in rows], dtype=np.uint64),
            np.array([u.kind for u in rows], dtype=np.uint8),
            np.array([maps.operator_handle[u.operator_id] for u in rows], dtype=np.uint32),
            np.array([u.lat for u in rows], dtype=np.float64),
            np.array([u.lng for u in rows], dtype=np.float64),
            np.array([_UNIT_STATUS_TO_ENGINE.get(u.status, _UNIT_STATUS_UNKNOWN) for u in rows], dtype=np.uint8),
            energy_wh=np.array([u.energy_wh for u in rows], dtype=np.uint64),
            connector_mask=np.array([u.connector_mask for u in rows], dtype=np.uint32),
            skills=np.array([u.skills for u in rows], dtype=np.uint64),
        )

    for u, i in _load_rows("unit", ok, load, refuse):
        maps.unit_by_id[u.id] = UnitInfo(
            u.id, i, u.operator_id, u.kind, u.lat, u.lng, u.status, u.energy_wh, u.connector_mask
        )
        _put(maps.unit_by_idx, i, u.id)
        maps.quarantined.pop(("unit", u.id), None)
        maps.versions[("unit", u.id)] = u.version


# What a load reads of each kind (what the columnar load, the row-by-row way and the maps use): integers, floats
# and text only, which the driver returns as they are.
_STATION_COLUMNS = (
    "id", "operator_id", "kind", "name", "lat", "lng", "lanes", "swap_time_s", "power_cap_w", "slot_count", "version",
)  # fmt: skip
_UNIT_COLUMNS = (
    "id", "operator_id", "kind", "lat", "lng", "status", "energy_wh", "connector_mask", "skills", "version",
)  # fmt: skip
_CONNECTOR_COLUMNS = ("id", "station_id", "version", "standard", "max_power_w", "status")
_PACK_COLUMNS = (
    "id", "station_id", "version", "operator_id", "pack_type_id", "soc_permille", "soh_permille", "cycles", "state",
)  # fmt: skip


_DRIVER_CHUNK = 20_000


async def _driver_rows(conn: Any, model: type[Any], names: Sequence[str], *where: Any) -> _Columns:
    """Columns of a table in id order, fetched by the database driver itself (`_driver_fetch`)."""
    table: Any = model.__table__
    return _Columns.of_driver(str(table.name), names, await _driver_fetch(conn, model, names, *where))


async def _driver_fetch(conn: Any, model: type[Any], names: Sequence[str], *where: Any) -> Sequence[Sequence[Any]]:
    """Rows of a table in id order as the driver returns them (tuples, asyncpg records), fetched by the driver
    itself (aiosqlite's fetchall in its thread, asyncpg through a cursor) on the transaction's connection: at
    country scale (~370,000 rows) SQLAlchemy's per-row result objects cost more than the read itself. The query
    is still built from the model's table."""
    table: Any = model.__table__
    query = sa.select(*(table.c[name] for name in names)).where(*where).order_by(table.c.id)
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if conn.dialect.name != "postgresql":
        rows: Sequence[Sequence[Any]] = await driver.execute_fetchall(sql)  # in aiosqlite's thread
        return rows
    # asyncpg decodes rows on the event loop: a chunk at a time through a cursor, other work running in between
    # (a rebuild happens while serving). A cursor lives in a transaction, which SQLAlchemy's adapter begins on
    # its first statement only.
    if not driver.is_in_transaction():
        await conn.execute(sa.select(sa.literal(1)))
    data: list[Any] = []
    cursor = await driver.cursor(sql)
    while chunk := await cursor.fetch(_DRIVER_CHUNK):
        data += chunk
        await asyncio.sleep(0)
    return data


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a big, acyclic structure is built (rows, dicts of ids): each
    collection would walk every object built so far, which made a country-scale build several times slower.
    Nothing built here is cyclic garbage, so nothing is lost by not collecting meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _put(ids: list[str], i: int, value: str) -> None:
    """ids[i] = value, growing the list: rows loaded one by one later get the index's next entries."""
    if i >= len(ids):
        ids.extend([""] * (i + 1 - len(ids)))
    ids[i] = value


def _replace_unit(info: UnitInfo, **changes: Any) -> UnitInfo:
    return replace(info, **changes)


def validate_soc(field_name: str, value: int) -> None:
    if not 0 <= value <= 1000:
        raise InvalidArgument.for_field(field_name, f"must be within [0, 1000] permille, got {value}")
