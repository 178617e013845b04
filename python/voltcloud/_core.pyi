"""Hand-written stubs of the Rust extension `voltcloud._core`, checked by `mypy.stubtest` in CI."""

__version__: str

class VoltcloudCoreError(Exception): ...
class InvalidInputError(VoltcloudCoreError): ...
class NotFoundError(VoltcloudCoreError): ...
class ConflictError(VoltcloudCoreError): ...
class InfeasibleError(VoltcloudCoreError): ...

# The engine's limits (rust_core/src/limits.rs), by name: the range of every value a station, connector,
# pack or unit row may carry into the index (e.g. "max_lanes", "max_connector_power_w", "max_permille").
# The index enforces them on load; the API and the engine adapter check rows against the same numbers.
LIMITS: dict[str, int]
# Every enum number the engine uses (rust_core/src/enums.rs), by enum and member name, e.g.
# ENUM_NUMBERS["PackState"]["READY"] == 3. Named as in the proto where it has the enum (pinned to it by
# tests/unit/test_enum_numbers.py); "UnitKind" and "EngineUnitStatus" are the engine's own.
ENUM_NUMBERS: dict[str, dict[str, int]]

# --- geo -----------------------------------------------------------------------------------------
def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two WGS84 points."""

def cell_index(lat: float, lng: float, cell_size_m: float) -> int:
    """Id of the grid cell of side `cell_size_m` holding the point."""

def cell_origin(cell: int, cell_size_m: float) -> tuple[float, float]:
    """South-west corner (lat, lng) of a cell id."""

# --- engine: index, traffic, options, batteries (rust_core/src/{index,traffic,options,batteries}.rs)
# Codes (StationKind, PackState, ConnectorStatus, ConnectorStandard with masks 1 << code, PowerUpMode with
# masks 1 << mode, unit kind and unit status) are the numbers in ENUM_NUMBERS above. SOC/SOH permille, Wh, W,
# unix seconds UTC. Array arguments take any 1-D array-like; values are range-checked per column.
from typing import Any as _Any  # noqa: E402
from typing import Self as _Self  # noqa: E402
from typing import final as _final  # noqa: E402

import numpy as _np  # noqa: E402
import numpy.typing as _npt  # noqa: E402

@_final
class ResourceIndex:
    """Stations, packs, connectors and mobile units in memory with a grid spatial index. Thread-safe."""

    def __new__(cls, cell_size_m: float = 2000.0) -> _Self: ...
    @property
    def cell_size_m(self) -> float: ...
    def counts(self) -> tuple[int, int, int, int]:
        """(stations, packs, connectors, units)."""
    def load_stations(
        self,
        ids: _npt.ArrayLike,
        kind: _npt.ArrayLike,
        operator: _npt.ArrayLike,
        lat: _npt.ArrayLike,
        lng: _npt.ArrayLike,
        lanes: _npt.ArrayLike,
        swap_time_s: _npt.ArrayLike,
    ) -> _npt.NDArray[_np.uint32]:
        """Appends stations (u64 ids, u8 kind, u32 operator, f64 lat/lng, u16 lanes, u32 swap_time_s);
        returns their handles. All-or-nothing: InvalidInputError leaves the index unchanged."""
    def load_packs(
        self,
        station_idx: _npt.ArrayLike,
        pack_type: _npt.ArrayLike,
        soc: _npt.ArrayLike,
        soh: _npt.ArrayLike,
        cycles: _npt.ArrayLike,
        state: _npt.ArrayLike,
    ) -> _npt.NDArray[_np.uint32]:
        """Appends packs; `station_idx` is an int64 swap-station handle or -1 (in a vehicle / in transit).
        NotFoundError for an unknown station handle."""
    def load_connectors(
        self,
        station_idx: _npt.ArrayLike,
        standard: _npt.ArrayLike,
        max_power_w: _npt.ArrayLike,
        status: _npt.ArrayLike,
    ) -> _npt.NDArray[_np.uint32]:
        """Appends connectors at charging stations."""
    def load_mobile(
        self,
        ids: _npt.ArrayLike,
        kind: _npt.ArrayLike,
        operator: _npt.ArrayLike,
        lat: _npt.ArrayLike,
        lng: _npt.ArrayLike,
        status: _npt.ArrayLike,
        energy_wh: _npt.ArrayLike | None = None,
        power_w: _npt.ArrayLike | None = None,
        connector_mask: _npt.ArrayLike | None = None,
        skills: _npt.ArrayLike | None = None,
        shift_start: _npt.ArrayLike | None = None,
        shift_end: _npt.ArrayLike | None = None,
    ) -> _npt.NDArray[_np.uint32]:
        """Appends vans / specialists / engineers; omitted columns default to 0 (shifts: unbounded)."""
    def station_index(self, station_id: int) -> int: ...
    def unit_index(self, unit_id: int) -> int: ...
    def station(self, idx: int) -> dict[str, _Any]: ...
    def pack(self, idx: int) -> dict[str, _Any]: ...
    def connector(self, idx: int) -> dict[str, _Any]: ...
    def unit(self, idx: int) -> dict[str, _Any]: ...
    def set_connector_status(self, idx: int, status: int) -> int:
        """Returns the new version (every set_* / reserve_* / release_* bumps it; move_unit does not)."""
    def set_pack(self, idx: int, soc: int, soh: int, state: int) -> int: ...
    def set_queue(self, station_idx: int, queue: int) -> int: ...
    def set_queues(self, station_idx: _npt.ArrayLike, queue: _npt.ArrayLike) -> None:
        """Bulk set_queue (all-or-nothing)."""
    def move_unit(self, idx: int, lat: float, lng: float) -> None: ...
    def set_unit_status(self, idx: int, status: int, busy_until: int | None = None) -> int: ...
    def set_van_energy(self, idx: int, energy_wh: int) -> int: ...
    def reserve_connector(self, idx: int, expected_version: int | None = None) -> int:
        """AVAILABLE → RESERVED; ConflictError when taken or `expected_version` is stale."""
    def release_connector(self, idx: int, expected_version: int | None = None) -> int: ...
    def reserve_pack(self, idx: int, expected_version: int | None = None) -> int:
        """READY → RESERVED; ConflictError when not READY or stale."""
    def release_pack(self, idx: int, expected_version: int | None = None) -> int: ...
    def reserve_unit(self, idx: int, expected_version: int | None = None) -> int:
        """AVAILABLE → RESERVED; ConflictError when not AVAILABLE or stale."""
    def release_unit(self, idx: int, expected_version: int | None = None) -> int: ...
    def nearest_stations(
        self,
        lat: float,
        lng: float,
        k: int,
        kind: int | None = None,
        operators: list[int] | None = None,
        max_radius_m: float | None = None,
    ) -> tuple[_npt.NDArray[_np.uint32], _npt.NDArray[_np.float64]]:
        """(handles, great-circle metres), closest first; `operators=None` sees every operator."""
    def stations_within(
        self, lat: float, lng: float, radius_m: float, kind: int | None = None, operators: list[int] | None = None
    ) -> tuple[_npt.NDArray[_np.uint32], _npt.NDArray[_np.float64]]: ...
    def nearest_units(
        self,
        lat: float,
        lng: float,
        k: int,
        kind: int | None = None,
        status: int | None = None,
        operators: list[int] | None = None,
        max_radius_m: float | None = None,
    ) -> tuple[_npt.NDArray[_np.uint32], _npt.NDArray[_np.float64]]: ...
    def units_within(
        self,
        lat: float,
        lng: float,
        radius_m: float,
        kind: int | None = None,
        status: int | None = None,
        operators: list[int] | None = None,
    ) -> tuple[_npt.NDArray[_np.uint32], _npt.NDArray[_np.float64]]: ...

@_final
class TravelModel:
    """Road classes 0 motorway, 1 arterial, 2 urban (default), 3 local with 96 x 15-min speed profiles,
    detour factor, per-cell congestion (travel-time multiplier in [1, 20] with expiry), optional road graph."""

    def __new__(
        cls,
        cell_size_m: float = 1000.0,
        detour_factor: float = 1.3,
        utc_offset_s: int = 28_800,
        snap_radius_m: float = 1000.0,
    ) -> _Self: ...
    @property
    def cell_size_m(self) -> float: ...
    @property
    def has_graph(self) -> bool: ...
    def cell_of(self, lat: float, lng: float) -> int: ...
    def set_speed_profile(self, road_class: int, speeds_kmh: _npt.ArrayLike) -> None:
        """24 hourly or 96 quarter-hour speeds (km/h, local time)."""
    def speed_profile(self, road_class: int) -> _npt.NDArray[_np.float64]: ...
    def set_cell_classes(self, cells: _npt.ArrayLike, classes: _npt.ArrayLike) -> None: ...
    def set_congestion(self, cells: _npt.ArrayLike, factors: _npt.ArrayLike, expires_at: int) -> None: ...
    def purge_expired(self, now: int) -> int: ...
    def congestion_at(self, lat: float, lng: float, at: int) -> float: ...
    def load_graph(
        self,
        node_lat: _npt.ArrayLike,
        node_lng: _npt.ArrayLike,
        from_node: _npt.ArrayLike,
        to_node: _npt.ArrayLike,
        length_m: _npt.ArrayLike,
        road_class: _npt.ArrayLike,
    ) -> int:
        """Directed edge list (docs/engine.md); replaces any previous graph; returns the edge count."""
    def clear_graph(self) -> None: ...
    def travel(self, lat1: float, lng1: float, lat2: float, lng2: float, depart_at: int) -> tuple[float, float, bool]:
        """(road metres, seconds, answered by the graph)."""
    def travel_many(
        self,
        lat1: _npt.ArrayLike,
        lng1: _npt.ArrayLike,
        lat2: _npt.ArrayLike,
        lng2: _npt.ArrayLike,
        depart_at: int,
    ) -> tuple[_npt.NDArray[_np.float64], _npt.NDArray[_np.float64]]: ...

@_final
class PowerUpOption:
    """One ranked option; handles are -1 when not applicable. For VALET: eta_s = specialist to car,
    wait_s = specialist busy time + station queue, service_s = drive there + service + drive back."""

    @property
    def mode(self) -> int: ...
    @property
    def service_mode(self) -> int: ...
    @property
    def station(self) -> int: ...
    @property
    def connector(self) -> int: ...
    @property
    def pack(self) -> int: ...
    @property
    def unit(self) -> int: ...
    @property
    def eta_s(self) -> float: ...
    @property
    def wait_s(self) -> float: ...
    @property
    def service_s(self) -> float: ...
    @property
    def finish_at(self) -> float: ...
    @property
    def energy_wh(self) -> float: ...
    @property
    def distance_m(self) -> float: ...
    @property
    def cost_proxy(self) -> float: ...
    @property
    def resource_version(self) -> int:
        """Version of the pack / connector at query time (for reserve_*), 0 when none."""
    @property
    def unit_version(self) -> int: ...

@_final
class Options:
    """Power-up options against a ResourceIndex and a TravelModel; the query runs without the GIL."""

    def __new__(cls, index: ResourceIndex, traffic: TravelModel) -> _Self: ...
    @property
    def index(self) -> ResourceIndex: ...
    @property
    def traffic(self) -> TravelModel: ...
    def query(
        self,
        lat: float,
        lng: float,
        soc_permille: int,
        usable_capacity_wh: float,
        consumption_wh_per_km: float,
        pack_type: int,
        connector_mask: int,
        target_soc_permille: int,
        modes_mask: int,
        deadline: int,
        now: int,
        operators: list[int] | None = None,
        safety_margin_permille: int = 50,
        max_charge_power_w: float = 150_000.0,
        top_n: int = 3,
    ) -> list[PowerUpOption]:
        """Top `top_n` per requested mode, all ranked by finish time then cost proxy."""

@_final
class PackMatching:
    @property
    def vehicle_pack(self) -> _npt.NDArray[_np.int64]:
        """Pack row per vehicle, -1 when unserved."""
    @property
    def vehicle_pack_id(self) -> _npt.NDArray[_np.uint64]: ...
    @property
    def unmatched(self) -> _npt.NDArray[_np.int64]: ...
    @property
    def total_cost(self) -> float: ...

def match_packs(
    pack_ids: _npt.ArrayLike,
    pack_type: _npt.ArrayLike,
    soc: _npt.ArrayLike,
    soh: _npt.ArrayLike,
    cycles: _npt.ArrayLike,
    state: _npt.ArrayLike,
    vehicle_pack_type: _npt.ArrayLike,
    vehicle_need_soc: _npt.ArrayLike,
    vehicle_trip_km: _npt.ArrayLike,
) -> PackMatching:
    """Min-cost assignment of READY compatible packs (soc >= need) to queued vehicles, stress-balanced."""

@_final
class ChargingPlan:
    @property
    def charging(self) -> _npt.NDArray[_np.uint8]:
        """(packs, 96): 1 when the pack charges in the slot."""
    @property
    def slot_packs(self) -> _npt.NDArray[_np.uint32]: ...
    @property
    def slot_power_w(self) -> _npt.NDArray[_np.float64]: ...
    @property
    def energy_wh(self) -> _npt.NDArray[_np.float64]: ...
    @property
    def ready_slot(self) -> _npt.NDArray[_np.int32]: ...
    @property
    def serves_slot(self) -> _npt.NDArray[_np.int32]: ...
    @property
    def origin_slot(self) -> _npt.NDArray[_np.int32]:
        """-1 for an input pack; for a pack returned by a served swap (rows after the inputs), its slot."""
    @property
    def unmet_demand(self) -> _npt.NDArray[_np.uint32]: ...
    @property
    def missed_ready_by(self) -> _npt.NDArray[_np.uint32]: ...
    @property
    def cost_micros(self) -> int: ...
    @property
    def total_unmet(self) -> int: ...

def schedule_charging(
    soc: _npt.ArrayLike,
    capacity_wh: _npt.ArrayLike,
    target_soc: _npt.ArrayLike,
    ready_by_slot: _npt.ArrayLike,
    power_cap_w: float,
    charger_power_w: float,
    prices_micros_per_kwh: _npt.ArrayLike,
    demand: _npt.ArrayLike,
    fill_remaining: bool = True,
    returned_soc_permille: int | None = None,
) -> ChargingPlan:
    """96 x 15-min plan under `power_cap_w` meeting demand (full packs per slot) at least energy cost;
    with `returned_soc_permille`, each served swap brings back a depleted pack that can serve later demand."""

# --- routing (rust_core/src/routing/) -------------------------------------------------------------
import os  # noqa: E402
from typing import Self, final  # noqa: E402

# Times (matrix, windows, shifts, service) are floats in one unit of the caller's choice, e.g. seconds;
# the engine works in integer thousandths of it. Locations are row/column indices of the matrix.

@final
class Vehicle:
    """Leaves `start` no earlier than `shift_start`, back at `end` (default `start`) by `shift_end`;
    serves tasks whose skills bitmask is a subset of `skills`."""

    @property
    def id(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def shift_start(self) -> float: ...
    @property
    def shift_end(self) -> float: ...
    @property
    def capacity(self) -> int: ...
    @property
    def skills(self) -> int: ...
    def __new__(
        cls,
        id: int,
        start: int,
        end: int | None = None,
        shift_start: float = 0.0,
        shift_end: float = 1e9,
        capacity: int = 1_099_511_627_776,
        skills: int = 0,
    ) -> Self: ...

@final
class Task:
    """Service must start within [ready, due]. `demand` uses capacity for the whole route; for the
    pickup of a pair it is carried until the delivery (whose demand must be 0 or equal)."""

    @property
    def id(self) -> int: ...
    @property
    def location(self) -> int: ...
    @property
    def ready(self) -> float: ...
    @property
    def due(self) -> float: ...
    @property
    def service(self) -> float: ...
    @property
    def demand(self) -> int: ...
    @property
    def skills(self) -> int: ...
    def __new__(
        cls,
        id: int,
        location: int,
        ready: float = 0.0,
        due: float = 1e9,
        service: float = 0.0,
        demand: int = 0,
        skills: int = 0,
    ) -> Self: ...

@final
class Insertion:
    """Where `RoutePlanner.insert` put a task; `eta` is the planned service start."""

    @property
    def task_id(self) -> int: ...
    @property
    def vehicle_id(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def added_cost(self) -> float: ...
    @property
    def eta(self) -> float: ...

@final
class PlannedRoute:
    """One vehicle's plan: task ids in order, planned service starts, return time, cost."""

    @property
    def vehicle_id(self) -> int: ...
    @property
    def task_ids(self) -> list[int]: ...
    @property
    def etas(self) -> list[float]: ...
    @property
    def end_time(self) -> float: ...
    @property
    def cost(self) -> float: ...

