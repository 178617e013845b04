"""Deterministic, seeded generator of a realistic region: from a demo city to a country.

Everything is drawn from one ``numpy.random.Generator(PCG64(seed))`` in a fixed order, so the same
(spec, seed) gives byte-identical arrays. The big tables are built with vectorised numpy (no per-row
Python loops except for the string id/name lists).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from . import data
from .model import (
    F64,
    I64,
    PACK_CAPACITY_WH,
    U32,
    Cities,
    Connectors,
    ConnectorStandard,
    ConnectorStatus,
    Drivers,
    Fleet,
    Operator,
    Packs,
    PackState,
    RoadClasses,
    StationKind,
    Stations,
    UnitKind,
    Units,
    UnitStatus,
    Vehicles,
    World,
    WorldSpec,
)

EARTH_RADIUS_M = 6_371_008.8
DAY_S = 86_400

PRESETS: dict[str, WorldSpec] = {
    # Shanghai centre: ~12 swap + ~20 charging stations, ~200 packs, ~40 vans + specialists.
    "demo": WorldSpec(
        name="demo",
        n_cities=1,
        city_radius_scale=0.4,
        decay=0.45,
        n_operators=2,
        n_fleets=2,
        sub_fleets_per_fleet=2,
        n_swap_stations=12,
        n_charging_stations=20,
        swap_slots=(12, 20),
        chargers_per_station=(3, 8),
        n_vans=12,
        n_specialists=28,
        n_engineers=6,
        n_vehicles=50,
        fleet_vehicle_share=0.5,
    ),
    # All of Shanghai: a few thousand resources.
    "city": WorldSpec(
        name="city",
        n_cities=1,
        city_radius_scale=1.0,
        decay=0.35,
        n_operators=4,
        n_fleets=5,
        sub_fleets_per_fleet=3,
        n_swap_stations=60,
        n_charging_stations=150,
        swap_slots=(16, 32),
        chargers_per_station=(4, 16),
        n_vans=80,
        n_specialists=150,
        n_engineers=40,
        n_vehicles=2_000,
        fleet_vehicle_share=0.35,
    ),
    # ~40 Chinese cities: >= 400,000 resources, >= 5,000 vans + specialists.
    "country": WorldSpec(
        name="country",
        n_cities=40,
        city_radius_scale=1.0,
        decay=0.3,
        n_operators=12,
        n_fleets=16,
        sub_fleets_per_fleet=4,
        n_swap_stations=3_500,
        n_charging_stations=15_000,
        swap_slots=(20, 40),
        chargers_per_station=(4, 20),
        n_vans=2_000,
        n_specialists=4_000,
        n_engineers=1_500,
        n_vehicles=250_000,
        fleet_vehicle_share=0.3,
    ),
}


def generate_world(scale: str | WorldSpec = "demo", seed: int = 0) -> World:
    """Generate a world from a preset name ("demo", "city", "country") or a custom ``WorldSpec``."""
    if isinstance(scale, str):
        try:
            spec = PRESETS[scale]
        except KeyError:
            raise ValueError(f"unknown world preset {scale!r}; expected one of {sorted(PRESETS)}") from None
    else:
        spec = scale
    _validate(spec)
    rng = np.random.Generator(np.random.PCG64(seed))

    cities = _make_cities(spec)
    road_classes = _make_road_classes()
    operators = [Operator(f"op-{i + 1:04d}", _pick_name(data.OPERATOR_NAMES, i)) for i in range(spec.n_operators)]
    fleets = _make_fleets(spec)
    stations, charger_station, charger_power = _make_stations(rng, spec, cities)
    connectors = _make_connectors(rng, stations, charger_station, charger_power)
    units = _make_units(rng, spec, cities)
    vehicles = _make_vehicles(rng, spec, cities, fleets)
    packs, vehicle_pack_idx = _make_packs(rng, stations, vehicles)
    vehicles = dataclasses.replace(vehicles, pack_idx=vehicle_pack_idx)
    drivers = _make_drivers(rng, vehicles)

    world = World(
        spec=spec,
        seed=seed,
        cities=cities,
        road_classes=road_classes,
        operators=operators,
        fleets=fleets,
        stations=stations,
        packs=packs,
        connectors=connectors,
        units=units,
        vehicles=vehicles,
        drivers=drivers,
    )
    _freeze(world)
    return world


# ---- helpers --------------------------------------------------------------------------------------------


def _validate(spec: WorldSpec) -> None:
    if not 1 <= spec.n_cities <= len(data.CITIES):
        raise ValueError(f"n_cities must be in 1..{len(data.CITIES)}")
    if spec.n_operators < 1:
        raise ValueError("n_operators must be >= 1")
    lo, hi = spec.swap_slots
    if not 2 <= lo <= hi:
        raise ValueError("swap_slots must satisfy 2 <= lo <= hi")
    lo, hi = spec.chargers_per_station
    if not 1 <= lo <= hi:
        raise ValueError("chargers_per_station must satisfy 1 <= lo <= hi")
    if spec.n_vehicles >= 1_000_000:
        raise ValueError("n_vehicles must be < 1,000,000 (VIN serials are 6 digits)")


def _pick_name(names: tuple[str, ...], i: int) -> str:
    base = names[i % len(names)]
    return base if i < len(names) else f"{base} {i // len(names) + 1}"


def _ids(prefix: str, n: int, width: int) -> list[str]:
    return [f"{prefix}-{h:0{width}d}" for h in range(1, n + 1)]


def _handles(n: int) -> npt.NDArray[np.uint64]:
    return np.arange(1, n + 1, dtype=np.uint64)


def _rank_in_groups(counts: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """For groups laid out consecutively with the given sizes: 0-based position of each row in its group."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    out: npt.NDArray[np.int64] = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    return out


