"""The tenant matrix as data: for every RPC, every role, the caller's own tenant and another tenant, the
outcome the platform must give (docs/security-matrix.md explains how to run it and how to add a row).

A caller always belongs to tenant A (operator op A, fleet A, a driver of fleet A, ...). A row's request
builder gets the ids of the *target* side: A's objects for the "own" cell, tenant B's real objects for the
"other" cell. Roles a row does not name must get PERMISSION_DENIED, so opening an RPC to a new role shows up
here as a mismatch. Expectations encode the secure behaviour (issue 9), not whatever the code does today.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from voltcloud.api.v1 import (
    common_pb2,
    dispatch_pb2,
    fleet_pb2,
    ingest_pb2,
    maintenance_pb2,
    ordering_pb2,
    settlement_pb2,
    stations_pb2,
)
from voltcloud.fleet.vin import check_digit
from voltcloud.platform.auth import Role

Scope = Literal["own", "other"]
SCOPES: tuple[Scope, ...] = ("own", "other")
PACKAGE = "voltcloud.v1"

# Outcomes are gRPC status code names, plus OK_EMPTY: OK with every repeated field of the response empty
# (a list filtered to another tenant's rows must come back empty, or be refused).
OK, OK_EMPTY = "OK", "OK_EMPTY"
NF, PD, UN = "NOT_FOUND", "PERMISSION_DENIED", "UNIMPLEMENTED"
FP, IA = "FAILED_PRECONDITION", "INVALID_ARGUMENT"

A, OP, FM, DR = Role.PLATFORM_ADMIN, Role.OPERATOR, Role.FLEET_MANAGER, Role.DRIVER
SP, EN, GW = Role.SPECIALIST, Role.ENGINEER, Role.GATEWAY


@dataclass(frozen=True)
class Expect:
    """The outcomes accepted in one cell (usually one) and, for anything but OK/denied, why."""

    codes: frozenset[str]
    why: str = ""

    def accepts(self, observed: str) -> bool:
        # An own-tenant list that happens to be empty is still a success.
        return observed in self.codes or (observed == OK_EMPTY and OK in self.codes)

    def __str__(self) -> str:
        return "|".join(sorted(self.codes))


def ex(*codes: str, why: str = "") -> Expect:
    return Expect(frozenset(codes), why)


Cell = tuple[Expect, Expect]  # (own, other)


def cell(own: str | Expect, other: str | Expect, why: str = "") -> Cell:
    def norm(value: str | Expect) -> Expect:
        return value if isinstance(value, Expect) else ex(value, why=why)

    return norm(own), norm(other)


def both(code: str | Expect, why: str = "") -> Cell:
    return cell(code, code, why)


DENIED: Cell = both(PD)


@dataclass(frozen=True)
class Side:
    """Real ids of one tenant's objects (seeded by the demo world or created by the test's setup)."""

    operator_id: str
    station_id: str  # a swap station of the operator
    charge_station_id: str  # a charging station of the operator
    connector_id: str  # a free connector of that charging station
    pack_id: str  # a pack in the swap station
    position: tuple[float, float]  # of the charging station
    unit_id: str  # a valet specialist of the operator (the SPECIALIST caller of tenant A)
    gateway_id: str
    fleet_id: str
    sub_fleet_id: str
    driver_id: str  # a driver of the fleet, driving `vehicle_id`
    vehicle_id: str
    private_driver_id: str  # a driver without a fleet and their private car
    private_vehicle_id: str
    fleet_account_id: str
    wallet_id: str  # the fleet driver's own wallet
    private_wallet_id: str
    operator_account_id: str
    order_id: str  # placed by `driver_id` for `vehicle_id`, served by the operator
    valet_order_id: str  # placed by the fleet manager, served by `unit_id`
    task_id: str  # the valet order's task
    reservation_id: str  # made by `driver_id` at the charging station
    rate_model_id: str
    bills: Mapping[str, str]  # account id -> a bill of that account
    entries: Mapping[str, str]  # account id -> a journal entry of that account

    def account_for(self, role: Role, driver: str = "fleet") -> str:
        """The account a caller of this role would use: its fleet's, its own wallet, or its operator's."""
        if role is Role.FLEET_MANAGER:
            return self.fleet_account_id
        if role is Role.DRIVER:
            return self.private_wallet_id if driver == "private" else self.wallet_id
        if role is Role.PLATFORM_ADMIN:
            return self.fleet_account_id
        return self.operator_account_id


class Fresh(Protocol):
    """Fresh objects for mutating rows, so no cell depends on another cell's side effects."""

    async def order(self, side: Side) -> str: ...  # an active order by the side's driver
    async def reservation(self, side: Side) -> str: ...  # an active reservation by the side's driver
    async def quote(self, subject: str, vehicle_id: str, operator_id: str) -> tuple[str, str]: ...
    async def hold(self, account_id: str) -> str: ...  # an active hold placed by the admin
    async def offline_payment(self, account_id: str) -> str: ...  # a pending offline top-up
    async def statement(self) -> str: ...  # an imported provider statement
    async def station_version(self, station_id: str) -> int: ...
    async def charging_token(self, side: Side, owner_kind: str) -> str: ...  # registered by the side's owner
    async def applicant(self, side: Side) -> str: ...  # a new driver with a pending application to the side's fleet
    async def alarm(self, side: Side) -> str: ...  # an open alarm at the side's swap station
    async def work_order(self, side: Side, resolved: bool = False) -> str: ...  # OPEN (or RESOLVED) at the station
    async def fleet_vehicle(self, side: Side, private: bool = False) -> str: ...  # a new vehicle (fleet's / private)
    async def member(self, side: Side) -> str: ...  # a new approved driver of the side's fleet
    async def mobile_unit(self, side: Side) -> str: ...  # a new van of the side's operator (off shift)
    async def complaint(self, side: Side) -> str: ...  # an open complaint on a fresh order of the side's driver


@dataclass(frozen=True)
class Call:
    """What a request builder gets: who calls, the target side, the caller's own side, a unique key."""

    role: Role
    subject: str
    driver: str  # "fleet" | "private": which kind of driver the DRIVER caller is in this row
    side: Side
    home: Side
    key: str
    fresh: Fresh

    @property
    def account(self) -> str:
        return self.side.account_for(self.role, self.driver)

    @property
    def vehicle(self) -> str:
        return self.side.private_vehicle_id if self.driver == "private" else self.side.vehicle_id


Builder = Callable[[Call], Message | Awaitable[Message]]


@dataclass(frozen=True)
class Row:
    method: str  # "StationService/GetStation"
    build: Builder
    expect: Mapping[Role, Cell]
    variant: str = ""
    driver: Literal["fleet", "private"] = "fleet"

    @property
    def path(self) -> str:
        return f"/{PACKAGE}.{self.method}"

    @property
    def label(self) -> str:
        return f"{self.method}[{self.variant}]" if self.variant else self.method

    def expected(self, role: Role, scope: Scope) -> Expect:
        own, other = self.expect.get(role, DENIED)
        return own if scope == "own" else other


def fleet_manager(fleet_id: str) -> str:
    return f"manager-of-{fleet_id}"


def caller(role: Role, home: Side, driver: str = "fleet") -> tuple[str, str | None]:
    """(subject, tenant) of the tenant-A caller of a role. Specialists, engineers and gateways carry the
    operator they work for; a fleet driver carries the fleet; a private driver none."""
    if role is Role.PLATFORM_ADMIN:
        return "matrix-admin", None
    if role is Role.DRIVER:
        if driver == "private":
            return home.private_driver_id, None
        return home.driver_id, f"fleet:{home.fleet_id}"
    if role is Role.FLEET_MANAGER:
        return fleet_manager(home.fleet_id), f"fleet:{home.fleet_id}"
    # Subjects are distinct per tenant: a cell must never pass because two tenants share a subject.
    subject = {
        Role.OPERATOR: f"operator-of-{home.operator_id}",
        Role.SPECIALIST: home.unit_id,
        Role.ENGINEER: f"engineer-of-{home.operator_id}",
        Role.GATEWAY: home.gateway_id,
    }[role]
    return subject, f"operator:{home.operator_id}"


