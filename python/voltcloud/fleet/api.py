"""Fleet's public surface for other rooms: the fleet, sub-fleet, vehicle and driver rows they read, the VIN
rule, and the ports fleet needs from the rooms above it (wired by `server.py`).

Ordering reads `Driver.fleet_id` (set only for approved members) to decide who orders for a fleet vehicle;
settlement reads it, and `SubFleet`, to decide who spends a fleet's money.
"""

from __future__ import annotations

from voltcloud.fleet.models import Driver, Fleet, SubFleet, Vehicle
from voltcloud.fleet.ports import Ledger, PackTypes
from voltcloud.fleet.vin import normalise_vin

__all__ = ["Driver", "Fleet", "Ledger", "PackTypes", "SubFleet", "Vehicle", "normalise_vin"]