def _ilist(a: npt.NDArray[Any]) -> list[int]:
    out: list[int] = a.tolist()
    return out


def _operator_weights(n: int) -> F64:
    w: F64 = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** 0.8
    return np.asarray(w / w.sum(), dtype=np.float64)


def _by_city(rng: np.random.Generator, n: int, cities: Cities) -> U32:
    """n rows allocated to cities by weight, grouped by city (sorted)."""
    counts = rng.multinomial(n, cities.weight)
    return np.repeat(np.arange(len(cities), dtype=np.uint32), counts)


def _scatter(rng: np.random.Generator, city_idx: U32, cities: Cities, decay: float) -> tuple[F64, F64]:
    """Positions around city centres with density ~ exp(-r / (decay * radius)), within the radius."""
    n = city_idx.shape[0]
    radius = cities.radius_m[city_idx]
    r = rng.gamma(2.0, decay * radius, size=n)  # 2-D exponential decay: radial pdf ~ r exp(-r/s)
    fallback = radius * np.sqrt(rng.random(n))  # outside the radius: uniform in the disc instead
    r = np.where(r > radius * 0.999, fallback * 0.999, r)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
    lat0 = cities.lat[city_idx]
    lng0 = cities.lng[city_idx]
    dlat = np.degrees(r * np.cos(theta) / EARTH_RADIUS_M)
    dlng = np.degrees(r * np.sin(theta) / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))
    return (lat0 + dlat).astype(np.float64), (lng0 + dlng).astype(np.float64)


def _bump(t_h: npt.NDArray[np.float64], centre: float, width: float) -> npt.NDArray[np.float64]:
    d = np.minimum(np.abs(t_h - centre), 24.0 - np.abs(t_h - centre))  # wraps around midnight
    return np.asarray(np.exp(-0.5 * (d / width) ** 2), dtype=np.float64)


def demand_factor(local_time_s: int) -> float:
    """Relative demand (0.3 at night .. ~1.0 at peaks) at a time of day; shapes queues."""
    t = np.array([(local_time_s % DAY_S) / 3600.0])
    v = 0.3 + 0.7 * np.maximum(_bump(t, 8.25, 1.0), _bump(t, 18.25, 1.2)) + 0.3 * _bump(t, 13.0, 2.5)
    return float(min(v[0], 1.0))


# ---- tables ---------------------------------------------------------------------------------------------