# ---- small request helpers ---------------------------------------------------------------------------------


def _ts(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _window(start_min: int, end_min: int) -> common_pb2.TimeWindow:
    now = dt.datetime.now(dt.UTC)
    return common_pb2.TimeWindow(
        start=_ts(now + dt.timedelta(minutes=start_min)), end=_ts(now + dt.timedelta(minutes=end_min))
    )


def _cny(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="CNY")


def _pos(side: Side) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=side.position[0], lng=side.position[1])


_reservation_slots = iter(range(10_000))


# ---- StationService ---------------------------------------------------------------------------------------

_STAFF_OWN = {A: both(OK), OP: cell(OK, NF), EN: cell(OK, NF)}
_PUBLIC_STATION = {A: both(OK), OP: cell(OK, NF), EN: cell(OK, NF), FM: both(OK), DR: both(OK), SP: both(OK)}
_PUBLIC_STATION[GW] = both(OK)


def _create_station(c: Call) -> Message:
    charger = stations_pb2.Charger(
        connectors=[stations_pb2.Connector(standard=common_pb2.CONNECTOR_STANDARD_GBT_DC, max_power_w=60_000)]
    )
    return stations_pb2.CreateStationRequest(
        idempotency_key=c.key,
        station=stations_pb2.Station(
            operator_id=c.side.operator_id,
            kind=common_pb2.STATION_KIND_CHARGING,
            name=f"matrix {c.key}",
            position=_pos(c.side),
            charging=stations_pb2.ChargingStationSpec(chargers=[charger], site_power_cap_w=120_000),
        ),
    )


async def _update_station(c: Call) -> Message:
    version = await c.fresh.station_version(c.side.charge_station_id)
    return stations_pb2.UpdateStationRequest(
        idempotency_key=c.key,
        station=stations_pb2.Station(station_id=c.side.charge_station_id, version=version, name=f"renamed {c.key}"),
        update_paths=["name"],
    )


def _register_pack(c: Call) -> Message:
    return stations_pb2.RegisterPackRequest(
        idempotency_key=c.key,
        pack=stations_pb2.Pack(
            pack_id=f"pk-m-{c.key}"[-60:],
            pack_type_id="1",
            operator_id=c.side.operator_id,
            soc_permille=500,
            soh_permille=990,
        ),
    )


STATION_ROWS = [
    Row(
        "StationService/CreateOperator",
        lambda c: stations_pb2.CreateOperatorRequest(idempotency_key=c.key, name=f"matrix {c.key}"),
        {A: both(OK)},
    ),
    Row("StationService/CreateStation", _create_station, {A: both(OK), OP: cell(OK, PD)}),
    Row(
        "StationService/GetStation",
        lambda c: stations_pb2.GetStationRequest(station_id=c.side.station_id),
        _PUBLIC_STATION,
    ),
    Row(
        "StationService/ListStations",
        lambda c: stations_pb2.ListStationsRequest(operator_id=c.side.operator_id, page_size=5),
        {**_PUBLIC_STATION, OP: cell(OK, PD), EN: cell(OK, PD)},
    ),
    Row("StationService/UpdateStation", _update_station, {A: both(OK), OP: cell(OK, NF)}),
    Row(
        "StationService/GetStationTwin",
        lambda c: stations_pb2.GetStationTwinRequest(station_id=c.side.station_id),
        _STAFF_OWN,
    ),
    Row(
        "StationService/WatchStation",
        lambda c: stations_pb2.WatchStationRequest(station_id=c.side.station_id),
        _STAFF_OWN,
    ),
    Row(
        "StationService/SendStationCommand",
        lambda c: stations_pb2.SendStationCommandRequest(
            idempotency_key=c.key,
            station_id=c.side.charge_station_id,
            command=stations_pb2.StationCommand(
                change_availability=stations_pb2.ChangeAvailabilityCommand(available=True)
            ),
            timeout=duration_pb2.Duration(seconds=1),
        ),
        {A: both(OK), OP: cell(OK, NF)},
    ),
    Row("StationService/RegisterPack", _register_pack, {A: both(OK), OP: cell(OK, PD)}),
    Row("StationService/GetPack", lambda c: stations_pb2.GetPackRequest(pack_id=c.side.pack_id), _STAFF_OWN),
    Row(
        "StationService/ListPacks",
        lambda c: stations_pb2.ListPacksRequest(operator_id=c.side.operator_id, page_size=5),
        {A: both(OK), OP: cell(OK, PD), EN: cell(OK, PD)},
    ),
    Row(
        "StationService/GetPackHistory",
        lambda c: stations_pb2.GetPackHistoryRequest(pack_id=c.side.pack_id),
        _STAFF_OWN,
    ),
    Row(
        "StationService/ReportInspection",
        lambda c: stations_pb2.ReportInspectionRequest(
            idempotency_key=c.key, pack_id=c.side.pack_id, defect=stations_pb2.DEFECT_KIND_NONE
        ),
        {**_STAFF_OWN, GW: cell(OK, NF)},
    ),
    Row(
        "StationService/AssignRateModel",
        lambda c: stations_pb2.AssignRateModelRequest(
            idempotency_key=c.key, station_id=c.side.station_id, rate_model_id=c.side.rate_model_id
        ),
        {A: both(OK), OP: cell(OK, NF)},
    ),
    Row(
        "StationService/AssignRateModel",
        lambda c: stations_pb2.AssignRateModelRequest(
            idempotency_key=c.key, station_id=c.home.station_id, rate_model_id=c.side.rate_model_id
        ),
        {
            # A station is priced only by its own operator's models or platform tariffs, whoever assigns them:
            # another operator's model would route this station's revenue through that operator's tariff.
            A: cell(OK, ex(NF, why="another operator's rate model on a station: not even the admin")),
            OP: cell(OK, ex(NF, PD, IA, why="another operator's rate model on my station")),
        },
        variant="own station, side's rate model",
    ),
    Row(
        "StationService/ListStationSessions",
        lambda c: stations_pb2.ListStationSessionsRequest(station_id=c.side.charge_station_id),
        _STAFF_OWN,
    ),
]

# ---- OrderingService --------------------------------------------------------------------------------------

# Issue 9 #3: a vehicle is ordered for by its fleet's manager, the fleet's drivers, or its private owner;
# an operator (or anyone else) gets NOT_FOUND.
_VEHICLE = {A: both(OK), OP: both(NF), FM: cell(OK, NF), DR: cell(OK, NF)}
_PRIVATE_VEHICLE = {A: both(OK), OP: both(NF), FM: both(NF), DR: cell(OK, NF)}
_ORDER_READ = {A: both(OK), OP: cell(OK, NF), FM: cell(OK, NF), DR: cell(OK, NF)}


def _quote(c: Call) -> Message:
    return ordering_pb2.QuotePowerUpRequest(
        vehicle_id=c.vehicle,
        position=_pos(c.home),
        soc_permille=200,
        target_soc_permille=800,
        allowed_modes=[common_pb2.POWER_UP_MODE_CHARGE],
    )


async def _create_order(c: Call) -> Message:
    quote_id, option_id = await c.fresh.quote(c.subject, c.vehicle, c.side.operator_id)
    return ordering_pb2.CreateOrderRequest(
        idempotency_key=c.key, quote_id=quote_id, option_id=option_id, allow_fallback=True
    )


async def _create_order_paid_by_side(c: Call) -> Message:
    home_vehicle = c.home.private_vehicle_id if c.driver == "private" else c.home.vehicle_id
    quote_id, option_id = await c.fresh.quote(c.subject, home_vehicle, c.home.operator_id)
    return ordering_pb2.CreateOrderRequest(
        idempotency_key=c.key,
        quote_id=quote_id,
        option_id=option_id,
        allow_fallback=True,
        payer=common_pb2.Payer(account_id=c.account),
    )


