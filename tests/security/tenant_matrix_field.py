"""Tenant-matrix rows of maint-field's MaintenanceService RPCs (issue 14): engineers and certificates, dispatch,
the engineer app, site inspections, safety incidents, battery health and pack withdrawal. Joined into
`tenant_matrix.ROWS`; the conventions are tenant_matrix.py's."""

from __future__ import annotations

from google.protobuf.message import Message

from voltcloud.api.v1 import common_pb2, maintenance_pb2
from voltcloud.maintenance.inspections import SIX_S, TEMPLATES

from .tenant_matrix import DR, EN, FM, NF, OK, OK_EMPTY, OP, PD, A, Call, Row, both, cell, ex

_OWN_OP = {A: both(OK), OP: cell(OK, NF)}  # operators manage their own; another's rows are not found
_OWN_STAFF = {A: both(OK), OP: cell(OK, NF), EN: cell(OK, NF)}
_LIST_STAFF = {A: both(OK), OP: cell(OK, OK_EMPTY), EN: cell(OK, OK_EMPTY)}


def _engineer(c: Call, engineer_id: str = "") -> maintenance_pb2.Engineer:
    return maintenance_pb2.Engineer(
        engineer_id=engineer_id, name=f"matrix {c.key}", skills=["hv"], operator_id=c.side.operator_id,
        home_position=common_pb2.LatLng(lat=c.side.position[0], lng=c.side.position[1]),
    )  # fmt: skip


async def _update(c: Call) -> Message:
    engineer_id = await c.fresh.engineer(c.side)  # type: ignore[attr-defined]
    return maintenance_pb2.UpdateEngineerRequest(idempotency_key=c.key, engineer=_engineer(c, engineer_id))


async def _retire(c: Call) -> Message:
    engineer_id = await c.fresh.engineer(c.side)  # type: ignore[attr-defined]
    return maintenance_pb2.RetireEngineerRequest(idempotency_key=c.key, engineer_id=engineer_id, reason="matrix")


async def _get(c: Call) -> Message:
    return maintenance_pb2.GetEngineerRequest(engineer_id=await c.fresh.engineer(c.side))  # type: ignore[attr-defined]


async def _certificate(c: Call) -> Message:
    engineer_id = await c.fresh.engineer(c.side)  # type: ignore[attr-defined]
    certificate = maintenance_pb2.Certificate(
        engineer_id=engineer_id, kind="hv", number=c.key, issue_time={"seconds": 1_900_000_000},
        expire_time={"seconds": 1_990_000_000},
    )  # fmt: skip
    return maintenance_pb2.AddCertificateRequest(idempotency_key=c.key, certificate=certificate)


async def _assign(c: Call) -> Message:
    work_order_id = await c.fresh.work_order(c.side)  # type: ignore[attr-defined]
    engineer_id = await c.fresh.engineer(c.side)  # type: ignore[attr-defined]
    return maintenance_pb2.AssignWorkOrderRequest(
        idempotency_key=c.key, work_order_id=work_order_id, engineer_id=engineer_id
    )


async def _connect(c: Call) -> Message:
    engineer_id = await c.fresh.engineer(c.side)  # type: ignore[attr-defined]
    return maintenance_pb2.EngineerConnectRequest(hello=maintenance_pb2.EngineerHello(engineer_id=engineer_id))


def _six_s(c: Call) -> Message:
    items = [maintenance_pb2.InspectionItem(code=code, score=spec.max_score) for code, spec in TEMPLATES[SIX_S].items()]
    return maintenance_pb2.SubmitSiteInspectionRequest(
        idempotency_key=c.key, kind=maintenance_pb2.SITE_INSPECTION_KIND_SIX_S, station_id=c.side.station_id,
        items=items,
    )  # fmt: skip


def _incident(c: Call) -> Message:
    incident = maintenance_pb2.SafetyIncident(
        severity=maintenance_pb2.INCIDENT_SEVERITY_NEAR_MISS, station_id=c.side.station_id,
        occur_time={"seconds": 1_700_000_000}, description="matrix near miss",
    )  # fmt: skip
    return maintenance_pb2.ReportSafetyIncidentRequest(idempotency_key=c.key, incident=incident)


