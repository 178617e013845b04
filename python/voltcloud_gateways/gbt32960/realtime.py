"""Real-time (0x02) and reissued (0x03) data units of both editions: time, then information blocks.

Values are integers in the platform's units (proto common.proto `Metric`): mV, mA, m/h, m, milli-°C,
micro-degrees, permille; or a `Marker`. Fields the platform has no unit for keep the standard's resolution
in their name (`torque_dnm` = 0.1 N·m, `..._pa`, `..._g_per_100km`). Currents keep the standard's sign
(positive = discharging, negative = charging); the gateway flips it for METRIC_CURRENT_MA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TypeAlias, TypeVar

from voltcloud_gateways.gbt32960.fields import (
    BYTE,
    CELL_MV,
    DECI_MV,
    DWORD,
    RAW8,
    RAW16,
    TEMP_MC,
    WORD,
    GbTime,
    Layout,
    Linear,
    Marker,
    Reader,
    Short,
    Value,
)
from voltcloud_gateways.gbt32960.frame import Edition, FrameError, Reason

_T = TypeVar("_T")
SPEED = Linear(2, 100)  # 0.1 km/h -> m/h
ODOMETER = Linear(4, 100)  # 0.1 km -> m
CURRENT_2016 = Linear(2, 100, -1_000_000)  # 0.1 A, offset -1000 A -> mA
CURRENT_2025 = Linear(2, 100, -3_000_000)  # 0.1 A, offset -3000 A -> mA
SOC = Linear(1, 10)  # % -> permille
RAW32 = Linear(4, markers=False)
ENGINE_2016 = Layout(BYTE, WORD, Linear(2, 10))
COORDS = Layout(DWORD, DWORD)
SUPERCAP_HEAD = Layout(RAW8, DECI_MV, CURRENT_2025)
ALARM_HEAD = Layout(BYTE, RAW32)


@dataclass(frozen=True, slots=True)
class Vehicle:
    """0x01 vehicle. Enumerations (state, charge_state, mode, dcdc_state) are the standard's codes."""

    state: Value  # 1 on, 2 off, 3 other
    charge_state: Value  # 1 parked charging, 2 driving charging, 3 not charging, 4 complete
    mode: Value  # 1 EV, 2 hybrid, 3 fuel
    speed_m_per_h: Value
    odometer_m: Value
    voltage_mv: Value
    current_ma: Value  # standard's sign: negative = charging
    soc_permille: Value
    dcdc_state: Value
    gear: int  # bitfield: bit5 drive force, bit4 brake force, bits0-3 gear (13 R, 14 D, 15 P)
    insulation_kohm: Value
    accelerator_pct: Value | None = None  # 2016 only
    brake_pct: Value | None = None  # 2016 only (101 = "brake on" on some terminals)


VEHICLE_2016 = Layout(BYTE, BYTE, BYTE, SPEED, ODOMETER, DECI_MV, CURRENT_2016, SOC, BYTE, RAW8, RAW16, BYTE, BYTE)
VEHICLE_2025 = Layout(BYTE, BYTE, BYTE, SPEED, ODOMETER, DECI_MV, CURRENT_2025, SOC, BYTE, RAW8, WORD)


@dataclass(frozen=True, slots=True)
class Motor:
    number: int
    state: Value  # 1 consuming, 2 generating, 3 off, 4 ready
    controller_temp_mc: Value
    speed_rpm: Value
    torque_dnm: Value  # 0.1 N·m
    temp_mc: Value
    controller_voltage_mv: Value | None = None  # 2016 only
    dc_current_ma: Value | None = None  # 2016 only


MOTOR_2016 = Layout(RAW8, BYTE, TEMP_MC, Linear(2, 1, -20_000), Linear(2, 1, -20_000), TEMP_MC, DECI_MV, CURRENT_2016)
MOTOR_2025 = Layout(RAW8, BYTE, TEMP_MC, Linear(2, 1, -32_000), Linear(4, 1, -200_000), TEMP_MC)


@dataclass(frozen=True, slots=True)
class Motors:
    motors: tuple[Motor, ...]


