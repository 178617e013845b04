"""Personalised ranking of priced power-up options (pure: no I/O).

Each option gets a cost that mixes finish time and price by the customer's price sensitivity, adjusted by
what the customer told us (favourite stations, preferred modes) and did (stations and modes of past
orders), and by the vehicle's state (a nearly empty battery weighs the detour more). The best option's and
every other option's top reason is the factor that helped it most.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field


class Reason(enum.IntEnum):
    """RankReason numbers of ordering.proto."""

    EARLIEST_FINISH = 1
    CHEAPEST = 2
    SHORTEST_DETOUR = 3
    NO_DRIVER_TIME = 4
    BALANCED = 5
    FLEET_PREFERRED = 6


@dataclass(frozen=True)
class Candidate:
    key: str
    mode: int
    station_id: str | None
    finish_s: float  # seconds from now until done
    driver_time_s: float  # driver's own time spent (0 for valet/van)
    distance_m: float
    price_minor: int


@dataclass(frozen=True)
class Preferences:
    price_sensitivity: float = 0.5  # 0 = only time matters, 1 = only price
    favourite_stations: frozenset[str] = frozenset()
    preferred_modes: tuple[int, ...] = ()
    past_stations: Counter[str] = field(default_factory=Counter)
    past_modes: Counter[int] = field(default_factory=Counter)
    fleet_modes: tuple[int, ...] = ()
    soc_permille: int = 500


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    rank: int
    reason: Reason
    score: float


_VALET_MODES = frozenset({3, 4})


def rank(candidates: list[Candidate], prefs: Preferences) -> list[Ranked]:
    """Best first. Deterministic: ties break on the candidate key."""
    if not candidates:
        return []
    finishes = [c.finish_s for c in candidates]
    prices = [c.price_minor for c in candidates]
    detours = [c.distance_m for c in candidates]
    fmin, fspan = min(finishes), max(max(finishes) - min(finishes), 1.0)
    pmin, pspan = min(prices), max(max(prices) - min(prices), 1)
    dmin, dspan = min(detours), max(max(detours) - min(detours), 1.0)
    w_price = min(max(prefs.price_sensitivity, 0.0), 1.0)
    w_time = 1.0 - w_price
    # Low battery: range anxiety makes the detour count more.
    w_detour = 0.1 + (0.3 if prefs.soc_permille < 150 else 0.0)
    total_past = sum(prefs.past_stations.values()) or 1
    total_modes = sum(prefs.past_modes.values()) or 1

    scored: list[tuple[float, str, Candidate, Reason]] = []
    for c in candidates:
        t = (c.finish_s - fmin) / fspan
        p = (c.price_minor - pmin) / pspan
        d = (c.distance_m - dmin) / dspan
        bonuses: dict[Reason, float] = {}
        if c.station_id and c.station_id in prefs.favourite_stations:
            bonuses[Reason.BALANCED] = 0.25
        if c.station_id and prefs.past_stations.get(c.station_id):
            bonuses[Reason.BALANCED] = bonuses.get(Reason.BALANCED, 0.0) + 0.15 * (
                prefs.past_stations[c.station_id] / total_past
            )
        if c.mode in prefs.preferred_modes:
            bonuses[Reason.BALANCED] = bonuses.get(Reason.BALANCED, 0.0) + 0.2
        if prefs.past_modes.get(c.mode):
            bonuses[Reason.BALANCED] = bonuses.get(Reason.BALANCED, 0.0) + 0.1 * prefs.past_modes[c.mode] / total_modes
        if c.mode in prefs.fleet_modes:
            bonuses[Reason.FLEET_PREFERRED] = 0.3
        if c.mode in _VALET_MODES:
            bonuses[Reason.NO_DRIVER_TIME] = 0.1 * w_time
        score = w_time * t + w_price * p + w_detour * d - sum(bonuses.values())
        reason = _top_reason(c, t, p, d, bonuses, w_time, w_price, fmin, pmin, dmin)
        scored.append((score, c.key, c, reason))
    scored.sort(key=lambda s: (s[0], s[1]))
    return [Ranked(c, i + 1, reason, score) for i, (score, _, c, reason) in enumerate(scored)]


def _top_reason(
    c: Candidate,
    t: float,
    p: float,
    d: float,
    bonuses: dict[Reason, float],
    w_time: float,
    w_price: float,
    fmin: float,
    pmin: int,
    dmin: float,
) -> Reason:
    if bonuses.get(Reason.FLEET_PREFERRED):
        return Reason.FLEET_PREFERRED
    if c.finish_s <= fmin and w_time >= w_price:
        return Reason.EARLIEST_FINISH
    if c.price_minor <= pmin and w_price >= w_time:
        return Reason.CHEAPEST
    if c.finish_s <= fmin:
        return Reason.EARLIEST_FINISH
    if c.price_minor <= pmin:
        return Reason.CHEAPEST
    if c.mode in _VALET_MODES:
        return Reason.NO_DRIVER_TIME
    if c.distance_m <= dmin:
        return Reason.SHORTEST_DETOUR
    return Reason.BALANCED
