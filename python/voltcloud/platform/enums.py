"""Enum numbers, one source: the domains' IntEnums, each member's number read from the generated proto enum.

This is the only module besides the servicers and converters that reads the generated enums (`voltcloud.api`):
domains import their IntEnums from here, so a number is written in the .proto alone. The engine's numbers
(`_core.ENUM_NUMBERS`) and these are pinned to the proto by tests/unit/test_enum_numbers.py.
Enums no proto has (the database's unit kind and status) are defined here, once.
"""

from __future__ import annotations

import enum

from voltcloud.api.v1 import common_pb2 as c
from voltcloud.api.v1 import dispatch_pb2 as d
from voltcloud.api.v1 import fleet_pb2 as f
from voltcloud.api.v1 import ingest_pb2 as i
from voltcloud.api.v1 import maintenance_pb2 as m
from voltcloud.api.v1 import ordering_pb2 as o
from voltcloud.api.v1 import stations_pb2 as s


class StationKind(enum.IntEnum):
    SWAP = c.STATION_KIND_SWAP
    CHARGING = c.STATION_KIND_CHARGING


class PackState(enum.IntEnum):
    IN_VEHICLE = c.PACK_STATE_IN_VEHICLE
    CHARGING = c.PACK_STATE_CHARGING
    READY = c.PACK_STATE_READY
    RESERVED = c.PACK_STATE_RESERVED
    QUARANTINED = c.PACK_STATE_QUARANTINED
    WITHDRAWN = c.PACK_STATE_WITHDRAWN
    IN_TRANSIT = c.PACK_STATE_IN_TRANSIT


class ConnectorStandard(enum.IntEnum):
    GBT_DC = c.CONNECTOR_STANDARD_GBT_DC
    GBT_AC = c.CONNECTOR_STANDARD_GBT_AC
    CCS2 = c.CONNECTOR_STANDARD_CCS2
    CHADEMO = c.CONNECTOR_STANDARD_CHADEMO
    TYPE2 = c.CONNECTOR_STANDARD_TYPE2


class PaymentMode(enum.IntEnum):
    REAL_TIME = f.PAYMENT_MODE_REAL_TIME
    POST_SETTLEMENT = f.PAYMENT_MODE_POST_SETTLEMENT


class DriverStatus(enum.IntEnum):
    PENDING = f.DRIVER_STATUS_PENDING
    APPROVED = f.DRIVER_STATUS_APPROVED
    REJECTED = f.DRIVER_STATUS_REJECTED
    SUSPENDED = f.DRIVER_STATUS_SUSPENDED
    REMOVED = f.DRIVER_STATUS_REMOVED


class ConnectorStatus(enum.IntEnum):
    AVAILABLE = c.CONNECTOR_STATUS_AVAILABLE
    OCCUPIED = c.CONNECTOR_STATUS_OCCUPIED
    RESERVED = c.CONNECTOR_STATUS_RESERVED
    FAULTED = c.CONNECTOR_STATUS_FAULTED
    UNAVAILABLE = c.CONNECTOR_STATUS_UNAVAILABLE
    OFFLINE = c.CONNECTOR_STATUS_OFFLINE


class CommandStatus(enum.IntEnum):
    ACCEPTED = s.COMMAND_STATUS_ACCEPTED
    REJECTED = s.COMMAND_STATUS_REJECTED
    NOT_SUPPORTED = s.COMMAND_STATUS_NOT_SUPPORTED
    TIMEOUT = s.COMMAND_STATUS_TIMEOUT
    OFFLINE = s.COMMAND_STATUS_OFFLINE
    FAILED = s.COMMAND_STATUS_FAILED


class PowerUpMode(enum.IntEnum):
    SWAP = c.POWER_UP_MODE_SWAP
    CHARGE = c.POWER_UP_MODE_CHARGE
    VALET = c.POWER_UP_MODE_VALET
    MOBILE_VAN = c.POWER_UP_MODE_MOBILE_VAN


class OrderState(enum.IntEnum):
    CREATED = c.ORDER_STATE_CREATED
    ASSIGNED = c.ORDER_STATE_ASSIGNED
    EN_ROUTE = c.ORDER_STATE_EN_ROUTE
    IN_SERVICE = c.ORDER_STATE_IN_SERVICE
    COMPLETED = c.ORDER_STATE_COMPLETED
    CANCELLED = c.ORDER_STATE_CANCELLED
    FAILED = c.ORDER_STATE_FAILED
    EXPIRED = c.ORDER_STATE_EXPIRED

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


