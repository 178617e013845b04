"""`clean_frame`, remediation's one-pass path for a frame no rule touches, against `remediate` (the
reference): whenever it answers, `remediate` leaves every reading of the frame untouched and moves the prior
the same way; and the frames a rule does touch are left to `remediate`."""

from __future__ import annotations

import copy
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from voltcloud.platform.enums import Metric
from voltcloud.telemetry.remediation import Prior, Raw, Thresholds, clean_frame, remediate

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
RULES = Thresholds()
SOC, LAT, LNG = int(Metric.SOC_PERMILLE), int(Metric.LATITUDE_MICRODEG), int(Metric.LONGITUDE_MICRODEG)
SPEED, ODO, VOLT = int(Metric.SPEED_M_PER_H), int(Metric.ODOMETER_M), int(Metric.VOLTAGE_MV)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


times = st.integers(min_value=0, max_value=900).map(lambda s: at(s))
maybe_time = st.none() | times
priors = st.builds(
    Prior,
    reading_at=maybe_time,
    soc=st.none() | st.integers(0, 1000),
    soc_at=maybe_time,
    lat=st.none() | st.integers(31_000_000, 33_000_000),
    lng=st.none() | st.integers(121_000_000, 123_000_000),
    position_at=maybe_time,
    odometer=st.none() | st.sampled_from([1_000_000, 1_000_500]),
    odometer_changed_at=maybe_time,
    speed=st.sampled_from([0, 40_000]),
    suspect_soc=st.none() | st.integers(0, 1000),
    suspect_lat=st.none() | st.integers(31_000_000, 33_000_000),
    suspect_lng=st.none() | st.integers(121_000_000, 123_000_000),
)
values = {
    SOC: st.integers(-10, 1010),
    SPEED: st.sampled_from([0, 40_000, 600_000]),
    ODO: st.sampled_from([1_000_000, 1_000_500, -1]),
    LAT: st.integers(29_000_000, 35_000_000) | st.just(95_000_000),
    LNG: st.integers(119_000_000, 125_000_000),
    VOLT: st.integers(300_000, 400_000),
}
frames = st.tuples(times, st.dictionaries(st.sampled_from(sorted(values)), st.integers(0, 0), min_size=1), st.data())


@given(prior=priors, frame=frames)
def test_clean_frame_agrees_with_remediate(
    prior: Prior, frame: tuple[dt.datetime, dict[int, int], st.DataObject]
) -> None:
    time, metrics, data = frame
    readings = [Raw(time, m, data.draw(values[m])) for m in sorted(metrics)]
    fast, reference = copy.deepcopy(prior), copy.deepcopy(prior)
    answer = clean_frame(fast, readings, RULES)
    cleaned = remediate(reference, readings, RULES)
    untouched = all(c.flags == 0 and c.repair is None and c.reason is None and c.value == c.raw_value for c in cleaned)
    if answer is None:
        assert fast == prior  # left for remediate, the prior as it was
        return
    assert untouched and answer == {r.metric: r.value for r in readings}
    assert fast == reference


def test_a_clean_frame_answers_and_a_spike_does_not() -> None:
    prior = Prior(reading_at=at(0), soc=800, soc_at=at(0))
    frame = [Raw(at(10), SOC, 790), Raw(at(10), SPEED, 40_000)]
    assert clean_frame(prior, frame, RULES) == {SOC: 790, SPEED: 40_000} and prior.reading_at == at(10)
    assert clean_frame(prior, [Raw(at(15), SOC, 200)], RULES) is None
    assert clean_frame(prior, [Raw(at(5), SOC, 790)], RULES) is None  # out of order
    assert clean_frame(prior, [Raw(at(20), SOC, 790), Raw(at(21), SOC, 780)], RULES) is None  # two frames