async def _cancel_order(c: Call) -> Message:
    order_id = await c.fresh.order(c.side)
    return ordering_pb2.CancelOrderRequest(idempotency_key=c.key, order_id=order_id, reason="matrix")


def _create_reservation(c: Call) -> Message:
    # The station is public (the caller's home one); the vehicle decides. Windows never overlap.
    slot = next(_reservation_slots)
    return ordering_pb2.CreateReservationRequest(
        idempotency_key=c.key,
        station_id=c.home.charge_station_id,
        vehicle_id=c.vehicle,
        window=_window(60 + slot * 20, 75 + slot * 20),
    )


async def _cancel_reservation(c: Call) -> Message:
    reservation_id = await c.fresh.reservation(c.side)
    return ordering_pb2.CancelReservationRequest(idempotency_key=c.key, reservation_id=reservation_id)


def _start_by_scan(c: Call) -> Message:
    return ordering_pb2.StartByScanRequest(
        idempotency_key=c.key,
        qr_payload=f"voltcloud://c/{c.home.charge_station_id}/{c.home.connector_id}",
        vehicle_id=c.vehicle,
        target_soc_permille=800,
    )


def _road_conditions(c: Call) -> Message:
    lat, lng = c.side.position
    condition = ordering_pb2.RoadCondition(
        congestion_factor_permille=1500,
        expire_time=_ts(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)),
        to=common_pb2.LatLng(lat=lat + 0.002, lng=lng + 0.002),
    )
    getattr(condition, "from").CopyFrom(common_pb2.LatLng(lat=lat, lng=lng))  # `from` is a Python keyword
    return ordering_pb2.PushRoadConditionsRequest(idempotency_key=c.key, source="matrix", conditions=[condition])


async def _review_complaint(c: Call) -> Message:
    complaint_id = await c.fresh.complaint(c.side)
    return ordering_pb2.ReviewComplaintRequest(idempotency_key=c.key, complaint_id=complaint_id, accept=True)


_OWN_PREFERENCES = {A: both(OK), FM: both(OK), DR: both(OK)}

_OFFLINE_SCAN = ex(OK, FP, "UNAVAILABLE", why="no gateway is connected: the remote start cannot be sent")

ORDERING_ROWS = [
    Row("OrderingService/QuotePowerUp", _quote, _VEHICLE),
    Row("OrderingService/QuotePowerUp", _quote, _PRIVATE_VEHICLE, variant="private car", driver="private"),
    Row("OrderingService/CreateOrder", _create_order, _VEHICLE),
    Row(
        "OrderingService/CreateOrder",
        _create_order,
        {**_PRIVATE_VEHICLE, A: both(ex(OK, FP, why="the admin's own (empty) wallet pays for a private car"))},
        variant="private car",
        driver="private",
    ),
    # Issue 9 #2: the payer must be an account the caller may spend from; another tenant's → PERMISSION_DENIED.
    Row(
        "OrderingService/CreateOrder",
        _create_order_paid_by_side,
        {
            A: both(OK),
            OP: both(ex(NF, PD, why="an operator orders for no vehicle and spends no customer's account")),
            FM: cell(OK, PD),
            DR: cell(ex(OK, PD, why="own wallet: allowed or refused, never another's"), PD),
        },
        variant="payer = side's account",
    ),
    Row(
        "OrderingService/CreateOrder",
        _create_order_paid_by_side,
        {
            A: both(OK),
            OP: both(ex(NF, PD, why="an operator orders for no vehicle")),
            FM: both(ex(NF, PD, why="not the fleet's vehicle")),
            DR: cell(ex(OK, PD, why="own wallet: allowed or refused, never another's"), PD),
        },
        variant="private car, payer = side's wallet",
        driver="private",
    ),
    Row(
        "OrderingService/GetOrder",
        lambda c: ordering_pb2.GetOrderRequest(order_id=c.side.order_id),
        {**_ORDER_READ, SP: both(ex(NF, why="a specialist sees only orders assigned to their unit"))},
    ),
    Row(
        "OrderingService/GetOrder",
        lambda c: ordering_pb2.GetOrderRequest(order_id=c.side.valet_order_id),
        {
            **_ORDER_READ,
            DR: both(ex(NF, why="a driver sees only the orders they placed; the fleet manager placed this")),
            SP: cell(OK, NF),
        },
        variant="valet order",
    ),
    Row(
        "OrderingService/ListOrders",
        lambda c: ordering_pb2.ListOrdersRequest(vehicle_id=c.side.vehicle_id, page_size=10),
        {A: both(OK), OP: cell(OK, OK_EMPTY), FM: cell(OK, OK_EMPTY), DR: cell(OK, OK_EMPTY)},
    ),
    Row(
        "OrderingService/WatchOrder",
        lambda c: ordering_pb2.WatchOrderRequest(order_id=c.side.order_id),
        _ORDER_READ,
    ),
    Row("OrderingService/CancelOrder", _cancel_order, _ORDER_READ),
    Row("OrderingService/CreateReservation", _create_reservation, _VEHICLE),
    Row(
        "OrderingService/CancelReservation",
        _cancel_reservation,
        {
            A: both(OK),
            OP: cell(OK, NF),
            FM: cell(ex(OK, NF, why="the fleet's driver made it"), NF),
            DR: cell(OK, NF),
        },
    ),
    Row(
        "OrderingService/ListReservations",
        lambda c: ordering_pb2.ListReservationsRequest(station_id=c.side.charge_station_id, page_size=10),
        {
            A: both(OK),
            OP: cell(OK, OK_EMPTY),
            FM: both(ex(OK, OK_EMPTY, why="none made by the caller")),
            DR: cell(OK, OK_EMPTY),
        },
    ),
    Row(
        "OrderingService/StartByScan",
        _start_by_scan,
        {A: both(_OFFLINE_SCAN), OP: both(NF), FM: cell(_OFFLINE_SCAN, ex(NF)), DR: cell(_OFFLINE_SCAN, ex(NF))},
    ),
    Row(
        "OrderingService/ListRecommendations",
        lambda c: ordering_pb2.ListRecommendationsRequest(
            position=_pos(c.home), radius_m=20_000, vehicle_id=c.vehicle, page_size=5
        ),
        {**_VEHICLE, **dict.fromkeys((SP, EN, GW), both(ex(PD, NF, why="no vehicle of theirs")))},
    ),
    # Issue 9 #5: an operator pushes road conditions only around its own stations.
    Row("OrderingService/PushRoadConditions", _road_conditions, {A: both(OK), OP: cell(OK, PD)}),
    # Care for drivers (issue 12): only the order's driver or its fleet's manager complains; the side's order
    # is not paid yet, so the own cell gets as far as the payment check.
    Row(
        "OrderingService/FileComplaint",
        lambda c: ordering_pb2.FileComplaintRequest(idempotency_key=c.key, order_id=c.side.order_id, reason="matrix"),
        {
            A: both(ex(FP, why="the order is not paid: nothing to refund")),
            FM: cell(ex(FP, why="the fleet's order, not paid yet"), NF),
            DR: cell(ex(FP, why="own order, not paid yet"), NF),
        },
    ),
    Row(
        "OrderingService/ListComplaints",
        lambda c: ordering_pb2.ListComplaintsRequest(order_id=c.side.order_id, page_size=10),
        {A: both(OK), OP: cell(OK, OK_EMPTY), FM: cell(OK, OK_EMPTY), DR: cell(OK, OK_EMPTY)},
    ),
    Row("OrderingService/ReviewComplaint", _review_complaint, {A: both(OK), OP: cell(OK, NF)}),
    Row(
        "OrderingService/SubmitFeedback",
        lambda c: ordering_pb2.SubmitFeedbackRequest(idempotency_key=c.key, order_id=c.side.order_id, text="matrix"),
        {A: both(OK), FM: cell(OK, NF), DR: cell(OK, NF)},
    ),
    Row(
        "OrderingService/ListFeedback",
        lambda c: ordering_pb2.ListFeedbackRequest(station_id=c.side.charge_station_id, page_size=10),
        {
            A: both(OK),
            OP: cell(OK, OK_EMPTY),
            FM: both(ex(OK, OK_EMPTY, why="only what the caller sent")),
            DR: both(ex(OK, OK_EMPTY, why="only what the caller sent")),
        },
    ),
    # Preferences are always the caller's own (no tenant in the request); favourite stations are public.
    Row("OrderingService/GetPreferences", lambda c: ordering_pb2.GetPreferencesRequest(), _OWN_PREFERENCES),
    Row(
        "OrderingService/SetPreferences",
        lambda c: ordering_pb2.SetPreferencesRequest(
            preferences=ordering_pb2.DriverPreferences(favourite_station_ids=[c.side.charge_station_id])
        ),
        _OWN_PREFERENCES,
    ),
]