@dataclass(frozen=True, slots=True)
class FuelCell:
    """0x03 fuel cell (2016 layout)."""

    voltage_mv: Value
    current_ma: Value
    consumption_g_per_100km: Value
    probe_temps_mc: tuple[Value, ...]
    max_h2_temp_mc: Value
    max_h2_temp_probe: int
    max_h2_concentration_ppm: Value  # mg/kg
    max_h2_concentration_sensor: int
    max_h2_pressure_kpa: Value
    max_h2_pressure_sensor: int
    dcdc_state: Value


FUEL_HEAD = Layout(DECI_MV, Linear(2, 100), Linear(2, 10))
FUEL_TAIL = Layout(Linear(2, 100, -40_000), RAW8, WORD, RAW8, Linear(2, 100), RAW8, BYTE)


@dataclass(frozen=True, slots=True)
class HydrogenSystem:
    """0x03 in the 2025 edition (fuel-cell engine and on-board hydrogen system): the voltage, current,
    consumption and probe list of 2016 are gone; remaining hydrogen and the DC/DC controller temperature
    are new. Layout from an open implementation, not the standard's text (docs/protocols/gbt32960.md)."""

    max_h2_temp_mc: Value
    max_h2_temp_probe: int
    max_h2_concentration_ppm: Value
    max_h2_concentration_sensor: int
    max_h2_pressure_kpa: Value
    max_h2_pressure_sensor: int
    dcdc_state: Value
    h2_remaining_pct: Value
    dcdc_controller_temp_mc: Value


HYDROGEN_2025 = Layout(Linear(2, 100, -40_000), RAW8, WORD, RAW8, Linear(2, 100), RAW8, BYTE, BYTE, TEMP_MC)


@dataclass(frozen=True, slots=True)
class Engine:
    crank_rpm: Value
    state: Value | None = None  # 2016 only
    fuel_ml_per_100km: Value | None = None  # 2016 only


@dataclass(frozen=True, slots=True)
class Position:
    """0x05. Coordinates are magnitudes; the hemisphere is in `status` (bit1 south, bit2 west)."""

    status: int  # bit0 1 = no valid fix
    longitude_abs_udeg: Value
    latitude_abs_udeg: Value
    coord_system: Value | None = None  # 2025 only: 1 WGS84, 2 GCJ-02, 3 other

    @property
    def fix_valid(self) -> bool:
        return not self.status & 0x01

    @property
    def latitude_udeg(self) -> Value:
        v = self.latitude_abs_udeg
        return -v if isinstance(v, int) and self.status & 0x02 else v

    @property
    def longitude_udeg(self) -> Value:
        v = self.longitude_abs_udeg
        return -v if isinstance(v, int) and self.status & 0x04 else v


@dataclass(frozen=True, slots=True)
class Extremes:
    """0x06 (2016 only): which cell/probe holds the extreme, and the value."""

    max_v_subsystem: int
    max_v_cell: int
    max_cell_mv: Value
    min_v_subsystem: int
    min_v_cell: int
    min_cell_mv: Value
    max_t_subsystem: int
    max_t_probe: int
    max_temp_mc: Value
    min_t_subsystem: int
    min_t_probe: int
    min_temp_mc: Value


EXTREMES = Layout(RAW8, RAW8, CELL_MV, RAW8, RAW8, CELL_MV, RAW8, RAW8, TEMP_MC, RAW8, RAW8, TEMP_MC)


@dataclass(frozen=True, slots=True)
class Alarms:
    """0x07 (2016) / 0x06 (2025). `max_level` 0..3; general flags bits 0-18 (2016), 19-27 added in 2025."""

    max_level: Value
    general_flags: int
    storage_faults: tuple[int, ...]
    motor_faults: tuple[int, ...]
    engine_faults: tuple[int, ...]
    other_faults: tuple[int, ...]
    general_levels: tuple[tuple[int, int], ...] | None = None  # 2025: (alarm bit no., level)


@dataclass(frozen=True, slots=True)
class CellPack:
    """One pack's cell voltages. In 2016 a pack's cells may span frames: these are cells
    start_index .. start_index + len(cells_mv) - 1 (1-based) of total_cells. 2025 sends all at once."""

    number: int
    voltage_mv: Value
    current_ma: Value
    total_cells: int
    start_index: int
    cells_mv: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class CellVoltages:
    packs: tuple[CellPack, ...]


