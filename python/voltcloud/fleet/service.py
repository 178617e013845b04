"""FleetService servicer: each RPC converts its request (`convert`), asks the fleet modules (which hold every
rule, including whose fleet the caller may see and change) and converts their answer back. No rules here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import fleet_pb2, fleet_pb2_grpc
from voltcloud.fleet import convert, drivers, fleets, reports, statements, tokens, vehicles
from voltcloud.fleet.ports import ChargingTokens, DrivingFacts, Ledger, OrderFacts, PackTypes
from voltcloud.platform import idempotency
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.convert import money_message
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.limits import optional_datetime
from voltcloud.platform.paging import next_page_token, parse_page
from voltcloud.platform.rpc import current_principal

R = TypeVar("R", bound=idempotency.Response)


class VehicleTelemetryRpcs(Protocol):
    """The vehicle telemetry RPCs, answered by the telemetry room (above fleet), wired by `server.py`."""

    async def GetVehicleState(
        self, request: fleet_pb2.GetVehicleStateRequest, context: Any
    ) -> fleet_pb2.GetVehicleStateResponse: ...

    async def GetVehicleTrack(
        self, request: fleet_pb2.GetVehicleTrackRequest, context: Any
    ) -> fleet_pb2.GetVehicleTrackResponse: ...

    async def ListVehicleAlerts(
        self, request: fleet_pb2.ListVehicleAlertsRequest, context: Any
    ) -> fleet_pb2.ListVehicleAlertsResponse: ...

    def WatchVehicles(
        self, request: fleet_pb2.WatchVehiclesRequest, context: Any
    ) -> AsyncIterator[fleet_pb2.WatchVehiclesResponse]: ...

    async def SetFleetAlertLimits(
        self, request: fleet_pb2.SetFleetAlertLimitsRequest, context: Any
    ) -> fleet_pb2.SetFleetAlertLimitsResponse: ...


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        pack_types: PackTypes,
        charging_tokens: ChargingTokens,
        order_facts: OrderFacts,
        telemetry: VehicleTelemetryRpcs,
        driving_facts: DrivingFacts,
        clock: Clock | None = None,
    ) -> None:
        self._db = db
        self._ledger = ledger
        self._pack_types = pack_types
        self._tokens = charging_tokens
        self._order_facts = order_facts
        self._telemetry = telemetry
        self._driving = driving_facts
        self._clock: Clock = clock or SystemClock()

    async def _keyed(
        self, name: str, request: Any, response_type: Any, work: Callable[[AsyncSession], Awaitable[R]]
    ) -> R:
        """One transaction: the key is claimed with the work, so a retry replays the first response."""
        async with self._db.transaction(f"fleet.{name}") as session:
            return await idempotency.once(
                session,
                f"FleetService.{name}",
                current_principal().subject,
                request,
                response_type.FromString,
                lambda: work(session),
                now=self._clock.now(),
            )

    # fleets ---------------------------------------------------------------------------------------------------

    async def CreateFleet(self, request: fleet_pb2.CreateFleetRequest, context: Any) -> fleet_pb2.CreateFleetResponse:
        terms = convert.payment_terms(request)

        async def work(session: AsyncSession) -> fleet_pb2.CreateFleetResponse:
            fleet = await fleets.create_fleet(
                session, self._ledger, name=request.name, currency=request.currency, terms=terms, now=self._clock.now()
            )
            return fleet_pb2.CreateFleetResponse(fleet=convert.fleet_message(fleet))

        return await self._keyed("CreateFleet", request, fleet_pb2.CreateFleetResponse, work)

    async def GetFleet(self, request: fleet_pb2.GetFleetRequest, context: Any) -> fleet_pb2.GetFleetResponse:
        async with self._db.transaction("fleet.GetFleet") as session:
            fleet, subs = await fleets.get_fleet(session, current_principal(), request.fleet_id)
        return fleet_pb2.GetFleetResponse(
            fleet=convert.fleet_message(fleet), sub_fleets=[convert.sub_fleet_message(s, fleet.currency) for s in subs]
        )

    async def CreateSubFleet(
        self, request: fleet_pb2.CreateSubFleetRequest, context: Any
    ) -> fleet_pb2.CreateSubFleetResponse:
        terms = convert.payment_terms(request)

        async def work(session: AsyncSession) -> fleet_pb2.CreateSubFleetResponse:
            fleet, sub = await fleets.create_sub_fleet(
                session,
                self._ledger,
                current_principal(),
                fleet_id=request.fleet_id,
                name=request.name,
                terms=terms,
                now=self._clock.now(),
            )
            return fleet_pb2.CreateSubFleetResponse(sub_fleet=convert.sub_fleet_message(sub, fleet.currency))

        return await self._keyed("CreateSubFleet", request, fleet_pb2.CreateSubFleetResponse, work)

    async def AllocateBalance(
        self, request: fleet_pb2.AllocateBalanceRequest, context: Any
    ) -> fleet_pb2.AllocateBalanceResponse:
        if not request.idempotency_key:
            raise InvalidArgument.for_field("idempotency_key", "is required: this RPC moves money")
        amount_minor, currency = convert.amount(request)

        async def work(session: AsyncSession) -> fleet_pb2.AllocateBalanceResponse:
            done = await fleets.allocate_balance(
                session,
                self._ledger,
                current_principal(),
                fleet_id=request.fleet_id,
                sub_fleet_id=request.sub_fleet_id,
                amount_minor=amount_minor,
                currency=currency,
                idempotency_key=request.idempotency_key,
            )
            return fleet_pb2.AllocateBalanceResponse(
                entry_id=done.entry_id,
                fleet_balance=money_message(done.fleet_balance_minor, done.currency),
                sub_fleet_balance=money_message(done.sub_fleet_balance_minor, done.currency),
            )

        return await self._keyed("AllocateBalance", request, fleet_pb2.AllocateBalanceResponse, work)

    async def SetPaymentMode(
        self, request: fleet_pb2.SetPaymentModeRequest, context: Any
    ) -> fleet_pb2.SetPaymentModeResponse:
        terms = convert.payment_terms(request)

        async def work(session: AsyncSession) -> fleet_pb2.SetPaymentModeResponse:
            fleet, sub = await fleets.set_payment_mode(
                session,
                self._ledger,
                current_principal(),
                fleet_id=request.fleet_id,
                sub_fleet_id=request.sub_fleet_id,
                terms=terms,
            )
            response = fleet_pb2.SetPaymentModeResponse(fleet=convert.fleet_message(fleet))
            if sub is not None:
                response.sub_fleet.CopyFrom(convert.sub_fleet_message(sub, fleet.currency))
            return response

        return await self._keyed("SetPaymentMode", request, fleet_pb2.SetPaymentModeResponse, work)

    async def GetFleetStatement(
        self, request: fleet_pb2.GetFleetStatementRequest, context: Any
    ) -> fleet_pb2.GetFleetStatementResponse:
        page = parse_page(request.page_size, request.page_token)
        period = convert.period(request)
        async with self._db.transaction("fleet.GetFleetStatement") as session:
            done = await statements.fleet_statement(
                session,
                self._ledger,
                current_principal(),
                fleet_id=request.fleet_id,
                sub_fleet_id=request.sub_fleet_id,
                period=period,
                page=page,
            )
        entries = done.statement.entries
        last = str(entries[-1].posting_id) if entries else None
        return convert.statement_message(done, next_page_token(last, len(entries), page))

    # vehicles -------------------------------------------------------------------------------------------------

    async def RegisterVehicle(
        self, request: fleet_pb2.RegisterVehicleRequest, context: Any
    ) -> fleet_pb2.RegisterVehicleResponse:
        new = convert.new_vehicle(request)

        async def work(session: AsyncSession) -> fleet_pb2.RegisterVehicleResponse:
            vehicle = await vehicles.register_vehicle(
                session, current_principal(), self._pack_types, new, now=self._clock.now()
            )
            return fleet_pb2.RegisterVehicleResponse(vehicle=convert.vehicle_message(vehicle))

        return await self._keyed("RegisterVehicle", request, fleet_pb2.RegisterVehicleResponse, work)

    async def GetVehicle(self, request: fleet_pb2.GetVehicleRequest, context: Any) -> fleet_pb2.GetVehicleResponse:
        async with self._db.transaction("fleet.GetVehicle") as session:
            vehicle = await vehicles.visible_vehicle(session, current_principal(), request.vehicle_id)
        return fleet_pb2.GetVehicleResponse(vehicle=convert.vehicle_message(vehicle))

    async def ListVehicles(
        self, request: fleet_pb2.ListVehiclesRequest, context: Any
    ) -> fleet_pb2.ListVehiclesResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("fleet.ListVehicles") as session:
            rows = await vehicles.list_vehicles(session, current_principal(), convert.vehicle_filter(request), page)
        return fleet_pb2.ListVehiclesResponse(
            vehicles=[convert.vehicle_message(v) for v in rows],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )

    async def MoveVehicle(self, request: fleet_pb2.MoveVehicleRequest, context: Any) -> fleet_pb2.MoveVehicleResponse:
        async def work(session: AsyncSession) -> fleet_pb2.MoveVehicleResponse:
            vehicle = await vehicles.move_vehicle(
                session, current_principal(), request.vehicle_id, request.sub_fleet_id
            )
            return fleet_pb2.MoveVehicleResponse(vehicle=convert.vehicle_message(vehicle))

        return await self._keyed("MoveVehicle", request, fleet_pb2.MoveVehicleResponse, work)

    async def GetVehicleState(
        self, request: fleet_pb2.GetVehicleStateRequest, context: Any
    ) -> fleet_pb2.GetVehicleStateResponse:
        return await self._telemetry.GetVehicleState(request, context)

    async def GetVehicleTrack(
        self, request: fleet_pb2.GetVehicleTrackRequest, context: Any
    ) -> fleet_pb2.GetVehicleTrackResponse:
        return await self._telemetry.GetVehicleTrack(request, context)

    async def ListVehicleAlerts(
        self, request: fleet_pb2.ListVehicleAlertsRequest, context: Any
    ) -> fleet_pb2.ListVehicleAlertsResponse:
        return await self._telemetry.ListVehicleAlerts(request, context)

    async def WatchVehicles(
        self, request: fleet_pb2.WatchVehiclesRequest, context: Any
    ) -> AsyncIterator[fleet_pb2.WatchVehiclesResponse]:
        async for update in self._telemetry.WatchVehicles(request, context):
            yield update

    async def SetFleetAlertLimits(
        self, request: fleet_pb2.SetFleetAlertLimitsRequest, context: Any
    ) -> fleet_pb2.SetFleetAlertLimitsResponse:
        return await self._telemetry.SetFleetAlertLimits(request, context)

    # drivers --------------------------------------------------------------------------------------------------

    async def RegisterDriver(
        self, request: fleet_pb2.RegisterDriverRequest, context: Any
    ) -> fleet_pb2.RegisterDriverResponse:
        new = convert.new_driver(request)

        async def work(session: AsyncSession) -> fleet_pb2.RegisterDriverResponse:
            driver = await drivers.register_driver(
                session, self._ledger, current_principal(), new, now=self._clock.now()
            )
            return fleet_pb2.RegisterDriverResponse(driver=convert.driver_message(driver))

        return await self._keyed("RegisterDriver", request, fleet_pb2.RegisterDriverResponse, work)

    async def ReviewDriver(
        self, request: fleet_pb2.ReviewDriverRequest, context: Any
    ) -> fleet_pb2.ReviewDriverResponse:
        async def work(session: AsyncSession) -> fleet_pb2.ReviewDriverResponse:
            driver = await drivers.review_driver(
                session,
                self._ledger,
                current_principal(),
                fleet_id=request.fleet_id,
                driver_id=request.driver_id,
                approve=request.approve,
                reason=request.reason,
                sub_fleet_id=request.sub_fleet_id,
            )
            return fleet_pb2.ReviewDriverResponse(driver=convert.driver_message(driver))

        return await self._keyed("ReviewDriver", request, fleet_pb2.ReviewDriverResponse, work)

    async def ListDrivers(self, request: fleet_pb2.ListDriversRequest, context: Any) -> fleet_pb2.ListDriversResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("fleet.ListDrivers") as session:
            rows = await drivers.list_drivers(session, current_principal(), convert.driver_filter(request), page)
        return fleet_pb2.ListDriversResponse(
            drivers=[convert.driver_message(d) for d in rows],
            next_page_token=next_page_token(rows[-1].id if rows else None, len(rows), page),
        )

    # charging tokens ------------------------------------------------------------------------------------------

    async def IssueChargingToken(
        self, request: fleet_pb2.IssueChargingTokenRequest, context: Any
    ) -> fleet_pb2.IssueChargingTokenResponse:
        new = convert.new_token(request)

        async def work(session: AsyncSession) -> fleet_pb2.IssueChargingTokenResponse:
            token = await tokens.issue(session, self._tokens, current_principal(), new, now=self._clock.now())
            return fleet_pb2.IssueChargingTokenResponse(token=convert.token_message(token))

        return await self._keyed("IssueChargingToken", request, fleet_pb2.IssueChargingTokenResponse, work)

    async def BlockChargingToken(
        self, request: fleet_pb2.BlockChargingTokenRequest, context: Any
    ) -> fleet_pb2.BlockChargingTokenResponse:
        async with self._db.transaction("fleet.BlockChargingToken") as session:
            token = await tokens.set_blocked(
                session,
                self._tokens,
                current_principal(),
                fleet_id=request.fleet_id,
                token_id=request.token_id,
                blocked=request.blocked,
                now=self._clock.now(),
            )
        return fleet_pb2.BlockChargingTokenResponse(token=convert.token_message(token))

    async def SetChargingTokenExpiry(
        self, request: fleet_pb2.SetChargingTokenExpiryRequest, context: Any
    ) -> fleet_pb2.SetChargingTokenExpiryResponse:
        expires_at = optional_datetime(request, "expiry_time", zero="invalid")
        async with self._db.transaction("fleet.SetChargingTokenExpiry") as session:
            token = await tokens.set_expiry(
                session,
                self._tokens,
                current_principal(),
                fleet_id=request.fleet_id,
                token_id=request.token_id,
                expires_at=expires_at,
                now=self._clock.now(),
            )
        return fleet_pb2.SetChargingTokenExpiryResponse(token=convert.token_message(token))

    async def ListChargingTokens(
        self, request: fleet_pb2.ListChargingTokensRequest, context: Any
    ) -> fleet_pb2.ListChargingTokensResponse:
        page = parse_page(request.page_size, request.page_token)
        async with self._db.transaction("fleet.ListChargingTokens") as session:
            rows = await tokens.list_tokens(
                session,
                self._tokens,
                current_principal(),
                fleet_id=request.fleet_id,
                sub_fleet_id=request.sub_fleet_id,
                page=page,
                now=self._clock.now(),
            )
        return fleet_pb2.ListChargingTokensResponse(
            tokens=[convert.token_message(t) for t in rows],
            next_page_token=next_page_token(rows[-1].token_id if rows else None, len(rows), page),
        )

    # reports --------------------------------------------------------------------------------------------------

    async def GetFleetDailyReport(
        self, request: fleet_pb2.GetFleetDailyReportRequest, context: Any
    ) -> fleet_pb2.GetFleetDailyReportResponse:
        async with self._db.transaction("fleet.GetFleetDailyReport") as session:
            report = await reports.daily_report(
                session,
                self._order_facts,
                self._driving,
                current_principal(),
                fleet_id=request.fleet_id,
                sub_fleet_id=request.sub_fleet_id,
                window=reports.day_window(request.date, request.time_zone),
            )
        return convert.daily_report_message(report)

    # ---- fleet-swap: vehicle and driver lifecycle ------------------------------------------------------------

    async def UpdateVehicle(
        self, request: fleet_pb2.UpdateVehicleRequest, context: Any
    ) -> fleet_pb2.UpdateVehicleResponse:
        changes, fields = convert.vehicle_update(request)

        async def work(session: AsyncSession) -> fleet_pb2.UpdateVehicleResponse:
            vehicle = await vehicles.update_vehicle(
                session, current_principal(), self._pack_types, request.vehicle_id, changes, fields
            )
            return fleet_pb2.UpdateVehicleResponse(vehicle=convert.vehicle_message(vehicle))

        return await self._keyed("UpdateVehicle", request, fleet_pb2.UpdateVehicleResponse, work)

    async def RetireVehicle(
        self, request: fleet_pb2.RetireVehicleRequest, context: Any
    ) -> fleet_pb2.RetireVehicleResponse:
        async def work(session: AsyncSession) -> fleet_pb2.RetireVehicleResponse:
            vehicle = await vehicles.retire_vehicle(
                session, current_principal(), request.vehicle_id, request.reason, now=self._clock.now()
            )
            return fleet_pb2.RetireVehicleResponse(vehicle=convert.vehicle_message(vehicle))

        return await self._keyed("RetireVehicle", request, fleet_pb2.RetireVehicleResponse, work)

    async def UpdateDriver(
        self, request: fleet_pb2.UpdateDriverRequest, context: Any
    ) -> fleet_pb2.UpdateDriverResponse:
        new, fields = convert.driver_update(request)

        async def work(session: AsyncSession) -> fleet_pb2.UpdateDriverResponse:
            driver = await drivers.update_driver(
                session, current_principal(), request.fleet_id, request.driver_id, new, fields
            )
            return fleet_pb2.UpdateDriverResponse(driver=convert.driver_message(driver))

        return await self._keyed("UpdateDriver", request, fleet_pb2.UpdateDriverResponse, work)

    async def SuspendDriver(
        self, request: fleet_pb2.SuspendDriverRequest, context: Any
    ) -> fleet_pb2.SuspendDriverResponse:
        async def work(session: AsyncSession) -> fleet_pb2.SuspendDriverResponse:
            driver = await drivers.suspend_driver(
                session,
                current_principal(),
                request.fleet_id,
                request.driver_id,
                suspended=request.suspended,
                reason=request.reason,
            )
            return fleet_pb2.SuspendDriverResponse(driver=convert.driver_message(driver))

        return await self._keyed("SuspendDriver", request, fleet_pb2.SuspendDriverResponse, work)

    async def RemoveDriver(
        self, request: fleet_pb2.RemoveDriverRequest, context: Any
    ) -> fleet_pb2.RemoveDriverResponse:
        async def work(session: AsyncSession) -> fleet_pb2.RemoveDriverResponse:
            driver = await drivers.remove_driver(
                session, current_principal(), request.fleet_id, request.driver_id, request.reason
            )
            return fleet_pb2.RemoveDriverResponse(driver=convert.driver_message(driver))

        return await self._keyed("RemoveDriver", request, fleet_pb2.RemoveDriverResponse, work)
