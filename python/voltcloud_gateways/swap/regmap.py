"""Sans-IO Modbus register maps of battery racks (format in docs/protocols/modbus.md).

`load_map` / `parse_map` turn a per-vendor TOML or JSON file into a validated `RegisterMap` (or a MapError
naming the offending key); `RegisterMap.read_plan()` says which register blocks to read; `decode_rack` turns
the registers read into one `SlotReading` (or `SlotError`) per slot; `RackTracker` turns successive readings
into station messages (`pack_report`, `alarm`, `inspection`, `telemetry` bodies in the swap-station MQTT
format), which `voltcloud_gateways.swap.codec` maps to uplink messages, so there is one mapping only.
No sockets here.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltcloud_gateways.swap.codec import DEFECTS, LEVELS, PACK_STATES

MAX_READ = 125  # registers per Modbus read (FC 3/4)
WIDTHS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "bits16": 1, "bits32": 2}
# target field -> (lo, hi) of the decoded value in the field's unit; None: not range-checked here
TARGETS: dict[str, tuple[int, int] | None] = {
    "pack_id": None,
    "soc_permille": (0, 1000),
    "soh_permille": (0, 1000),
    "temperature_milli_c": (-100_000, 200_000),
    "voltage_mv": (0, 2_000_000),
    "current_ma": (-2_000_000, 2_000_000),
    "power_w": (-(10**7), 10**7),
    "cycle_count": (0, 1_000_000),
    "state": None,
    "faults": None,
}
REQUIRED = ("pack_id", "soc_permille")
TELEMETRY = ("soc_permille", "soh_permille", "temperature_milli_c", "voltage_mv", "current_ma", "power_w")
MAP_KEYS = {"vendor", "model", "function", "word_order", "byte_order", "slot_count", "slot_base", "slot_stride"}
MAP_KEYS |= {"max_read", "fields", "faults"}
FIELD_KEYS = {"offset", "type", "count", "scale", "add", "invalid", "enum"}
FAULT_KEYS = {"bit", "code", "level", "defect", "message"}


class MapError(Exception):
    """A register map that cannot be used; `key` names the offending entry."""

    def __init__(self, key: str, description: str) -> None:
        super().__init__(f"{key}: {description}")
        self.key = key
        self.description = description


@dataclass(frozen=True)
class FieldSpec:
    name: str
    offset: int  # registers from the slot's first register
    type: str  # ascii | u16 | i16 | u32 | i32 | bits16 | bits32
    count: int  # registers
    scale: float = 1.0
    add: float = 0.0
    invalid: frozenset[int] = frozenset()  # raw values meaning "not available"
    enum: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultSpec:
    bit: int
    code: str
    level: str = "warning"
    defect: str = ""  # a DEFECTS name: the fault is also an inspection defect (the pack is quarantined)
    message: str = ""


@dataclass(frozen=True)
class RegisterMap:
    vendor: str
    function: str  # holding | input
    word_order: str  # big: high word first; little: low word first
    byte_order: str  # big: high byte first within a register; little: swapped
    slot_count: int
    slot_base: int
    slot_stride: int
    max_read: int
    fields: dict[str, FieldSpec]
    faults: tuple[FaultSpec, ...] = ()
    model: str = ""

    def read_plan(self) -> list[tuple[int, int]]:
        """(address, count) blocks covering every slot, whole slots per block, each at most max_read."""
        per_block = max(1, self.max_read // self.slot_stride)
        plan = []
        for first in range(0, self.slot_count, per_block):
            slots = min(per_block, self.slot_count - first)
            plan.append((self.slot_base + first * self.slot_stride, slots * self.slot_stride))
        return plan


def _int(data: dict[str, Any], key: str, where: str, lo: int, hi: int, default: int | None = None) -> int:
    value = data.get(key, default)
    if value is None:
        raise MapError(f"{where}{key}", "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise MapError(f"{where}{key}", "must be an integer")
    if not lo <= value <= hi:
        raise MapError(f"{where}{key}", f"must be {lo}..{hi}, got {value}")
    return value


def _choice(data: dict[str, Any], key: str, where: str, options: set[str] | dict[str, Any], default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or value not in options:
        raise MapError(f"{where}{key}", f"must be one of {sorted(options)}")
    return value


def _number(data: dict[str, Any], key: str, where: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MapError(f"{where}{key}", "must be a finite number")
    if abs(value) > 1e9:
        raise MapError(f"{where}{key}", "out of range")
    return float(value)


def _unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(str(k) for k in data if k not in allowed)
    if extra:
        raise MapError(f"{where}{extra[0]}", "unknown key")


def _field(name: str, data: Any, stride: int) -> FieldSpec:
    where = f"fields.{name}."
    if not isinstance(data, dict):
        raise MapError(f"fields.{name}", "must be a table")
    _unknown(data, FIELD_KEYS, where)
    default_type = "ascii" if name == "pack_id" else "bits16" if name == "faults" else "u16"
    kind = _choice(data, "type", where, {"ascii", *WIDTHS}, default_type)
    if (name == "pack_id") != (kind == "ascii"):
        raise MapError(f"{where}type", "pack_id is ascii, and only pack_id is")
    if (name == "faults") != kind.startswith("bits"):
        raise MapError(f"{where}type", "faults is bits16/bits32, and only faults is")
    count = _int(data, "count", where, 1, 32, default=WIDTHS.get(kind, 8)) if kind == "ascii" else WIDTHS[kind]
    if kind != "ascii" and "count" in data and data["count"] != count:
        raise MapError(f"{where}count", f"{kind} is {count} register(s)")
    offset = _int(data, "offset", where, 0, stride - count)
    scale = _number(data, "scale", where, 1.0)
    if scale == 0:
        raise MapError(f"{where}scale", "must not be 0")
    invalid = data.get("invalid", [])
    if not isinstance(invalid, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in invalid):
        raise MapError(f"{where}invalid", "must be a list of raw integers")
    enum_raw = data.get("enum", {})
    if not isinstance(enum_raw, dict) or (enum_raw and name != "state"):
        raise MapError(f"{where}enum", "only state has an enum table {raw value = state name}")
    enum: dict[int, str] = {}
    for raw, state in enum_raw.items():
        try:
            number = int(raw)
        except ValueError:
            raise MapError(f"{where}enum.{raw}", "keys are raw integer values") from None
        if state not in PACK_STATES and state != "":
            raise MapError(f"{where}enum.{raw}", f"must be one of {sorted(PACK_STATES)} or empty")
        enum[number] = str(state)
    return FieldSpec(
        name, offset, kind, count, scale, _number(data, "add", where, 0.0), frozenset(int(v) for v in invalid), enum
    )


def _fault(i: int, data: Any, width_bits: int) -> FaultSpec:
    where = f"faults[{i}]."
    if not isinstance(data, dict):
        raise MapError(f"faults[{i}]", "must be a table")
    _unknown(data, FAULT_KEYS, where)
    code = data.get("code")
    if not isinstance(code, str) or not code or len(code) > 64:
        raise MapError(f"{where}code", "must be a string of 1..64 characters")
    message = data.get("message", "")
    if not isinstance(message, str) or len(message) > 200:
        raise MapError(f"{where}message", "must be a string of at most 200 characters")
    defect = data.get("defect", "")
    if defect != "" and (not isinstance(defect, str) or defect not in DEFECTS or defect == "none"):
        raise MapError(f"{where}defect", f"must be one of {sorted(set(DEFECTS) - {'none'})}")
    return FaultSpec(
        _int(data, "bit", where, 0, width_bits - 1),
        code,
        _choice(data, "level", where, LEVELS, "warning"),
        str(defect),
        message,
    )


def parse_map(data: Any) -> RegisterMap:
    """Validates a decoded map document; raises MapError naming the first offending key."""
    if not isinstance(data, dict):
        raise MapError("map", "must be a table/object")
    _unknown(data, MAP_KEYS, "")
    vendor = data.get("vendor")
    if not isinstance(vendor, str) or not vendor or len(vendor) > 64:
        raise MapError("vendor", "must be a string of 1..64 characters")
    model = data.get("model", "")
    if not isinstance(model, str) or len(model) > 64:
        raise MapError("model", "must be a string of at most 64 characters")
    stride = _int(data, "slot_stride", "", 1, MAX_READ)
    count = _int(data, "slot_count", "", 1, 1024)
    base = _int(data, "slot_base", "", 0, 65535)
    if base + count * stride > 65536:
        raise MapError("slot_count", "slots run past register 65535")
    max_read = _int(data, "max_read", "", stride, MAX_READ, default=MAX_READ)
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict):
        raise MapError("fields", "must be a table of field name -> {offset, type, ...}")
    for name in raw_fields:
        if name not in TARGETS:
            raise MapError(f"fields.{name}", f"unknown field; known: {sorted(TARGETS)}")
    for name in REQUIRED:
        if name not in raw_fields:
            raise MapError(f"fields.{name}", "is required")
    fields = {name: _field(name, spec, stride) for name, spec in raw_fields.items()}
    used: dict[int, str] = {}
    for spec in fields.values():
        for reg in range(spec.offset, spec.offset + spec.count):
            if reg in used:
                raise MapError(f"fields.{spec.name}.offset", f"overlaps fields.{used[reg]}")
            used[reg] = spec.name
    raw_faults = data.get("faults", [])
    if not isinstance(raw_faults, list):
        raise MapError("faults", "must be a list of tables")
    if raw_faults and "faults" not in fields:
        raise MapError("faults", "needs fields.faults (the fault bit register)")
    width = 16 * fields["faults"].count if "faults" in fields else 0
    faults = tuple(_fault(i, f, width) for i, f in enumerate(raw_faults))
    bits = [f.bit for f in faults]
    if len(set(bits)) != len(bits):
        raise MapError("faults", "a bit is listed twice")
    return RegisterMap(
        vendor=vendor,
        model=model,
        function=_choice(data, "function", "", {"holding", "input"}, "holding"),
        word_order=_choice(data, "word_order", "", {"big", "little"}, "big"),
        byte_order=_choice(data, "byte_order", "", {"big", "little"}, "big"),
        slot_count=count,
        slot_base=base,
        slot_stride=stride,
        max_read=max_read,
        fields=fields,
        faults=faults,
    )


def load_map(path: Path | str) -> RegisterMap:
    """Reads a .toml or .json register map."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise MapError("map", f"{path.name}: {error}") from None
    return parse_map(data)