@dataclass(frozen=True, slots=True)
class ProbePack:
    number: int
    temps_mc: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class ProbeTemperatures:
    packs: tuple[ProbePack, ...]


@dataclass(frozen=True, slots=True)
class FuelCellStack:
    number: int
    voltage_mv: Value
    current_ma: Value
    air_inlet_pressure_pa: Value  # 0.1 kPa, offset -100 kPa
    air_inlet_temp_mc: Value
    probe_temps_mc: tuple[Value, ...]


STACK_HEAD = Layout(RAW8, DECI_MV, Linear(2, 100), Linear(2, 100, -100_000), TEMP_MC)


@dataclass(frozen=True, slots=True)
class FuelCellStacks:
    """0x30 (2025)."""

    stacks: tuple[FuelCellStack, ...]


@dataclass(frozen=True, slots=True)
class SuperCapacitor:
    """0x31 (2025)."""

    system_number: int
    voltage_mv: Value
    current_ma: Value
    cells_mv: tuple[Value, ...]
    probe_temps_mc: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class SuperCapacitorExtremes:
    """0x32 (2025)."""

    max_v_system: int
    max_v_cell: int
    max_cell_mv: Value
    min_v_system: int
    min_v_cell: int
    min_cell_mv: Value
    max_t_system: int
    max_t_probe: int
    max_temp_mc: Value
    min_t_system: int
    min_t_probe: int
    min_temp_mc: Value


SUPERCAP_EXTREMES = Layout(RAW8, RAW16, CELL_MV, RAW8, RAW16, CELL_MV, RAW8, RAW16, TEMP_MC, RAW8, RAW16, TEMP_MC)


@dataclass(frozen=True, slots=True)
class Oem:
    """0x80..0xFE: vendor-defined, skipped by its length and kept opaque."""

    type_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Signature:
    """0xFF (2025): the vehicle's signature over the data unit (algorithm 1 SM2, 2 RSA, 3 ECC)."""

    algorithm: int
    r: bytes
    s: bytes


Block: TypeAlias = (
    Vehicle
    | Motors
    | FuelCell
    | HydrogenSystem
    | Engine
    | Position
    | Extremes
    | Alarms
    | CellVoltages
    | ProbeTemperatures
    | FuelCellStacks
    | SuperCapacitor
    | SuperCapacitorExtremes
    | Oem
)


@dataclass(frozen=True, slots=True)
class RealtimeData:
    """A decoded real-time/reissue data unit. `error` is set when decoding stopped early: `blocks` then
    holds what was decoded before the problem (the gateway refuses such frames; tests compare them)."""

    time: GbTime
    blocks: tuple[Block, ...]
    signature: Signature | None = None
    error: FrameError | None = None

    def first(self, kind: type[_T]) -> _T | None:
        for block in self.blocks:
            if isinstance(block, kind):
                return block
        return None


# ---- decoding ----


def _values(reader: Reader, layout: Layout) -> list[Value]:
    return layout.read(reader)


def _list(reader: Reader, count: int, field: Linear) -> tuple[Value, ...]:
    return field.decode_many(reader.take(count * field.width)) if count else ()


def _vehicle(r: Reader, ed: Edition) -> Vehicle:
    return Vehicle(*_values(r, VEHICLE_2016 if ed == Edition.V2016 else VEHICLE_2025))  # type: ignore[arg-type]


def _motors(r: Reader, ed: Edition) -> Motors:
    layout = MOTOR_2016 if ed == Edition.V2016 else MOTOR_2025
    return Motors(tuple(Motor(*_values(r, layout)) for _ in range(r.u8())))  # type: ignore[arg-type]


def _fuel_cell(r: Reader, ed: Edition) -> FuelCell:
    volts, amps, consumption = _values(r, FUEL_HEAD)
    temps = _list(r, r.u16(), TEMP_MC)
    h2_temp, h2_temp_probe, conc, conc_sensor, pressure, pressure_sensor, dcdc = _values(r, FUEL_TAIL)
    return FuelCell(
        volts, amps, consumption, temps, h2_temp, _int(h2_temp_probe), conc, _int(conc_sensor),
        pressure, _int(pressure_sensor), dcdc,
    )  # fmt: skip