class ResourceKind(enum.IntEnum):
    SWAP_LANE = o.RESOURCE_KIND_SWAP_LANE
    CONNECTOR = o.RESOURCE_KIND_CONNECTOR
    SPECIALIST = o.RESOURCE_KIND_SPECIALIST
    VAN = o.RESOURCE_KIND_VAN


class ReservationState(enum.IntEnum):
    ACTIVE = o.RESERVATION_STATE_ACTIVE
    USED = o.RESERVATION_STATE_USED
    CANCELLED = o.RESERVATION_STATE_CANCELLED
    EXPIRED = o.RESERVATION_STATE_EXPIRED


class ComplaintState(enum.IntEnum):
    OPEN = o.COMPLAINT_STATE_OPEN
    ACCEPTED = o.COMPLAINT_STATE_ACCEPTED
    REJECTED = o.COMPLAINT_STATE_REJECTED


class StationSessionKind(enum.IntEnum):
    CHARGE = s.STATION_SESSION_KIND_CHARGE
    SWAP = s.STATION_SESSION_KIND_SWAP


class WorkerStatus(enum.IntEnum):
    """What a worker reports about itself (ReportWorkerStatus); not the stored `UnitStatus`."""

    AVAILABLE = d.WORKER_STATUS_AVAILABLE
    BUSY = d.WORKER_STATUS_BUSY
    ON_BREAK = d.WORKER_STATUS_ON_BREAK
    OFF_SHIFT = d.WORKER_STATUS_OFF_SHIFT


class TaskKind(enum.IntEnum):
    """All of dispatch.proto's kinds; tasks are created only as VALET or MOBILE_CHARGE (dispatch.api)."""

    VALET = d.TASK_KIND_VALET
    MOBILE_CHARGE = d.TASK_KIND_MOBILE_CHARGE
    VAN_REFILL = d.TASK_KIND_VAN_REFILL
    PACK_TRANSFER = d.TASK_KIND_PACK_TRANSFER


class TaskState(enum.IntEnum):
    OFFERED = d.TASK_STATE_OFFERED
    ACCEPTED = d.TASK_STATE_ACCEPTED
    IN_PROGRESS = d.TASK_STATE_IN_PROGRESS
    COMPLETED = d.TASK_STATE_COMPLETED
    CANCELLED = d.TASK_STATE_CANCELLED
    FAILED = d.TASK_STATE_FAILED


class StepKind(enum.IntEnum):
    GO_TO_VEHICLE = d.STEP_KIND_GO_TO_VEHICLE
    PICK_UP_VEHICLE = d.STEP_KIND_PICK_UP_VEHICLE
    GO_TO_STATION = d.STEP_KIND_GO_TO_STATION
    POWER_UP = d.STEP_KIND_POWER_UP
    RETURN_VEHICLE = d.STEP_KIND_RETURN_VEHICLE
    HAND_OVER = d.STEP_KIND_HAND_OVER
    CONNECT = d.STEP_KIND_CONNECT
    DISCONNECT = d.STEP_KIND_DISCONNECT


class StepStatus(enum.IntEnum):
    PENDING = d.STEP_STATUS_PENDING
    STARTED = d.STEP_STATUS_STARTED
    DONE = d.STEP_STATUS_DONE
    FAILED = d.STEP_STATUS_FAILED
    SKIPPED = d.STEP_STATUS_SKIPPED


class TagStatus(enum.IntEnum):
    """A charging token's verdict (ingest.proto IdTagStatus); also the stored ChargingToken.status."""

    ACCEPTED = i.ID_TAG_STATUS_ACCEPTED
    INVALID = i.ID_TAG_STATUS_INVALID
    BLOCKED = i.ID_TAG_STATUS_BLOCKED
    EXPIRED = i.ID_TAG_STATUS_EXPIRED


class Metric(enum.IntEnum):
    SOC_PERMILLE = c.METRIC_SOC_PERMILLE
    SOH_PERMILLE = c.METRIC_SOH_PERMILLE
    TEMPERATURE_MILLI_C = c.METRIC_TEMPERATURE_MILLI_C
    VOLTAGE_MV = c.METRIC_VOLTAGE_MV
    CURRENT_MA = c.METRIC_CURRENT_MA
    POWER_W = c.METRIC_POWER_W
    ENERGY_WH = c.METRIC_ENERGY_WH
    SPEED_M_PER_H = c.METRIC_SPEED_M_PER_H
    ODOMETER_M = c.METRIC_ODOMETER_M
    LATITUDE_MICRODEG = c.METRIC_LATITUDE_MICRODEG
    LONGITUDE_MICRODEG = c.METRIC_LONGITUDE_MICRODEG
    CELL_VOLTAGE_MAX_MV = c.METRIC_CELL_VOLTAGE_MAX_MV
    CELL_VOLTAGE_MIN_MV = c.METRIC_CELL_VOLTAGE_MIN_MV
    TEMPERATURE_MAX_MILLI_C = c.METRIC_TEMPERATURE_MAX_MILLI_C
    INSULATION_KOHM = c.METRIC_INSULATION_KOHM
    SITE_POWER_W = c.METRIC_SITE_POWER_W