@final
class RoutingSolution:
    """One route per vehicle (possibly empty) and the task ids nobody could serve."""

    @property
    def routes(self) -> list[PlannedRoute]: ...
    @property
    def unassigned(self) -> list[int]: ...
    @property
    def cost(self) -> float: ...
    @property
    def iterations(self) -> int: ...
    @property
    def elapsed_ms(self) -> float: ...

@final
class VrptwSolution:
    """Solomon result: routes as customer numbers (depot omitted), float total distance."""

    @property
    def name(self) -> str: ...
    @property
    def routes(self) -> list[list[int]]: ...
    @property
    def cost(self) -> float: ...
    @property
    def vehicles(self) -> int: ...
    @property
    def max_vehicles(self) -> int: ...
    @property
    def iterations(self) -> int: ...
    @property
    def elapsed_ms(self) -> float: ...

@final
class Reoptimization:
    """Result of `RoutePlanner.reoptimize`."""

    @property
    def applied(self) -> bool: ...
    @property
    def cost_before(self) -> float: ...
    @property
    def cost_after(self) -> float: ...
    @property
    def iterations(self) -> int: ...

@final
class RoutePlanner:
    """A live plan: cheapest insertion of one task at a time, removal, re-optimisation. Thread-safe."""

    def __new__(cls, vehicles: list[Vehicle], matrix: object, *, cost_matrix: object | None = None) -> Self: ...
    @property
    def cost(self) -> float: ...
    def insert(self, task: Task) -> Insertion:
        """Cheapest feasible insertion; InfeasibleError (plan unchanged) or ConflictError (known id)."""
    def insert_pair(self, pickup: Task, delivery: Task) -> tuple[Insertion, Insertion]:
        """Pickup then delivery on the same vehicle."""
    def set_route(self, vehicle_id: int, tasks: list[Task], pairs: list[tuple[int, int]] = ...) -> None:
        """Replaces a vehicle's route by `tasks` in this order; InfeasibleError if it breaks a constraint."""
    def remove(self, task_id: int) -> None:
        """Removes a task and its pair partner; NotFoundError for unknown ids."""
    def reoptimize(self, time_limit_ms: int = 100, seed: int = 0, max_iterations: int | None = None) -> Reoptimization:
        """Improves the plan without the GIL; applied only if the plan did not change meanwhile."""
    def routes(self) -> list[PlannedRoute]: ...
    def __len__(self) -> int: ...