MAPS_DIR = Path(__file__).parent / "maps"


def bundled_map(name: str) -> RegisterMap:
    """One of the maps shipped in swap/maps/ by file stem (e.g. "acme_br16")."""
    for suffix in (".toml", ".json"):
        candidate = MAPS_DIR / f"{name}{suffix}"
        if candidate.is_file():
            return load_map(candidate)
    raise MapError("map", f"no bundled register map {name!r}")


# ---- decoding ----


@dataclass(frozen=True)
class SlotReading:
    slot: int  # 1-based
    pack_id: str  # empty: the slot is empty
    values: dict[str, int]  # decoded targets (absent: not in the map or marked invalid by the rack)
    state: str = ""
    faults: int = 0  # raw fault bits


@dataclass(frozen=True)
class SlotError:
    slot: int
    field: str
    description: str


def _word(reg: int, byte_order: str) -> int:
    reg &= 0xFFFF
    return ((reg & 0xFF) << 8 | reg >> 8) if byte_order == "little" else reg


def _raw(spec: FieldSpec, regs: list[int], m: RegisterMap) -> int:
    words = [_word(r, m.byte_order) for r in regs]
    if m.word_order == "little":
        words.reverse()
    value = 0
    for w in words:
        value = value << 16 | w
    if spec.type in ("i16", "i32"):
        bits = 16 * spec.count
        if value >= 1 << (bits - 1):
            value -= 1 << bits
    return value