class AlarmLevel(enum.IntEnum):
    INFO = c.ALARM_LEVEL_INFO
    WARNING = c.ALARM_LEVEL_WARNING
    MAJOR = c.ALARM_LEVEL_MAJOR
    CRITICAL = c.ALARM_LEVEL_CRITICAL


class VehicleAlertKind(enum.IntEnum):
    SPEEDING = f.VEHICLE_ALERT_KIND_SPEEDING
    FATIGUE = f.VEHICLE_ALERT_KIND_FATIGUE
    LOW_BATTERY = f.VEHICLE_ALERT_KIND_LOW_BATTERY
    VEHICLE_ALARM = f.VEHICLE_ALERT_KIND_VEHICLE_ALARM


class ReadingFlag(enum.IntFlag):
    OUT_OF_ORDER = f.READING_FLAG_OUT_OF_ORDER
    SPIKE = f.READING_FLAG_SPIKE
    GAP = f.READING_FLAG_GAP
    STUCK = f.READING_FLAG_STUCK
    OUT_OF_RANGE = f.READING_FLAG_OUT_OF_RANGE


class VehicleStateSource(enum.IntEnum):
    TELEMETRY = f.VEHICLE_STATE_SOURCE_TELEMETRY
    ORDERS = f.VEHICLE_STATE_SOURCE_ORDERS


class AlarmSource(enum.IntEnum):
    STATION = m.ALARM_SOURCE_STATION
    VEHICLE = m.ALARM_SOURCE_VEHICLE
    PACK = m.ALARM_SOURCE_PACK
    PLATFORM = m.ALARM_SOURCE_PLATFORM


class AlarmState(enum.IntEnum):
    ACTIVE = m.ALARM_STATE_ACTIVE
    ACKNOWLEDGED = m.ALARM_STATE_ACKNOWLEDGED
    CLEARED = m.ALARM_STATE_CLEARED


class WorkOrderState(enum.IntEnum):
    """IN_PROGRESS is the legacy name of ON_SITE: stored rows never get it; a request naming it means ON_SITE."""

    OPEN = m.WORK_ORDER_STATE_OPEN
    ASSIGNED = m.WORK_ORDER_STATE_ASSIGNED
    IN_PROGRESS = m.WORK_ORDER_STATE_IN_PROGRESS
    ON_HOLD = m.WORK_ORDER_STATE_ON_HOLD
    RESOLVED = m.WORK_ORDER_STATE_RESOLVED
    CANCELLED = m.WORK_ORDER_STATE_CANCELLED
    ACCEPTED = m.WORK_ORDER_STATE_ACCEPTED
    ON_SITE = m.WORK_ORDER_STATE_ON_SITE
    DIAGNOSED = m.WORK_ORDER_STATE_DIAGNOSED
    CLOSED = m.WORK_ORDER_STATE_CLOSED


class WorkOrderSource(enum.IntEnum):
    ALARM = m.WORK_ORDER_SOURCE_ALARM
    INSPECTION = m.WORK_ORDER_SOURCE_INSPECTION
    PREVENTIVE = m.WORK_ORDER_SOURCE_PREVENTIVE
    MANUAL = m.WORK_ORDER_SOURCE_MANUAL
    CUSTOMER = m.WORK_ORDER_SOURCE_CUSTOMER


class UnitKind(enum.IntEnum):
    """MobileUnit.kind (no proto enum); the engine's numbers are the same (pinned by the test)."""

    VAN = 1
    SPECIALIST = 2
    ENGINEER = 3


class UnitStatus(enum.IntEnum):
    """MobileUnit.status as stored (no proto enum). The engine's unit status has two more states (RESERVED,
    OFFLINE): engine.py maps these to `_core.ENUM_NUMBERS["EngineUnitStatus"]` by name, never by number."""

    IDLE = 1
    BUSY = 2
    OFF_SHIFT = 3
    RETIRED = 4  # DispatchService.RetireMobileUnit; the engine has no such state: OFFLINE, never offered