def solve_routes(
    vehicles: list[Vehicle],
    tasks: list[Task],
    matrix: object,
    *,
    pairs: list[tuple[int, int]] = ...,
    cost_matrix: object | None = None,
    time_limit_ms: int = 1000,
    seed: int = 0,
    max_iterations: int | None = None,
) -> RoutingSolution:
    """Batch VRPTW / pickup-and-delivery solve; `matrix` is a float64/int64 numpy array, (n, n) or flat.
    Deterministic for a seed when bounded by `max_iterations`."""

def solve_vrptw_text(
    text: str, time_limit_ms: int = 300, seed: int = 1, max_iterations: int | None = None
) -> VrptwSolution:
    """Solves a Solomon instance (minimum total distance, at most the file's vehicles)."""

def solve_vrptw_file(
    path: str | os.PathLike[str], time_limit_ms: int = 300, seed: int = 1, max_iterations: int | None = None
) -> VrptwSolution:
    """Reads and solves a Solomon file; InvalidInputError if unreadable or malformed."""

# --- GB/T 32960.3 gateway hot path (rust_core/src/gbt32960.rs) -----------------------------------
# Framing of both editions (2016 `##`, 2025 `$$`) and real-time/reissue data units reduced to readings.
# `reason` codes are the values of voltcloud_gateways.gbt32960.frame.Reason.
from collections.abc import Sequence as _Sequence  # noqa: E402

