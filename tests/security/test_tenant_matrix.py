"""The tenant matrix (tests/security/tenant_matrix.py) asserted over real gRPC against one demo platform per
database: every served RPC has rows, and every role x {own tenant, another tenant} cell gives the expected
outcome. All mismatches are collected and reported as one table."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import inspect
import itertools
import pkgutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import Message
from sqlmodel import col, select

import voltcloud.api.v1
from tests.integration.conftest import channel_to, serving
from tests.integration.powerup_support import candidates, fund, inventory_quote
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
from voltcloud.fleet.models import Driver, Vehicle
from voltcloud.maintenance import api as maintenance_api
from voltcloud.maintenance import workorders
from voltcloud.ordering.models import Complaint, Order
from voltcloud.ordering.states import Mode
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.enums import ComplaintState, WorkOrderState
from voltcloud.platform.permissions import PERMISSIONS
from voltcloud.server import Platform
from voltcloud.stations.models import Connector, Pack, Station

from . import tenant_matrix as tm

UNARY_DEADLINE_S = 10.0
STREAM_FIRST_S = 3.0
OPERATORS = ("op-0001", "op-0002")
FLEETS = ("fl-0001", "fl-0002")


def served_methods() -> set[str]:
    """Every method of every voltcloud.v1 service (the server serves them all) and every PERMISSIONS row."""
    found: set[str] = set(PERMISSIONS)
    for info in pkgutil.iter_modules(voltcloud.api.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"voltcloud.api.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found |= {f"{service.full_name}/{m.name}" for m in service.methods}
    return found


def test_every_served_rpc_has_a_row() -> None:
    missing = sorted(served_methods() - tm.methods_with_rows())
    assert not missing, "RPCs without a tenant-matrix row (add them to tests/security/tenant_matrix.py):\n" + (
        "\n".join(missing)
    )


def test_every_row_names_a_served_rpc() -> None:
    stale = sorted(tm.methods_with_rows() - served_methods())
    assert not stale, f"tenant-matrix rows for RPCs that no longer exist: {stale}"


# ---- the world: real ids of two tenants -------------------------------------------------------------------


def _metadata(platform: Platform, subject: str, role: Role, tenant: str | None) -> tuple[tuple[str, str], ...]:
    token = platform.tokens.mint(subject, role, Tenant.parse(tenant or ""))
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Factory:
    """Creates the objects the sides name and the fresh ones mutating rows need (implements tm.Fresh)."""

    platform: Platform
    channel: grpc.aio.Channel
    used: set[str] = field(default_factory=set)
    keys: itertools.count[int] = field(default_factory=itertools.count)

    def admin(self) -> tuple[tuple[str, str], ...]:
        return _metadata(self.platform, "matrix-setup", Role.PLATFORM_ADMIN, None)

    def key(self) -> str:
        return f"setup-{next(self.keys)}-{uuid.uuid4().hex[:8]}"

    async def unary(self, method: str, request: Message, md: tuple[tuple[str, str], ...] | None = None) -> Any:
        call = self.channel.unary_unary(
            f"/{tm.PACKAGE}.{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=_response_type(f"/{tm.PACKAGE}.{method}").FromString,
        )
        return await call(request, metadata=md or self.admin(), timeout=UNARY_DEADLINE_S)

    async def vehicle(self, vehicle_id: str) -> Vehicle:
        async with self.platform.db.transaction() as session:
            found = await session.get(Vehicle, vehicle_id)
        assert found is not None, vehicle_id
        return found

    async def quote(self, subject: str, vehicle_id: str, operator_id: str, mode: Mode = Mode.CHARGE) -> tuple[str, str]:
        vehicle = await self.vehicle(vehicle_id)
        options = [
            o
            for o in candidates(self.platform, vehicle, mode, skip=frozenset(self.used))
            if o.operator_id == operator_id
        ][:4]
        assert options, f"no free {mode.name} resource of {operator_id} for {vehicle_id}"
        return await inventory_quote(self.platform, subject, vehicle, options), "o1"

    async def order(self, side: tm.Side) -> str:
        quote_id, option_id = await self.quote(side.driver_id, side.vehicle_id, side.operator_id)
        md = _metadata(self.platform, side.driver_id, Role.DRIVER, f"fleet:{side.fleet_id}")
        request = ordering_pb2.CreateOrderRequest(
            idempotency_key=self.key(), quote_id=quote_id, option_id=option_id, allow_fallback=True
        )
        return str((await self.unary("OrderingService/CreateOrder", request, md)).order.order_id)

    async def reservation(self, side: tm.Side) -> str:
        md = _metadata(self.platform, side.driver_id, Role.DRIVER, f"fleet:{side.fleet_id}")
        slot = next(tm._reservation_slots)
        request = ordering_pb2.CreateReservationRequest(
            idempotency_key=self.key(),
            station_id=side.charge_station_id,
            vehicle_id=side.vehicle_id,
            window=tm._window(60 + slot * 20, 75 + slot * 20),
        )
        return str((await self.unary("OrderingService/CreateReservation", request, md)).reservation.reservation_id)

    async def hold(self, account_id: str) -> str:
        request = settlement_pb2.PlaceHoldRequest(
            idempotency_key=self.key(), account_id=account_id, amount=tm._cny(100), order_id=f"ord-{self.key()}"
        )
        return str((await self.unary("SettlementService/PlaceHold", request)).hold.hold_id)

    async def offline_payment(self, account_id: str) -> str:
        request = settlement_pb2.TopUpRequest(
            idempotency_key=self.key(), account_id=account_id, amount=tm._cny(100), provider="offline",
            provider_token="BANK-1",
        )  # fmt: skip
        return str((await self.unary("SettlementService/TopUp", request)).payment.payment_id)

    async def statement(self) -> str:
        request = tm.statement_request(self.key())
        return str((await self.unary("SettlementService/ImportStatement", request)).statement.statement_id)

    async def station_version(self, station_id: str) -> int:
        reply = await self.unary("StationService/GetStation", stations_pb2.GetStationRequest(station_id=station_id))
        return int(reply.station.version)

    async def charging_token(self, side: tm.Side, owner_kind: str) -> str:
        if owner_kind == "driver":
            md = _metadata(self.platform, side.driver_id, Role.DRIVER, f"fleet:{side.fleet_id}")
            owner_id = side.driver_id
        else:
            md = _metadata(self.platform, tm.fleet_manager(side.fleet_id), Role.FLEET_MANAGER, f"fleet:{side.fleet_id}")
            owner_id = side.fleet_id
        request = ingest_pb2.RegisterChargingTokenRequest(
            idempotency_key=self.key(), id_tag=f"MS{next(self.keys)}x{uuid.uuid4().hex[:8]}",
            operator_id=side.operator_id, owner_kind=owner_kind, owner_id=owner_id, vehicle_id=side.vehicle_id,
        )  # fmt: skip
        return str((await self.unary("IngestService/RegisterChargingToken", request, md)).token.token_id)

    async def alarm(self, side: tm.Side) -> str:
        return await _maintenance_alarm(self.platform, side, next(self.keys))

    async def work_order(self, side: tm.Side, resolved: bool = False) -> str:
        return await _maintenance_work_order(self.platform, side, resolved)

    async def fleet_vehicle(self, side: tm.Side, private: bool = False) -> str:
        """A new vehicle of the side's fleet (or the side's private driver's car), registered by the admin."""
        owner = {"owner_driver_id": side.private_driver_id} if private else {"fleet_id": side.fleet_id}
        key = self.key()
        request = fleet_pb2.RegisterVehicleRequest(idempotency_key=key, vehicle=tm._vehicle_of(key, **owner))
        return str((await self.unary("FleetService/RegisterVehicle", request)).vehicle.vehicle_id)

    async def member(self, side: tm.Side) -> str:
        """A new approved driver of the side's fleet, registered by the admin."""
        key = self.key()
        request = fleet_pb2.RegisterDriverRequest(
            idempotency_key=key, driver=fleet_pb2.Driver(name=f"member {key}", fleet_id=side.fleet_id)
        )
        return str((await self.unary("FleetService/RegisterDriver", request)).driver.driver_id)

    async def mobile_unit(self, side: tm.Side) -> str:
        request = dispatch_pb2.CreateMobileUnitRequest(idempotency_key=self.key(), unit=tm.mobile_unit(side))
        return str((await self.unary("DispatchService/CreateMobileUnit", request)).unit.unit_id)

    async def complaint(self, side: tm.Side) -> str:
        """An open complaint on a fresh order, written directly: filing one needs a paid order (a served
        session), which the matrix's sides do not have; FileComplaint's own rows check who may file."""
        order_id = await self.order(side)
        complaint = Complaint(
            id=f"cmp-{self.key()}",
            order_id=order_id,
            filed_by=side.driver_id,
            fleet_id=side.fleet_id,
            operator_id=side.operator_id,
            state=int(ComplaintState.OPEN),
            reason="matrix",
            created_at=dt.datetime.now(dt.UTC),
        )
        async with self.platform.db.transaction() as session:
            session.add(complaint)
        return complaint.id

    async def applicant(self, side: tm.Side) -> str:
        subject = f"applicant-{next(self.keys)}-{uuid.uuid4().hex[:8]}"
        request = fleet_pb2.RegisterDriverRequest(driver=fleet_pb2.Driver(name=subject, fleet_id=side.fleet_id))
        md = _metadata(self.platform, subject, Role.DRIVER, None)
        return str((await self.unary("FleetService/RegisterDriver", request, md)).driver.driver_id)

    # maint-field's fresh objects (tests/security/tenant_matrix_field.py)
    async def engineer(self, side: tm.Side) -> str:
        request = maintenance_pb2.RegisterEngineerRequest(
            idempotency_key=self.key(),
            engineer=maintenance_pb2.Engineer(name="matrix engineer", operator_id=side.operator_id),
        )
        return str((await self.unary("MaintenanceService/RegisterEngineer", request)).engineer.engineer_id)

    async def incident(self, side: tm.Side) -> str:
        incident = maintenance_pb2.SafetyIncident(
            severity=maintenance_pb2.INCIDENT_SEVERITY_MINOR, station_id=side.station_id,
            occur_time=timestamp_pb2.Timestamp(seconds=1_700_000_000), description="matrix incident",
        )  # fmt: skip
        request = maintenance_pb2.ReportSafetyIncidentRequest(idempotency_key=self.key(), incident=incident)
        return str((await self.unary("MaintenanceService/ReportSafetyIncident", request)).incident.incident_id)


