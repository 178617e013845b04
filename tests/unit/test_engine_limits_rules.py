"""The checks of a row against the engine's limits (`engine_limits`), by column, without I/O."""

from __future__ import annotations

import pytest

from voltcloud import _core, engine_limits
from voltcloud.platform.enums import ConnectorStandard, ConnectorStatus, PackState, StationKind

LIMITS = _core.LIMITS  # read from the engine, not from the module under test
SWAP, CHARGING = int(StationKind.SWAP), int(StationKind.CHARGING)


def _columns(problems: list[engine_limits.Problem]) -> list[str]:
    return [column for column, _ in problems]


def _station(kind: int, lanes: int, swap_time_s: int) -> list[str]:
    problems = engine_limits.station_problems(
        kind=kind, lanes=lanes, swap_time_s=swap_time_s, lat=0.0, lng=0.0, power_cap_w=0, slot_count=0
    )
    return _columns(problems)


def test_a_swap_station_needs_lanes_and_a_swap_time_a_charging_station_neither() -> None:
    assert _station(SWAP, 0, 0) == ["lanes", "swap_time_s"]
    assert _station(SWAP, LIMITS["min_swap_lanes"], LIMITS["min_swap_time_s"]) == []
    assert _station(CHARGING, 0, 0) == []
    assert _station(CHARGING, LIMITS["max_lanes"] + 1, 0) == ["lanes"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_position_that_is_not_a_finite_number_is_a_problem(value: float) -> None:
    problems = engine_limits.position_problems(value, 0.0)
    assert _columns(problems) == ["lat"]
    assert "finite" in problems[0][1]


def test_the_position_bounds_are_inclusive() -> None:
    edge_lat, edge_lng = float(LIMITS["max_lat_deg"]), float(LIMITS["max_lng_deg"])
    assert engine_limits.position_problems(edge_lat, -edge_lng) == []
    assert _columns(engine_limits.position_problems(edge_lat + 1e-9, -edge_lng - 1e-9)) == ["lat", "lng"]


def test_a_connector_row_is_checked_column_by_column() -> None:
    good = {"standard": int(ConnectorStandard.CCS2), "max_power_w": LIMITS["min_connector_power_w"],
            "status": int(ConnectorStatus.OFFLINE)}  # fmt: skip
    assert engine_limits.connector_problems(**good) == []
    assert _columns(engine_limits.connector_problems(**good | {"standard": 0, "status": 0})) == ["standard", "status"]
    too_strong = good | {"max_power_w": LIMITS["max_connector_power_w"] + 1}
    assert _columns(engine_limits.connector_problems(**too_strong)) == ["max_power_w"]


def test_a_pack_row_is_checked_column_by_column() -> None:
    good = {"pack_type_id": 0, "soc": 0, "soh": LIMITS["max_permille"], "cycles": LIMITS["max_pack_cycles"],
            "state": int(PackState.IN_TRANSIT)}  # fmt: skip
    assert engine_limits.pack_problems(**good) == []
    bad = {"pack_type_id": LIMITS["max_pack_type_id"] + 1, "soc": -1, "soh": 0, "cycles": 0, "state": 0}
    assert _columns(engine_limits.pack_problems(**bad)) == ["pack_type_id", "soc_permille", "state"]