def _make_cities(spec: WorldSpec) -> Cities:
    rows = data.CITIES[: spec.n_cities]
    pop = np.array([c.population_m for c in rows], dtype=np.float64)
    return Cities(
        name=[c.name for c in rows],
        lat=np.array([c.lat for c in rows], dtype=np.float64),
        lng=np.array([c.lng for c in rows], dtype=np.float64),
        radius_m=np.round((8_000.0 + 5_000.0 * np.sqrt(pop)) * spec.city_radius_scale),
        weight=pop / pop.sum(),
    )


def _make_road_classes() -> RoadClasses:
    """Speed (km/h) per road class and 15-minute slot: free flow, morning/evening peaks, a midday dip."""
    t = (np.arange(96, dtype=np.float64) + 0.5) * 0.25
    free = np.array([100.0, 55.0, 35.0, 25.0])[:, None]
    morning = np.array([0.45, 0.50, 0.45, 0.30])[:, None]
    evening = np.array([0.50, 0.55, 0.48, 0.30])[:, None]
    midday = np.array([0.10, 0.15, 0.15, 0.10])[:, None]
    factor = (1.0 - morning * _bump(t, 8.25, 0.9) - evening * _bump(t, 18.25, 1.1) - midday * _bump(t, 13.0, 2.5)) * (
        1.0 + 0.08 * _bump(t, 3.0, 2.0)
    )
    speed = np.round(free * factor, 1).astype(np.float32)
    return RoadClasses(name=list(data.ROAD_CLASS_NAMES), speed_kmh=speed)


def _make_fleets(spec: WorldSpec) -> list[Fleet]:
    fleets: list[Fleet] = []
    for i in range(spec.n_fleets):
        fleets.append(Fleet(f"fl-{len(fleets) + 1:04d}", _pick_name(data.FLEET_NAMES, i), -1))
    for i in range(spec.n_fleets):
        parent = fleets[i]
        for j in range(spec.sub_fleets_per_fleet):
            sub = f"{parent.name} / {_pick_name(data.SUB_FLEET_NAMES, j)}"
            fleets.append(Fleet(f"fl-{len(fleets) + 1:04d}", sub, i))
    return fleets