# ---- DispatchService --------------------------------------------------------------------------------------


def _step(c: Call) -> Message:
    return dispatch_pb2.ReportTaskStepRequest(
        idempotency_key=c.key,
        step=dispatch_pb2.StepUpdate(task_id=c.side.task_id, step_index=0, status=dispatch_pb2.STEP_STATUS_DONE),
    )


def mobile_unit(side: Side) -> dispatch_pb2.MobileUnit:
    """A van of the side's operator, at the side's charging station."""
    return dispatch_pb2.MobileUnit(
        operator_id=side.operator_id, kind=dispatch_pb2.MOBILE_UNIT_KIND_VAN, name="matrix van",
        home=common_pb2.LatLng(lat=side.position[0], lng=side.position[1]), energy_on_board_wh=100_000,
        connector_standards=[common_pb2.CONNECTOR_STANDARD_GBT_DC], shift_start_s=0, shift_end_s=86_400,
    )  # fmt: skip


async def _update_unit(c: Call) -> Message:
    unit_id = await c.fresh.mobile_unit(c.side)
    return dispatch_pb2.UpdateMobileUnitRequest(
        idempotency_key=c.key, unit_id=unit_id, unit=dispatch_pb2.MobileUnit(name="renamed"), update_fields=["name"]
    )


async def _retire_unit(c: Call) -> Message:
    unit_id = await c.fresh.mobile_unit(c.side)
    return dispatch_pb2.RetireMobileUnitRequest(idempotency_key=c.key, unit_id=unit_id)


DISPATCH_ROWS = [
    Row(
        "DispatchService/Connect",
        lambda c: dispatch_pb2.ConnectRequest(seq=0, hello=dispatch_pb2.AppHello(specialist_id=c.side.unit_id)),
        {A: both(OK), OP: cell(OK, NF), SP: cell(OK, PD)},
    ),
    Row(
        "DispatchService/ListTasks",
        lambda c: dispatch_pb2.ListTasksRequest(specialist_id=c.side.unit_id, page_size=10),
        {A: both(OK), OP: cell(OK, OK_EMPTY), SP: cell(OK, OK_EMPTY)},
    ),
    Row(
        "DispatchService/GetTask",
        lambda c: dispatch_pb2.GetTaskRequest(task_id=c.side.task_id),
        {A: both(OK), OP: cell(OK, NF), SP: cell(OK, NF)},
    ),
    Row(
        "DispatchService/ReportTaskStep",
        _step,
        {
            A: both(ex(FP, NF, why="the task is offered, not accepted: no step can be reported yet")),
            OP: cell(ex(NF, FP, why="only the task's unit reports steps"), NF),
            SP: cell(ex(FP, why="the task is offered, not accepted yet"), NF),
        },
    ),
    Row(
        "DispatchService/ReoptimizeNow",
        lambda c: dispatch_pb2.ReoptimizeNowRequest(idempotency_key=c.key, operator_id=c.side.operator_id),
        {A: both(OK), OP: cell(OK, PD)},
    ),
    # fleet-swap: the operator's workforce (changed and retired units are fresh ones, off shift).
    Row(
        "DispatchService/CreateMobileUnit",
        lambda c: dispatch_pb2.CreateMobileUnitRequest(idempotency_key=c.key, unit=mobile_unit(c.side)),
        {A: both(OK), OP: cell(OK, PD)},
    ),
    Row("DispatchService/UpdateMobileUnit", _update_unit, {A: both(OK), OP: cell(OK, NF)}),
    Row("DispatchService/RetireMobileUnit", _retire_unit, {A: both(OK), OP: cell(OK, NF)}),
    Row(
        "DispatchService/ListMobileUnits",
        lambda c: dispatch_pb2.ListMobileUnitsRequest(operator_id=c.side.operator_id, page_size=5),
        {A: both(OK), OP: cell(OK, PD)},
    ),
]

# ---- SettlementService ------------------------------------------------------------------------------------

_ACCOUNT_CUSTOMERS = {A: both(OK), OP: cell(OK, NF), FM: cell(OK, NF), DR: cell(OK, NF)}
_ACCOUNT_TENANTS = {A: both(OK), OP: cell(OK, NF), FM: cell(OK, NF)}
_ADMIN_ONLY = {A: both(OK)}


def _create_account(c: Call) -> Message:
    if c.role is Role.FLEET_MANAGER:
        kind, owner = settlement_pb2.ACCOUNT_KIND_FLEET, c.side.fleet_id
    else:
        kind, owner = settlement_pb2.ACCOUNT_KIND_OPERATOR, c.side.operator_id
    return settlement_pb2.CreateAccountRequest(idempotency_key=c.key, kind=kind, owner_id=owner, currency="CNY")


def _list_accounts(c: Call) -> Message:
    owner = c.side.fleet_id if c.role is Role.FLEET_MANAGER else c.side.operator_id
    return settlement_pb2.ListAccountsRequest(owner_id=owner, page_size=10)


def rate_model_request(operator_id: str, key: str) -> settlement_pb2.CreateRateModelRequest:
    energy = common_pb2.PriceComponent(
        type=common_pb2.PRICE_COMPONENT_TYPE_ENERGY, unit_price_micros=1_000_000, step_size=1, label="energy"
    )
    return settlement_pb2.CreateRateModelRequest(
        idempotency_key=key,
        rate_model=common_pb2.RateModel(
            operator_id=operator_id,
            name=f"matrix {key}",
            currency="CNY",
            time_zone="Asia/Shanghai",
            elements=[common_pb2.TariffElement(price_components=[energy])],
        ),
    )


def _rate_model(c: Call) -> Message:
    return rate_model_request(c.side.operator_id, c.key)


def _coupon(c: Call) -> Message:
    return settlement_pb2.CreateCouponRequest(
        idempotency_key=c.key,
        coupon=settlement_pb2.Coupon(
            code=f"M{abs(hash(c.key)) % 10**10}",
            amount_off=_cny(100),
            operator_id=c.side.operator_id,
            funding_account_id=c.side.operator_account_id,
            valid=_window(-1, 600),
            max_redemptions=1,
        ),
    )


def _detect(c: Call) -> Message:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return settlement_pb2.DetectAbnormalOrderRequest(
        order_id=c.side.order_id,
        station_id=c.side.charge_station_id,
        start_time=_ts(start),
        end_time=_ts(start + dt.timedelta(minutes=10)),
        energy_wh=20_000,
        amount=_cny(3_600),
        max_power_w=60_000,
        rate_model_id="builtin-default",
    )


async def _capture(c: Call) -> Message:
    hold_id = await c.fresh.hold(c.side.fleet_account_id)
    return settlement_pb2.CaptureHoldRequest(
        idempotency_key=c.key, hold_id=hold_id, amount=_cny(50), operator_account_id=c.side.operator_account_id
    )


async def _release(c: Call) -> Message:
    hold_id = await c.fresh.hold(c.side.fleet_account_id)
    return settlement_pb2.ReleaseHoldRequest(idempotency_key=c.key, hold_id=hold_id, reason="matrix")


async def _reconcile(c: Call) -> Message:
    return settlement_pb2.ReconcileStatementRequest(idempotency_key=c.key, statement_id=await c.fresh.statement())


