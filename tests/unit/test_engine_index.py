"""ResourceIndex through the real extension: bulk loads, queries, updates, reservations, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from voltcloud import _core
from voltcloud._core import ConflictError, InvalidInputError, NotFoundError, ResourceIndex


def make_index() -> ResourceIndex:
    idx = ResourceIndex(cell_size_m=2000.0)
    st = idx.load_stations(
        np.array([10, 11, 20, 21], dtype=np.uint64),
        np.array([1, 1, 2, 2], dtype=np.uint8),
        np.array([1, 2, 1, 2], dtype=np.uint32),
        np.array([31.23, 31.30, 31.24, 31.10]),
        np.array([121.47, 121.50, 121.48, 121.40]),
        np.array([2, 1, 0, 0], dtype=np.uint16),
        np.array([180, 240, 0, 0], dtype=np.uint32),
    )
    assert st.tolist() == [0, 1, 2, 3]
    idx.load_packs([0, 0, 1], [7, 7, 7], [950, 990, 900], [980, 900, 950], [100, 900, 50], [3, 3, 5])
    idx.load_connectors([2, 2, 3], [3, 1, 3], [120_000, 60_000, 250_000], [1, 1, 2])
    idx.load_mobile(
        ids=[100, 101],
        kind=[1, 2],
        operator=[1, 1],
        lat=[31.22, 31.231],
        lng=[121.46, 121.471],
        status=[1, 1],
        energy_wh=[60_000, 0],
        power_w=[40_000, 0],
        connector_mask=[1 << 3, 0],
    )
    return idx


def test_exports_and_counts() -> None:
    assert issubclass(_core.ConflictError, _core.VoltcloudCoreError)
    idx = make_index()
    assert idx.counts() == (4, 3, 3, 2)
    assert idx.station_index(21) == 3
    assert idx.unit_index(101) == 1
    assert idx.station(0)["packs"].tolist() == [0, 1]
    assert idx.connector(0)["standard"] == 3


def test_nearest_and_radius_queries_respect_visibility() -> None:
    idx = make_index()
    handles, dist = idx.nearest_stations(31.231, 121.471, 2, kind=1)
    assert handles.tolist() == [0, 1]
    assert dist.dtype == np.float64 and dist[0] < dist[1]
    handles, _ = idx.nearest_stations(31.231, 121.471, 10, operators=[2])
    assert handles.tolist() == [1, 3]
    handles, dist = idx.stations_within(31.231, 121.471, 3000.0)
    assert sorted(handles.tolist()) == [0, 2] and (dist <= 3000.0).all()
    units, _ = idx.nearest_units(31.231, 121.471, 5, kind=2)
    assert units.tolist() == [1]


def test_updates_move_and_versions() -> None:
    idx = make_index()
    v = idx.connector(0)["version"]
    assert idx.set_connector_status(0, 2) == v + 1
    assert idx.set_pack(0, 500, 970, 2) == 2
    assert idx.set_queue(0, 4) == 2
    idx.move_unit(0, 39.9, 116.4)
    units, _ = idx.units_within(39.9, 116.4, 1000.0)
    assert units.tolist() == [0]
    assert idx.unit(0)["version"] == 1, "moving does not bump the version"
    assert idx.set_van_energy(0, 10_000) == 2
    assert idx.set_unit_status(1, 2, busy_until=1_800_000_000) == 2
    assert idx.unit(1)["busy_until"] == 1_800_000_000


def test_reservations_are_optimistic() -> None:
    idx = make_index()
    v = idx.connector(1)["version"]
    with pytest.raises(ConflictError):
        idx.reserve_connector(1, expected_version=v + 5)
    v2 = idx.reserve_connector(1, expected_version=v)
    with pytest.raises(ConflictError):
        idx.reserve_connector(1, expected_version=v2)
    idx.release_connector(1, v2)
    with pytest.raises(ConflictError):
        idx.reserve_pack(2)  # quarantined
    idx.reserve_pack(0)
    with pytest.raises(ConflictError):
        idx.reserve_pack(0)
    idx.reserve_unit(1)
    assert idx.unit(1)["status"] == 4
    with pytest.raises(ConflictError):
        idx.reserve_unit(1)
    idx.release_unit(1)
    with pytest.raises(ConflictError):
        idx.release_unit(1)


def test_bad_input_is_typed() -> None:
    idx = make_index()
    with pytest.raises(InvalidInputError):
        idx.load_stations([1], [1], [0], [float("nan")], [0.0], [1], [60])
    with pytest.raises(InvalidInputError):
        idx.load_stations([1, 2], [1], [0], [0.0], [0.0], [1], [60])  # wrong lengths
    with pytest.raises(InvalidInputError):
        idx.load_stations([10], [1], [0], [0.0], [0.0], [1], [60])  # duplicate id
    with pytest.raises(InvalidInputError):
        idx.load_packs([0], [1], [1001], [1000], [0], [3])  # soc out of range
    with pytest.raises(InvalidInputError):
        idx.load_packs([0], [1], [1.5], [1000], [0], [3])  # float where int expected
    with pytest.raises(InvalidInputError):
        idx.load_packs([0], [1], [-1], [1000], [0], [3])
    with pytest.raises(NotFoundError):
        idx.load_packs([99], [1], [500], [1000], [0], [3])
    with pytest.raises(NotFoundError):
        idx.set_connector_status(99, 1)
    with pytest.raises(NotFoundError):
        idx.reserve_pack(99)
    with pytest.raises(NotFoundError):
        idx.station_index(12345)
    with pytest.raises(InvalidInputError):
        idx.set_connector_status(0, 9)
    with pytest.raises(NotFoundError):
        idx.reserve_connector(-1)
    with pytest.raises(NotFoundError):
        idx.pack(2**40)
    with pytest.raises(InvalidInputError):
        idx.set_pack(0, -5, 1000, 3)
    with pytest.raises(InvalidInputError):
        idx.set_queue(0, 70_000)
    with pytest.raises(InvalidInputError):
        idx.move_unit(0, float("nan"), 0.0)
    with pytest.raises(InvalidInputError):
        idx.nearest_stations(91.0, 0.0, 3)
    with pytest.raises(InvalidInputError):
        ResourceIndex(cell_size_m=float("inf"))
    assert idx.counts() == (4, 3, 3, 2), "failed loads change nothing"


def test_bulk_load_is_fast_enough() -> None:
    rng = np.random.default_rng(1)
    n = 50_000
    idx = ResourceIndex()
    st = idx.load_stations(
        np.arange(n, dtype=np.uint64),
        np.ones(n, dtype=np.uint8),
        rng.integers(0, 5, n, dtype=np.uint32),
        rng.uniform(30, 32, n),
        rng.uniform(120, 122, n),
        np.full(n, 2, dtype=np.uint16),
        np.full(n, 200, dtype=np.uint32),
    )
    packs = idx.load_packs(
        np.repeat(st, 4),
        np.ones(4 * n, dtype=np.uint16),
        np.full(4 * n, 950, dtype=np.uint16),
        np.full(4 * n, 990, dtype=np.uint16),
        np.zeros(4 * n, dtype=np.uint32),
        np.full(4 * n, 3, dtype=np.uint8),
    )
    assert len(packs) == 4 * n
    assert idx.counts()[:2] == (n, 4 * n)
