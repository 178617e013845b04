"""Fleet's public surface for other rooms: the fleet, sub-fleet, vehicle and driver rows they read, the VIN
rule, and the ports fleet needs from the rooms above it (wired by `server.py`).

Ordering reads `Driver.fleet_id` (set only for approved members) to decide who orders for a fleet vehicle;
settlement reads it, and `SubFleet`, to decide who spends a fleet's money.
"""

from __future__ import annotations

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.models import Driver, Fleet, SubFleet, Vehicle
from voltcloud.fleet.ports import (
    AccountStatement,
    ChargingTokens,
    DrivingDay,
    DrivingFacts,
    Ledger,
    OrderFacts,
    PackTypes,
    StatementEntry,
    TokenIssue,
    TokenView,
    VehicleDay,
)
from voltcloud.fleet.tokens import holder_refusal
from voltcloud.fleet.vehicles import visible_vehicle
from voltcloud.fleet.vin import normalise_vin

__all__ = [
    "AccountStatement",
    "ChargingTokens",
    "Driver",
    "DrivingDay",
    "DrivingFacts",
    "Fleet",
    "Ledger",
    "OrderFacts",
    "PackTypes",
    "StatementEntry",
    "SubFleet",
    "TokenIssue",
    "TokenView",
    "Vehicle",
    "VehicleDay",
    "holder_refusal",
    "managed_fleet",
    "normalise_vin",
    "sub_fleet_of",
    "visible_vehicle",
]