async def _maintenance_alarm(platform: Platform, side: tm.Side, n: int) -> str:
    async with platform.db.transaction() as session:
        opened = await maintenance_api.raise_alarm(
            session, now=dt.datetime.now(dt.UTC), source=maintenance_api.ALARM_SOURCE_STATION,
            level=common_pb2.ALARM_LEVEL_WARNING, code=f"MATRIX_{n}", message="matrix", operator_id=side.operator_id,
            station_id=side.station_id,
        )  # fmt: skip
    return opened.alarm_id


async def _maintenance_work_order(platform: Platform, side: tm.Side, resolved: bool) -> str:
    now = dt.datetime.now(dt.UTC)
    async with platform.db.transaction() as session:
        new = workorders.NewWorkOrder(source=4, level=3, title="matrix", operator_id=side.operator_id,
                                      station_id=side.station_id, equipment_kind="station")  # fmt: skip
        order = await workorders.open_work_order(session, new, now=now, actor_id="matrix", actor_role="operator")
        if resolved:
            for state in (WorkOrderState.ASSIGNED, WorkOrderState.ACCEPTED, WorkOrderState.ON_SITE,
                          WorkOrderState.RESOLVED):  # fmt: skip
                await workorders.transition(session, order.id, to_state=state, actor_id="matrix", actor_role="operator",
                                            now=now, engineer_id="matrix-engineer")  # fmt: skip
    return order.id


