"""Remediation and alert rules on crafted series (no I/O): what is flagged, what is repaired and how, and that
the raw value always survives."""

from __future__ import annotations

import datetime as dt

from voltcloud.platform.enums import Metric, ReadingFlag, VehicleAlertKind
from voltcloud.telemetry import alerts
from voltcloud.telemetry.remediation import (
    DISCARD,
    HOLD_LAST,
    INTERPOLATE,
    Prior,
    Raw,
    Thresholds,
    distance_m,
    find_stuck,
    remediate,
)

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
RULES = Thresholds()
SOC, LAT, LNG = int(Metric.SOC_PERMILLE), int(Metric.LATITUDE_MICRODEG), int(Metric.LONGITUDE_MICRODEG)
SPEED, ODO = int(Metric.SPEED_M_PER_H), int(Metric.ODOMETER_M)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def soc_series(*points: tuple[float, int]) -> list[Raw]:
    return [Raw(at(s), SOC, v) for s, v in points]


def test_clean_series_passes_untouched() -> None:
    prior = Prior()
    out = remediate(prior, soc_series((0, 800), (10, 799), (20, 798)), RULES)
    assert [(c.value, c.flags, c.repair) for c in out] == [(800, 0, None), (799, 0, None), (798, 0, None)]
    assert prior.soc == 798 and prior.reading_at == at(20)


def test_isolated_soc_spike_is_interpolated_between_neighbours() -> None:
    out = remediate(Prior(), soc_series((0, 800), (5, 200), (10, 790)), RULES)
    spike = out[1]
    assert spike.raw_value == 200 and spike.flags == ReadingFlag.SPIKE and spike.repair == INTERPOLATE
    assert spike.value == 795  # halfway between 800 and 790
    assert "SOC jumped -600 permille in 5 s" in (spike.reason or "")
    assert out[2].value == 790 and out[2].flags == 0


def test_spike_at_the_end_of_a_batch_holds_the_last_value() -> None:
    prior = Prior()
    out = remediate(prior, soc_series((0, 800), (5, 1000 - 1)), Thresholds(spike_soc_permille=150))
    assert (out[1].value, out[1].repair, out[1].raw_value) == (800, HOLD_LAST, 999)
    assert prior.soc == 800 and prior.suspect_soc == 999


def test_a_confirmed_step_is_accepted_not_repaired() -> None:
    """A swap (or recalibration) really moves the SOC: the second reading at the new level confirms it."""
    prior = Prior()
    remediate(prior, soc_series((0, 150)), RULES)
    first = remediate(prior, soc_series((5, 950)), RULES)
    second = remediate(prior, soc_series((9, 949)), RULES)
    assert first[0].repair == HOLD_LAST
    assert second[0].flags == 0 and second[0].value == 949 and prior.soc == 949


def test_slow_soc_change_is_no_spike() -> None:
    out = remediate(Prior(), soc_series((0, 800), (60, 300)), RULES)  # 50 points in a minute: outside 10 s
    assert out[1].flags == 0


def test_position_jump_is_discarded_as_a_pair() -> None:
    prior = Prior()
    fix = [Raw(at(0), LAT, 31_230_000), Raw(at(0), LNG, 121_470_000)]
    jump = [Raw(at(30), LAT, 39_900_000), Raw(at(30), LNG, 116_400_000)]  # Beijing, 30 s after Shanghai
    out = remediate(prior, fix + jump, RULES)
    discarded = [c for c in out if c.time == at(30)]
    assert {c.repair for c in discarded} == {DISCARD} and all(c.value is None for c in discarded)
    assert {c.raw_value for c in discarded} == {39_900_000, 116_400_000}
    assert (prior.lat, prior.lng) == (31_230_000, 121_470_000)
    assert distance_m(31_230_000, 121_470_000, 39_900_000, 116_400_000) > 1_000_000


def test_out_of_order_is_flagged_and_kept() -> None:
    prior = Prior(reading_at=at(100), soc=500, soc_at=at(100))
    out = remediate(prior, soc_series((40, 900)), RULES)
    assert out[0].flags == ReadingFlag.OUT_OF_ORDER and out[0].value == 900 and not out[0].accepted
    assert prior.reading_at == at(100) and prior.soc == 500


def test_out_of_range_is_discarded() -> None:
    out = remediate(Prior(), soc_series((0, 1500)), RULES)
    assert out[0].flags == ReadingFlag.OUT_OF_RANGE and out[0].value is None and out[0].raw_value == 1500


def test_gap_is_flagged_not_repaired() -> None:
    prior = Prior(reading_at=at(0), soc=700, soc_at=at(0))
    out = remediate(prior, soc_series((3600, 650)), RULES)
    assert out[0].flags == ReadingFlag.GAP and out[0].value == 650 and out[0].repair is None


def test_stuck_odometer_while_moving() -> None:
    prior = Prior()
    series = [Raw(at(0), SPEED, 60_000), Raw(at(0), ODO, 1000)]
    series += [Raw(at(60 * i), ODO, 1000) for i in range(1, 8)]
    out = remediate(prior, series, RULES)
    stuck = [c for c in out if c.flags & ReadingFlag.STUCK]
    assert stuck and all(c.time > at(300) for c in stuck) and all(c.value == 1000 for c in stuck)
    values = [(at(60 * i), 1000) for i in range(8)]
    assert find_stuck(values, [True] * 8, dt.timedelta(minutes=5)) == [6, 7]
    assert find_stuck(values, [True, True, True, False, True, True, True, True], dt.timedelta(minutes=5)) == []


LIMITS = alerts.Limits(120_000, dt.timedelta(hours=4), dt.timedelta(minutes=20), 150)


def test_speeding_opens_and_clears() -> None:
    fast = alerts.Driving([(at(0), 100_000), (at(10), 130_000)], at(10), None, None, False)
    actions = alerts.decide(fast, LIMITS)
    assert [type(a).__name__ for a in actions if a.kind is VehicleAlertKind.SPEEDING] == ["Open"]
    slow = alerts.Driving([(at(20), 90_000)], at(20), None, None, False)
    assert any(isinstance(a, alerts.Clear) and a.kind is VehicleAlertKind.SPEEDING for a in alerts.decide(slow, LIMITS))


def test_fatigue_needs_a_real_rest() -> None:
    since, stopped = None, None
    for minute in range(0, 4 * 60 + 10):
        speed = 0 if minute % 60 == 59 else 50_000  # a one-minute stop every hour is no rest
        since, stopped = alerts.track_driving(since, stopped, at(60 * minute), speed, LIMITS.fatigue_rest)
    assert since == T0
    actions = alerts.decide(alerts.Driving([], at(60 * (4 * 60 + 9)), since, None, False), LIMITS)
    assert [a.kind for a in actions if isinstance(a, alerts.Open)] == [VehicleAlertKind.FATIGUE]
    for minute in range(4 * 60 + 10, 4 * 60 + 31):  # a 21-minute stop
        since, stopped = alerts.track_driving(since, stopped, at(60 * minute), 0, LIMITS.fatigue_rest)
    assert since is None


def test_low_battery() -> None:
    low = alerts.decide(alerts.Driving([], at(0), None, 120, True), LIMITS)
    assert [a.kind for a in low if isinstance(a, alerts.Open)] == [VehicleAlertKind.LOW_BATTERY]
    ok = alerts.decide(alerts.Driving([], at(0), None, 600, True), LIMITS)
    assert [a.kind for a in ok if isinstance(a, alerts.Clear)] == [
        VehicleAlertKind.FATIGUE,
        VehicleAlertKind.LOW_BATTERY,
    ]
