"""Tariff pricing (pure) and rounding: expected values computed by hand in each test."""

from __future__ import annotations

import datetime as dt

import pytest

from voltcloud.platform.errors import InvalidArgument
from voltcloud.settlement.money import micros_per_minor, round_half_up
from voltcloud.settlement.tariff import (
    Dimension,
    PriceComponent,
    Restrictions,
    Tariff,
    TariffElement,
    Usage,
    elements_from_json,
    elements_to_json,
    price,
    validate,
)

CST = dt.timezone(dt.timedelta(hours=8))


def _energy(micros: int, label: str = "electricity", step: int = 1) -> tuple[PriceComponent, ...]:
    return (PriceComponent(Dimension.ENERGY, micros, step_size=step, label=label),)


# Beijing 2016 public charging: peak 10-15 h and 18-21 h ¥1.0044/kWh; flat 7-10, 15-18, 21-23 h ¥0.6950/kWh;
# valley 23-7 h ¥0.3946/kWh; plus a service fee of ¥0.8/kWh.
BEIJING = Tariff(
    currency="CNY",
    time_zone="Asia/Shanghai",
    elements=(
        TariffElement(_energy(1_004_400), Restrictions(start_time="10:00", end_time="15:00")),
        TariffElement(_energy(1_004_400), Restrictions(start_time="18:00", end_time="21:00")),
        TariffElement(_energy(695_000), Restrictions(start_time="07:00", end_time="10:00")),
        TariffElement(_energy(695_000), Restrictions(start_time="15:00", end_time="18:00")),
        TariffElement(_energy(695_000), Restrictions(start_time="21:00", end_time="23:00")),
        TariffElement(_energy(394_600), Restrictions(start_time="23:00", end_time="07:00")),
        TariffElement(_energy(800_000, "service_fee")),
    ),
)


def test_round_half_up_rounds_halves_away_from_zero_exactly() -> None:
    assert round_half_up(5, 10) == 1  # 0.5 -> 1
    assert round_half_up(4, 10) == 0
    assert round_half_up(15, 10) == 2
    assert round_half_up(-15, 10) == -2
    assert round_half_up(22_599_000_000, 10_000_000) == 2260  # 2259.9 fen
    assert round_half_up(10**30 + 5, 10) == 10**29 + 1  # no float anywhere
    assert micros_per_minor("CNY") == 10_000 and micros_per_minor("JPY") == 1_000_000


def test_time_of_use_session_crossing_peak_into_flat_is_priced_to_the_fen() -> None:
    # 14:15-15:45 local, 45 kWh at constant power: 45 min peak (22.5 kWh), 45 min flat (22.5 kWh).
    # peak:    22.5 kWh x ¥1.0044 = ¥22.599   -> 2259.9 fen  -> 2260
    # flat:    22.5 kWh x ¥0.6950 = ¥15.6375  -> 1563.75 fen -> 1564
    # service: 45 kWh   x ¥0.8000 = ¥36.00    -> 3600
    quote = price(BEIJING, Usage(dt.datetime(2026, 3, 10, 14, 15, tzinfo=CST), energy_wh=45_000, duration_s=5_400))
    assert [(line.label, line.quantity, line.amount_minor) for line in quote.lines] == [
        ("electricity", 22_500, 2260),
        ("electricity", 22_500, 1564),
        ("service_fee", 45_000, 3600),
    ]
    assert quote.total_minor == 2260 + 1564 + 3600 == 7424


def test_time_of_use_reads_local_time_from_utc_and_wraps_midnight() -> None:
    # 22:30-23:30 Asia/Shanghai given in UTC (14:30Z): 10 kWh flat then 10 kWh valley.
    # flat 10 x 0.6950 = 6.95 -> 695; valley 10 x 0.3946 = 3.946 -> 394.6 -> 395; service 20 x 0.8 = 1600.
    quote = price(BEIJING, Usage(dt.datetime(2026, 3, 10, 14, 30, tzinfo=dt.UTC), energy_wh=20_000, duration_s=3_600))
    assert [line.amount_minor for line in quote.lines] == [695, 395, 1600]
    assert "22:30-23:00" in quote.lines[0].description


