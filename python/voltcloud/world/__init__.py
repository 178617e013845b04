"""Seeded generator of a realistic EV energy-replenishment region (demo city .. country).

>>> from voltcloud.world import generate_world
>>> w = generate_world("demo", seed=0)
>>> w.resource_count() > 0
True
"""

from .generator import PRESETS, demand_factor, generate_world, vin_check_digit
from .model import (
    PACK_CAPACITY_WH,
    Cities,
    Connectors,
    ConnectorStandard,
    ConnectorStatus,
    Drivers,
    Fleet,
    Operator,
    Packs,
    PackState,
    PackType,
    RoadClass,
    RoadClasses,
    Skill,
    StationKind,
    Stations,
    UnitKind,
    Units,
    UnitStatus,
    Vehicles,
    World,
    WorldSpec,
)

__all__ = [
    "PACK_CAPACITY_WH",
    "PRESETS",
    "Cities",
    "ConnectorStandard",
    "ConnectorStatus",
    "Connectors",
    "Drivers",
    "Fleet",
    "Operator",
    "PackState",
    "PackType",
    "Packs",
    "RoadClass",
    "RoadClasses",
    "Skill",
    "StationKind",
    "Stations",
    "UnitKind",
    "UnitStatus",
    "Units",
    "Vehicles",
    "World",
    "WorldSpec",
    "demand_factor",
    "generate_world",
    "vin_check_digit",
]
