"""Fleet's public surface for other rooms: the fleet, sub-fleet, vehicle and driver rows they read.

Fleet has no rules of its own yet (its RPCs are not built), so other rooms read these rows through this module
rather than `fleet.models`: when fleet grows rules, they land behind these names.
"""

from __future__ import annotations

from voltcloud.fleet.models import Driver, Fleet, SubFleet, Vehicle

__all__ = ["Driver", "Fleet", "SubFleet", "Vehicle"]