async def _verify(c: Call) -> Message:
    payment_id = await c.fresh.offline_payment(c.side.fleet_account_id)
    return settlement_pb2.VerifyOfflinePaymentRequest(idempotency_key=c.key, payment_id=payment_id)


def statement_request(key: str) -> settlement_pb2.ImportStatementRequest:
    now = dt.datetime.now(dt.UTC).isoformat()
    csv = f"reference,amount_minor,currency,value_time,description\nmatrix-{key},100,CNY,{now},x\n"
    return settlement_pb2.ImportStatementRequest(
        idempotency_key=key, provider="simulated", csv=csv.encode(), period=_window(-60, 60)
    )


def _import(c: Call) -> Message:
    return statement_request(c.key)


_NOT_A_WALLET = ex(FP, why="an operator account is not a wallet: it is never topped up")
_ORDER_MONEY = ex(OK, FP, NF, why="the order has no captured payment yet: refused for want of money, not tenancy")

SETTLEMENT_ROWS = [
    # Issue 9 #6: accounts only for owners inside the caller's tenant.
    Row("SettlementService/CreateAccount", _create_account, {A: both(OK), OP: cell(OK, PD), FM: cell(OK, PD)}),
    Row(
        "SettlementService/CreateAccount",
        lambda c: settlement_pb2.CreateAccountRequest(
            idempotency_key=c.key, kind=settlement_pb2.ACCOUNT_KIND_FLEET, owner_id=c.side.sub_fleet_id
        ),
        {A: both(OK), OP: both(PD), FM: cell(OK, PD)},
        variant="sub-fleet",
    ),
    Row(
        "SettlementService/CreateAccount",
        lambda c: settlement_pb2.CreateAccountRequest(
            idempotency_key=c.key, kind=settlement_pb2.ACCOUNT_KIND_SPECIALIST, owner_id=c.side.unit_id
        ),
        {A: both(OK), OP: cell(OK, PD), FM: both(PD)},
        variant="specialist",
    ),
    Row(
        "SettlementService/CreateAccount",
        lambda c: settlement_pb2.CreateAccountRequest(
            idempotency_key=c.key, kind=settlement_pb2.ACCOUNT_KIND_CUSTOMER, owner_id=c.side.driver_id
        ),
        {A: both(OK), OP: both(PD), FM: both(PD)},
        variant="driver wallet",
    ),
    Row(
        "SettlementService/GetAccount",
        lambda c: settlement_pb2.GetAccountRequest(account_id=c.account),
        _ACCOUNT_CUSTOMERS,
    ),
    Row(
        "SettlementService/GetAccount",
        lambda c: settlement_pb2.GetAccountRequest(account_id=c.account),
        _ACCOUNT_CUSTOMERS,
        variant="private driver",
        driver="private",
    ),
    Row(
        "SettlementService/ListAccounts",
        _list_accounts,
        {A: both(OK), OP: cell(OK, OK_EMPTY), FM: cell(OK, OK_EMPTY)},
    ),
    Row(
        "SettlementService/TopUp",
        lambda c: settlement_pb2.TopUpRequest(
            idempotency_key=c.key, account_id=c.account, amount=_cny(100), provider="simulated", provider_token="tok"
        ),
        {**_ACCOUNT_CUSTOMERS, OP: cell(_NOT_A_WALLET, NF)},
    ),
    Row(
        "SettlementService/Withdraw",
        lambda c: settlement_pb2.WithdrawRequest(
            idempotency_key=c.key, account_id=c.account, amount=_cny(10), provider="simulated", destination="bank"
        ),
        _ACCOUNT_CUSTOMERS,
    ),
    Row(
        "SettlementService/Refund",
        lambda c: settlement_pb2.RefundRequest(
            idempotency_key=c.key, order_id=c.side.order_id, amount=_cny(1), reason="matrix"
        ),
        {A: both(_ORDER_MONEY), OP: cell(_ORDER_MONEY, ex(NF, PD))},
    ),
    Row(
        "SettlementService/PlaceHold",
        lambda c: settlement_pb2.PlaceHoldRequest(
            idempotency_key=c.key, account_id=c.side.fleet_account_id, amount=_cny(100), order_id=f"ord-{c.key}"
        ),
        _ADMIN_ONLY,
    ),
    Row("SettlementService/CaptureHold", _capture, _ADMIN_ONLY),
    Row("SettlementService/ReleaseHold", _release, _ADMIN_ONLY),
    Row(
        "SettlementService/GetJournalEntry",
        lambda c: settlement_pb2.GetJournalEntryRequest(entry_id=c.side.entries[c.account]),
        _ACCOUNT_TENANTS,
    ),
    Row(
        "SettlementService/ListJournalEntries",
        lambda c: settlement_pb2.ListJournalEntriesRequest(account_id=c.account, page_size=10),
        _ACCOUNT_TENANTS,
    ),
    Row("SettlementService/CreateRateModel", _rate_model, {A: both(OK), OP: cell(OK, PD)}),
    Row(
        "SettlementService/ListRateModels",
        lambda c: settlement_pb2.ListRateModelsRequest(operator_id=c.side.operator_id, page_size=10),
        {A: both(OK), OP: cell(OK, ex(PD, OK_EMPTY)), FM: both(OK)},
    ),
    Row(
        "SettlementService/PriceEstimate",
        lambda c: settlement_pb2.PriceEstimateRequest(
            station_id=c.home.charge_station_id,
            account_id=c.account,
            mode=common_pb2.POWER_UP_MODE_CHARGE,
            energy_wh=20_000,
            duration=duration_pb2.Duration(seconds=1800),
        ),
        _ACCOUNT_CUSTOMERS,
    ),
    Row("SettlementService/CreateCoupon", _coupon, {A: both(OK), OP: cell(OK, PD)}),
    Row(
        "SettlementService/GenerateBill",
        lambda c: settlement_pb2.GenerateBillRequest(
            idempotency_key=c.key, account_id=c.account, period=_window(-600, -300)
        ),
        _ACCOUNT_TENANTS,
    ),
    Row(
        "SettlementService/GetBill",
        lambda c: settlement_pb2.GetBillRequest(bill_id=c.side.bills[c.account]),
        _ACCOUNT_TENANTS,
    ),
    Row(
        "SettlementService/ListBills",
        lambda c: settlement_pb2.ListBillsRequest(account_id=c.account, page_size=10),
        _ACCOUNT_TENANTS,
    ),
    Row("SettlementService/ImportStatement", _import, _ADMIN_ONLY),
    Row("SettlementService/ReconcileStatement", _reconcile, _ADMIN_ONLY),
    Row(
        "SettlementService/ListPayouts",
        lambda c: settlement_pb2.ListPayoutsRequest(account_id=c.side.operator_account_id, page_size=10),
        {A: both(OK), OP: cell(OK, NF)},
    ),
    Row(
        "SettlementService/TraceFunds",
        lambda c: settlement_pb2.TraceFundsRequest(order_id=c.side.order_id, page_size=10),
        _ADMIN_ONLY,
    ),
    Row(
        "SettlementService/RunPayouts",
        lambda c: settlement_pb2.RunPayoutsRequest(idempotency_key=c.key, provider="simulated"),
        _ADMIN_ONLY,
    ),
    Row("SettlementService/DetectAbnormalOrder", _detect, {A: both(OK), OP: cell(OK, NF)}),
    Row(
        "SettlementService/RefundOrderDifference",
        lambda c: settlement_pb2.RefundOrderDifferenceRequest(idempotency_key=c.key, order_id=c.side.order_id),
        {A: both(_ORDER_MONEY), OP: cell(_ORDER_MONEY, ex(NF, PD))},
    ),
    Row(
        "SettlementService/VerifyOfflinePayment",
        _verify,
        {A: both(OK), OP: both(ex(NF, why="an operator sees no customer account; the admin verifies"))},
    ),
]

# ---- FleetService ------------------------------------------------------------------------------------------
# A fleet manager sees and changes only their own fleet (another's reads NOT_FOUND); the admin creates fleets;
# a driver registers their own car, applies to join a fleet and reads the fleet vehicles they may drive.


