"""The carbon reduction of a fleet report line, computed by hand from the documented factors."""

from __future__ import annotations

from voltcloud.fleet.carbon import Carbon, carbon_of


def test_twelve_kwh_at_150_wh_per_km() -> None:
    # 12 kWh / 150 Wh/km = 80 km; a gasoline car: 80 km x 10.69 L/100 km = 8.552 L x 2,348 g/L = 20,080.1 g;
    # the grid: 12 kWh x 570.3 g/kWh = 6,843.6 g; avoided 13,236.5 g (float: 13,236.496).
    assert carbon_of(12_000, 150) == Carbon(electric_distance_m=80_000, co2_avoided_g=13_236)


def test_nothing_taken_on_is_nothing_avoided() -> None:
    assert carbon_of(0, 150) == Carbon(0, 0)
    assert carbon_of(12_000, 0) == Carbon(0, 0)  # unknown consumption: no claim


def test_an_inefficient_vehicle_can_emit_more_than_it_saves() -> None:
    assert carbon_of(10_000, 2_000).co2_avoided_g < 0  # 5 km on 10 kWh