@_final
class Gbt32960Frame:
    """A structurally valid frame: start marker, length and BCC checked, VIN printable ASCII."""

    def __new__(cls, edition: int, command: int, flag: int, vin: str, encryption: int, data: bytes) -> _Self: ...
    @property
    def edition(self) -> int: ...
    @property
    def command(self) -> int: ...
    @property
    def flag(self) -> int: ...
    @property
    def vin(self) -> str: ...
    @property
    def encryption(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def encrypted(self) -> bool: ...
    def answer(self, flag: int, data: bytes) -> bytes:
        """The platform's answer: command and VIN echoed with `flag`, `data` as the (unencrypted) data unit."""
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@_final
class Gbt32960FrameError:
    """Refused bytes; `offset` is within the frame (or the stream chunk for "garbage")."""

    def __new__(cls, reason: str, message: str, offset: int = ...) -> _Self: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def offset(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@_final
class Gbt32960Reader:
    """Sans-IO framer with a bounded buffer; releases the GIL for large feeds."""

    def __new__(cls, max_data_len: int = ...) -> _Self: ...
    @property
    def max_data_len(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    def feed(self, chunk: bytes) -> list[Gbt32960Frame | Gbt32960FrameError]: ...
    def finish(self) -> list[Gbt32960FrameError]: ...

@_final
class Gbt32960Telemetry:
    """Real-time/reissue frames -> readings; `metric_ids`: the metric numbers of its 11 reading slots."""

    def __new__(cls, metric_ids: _Sequence[int]) -> _Self: ...
    def decode(
        self, frame: Gbt32960Frame
    ) -> tuple[Gbt32960FrameError | None, int | None, list[int], list[int], tuple[int | None, int, int] | None]:
        """(error, time as Unix ms UTC or None if not a calendar time, metrics, values, alarm summary)."""

def gbt32960_decode_frame(raw: bytes, max_data_len: int = ...) -> Gbt32960Frame | Gbt32960FrameError: ...
def gbt32960_bcc(data: bytes) -> int: ...
def gbt32960_encode_frame(
    edition: int, command: int, flag: int, vin: str, data: bytes, encryption: int = ...
) -> bytes: ...