async def _operator_ids(factory: Factory, operator_id: str) -> dict[str, Any]:
    async with factory.platform.db.transaction() as session:
        stations = list(
            await session.exec(select(Station).where(Station.operator_id == operator_id).order_by(col(Station.id)))
        )
        swap = next(s for s in stations if s.kind == common_pb2.STATION_KIND_SWAP)
        pack = (await session.exec(select(Pack).where(Pack.station_id == swap.id).order_by(col(Pack.id)))).first()
        charging: Station | None = None
        free: list[str] = []
        for station in (s for s in stations if s.kind == common_pb2.STATION_KIND_CHARGING):
            connectors = await session.exec(
                select(Connector).where(Connector.station_id == station.id, Connector.status == 1)
            )
            dc = [c.id for c in connectors if c.standard == common_pb2.CONNECTOR_STANDARD_GBT_DC]
            if len(dc) > len(free):
                charging, free = station, dc
    assert pack is not None and charging is not None and free, f"demo world lacks objects of {operator_id}"
    factory.used.add(free[0])  # kept free for StartByScan
    return dict(
        operator_id=operator_id,
        station_id=swap.id,
        charge_station_id=charging.id,
        connector_id=free[0],
        pack_id=pack.id,
        position=(charging.lat, charging.lng),
        gateway_id=f"gw-{operator_id}",
    )


