"""Validation of positions and boxes coming from clients (WGS84 degrees)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from voltcloud.platform.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class Position:
    lat: float
    lng: float


@dataclass(frozen=True)
class Box:
    south: float
    west: float
    north: float
    east: float


def position_violations(field: str, lat: float, lng: float) -> list[FieldViolation]:
    found = []
    if not math.isfinite(lat) or not -90.0 <= lat <= 90.0:
        found.append(FieldViolation(f"{field}.lat", f"must be within [-90, 90], got {lat}"))
    if not math.isfinite(lng) or not -180.0 <= lng <= 180.0:
        found.append(FieldViolation(f"{field}.lng", f"must be within [-180, 180], got {lng}"))
    return found


def parse_position(field: str, lat: float, lng: float) -> Position:
    violations = position_violations(field, lat, lng)
    if violations:
        raise InvalidArgument.for_fields(violations)
    return Position(lat, lng)


def parse_box(field: str, south_west: Position, north_east: Position) -> Box:
    if south_west.lat > north_east.lat:
        raise InvalidArgument.for_field(f"{field}.south_west.lat", "must not be north of north_east.lat")
    if south_west.lng > north_east.lng:
        raise InvalidArgument.for_field(f"{field}.south_west.lng", "must not be east of north_east.lng")
    return Box(south_west.lat, south_west.lng, north_east.lat, north_east.lng)
