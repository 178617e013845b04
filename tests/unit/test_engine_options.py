"""Power-up options through the real extension."""

from __future__ import annotations

import numpy as np
import pytest

from voltcloud._core import InvalidInputError, Options, ResourceIndex, TravelModel, distance_m

NOW = 1_795_240_800
ALL_MODES = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)
CAR = (31.231, 121.471)


def world() -> Options:
    idx = ResourceIndex()
    idx.load_stations(
        [10, 11, 20, 21, 30],
        [1, 1, 2, 2, 1],
        [1, 2, 1, 2, 1],
        [31.23, 31.30, 31.24, 31.10, 36.0],
        [121.47, 121.50, 121.48, 121.40, 120.0],
        [2, 1, 0, 0, 1],
        [180, 240, 0, 0, 120],
    )
    idx.load_packs(
        [0, 0, 1, 4], [7, 7, 7, 7], [950, 990, 900, 1000], [980, 900, 950, 1000], [100, 900, 50, 0], [3, 3, 5, 3]
    )
    idx.load_connectors([2, 2, 3], [3, 1, 3], [120_000, 60_000, 250_000], [1, 1, 2])
    idx.load_mobile(
        [100, 101],
        [1, 2],
        [1, 1],
        [31.22, 31.231],
        [121.46, 121.471],
        [1, 1],
        energy_wh=[60_000, 0],
        power_w=[40_000, 0],
        connector_mask=[1 << 3, 0],
    )
    return Options(idx, TravelModel())


def query(opts: Options, **kw: object) -> list:  # type: ignore[type-arg]
    args: dict[str, object] = dict(
        lat=CAR[0],
        lng=CAR[1],
        soc_permille=300,
        usable_capacity_wh=75_000.0,
        consumption_wh_per_km=180.0,
        pack_type=7,
        connector_mask=(1 << 3) | (1 << 1),
        target_soc_permille=800,
        modes_mask=ALL_MODES,
        deadline=NOW + 6 * 3600,
        now=NOW,
    )
    args.update(kw)
    return opts.query(**args)  # type: ignore[arg-type]


def test_every_mode_ranked_by_finish_time() -> None:
    opts = world()
    out = query(opts)
    assert {o.mode for o in out} == {1, 2, 3, 4}
    finishes = [o.finish_at for o in out]
    assert finishes == sorted(finishes)
    swap = next(o for o in out if o.mode == 1)
    assert swap.pack == 1 and swap.station == 0 and swap.connector == -1
    assert swap.finish_at == pytest.approx(NOW + swap.eta_s + swap.wait_s + swap.service_s)
    assert swap.resource_version == opts.index.pack(1)["version"]
    assert all(o.station != 4 for o in out), "a station 600 km away is never offered"
    valet = next(o for o in out if o.mode == 3)
    assert valet.unit == 1 and valet.service_mode in (1, 2)
    van = next(o for o in out if o.mode == 4)
    assert van.unit == 0 and van.energy_wh == pytest.approx(500 * 75.0)


def test_options_follow_live_updates() -> None:
    opts = world()
    opts.index.reserve_pack(1)
    swap = next(o for o in query(opts, modes_mask=1 << 1))
    assert swap.pack == 0
    opts.index.set_connector_status(0, 2)
    opts.index.set_connector_status(1, 2)
    assert query(opts, modes_mask=1 << 2) == []
    assert query(opts, modes_mask=1 << 1, operators=[2]) == []


def test_reachability_with_a_low_battery() -> None:
    opts = world()
    out = query(opts, soc_permille=60, safety_margin_permille=50)
    for o in out:
        if o.station >= 0 and o.mode != 3:
            assert o.distance_m / 1000 * 180.0 <= (60 - 50) * 75.0
    st = opts.index.station(4)
    assert distance_m(CAR[0], CAR[1], float(st["lat"]), float(st["lng"])) > 500_000


@pytest.mark.parametrize(
    "bad",
    [
        {"lat": float("nan")},
        {"soc_permille": 1001},
        {"usable_capacity_wh": float("inf")},
        {"consumption_wh_per_km": 0.0},
        {"modes_mask": 1},
        {"deadline": NOW - 1},
        {"top_n": 0},
        {"target_soc_permille": 0},
        {"soc_permille": -1},
        {"pack_type": 70_000},
        {"operators": [-3]},
    ],
)
def test_bad_requests(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        query(world(), **bad)


def test_query_scales_on_a_dense_city() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    idx = ResourceIndex()
    st = idx.load_stations(
        np.arange(n, dtype=np.uint64),
        rng.integers(1, 3, n).astype(np.uint8),
        np.zeros(n, dtype=np.uint32),
        rng.normal(31.2, 0.2, n),
        rng.normal(121.4, 0.2, n),
        np.full(n, 2, dtype=np.uint16),
        np.full(n, 200, dtype=np.uint32),
    )
    kinds = np.array([idx.station(int(i))["kind"] for i in st[:50]])
    assert set(kinds.tolist()) <= {1, 2}
    opts = Options(idx, TravelModel())
    out = query(opts, modes_mask=(1 << 1) | (1 << 2))
    assert out == [], "stations without packs or connectors offer nothing"


def test_queries_run_in_threads_while_the_index_is_updated() -> None:
    from concurrent.futures import ThreadPoolExecutor

    opts = world()
    idx = opts.index

    def ask(_: int) -> int:
        return len(query(opts))

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(ask, i) for i in range(200)]
        for k in range(2000):
            idx.set_queue(0, k % 5)
            idx.move_unit(0, 31.22 + (k % 7) * 1e-4, 121.46)
        counts = [f.result() for f in futures]
    assert min(counts) >= 4
