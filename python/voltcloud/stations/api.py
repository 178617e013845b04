"""Stations' public surface for other rooms: what ordering, dispatch, settlement, ingest and the engine may use.

Stations owns operators, stations, connectors, packs, mobile units, sessions and charging tokens. Other rooms
read those rows and change their state only through what is named here: `inventory` (version-checked
reservations, the only writer of resource status), `sessions` (charge and swap sessions as reported),
`packs` (pack events and swap placement), `tokens` (charging tokens and abnormal sessions), `units` (vans
and specialists onboarded through DispatchService), and the rows and value types below. Registry, twin
internals, the servicer and the idempotency table stay inside.
"""

from __future__ import annotations

from voltcloud.stations import inventory, packs, sessions, tokens, twin, units
from voltcloud.stations.commands import CommandOutcome, CommandResult, StationCommands
from voltcloud.stations.inventory import CONNECTOR_AVAILABLE, PACK_READY, InventoryChange
from voltcloud.stations.models import Connector, MobileUnit, Pack, PackType, Station, StationSession
from voltcloud.stations.sessions import CHARGE, ENDED, STARTED, SWAP, SessionLink, SessionListener, SessionReport
from voltcloud.stations.token_models import ChargingToken
from voltcloud.stations.twin import ConnectorTwin, LaneTwin, SlotTwin, TelemetrySource, Twin, TwinStore

__all__ = [
    "CHARGE",
    "CONNECTOR_AVAILABLE",
    "ENDED",
    "PACK_READY",
    "STARTED",
    "SWAP",
    "ChargingToken",
    "CommandOutcome",
    "CommandResult",
    "Connector",
    "ConnectorTwin",
    "InventoryChange",
    "LaneTwin",
    "MobileUnit",
    "Pack",
    "PackType",
    "SessionLink",
    "SessionListener",
    "SessionReport",
    "SlotTwin",
    "Station",
    "StationCommands",
    "StationSession",
    "TelemetrySource",
    "Twin",
    "TwinStore",
    "inventory",
    "packs",
    "sessions",
    "tokens",
    "twin",
    "units",
]
