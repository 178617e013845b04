"""Hand-written stubs of the Rust extension `voltcloud._core`, checked by `mypy.stubtest` in CI."""

__version__: str

class VoltcloudCoreError(Exception): ...
class InvalidInputError(VoltcloudCoreError): ...
class NotFoundError(VoltcloudCoreError): ...
class ConflictError(VoltcloudCoreError): ...
class InfeasibleError(VoltcloudCoreError): ...

# --- geo -----------------------------------------------------------------------------------------
def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two WGS84 points."""

def cell_index(lat: float, lng: float, cell_size_m: float) -> int:
    """Id of the grid cell of side `cell_size_m` holding the point."""

def cell_origin(cell: int, cell_size_m: float) -> tuple[float, float]:
    """South-west corner (lat, lng) of a cell id."""

# --- engine: index, traffic, options, batteries (rust_core/src/{index,traffic,options,batteries}.rs)

# --- routing (rust_core/src/routing/) -------------------------------------------------------------
