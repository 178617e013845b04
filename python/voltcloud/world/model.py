"""The generated world: column-oriented tables (numpy arrays) plus small Python lists for tenants.

Row i of every array in a table describes the same entity. Index columns (``*_idx``) point into another
table of the same world; ``-1`` means "none" where the column is signed. Numeric handles are ``i + 1``
and match the number in the string id (``stations.id[i] == f"st-{stations.handle[i]:06d}"``).
All arrays are read-only; copy before mutating.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

# Re-exported: the world's tables carry these numbers.
from voltcloud.platform.enums import ConnectorStandard as ConnectorStandard
from voltcloud.platform.enums import ConnectorStatus as ConnectorStatus
from voltcloud.platform.enums import PackState as PackState
from voltcloud.platform.enums import StationKind as StationKind
from voltcloud.platform.enums import UnitKind as UnitKind
from voltcloud.platform.enums import UnitStatus as UnitStatus

# ---- Enums (numbers from the proto via voltcloud.platform.enums; PackType's are the seeded pack_type rows) ---


class PackType(IntEnum):
    STD_75KWH = 1
    LONG_RANGE_100KWH = 2
    ULTRA_150KWH = 3


PACK_CAPACITY_WH: dict[int, int] = {1: 75_000, 2: 100_000, 3: 150_000}


class Skill(IntFlag):
    CHARGER_REPAIR = 1
    SWAP_ROBOT = 2
    BATTERY = 4
    HV_ELECTRICAL = 8


class RoadClass(IntEnum):
    MOTORWAY = 0
    ARTERIAL = 1
    URBAN = 2
    LOCAL = 3


# ---- Tables -------------------------------------------------------------------------------------------

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
U16 = npt.NDArray[np.uint16]
U8 = npt.NDArray[np.uint8]


class Operator(NamedTuple):
    id: str
    name: str


class Fleet(NamedTuple):
    """A fleet tenant (operator-independent). Sub-fleets have ``parent_idx`` >= 0 (index into fleets)."""

    id: str
    name: str
    parent_idx: int


class _Table:
    """Mixin: length of a table = length of its first array column."""

    def __len__(self) -> int:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                return int(v.shape[0])
        return 0


@dataclass(frozen=True, eq=False)
class Cities(_Table):
    name: list[str]
    lat: F64
    lng: F64
    radius_m: F64
    weight: F64  # population share, sums to 1


@dataclass(frozen=True, eq=False)
class RoadClasses:
    name: list[str]  # index = RoadClass
    speed_kmh: F32  # shape (4, 96): 15-minute slots from local midnight


@dataclass(frozen=True, eq=False)
class Stations(_Table):
    id: list[str]  # "st-000001"
    handle: U64
    name: list[str]
    operator_idx: U32
    kind: U8  # StationKind
    lat: F64
    lng: F64
    city_idx: U32
    lanes: U16  # swap lanes (0 for charging stations)
    slots: U16  # pack slots (0 for charging stations)
    swap_time_s: U32  # one swap, robot time (0 for charging stations)
    power_cap_w: I64  # grid connection cap
    queue: U16  # vehicles waiting now
    charger_count: U16  # chargers (0 for swap stations)


@dataclass(frozen=True, eq=False)
class Packs(_Table):
    id: list[str]  # "pk-0000001"
    handle: U64
    station_idx: I64  # -1: not in a station (in a vehicle)
    slot: U16  # 1-based slot in the station; 0 when not in a station
    vehicle_idx: I64  # -1: not in a vehicle
    pack_type: U16  # PackType
    capacity_wh: I64
    soc_permille: U16
    soh_permille: U16
    cycles: U32
    state: U8  # PackState


@dataclass(frozen=True, eq=False)
class Connectors(_Table):
    id: list[str]  # "cn-0000001"
    handle: U64
    station_idx: U32
    charger_no: U16  # 1-based within the station
    connector_no: U8  # 1-based within the charger
    standard: U8  # ConnectorStandard
    max_power_w: I64
    status: U8  # ConnectorStatus


@dataclass(frozen=True, eq=False)
class Units(_Table):
    id: list[str]  # "un-000001"
    handle: U64
    kind: U8  # UnitKind
    operator_idx: U32
    city_idx: U32
    lat: F64
    lng: F64
    energy_wh: I64  # energy on board (vans; 0 otherwise)
    energy_capacity_wh: I64  # (vans; 0 otherwise)
    max_power_w: I64  # van output power (0 otherwise)
    connector_mask: U32  # OR of 1 << ConnectorStandard (vans; 0 otherwise)
    skills: U32  # Skill bitmask (engineers; 0 otherwise)
    shift_start_s: U32  # seconds since local midnight
    shift_end_s: U32  # > shift_start_s; may exceed 86400 for an overnight shift
    status: U8  # UnitStatus at spec.local_time_s


@dataclass(frozen=True, eq=False)
class Vehicles(_Table):
    vin: list[str]  # 17 chars, valid ISO 3779 check digit (position 9)
    handle: U64
    model: list[str]
    pack_type: U16  # 0: fixed battery (not swappable)
    connector_mask: U32  # OR of 1 << ConnectorStandard
    usable_capacity_wh: I64
    consumption_wh_per_km: U32
    max_dc_power_w: I64  # 0: AC only
    soc_permille: U16
    fleet_idx: I32  # -1: private
    pack_idx: I64  # the swappable pack on board; -1 for fixed-battery vehicles
    city_idx: U32
    lat: F64
    lng: F64


@dataclass(frozen=True, eq=False)
class Drivers(_Table):
    id: list[str]  # "dr-000001"
    handle: U64
    name: list[str]
    fleet_idx: I32  # -1: private
    vehicle_idx: I64  # -1: none


@dataclass(frozen=True)
class WorldSpec:
    """Sizes and knobs of a world. Presets: ``PRESETS`` ("demo", "city", "country")."""

    name: str
    n_cities: int  # the first n of data.CITIES (Shanghai first)
    city_radius_scale: float  # 1.0: the whole urban area; demo uses the centre only
    decay: float  # station density ~ exp(-r / (decay * radius))
    n_operators: int
    n_fleets: int
    sub_fleets_per_fleet: int
    n_swap_stations: int
    n_charging_stations: int
    swap_slots: tuple[int, int]  # inclusive range of pack slots per swap station
    chargers_per_station: tuple[int, int]  # inclusive range
    n_vans: int
    n_specialists: int
    n_engineers: int
    n_vehicles: int
    fleet_vehicle_share: float
    local_time_s: int = 10 * 3600  # "now" for statuses, queues and shifts


@dataclass(frozen=True, eq=False)
class World:
    spec: WorldSpec
    seed: int
    cities: Cities
    road_classes: RoadClasses
    operators: list[Operator]
    fleets: list[Fleet]
    stations: Stations
    packs: Packs
    connectors: Connectors
    units: Units
    vehicles: Vehicles
    drivers: Drivers

    def resource_count(self) -> int:
        """Stations + connectors + packs + mobile units."""
        return len(self.stations) + len(self.connectors) + len(self.packs) + len(self.units)

    def summary(self) -> dict[str, Any]:
        st, pk, un = self.stations, self.packs, self.units
        return {
            "name": self.spec.name,
            "seed": self.seed,
            "cities": len(self.cities),
            "operators": len(self.operators),
            "fleets": sum(1 for f in self.fleets if f.parent_idx < 0),
            "sub_fleets": sum(1 for f in self.fleets if f.parent_idx >= 0),
            "swap_stations": int(np.count_nonzero(st.kind == StationKind.SWAP)),
            "charging_stations": int(np.count_nonzero(st.kind == StationKind.CHARGING)),
            "connectors": len(self.connectors),
            "packs": len(pk),
            "packs_by_state": {s.name: int(np.count_nonzero(pk.state == s)) for s in PackState},
            "vans": int(np.count_nonzero(un.kind == UnitKind.VAN)),
            "specialists": int(np.count_nonzero(un.kind == UnitKind.SPECIALIST)),
            "engineers": int(np.count_nonzero(un.kind == UnitKind.ENGINEER)),
            "vehicles": len(self.vehicles),
            "drivers": len(self.drivers),
            "resources": self.resource_count(),
        }

    def digest(self) -> str:
        """SHA-256 over every column (dtype, shape, bytes) and list: equal digests = identical worlds."""
        h = hashlib.sha256(repr(self.spec).encode())
        h.update(str(self.seed).encode())
        for tname in ("cities", "road_classes", "stations", "packs", "connectors", "units", "vehicles", "drivers"):
            table = getattr(self, tname)
            for f in dataclasses.fields(table):
                _hash_value(h, f"{tname}.{f.name}", getattr(table, f.name))
        _hash_value(h, "operators", [f"{o.id}\x1f{o.name}" for o in self.operators])
        _hash_value(h, "fleets", [f"{f.id}\x1f{f.name}\x1f{f.parent_idx}" for f in self.fleets])
        return h.hexdigest()


def _hash_value(h: Any, key: str, value: object) -> None:
    h.update(key.encode())
    if isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, list):
        h.update("\x1e".join(str(v) for v in value).encode())
    else:
        h.update(repr(value).encode())
