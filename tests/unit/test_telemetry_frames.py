"""One history row per frame (`telemetry/frames.py`): a frame's readings read back exactly as remediation left
them, a clean frame carries no detail, and a stored frame merged with a reissue keeps what it held."""

from __future__ import annotations

import datetime as dt

from voltcloud.platform.enums import Metric, ReadingFlag
from voltcloud.telemetry import frames
from voltcloud.telemetry.frames import TrackRow

T = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)
SOC, SPEED, LAT, LNG = (int(m) for m in (Metric.SOC_PERMILLE, Metric.SPEED_M_PER_H, Metric.LATITUDE_MICRODEG,
                                          Metric.LONGITUDE_MICRODEG))  # fmt: skip
GAP, SPIKE = int(ReadingFlag.GAP), int(ReadingFlag.SPIKE)


def test_a_clean_frame_is_columns_only() -> None:
    readings = [TrackRow(T, SOC, 800, 800), TrackRow(T, SPEED, 60_000, 60_000)]
    row = frames.encode("v", T, T, readings)
    assert row[frames.COLUMNS.index("soc_permille")] == 800 and row[-4:] == (0, None, None, None)
    assert frames.decode(row) == readings
    assert frames.decode(row, [SPEED]) == readings[1:]


def test_flagged_readings_keep_raw_and_reason_beside_the_frame_mark() -> None:
    gap = "no data for 0:10:00"
    readings = [
        TrackRow(T, SOC, 200, 800, GAP | SPIKE, "hold_last", f"{gap}; SOC jumped -600 permille in 8 s"),
        TrackRow(T, SPEED, 60_000, 60_000, GAP, None, gap),
        TrackRow(T, LAT, 95_000_000, None, int(ReadingFlag.OUT_OF_RANGE), "discard", "outside"),
        TrackRow(T, LNG, 121_000_000, 121_000_000, GAP, None, gap),
        TrackRow(T, 99, 5, 5, GAP, None, gap),  # no column for it
    ]
    row = frames.encode("v", T, T, readings)
    assert row[-4:-1] == (GAP, None, gap)  # what most readings carry
    assert frames.decode(row) == sorted(readings, key=lambda r: r.metric)


def test_a_metric_twice_keeps_the_first() -> None:
    row = frames.encode("v", T, T, [TrackRow(T, SOC, 700, 700), TrackRow(T, SOC, 900, 900)])
    assert frames.decode(row) == [TrackRow(T, SOC, 700, 700)]


def test_merge_adds_what_the_stored_frame_lacks_and_keeps_the_rest() -> None:
    stored = frames.encode("v", T, T, [TrackRow(T, SOC, 800, 800)])
    later = T + dt.timedelta(hours=1)
    again = frames.encode("v", T, later, [TrackRow(T, SOC, 300, 300, SPIKE, "hold_last", "x")])
    assert frames.merge(stored, again) is None
    more = frames.encode("v", T, later, [TrackRow(T, SOC, 300, 300), TrackRow(T, SPEED, 1_000, 1_000)])
    merged = frames.merge(stored, more)
    assert merged is not None and merged[2] == T  # received_at of the stored frame
    assert frames.decode(merged) == [TrackRow(T, SOC, 800, 800), TrackRow(T, SPEED, 1_000, 1_000)]
