"""Primitive fields of GB/T 32960.3: big-endian integers, the invalid/abnormal markers, Beijing time.

A field of all 0xFF at its own width means "invalid" and 0xFF..FE "abnormal"; both are kept as `Marker`
values so no caller can mistake them for measurements (0xFFFF km/h is not a speed).
"""

from __future__ import annotations

import datetime as dt
import enum
import struct
from dataclasses import dataclass, field
from typing import Final, TypeAlias

BEIJING: Final = dt.timezone(dt.timedelta(hours=8), "CST")


class Marker(enum.Enum):
    """A field that carries no value: the terminal said so (INVALID = 0xFF.., ABNORMAL = 0xFF..FE)."""

    INVALID = "invalid"
    ABNORMAL = "abnormal"


Value: TypeAlias = int | Marker


class Short(Exception):
    """Internal: the data unit ended inside a field. Caught by the decoders, never escapes the codec."""


class Reader:
    """Bounds-checked big-endian reads over a data unit."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise Short(f"needs {n} bytes at offset {self.pos}, {self.end - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def u8(self) -> int:
        if self.pos >= self.end:
            raise Short(f"needs 1 byte at offset {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return self.uint(2)

    def left(self) -> int:
        return self.end - self.pos


def marker_of(raw: int, width: int) -> Marker | None:
    top = (1 << (8 * width)) - 1
    if raw == top:
        return Marker.INVALID
    if raw == top - 1:
        return Marker.ABNORMAL
    return None


def raw_of(value: Value, width: int) -> int:
    """Inverse of `marker_of` for encoders: a Marker back to its all-0xFF / 0xFF..FE bytes."""
    top = (1 << (8 * width)) - 1
    if value is Marker.INVALID:
        return top
    if value is Marker.ABNORMAL:
        return top - 1
    assert isinstance(value, int)
    return value


_FORMATS: Final = {1: "B", 2: "H", 4: "I"}


@dataclass(frozen=True, slots=True)
class Linear:
    """A numeric field: value = raw * scale + offset in the platform's integer unit, or a Marker."""

    width: int
    scale: int = 1
    offset: int = 0
    markers: bool = True
    abnormal: int = field(init=False, repr=False, compare=False)  # raw values >= this are markers
    table: tuple[Value, ...] = field(init=False, repr=False, compare=False)  # 1-byte fields: raw -> value

    def __post_init__(self) -> None:
        top = (1 << (8 * self.width)) - 1
        object.__setattr__(self, "abnormal", top - 1 if self.markers else top + 1)
        table = tuple(self.decode(raw) for raw in range(256)) if self.width == 1 else ()
        object.__setattr__(self, "table", table)

    def decode(self, raw: int) -> Value:
        if raw >= self.abnormal:
            return Marker.ABNORMAL if raw == self.abnormal else Marker.INVALID
        return raw * self.scale + self.offset

    def decode_many(self, raw: bytes) -> tuple[Value, ...]:
        """A run of these fields (cell voltages, probe temperatures): the hot path, one struct call."""
        if self.width == 1:
            return tuple(map(self.table.__getitem__, raw))
        values = struct.unpack(f">{len(raw) // self.width}{_FORMATS[self.width]}", raw)
        if values and max(values) >= self.abnormal:
            return tuple(map(self.decode, values))
        if self.scale == 1 and self.offset == 0:
            return values
        return tuple(v * self.scale + self.offset for v in values)

    def encode(self, value: Value) -> int:
        if isinstance(value, Marker):
            return raw_of(value, self.width)
        raw, rest = divmod(value - self.offset, self.scale)
        if rest or not 0 <= raw < (1 << (8 * self.width)):
            raise ValueError(f"{value} does not fit this field")
        return raw


class Layout:
    """A fixed run of fields, unpacked with one precompiled struct."""

    __slots__ = ("fields", "struct")

    def __init__(self, *fields: Linear) -> None:
        self.fields = fields
        self.struct = struct.Struct(">" + "".join(_FORMATS[f.width] for f in fields))

    def read(self, reader: Reader) -> list[Value]:
        raw = self.struct.unpack(reader.take(self.struct.size))
        # Linear.decode inlined for the common (non-marker) case: this is the decoder's hottest loop
        pairs = zip(self.fields, raw, strict=True)  # same length by construction of the struct
        return [v * f.scale + f.offset if v < f.abnormal else f.decode(v) for f, v in pairs]

    def pack(self, values: list[object]) -> bytes:
        return self.struct.pack(*(f.encode(v) for f, v in zip(self.fields, values, strict=True)))  # type: ignore[arg-type]


BYTE = Linear(1)
WORD = Linear(2)
DWORD = Linear(4)
RAW8 = Linear(1, markers=False)
RAW16 = Linear(2, markers=False)
TEMP_MC = Linear(1, 1000, -40_000)  # 1 °C steps, offset -40 °C -> milli-°C
DECI_MV = Linear(2, 100)  # 0.1 V -> mV
CELL_MV = Linear(2)  # 0.001 V -> mV


@dataclass(frozen=True, slots=True)
class GbTime:
    """The 6-byte time of a data unit, as sent (Beijing time, UTC+8). Kept raw: terminals send impossible
    times (hour 55 is in the conformance set); `utc()` is None for those."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int

    def utc(self) -> dt.datetime | None:
        try:
            local = dt.datetime(
                2000 + self.year, self.month, self.day, self.hour, self.minute, self.second, tzinfo=BEIJING
            )
        except ValueError:
            return None
        return local.astimezone(dt.UTC)

    def encode(self) -> bytes:
        return bytes((self.year, self.month, self.day, self.hour, self.minute, self.second))

    @classmethod
    def read(cls, reader: Reader) -> GbTime:
        b = reader.take(6)
        return cls(b[0], b[1], b[2], b[3], b[4], b[5])

    @classmethod
    def from_utc(cls, moment: dt.datetime) -> GbTime:
        local = moment.astimezone(BEIJING)
        return cls(local.year - 2000, local.month, local.day, local.hour, local.minute, local.second)

    def __str__(self) -> str:
        return (
            f"{2000 + self.year:04d}-{self.month:02d}-{self.day:02d} "
            f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        )
