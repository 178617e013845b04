"""Tariff pricing in the OCPI 2.2.1 shape, pure (no I/O).

A tariff is a list of elements; each element has price components (ENERGY per kWh, FLAT per session, TIME per
hour charging, PARKING_TIME per hour not charging) and optional restrictions. Per dimension the first element
in list order whose restrictions hold applies; a dimension with no matching element costs nothing. A
component's dimension is its (type, label) pair, so "electricity" and "service_fee" ENERGY components are
billed side by side (China's electricity fee + service fee).

The session timeline is cut wherever a restriction can change (local period edges, midnights, energy and
duration thresholds); time-of-day, date and weekday restrictions are read in the tariff's local time zone
(the station's), while all instants are UTC. Consecutive time under the same element is one bill line; a
line's quantity is rounded up to the component's step size when the active element changes or the session
ends, then priced with one rounding: `round_half_up(quantity * unit_price_micros / unit, micros per minor)`.
VAT per line is `round_half_up(amount * vat_bp / 10_000)`. min/max price clamp the total including VAT.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voltcloud.platform.errors import FieldViolation, InvalidArgument
from voltcloud.settlement.money import check_currency, micros_per_minor, round_half_up


class Dimension(enum.IntEnum):
    """Same numbers as voltcloud.v1.PriceComponentType."""

    ENERGY = 1
    FLAT = 2
    TIME = 3
    PARKING_TIME = 4


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
_UNIT_DENOMINATOR = {Dimension.ENERGY: 1000, Dimension.TIME: 3600, Dimension.PARKING_TIME: 3600, Dimension.FLAT: 1}


@dataclass(frozen=True)
class PriceComponent:
    type: Dimension
    unit_price_micros: int
    vat_bp: int = 0
    step_size: int = 1
    label: str = ""

    @property
    def key(self) -> tuple[Dimension, str]:
        return self.type, self.label or self.type.name.lower()


@dataclass(frozen=True)
class Restrictions:
    start_time: str = ""
    end_time: str = ""
    start_date: str = ""
    end_date: str = ""
    min_energy_wh: int = 0
    max_energy_wh: int = 0
    min_power_w: int = 0
    max_power_w: int = 0
    min_duration_s: int | None = None
    max_duration_s: int | None = None
    days_of_week: frozenset[int] = frozenset()


@dataclass(frozen=True)
class TariffElement:
    components: tuple[PriceComponent, ...]
    restrictions: Restrictions | None = None


# Where a tariff's local times (restrictions' hours, days) are read when it names no zone.
DEFAULT_TIME_ZONE = "Asia/Shanghai"


@dataclass(frozen=True)
class Tariff:
    currency: str
    elements: tuple[TariffElement, ...]
    time_zone: str = DEFAULT_TIME_ZONE
    min_price_minor: int | None = None
    max_price_minor: int | None = None


@dataclass(frozen=True)
class Usage:
    start: dt.datetime
    energy_wh: int
    duration_s: int
    parking_s: int = 0
    power_w: int = 0
    sessions: int = 1


@dataclass(frozen=True)
class PriceLine:
    component: Dimension
    label: str
    quantity: int
    unit_price_micros: int
    amount_minor: int
    vat_minor: int
    element_index: int
    description: str


@dataclass(frozen=True)
class Priced:
    currency: str
    lines: tuple[PriceLine, ...]
    subtotal_minor: int
    vat_minor: int
    adjustment_minor: int = 0
    total_minor: int = field(default=0)


# Used when no rate model exists anywhere: ¥1.0000/kWh electricity + ¥0.8000/kWh service fee, per Wh.
BUILTIN_DEFAULT = Tariff(
    currency="CNY",
    elements=(
        TariffElement(
            (
                PriceComponent(Dimension.ENERGY, 1_000_000, label="electricity"),
                PriceComponent(Dimension.ENERGY, 800_000, label="service_fee"),
            )
        ),
    ),
)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _in_time_window(r: Restrictions, seconds_of_day: int) -> bool:
    if not r.start_time and not r.end_time:
        return True
    start = _minutes(r.start_time) * 60 if r.start_time else 0
    end = _minutes(r.end_time) * 60 if r.end_time else 86_400
    if start < end:
        return start <= seconds_of_day < end
    if start > end:  # wraps midnight, e.g. 23:00-07:00
        return seconds_of_day >= start or seconds_of_day < end
    return True


@dataclass(frozen=True)
class _State:
    local: dt.datetime
    energy_wh: int
    elapsed_s: int
    power_w: int


def _matches(r: Restrictions | None, s: _State) -> bool:
    if r is None:
        return True
    local = s.local
    if not _in_time_window(r, local.hour * 3600 + local.minute * 60 + local.second):
        return False
    day = local.date().isoformat()
    if r.start_date and day < r.start_date:
        return False
    if r.end_date and day >= r.end_date:
        return False
    if r.days_of_week and local.isoweekday() not in r.days_of_week:
        return False
    if r.min_energy_wh and s.energy_wh < r.min_energy_wh:
        return False
    if r.max_energy_wh and s.energy_wh >= r.max_energy_wh:
        return False
    if r.min_power_w and s.power_w < r.min_power_w:
        return False
    if r.max_power_w and s.power_w >= r.max_power_w:
        return False
    if r.min_duration_s is not None and s.elapsed_s < r.min_duration_s:
        return False
    return not (r.max_duration_s is not None and s.elapsed_s >= r.max_duration_s)


def _energy_at(usage: Usage, offset: int) -> int:
    """Energy delivered by `offset` seconds, delivered at constant power (exact integer, sums to the total)."""
    if usage.duration_s <= 0:
        return 0
    return usage.energy_wh * min(offset, usage.duration_s) // usage.duration_s


def _boundaries(tariff: Tariff, usage: Usage, start: dt.datetime, tz: ZoneInfo) -> list[int]:
    end = usage.duration_s + usage.parking_s
    cuts = {0, usage.duration_s, end}
    clock_times = {"00:00"}
    thresholds: set[int] = set()
    durations: set[int] = set()
    for element in tariff.elements:
        r = element.restrictions
        if r is None:
            continue
        clock_times.update(t for t in (r.start_time, r.end_time) if t)
        thresholds.update(e for e in (r.min_energy_wh, r.max_energy_wh) if e)
        durations.update(d for d in (r.min_duration_s, r.max_duration_s) if d)
    first = start.astimezone(tz).date() - dt.timedelta(days=1)
    last = (start + dt.timedelta(seconds=end)).astimezone(tz).date() + dt.timedelta(days=1)
    day = first
    while day <= last:
        for text in clock_times:
            minutes = _minutes(text)
            local = dt.datetime.combine(day, dt.time(0, 0), tzinfo=tz) + dt.timedelta(minutes=minutes)
            cuts.add(int((local.astimezone(dt.UTC) - start).total_seconds()))
        day += dt.timedelta(days=1)
    if usage.duration_s > 0 and usage.energy_wh > 0:
        for e in thresholds:
            if 0 < e < usage.energy_wh:
                cuts.add(-(-e * usage.duration_s // usage.energy_wh))  # first second with energy >= e
    cuts.update(durations)
    return sorted(c for c in cuts if 0 <= c <= end)


def price(tariff: Tariff, usage: Usage) -> Priced:
    """Prices a usage with a tariff. See the module docstring for the rules."""
    tz = ZoneInfo(tariff.time_zone)
    start = usage.start.astimezone(dt.UTC).replace(microsecond=0)
    power = usage.power_w or (usage.energy_wh * 3600 // usage.duration_s if usage.duration_s > 0 else 0)
    keys: list[tuple[Dimension, str]] = []
    for element in tariff.elements:
        for c in element.components:
            if c.key not in keys:
                keys.append(c.key)

    def state(offset: int) -> _State:
        return _State((start + dt.timedelta(seconds=offset)).astimezone(tz), _energy_at(usage, offset), offset, power)

    def first_match(key: tuple[Dimension, str], s: _State) -> tuple[int, PriceComponent] | None:
        for index, element in enumerate(tariff.elements):
            component = next((c for c in element.components if c.key == key), None)
            if component is not None and _matches(element.restrictions, s):
                return index, component
        return None

    # Open groups per key: (element index, component, quantity, from offset, to offset).
    open_groups: dict[tuple[Dimension, str], tuple[int, PriceComponent, int, int, int]] = {}
    closed: list[tuple[int, PriceComponent, int, int, int]] = []

    def add(key: tuple[Dimension, str], match: tuple[int, PriceComponent], qty: int, a: int, b: int) -> None:
        current = open_groups.get(key)
        if current is not None and current[0] == match[0]:
            open_groups[key] = (current[0], current[1], current[2] + qty, current[3], b)
            return
        if current is not None:
            closed.append(current)
        open_groups[key] = (match[0], match[1], qty, a, b)

    s0 = state(0)
    for key in keys:
        if key[0] is Dimension.FLAT:
            match = first_match(key, s0)
            if match is not None and usage.sessions > 0:
                closed.append((match[0], match[1], usage.sessions, 0, 0))
    cuts = _boundaries(tariff, usage, start, tz)
    for a, b in itertools.pairwise(cuts):
        if b <= a:
            continue
        s = state(a)
        charging = a < usage.duration_s
        for key in keys:
            dim = key[0]
            if dim is Dimension.FLAT or (dim is Dimension.PARKING_TIME) == charging:
                continue
            match = first_match(key, s)
            if match is None:
                if key in open_groups:
                    closed.append(open_groups.pop(key))
                continue
            qty = _energy_at(usage, b) - _energy_at(usage, a) if dim is Dimension.ENERGY else b - a
            add(key, match, qty, a, b)
    if usage.duration_s == 0 and usage.energy_wh > 0:  # an instantaneous swap: energy priced at the start
        for key in keys:
            if key[0] is Dimension.ENERGY:
                match = first_match(key, s0)
                if match is not None:
                    closed.append((match[0], match[1], usage.energy_wh, 0, 0))
    closed.extend(open_groups.values())
    lines = [_line(tariff, start, tz, *group) for group in closed if group[2] > 0]
    lines.sort(key=lambda line: (keys.index((line.component, line.label)), line.description))
    subtotal = sum(line.amount_minor for line in lines)
    vat = sum(line.vat_minor for line in lines)
    total = subtotal + vat
    clamped = total
    if tariff.min_price_minor is not None:
        clamped = max(clamped, tariff.min_price_minor)
    if tariff.max_price_minor is not None:
        clamped = min(clamped, tariff.max_price_minor)
    return Priced(tariff.currency, tuple(lines), subtotal, vat, clamped - total, clamped)


def _line(
    tariff: Tariff, start: dt.datetime, tz: ZoneInfo, index: int, c: PriceComponent, qty: int, a: int, b: int
) -> PriceLine:
    step = max(c.step_size, 1)
    quantity = -(-qty // step) * step
    amount = round_half_up(
        quantity * c.unit_price_micros, _UNIT_DENOMINATOR[c.type] * micros_per_minor(tariff.currency)
    )
    vat = round_half_up(amount * c.vat_bp, 10_000)
    label = c.label or c.type.name.lower()
    if b > a:
        t0 = (start + dt.timedelta(seconds=a)).astimezone(tz)
        t1 = (start + dt.timedelta(seconds=b)).astimezone(tz)
        when = f" {t0:%H:%M}-{t1:%H:%M}"
    else:
        when = ""
    return PriceLine(c.type, label, quantity, c.unit_price_micros, amount, vat, index, f"{c.type.name} {label}{when}")


# --- validation and (de)serialisation ---------------------------------------------------------------------


def validate(tariff: Tariff, prefix: str = "rate_model") -> Tariff:
    problems: list[FieldViolation] = []
    try:
        check_currency(f"{prefix}.currency", tariff.currency)
    except InvalidArgument as exc:
        problems.extend(exc.violations)
    try:
        ZoneInfo(tariff.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(FieldViolation(f"{prefix}.time_zone", f"unknown IANA time zone {tariff.time_zone!r}"))
    if not tariff.elements:
        problems.append(FieldViolation(f"{prefix}.elements", "at least one element is required"))
    for i, element in enumerate(tariff.elements):
        where = f"{prefix}.elements[{i}]"
        if not element.components:
            problems.append(FieldViolation(f"{where}.price_components", "at least one component is required"))
        seen: set[tuple[Dimension, str]] = set()
        for j, c in enumerate(element.components):
            cw = f"{where}.price_components[{j}]"
            if c.key in seen:
                problems.append(FieldViolation(cw, f"duplicate component {c.key[0].name}/{c.key[1]} in one element"))
            seen.add(c.key)
            if c.unit_price_micros < 0:
                problems.append(FieldViolation(f"{cw}.unit_price_micros", "must not be negative"))
            if not 0 <= c.vat_bp <= 10_000:
                problems.append(FieldViolation(f"{cw}.vat_basis_points", "must be within [0, 10000]"))
            if c.step_size < 0:
                problems.append(FieldViolation(f"{cw}.step_size", "must not be negative"))
        r = element.restrictions
        if r is None:
            continue
        for name in ("start_time", "end_time"):
            value = getattr(r, name)
            if value and not _HHMM.match(value):
                problems.append(FieldViolation(f"{where}.restrictions.{name}", f"must be HH:MM, got {value!r}"))
        for name in ("start_date", "end_date"):
            value = getattr(r, name)
            if value:
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    problems.append(
                        FieldViolation(f"{where}.restrictions.{name}", f"must be YYYY-MM-DD, got {value!r}")
                    )
        bad_days = [d for d in r.days_of_week if not 1 <= d <= 7]
        if bad_days:
            problems.append(FieldViolation(f"{where}.restrictions.days_of_week", f"unknown days {bad_days}"))
    if (
        tariff.min_price_minor is not None
        and tariff.max_price_minor is not None
        and tariff.min_price_minor > tariff.max_price_minor
    ):
        problems.append(FieldViolation(f"{prefix}.min_price", "must not exceed max_price"))
    if problems:
        raise InvalidArgument.for_fields(problems)
    return tariff


def elements_to_json(elements: Iterable[TariffElement]) -> str:
    out: list[dict[str, Any]] = []
    for element in elements:
        item: dict[str, Any] = {
            "price_components": [
                {
                    "type": c.type.name,
                    "unit_price_micros": c.unit_price_micros,
                    "vat_bp": c.vat_bp,
                    "step_size": c.step_size,
                    "label": c.label,
                }
                for c in element.components
            ]
        }
        r = element.restrictions
        if r is not None:
            item["restrictions"] = {
                "start_time": r.start_time,
                "end_time": r.end_time,
                "start_date": r.start_date,
                "end_date": r.end_date,
                "min_energy_wh": r.min_energy_wh,
                "max_energy_wh": r.max_energy_wh,
                "min_power_w": r.min_power_w,
                "max_power_w": r.max_power_w,
                "min_duration_s": r.min_duration_s,
                "max_duration_s": r.max_duration_s,
                "days_of_week": sorted(r.days_of_week),
            }
        out.append(item)
    return json.dumps(out, separators=(",", ":"))


def elements_from_json(text: str) -> tuple[TariffElement, ...]:
    elements = []
    for item in json.loads(text):
        components = tuple(
            PriceComponent(
                Dimension[c["type"]], int(c["unit_price_micros"]), int(c["vat_bp"]), int(c["step_size"]), c["label"]
            )
            for c in item["price_components"]
        )
        raw = item.get("restrictions")
        restrictions = None
        if raw is not None:
            restrictions = Restrictions(
                start_time=raw["start_time"],
                end_time=raw["end_time"],
                start_date=raw["start_date"],
                end_date=raw["end_date"],
                min_energy_wh=raw["min_energy_wh"],
                max_energy_wh=raw["max_energy_wh"],
                min_power_w=raw["min_power_w"],
                max_power_w=raw["max_power_w"],
                min_duration_s=raw["min_duration_s"],
                max_duration_s=raw["max_duration_s"],
                days_of_week=frozenset(raw["days_of_week"]),
            )
        elements.append(TariffElement(components, restrictions))
    return tuple(elements)