async def _close(c: Call) -> Message:
    incident_id = await c.fresh.incident(c.side)  # type: ignore[attr-defined]
    return maintenance_pb2.CloseSafetyIncidentRequest(idempotency_key=c.key, incident_id=incident_id, resolution="ok")


_SELF_ONLY = ex(PD, why="an engineer's app connects only as that engineer; the matrix's engineer is another one")

MAINTENANCE_FIELD_ROWS = [
    Row(
        "MaintenanceService/RegisterEngineer",
        lambda c: maintenance_pb2.RegisterEngineerRequest(idempotency_key=c.key, engineer=_engineer(c)),
        _OWN_OP,
    ),
    Row("MaintenanceService/UpdateEngineer", _update, _OWN_OP),
    Row("MaintenanceService/RetireEngineer", _retire, _OWN_OP),
    Row("MaintenanceService/GetEngineer", _get, _OWN_STAFF),
    Row(
        "MaintenanceService/ListEngineers",
        lambda c: maintenance_pb2.ListEngineersRequest(operator_id=c.side.operator_id, page_size=5),
        _LIST_STAFF,
    ),
    Row("MaintenanceService/AddCertificate", _certificate, _OWN_OP),
    Row(
        "MaintenanceService/ListCertificates",
        lambda c: maintenance_pb2.ListCertificatesRequest(operator_id=c.side.operator_id, page_size=5),
        {A: both(OK), OP: cell(OK, OK_EMPTY), EN: cell(OK, OK_EMPTY)},
    ),
    Row("MaintenanceService/AssignWorkOrder", _assign, _OWN_OP),
    Row(
        "MaintenanceService/PlanDispatch",
        lambda c: maintenance_pb2.PlanDispatchRequest(idempotency_key=c.key, operator_id=c.side.operator_id),
        _OWN_OP,
    ),
    Row("MaintenanceService/EngineerConnect", _connect, {A: both(OK), OP: cell(OK, NF), EN: both(_SELF_ONLY)}),
    Row("MaintenanceService/SubmitSiteInspection", _six_s, _OWN_STAFF),
    Row(
        "MaintenanceService/ListSiteInspections",
        lambda c: maintenance_pb2.ListSiteInspectionsRequest(operator_id=c.side.operator_id, page_size=5),
        _LIST_STAFF,
    ),
    Row("MaintenanceService/ReportSafetyIncident", _incident, _OWN_STAFF),
    Row(
        "MaintenanceService/ListSafetyIncidents",
        lambda c: maintenance_pb2.ListSafetyIncidentsRequest(operator_id=c.side.operator_id, page_size=5),
        _LIST_STAFF,
    ),
    Row("MaintenanceService/CloseSafetyIncident", _close, _OWN_OP),
    Row(
        "MaintenanceService/GetBatteryHealth",
        lambda c: maintenance_pb2.GetBatteryHealthRequest(pack_id=c.side.pack_id),
        {**_OWN_STAFF, FM: both(ex(NF, why="fleets own no packs: battery health is the operator's"))},
    ),
    Row(
        "MaintenanceService/SetBatteryPolicy",
        lambda c: maintenance_pb2.SetBatteryPolicyRequest(
            idempotency_key=c.key, operator_id=c.side.operator_id, retirement_soh_permille=800
        ),
        _OWN_OP,
    ),
    # Last of the field rows: it takes the side's pack out of circulation (ordering's rows ran before).
    Row(
        "MaintenanceService/WithdrawPack",
        lambda c: maintenance_pb2.WithdrawPackRequest(idempotency_key=c.key, pack_id=c.side.pack_id, reason="matrix"),
        _OWN_OP,
    ),
]

FIELD_METHODS = frozenset(row.method.split("/")[1] for row in MAINTENANCE_FIELD_ROWS)
__all__ = ["DR", "FIELD_METHODS", "MAINTENANCE_FIELD_ROWS"]
