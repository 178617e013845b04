"""Decoded real-time data -> the platform's readings (integer `Metric` units) and alarm transitions.

Pure functions: the server feeds them and publishes the result on the uplink.
"""

from __future__ import annotations

from dataclasses import dataclass

from voltcloud.api.v1 import common_pb2
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.fields import Value

M = common_pb2

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


def _put(out: list[tuple[int, int]], metric: int, value: Value | None) -> None:
    if isinstance(value, int):
        out.append((metric, value))


def readings(data: rt.RealtimeData) -> list[tuple[int, int]]:
    """(metric, value) pairs of one data unit; markers are simply absent (no reading, not a zero)."""
    out: list[tuple[int, int]] = []
    vehicle = data.first(rt.Vehicle)
    if vehicle is not None:
        _put(out, M.METRIC_SPEED_M_PER_H, vehicle.speed_m_per_h)
        _put(out, M.METRIC_ODOMETER_M, vehicle.odometer_m)
        _put(out, M.METRIC_VOLTAGE_MV, vehicle.voltage_mv)
        if isinstance(vehicle.current_ma, int):
            out.append((M.METRIC_CURRENT_MA, -vehicle.current_ma))  # platform: positive = into the battery
        _put(out, M.METRIC_SOC_PERMILLE, vehicle.soc_permille)
        _put(out, M.METRIC_INSULATION_KOHM, vehicle.insulation_kohm)
    position = data.first(rt.Position)
    if position is not None and position.fix_valid:
        lat, lng = position.latitude_udeg, position.longitude_udeg
        if isinstance(lat, int) and isinstance(lng, int):
            out += [(M.METRIC_LATITUDE_MICRODEG, lat), (M.METRIC_LONGITUDE_MICRODEG, lng)]
    out += _extremes(data)
    return out


def _extremes(data: rt.RealtimeData) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    ext = data.first(rt.Extremes)
    if ext is not None:
        _put(out, M.METRIC_CELL_VOLTAGE_MAX_MV, ext.max_cell_mv)
        _put(out, M.METRIC_CELL_VOLTAGE_MIN_MV, ext.min_cell_mv)
        _put(out, M.METRIC_TEMPERATURE_MAX_MILLI_C, ext.max_temp_mc)
        return out
    # 2025 has no extremes block but sends every cell in one frame: derive them
    cells = data.first(rt.CellVoltages)
    volts = [v for p in cells.packs for v in p.cells_mv if isinstance(v, int)] if cells else []
    if volts and all(p.start_index == 1 and len(p.cells_mv) == p.total_cells for p in cells.packs):  # type: ignore[union-attr]
        out += [(M.METRIC_CELL_VOLTAGE_MAX_MV, max(volts)), (M.METRIC_CELL_VOLTAGE_MIN_MV, min(volts))]
    probes = data.first(rt.ProbeTemperatures)
    temps = [t for p in probes.packs for t in p.temps_mc if isinstance(t, int)] if probes else []
    if temps:
        out.append((M.METRIC_TEMPERATURE_MAX_MILLI_C, max(temps)))
    return out


@dataclass(frozen=True, slots=True)
class AlarmChange:
    level: int  # GB/T level 1..3, or 0 when cleared
    previous: int
    message: str

    @property
    def cleared(self) -> bool:
        return self.level == 0


def alarm_change(data: rt.RealtimeData, previous: int) -> AlarmChange | None:
    """The change of a vehicle's GB/T max alarm level, if any (markers and out-of-range levels: no change)."""
    alarms = data.first(rt.Alarms)
    if alarms is None or not isinstance(alarms.max_level, int) or alarms.max_level > 3:
        return None
    level = alarms.max_level
    if level == previous:
        return None
    names = [name for bit, name in enumerate(GENERAL_ALARMS) if alarms.general_flags >> bit & 1]
    faults = len(alarms.storage_faults) + len(alarms.motor_faults) + len(alarms.engine_faults)
    faults += len(alarms.other_faults)
    text = f"GB/T 32960 alarm level {level}" if level else f"GB/T 32960 alarm level {previous} cleared"
    if names:
        text += ": " + ", ".join(names)
    if faults:
        text += f" ({faults} fault codes)"
    return AlarmChange(level, previous, text[:500])