def _ascii(regs: list[int], m: RegisterMap) -> str:
    data = b"".join(_word(r, m.byte_order).to_bytes(2, "big") for r in regs)
    data = data.split(b"\x00", 1)[0].strip(b" ")
    if not all(0x21 <= b <= 0x7E for b in data):
        raise ValueError("pack id is not printable ASCII")
    return data.decode("ascii")


def decode_slot(m: RegisterMap, slot: int, regs: list[int]) -> SlotReading | SlotError:
    """Decodes one slot's `slot_stride` registers."""
    if len(regs) != m.slot_stride:
        return SlotError(slot, "registers", f"{len(regs)} registers, the map says {m.slot_stride}")
    pack = m.fields["pack_id"]
    try:
        pack_id = _ascii(regs[pack.offset : pack.offset + pack.count], m)
    except ValueError as error:
        return SlotError(slot, "pack_id", str(error))
    if not pack_id:
        return SlotReading(slot, "", {})
    if len(pack_id) > 64:
        return SlotError(slot, "pack_id", "longer than 64 characters")
    values: dict[str, int] = {}
    state, faults = "", 0
    for name, spec in m.fields.items():
        if name == "pack_id":
            continue
        raw = _raw(spec, regs[spec.offset : spec.offset + spec.count], m)
        if raw in spec.invalid:
            continue
        if name == "faults":
            faults = raw
            continue
        if name == "state":
            state = spec.enum.get(raw, "")
            continue
        value = round(raw * spec.scale + spec.add)
        bounds = TARGETS[name]
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            return SlotError(slot, name, f"{value} (raw {raw}) outside {bounds[0]}..{bounds[1]}")
        values[name] = value
    if "soc_permille" not in values:
        return SlotError(slot, "soc_permille", "marked invalid by the rack")
    return SlotReading(slot, pack_id, values, state, faults)