def _hydrogen(r: Reader, ed: Edition) -> HydrogenSystem:
    t, t_probe, conc, conc_sensor, pressure, pressure_sensor, dcdc, remaining, ctrl = _values(r, HYDROGEN_2025)
    return HydrogenSystem(
        t, _int(t_probe), conc, _int(conc_sensor), pressure, _int(pressure_sensor), dcdc, remaining, ctrl
    )


def _engine(r: Reader, ed: Edition) -> Engine:
    if ed == Edition.V2025:
        return Engine(crank_rpm=WORD.decode(r.u16()))
    state, rpm, fuel = _values(r, ENGINE_2016)
    return Engine(crank_rpm=rpm, state=state, fuel_ml_per_100km=fuel)


def _position(r: Reader, ed: Edition) -> Position:
    status = r.u8()
    system = BYTE.decode(r.u8()) if ed == Edition.V2025 else None
    lng, lat = _values(r, COORDS)
    return Position(status, lng, lat, system)


def _extremes(r: Reader, ed: Edition) -> Extremes:
    return Extremes(*_values(r, EXTREMES))  # type: ignore[arg-type]


def _int(value: Value) -> int:
    # fields declared without markers (RAW*) always decode to int
    assert isinstance(value, int)
    return value


def _faults(r: Reader) -> tuple[int, ...]:
    return tuple(_int(v) for v in _list(r, r.u8(), RAW32))


def _alarms(r: Reader, ed: Edition) -> Alarms:
    level = BYTE.decode(r.u8())
    flags = r.uint(4)
    storage, motor, engine, other = (_faults(r) for _ in range(4))
    levels = None
    if ed == Edition.V2025:
        pairs = r.take(2 * r.u8())
        levels = tuple((pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))
    return Alarms(level, flags, storage, motor, engine, other, levels)


def _cell_pack(r: Reader, ed: Edition) -> CellPack:
    number = r.u8()
    current = CURRENT_2016 if ed == Edition.V2016 else CURRENT_2025
    volts, amps = DECI_MV.decode(r.u16()), current.decode(r.u16())
    if ed == Edition.V2016:
        total, start = r.u16(), r.u16()
        cells = _list(r, r.u8(), CELL_MV)
        return CellPack(number, volts, amps, total, start, cells)
    cells = _list(r, r.u16(), CELL_MV)
    return CellPack(number, volts, amps, len(cells), 1, cells)


def _cells(r: Reader, ed: Edition) -> CellVoltages:
    return CellVoltages(tuple(_cell_pack(r, ed) for _ in range(r.u8())))


def _probes(r: Reader, ed: Edition) -> ProbeTemperatures:
    packs = []
    for _ in range(r.u8()):
        number = r.u8()
        packs.append(ProbePack(number, _list(r, r.u16(), TEMP_MC)))
    return ProbeTemperatures(tuple(packs))


def _stacks(r: Reader, ed: Edition) -> FuelCellStacks:
    stacks = []
    for _ in range(r.u8()):
        number, volts, amps, pressure, temp = _values(r, STACK_HEAD)
        stacks.append(FuelCellStack(_int(number), volts, amps, pressure, temp, _list(r, r.u16(), TEMP_MC)))
    return FuelCellStacks(tuple(stacks))


def _supercap(r: Reader, ed: Edition) -> SuperCapacitor:
    number, volts, amps = _values(r, SUPERCAP_HEAD)
    cells = _list(r, r.u16(), CELL_MV)
    return SuperCapacitor(number, volts, amps, cells, _list(r, r.u16(), TEMP_MC))  # type: ignore[arg-type]


def _supercap_extremes(r: Reader, ed: Edition) -> SuperCapacitorExtremes:
    return SuperCapacitorExtremes(*_values(r, SUPERCAP_EXTREMES))  # type: ignore[arg-type]


