"""Which roles may call which RPC: the one table. Row-level tenant checks live in the domain code.

Every method of every served service must appear here; the server refuses to start otherwise, so a new
RPC cannot ship without a decision about who may call it.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pool

from voltcloud.platform.auth import Role

ADMIN = frozenset({Role.PLATFORM_ADMIN})
OPERATORS = ADMIN | {Role.OPERATOR}
FLEET = ADMIN | {Role.FLEET_MANAGER}
CUSTOMERS = ADMIN | {Role.OPERATOR, Role.FLEET_MANAGER, Role.DRIVER}
STAFF = OPERATORS | {Role.ENGINEER}
WORKFORCE = OPERATORS | {Role.SPECIALIST}
GATEWAYS = ADMIN | {Role.GATEWAY}
FLEET_OR_OPERATOR = ADMIN | {Role.OPERATOR, Role.FLEET_MANAGER}
EVERYONE = frozenset(Role)

# Health and reflection need no token: load balancers and grpcurl use them before they have one.
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

PERMISSIONS: dict[str, frozenset[Role]] = {
    # StationService: operators run their stations; customers browse them.
    "voltcloud.v1.StationService/CreateOperator": ADMIN,
    "voltcloud.v1.StationService/CreateStation": OPERATORS,
    "voltcloud.v1.StationService/GetStation": EVERYONE,
    "voltcloud.v1.StationService/ListStations": EVERYONE,
    "voltcloud.v1.StationService/UpdateStation": OPERATORS,
    "voltcloud.v1.StationService/GetStationTwin": STAFF,
    "voltcloud.v1.StationService/WatchStation": STAFF,
    "voltcloud.v1.StationService/SendStationCommand": OPERATORS,
    "voltcloud.v1.StationService/RegisterPack": OPERATORS,
    "voltcloud.v1.StationService/GetPack": STAFF,
    "voltcloud.v1.StationService/ListPacks": STAFF,
    "voltcloud.v1.StationService/GetPackHistory": STAFF,
    "voltcloud.v1.StationService/ReportInspection": STAFF | {Role.GATEWAY},
    "voltcloud.v1.StationService/AssignRateModel": OPERATORS,
    "voltcloud.v1.StationService/ListStationSessions": STAFF,
    # OrderingService: drivers and fleet managers order; operators see their stations' orders.
    "voltcloud.v1.OrderingService/QuotePowerUp": CUSTOMERS,
    "voltcloud.v1.OrderingService/CreateOrder": CUSTOMERS,
    "voltcloud.v1.OrderingService/GetOrder": CUSTOMERS | {Role.SPECIALIST},
    "voltcloud.v1.OrderingService/ListOrders": CUSTOMERS,
    "voltcloud.v1.OrderingService/WatchOrder": CUSTOMERS,
    "voltcloud.v1.OrderingService/CancelOrder": CUSTOMERS,
    "voltcloud.v1.OrderingService/CreateReservation": CUSTOMERS,
    "voltcloud.v1.OrderingService/CancelReservation": CUSTOMERS,
    "voltcloud.v1.OrderingService/ListReservations": CUSTOMERS,
    "voltcloud.v1.OrderingService/StartByScan": CUSTOMERS,
    "voltcloud.v1.OrderingService/ListRecommendations": EVERYONE,
    "voltcloud.v1.OrderingService/PushRoadConditions": OPERATORS,
    # Care for drivers: customers complain about their own orders and the order's operator reviews; feedback
    # from customers is read by the operator it concerns; preferences are always the caller's own.
    "voltcloud.v1.OrderingService/FileComplaint": ADMIN | {Role.FLEET_MANAGER, Role.DRIVER},
    "voltcloud.v1.OrderingService/ListComplaints": CUSTOMERS,
    "voltcloud.v1.OrderingService/ReviewComplaint": OPERATORS,
    "voltcloud.v1.OrderingService/SubmitFeedback": ADMIN | {Role.FLEET_MANAGER, Role.DRIVER},
    "voltcloud.v1.OrderingService/ListFeedback": CUSTOMERS,
    "voltcloud.v1.OrderingService/GetPreferences": ADMIN | {Role.FLEET_MANAGER, Role.DRIVER},
    "voltcloud.v1.OrderingService/SetPreferences": ADMIN | {Role.FLEET_MANAGER, Role.DRIVER},
    # DispatchService: the specialists' and vans' app; operators supervise.
    "voltcloud.v1.DispatchService/Connect": WORKFORCE,
    "voltcloud.v1.DispatchService/ListTasks": WORKFORCE,
    "voltcloud.v1.DispatchService/GetTask": WORKFORCE,
    "voltcloud.v1.DispatchService/ReportTaskStep": WORKFORCE,
    "voltcloud.v1.DispatchService/ReoptimizeNow": OPERATORS,
    # fleet-swap: an operator onboards, changes, retires and lists its own vans and specialists.
    "voltcloud.v1.DispatchService/CreateMobileUnit": OPERATORS,
    "voltcloud.v1.DispatchService/UpdateMobileUnit": OPERATORS,
    "voltcloud.v1.DispatchService/RetireMobileUnit": OPERATORS,
    "voltcloud.v1.DispatchService/ListMobileUnits": OPERATORS,
    # SettlementService: money. Customers see and fund their own accounts; operators run pricing.
    "voltcloud.v1.SettlementService/CreateAccount": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/GetAccount": CUSTOMERS,
    "voltcloud.v1.SettlementService/ListAccounts": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/TopUp": CUSTOMERS,
    "voltcloud.v1.SettlementService/Withdraw": CUSTOMERS,
    "voltcloud.v1.SettlementService/Refund": OPERATORS,
    "voltcloud.v1.SettlementService/PlaceHold": ADMIN,
    "voltcloud.v1.SettlementService/CaptureHold": ADMIN,
    "voltcloud.v1.SettlementService/ReleaseHold": ADMIN,
    "voltcloud.v1.SettlementService/GetJournalEntry": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/ListJournalEntries": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/CreateRateModel": OPERATORS,
    "voltcloud.v1.SettlementService/ListRateModels": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/PriceEstimate": CUSTOMERS,
    "voltcloud.v1.SettlementService/CreateCoupon": OPERATORS,
    "voltcloud.v1.SettlementService/GenerateBill": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/GetBill": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/ListBills": FLEET_OR_OPERATOR,
    "voltcloud.v1.SettlementService/ImportStatement": ADMIN,
    "voltcloud.v1.SettlementService/ReconcileStatement": ADMIN,
    "voltcloud.v1.SettlementService/ListPayouts": OPERATORS,
    "voltcloud.v1.SettlementService/TraceFunds": ADMIN,
    "voltcloud.v1.SettlementService/RunPayouts": ADMIN,
    "voltcloud.v1.SettlementService/DetectAbnormalOrder": OPERATORS,
    "voltcloud.v1.SettlementService/RefundOrderDifference": OPERATORS,
    "voltcloud.v1.SettlementService/VerifyOfflinePayment": OPERATORS,
    # FleetService: fleet managers run their fleet (the admin creates it); a driver registers their own car,
    # applies to join a fleet (RegisterDriver for themself) and reads the vehicles they may drive.
    "voltcloud.v1.FleetService/CreateFleet": ADMIN,
    "voltcloud.v1.FleetService/GetFleet": FLEET,
    "voltcloud.v1.FleetService/CreateSubFleet": FLEET,
    "voltcloud.v1.FleetService/AllocateBalance": FLEET,
    "voltcloud.v1.FleetService/RegisterVehicle": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/GetVehicle": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/ListVehicles": FLEET,
    "voltcloud.v1.FleetService/RegisterDriver": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/ReviewDriver": FLEET,
    "voltcloud.v1.FleetService/MoveVehicle": FLEET,
    "voltcloud.v1.FleetService/ListDrivers": FLEET,
    "voltcloud.v1.FleetService/SetPaymentMode": FLEET,
    "voltcloud.v1.FleetService/GetFleetStatement": FLEET,
    "voltcloud.v1.FleetService/GetVehicleState": FLEET | {Role.DRIVER},
    # A fleet's charging tokens (RFID cards): its manager issues, blocks, expires and lists them.
    "voltcloud.v1.FleetService/IssueChargingToken": FLEET,
    "voltcloud.v1.FleetService/BlockChargingToken": FLEET,
    "voltcloud.v1.FleetService/SetChargingTokenExpiry": FLEET,
    "voltcloud.v1.FleetService/ListChargingTokens": FLEET,
    "voltcloud.v1.FleetService/GetFleetDailyReport": FLEET,
    # Vehicle telemetry (issue 13): the fleet's manager, the vehicle's driver, the admin; rows scoped in telemetry.
    "voltcloud.v1.FleetService/GetVehicleTrack": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/WatchVehicles": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/ListVehicleAlerts": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/SetFleetAlertLimits": FLEET,
    # fleet-swap: vehicle and driver lifecycle. A driver updates or retires their own private car only.
    "voltcloud.v1.FleetService/UpdateVehicle": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/RetireVehicle": FLEET | {Role.DRIVER},
    "voltcloud.v1.FleetService/UpdateDriver": FLEET,
    "voltcloud.v1.FleetService/SuspendDriver": FLEET,
    "voltcloud.v1.FleetService/RemoveDriver": FLEET,
    # MaintenanceService: engineers and operators.
    "voltcloud.v1.MaintenanceService/ListAlarms": STAFF,
    "voltcloud.v1.MaintenanceService/AcknowledgeAlarm": STAFF,
    "voltcloud.v1.MaintenanceService/CreateWorkOrder": STAFF,
    "voltcloud.v1.MaintenanceService/GetWorkOrder": STAFF,
    "voltcloud.v1.MaintenanceService/ListWorkOrders": STAFF,
    "voltcloud.v1.MaintenanceService/AssignWorkOrder": OPERATORS,
    "voltcloud.v1.MaintenanceService/UpdateWorkOrderProgress": STAFF,
    "voltcloud.v1.MaintenanceService/CloseWorkOrder": STAFF,
    "voltcloud.v1.MaintenanceService/GetBatteryHealth": STAFF | {Role.FLEET_MANAGER},
    "voltcloud.v1.MaintenanceService/RegisterEngineer": OPERATORS,
    # maint-core (issue 14): the control centre, the closed loop, SLA policy, notifications, fault analysis.
    # Engineers see their operator's alarms and report, progress and resolve work; verifying, reopening and
    # policies are the operator's.
    "voltcloud.v1.MaintenanceService/ClearAlarm": STAFF,
    "voltcloud.v1.MaintenanceService/WatchAlarms": STAFF,
    "voltcloud.v1.MaintenanceService/ReportFault": STAFF,
    "voltcloud.v1.MaintenanceService/ReopenWorkOrder": OPERATORS,
    "voltcloud.v1.MaintenanceService/SetSlaPolicy": OPERATORS,
    "voltcloud.v1.MaintenanceService/GetSlaPolicy": STAFF,
    "voltcloud.v1.MaintenanceService/SetNotificationPreferences": STAFF,
    "voltcloud.v1.MaintenanceService/GetFaultAnalysis": OPERATORS,
    # maint-field: engineers and certificates (operators manage, staff read), dispatch, the engineer app,
    # inspections and safety (staff report, operators close), pack withdrawal (operators).
    "voltcloud.v1.MaintenanceService/UpdateEngineer": OPERATORS,
    "voltcloud.v1.MaintenanceService/RetireEngineer": OPERATORS,
    "voltcloud.v1.MaintenanceService/GetEngineer": STAFF,
    "voltcloud.v1.MaintenanceService/ListEngineers": STAFF,
    "voltcloud.v1.MaintenanceService/AddCertificate": OPERATORS,
    "voltcloud.v1.MaintenanceService/ListCertificates": STAFF,
    "voltcloud.v1.MaintenanceService/PlanDispatch": OPERATORS,
    "voltcloud.v1.MaintenanceService/EngineerConnect": STAFF,
    "voltcloud.v1.MaintenanceService/SubmitSiteInspection": STAFF,
    "voltcloud.v1.MaintenanceService/ListSiteInspections": STAFF,
    "voltcloud.v1.MaintenanceService/ReportSafetyIncident": STAFF,
    "voltcloud.v1.MaintenanceService/ListSafetyIncidents": STAFF,
    "voltcloud.v1.MaintenanceService/CloseSafetyIncident": OPERATORS,
    "voltcloud.v1.MaintenanceService/WithdrawPack": OPERATORS,
    "voltcloud.v1.MaintenanceService/SetBatteryPolicy": OPERATORS,
    # IngestService: only gateways speak the uplink.
    "voltcloud.v1.IngestService/Uplink": GATEWAYS,
    "voltcloud.v1.IngestService/PushTelemetry": GATEWAYS,
    # Charging tokens (issue 9 finding 4): gateways authorize idTags at their operator's stations; fleets and
    # drivers register their own tokens; owners, the operator a token is valid at, and admins block them.
    "voltcloud.v1.IngestService/AuthorizeIdTag": GATEWAYS,
    "voltcloud.v1.IngestService/ResolveVehicles": GATEWAYS,
    "voltcloud.v1.IngestService/RegisterChargingToken": ADMIN | {Role.FLEET_MANAGER, Role.DRIVER},
    "voltcloud.v1.IngestService/SetChargingTokenStatus": CUSTOMERS,
}


def required_roles(method: str) -> frozenset[Role]:
    """Roles allowed to call `/package.Service/Method`; an unlisted method is closed to everyone."""
    return PERMISSIONS.get(method.lstrip("/"), frozenset())


def service_methods(service_full_name: str) -> list[str]:
    service = descriptor_pool.Default().FindServiceByName(service_full_name)
    return [f"{service_full_name}/{m.name}" for m in service.methods]


def check_table_covers(service_full_names: Iterable[str]) -> None:
    missing = [m for s in service_full_names for m in service_methods(s) if m not in PERMISSIONS]
    if missing:
        raise RuntimeError(f"permissions table has no entry for: {', '.join(missing)}")
