"""What the platform gets of real-time data: the metric of each reading the Rust decoder yields
(`_core.Gbt32960Telemetry`: integer `Metric` units, markers absent) and alarm-level transitions.

Pure functions: the server feeds them and publishes the result on the uplink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from voltcloud.api.v1 import common_pb2

M = common_pb2
# (max level or None for a marker, general alarm flags, number of fault codes) of a data unit's alarm block
AlarmSummary: TypeAlias = tuple[int | None, int, int]

# The metric of each reading the Rust decoder (`_core.Gbt32960Telemetry`) yields, in its slot order.
METRICS = (
    M.METRIC_SPEED_M_PER_H, M.METRIC_ODOMETER_M, M.METRIC_VOLTAGE_MV, M.METRIC_CURRENT_MA,
    M.METRIC_SOC_PERMILLE, M.METRIC_INSULATION_KOHM, M.METRIC_LATITUDE_MICRODEG, M.METRIC_LONGITUDE_MICRODEG,
    M.METRIC_CELL_VOLTAGE_MAX_MV, M.METRIC_CELL_VOLTAGE_MIN_MV, M.METRIC_TEMPERATURE_MAX_MILLI_C,
)  # fmt: skip

# GB/T alarm level 1..3 (3 = most severe) -> the platform's levels
ALARM_LEVELS = {1: M.ALARM_LEVEL_WARNING, 2: M.ALARM_LEVEL_MAJOR, 3: M.ALARM_LEVEL_CRITICAL}

GENERAL_ALARMS = (
    "temperature difference", "battery high temperature", "pack over-voltage", "pack under-voltage",
    "SOC low", "cell over-voltage", "cell under-voltage", "SOC high", "SOC jump", "pack mismatch",
    "cell consistency poor", "insulation", "DC-DC temperature", "brake system", "DC-DC state",
    "motor controller temperature", "high-voltage interlock", "motor temperature", "pack over-charge",
    # 2025 edition
    "motor over-speed", "motor over-current", "super-capacitor over-temperature",
    "super-capacitor over-pressure", "battery thermal event", "hydrogen leak", "hydrogen pressure",
    "hydrogen temperature", "fuel-cell stack over-temperature",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlarmChange:
    level: int  # GB/T level 1..3, or 0 when cleared
    previous: int
    message: str

    @property
    def cleared(self) -> bool:
        return self.level == 0


def alarm_change(alarm: AlarmSummary, previous: int) -> AlarmChange | None:
    """The change of a vehicle's GB/T max alarm level, if any (markers and out-of-range levels: no change)."""
    level, general_flags, faults = alarm
    if level is None or level > 3 or level == previous:
        return None
    names = [name for bit, name in enumerate(GENERAL_ALARMS) if general_flags >> bit & 1]
    text = f"GB/T 32960 alarm level {level}" if level else f"GB/T 32960 alarm level {previous} cleared"
    if names:
        text += ": " + ", ".join(names)
    if faults:
        text += f" ({faults} fault codes)"
    return AlarmChange(level, previous, text[:500])
