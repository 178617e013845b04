"""Data remediation, without I/O: flags gaps, spikes, stuck sensors, out-of-range values and out-of-order
readings, and repairs a reading only where that is safe. Every repair names its reason; the raw value is kept
beside it by the store (never overwritten).

The rules (thresholds are `Thresholds`, built from Settings):
- out of order: a reading older than the newest already applied (reissued 0x03 data, a late frame). Kept in
  the history, flagged, never repaired (no neighbours are known for it), and it does not move the live state.
- out of range: SOC outside 0..1000, latitude/longitude outside the globe, negative speed or odometer:
  discarded (no value), since no replacement is better than a wrong number.
- SOC spike: |SOC - last accepted SOC| > spike_soc within spike_soc_window. When the next SOC reading of the
  batch comes within interpolate_max and agrees with the last accepted one, the spike is interpolated between
  them; otherwise the last value is held (hold_last). A second reading at the new level confirms a real step
  (a swap, a recalibration): it is accepted.
- position spike: a jump > spike_position_m within spike_position_window: the position is discarded (a wrong
  position on the map is worse than a missing one); a second fix at the new place confirms it.
- gap: the first reading after more than gap_s without any: flagged, nothing repaired (interpolating across a
  gap would invent data).
- stuck: the odometer unchanged for stuck_s while the vehicle reports speed: flagged, not repaired.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from voltcloud.platform.enums import Metric, ReadingFlag

SOC, LAT, LNG = int(Metric.SOC_PERMILLE), int(Metric.LATITUDE_MICRODEG), int(Metric.LONGITUDE_MICRODEG)
SPEED, ODOMETER = int(Metric.SPEED_M_PER_H), int(Metric.ODOMETER_M)

INTERPOLATE, HOLD_LAST, DISCARD = "interpolate", "hold_last", "discard"
_OUT_OF_ORDER = int(ReadingFlag.OUT_OF_ORDER)  # plain ints on the hot path (IntFlag arithmetic is slow)

# Physical ranges of the metrics the live state uses; a value outside is discarded.
_RANGES: dict[int, tuple[int, int]] = {
    SOC: (0, 1000),
    LAT: (-90_000_000, 90_000_000),
    LNG: (-180_000_000, 180_000_000),
    SPEED: (0, 500_000),
    ODOMETER: (0, 10**10),
}


@dataclass(frozen=True)
class Thresholds:
    spike_soc_permille: int = 400
    spike_soc_window: dt.timedelta = dt.timedelta(seconds=10)
    spike_position_m: float = 200_000.0
    spike_position_window: dt.timedelta = dt.timedelta(seconds=60)
    gap: dt.timedelta = dt.timedelta(minutes=5)
    stuck: dt.timedelta = dt.timedelta(minutes=5)
    interpolate_max: dt.timedelta = dt.timedelta(seconds=30)


class Raw(NamedTuple):
    """One reading as received (a tuple: a batch makes hundreds of thousands)."""

    time: dt.datetime
    metric: int
    value: int


@dataclass(slots=True)
class Cleaned:
    time: dt.datetime
    metric: int
    raw_value: int
    value: int | None
    flags: int = 0
    repair: str | None = None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """May move the live state: in order and not discarded."""
        return self.value is not None and not self.flags & _OUT_OF_ORDER


@dataclass
class Prior:
    """What the live state knew before the batch (all None for a vehicle never seen)."""

    reading_at: dt.datetime | None = None
    soc: int | None = None
    soc_at: dt.datetime | None = None
    lat: int | None = None
    lng: int | None = None
    position_at: dt.datetime | None = None
    odometer: int | None = None
    odometer_changed_at: dt.datetime | None = None
    speed: int = 0
    suspect_soc: int | None = None
    suspect_lat: int | None = None
    suspect_lng: int | None = None
    notes: list[str] = field(default_factory=list)


def distance_m(lat1: int, lng1: int, lat2: int, lng2: int) -> float:
    """Great-circle distance between two positions in microdegrees (haversine, mean Earth radius)."""
    p1, p2 = math.radians(lat1 / 1e6), math.radians(lat2 / 1e6)
    dp, dl = p2 - p1, math.radians((lng2 - lng1) / 1e6)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000.0 * math.asin(min(1.0, math.sqrt(a)))


def remediate(prior: Prior, readings: Sequence[Raw], rules: Thresholds) -> list[Cleaned]:
    """Cleans one vehicle's readings of one batch (any order); returns them sorted by (time, metric) and
    updates `prior` to what was accepted (the caller writes it into the live state)."""
    newest = prior.reading_at
    out: list[Cleaned] = []
    ordered = sorted(readings)  # Raw is a tuple (time, metric, value): the order needed
    gap_flagged: dt.datetime | None = None
    for i, raw in enumerate(ordered):
        cleaned = Cleaned(raw.time, raw.metric, raw.value, raw.value)
        bounds = _RANGES.get(raw.metric)
        if newest is not None and raw.time < newest:
            cleaned = _flag(cleaned, ReadingFlag.OUT_OF_ORDER, None, f"older than {newest.isoformat()}")
        elif bounds is not None and not bounds[0] <= raw.value <= bounds[1]:
            cleaned = replace(
                cleaned, value=None, flags=int(ReadingFlag.OUT_OF_RANGE), repair=DISCARD,
                reason=f"outside {bounds[0]}..{bounds[1]}",
            )  # fmt: skip
        else:
            if newest is not None and (gap_flagged == raw.time or raw.time - newest > rules.gap):
                gap_flagged = raw.time
                cleaned = _flag(cleaned, ReadingFlag.GAP, None, f"no data for {(raw.time - newest)}")
            if raw.metric == SOC:
                cleaned = _soc(prior, cleaned, ordered, i, rules)
            elif raw.metric == ODOMETER:
                cleaned = _odometer(prior, cleaned, rules)
            elif raw.metric == SPEED:
                prior.speed = raw.value
        out.append(cleaned)
        if not cleaned.flags & _OUT_OF_ORDER and (newest is None or raw.time > newest):
            newest = raw.time
    _positions(prior, out, rules)
    prior.reading_at = newest
    return out


def clean_frame(prior: Prior, readings: Sequence[Raw], rules: Thresholds) -> dict[int, int] | None:
    """`remediate`'s answer for its common case in one pass over the frame's columns: readings that are one
    frame (one time, each metric once) which no rule touches. Returns the frame's values by metric with
    `prior` moved on exactly as `remediate` would move it, or None (prior untouched) when any rule could
    apply: the caller then runs `remediate`, whose answer is the reference."""
    if not readings:
        return None
    times, metrics, raws = zip(*readings, strict=True)
    time = times[0]
    values = dict(zip(metrics, raws, strict=True))
    if len(values) != len(readings) or times.count(time) != len(times):
        return None
    newest = prior.reading_at
    if newest is not None and (time < newest or time - newest > rules.gap):
        return None  # out of order, or the first frame after a gap
    for metric, (low, high) in _RANGES.items():
        value = values.get(metric)
        if value is not None and not low <= value <= high:
            return None
    soc, odometer = values.get(SOC), values.get(ODOMETER)
    if soc is not None and not _soc_plausible(prior, time, soc, rules):
        return None
    speed = values.get(SPEED, prior.speed)  # remediate sees the speed before the odometer (metric order)
    since = prior.odometer_changed_at
    if odometer is not None and odometer == prior.odometer and since is not None and _stuck(since, speed, time, rules):
        return None
    lat, lng = values.get(LAT), values.get(LNG)
    if lat is not None and lng is not None and _position_spike(prior, time, lat, lng, rules) is not None:
        return None
    if soc is not None:
        prior.soc, prior.soc_at, prior.suspect_soc = soc, time, None
    prior.speed = speed
    if odometer is not None and odometer != prior.odometer:
        prior.odometer, prior.odometer_changed_at = odometer, time
    if lat is not None and lng is not None:
        prior.lat, prior.lng, prior.position_at = lat, lng, time
        prior.suspect_lat = prior.suspect_lng = None
    prior.reading_at = time if newest is None or time > newest else newest
    return values


def _flag(c: Cleaned, flag: ReadingFlag, repair: str | None, reason: str) -> Cleaned:
    reasons = f"{c.reason}; {reason}" if c.reason else reason
    return replace(c, flags=c.flags | int(flag), repair=repair or c.repair, reason=reasons[:200])


def _soc(prior: Prior, c: Cleaned, ordered: Sequence[Raw], i: int, rules: Thresholds) -> Cleaned:
    last, at = prior.soc, prior.soc_at
    if last is None or at is None or _soc_plausible(prior, c.time, c.raw_value, rules):
        return _accept_soc(prior, c)
    limit = rules.spike_soc_permille
    prior.suspect_soc = c.raw_value
    reason = f"SOC jumped {c.raw_value - last:+d} permille in {(c.time - at).total_seconds():.0f} s"
    following = next((r for r in ordered[i + 1 :] if r.metric == SOC), None)
    if following is not None and following.time - at <= rules.interpolate_max and abs(following.value - last) <= limit:
        share = (c.time - at) / (following.time - at)
        value = round(last + (following.value - last) * share)
        return _flag(replace(c, value=value), ReadingFlag.SPIKE, INTERPOLATE, reason)
    return _flag(replace(c, value=last), ReadingFlag.SPIKE, HOLD_LAST, reason)


def _soc_plausible(prior: Prior, time: dt.datetime, soc: int, rules: Thresholds) -> bool:
    """No spike: no recent SOC to compare with, a change within the limit, or the second reading at a new
    level (a swap, a recalibration: a real step)."""
    last, at, limit = prior.soc, prior.soc_at, rules.spike_soc_permille
    if last is None or at is None or time - at > rules.spike_soc_window or abs(soc - last) <= limit:
        return True
    return prior.suspect_soc is not None and abs(soc - prior.suspect_soc) <= limit


def _accept_soc(prior: Prior, c: Cleaned) -> Cleaned:
    prior.soc, prior.soc_at, prior.suspect_soc = c.raw_value, c.time, None
    return c


def _odometer(prior: Prior, c: Cleaned, rules: Thresholds) -> Cleaned:
    if prior.odometer is None or c.raw_value != prior.odometer:
        prior.odometer, prior.odometer_changed_at = c.raw_value, c.time
        return c
    since = prior.odometer_changed_at
    if since is not None and _stuck(since, prior.speed, c.time, rules):
        return _flag(c, ReadingFlag.STUCK, None, f"odometer unchanged for {c.time - since} while moving")
    return c


def _stuck(since: dt.datetime, speed: int, time: dt.datetime, rules: Thresholds) -> bool:
    """An odometer reading equal to the last one: stuck when it has not changed for `stuck` while moving."""
    return speed > 0 and time - since > rules.stuck


def _positions(prior: Prior, out: list[Cleaned], rules: Thresholds) -> None:
    """Latitude and longitude are one fix: checked as a pair (same time), discarded together."""
    pairs: dict[dt.datetime, dict[int, int]] = {}
    for index, c in enumerate(out):
        if c.metric in (LAT, LNG) and c.accepted:
            pairs.setdefault(c.time, {})[c.metric] = index
    for time, where in sorted(pairs.items()):
        if len(where) != 2:
            continue
        lat, lng = out[where[LAT]].raw_value, out[where[LNG]].raw_value
        verdict = _position_spike(prior, time, lat, lng, rules)
        if verdict is None:
            prior.lat, prior.lng, prior.position_at = lat, lng, time
            prior.suspect_lat = prior.suspect_lng = None
            continue
        prior.suspect_lat, prior.suspect_lng = lat, lng
        for index in where.values():
            out[index] = _flag(replace(out[index], value=None), ReadingFlag.SPIKE, DISCARD, verdict)


def _position_spike(prior: Prior, time: dt.datetime, lat: int, lng: int, rules: Thresholds) -> str | None:
    if prior.lat is None or prior.lng is None or prior.position_at is None:
        return None
    if time - prior.position_at > rules.spike_position_window:
        return None
    jump = distance_m(prior.lat, prior.lng, lat, lng)
    if jump <= rules.spike_position_m:
        return None
    s_lat, s_lng = prior.suspect_lat, prior.suspect_lng
    if s_lat is not None and s_lng is not None and distance_m(s_lat, s_lng, lat, lng) <= rules.spike_position_m:
        return None  # a second fix at the new place: the vehicle really is there (e.g. carried on a train)
    seconds = (time - prior.position_at).total_seconds()
    return f"position jumped {jump / 1000:.0f} km in {seconds:.0f} s"


def find_stuck(
    values: Sequence[tuple[dt.datetime, int]], moving: Sequence[bool], longer_than: dt.timedelta
) -> list[int]:
    """Indexes of readings whose value has not changed for longer than `longer_than` while `moving` was true
    throughout (a series view of the odometer rule, for reports and tests)."""
    stuck: list[int] = []
    run_start = 0
    for i in range(1, len(values)):
        if values[i][1] != values[run_start][1] or not moving[i]:
            run_start = i
            continue
        if values[i][0] - values[run_start][0] > longer_than and all(moving[run_start : i + 1]):
            stuck.append(i)
    return stuck
