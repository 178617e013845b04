"""TravelModel through the real extension."""

from __future__ import annotations

import numpy as np
import pytest

from voltcloud._core import InvalidInputError, TravelModel, distance_m

NOON = 1_795_240_800  # 2026-11-21 06:00 UTC = 14:00 Shanghai
RUSH = NOON - 6 * 3600  # 08:00 Shanghai


def test_geometric_model_profiles_and_congestion() -> None:
    tm = TravelModel()
    d, t_noon, via = tm.travel(31.20, 121.40, 31.25, 121.50, NOON)
    assert not via
    assert d == pytest.approx(1.3 * distance_m(31.20, 121.40, 31.25, 121.50))
    _, t_rush, _ = tm.travel(31.20, 121.40, 31.25, 121.50, RUSH)
    assert t_rush > t_noon
    cell = tm.cell_of(31.20, 121.40)
    tm.set_congestion(np.array([cell], dtype=np.uint64), np.array([3.0]), NOON + 600)
    assert tm.congestion_at(31.20, 121.40, NOON) == 3.0
    assert tm.travel(31.20, 121.40, 31.25, 121.50, NOON)[1] > t_noon
    assert tm.congestion_at(31.20, 121.40, NOON + 600) == 1.0, "expired entries are ignored"
    assert tm.purge_expired(NOON + 601) == 1
    tm.set_speed_profile(2, np.full(24, 10.0))
    assert tm.speed_profile(2).shape == (96,)
    dists, times = tm.travel_many([31.2, 31.3], [121.4, 121.5], [31.25, 31.3], [121.5, 121.5], NOON)
    assert dists.shape == (2,) and times[1] == 0.0


def test_graph_shortest_paths() -> None:
    tm = TravelModel(snap_radius_m=500.0)
    lat = np.array([31.0, 31.0, 31.01, 31.01])
    lng = np.array([121.0, 121.01, 121.0, 121.01])
    frm = np.array([0, 1, 0, 2, 1, 3, 2, 3], dtype=np.uint32)
    to = np.array([1, 0, 2, 0, 3, 1, 3, 2], dtype=np.uint32)
    length = np.array([distance_m(lat[a], lng[a], lat[b], lng[b]) * 1.05 for a, b in zip(frm, to, strict=True)])
    assert tm.load_graph(lat, lng, frm, to, length, np.full(8, 1, dtype=np.uint8)) == 8
    assert tm.has_graph
    d, t, via = tm.travel(31.0, 121.0, 31.01, 121.01, NOON)
    assert via and t > 0
    assert d == pytest.approx(min(length[0] + length[4], length[2] + length[6]), rel=1e-6)
    _, _, via = tm.travel(40.0, 116.0, 31.01, 121.01, NOON)
    assert not via, "far from the graph: geometric fallback"
    tm.clear_graph()
    assert not tm.has_graph


def test_bad_input() -> None:
    tm = TravelModel()
    with pytest.raises(InvalidInputError):
        TravelModel(detour_factor=0.5)
    with pytest.raises(InvalidInputError):
        tm.set_speed_profile(7, np.full(24, 30.0))
    with pytest.raises(InvalidInputError):
        tm.set_speed_profile(1, np.full(23, 30.0))
    with pytest.raises(InvalidInputError):
        tm.set_speed_profile(1, np.full(24, np.nan))
    with pytest.raises(InvalidInputError):
        tm.set_congestion([1, 2], [2.0], NOON)
    with pytest.raises(InvalidInputError):
        tm.set_congestion([1], [np.nan], NOON)
    with pytest.raises(InvalidInputError):
        tm.travel(np.nan, 0.0, 0.0, 0.0, NOON)
    with pytest.raises(InvalidInputError):
        tm.load_graph([31.0, 31.1], [121.0, 121.0], [0], [5], [20_000.0], [1])
    with pytest.raises(InvalidInputError):
        tm.load_graph([31.0, 31.1], [121.0, 121.0], [0], [1], [10.0], [1])  # shorter than the straight line
    with pytest.raises(InvalidInputError):
        tm.travel_many([31.0], [121.0, 121.1], [31.0], [121.0], NOON)