def _make_stations(rng: np.random.Generator, spec: WorldSpec, cities: Cities) -> tuple[Stations, U32, I64]:
    n_sw, n_ch = spec.n_swap_stations, spec.n_charging_stations
    n = n_sw + n_ch
    city_idx = np.concatenate([_by_city(rng, n_sw, cities), _by_city(rng, n_ch, cities)])
    kind = np.concatenate(
        [np.full(n_sw, StationKind.SWAP, dtype=np.uint8), np.full(n_ch, StationKind.CHARGING, dtype=np.uint8)]
    )
    is_swap = kind == StationKind.SWAP
    operator_idx = rng.choice(spec.n_operators, size=n, p=_operator_weights(spec.n_operators)).astype(np.uint32)
    lat, lng = _scatter(rng, city_idx, cities, spec.decay)

    lanes = np.where(is_swap, rng.choice([1, 2, 3], size=n, p=[0.55, 0.38, 0.07]), 0).astype(np.uint16)
    lo, hi = spec.swap_slots
    slots = np.where(is_swap, rng.integers(lo, hi + 1, size=n), 0).astype(np.uint16)
    swap_time = np.where(is_swap, rng.choice([144, 180, 240, 300], size=n, p=[0.2, 0.4, 0.25, 0.15]), 0)
    lo, hi = spec.chargers_per_station
    charger_count = np.where(is_swap, 0, rng.integers(lo, hi + 1, size=n)).astype(np.uint16)
    d = demand_factor(spec.local_time_s)
    queue = np.where(is_swap, rng.poisson(1.2 * d * lanes), rng.poisson(0.4 * d, size=n)).astype(np.uint16)

    # Chargers (one row per charger; connectors are expanded from these).
    charger_station = np.repeat(np.arange(n, dtype=np.uint32), charger_count)
    nc = charger_station.shape[0]
    is_dc = rng.random(nc) < 0.7
    dc_power = rng.choice([60_000, 120_000, 160_000, 240_000, 480_000], size=nc, p=[0.15, 0.35, 0.2, 0.22, 0.08])
    ac_power = rng.choice([7_000, 11_000, 21_000], size=nc, p=[0.85, 0.1, 0.05])
    charger_power = np.where(is_dc, dc_power, ac_power).astype(np.int64)

    swap_cap = rng.choice([630_000, 1_000_000, 1_250_000], size=n, p=[0.5, 0.35, 0.15])
    charger_sum = np.bincount(charger_station, weights=charger_power, minlength=n)
    charging_cap = np.maximum(np.round(charger_sum * 0.75 / 10_000.0) * 10_000.0, 30_000.0)
    power_cap = np.where(is_swap, swap_cap, charging_cap).astype(np.int64)

    # Names: "<city> Swap 0007" numbered per city and kind.
    _, group_sizes = np.unique(kind.astype(np.int64) * 1_000 + city_idx.astype(np.int64), return_counts=True)
    rank = _rank_in_groups(group_sizes) + 1  # stations are grouped by (kind, city) in that order
    label = {int(StationKind.SWAP): "Swap", int(StationKind.CHARGING): "Charge"}
    names = [
        f"{cities.name[c]} {label[k]} {r:04d}"
        for c, k, r in zip(_ilist(city_idx), _ilist(kind), _ilist(rank), strict=True)
    ]

    stations = Stations(
        id=_ids("st", n, 6),
        handle=_handles(n),
        name=names,
        operator_idx=operator_idx,
        kind=kind,
        lat=lat,
        lng=lng,
        city_idx=city_idx,
        lanes=lanes,
        slots=slots,
        swap_time_s=swap_time.astype(np.uint32),
        power_cap_w=power_cap,
        queue=queue,
        charger_count=charger_count,
    )
    return stations, charger_station, charger_power


def _make_connectors(
    rng: np.random.Generator, stations: Stations, charger_station: U32, charger_power: I64
) -> Connectors:
    nc = charger_station.shape[0]
    is_dc = charger_power >= 60_000
    dc_std = rng.choice(
        [ConnectorStandard.GBT_DC, ConnectorStandard.CCS2, ConnectorStandard.CHADEMO], size=nc, p=[0.95, 0.04, 0.01]
    )
    ac_std = rng.choice([ConnectorStandard.GBT_AC, ConnectorStandard.TYPE2], size=nc, p=[0.97, 0.03])
    charger_std = np.where(is_dc, dc_std, ac_std).astype(np.uint8)
    guns = np.where(is_dc & (rng.random(nc) < 0.5), 2, 1)  # dual-gun DC chargers share their power
    charger_no = (_rank_in_groups(stations.charger_count) + 1).astype(np.uint16)

    station_idx = np.repeat(charger_station, guns)
    n = station_idx.shape[0]
    status = rng.choice([int(s) for s in ConnectorStatus], size=n, p=[0.64, 0.25, 0.03, 0.04, 0.025, 0.015]).astype(
        np.uint8
    )
    connector_no = (_rank_in_groups(guns) + 1).astype(np.uint8)
    charger_no_c = np.repeat(charger_no, guns)
    first = (charger_no_c == 1) & (connector_no == 1)
    status[first] = ConnectorStatus.AVAILABLE  # every charging station has a free connector
    return Connectors(
        id=_ids("cn", n, 7),
        handle=_handles(n),
        station_idx=station_idx.astype(np.uint32),
        charger_no=charger_no_c,
        connector_no=connector_no,
        standard=np.repeat(charger_std, guns),
        max_power_w=np.repeat(charger_power, guns).astype(np.int64),
        status=status,
    )


