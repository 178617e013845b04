"""MaintenanceService servicer: each RPC converts its request (`convert`), asks the maintenance modules (which
hold every rule, including whose alarms and work orders the caller may see) and converts their answer back.

RPCs not overridden here answer UNIMPLEMENTED (the generated base). maint-core's RPCs come first; the engineers'
and field RPCs (maint-field) go in the block marked at the end of the class."""

from __future__ import annotations

from voltcloud.api.v1 import maintenance_pb2_grpc
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database


class MaintenanceServicer(maintenance_pb2_grpc.MaintenanceServiceServicer):
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    # ---- maint-field: engineers, dispatch, inspections, safety, battery health (append below) ----