DECODERS_2016: dict[int, Callable[[Reader, Edition], Block]] = {
    0x01: _vehicle,
    0x02: _motors,
    0x03: _fuel_cell,
    0x04: _engine,
    0x05: _position,
    0x06: _extremes,
    0x07: _alarms,
    0x08: _cells,
    0x09: _probes,
}
DECODERS_2025: dict[int, Callable[[Reader, Edition], Block]] = {
    0x01: _vehicle,
    0x02: _motors,
    0x03: _hydrogen,
    0x04: _engine,
    0x05: _position,
    0x06: _alarms,
    0x07: _cells,
    0x08: _probes,
    0x30: _stacks,
    0x31: _supercap,
    0x32: _supercap_extremes,
}


def decode_realtime(data: bytes, edition: Edition) -> RealtimeData | FrameError:
    """Decodes a real-time/reissue data unit. A data unit shorter than its time is a FrameError; a problem
    inside the blocks gives a RealtimeData with `error` set and the blocks decoded before it."""
    reader = Reader(data)
    try:
        time = GbTime.read(reader)
    except Short as short:
        return FrameError(Reason.TRUNCATED, f"real-time data unit without its time: {short}", 0)
    decoders = DECODERS_2016 if edition == Edition.V2016 else DECODERS_2025
    blocks: list[Block] = []
    signature = None
    while reader.left():
        at = reader.pos
        type_id = reader.u8()
        try:
            if 0x80 <= type_id <= 0xFE:
                blocks.append(Oem(type_id, reader.take(reader.u16())))
            elif type_id == 0xFF and edition == Edition.V2025:
                signature = _signature(reader)
                if reader.left():
                    return _stop(time, blocks, Reason.TRAILING_BYTES, "bytes after the signature", reader.pos)
            elif type_id in decoders:
                blocks.append(decoders[type_id](reader, edition))
            else:
                return _stop(time, blocks, Reason.UNKNOWN_INFO_TYPE, f"unknown information type 0x{type_id:02X}", at)
        except Short as short:
            return _stop(time, blocks, Reason.TRUNCATED, f"information type 0x{type_id:02X}: {short}", at)
    return RealtimeData(time, tuple(blocks), signature)


def _signature(reader: Reader) -> Signature:
    algorithm = reader.u8()
    r = reader.take(reader.u16())
    return Signature(algorithm, r, reader.take(reader.u16()))


def _stop(time: GbTime, blocks: list[Block], reason: Reason, message: str, offset: int) -> RealtimeData:
    return RealtimeData(time, tuple(blocks), None, FrameError(reason, message, offset))


# ---- encoding (platform tests and terminal simulators) ----


def _pack(values: list[object], layout: Layout) -> bytes:
    return layout.pack(values)


def _pack_list(values: tuple[Value, ...], field: Linear, count_width: int) -> bytes:
    return len(values).to_bytes(count_width, "big") + b"".join(
        field.encode(v).to_bytes(field.width, "big") for v in values
    )


def _slots(block: object) -> list[object]:
    return [getattr(block, f.name) for f in fields(block) if getattr(block, f.name) is not None]  # type: ignore[arg-type]


TYPE_IDS: dict[Edition, dict[type, int]] = {
    Edition.V2016: {
        Vehicle: 0x01, Motors: 0x02, FuelCell: 0x03, Engine: 0x04, Position: 0x05,
        Extremes: 0x06, Alarms: 0x07, CellVoltages: 0x08, ProbeTemperatures: 0x09,
    },
    Edition.V2025: {
        Vehicle: 0x01, Motors: 0x02, HydrogenSystem: 0x03, Engine: 0x04, Position: 0x05, Alarms: 0x06,
        CellVoltages: 0x07, ProbeTemperatures: 0x08, FuelCellStacks: 0x30, SuperCapacitor: 0x31,
        SuperCapacitorExtremes: 0x32,
    },
}  # fmt: skip


def encode_block(block: Block, edition: Edition) -> bytes:
    """Type id + body of one block, for `edition` (ValueError if that edition has no such block)."""
    if isinstance(block, Oem):
        return bytes((block.type_id,)) + len(block.body).to_bytes(2, "big") + block.body
    type_id = TYPE_IDS[edition].get(type(block))
    if type_id is None:
        raise ValueError(f"{type(block).__name__} does not exist in the {edition.value} edition")
    return bytes((type_id,)) + _encode_body(block, edition)


