"""Battery matching and the station charging schedule through the real extension."""

from __future__ import annotations

import numpy as np
import pytest

from voltcloud._core import InvalidInputError, match_packs, schedule_charging


def test_matching_respects_hard_rules_and_balances_stress() -> None:
    m = match_packs(
        pack_ids=np.array([501, 502, 503, 504], dtype=np.uint64),
        pack_type=[1, 1, 1, 2],
        soc=[950, 950, 1000, 1000],
        soh=[990, 820, 1000, 1000],
        cycles=[50, 2500, 0, 0],
        state=[3, 3, 5, 3],
        vehicle_pack_type=[1, 1, 3],
        vehicle_need_soc=[900, 900, 100],
        vehicle_trip_km=[15.0, 380.0, 10.0],
    )
    assert m.vehicle_pack.tolist() == [1, 0, -1]
    assert m.vehicle_pack_id.tolist() == [502, 501, 0]
    assert m.unmatched.tolist() == [2]
    assert m.total_cost >= 0


def test_matching_20_by_10_never_uses_forbidden_packs() -> None:
    rng = np.random.default_rng(7)
    state = rng.integers(1, 8, 20)
    soc = rng.integers(0, 1001, 20)
    pt = rng.integers(1, 3, 20)
    m = match_packs(
        np.arange(20, dtype=np.uint64),
        pt,
        soc,
        rng.integers(700, 1001, 20),
        rng.integers(0, 3000, 20),
        state,
        rng.integers(1, 3, 10),
        rng.integers(0, 1001, 10),
        rng.uniform(0, 500, 10),
    )
    used = [p for p in m.vehicle_pack.tolist() if p >= 0]
    assert len(used) == len(set(used))
    for p in used:
        assert state[p] == 3


def test_matching_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        match_packs([1, 2], [1], [1], [1], [1], [3], [1], [1], [1.0])
    with pytest.raises(InvalidInputError):
        match_packs([1], [1], [500], [900], [1], [3], [1], [100], [float("nan")])
    with pytest.raises(InvalidInputError):
        match_packs([1], [1], [500], [900], [1], [9], [1], [100], [1.0])


def test_schedule_meets_demand_under_the_cap() -> None:
    prices = np.full(96, 1_000_000, dtype=np.int64)
    prices[:28] = 300_000
    demand = np.zeros(96, dtype=np.uint32)
    demand[40] = 3
    demand[2] = 3
    n = 12
    plan = schedule_charging(
        soc=np.full(n, 400, dtype=np.uint16),
        capacity_wh=np.full(n, 75_000, dtype=np.uint32),
        target_soc=np.full(n, 950, dtype=np.uint16),
        ready_by_slot=np.full(n, -1, dtype=np.int32),
        power_cap_w=240_000.0,
        charger_power_w=60_000.0,
        prices_micros_per_kwh=prices,
        demand=demand,
    )
    assert plan.charging.shape == (n, 96)
    assert (plan.slot_power_w <= 240_000.0).all()
    assert (plan.charging.sum(axis=0) == plan.slot_packs).all()
    assert plan.unmet_demand[2] == 3, "nobody can be full by 00:30"
    assert plan.unmet_demand[40] == 0
    assert plan.total_unmet == 3
    assert plan.cost_micros > 0
    assert (plan.ready_slot >= 0).all()


def test_schedule_with_returned_packs() -> None:
    demand = np.zeros(96, dtype=np.uint32)
    demand[[10, 30, 50]] = 1
    args = dict(
        soc=[950, 950],
        capacity_wh=[70_000, 70_000],
        target_soc=[950, 950],
        ready_by_slot=[-1, -1],
        power_cap_w=60_000.0,
        charger_power_w=60_000.0,
        prices_micros_per_kwh=np.full(96, 500_000),
        demand=demand,
    )
    assert schedule_charging(**args).total_unmet == 1  # type: ignore[arg-type]
    plan = schedule_charging(**args, returned_soc_permille=200)  # type: ignore[arg-type]
    assert plan.total_unmet == 0
    assert plan.origin_slot.tolist() == [-1, -1, 10, 30, 50]
    assert plan.charging.shape == (5, 96)
    assert plan.charging[2, :11].sum() == 0, "a returned pack charges only after it is back"
    with pytest.raises(InvalidInputError):
        schedule_charging(**args, returned_soc_permille=1001)  # type: ignore[arg-type]


def test_schedule_bad_input() -> None:
    ok = dict(
        soc=[500],
        capacity_wh=[70_000],
        target_soc=[900],
        ready_by_slot=[-1],
        power_cap_w=1e5,
        charger_power_w=5e4,
        prices_micros_per_kwh=np.ones(96, dtype=np.int64),
        demand=np.zeros(96, dtype=np.uint32),
    )
    schedule_charging(**ok)  # type: ignore[arg-type]
    for bad in (
        {"prices_micros_per_kwh": np.ones(95, dtype=np.int64)},
        {"charger_power_w": float("nan")},
        {"soc": [500, 600]},
        {"ready_by_slot": [97]},
        {"target_soc": [1001]},
    ):
        with pytest.raises(InvalidInputError):
            schedule_charging(**{**ok, **bad})  # type: ignore[arg-type]
