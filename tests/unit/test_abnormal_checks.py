"""The physics checks of abnormal-order detection, without a database (the others need the records)."""

from __future__ import annotations

import datetime as dt

from voltcloud.settlement.abnormal import AbnormalFlag, SessionFacts, _check_capacity, _check_power, _Findings

START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)


def facts(energy_wh: int, *, max_power_w: int = 0, capacity_wh: int = 0) -> SessionFacts:
    return SessionFacts(
        order_id="ord-1", station_id="st-1", started_at=START, ended_at=START + dt.timedelta(hours=1),
        energy_wh=energy_wh, amount_minor=0, max_power_w=max_power_w, capacity_wh=capacity_wh,
    )  # fmt: skip


def run(f: SessionFacts, tolerance_permille: int = 20) -> _Findings:
    found = _Findings(plausible_wh=f.energy_wh)
    _check_power(f, tolerance_permille, found)
    _check_capacity(f, tolerance_permille, found)
    return found


def test_energy_within_power_and_capacity_with_tolerance_is_normal() -> None:
    found = run(facts(10_200, max_power_w=10_000, capacity_wh=10_000))
    assert found.flags == [] and found.plausible_wh == 10_200


def test_energy_beyond_power_times_duration_is_capped_to_what_the_power_allows() -> None:
    found = run(facts(12_000, max_power_w=10_000))
    assert found.flags == [AbnormalFlag.ENERGY_EXCEEDS_POWER] and found.plausible_wh == 10_000
    assert "(10200 Wh)" in found.details[0]


def test_both_limits_cap_to_the_lower_and_report_in_table_order() -> None:
    found = run(facts(50_000, max_power_w=40_000, capacity_wh=30_000), tolerance_permille=0)
    assert found.flags == [AbnormalFlag.ENERGY_EXCEEDS_POWER, AbnormalFlag.ENERGY_EXCEEDS_CAPACITY]
    assert found.plausible_wh == 30_000


def test_unknown_limits_are_not_checked() -> None:
    assert run(facts(10**9)).flags == []
