"""The engine's own limits (`_core.LIMITS`) and the checks of a row against them.

Apart from `engine.py` because the domains that write rows (stations: registry, packs) check them at the edge,
and `engine.py` sits above those domains (it reads their tables to build the index): this module imports
nothing but `_core` and `platform.enums`, so it can sit below every room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from voltcloud import _core
from voltcloud.platform.enums import StationKind

STATION_SWAP = int(StationKind.SWAP)
STATION_CHARGING = int(StationKind.CHARGING)


@dataclass(frozen=True)
class Limits:
    """The engine's limits (`_core.LIMITS`, rust_core/src/limits.rs), typed. A name missing from the engine
    fails at import, so Python can never check against a limit the engine does not have."""

    station_kind_min: int
    station_kind_max: int
    min_swap_lanes: int
    max_lanes: int
    min_swap_time_s: int
    max_swap_time_s: int
    max_slots: int
    max_station_power_w: int
    min_connector_power_w: int
    max_connector_power_w: int
    max_chargers: int
    max_connectors_per_charger: int
    max_connectors_per_station: int
    connector_standard_max: int
    connector_status_max: int
    max_pack_type_id: int
    max_permille: int
    max_pack_cycles: int
    pack_state_max: int
    unit_kind_min: int
    unit_kind_max: int
    unit_status_max: int
    unit_connector_mask: int
    max_lat_deg: int
    max_lng_deg: int

    @classmethod
    def from_core(cls) -> Limits:
        return cls(**{f.name: int(_core.LIMITS[f.name]) for f in fields(cls)})


LIMITS = Limits.from_core()

# A problem with one value: (the row's column name, why).
Problem = tuple[str, str]


def _outside(column: str, value: float, lo: float, hi: float) -> list[Problem]:
    if isinstance(value, float) and not math.isfinite(value):
        return [(column, f"must be a finite number, got {value}")]
    return [] if lo <= value <= hi else [(column, f"must be within [{lo}, {hi}], got {value}")]


def position_problems(lat: float, lng: float) -> list[Problem]:
    return _outside("lat", lat, -LIMITS.max_lat_deg, LIMITS.max_lat_deg) + _outside(
        "lng", lng, -LIMITS.max_lng_deg, LIMITS.max_lng_deg
    )


def station_problems(
    *, kind: int, lanes: int, swap_time_s: int, lat: float, lng: float, power_cap_w: int, slot_count: int
) -> list[Problem]:
    """What keeps a station row out of the engine (empty: it loads). A swap station needs lanes and a swap
    time; a charging station has neither lanes nor slots to speak of, but stays within the same bounds."""
    found = _outside("kind", kind, LIMITS.station_kind_min, LIMITS.station_kind_max)
    swap = kind == STATION_SWAP
    found += _outside("lanes", lanes, LIMITS.min_swap_lanes if swap else 0, LIMITS.max_lanes)
    found += _outside("swap_time_s", swap_time_s, LIMITS.min_swap_time_s if swap else 0, LIMITS.max_swap_time_s)
    found += _outside("slot_count", slot_count, 0, LIMITS.max_slots)
    found += _outside("power_cap_w", power_cap_w, 0, LIMITS.max_station_power_w)
    return found + position_problems(lat, lng)


def connector_problems(*, standard: int, max_power_w: int, status: int) -> list[Problem]:
    return (
        _outside("standard", standard, 1, LIMITS.connector_standard_max)
        + _outside("max_power_w", max_power_w, LIMITS.min_connector_power_w, LIMITS.max_connector_power_w)
        + _outside("status", status, 1, LIMITS.connector_status_max)
    )


def pack_problems(*, pack_type_id: int, soc: int, soh: int, cycles: int, state: int) -> list[Problem]:
    return (
        _outside("pack_type_id", pack_type_id, 0, LIMITS.max_pack_type_id)
        + _outside("soc_permille", soc, 0, LIMITS.max_permille)
        + _outside("soh_permille", soh, 0, LIMITS.max_permille)
        + _outside("cycles", cycles, 0, LIMITS.max_pack_cycles)
        + _outside("state", state, 1, LIMITS.pack_state_max)
    )
