"""Unit tests for the seeded world generator (no I/O)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from voltcloud.world import (
    PRESETS,
    ConnectorStandard,
    ConnectorStatus,
    PackState,
    PackType,
    StationKind,
    UnitKind,
    UnitStatus,
    World,
    generate_world,
    vin_check_digit,
)

TABLES = ("cities", "road_classes", "stations", "packs", "connectors", "units", "vehicles", "drivers")


@pytest.fixture(scope="module")
def demo() -> World:
    return generate_world("demo", seed=0)


@pytest.fixture(scope="module")
def city() -> World:
    return generate_world("city", seed=7)


def _haversine_m(lat1: np.ndarray, lng1: np.ndarray, lat2: np.ndarray, lng2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lng2 - lng1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * 6_371_008.8 * np.arcsin(np.sqrt(a)))


def _assert_same(a: World, b: World) -> None:
    for t in TABLES:
        ta, tb = getattr(a, t), getattr(b, t)
        for f in dataclasses.fields(ta):
            va, vb = getattr(ta, f.name), getattr(tb, f.name)
            if isinstance(va, np.ndarray):
                assert va.dtype == vb.dtype and va.shape == vb.shape, f"{t}.{f.name}"
                assert va.tobytes() == vb.tobytes(), f"{t}.{f.name}"
            else:
                assert va == vb, f"{t}.{f.name}"
    assert a.operators == b.operators and a.fleets == b.fleets
    assert a.digest() == b.digest()


def test_same_seed_is_byte_identical() -> None:
    _assert_same(generate_world("demo", seed=42), generate_world("demo", seed=42))
    _assert_same(generate_world("city", seed=3), generate_world(PRESETS["city"], seed=3))


def test_different_seed_differs() -> None:
    a, b = generate_world("demo", seed=1), generate_world("demo", seed=2)
    assert a.digest() != b.digest()
    assert not np.array_equal(a.stations.lat, b.stations.lat)
    assert a.vehicles.vin != b.vehicles.vin


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="unknown world preset"):
        generate_world("galaxy")


def test_demo_sizes(demo: World) -> None:
    s = demo.summary()
    assert s["cities"] == 1 and demo.cities.name == ["Shanghai"]
    assert s["swap_stations"] == 12 and s["charging_stations"] == 20
    assert 150 <= s["packs"] <= 260
    assert 35 <= s["vans"] + s["specialists"] <= 50 and s["engineers"] >= 1
    assert s["operators"] == 2 and s["fleets"] == 2 and s["sub_fleets"] >= 1
    assert s["vehicles"] == 50 and s["drivers"] >= 50
    assert (
        s["resources"]
        == demo.resource_count()
        == (len(demo.stations) + len(demo.connectors) + len(demo.packs) + len(demo.units))
    )
    assert 300 <= demo.resource_count() <= 1_000


def test_city_sizes(city: World) -> None:
    assert 2_000 <= city.resource_count() <= 10_000


def test_ids_and_handles(demo: World) -> None:
    for table, prefix in (
        (demo.stations, "st-"),
        (demo.packs, "pk-"),
        (demo.connectors, "cn-"),
        (demo.units, "un-"),
        (demo.drivers, "dr-"),
    ):
        ids: list[str] = table.id
        handles: np.ndarray = table.handle
        assert handles.dtype == np.uint64 and len(ids) == len(set(ids)) == handles.shape[0]
        assert all(i.startswith(prefix) and int(i[3:]) == h for i, h in zip(ids, handles.tolist(), strict=True))
    assert len({o.id for o in demo.operators}) == len(demo.operators)
    assert all(f.parent_idx < len(demo.fleets) for f in demo.fleets)


def test_dtypes(demo: World) -> None:
    st, pk, cn, un, vh = demo.stations, demo.packs, demo.connectors, demo.units, demo.vehicles
    assert st.operator_idx.dtype == np.uint32 and st.kind.dtype == np.uint8 and st.lat.dtype == np.float64
    assert st.lanes.dtype == np.uint16 and st.swap_time_s.dtype == np.uint32 and st.power_cap_w.dtype == np.int64
    assert pk.station_idx.dtype == np.int64 and pk.pack_type.dtype == np.uint16 and pk.state.dtype == np.uint8
    assert pk.soc_permille.dtype == np.uint16 and pk.soh_permille.dtype == np.uint16 and pk.cycles.dtype == np.uint32
    assert cn.standard.dtype == np.uint8 and cn.max_power_w.dtype == np.int64 and cn.status.dtype == np.uint8
    assert un.kind.dtype == np.uint8 and un.skills.dtype == np.uint32 and un.shift_start_s.dtype == np.uint32
    assert vh.fleet_idx.dtype == np.int32 and vh.soc_permille.dtype == np.uint16
    assert demo.road_classes.speed_kmh.shape == (4, 96)
    assert not st.lat.flags.writeable  # shared worlds are read-only


def test_coordinates_within_city_radius(city: World) -> None:
    c = city.cities
    for table in (city.stations, city.units, city.vehicles):
        idx = table.city_idx
        d = _haversine_m(c.lat[idx], c.lng[idx], table.lat, table.lng)
        assert np.all(d <= c.radius_m[idx] * 1.01 + 10.0)
    # Distance decay: more stations in the inner half of the radius than in the outer ring.
    idx = city.stations.city_idx
    d = _haversine_m(c.lat[idx], c.lng[idx], city.stations.lat, city.stations.lng) / c.radius_m[idx]
    assert np.count_nonzero(d < 0.5) > np.count_nonzero(d >= 0.5)


def test_enum_values_in_range(demo: World) -> None:
    def within(a: np.ndarray, enum: type) -> bool:
        return set(np.unique(a).tolist()) <= {int(e) for e in enum}  # type: ignore[attr-defined]

    assert within(demo.stations.kind, StationKind)
    assert within(demo.packs.state, PackState)
    assert within(demo.packs.pack_type, PackType)
    assert within(demo.connectors.standard, ConnectorStandard)
    assert within(demo.connectors.status, ConnectorStatus)
    assert within(demo.units.kind, UnitKind)
    assert within(demo.units.status, UnitStatus)
    assert np.all(demo.units.skills < 16)
    assert np.all(demo.units.skills[demo.units.kind == UnitKind.ENGINEER] > 0)
    assert np.all(demo.units.shift_end_s > demo.units.shift_start_s)
    assert np.all(demo.units.shift_start_s < 86_400)
    assert np.all(demo.packs.soc_permille <= 1000) and np.all(demo.packs.soh_permille <= 1000)
    assert np.all(demo.vehicles.soc_permille <= 1000)
    assert np.all(demo.stations.operator_idx < len(demo.operators))
    assert np.all(demo.units.operator_idx < len(demo.operators))
    assert np.all((demo.vehicles.fleet_idx >= -1) & (demo.vehicles.fleet_idx < len(demo.fleets)))
    speed = demo.road_classes.speed_kmh
    assert np.all(speed > 5) and np.all(speed[0] > speed[3])
    # Peaks: 08:00-08:30 slower than 03:00 on every class.
    assert np.all(speed[:, 33] < speed[:, 12])


def test_packs_locations_valid(demo: World) -> None:
    pk, st = demo.packs, demo.stations
    in_station = pk.station_idx >= 0
    assert np.all(pk.station_idx < len(st))
    assert np.all(st.kind[pk.station_idx[in_station]] == StationKind.SWAP)
    # Exactly one location: a station slot or a vehicle.
    assert np.all(in_station != (pk.vehicle_idx >= 0))
    assert np.all((pk.state == PackState.IN_VEHICLE) == ~in_station)
    assert np.all(pk.slot[in_station] >= 1)
    # Slots are unique per station and within its slot count.
    key = pk.station_idx[in_station] * 1_000 + pk.slot[in_station]
    assert np.unique(key).shape[0] == key.shape[0]
    assert np.all(pk.slot[in_station] <= st.slots[pk.station_idx[in_station]])
    # Vehicles and their on-board packs point at each other.
    vh = demo.vehicles
    swap_v = np.flatnonzero(vh.pack_type > 0)
    assert np.all(vh.pack_idx[vh.pack_type == 0] == -1)
    assert np.all(pk.vehicle_idx[vh.pack_idx[swap_v]] == swap_v)
    assert np.all(pk.pack_type[vh.pack_idx[swap_v]] == vh.pack_type[swap_v])
    assert np.all(pk.capacity_wh == np.array([0, 75_000, 100_000, 150_000])[pk.pack_type])
    # A small fraction quarantined.
    big = generate_world("city", seed=1).packs
    q = np.count_nonzero(big.state == PackState.QUARANTINED) / len(big)
    assert 0.0 < q < 0.06


def test_swap_stations_have_ready_packs_and_charging_stations_connectors(demo: World) -> None:
    st, pk, cn = demo.stations, demo.packs, demo.connectors
    swap = np.flatnonzero(st.kind == StationKind.SWAP)
    charging = np.flatnonzero(st.kind == StationKind.CHARGING)
    ready = pk.station_idx[pk.state == PackState.READY]
    assert set(swap.tolist()) <= set(ready.tolist())
    assert set(np.unique(pk.station_idx[pk.station_idx >= 0]).tolist()) == set(swap.tolist())
    assert set(np.unique(cn.station_idx).tolist()) == set(charging.tolist())
    assert np.all(st.lanes[swap] >= 1) and np.all(st.swap_time_s[swap] > 0) and np.all(st.slots[swap] > 0)
    assert np.all(st.charger_count[charging] >= 1) and np.all(st.charger_count[swap] == 0)
    assert np.all(st.power_cap_w > 0)
    available = cn.station_idx[cn.status == ConnectorStatus.AVAILABLE]
    assert set(charging.tolist()) <= set(available.tolist())
    # China: mostly GB/T.
    gbt = np.isin(cn.standard, [ConnectorStandard.GBT_DC, ConnectorStandard.GBT_AC])
    assert np.count_nonzero(gbt) / len(cn) > 0.85


def test_vehicles(demo: World) -> None:
    vh = demo.vehicles
    assert len(set(vh.vin)) == len(vh)
    for vin in vh.vin:
        assert len(vin) == 17 and not set(vin) & set("IOQ")
        assert vin[8] == vin_check_digit(vin)
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"  # the classic ISO 3779 example
    assert np.all(vh.connector_mask > 0) and np.all(vh.consumption_wh_per_km > 0)
    assert np.all(vh.usable_capacity_wh > 0)
    assert np.any(vh.fleet_idx == -1) and np.any(vh.fleet_idx >= 0)
    dr = demo.drivers
    assert np.all((dr.vehicle_idx >= 0) & (dr.vehicle_idx < len(vh)))
    assert np.array_equal(dr.fleet_idx, vh.fleet_idx[dr.vehicle_idx])


def test_units(demo: World) -> None:
    un = demo.units
    van = un.kind == UnitKind.VAN
    assert np.all(un.energy_wh[van] > 0) and np.all(un.energy_wh[van] <= un.energy_capacity_wh[van])
    assert np.all(un.connector_mask[van] & (1 << ConnectorStandard.GBT_DC))
    assert np.all(un.energy_wh[~van] == 0) and np.all(un.connector_mask[~van] == 0)


def test_country_preset() -> None:
    t0 = time.perf_counter()
    w = generate_world("country", seed=0)
    elapsed = time.perf_counter() - t0
    s = w.summary()
    assert w.resource_count() >= 400_000
    assert s["vans"] + s["specialists"] >= 5_000
    assert 35 <= s["cities"] <= 45
    assert elapsed < 10.0
    # Bigger cities get more stations.
    counts = np.bincount(w.stations.city_idx, minlength=len(w.cities))
    assert counts[0] > counts[-1]
    assert len(set(w.vehicles.vin)) == len(w.vehicles)