async def _fleet_ids(factory: Factory, fleet_id: str, private_index: int) -> dict[str, Any]:
    async with factory.platform.db.transaction() as session:
        drivers = list(await session.exec(select(Driver).where(Driver.fleet_id == fleet_id).order_by(col(Driver.id))))
        driver = None
        for d in drivers:
            v = await session.get(Vehicle, d.vehicle_id) if d.vehicle_id else None
            if v is not None and v.pack_type_id and v.connector_mask & (1 << common_pb2.CONNECTOR_STANDARD_GBT_DC):
                driver = d
                break
        private = list(
            await session.exec(
                select(Driver).where(col(Driver.fleet_id).is_(None), col(Driver.vehicle_id).is_not(None))
                .order_by(col(Driver.id))
            )
        )[private_index]  # fmt: skip
        sub_fleet = (await session.exec(select(Vehicle.sub_fleet_id).where(Vehicle.fleet_id == fleet_id,
                     col(Vehicle.sub_fleet_id).is_not(None)))).first()  # fmt: skip
    assert driver is not None and sub_fleet is not None
    return dict(
        fleet_id=fleet_id,
        sub_fleet_id=sub_fleet,
        driver_id=driver.id,
        vehicle_id=driver.vehicle_id,
        private_driver_id=private.id,
        private_vehicle_id=private.vehicle_id,
    )


