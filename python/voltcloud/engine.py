"""The platform's adapter to the Rust engine (`voltcloud._core`).

Built from the database at startup (`Engine.load`), it keeps the engine's in-memory view of stations,
connectors, packs and mobile units, maps the platform's string ids to the engine's integer handles, and
exposes typed Python methods to the domains. Rules:

- the view changes only after the database transaction that changed a resource has committed
  (`Engine.apply(changes)` is called by the domains after `Database.transaction()` exits);
- every call into `_core` runs inside `tracing.engine_span`;
- other replicas' commits reach this view through `Engine.sync(db)` (a periodic, cheap status refresh), so
  the engine is a fast, possibly slightly stale cache: the database's version checks decide every race.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import col, select

from voltcloud import _core
from voltcloud.dispatch.models import MobileUnit
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument, ResourceExhausted, Unimplemented
from voltcloud.platform.tracing import engine_span
from voltcloud.stations.inventory import InventoryChange
from voltcloud.stations.models import Connector, Pack, PackType, Station

log = logging.getLogger(__name__)

STATION_SWAP = 1
STATION_CHARGING = 2
UNIT_VAN = 1
UNIT_SPECIALIST = 2

# Database MobileUnit.status (1 idle, 2 busy, 3 off shift) → the engine's unit status (1 available,
# 3 reserved by the engine's own API; we mirror the database instead and use 2 busy, 4 off shift).
_UNIT_STATUS_TO_ENGINE = {1: 1, 2: 2, 3: 4}

_core_any: Any = _core  # engine classes whose stubs have not landed in _core.pyi yet
AC_ONLY_POWER_W = 7_000


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
    versions: dict[tuple[str, str], int] = field(default_factory=dict)


class Engine:
    """The engine's view of the resources, rebuilt from the database; see the module docstring."""

    def __init__(self, *, index_cell_m: float = 2000.0, travel_cell_m: float = 1000.0) -> None:
        self._index_cell_m = index_cell_m
        self.index: Any = _core_any.ResourceIndex(index_cell_m)
        self.travel_model: Any = _core_any.TravelModel(travel_cell_m)
        self._maps = _Maps()
        self._lock = asyncio.Lock()
        self._options: Any = None
        self._options_index: Any = None

    # ---- building -------------------------------------------------------------------------------------

    async def load(self, db: Database) -> dict[str, int]:
        """(Re)builds the index from the database; returns counts per resource kind."""
        async with db.transaction("engine.load.read") as session:
            stations = list(await session.exec(select(Station).order_by(col(Station.id))))
            connectors = list(await session.exec(select(Connector).order_by(col(Connector.id))))
            packs = list(
                await session.exec(select(Pack).where(col(Pack.station_id).is_not(None)).order_by(col(Pack.id)))
            )
            units = list(await session.exec(select(MobileUnit).order_by(col(MobileUnit.id))))
            pack_types = list(await session.exec(select(PackType)))
        async with self._lock:
            self._build(stations, connectors, packs, units, pack_types)
        return {"stations": len(stations), "connectors": len(connectors), "packs": len(packs), "units": len(units)}

    def _build(
        self,
        stations: Sequence[Station],
        connectors: Sequence[Connector],
        packs: Sequence[Pack],
        units: Sequence[MobileUnit],
        pack_types: Sequence[PackType],
    ) -> None:
        maps = _Maps()
        index: Any = _core_any.ResourceIndex(self._index_cell_m)
        for pt in pack_types:
            maps.pack_capacity_wh[pt.id] = pt.capacity_wh
        operators = sorted({s.operator_id for s in stations} | {u.operator_id for u in units})
        maps.operator_handle = {op: i + 1 for i, op in enumerate(operators)}
        with engine_span("load", stations=len(stations), connectors=len(connectors), packs=len(packs)):
            handles = np.arange(1, len(stations) + 1, dtype=np.uint64)
            idx = index.load_stations(
                handles,
                np.array([s.kind for s in stations], dtype=np.uint8),
                np.array([maps.operator_handle[s.operator_id] for s in stations], dtype=np.uint32),
                np.array([s.lat for s in stations], dtype=np.float64),
                np.array([s.lng for s in stations], dtype=np.float64),
                np.array([s.lanes for s in stations], dtype=np.uint16),
                np.array([s.swap_time_s for s in stations], dtype=np.uint32),
            )
            maps.station_by_idx = [""] * len(stations)
            for s, h, i in zip(stations, handles.tolist(), idx.tolist(), strict=True):
                maps.station_by_id[s.id] = StationInfo(
                    s.id, h, i, s.operator_id, s.kind, s.name, s.lat, s.lng, s.lanes, s.swap_time_s, s.power_cap_w
                )
                maps.station_by_idx[i] = s.id
                maps.versions[("station", s.id)] = s.version
            conns = [c for c in connectors if c.station_id in maps.station_by_id]
            cidx = index.load_connectors(
                np.array([maps.station_by_id[c.station_id].idx for c in conns], dtype=np.uint32),
                np.array([c.standard for c in conns], dtype=np.uint8),
                np.array([c.max_power_w for c in conns], dtype=np.uint32),
                np.array([c.status for c in conns], dtype=np.uint8),
            )
            maps.connector_ids = [""] * len(conns)
            for c, i in zip(conns, cidx.tolist(), strict=True):
                maps.connector_idx[c.id] = i
                maps.connector_ids[i] = c.id
                maps.connector_station[c.id] = c.station_id
                maps.versions[("connector", c.id)] = c.version
            station_packs = [p for p in packs if p.station_id in maps.station_by_id]
            pidx = index.load_packs(
                np.array([maps.station_by_id[str(p.station_id)].idx for p in station_packs], dtype=np.uint32),
                np.array([p.pack_type_id for p in station_packs], dtype=np.uint16),
                np.array([p.soc_permille for p in station_packs], dtype=np.uint16),
                np.array([p.soh_permille for p in station_packs], dtype=np.uint16),
                np.array([p.cycles for p in station_packs], dtype=np.uint32),
                np.array([p.state for p in station_packs], dtype=np.uint8),
            )
            maps.pack_ids = [""] * len(station_packs)
            for p, i in zip(station_packs, pidx.tolist(), strict=True):
                maps.pack_idx[p.id] = i
                maps.pack_ids[i] = p.id
                maps.versions[("pack", p.id)] = p.version
            uhandles = np.arange(1, len(units) + 1, dtype=np.uint64)
            uidx = index.load_mobile(
                uhandles,
                np.array([u.kind for u in units], dtype=np.uint8),
                np.array([maps.operator_handle[u.operator_id] for u in units], dtype=np.uint32),
                np.array([u.lat for u in units], dtype=np.float64),
                np.array([u.lng for u in units], dtype=np.float64),
                np.array([_UNIT_STATUS_TO_ENGINE.get(u.status, 4) for u in units], dtype=np.uint8),
                energy_wh=np.array([u.energy_wh for u in units], dtype=np.uint64),
                connector_mask=np.array([u.connector_mask for u in units], dtype=np.uint32),
                skills=np.array([u.skills for u in units], dtype=np.uint64),
            )
            maps.unit_by_idx = [""] * len(units)
            for u, i in zip(units, uidx.tolist(), strict=True):
                maps.unit_by_id[u.id] = UnitInfo(
                    u.id, i, u.operator_id, u.kind, u.lat, u.lng, u.status, u.energy_wh, u.connector_mask
                )
                maps.unit_by_idx[i] = u.id
                maps.versions[("unit", u.id)] = u.version
        self.index = index
        self._maps = maps

    # ---- keeping current ------------------------------------------------------------------------------

    def apply(self, changes: Iterable[InventoryChange]) -> None:
        """Mirrors committed inventory changes into the engine. Call only after the commit."""
        maps = self._maps
        for change in changes:
            with engine_span(f"apply.{change.kind}", id=change.id):
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
                        self.index.set_unit_status(info.idx, _UNIT_STATUS_TO_ENGINE.get(change.status, 4))
                        maps.unit_by_id[change.id] = _replace_unit(maps.unit_by_id[change.id], status=change.status)
                if change.version > 0:
                    maps.versions[(change.kind, change.id)] = change.version

    async def sync(self, db: Database) -> int:
        """Pulls statuses committed by other replicas; returns how many resources changed."""
        async with db.transaction("engine.sync.read") as session:
            conns = (
                await (await session.connection()).execute(
                    sa.select(col(Connector.id), col(Connector.status), col(Connector.version))
                )
            ).all()
            packs = (
                await (await session.connection()).execute(
                    sa.select(col(Pack.id), col(Pack.state), col(Pack.version)).where(col(Pack.station_id).is_not(None))
                )
            ).all()
            units = (
                await (await session.connection()).execute(
                    sa.select(
                        col(MobileUnit.id),
                        col(MobileUnit.status),
                        col(MobileUnit.version),
                        col(MobileUnit.lat),
                        col(MobileUnit.lng),
                    )
                )
            ).all()
            station_count = (
                await (await session.connection()).execute(sa.select(sa.func.count()).select_from(Station))
            ).scalar_one()
        maps = self._maps
        if station_count != len(maps.station_by_id) or len(conns) != len(maps.connector_idx):
            await self.load(db)
            return -1
        changes: list[InventoryChange] = []
        for cid, status, version in conns:
            if maps.versions.get(("connector", cid)) != version:
                changes.append(InventoryChange("connector", cid, int(status), int(version)))
        for pid, state, version in packs:
            if pid not in maps.pack_idx:
                await self.load(db)  # a pack arrived at a station: rebuild
                return -1
            if maps.versions.get(("pack", pid)) != version:
                changes.append(InventoryChange("pack", pid, int(state), int(version)))
        for uid, status, version, lat, lng in units:
            info = maps.unit_by_id.get(uid)
            if info is None:
                await self.load(db)
                return -1
            moved = abs(info.lat - lat) > 1e-7 or abs(info.lng - lng) > 1e-7
            if maps.versions.get(("unit", uid)) != version or moved:
                changes.append(InventoryChange("unit", uid, int(status), int(version), lat=lat, lng=lng))
        self.apply(changes)
        return len(changes)

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
        with engine_span("nearest_units", k=k, radius_m=radius_m):
            idx, dist = self.index.nearest_units(
                lat, lng, k, kind=kind, status=1 if idle_only else None, max_radius_m=radius_m
            )
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
        if not hasattr(_core_any, "Options"):
            raise Unimplemented("power-up options are not available: the engine's options module is not built")
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
            if mode == 1:
                kind, resource = 1, "0"
            elif mode == 2:
                kind, resource = 2, connector_id or ""
            elif mode == 3:
                kind, resource = 3, unit.id if unit else ""
            else:
                kind, resource = 4, unit.id if unit else ""
            operator = (station.operator_id if station else None) or (unit.operator_id if unit else "")
            at_car = mode in (3, 4)
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


def _replace_unit(info: UnitInfo, **changes: Any) -> UnitInfo:
    from dataclasses import replace

    return replace(info, **changes)


def validate_soc(field_name: str, value: int) -> None:
    if not 0 <= value <= 1000:
        raise InvalidArgument.for_field(field_name, f"must be within [0, 1000] permille, got {value}")
