"""Telemetry's public surface: what ingest (the uplink) and the composition root use.

Ingest hands vehicle readings (`Raw` per vehicle) and GB/T alarms (`VehicleAlarm`) to the `VehicleTelemetry`
the composition root built; the composition root fills the ports (`PowerUpFinder`: the engine's nearest
option; `VehicleFacts`: ordering's last facts) and gives `VehicleTelemetry` to fleet as its `DrivingFacts`.
"""

from __future__ import annotations

from voltcloud.telemetry.alerts import Limits
from voltcloud.telemetry.ports import LastKnown, NoFacts, NoPowerUps, PowerUpFinder, PowerUpHint, VehicleFacts
from voltcloud.telemetry.remediation import Raw, Thresholds
from voltcloud.telemetry.store import Applied, Rules, ensure_partitions
from voltcloud.telemetry.vehicles import VehicleAlarm, VehicleTelemetry
from voltcloud.telemetry.views import resolve_vins

__all__ = [
    "Applied",
    "LastKnown",
    "Limits",
    "NoFacts",
    "NoPowerUps",
    "PowerUpFinder",
    "PowerUpHint",
    "Raw",
    "Rules",
    "Thresholds",
    "VehicleAlarm",
    "VehicleFacts",
    "VehicleTelemetry",
    "ensure_partitions",
    "resolve_vins",
]