async def _money(factory: Factory, ids: dict[str, Any]) -> dict[str, Any]:
    fleet = await fund(factory.platform, "fleet", ids["fleet_id"])
    wallet = await fund(factory.platform, "driver", ids["driver_id"])
    private = await fund(factory.platform, "driver", ids["private_driver_id"])
    created = await factory.unary(
        "SettlementService/CreateAccount",
        settlement_pb2.CreateAccountRequest(kind=settlement_pb2.ACCOUNT_KIND_OPERATOR, owner_id=ids["operator_id"]),
    )
    operator = str(created.account.account_id)
    bills, entries = {}, {}
    for account in (fleet, wallet, private):
        top = settlement_pb2.TopUpRequest(
            idempotency_key=factory.key(), account_id=account, amount=tm._cny(1_000), provider="simulated",
            provider_token="tok",
        )  # fmt: skip
        await factory.unary("SettlementService/TopUp", top)
    # An operator account is never topped up: it earns from a captured hold.
    capture = settlement_pb2.CaptureHoldRequest(
        idempotency_key=factory.key(), hold_id=await factory.hold(fleet), amount=tm._cny(50),
        operator_account_id=operator,
    )  # fmt: skip
    await factory.unary("SettlementService/CaptureHold", capture)
    for account in (fleet, wallet, private, operator):
        listed = await factory.unary(
            "SettlementService/ListJournalEntries", settlement_pb2.ListJournalEntriesRequest(account_id=account)
        )
        entries[account] = str(listed.entries[0].entry_id)
        bill = settlement_pb2.GenerateBillRequest(
            idempotency_key=factory.key(), account_id=account, period=tm._window(-60, 60)
        )
        bills[account] = str((await factory.unary("SettlementService/GenerateBill", bill)).bill.bill_id)
    rate_model = tm.rate_model_request(ids["operator_id"], factory.key())
    model = await factory.unary("SettlementService/CreateRateModel", rate_model)
    return dict(
        fleet_account_id=fleet,
        wallet_id=wallet,
        private_wallet_id=private,
        operator_account_id=operator,
        bills=bills,
        entries=entries,
        rate_model_id=str(model.rate_model.rate_model_id),
    )


async def _valet(factory: Factory, ids: dict[str, Any]) -> dict[str, Any]:
    """A valet order placed by the fleet manager and served by one of the operator's specialists."""
    vehicle = await factory.vehicle(ids["vehicle_id"])
    options = [
        o
        for o in candidates(factory.platform, vehicle, Mode.VALET, skip=frozenset(factory.used))
        if o.operator_id == ids["operator_id"]
    ]
    assert options, f"no valet option of {ids['operator_id']}"
    option = options[0]
    factory.used |= {r for r in (option.pack_id, option.unit_id) if r}
    manager = tm.fleet_manager(ids["fleet_id"])
    quote_id = await inventory_quote(factory.platform, manager, vehicle, [option])
    md = _metadata(factory.platform, manager, Role.FLEET_MANAGER, f"fleet:{ids['fleet_id']}")
    request = ordering_pb2.CreateOrderRequest(idempotency_key=factory.key(), quote_id=quote_id, option_id="o1")
    order_id = str((await factory.unary("OrderingService/CreateOrder", request, md)).order.order_id)
    for _ in range(50):
        async with factory.platform.db.transaction() as session:
            order = await session.get(Order, order_id)
        if order is not None and order.task_id:
            break
        await asyncio.sleep(0.1)
    assert order is not None and order.task_id, f"valet order {order_id} got no task"
    return dict(valet_order_id=order_id, task_id=order.task_id, unit_id=option.unit_id)


async def build_side(factory: Factory, index: int) -> tm.Side:
    ids = await _operator_ids(factory, OPERATORS[index])
    ids |= await _fleet_ids(factory, FLEETS[index], index)
    ids |= await _money(factory, ids)
    ids |= await _valet(factory, ids)
    partial = tm.Side(**{**ids, "order_id": "", "reservation_id": ""})
    ids["order_id"] = await factory.order(partial)
    ids["reservation_id"] = await factory.reservation(partial)
    return tm.Side(**ids)


# ---- running the cells --------------------------------------------------------------------------------------


def _response_type(path: str) -> type[Message]:
    method = descriptor_pool.Default().FindMethodByName(path.lstrip("/").replace("/", "."))
    return message_factory.GetMessageClass(method.output_type)


def _outcome(response: Message) -> str:
    repeated = [f for f in response.DESCRIPTOR.fields if f.is_repeated]
    if repeated and all(len(getattr(response, f.name)) == 0 for f in repeated):
        return tm.OK_EMPTY
    return tm.OK


async def _first_of_stream(call: Any) -> str:
    try:
        first = await asyncio.wait_for(call.read(), STREAM_FIRST_S)
    except grpc.aio.AioRpcError as err:
        return str(err.code().name)
    except TimeoutError:
        return "TIMEOUT (no first message)"
    finally:
        call.cancel()
    if first is grpc.aio.EOF:
        return str((await call.code()).name)
    return tm.OK