def _encode_body(block: Block, ed: Edition) -> bytes:
    v16 = ed == Edition.V2016
    match block:
        case Vehicle():
            return _pack(_slots(block), VEHICLE_2016 if v16 else VEHICLE_2025)
        case Motors():
            layout = MOTOR_2016 if v16 else MOTOR_2025
            return bytes((len(block.motors),)) + b"".join(_pack(_slots(m), layout) for m in block.motors)
        case FuelCell():
            b = block
            head = _pack([b.voltage_mv, b.current_ma, b.consumption_g_per_100km], FUEL_HEAD)
            tail = _slots(b)[4:]
            return head + _pack_list(b.probe_temps_mc, TEMP_MC, 2) + _pack(tail, FUEL_TAIL)
        case HydrogenSystem():
            return _pack(_slots(block), HYDROGEN_2025)
        case Engine():
            if not v16:
                return _pack([block.crank_rpm], Layout(WORD))
            return _pack([block.state, block.crank_rpm, block.fuel_ml_per_100km], ENGINE_2016)
        case Position():
            system = b"" if v16 else bytes((BYTE.encode(block.coord_system or Marker.INVALID),))
            coords = _pack([block.longitude_abs_udeg, block.latitude_abs_udeg], COORDS)
            return bytes((block.status,)) + system + coords
        case Extremes():
            return _pack(_slots(block), EXTREMES)
        case Alarms():
            return _encode_alarms(block, ed)
        case CellVoltages():
            return bytes((len(block.packs),)) + b"".join(_encode_cell_pack(p, ed) for p in block.packs)
        case ProbeTemperatures():
            packs = (bytes((p.number,)) + _pack_list(p.temps_mc, TEMP_MC, 2) for p in block.packs)
            return bytes((len(block.packs),)) + b"".join(packs)
        case FuelCellStacks():
            stacks = (_pack(_slots(s)[:5], STACK_HEAD) + _pack_list(s.probe_temps_mc, TEMP_MC, 2) for s in block.stacks)
            return bytes((len(block.stacks),)) + b"".join(stacks)
        case SuperCapacitor():
            head = _pack([block.system_number, block.voltage_mv, block.current_ma], SUPERCAP_HEAD)
            return head + _pack_list(block.cells_mv, CELL_MV, 2) + _pack_list(block.probe_temps_mc, TEMP_MC, 2)
        case SuperCapacitorExtremes():
            return _pack(_slots(block), SUPERCAP_EXTREMES)
    raise ValueError(f"cannot encode {block!r}")


def _encode_alarms(block: Alarms, ed: Edition) -> bytes:
    out = bytearray(_pack([block.max_level, block.general_flags], ALARM_HEAD))
    for faults in (block.storage_faults, block.motor_faults, block.engine_faults, block.other_faults):
        out += _pack_list(faults, RAW32, 1)
    if ed == Edition.V2025:
        levels = block.general_levels or ()
        out += bytes((len(levels),)) + b"".join(bytes(pair) for pair in levels)
    return bytes(out)


def _encode_cell_pack(pack: CellPack, ed: Edition) -> bytes:
    current = CURRENT_2016 if ed == Edition.V2016 else CURRENT_2025
    head = bytes((pack.number,)) + _pack([pack.voltage_mv, pack.current_ma], Layout(DECI_MV, current))
    if ed == Edition.V2016:
        index = pack.total_cells.to_bytes(2, "big") + pack.start_index.to_bytes(2, "big")
        return head + index + _pack_list(pack.cells_mv, CELL_MV, 1)
    return head + _pack_list(pack.cells_mv, CELL_MV, 2)


def encode_realtime(time: GbTime, blocks: list[Block], edition: Edition, signature: Signature | None = None) -> bytes:
    out = time.encode() + b"".join(encode_block(b, edition) for b in blocks)
    if signature is not None:
        sig = signature
        out += bytes((0xFF, sig.algorithm)) + len(sig.r).to_bytes(2, "big") + sig.r
        out += len(sig.s).to_bytes(2, "big") + sig.s
    return out