def _make_units(rng: np.random.Generator, spec: WorldSpec, cities: Cities) -> Units:
    counts = [spec.n_vans, spec.n_specialists, spec.n_engineers]
    n = sum(counts)
    kind = np.repeat(np.array([UnitKind.VAN, UnitKind.SPECIALIST, UnitKind.ENGINEER], dtype=np.uint8), counts)
    is_van = kind == UnitKind.VAN
    is_eng = kind == UnitKind.ENGINEER
    city_idx = rng.choice(len(cities), size=n, p=cities.weight).astype(np.uint32)
    operator_idx = rng.choice(spec.n_operators, size=n, p=_operator_weights(spec.n_operators)).astype(np.uint32)
    lat, lng = _scatter(rng, city_idx, cities, spec.decay * 1.3)

    cap = np.where(is_van, rng.choice([60_000, 100_000, 150_000], size=n, p=[0.3, 0.5, 0.2]), 0)
    energy = np.round(cap * rng.uniform(0.3, 1.0, size=n)).astype(np.int64)
    max_power = np.where(is_van, rng.choice([30_000, 40_000, 60_000], size=n, p=[0.3, 0.4, 0.3]), 0)
    mask = (
        (1 << ConnectorStandard.GBT_DC)
        | np.where(rng.random(n) < 0.3, 1 << ConnectorStandard.GBT_AC, 0)
        | np.where(rng.random(n) < 0.1, 1 << ConnectorStandard.CCS2, 0)
    )
    connector_mask = np.where(is_van, mask, 0).astype(np.uint32)
    skills = np.where(is_eng, rng.integers(1, 16, size=n), 0).astype(np.uint32)

    start_h = rng.choice([0, 6, 7, 8, 9, 14, 22], size=n, p=[0.05, 0.15, 0.25, 0.25, 0.1, 0.15, 0.05])
    length_h = rng.choice([8, 9, 10], size=n, p=[0.5, 0.3, 0.2])
    start = (start_h * 3600).astype(np.uint32)
    end = ((start_h + length_h) * 3600).astype(np.uint32)
    t = spec.local_time_s % DAY_S
    on_shift = ((start <= t) & (t < end)) | ((start <= t + DAY_S) & (t + DAY_S < end))
    busy = rng.random(n) < 0.3
    status = np.where(on_shift, np.where(busy, UnitStatus.BUSY, UnitStatus.IDLE), UnitStatus.OFF_SHIFT)

    return Units(
        id=_ids("un", n, 6),
        handle=_handles(n),
        kind=kind,
        operator_idx=operator_idx,
        city_idx=city_idx,
        lat=lat,
        lng=lng,
        energy_wh=energy,
        energy_capacity_wh=cap.astype(np.int64),
        max_power_w=max_power.astype(np.int64),
        connector_mask=connector_mask,
        skills=skills,
        shift_start_s=start,
        shift_end_s=end,
        status=status.astype(np.uint8),
    )