def test_step_size_rounds_usage_up_when_the_element_changes() -> None:
    tariff = Tariff(
        "CNY",
        (
            TariffElement((PriceComponent(Dimension.TIME, 6_000_000, step_size=900),), Restrictions(end_time="12:00")),
            TariffElement((PriceComponent(Dimension.TIME, 3_000_000, step_size=900),)),
            TariffElement((PriceComponent(Dimension.PARKING_TIME, 12_000_000, step_size=300),)),
            TariffElement((PriceComponent(Dimension.FLAT, 2_500_000),)),
        ),
    )
    # 11:50-12:10 charging, then 7 min parking: 600 s -> 900 s at ¥6/h = ¥1.50; 600 s -> 900 s at ¥3/h = ¥0.75;
    # parking 420 s -> 600 s at ¥12/h = ¥2.00; flat ¥2.50.
    quote = price(tariff, Usage(dt.datetime(2026, 3, 10, 11, 50, tzinfo=CST), 5_000, 1_200, parking_s=420))
    by = {(line.component, line.unit_price_micros): (line.quantity, line.amount_minor) for line in quote.lines}
    assert by[(Dimension.TIME, 6_000_000)] == (900, 150)
    assert by[(Dimension.TIME, 3_000_000)] == (900, 75)
    assert by[(Dimension.PARKING_TIME, 12_000_000)] == (600, 200)
    assert by[(Dimension.FLAT, 2_500_000)] == (1, 250)
    assert quote.total_minor == 675


def test_energy_thresholds_days_vat_and_min_price() -> None:
    tariff = Tariff(
        "CNY",
        (
            TariffElement(
                (PriceComponent(Dimension.ENERGY, 2_000_000, vat_bp=1300),), Restrictions(max_energy_wh=10_000)
            ),
            TariffElement(
                (PriceComponent(Dimension.ENERGY, 1_000_000, vat_bp=1300),),
                Restrictions(days_of_week=frozenset({6, 7})),
            ),
            TariffElement((PriceComponent(Dimension.ENERGY, 1_500_000, vat_bp=1300),)),
        ),
        min_price_minor=10_000,
    )
    # Tuesday: first 10 kWh at ¥2 = 2000 (+VAT 260), next 20 kWh at ¥1.5 = 3000 (+VAT 390) -> 5650 < min 10000.
    quote = price(tariff, Usage(dt.datetime(2026, 3, 10, 9, 0, tzinfo=CST), 30_000, 3_600))
    assert [(line.amount_minor, line.vat_minor) for line in quote.lines] == [(2000, 260), (3000, 390)]
    assert (quote.subtotal_minor, quote.vat_minor, quote.adjustment_minor, quote.total_minor) == (
        5000,
        650,
        4350,
        10_000,
    )
    # Saturday: after 10 kWh the weekend element wins: 2000 + 20 x 1.0 = 2000 -> 4000 + VAT 520.
    weekend = price(tariff, Usage(dt.datetime(2026, 3, 14, 9, 0, tzinfo=CST), 30_000, 3_600))
    assert weekend.subtotal_minor == 4000 and weekend.vat_minor == 520


def test_a_dimension_without_a_matching_element_costs_nothing() -> None:
    tariff = Tariff("CNY", (TariffElement(_energy(1_000_000), Restrictions(start_time="00:00", end_time="06:00")),))
    assert price(tariff, Usage(dt.datetime(2026, 3, 10, 12, 0, tzinfo=CST), 10_000, 3_600)).total_minor == 0


def test_validation_names_the_field_and_json_round_trips() -> None:
    bad = Tariff("CNY", (TariffElement(_energy(-1), Restrictions(start_time="25:00")),), time_zone="Mars/Base")
    with pytest.raises(InvalidArgument) as err:
        validate(bad)
    fields = {v.field for v in err.value.violations}
    assert fields == {
        "rate_model.time_zone",
        "rate_model.elements[0].price_components[0].unit_price_micros",
        "rate_model.elements[0].restrictions.start_time",
    }
    assert elements_from_json(elements_to_json(BEIJING.elements)) == BEIJING.elements