def _fresh_vin(key: str) -> str:
    """A VIN nobody registered yet, with the right GB 16735 check digit."""
    alphabet = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
    digest = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    body = "".join(alphabet[(digest >> (5 * i)) % len(alphabet)] for i in range(17))
    return body[:8] + check_digit(body) + body[9:]


def _vehicle(c: Call, **fields: object) -> fleet_pb2.Vehicle:
    return _vehicle_of(c.key, **fields)


def _vehicle_of(key: str, **fields: object) -> fleet_pb2.Vehicle:
    return fleet_pb2.Vehicle(
        vin=_fresh_vin(key),
        model_id="matrix van",
        connector_standards=[common_pb2.CONNECTOR_STANDARD_GBT_DC],
        battery_capacity_wh=50_000,
        consumption_wh_per_km=200,
        max_dc_power_w=60_000,
        **fields,  # type: ignore[arg-type]
    )


def _new_driver(c: Call) -> Message:
    return fleet_pb2.RegisterDriverRequest(
        idempotency_key=c.key, driver=fleet_pb2.Driver(name=f"matrix {c.key}", fleet_id=c.side.fleet_id)
    )


async def _review(c: Call) -> Message:
    driver_id = await c.fresh.applicant(c.side)
    return fleet_pb2.ReviewDriverRequest(
        idempotency_key=c.key, fleet_id=c.side.fleet_id, driver_id=driver_id, approve=True
    )


async def _fleet_token_block(c: Call) -> Message:
    token_id = await c.fresh.charging_token(c.side, "fleet")
    return fleet_pb2.BlockChargingTokenRequest(fleet_id=c.side.fleet_id, token_id=token_id, blocked=True)