async def invoke(channel: grpc.aio.Channel, path: str, request: Message, md: tuple[tuple[str, str], ...]) -> str:
    method = descriptor_pool.Default().FindMethodByName(path.lstrip("/").replace("/", "."))
    decode = _response_type(path).FromString
    encode = type(request).SerializeToString
    try:
        if method.client_streaming:
            stream = channel.stream_stream(path, request_serializer=encode, response_deserializer=decode)
            opened = asyncio.Event()

            async def requests() -> AsyncIterator[Message]:
                yield request
                await opened.wait()  # keep our side open until the first answer was read

            try:
                return await _first_of_stream(stream(requests(), metadata=md, timeout=UNARY_DEADLINE_S))
            finally:
                opened.set()
        if method.server_streaming:
            reader = channel.unary_stream(path, request_serializer=encode, response_deserializer=decode)
            return await _first_of_stream(reader(request, metadata=md, timeout=UNARY_DEADLINE_S))
        unary = channel.unary_unary(path, request_serializer=encode, response_deserializer=decode)
        return _outcome(await unary(request, metadata=md, timeout=UNARY_DEADLINE_S))
    except grpc.aio.AioRpcError as err:
        return str(err.code().name)


@dataclass(frozen=True)
class Result:
    row: tm.Row
    role: Role
    scope: tm.Scope
    expected: tm.Expect
    got: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.expected.accepts(self.got)


async def run_cell(
    factory: Factory, sides: dict[tm.Scope, tm.Side], row: tm.Row, role: Role, scope: tm.Scope, n: int
) -> Result:
    home = sides["own"]
    subject, tenant = tm.caller(role, home, row.driver)
    call = tm.Call(role, subject, row.driver, sides[scope], home, f"m{n}-{uuid.uuid4().hex[:10]}", factory)
    expected = row.expected(role, scope)
    try:
        built = row.build(call)
        request = await built if inspect.isawaitable(built) else built
    except Exception as exc:  # a setup failure is reported in the table, not hidden
        return Result(row, role, scope, expected, "BUILD FAILED", f"{type(exc).__name__}: {exc}"[:160])
    md = _metadata(factory.platform, subject, role, tenant)
    return Result(row, role, scope, expected, await invoke(factory.channel, row.path, request, md))


def table(results: list[Result]) -> str:
    head = ("rpc", "role", "tenant", "expected", "got", "why / detail")
    lines = [
        (r.row.label, r.role.name.lower(), r.scope, str(r.expected), r.got, r.detail or r.expected.why) for r in results
    ]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(5)]
    return "\n".join(" | ".join(x[i].ljust(widths[i]) for i in range(5)) + " | " + x[5] for x in [head, *lines])


async def test_tenant_matrix(tmp_path: Path, database_url: str) -> None:
    started = time.monotonic()
    # The sides' valet task stays offered to its specialist for the whole run (the default 30 s offer expires
    # before the dispatch rows on a busy machine, and the task then reads NOT_FOUND to the specialist).
    async with (
        serving(tmp_path, database_url, dispatch_offer_timeout_s=3600.0) as platform,
        channel_to(platform) as channel,
    ):
        factory = Factory(platform, channel)
        sides: dict[tm.Scope, tm.Side] = {"own": await build_side(factory, 0), "other": await build_side(factory, 1)}
        setup_s = time.monotonic() - started
        results = []
        n = itertools.count()
        for row in tm.ROWS:
            for role in Role:
                for scope in tm.SCOPES:
                    results.append(await run_cell(factory, sides, row, role, scope, next(n)))
    elapsed = time.monotonic() - started
    bad = [r for r in results if not r.ok]
    summary = f"{len(results)} cells, {len(bad)} mismatches, setup {setup_s:.1f}s, total {elapsed:.1f}s"
    print(summary)
    assert not bad, f"tenant matrix: {summary}\n{table(bad)}"