def decode_rack(m: RegisterMap, blocks: list[list[int]]) -> list[SlotReading | SlotError]:
    """Decodes the registers of `m.read_plan()`'s blocks (in plan order) into one result per slot."""
    plan = m.read_plan()
    if len(blocks) != len(plan):
        raise ValueError(f"{len(blocks)} register blocks for a plan of {len(plan)}")
    out: list[SlotReading | SlotError] = []
    for (address, count), regs in zip(plan, blocks, strict=True):
        if len(regs) != count:
            first = (address - m.slot_base) // m.slot_stride + 1
            for slot in range(first, first + count // m.slot_stride):
                out.append(SlotError(slot, "registers", f"read {len(regs)} registers of {count}"))
            continue
        for i in range(0, count, m.slot_stride):
            slot = (address - m.slot_base + i) // m.slot_stride + 1
            out.append(decode_slot(m, slot, regs[i : i + m.slot_stride]))
    return out


# ---- readings -> station messages ----


@dataclass
class Messages:
    """Station messages in the swap-station MQTT body format: events as (kind, body), one telemetry body."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    telemetry: dict[str, Any] | None = None


class RackTracker:
    """Turns successive rack readings into messages: a pack_report when a slot's pack or values change (and at
    least every `refresh_s`), an alarm on each fault bit's rising edge (a cleared alarm on its falling edge),
    an inspection defect for faults that map to one, a warning alarm while a slot reads out of range, and a
    telemetry batch of every occupied slot per poll. Sans-IO: the caller passes the time."""

    def __init__(self, m: RegisterMap, rack: str, *, refresh_s: float = 300.0) -> None:
        self.map = m
        self.rack = rack
        self.refresh_s = refresh_s
        self._reported: dict[int, tuple[str, dict[str, int], str, float]] = {}
        self._faults: dict[int, tuple[str, int]] = {}  # slot -> (pack id, active bits)
        self._bad: dict[int, str] = {}  # slot -> field that read out of range

    def reset(self) -> None:
        """Forget what was sent (after the messages could not be delivered): the next poll resends."""
        self._reported.clear()
        self._faults.clear()
        self._bad.clear()

    def observe(self, readings: list[SlotReading | SlotError], now_s: float) -> Messages:
        out = Messages()
        sources: list[dict[str, str]] = []
        readings_out: list[list[Any]] = []
        for r in readings:
            resource = f"slot:{r.slot}"
            if isinstance(r, SlotError):
                if self._bad.get(r.slot) != r.field:
                    self._bad[r.slot] = r.field
                    out.events.append(("alarm", self._alarm(resource, "", "bms_invalid_data", "warning", r)))
                continue
            if r.slot in self._bad:
                del self._bad[r.slot]
                out.events.append(
                    (
                        "alarm",
                        {"resource_id": resource, "code": "bms_invalid_data", "level": "warning", "cleared": True},
                    )
                )
            self._fault_edges(r, out)
            if not r.pack_id:
                self._reported.pop(r.slot, None)
                continue
            last = self._reported.get(r.slot)
            if last is None or last[:3] != (r.pack_id, r.values, r.state) or now_s - last[3] >= self.refresh_s:
                self._reported[r.slot] = (r.pack_id, r.values, r.state, now_s)
                body: dict[str, Any] = {"pack_id": r.pack_id, "slot": r.slot, **r.values}
                body.pop("voltage_mv", None)
                body.pop("current_ma", None)
                if r.state:
                    body["state"] = r.state
                out.events.append(("pack_report", body))
            index = len(sources)
            sources.append({"resource_id": resource, "pack_id": r.pack_id})
            readings_out.extend([index, name, 0, r.values[name]] for name in TELEMETRY if name in r.values)
        if readings_out:
            out.telemetry = {"sources": sources, "readings": readings_out}
        return out

    def _alarm(self, resource: str, pack_id: str, code: str, level: str, error: SlotError) -> dict[str, Any]:
        return {
            "resource_id": resource,
            "pack_id": pack_id,
            "code": code,
            "level": level,
            "message": f"{self.rack} slot {error.slot}: {error.field}: {error.description}"[:1000],
        }

    def _fault_edges(self, r: SlotReading, out: Messages) -> None:
        resource = f"slot:{r.slot}"
        old_pack, old_bits = self._faults.get(r.slot, ("", 0))
        if old_pack != r.pack_id:  # a different pack (or none): the old pack's faults leave with it
            for spec in self.map.faults:
                if old_bits >> spec.bit & 1:
                    out.events.append(
                        (
                            "alarm",
                            {"resource_id": resource, "pack_id": old_pack, "code": spec.code, "cleared": True},
                        )
                    )
            old_bits = 0
        bits = r.faults if r.pack_id else 0
        for spec in self.map.faults:
            was, now = old_bits >> spec.bit & 1, bits >> spec.bit & 1
            if now and not was:
                message = spec.message or f"{self.map.vendor} fault bit {spec.bit} ({spec.code})"
                out.events.append(
                    (
                        "alarm",
                        {
                            "resource_id": resource,
                            "pack_id": r.pack_id,
                            "code": spec.code,
                            "level": spec.level,
                            "message": f"{self.rack} slot {r.slot}: {message}",
                        },
                    )
                )
                if spec.defect:
                    out.events.append(
                        (
                            "inspection",
                            {
                                "pack_id": r.pack_id,
                                "defect": spec.defect,
                                "level": spec.level,
                                "notes": f"BMS fault {spec.code} reported by {self.rack} slot {r.slot}",
                            },
                        )
                    )
            elif was and not now:
                out.events.append(
                    ("alarm", {"resource_id": resource, "pack_id": r.pack_id, "code": spec.code, "cleared": True})
                )
        if r.pack_id:
            self._faults[r.slot] = (r.pack_id, bits)
        else:
            self._faults.pop(r.slot, None)