async def _fleet_token_expiry(c: Call) -> Message:
    token_id = await c.fresh.charging_token(c.side, "fleet")
    return fleet_pb2.SetChargingTokenExpiryRequest(
        fleet_id=c.side.fleet_id, token_id=token_id, expiry_time=_ts(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    )


async def _retire(c: Call) -> Message:
    vehicle_id = await c.fresh.fleet_vehicle(c.side)
    return fleet_pb2.RetireVehicleRequest(idempotency_key=c.key, vehicle_id=vehicle_id, reason="matrix")


async def _retire_private(c: Call) -> Message:
    vehicle_id = await c.fresh.fleet_vehicle(c.side, private=True)
    return fleet_pb2.RetireVehicleRequest(idempotency_key=c.key, vehicle_id=vehicle_id, reason="matrix")


async def _update_driver(c: Call) -> Message:
    driver_id = await c.fresh.member(c.side)
    return fleet_pb2.UpdateDriverRequest(
        idempotency_key=c.key, fleet_id=c.side.fleet_id, driver_id=driver_id,
        driver=fleet_pb2.Driver(phone="+8613800000001"), update_fields=["phone"],
    )  # fmt: skip


async def _suspend_driver(c: Call) -> Message:
    driver_id = await c.fresh.member(c.side)
    return fleet_pb2.SuspendDriverRequest(
        idempotency_key=c.key, fleet_id=c.side.fleet_id, driver_id=driver_id, suspended=True, reason="matrix"
    )


async def _remove_driver(c: Call) -> Message:
    driver_id = await c.fresh.member(c.side)
    return fleet_pb2.RemoveDriverRequest(
        idempotency_key=c.key, fleet_id=c.side.fleet_id, driver_id=driver_id, reason="matrix"
    )


_OWN_FLEET: Mapping[Role, Cell] = {A: both(OK), FM: cell(OK, NF)}
_VEHICLE_TELEMETRY = {A: both(OK), FM: cell(OK, NF), DR: cell(OK, NF)}
_MEMBER = ex(FP, why="the fleet driver already belongs to a fleet; only a driver without one applies")

FLEET_ROWS = [
    Row(
        "FleetService/CreateFleet",
        lambda c: fleet_pb2.CreateFleetRequest(idempotency_key=c.key, name=f"matrix {c.key}"),
        {A: both(OK)},
    ),
    Row("FleetService/GetFleet", lambda c: fleet_pb2.GetFleetRequest(fleet_id=c.side.fleet_id), _OWN_FLEET),
    Row(
        "FleetService/CreateSubFleet",
        lambda c: fleet_pb2.CreateSubFleetRequest(idempotency_key=c.key, fleet_id=c.side.fleet_id, name="matrix"),
        _OWN_FLEET,
    ),
    Row(
        "FleetService/AllocateBalance",
        lambda c: fleet_pb2.AllocateBalanceRequest(
            idempotency_key=c.key, fleet_id=c.side.fleet_id, sub_fleet_id=c.side.sub_fleet_id, amount=_cny(1)
        ),
        _OWN_FLEET,
    ),
    Row(
        "FleetService/AllocateBalance",
        lambda c: fleet_pb2.AllocateBalanceRequest(
            idempotency_key=c.key, fleet_id=c.home.fleet_id, sub_fleet_id=c.side.sub_fleet_id, amount=_cny(-1)
        ),
        {A: cell(OK, NF, why="the sub-fleet is not the named fleet's"), FM: cell(OK, NF)},
        variant="own fleet, side's sub-fleet",
    ),
    Row(
        "FleetService/RegisterVehicle",
        lambda c: fleet_pb2.RegisterVehicleRequest(
            idempotency_key=c.key, vehicle=_vehicle(c, fleet_id=c.side.fleet_id, sub_fleet_id=c.side.sub_fleet_id)
        ),
        {**_OWN_FLEET, DR: both(PD)},
    ),
    Row(
        "FleetService/RegisterVehicle",
        lambda c: fleet_pb2.RegisterVehicleRequest(
            idempotency_key=c.key, vehicle=_vehicle(c, owner_driver_id=c.side.private_driver_id)
        ),
        {A: both(OK), FM: both(PD), DR: cell(OK, PD)},
        variant="private car",
        driver="private",
    ),
    Row(
        "FleetService/GetVehicle",
        lambda c: fleet_pb2.GetVehicleRequest(vehicle_id=c.side.vehicle_id),
        {**_OWN_FLEET, DR: cell(OK, NF)},
    ),
    Row(
        "FleetService/GetVehicle",
        lambda c: fleet_pb2.GetVehicleRequest(vehicle_id=c.side.private_vehicle_id),
        {A: both(OK), FM: both(NF), DR: cell(OK, NF)},
        variant="private car",
        driver="private",
    ),
    Row(
        "FleetService/ListVehicles",
        lambda c: fleet_pb2.ListVehiclesRequest(fleet_id=c.side.fleet_id, page_size=5),
        _OWN_FLEET,
    ),
    Row(
        "FleetService/MoveVehicle",
        lambda c: fleet_pb2.MoveVehicleRequest(
            idempotency_key=c.key, vehicle_id=c.side.vehicle_id, sub_fleet_id=c.side.sub_fleet_id
        ),
        _OWN_FLEET,
    ),
    Row("FleetService/RegisterDriver", _new_driver, {**_OWN_FLEET, DR: both(_MEMBER)}),
    Row(
        "FleetService/RegisterDriver",
        _new_driver,
        {**_OWN_FLEET, DR: both(ex(OK, why="a driver without a fleet may apply to any fleet"))},
        variant="application",
        driver="private",
    ),
    Row("FleetService/ReviewDriver", _review, _OWN_FLEET),
    # fleet-swap: vehicle and driver lifecycle (retiring, suspending and removing use fresh vehicles and drivers).
    Row(
        "FleetService/UpdateVehicle",
        lambda c: fleet_pb2.UpdateVehicleRequest(
            idempotency_key=c.key,
            vehicle_id=c.side.vehicle_id,
            vehicle=fleet_pb2.Vehicle(plate="MX-1"),
            update_fields=["plate"],
        ),
        {**_OWN_FLEET, DR: cell(ex(PD, why="a fleet's driver sees its vehicles but changes none"), NF)},
    ),
    Row(
        "FleetService/UpdateVehicle",
        lambda c: fleet_pb2.UpdateVehicleRequest(
            idempotency_key=c.key,
            vehicle_id=c.side.private_vehicle_id,
            vehicle=fleet_pb2.Vehicle(plate="MX-2"),
            update_fields=["plate"],
        ),
        {A: both(OK), FM: both(NF), DR: cell(OK, NF)},
        variant="private car",
        driver="private",
    ),
    Row("FleetService/RetireVehicle", _retire, {**_OWN_FLEET, DR: cell(ex(PD, why="the fleet's to retire"), NF)}),
    Row(
        "FleetService/RetireVehicle",
        _retire_private,
        {A: both(OK), FM: both(NF), DR: cell(OK, NF)},
        variant="private car",
        driver="private",
    ),
    Row("FleetService/UpdateDriver", _update_driver, _OWN_FLEET),
    Row("FleetService/SuspendDriver", _suspend_driver, _OWN_FLEET),
    Row("FleetService/RemoveDriver", _remove_driver, _OWN_FLEET),
    Row(
        "FleetService/ListDrivers",
        lambda c: fleet_pb2.ListDriversRequest(fleet_id=c.side.fleet_id, page_size=5),
        _OWN_FLEET,
    ),
    Row(
        "FleetService/SetPaymentMode",
        lambda c: fleet_pb2.SetPaymentModeRequest(
            idempotency_key=c.key, fleet_id=c.side.fleet_id, payment_mode=fleet_pb2.PAYMENT_MODE_REAL_TIME
        ),
        _OWN_FLEET,
    ),
    Row(
        "FleetService/SetPaymentMode",
        lambda c: fleet_pb2.SetPaymentModeRequest(
            idempotency_key=c.key,
            fleet_id=c.side.fleet_id,
            sub_fleet_id=c.side.sub_fleet_id,
            payment_mode=fleet_pb2.PAYMENT_MODE_POST_SETTLEMENT,
            credit_limit=_cny(1_000 + int(hashlib.sha256(c.key.encode()).hexdigest()[:4], 16)),  # a change
        ),
        {A: both(OK), FM: cell(ex(PD, why="credit is the platform admin's to extend"), NF)},
        variant="sub-fleet credit",
    ),
    Row(
        "FleetService/GetFleetStatement",
        lambda c: fleet_pb2.GetFleetStatementRequest(fleet_id=c.side.fleet_id, period=_window(-60, 60)),
        _OWN_FLEET,
    ),
    # Without telemetry the state comes from the vehicle's orders (the side's driver ordered for it).
    Row(
        "FleetService/GetVehicleState",
        lambda c: fleet_pb2.GetVehicleStateRequest(vehicle_id=c.side.vehicle_id),
        _VEHICLE_TELEMETRY,
    ),
    Row(
        "FleetService/GetVehicleTrack",
        lambda c: fleet_pb2.GetVehicleTrackRequest(vehicle_id=c.side.vehicle_id, window=_window(-60, 1)),
        _VEHICLE_TELEMETRY,
    ),
    Row(
        "FleetService/ListVehicleAlerts",
        lambda c: fleet_pb2.ListVehicleAlertsRequest(vehicle_id=c.side.vehicle_id),
        _VEHICLE_TELEMETRY,
    ),
    Row(
        "FleetService/ListVehicleAlerts",
        lambda c: fleet_pb2.ListVehicleAlertsRequest(fleet_id=c.side.fleet_id),
        {
            A: both(OK),
            FM: cell(OK, NF),
            DR: both(ex(NF, why="a fleet's alerts are its manager's; a driver asks per vehicle")),
        },
        variant="fleet",
    ),
    Row(
        "FleetService/WatchVehicles",
        lambda c: fleet_pb2.WatchVehiclesRequest(vehicle_id=c.side.vehicle_id, alerts=True),
        _VEHICLE_TELEMETRY,
    ),
    Row(
        "FleetService/WatchVehicles",
        lambda c: fleet_pb2.WatchVehiclesRequest(fleet_id=c.side.fleet_id),
        {A: both(OK), FM: cell(OK, NF), DR: both(ex(IA, why="a driver watches one vehicle (vehicle_id)"))},
        variant="fleet",
    ),
    Row(
        "FleetService/SetFleetAlertLimits",
        lambda c: fleet_pb2.SetFleetAlertLimitsRequest(
            idempotency_key=c.key,
            fleet_id=c.side.fleet_id,
            limits=fleet_pb2.FleetAlertLimits(speed_limit_m_per_h=100_000, low_soc_permille=200),
        ),
        _OWN_FLEET,
    ),
    Row(
        "FleetService/IssueChargingToken",
        lambda c: fleet_pb2.IssueChargingTokenRequest(
            idempotency_key=c.key,
            fleet_id=c.side.fleet_id,
            driver_id=c.side.driver_id,
            vehicle_id=c.side.vehicle_id,
            id_tag=_id_tag(c),
            operator_id=c.home.operator_id,
        ),
        _OWN_FLEET,
    ),
    Row("FleetService/BlockChargingToken", _fleet_token_block, _OWN_FLEET),
    Row("FleetService/SetChargingTokenExpiry", _fleet_token_expiry, _OWN_FLEET),
    Row(
        "FleetService/ListChargingTokens",
        lambda c: fleet_pb2.ListChargingTokensRequest(fleet_id=c.side.fleet_id, page_size=5),
        _OWN_FLEET,
    ),
    Row(
        "FleetService/GetFleetDailyReport",
        lambda c: fleet_pb2.GetFleetDailyReportRequest(
            fleet_id=c.side.fleet_id, date=dt.datetime.now(dt.UTC).date().isoformat(), time_zone="UTC"
        ),
        _OWN_FLEET,
    ),
]

# ---- MaintenanceService ------------------------------------------------------------------------------------

_STAFF = frozenset({A, OP, EN})
_OWN_OPERATOR_LIST = {A: both(OK), OP: cell(OK, PD), EN: cell(OK, PD)}  # another operator in the filter: refused
_OPERATOR_ONLY = {A: both(OK), OP: cell(OK, PD)}


async def _alarm_call(c: Call, request_type: type[Message]) -> Message:
    return request_type(idempotency_key=c.key, alarm_id=await c.fresh.alarm(c.side), note="matrix")  # type: ignore[call-arg]


async def _progress(c: Call) -> Message:
    wid = await c.fresh.work_order(c.side)
    return maintenance_pb2.UpdateWorkOrderProgressRequest(idempotency_key=c.key, work_order_id=wid, note="matrix")


async def _cancel(c: Call) -> Message:
    wid = await c.fresh.work_order(c.side)
    return maintenance_pb2.CloseWorkOrderRequest(
        idempotency_key=c.key, work_order_id=wid, final_state=maintenance_pb2.WORK_ORDER_STATE_CANCELLED, reason="m"
    )


async def _reopen(c: Call) -> Message:
    wid = await c.fresh.work_order(c.side, resolved=True)
    return maintenance_pb2.ReopenWorkOrderRequest(idempotency_key=c.key, work_order_id=wid, reason="matrix")


async def _get_work_order(c: Call) -> Message:
    return maintenance_pb2.GetWorkOrderRequest(work_order_id=await c.fresh.work_order(c.side))


def _sla_rule() -> maintenance_pb2.SlaPolicyRule:
    return maintenance_pb2.SlaPolicyRule(
        level=common_pb2.ALARM_LEVEL_WARNING, equipment_kind="charger",
        respond_within=duration_pb2.Duration(seconds=3600), resolve_within=duration_pb2.Duration(seconds=86400),
        warn_before=duration_pb2.Duration(seconds=600), escalate_after=duration_pb2.Duration(seconds=3600),
    )  # fmt: skip


def _contact(c: Call) -> Message:
    prefs = maintenance_pb2.NotificationPreferences(
        recipient_kind="operator", recipient_id=c.side.operator_id, operator_id=c.side.operator_id,
        email=f"ops@{c.side.operator_id}.example", email_on=True,
    )  # fmt: skip
    return maintenance_pb2.SetNotificationPreferencesRequest(idempotency_key=c.key, preferences=prefs)


def _own_engineer_prefs(c: Call) -> Message:
    prefs = maintenance_pb2.NotificationPreferences(
        recipient_kind="engineer", recipient_id=c.subject, operator_id=c.side.operator_id, email="e@x.example",
    )  # fmt: skip
    return maintenance_pb2.SetNotificationPreferencesRequest(idempotency_key=c.key, preferences=prefs)


_AN_ENGINEER_SETS_ONLY_THEIRS = ex(PD, why="an engineer sets only their own notification preferences")
_VERIFY = ex(PD, why="closing (cancel, verify) and reopening are the operator's")

MAINTENANCE_ROWS = [
    Row(
        "MaintenanceService/ListAlarms",
        lambda c: maintenance_pb2.ListAlarmsRequest(operator_id=c.side.operator_id, page_size=5),
        _OWN_OPERATOR_LIST,
    ),
    Row(
        "MaintenanceService/AcknowledgeAlarm",
        lambda c: _alarm_call(c, maintenance_pb2.AcknowledgeAlarmRequest),
        _STAFF_OWN,
    ),
    Row("MaintenanceService/ClearAlarm", lambda c: _alarm_call(c, maintenance_pb2.ClearAlarmRequest), _STAFF_OWN),
    Row(
        "MaintenanceService/WatchAlarms",
        lambda c: maintenance_pb2.WatchAlarmsRequest(station_id=c.side.station_id),
        _STAFF_OWN,
    ),
    Row(
        "MaintenanceService/WatchAlarms",
        lambda c: maintenance_pb2.WatchAlarmsRequest(operator_id=c.side.operator_id),
        _OWN_OPERATOR_LIST,
        variant="operator filter",
    ),
    Row(
        "MaintenanceService/CreateWorkOrder",
        lambda c: maintenance_pb2.CreateWorkOrderRequest(
            idempotency_key=c.key, title="matrix", station_id=c.side.station_id, equipment_kind="station"
        ),
        _STAFF_OWN,
    ),
    Row(
        "MaintenanceService/ReportFault",
        lambda c: maintenance_pb2.ReportFaultRequest(
            idempotency_key=c.key, equipment_code=f"voltcloud://s/{c.side.station_id}", description="matrix"
        ),
        _STAFF_OWN,
    ),
    Row("MaintenanceService/GetWorkOrder", _get_work_order, _STAFF_OWN),
    Row(
        "MaintenanceService/ListWorkOrders",
        lambda c: maintenance_pb2.ListWorkOrdersRequest(operator_id=c.side.operator_id, page_size=5),
        _OWN_OPERATOR_LIST,
    ),
    Row("MaintenanceService/UpdateWorkOrderProgress", _progress, _STAFF_OWN),
    Row("MaintenanceService/CloseWorkOrder", _cancel, {A: both(OK), OP: cell(OK, NF), EN: cell(_VERIFY, NF)}),
    Row("MaintenanceService/ReopenWorkOrder", _reopen, {A: both(OK), OP: cell(OK, NF)}),
    Row(
        "MaintenanceService/SetSlaPolicy",
        lambda c: maintenance_pb2.SetSlaPolicyRequest(
            idempotency_key=c.key, operator_id=c.side.operator_id, rules=[_sla_rule()]
        ),
        _OPERATOR_ONLY,
    ),
    Row(
        "MaintenanceService/GetSlaPolicy",
        lambda c: maintenance_pb2.GetSlaPolicyRequest(operator_id=c.side.operator_id),
        _OWN_OPERATOR_LIST,
    ),
    Row(
        "MaintenanceService/SetNotificationPreferences",
        _contact,
        {A: both(OK), OP: cell(OK, PD), EN: both(_AN_ENGINEER_SETS_ONLY_THEIRS)},
    ),
    Row(
        "MaintenanceService/SetNotificationPreferences",
        _own_engineer_prefs,
        {A: both(OK), OP: cell(OK, PD), EN: cell(OK, PD)},
        variant="an engineer's own",
    ),
    Row(
        "MaintenanceService/GetFaultAnalysis",
        lambda c: maintenance_pb2.GetFaultAnalysisRequest(operator_id=c.side.operator_id, period=_window(-60 * 24, 60)),
        _OPERATOR_ONLY,
    ),
]

# ---- IngestService ----------------------------------------------------------------------------------------


def _telemetry(c: Call) -> Message:
    return ingest_pb2.PushTelemetryRequest(
        gateway_id=c.subject,
        telemetry=ingest_pb2.TelemetryBatch(
            base_time=_ts(dt.datetime.now(dt.UTC)),
            sources=[ingest_pb2.TelemetrySource(station_id=c.side.station_id)],
        ),
    )


def _id_tag(c: Call) -> str:
    return f"MX{abs(hash(c.key)) % 10**12}"


def _register_token(c: Call) -> Message:
    owner_kind, owner_id = ("driver", c.side.driver_id) if c.role is Role.DRIVER else ("fleet", c.side.fleet_id)
    return ingest_pb2.RegisterChargingTokenRequest(
        idempotency_key=c.key,
        id_tag=_id_tag(c),
        operator_id=c.home.operator_id,
        owner_kind=owner_kind,
        owner_id=owner_id,
        vehicle_id=c.side.vehicle_id,
    )


async def _token_status(c: Call) -> Message:
    token_id = await c.fresh.charging_token(c.side, "driver" if c.role is Role.DRIVER else "fleet")
    return ingest_pb2.SetChargingTokenStatusRequest(token_id=token_id, blocked=True)


_OTHER_OWNER = ex(PD, NF, why="a token for another tenant's owner")

INGEST_ROWS = [
    Row(
        "IngestService/Uplink",
        lambda c: ingest_pb2.GatewayToPlatform(
            seq=0, hello=ingest_pb2.Hello(gateway_id=c.subject, station_ids=[c.side.station_id])
        ),
        {A: both(OK), GW: cell(OK, PD)},
    ),
    Row("IngestService/PushTelemetry", _telemetry, {A: both(OK), GW: cell(OK, PD)}),
    # Issue 9 #4: the gateway asks the platform; an unknown tag is answered (INVALID), not refused.
    Row(
        "IngestService/AuthorizeIdTag",
        lambda c: ingest_pb2.AuthorizeIdTagRequest(
            gateway_id=c.subject, station_id=c.side.charge_station_id, id_tag=_id_tag(c)
        ),
        {A: both(OK), GW: cell(OK, ex(PD, NF, why="another operator's station"))},
    ),
    # Scoped like the uplink: a fleet's gateway resolves its fleet's VINs; others (an operator's gateway, as
    # here, or another fleet's VIN) are answered unknown, never refused, so VINs cannot be probed by status.
    Row(
        "IngestService/ResolveVehicles",
        lambda c: ingest_pb2.ResolveVehiclesRequest(gateway_id=c.subject, vins=["1M8GDM9AXKP042788"]),
        {A: both(OK), GW: both(OK)},
    ),
    Row(
        "IngestService/RegisterChargingToken",
        _register_token,
        {A: both(OK), FM: cell(OK, _OTHER_OWNER), DR: cell(OK, _OTHER_OWNER)},
    ),
    Row(
        "IngestService/SetChargingTokenStatus",
        _token_status,
        {A: both(OK), OP: cell(OK, NF), FM: cell(OK, NF), DR: cell(OK, NF)},
    ),
]

from .tenant_matrix_field import MAINTENANCE_FIELD_ROWS  # noqa: E402  (its rows use this module's helpers)

# Ingest last: a gateway's hello attaches it to the side's station while its stream is open.
ROWS: list[Row] = [
    *STATION_ROWS,
    *ORDERING_ROWS,
    *DISPATCH_ROWS,
    *SETTLEMENT_ROWS,
    *FLEET_ROWS,
    *MAINTENANCE_ROWS,
    *MAINTENANCE_FIELD_ROWS,
    *INGEST_ROWS,
]


def methods_with_rows() -> set[str]:
    return {f"{PACKAGE}.{row.method}" for row in ROWS}