# VIN (ISO 3779 / GB 16735): WMI(3) VDS(5) check(1) year(1) plant(1) serial(6).
_VIN_ALPHABET = np.frombuffer(b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789", dtype=np.uint8)
_VIN_LETTERS = np.frombuffer(b"ABCDEFGHJKLMNPRSTUVWXYZ", dtype=np.uint8)
_VIN_YEARS = np.frombuffer(b"KLMNPRST", dtype=np.uint8)  # 2019..2026
_VIN_WEIGHTS = np.array([8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)
_VIN_VALUES = np.zeros(256, dtype=np.int64)
for _c, _v in zip(b"0123456789", range(10), strict=True):
    _VIN_VALUES[_c] = _v
for _c, _v in zip(
    b"ABCDEFGHJKLMNPRSTUVWXYZ", [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9], strict=True
):
    _VIN_VALUES[_c] = _v


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 check character (position 9) for a 17-character VIN."""
    codes = np.frombuffer(vin.encode("ascii"), dtype=np.uint8)
    c = int((_VIN_VALUES[codes] * _VIN_WEIGHTS).sum() % 11)
    return "X" if c == 10 else str(c)


def _make_vins(rng: np.random.Generator, wmi: npt.NDArray[np.uint8]) -> list[str]:
    n = wmi.shape[0]
    m = np.empty((n, 17), dtype=np.uint8)
    m[:, 0:3] = wmi
    m[:, 3:8] = _VIN_ALPHABET[rng.integers(0, _VIN_ALPHABET.shape[0], size=(n, 5))]
    m[:, 8] = ord("0")
    m[:, 9] = _VIN_YEARS[rng.integers(0, _VIN_YEARS.shape[0], size=n)]
    m[:, 10] = _VIN_LETTERS[rng.integers(0, _VIN_LETTERS.shape[0], size=n)]
    serial = np.arange(1, n + 1, dtype=np.int64)  # unique per vehicle
    for k in range(6):
        m[:, 16 - k] = (serial // 10**k) % 10 + ord("0")
    check = (_VIN_VALUES[m] * _VIN_WEIGHTS).sum(axis=1) % 11
    m[:, 8] = np.where(check == 10, ord("X"), check + ord("0"))
    out: list[str] = m.view("S17").ravel().astype("U17").tolist()
    return out


def _make_vehicles(rng: np.random.Generator, spec: WorldSpec, cities: Cities, fleets: list[Fleet]) -> Vehicles:
    n = spec.n_vehicles
    models = data.VEHICLE_MODELS
    is_fleet = rng.random(n) < spec.fleet_vehicle_share if fleets else np.zeros(n, dtype=bool)
    leaves = [i for i, f in enumerate(fleets) if f.parent_idx >= 0] or list(range(len(fleets)))
    fleet_pick = rng.choice(np.array(leaves or [0], dtype=np.int64), size=n)
    fleet_idx = np.where(is_fleet, fleet_pick, -1).astype(np.int32)

    pw = np.array([m.private_weight for m in models])
    fw = np.array([m.fleet_weight for m in models])
    model_idx = np.where(
        is_fleet, rng.choice(len(models), size=n, p=fw / fw.sum()), rng.choice(len(models), size=n, p=pw / pw.sum())
    )

    def col(attr: str, dt: type[np.generic]) -> npt.NDArray[Any]:
        return np.array([getattr(m, attr) for m in models], dtype=dt)[model_idx]

    city_idx = _by_city(rng, n, cities)
    lat, lng = _scatter(rng, city_idx, cities, spec.decay * 1.6)
    soc = np.clip(np.round(rng.beta(4.0, 2.5, size=n) * 900.0 + 60.0), 50, 1000).astype(np.uint16)
    wmi = np.frombuffer("".join(m.wmi for m in models).encode("ascii"), dtype=np.uint8).reshape(-1, 3)[model_idx]
    return Vehicles(
        vin=_make_vins(rng, wmi),
        handle=_handles(n),
        model=[models[i].name for i in _ilist(model_idx)],
        pack_type=col("pack_type", np.uint16),
        connector_mask=col("connector_mask", np.uint32),
        usable_capacity_wh=col("usable_capacity_wh", np.int64),
        consumption_wh_per_km=col("consumption_wh_per_km", np.uint32),
        max_dc_power_w=col("max_dc_power_w", np.int64),
        soc_permille=soc,
        fleet_idx=fleet_idx,
        city_idx=city_idx,
        lat=lat,
        lng=lng,
        pack_idx=np.full(n, -1, dtype=np.int64),  # set by _make_packs
    )


def _soh_cycles(rng: np.random.Generator, n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    soh = np.clip(np.round(1000.0 - rng.gamma(2.0, 30.0, size=n)), 700, 1000).astype(np.int64)
    cycles = (1000 - soh) * 12 + rng.integers(0, 150, size=n)
    return soh, cycles


def _make_packs(rng: np.random.Generator, stations: Stations, vehicles: Vehicles) -> tuple[Packs, I64]:
    # Packs in swap-station slots: most slots filled; ready/charging/reserved, a few quarantined.
    swap_idx = np.flatnonzero(stations.kind == StationKind.SWAP)
    slots = stations.slots[swap_idx].astype(np.int64)
    filled = np.maximum(slots - rng.binomial(slots, 0.08), 2)
    ns = int(filled.sum())
    st_idx = np.repeat(swap_idx.astype(np.int64), filled)
    rank = _rank_in_groups(filled)
    ptype = rng.choice([1, 2, 3], size=ns, p=[0.55, 0.35, 0.10])
    state = rng.choice(
        [PackState.READY, PackState.CHARGING, PackState.RESERVED, PackState.QUARANTINED],
        size=ns,
        p=[0.55, 0.36, 0.06, 0.03],
    )
    # Every swap station has a ready standard pack and a ready long-range pack in its first two slots.
    ptype = np.where(rank == 0, 1, np.where(rank == 1, 2, ptype))
    state = np.where(rank < 2, PackState.READY, state)
    soc = np.select(
        [state == PackState.READY, state == PackState.CHARGING, state == PackState.RESERVED],
        [rng.integers(900, 1001, size=ns), rng.integers(100, 900, size=ns), rng.integers(950, 1001, size=ns)],
        rng.integers(50, 1001, size=ns),
    )
    soh, cycles = _soh_cycles(rng, ns)
    quarantined = state == PackState.QUARANTINED
    soh = np.where(quarantined, np.minimum(soh, rng.integers(650, 900, size=ns)), soh)

    # One pack on board of each swap-capable vehicle.
    v_ptype = vehicles.pack_type
    sv = np.flatnonzero(v_ptype > 0)
    nv = sv.shape[0]
    v_soh, v_cycles = _soh_cycles(rng, nv)
    vehicle_pack_idx = np.full(v_ptype.shape[0], -1, dtype=np.int64)
    vehicle_pack_idx[sv] = ns + np.arange(nv, dtype=np.int64)

    n = ns + nv
    pack_type = np.concatenate([ptype, v_ptype[sv]]).astype(np.uint16)
    cap_lut = np.zeros(4, dtype=np.int64)
    for t, c in PACK_CAPACITY_WH.items():
        cap_lut[t] = c
    packs = Packs(
        id=_ids("pk", n, 7),
        handle=_handles(n),
        station_idx=np.concatenate([st_idx, np.full(nv, -1, dtype=np.int64)]),
        slot=np.concatenate([rank + 1, np.zeros(nv, dtype=np.int64)]).astype(np.uint16),
        vehicle_idx=np.concatenate([np.full(ns, -1, dtype=np.int64), sv.astype(np.int64)]),
        pack_type=pack_type,
        capacity_wh=cap_lut[pack_type],
        soc_permille=np.concatenate([soc, vehicles.soc_permille[sv]]).astype(np.uint16),
        soh_permille=np.concatenate([soh, v_soh]).astype(np.uint16),
        cycles=np.concatenate([cycles, v_cycles]).astype(np.uint32),
        state=np.concatenate([state, np.full(nv, PackState.IN_VEHICLE)]).astype(np.uint8),
    )
    return packs, vehicle_pack_idx


def _make_drivers(rng: np.random.Generator, vehicles: Vehicles) -> Drivers:
    nv = len(vehicles)
    # Every vehicle has a driver; ~30% of fleet vehicles (taxis, ride-hailing) have a second-shift driver.
    second = np.flatnonzero((vehicles.fleet_idx >= 0) & (rng.random(nv) < 0.3))
    vehicle_idx = np.concatenate([np.arange(nv, dtype=np.int64), second.astype(np.int64)])
    n = vehicle_idx.shape[0]
    sur = _ilist(np.asarray(rng.integers(0, len(data.SURNAMES), size=n)))
    giv = _ilist(np.asarray(rng.integers(0, len(data.GIVEN_NAMES), size=n)))
    names = [f"{data.SURNAMES[s]} {data.GIVEN_NAMES[g]}" for s, g in zip(sur, giv, strict=True)]
    return Drivers(
        id=_ids("dr", n, 6),
        handle=_handles(n),
        name=names,
        fleet_idx=vehicles.fleet_idx[vehicle_idx].astype(np.int32),
        vehicle_idx=vehicle_idx,
    )


def _freeze(world: World) -> None:
    for tname in ("cities", "road_classes", "stations", "packs", "connectors", "units", "vehicles", "drivers"):
        table = getattr(world, tname)
        for v in vars(table).values():
            if isinstance(v, np.ndarray):
                v.flags.writeable = False
