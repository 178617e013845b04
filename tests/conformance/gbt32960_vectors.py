"""Parser of tests/data/gbt32960/frames.txt: entries with their check, header summary and block summaries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from voltcloud.api.v1 import common_pb2 as M
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.fields import GbTime, Marker, Value

FRAMES = Path(__file__).resolve().parents[1] / "data" / "gbt32960" / "frames.txt"


@dataclass
class Vector:
    number: int
    check: str
    raw: bytes
    header: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.check.startswith("INVALID")

    @property
    def invalid_reason(self) -> str:
        return self.check.removeprefix("INVALID:").strip()


def load_vectors(path: Path = FRAMES) -> list[Vector]:
    vectors: list[Vector] = []
    current: dict[str, object] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^\[(\d+)\]", line):
            current = {"number": int(m.group(1)), "details": []}
        elif line.startswith("    check: "):
            current["check"] = line.removeprefix("    check: ")
        elif line.startswith("    header: "):
            current["header"] = line.removeprefix("    header: ")
        elif line.startswith("      "):
            details = current["details"]
            assert isinstance(details, list)
            details.append(line.strip())
        elif line.startswith("    hex: "):
            current["raw"] = bytes.fromhex(line.removeprefix("    hex: "))
            vectors.append(Vector(**current))  # type: ignore[arg-type]
    return vectors


# ---- blocks of every type, for round trips, fuzz corpora and the gateway tests ----

T = GbTime(26, 12, 3, 20, 15, 30)
VIN = "LGHC4V1D3HE202652"


def blocks_2016() -> list[rt.Block]:
    inv = Marker.INVALID
    return [
        rt.Vehicle(1, 3, 1, 65_400, 12_345_600, 384_500, -12_300, 810, 1, 0x2E, 5000, 12, inv),
        rt.Motors((rt.Motor(1, 1, 45_000, 3200, -1234, Marker.ABNORMAL, 380_000, 55_500),)),
        rt.FuelCell(350_000, 12_000, 120, (25_000, inv), 60_000, 3, 120, 4, 35_000, 5, 1),
        rt.Engine(crank_rpm=inv, state=2, fuel_ml_per_100km=850),
        rt.Position(0b110, 116_397_128, 39_916_527),
        rt.Extremes(1, 12, 4_123, 1, 40, 3_998, 1, 3, 35_000, 1, 7, 21_000),
        rt.Alarms(3, 1 << 11, (0xDEAD,), (), (), (7, 8)),
        rt.CellVoltages((rt.CellPack(1, 384_500, 1_000, 192, 97, (3_998, 4_123, inv)),)),
        rt.ProbeTemperatures((rt.ProbePack(1, (25_000, 26_000, Marker.ABNORMAL)),)),
        rt.Oem(0x80, b"vendor"),
    ]


def blocks_2025() -> list[rt.Block]:
    inv = Marker.INVALID
    return [
        rt.Vehicle(1, 3, 1, 65_400, 12_345_600, 384_500, -2_500_000, 810, 1, 0x8E, inv),
        rt.Motors((rt.Motor(1, 1, 45_000, -31_000, -150_000, 60_000),)),
        rt.HydrogenSystem(65_000, 2, 15_000, 1, 70_000, 3, 1, 80, Marker.ABNORMAL),
        rt.Engine(crank_rpm=800),
        rt.Position(0, 116_397_128, 39_916_527, 2),
        rt.Alarms(2, (1 << 23) | 1, (), (1,), (), (), ((23, 2), (0, 1))),
        rt.CellVoltages((rt.CellPack(1, 384_500, -5_000, 3, 1, (3_998, 4_123, 4_000)),)),
        rt.ProbeTemperatures((rt.ProbePack(2, (25_000,)),)),
        rt.FuelCellStacks((rt.FuelCellStack(1, 300_000, 100_000, 20_000, 30_000, (70_000, 71_000)),)),
        rt.SuperCapacitor(1, 48_000, 2_000, (2_700, 2_650), (30_000,)),
        rt.SuperCapacitorExtremes(1, 300, 2_750, 1, 12, 2_600, 1, 4, 41_000, 1, 2, 20_000),
        rt.Oem(0xFE, b""),
    ]


# ---- the oracle of the Rust telemetry decoder ----


def _put(out: list[tuple[int, int]], metric: int, value: Value | None) -> None:
    if isinstance(value, int):
        out.append((metric, value))


def reference_readings(data: rt.RealtimeData) -> list[tuple[int, int]]:
    """(metric, value) readings of a typed data unit, as the gateway mapped them before the Rust decoder
    (markers absent): what `_core.Gbt32960Telemetry` must yield (tests/conformance/test_gbt32960_rust.py)."""
    out: list[tuple[int, int]] = []
    vehicle = data.first(rt.Vehicle)
    if vehicle is not None:
        _put(out, M.METRIC_SPEED_M_PER_H, vehicle.speed_m_per_h)
        _put(out, M.METRIC_ODOMETER_M, vehicle.odometer_m)
        _put(out, M.METRIC_VOLTAGE_MV, vehicle.voltage_mv)
        if isinstance(vehicle.current_ma, int):
            out.append((M.METRIC_CURRENT_MA, -vehicle.current_ma))
        _put(out, M.METRIC_SOC_PERMILLE, vehicle.soc_permille)
        _put(out, M.METRIC_INSULATION_KOHM, vehicle.insulation_kohm)
    position = data.first(rt.Position)
    if position is not None and position.fix_valid:
        lat, lng = position.latitude_udeg, position.longitude_udeg
        if isinstance(lat, int) and isinstance(lng, int):
            out += [(M.METRIC_LATITUDE_MICRODEG, lat), (M.METRIC_LONGITUDE_MICRODEG, lng)]
    ext = data.first(rt.Extremes)
    if ext is not None:
        _put(out, M.METRIC_CELL_VOLTAGE_MAX_MV, ext.max_cell_mv)
        _put(out, M.METRIC_CELL_VOLTAGE_MIN_MV, ext.min_cell_mv)
        _put(out, M.METRIC_TEMPERATURE_MAX_MILLI_C, ext.max_temp_mc)
        return out
    cells = data.first(rt.CellVoltages)
    packs = cells.packs if cells else ()
    volts = [v for p in packs for v in p.cells_mv if isinstance(v, int)]
    if volts and all(p.start_index == 1 and len(p.cells_mv) == p.total_cells for p in packs):
        out += [(M.METRIC_CELL_VOLTAGE_MAX_MV, max(volts)), (M.METRIC_CELL_VOLTAGE_MIN_MV, min(volts))]
    probes = data.first(rt.ProbeTemperatures)
    temps = [t for p in probes.packs for t in p.temps_mc if isinstance(t, int)] if probes else []
    if temps:
        out.append((M.METRIC_TEMPERATURE_MAX_MILLI_C, max(temps)))
    return out
