"""Fleet's converters: request messages -> domain values and rows -> messages. Only the shape of a request is
read here; what a value may be (VIN, ranges, whose fleet) is the domain modules' business."""

from __future__ import annotations

import datetime as dt

from voltcloud.api.v1 import common_pb2, fleet_pb2
from voltcloud.fleet import statements
from voltcloud.fleet.api import Driver, Fleet, SubFleet, TokenView, Vehicle
from voltcloud.fleet.drivers import DriverFilter, NewDriver
from voltcloud.fleet.fleets import PaymentTerms
from voltcloud.fleet.reports import DailyReport, to_csv
from voltcloud.fleet.statements import FleetStatement
from voltcloud.fleet.tokens import NewToken
from voltcloud.fleet.vehicles import NewVehicle, VehicleFilter
from voltcloud.platform.convert import money_message, money_value
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.limits import optional_datetime, to_duration, to_timestamp

_STANDARDS = [s for s in common_pb2.ConnectorStandard.values() if s != common_pb2.CONNECTOR_STANDARD_UNSPECIFIED]


def payment_terms(
    request: fleet_pb2.CreateFleetRequest | fleet_pb2.CreateSubFleetRequest | fleet_pb2.SetPaymentModeRequest,
) -> PaymentTerms:
    amount, currency = money_value(request.credit_limit) if request.HasField("credit_limit") else (0, "")
    return PaymentTerms(mode=int(request.payment_mode), credit_limit_minor=amount, credit_currency=currency)


def amount(request: fleet_pb2.AllocateBalanceRequest) -> tuple[int, str]:
    if not request.HasField("amount"):
        raise InvalidArgument.for_field("amount", "is required")
    return money_value(request.amount)


def fleet_message(fleet: Fleet) -> fleet_pb2.Fleet:
    message = fleet_pb2.Fleet(
        fleet_id=fleet.id,
        name=fleet.name,
        account_id=fleet.account_id or "",
        payment_mode=fleet.payment_mode,  # type: ignore[arg-type]
        credit_limit=money_message(fleet.credit_limit_minor, fleet.currency),
        currency=fleet.currency,
    )
    if fleet.created_at is not None:
        message.create_time.CopyFrom(to_timestamp(fleet.created_at))
    return message


def sub_fleet_message(sub_fleet: SubFleet, currency: str) -> fleet_pb2.SubFleet:
    message = fleet_pb2.SubFleet(
        sub_fleet_id=sub_fleet.id,
        fleet_id=sub_fleet.fleet_id,
        name=sub_fleet.name,
        account_id=sub_fleet.account_id or "",
        payment_mode=sub_fleet.payment_mode,  # type: ignore[arg-type]
        credit_limit=money_message(sub_fleet.credit_limit_minor, currency),
    )
    if sub_fleet.created_at is not None:
        message.create_time.CopyFrom(to_timestamp(sub_fleet.created_at))
    return message


def new_vehicle(request: fleet_pb2.RegisterVehicleRequest) -> NewVehicle:
    if not request.HasField("vehicle"):
        raise InvalidArgument.for_field("vehicle", "is required")
    v = request.vehicle
    return NewVehicle(
        vin=v.vin,
        plate=v.plate,
        model=v.model_id,
        pack_type_id=v.pack_type_id,
        connector_standards=tuple(int(s) for s in v.connector_standards),
        capacity_wh=v.battery_capacity_wh,
        consumption_wh_per_km=v.consumption_wh_per_km,
        max_dc_power_w=v.max_dc_power_w,
        max_ac_power_w=v.max_ac_power_w,
        fleet_id=v.fleet_id,
        sub_fleet_id=v.sub_fleet_id,
        owner_driver_id=v.owner_driver_id,
    )


def vehicle_filter(request: fleet_pb2.ListVehiclesRequest) -> VehicleFilter:
    return VehicleFilter(request.fleet_id, request.sub_fleet_id, request.model_id, request.vin)


def vehicle_message(vehicle: Vehicle) -> fleet_pb2.Vehicle:
    message = fleet_pb2.Vehicle(
        vehicle_id=vehicle.id,
        vin=vehicle.vin,
        plate=vehicle.plate or "",
        model_id=vehicle.model,
        pack_type_id=str(vehicle.pack_type_id) if vehicle.pack_type_id is not None else "",
        connector_standards=[s for s in _STANDARDS if vehicle.connector_mask & (1 << s)],
        battery_capacity_wh=vehicle.usable_capacity_wh,
        consumption_wh_per_km=vehicle.consumption_wh_per_km,
        max_dc_power_w=vehicle.max_dc_power_w,
        max_ac_power_w=vehicle.max_ac_power_w,
        fleet_id=vehicle.fleet_id or "",
        sub_fleet_id=vehicle.sub_fleet_id or "",
        owner_driver_id=vehicle.owner_driver_id or "",
    )
    if vehicle.created_at is not None:
        message.create_time.CopyFrom(to_timestamp(vehicle.created_at))
    if vehicle.retired_at is not None:
        message.retire_time.CopyFrom(to_timestamp(vehicle.retired_at))
        message.retire_reason = vehicle.retire_reason or ""
    return message


def vehicle_update(request: fleet_pb2.UpdateVehicleRequest) -> tuple[NewVehicle, tuple[str, ...]]:
    """UpdateVehicle's new values (RegisterVehicle's shape) and the names of the fields to change."""
    if not request.idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    changes = new_vehicle(fleet_pb2.RegisterVehicleRequest(vehicle=request.vehicle))
    return changes, tuple(request.update_fields)


def driver_update(request: fleet_pb2.UpdateDriverRequest) -> tuple[NewDriver, tuple[str, ...]]:
    if not request.idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    d = request.driver
    return NewDriver(d.name, d.phone, "", d.sub_fleet_id, tuple(d.vehicle_ids)), tuple(request.update_fields)


def new_driver(request: fleet_pb2.RegisterDriverRequest) -> NewDriver:
    if not request.HasField("driver"):
        raise InvalidArgument.for_field("driver", "is required")
    d = request.driver
    return NewDriver(d.name, d.phone, d.fleet_id, d.sub_fleet_id, tuple(d.vehicle_ids))


def driver_filter(request: fleet_pb2.ListDriversRequest) -> DriverFilter:
    return DriverFilter(request.fleet_id, request.sub_fleet_id, request.vehicle_id, int(request.status))


def driver_message(driver: Driver) -> fleet_pb2.Driver:
    message = fleet_pb2.Driver(
        driver_id=driver.id,
        name=driver.name,
        phone=driver.phone or "",
        fleet_id=driver.fleet_id or "",
        sub_fleet_id=driver.sub_fleet_id or "",
        account_id=driver.account_id or "",
        vehicle_ids=[driver.vehicle_id] if driver.vehicle_id else [],
        status=driver.status,  # type: ignore[arg-type]
        applied_fleet_id=driver.applied_fleet_id or "",
        rejection_reason=driver.rejection_reason or "",
    )
    if driver.created_at is not None:
        message.create_time.CopyFrom(to_timestamp(driver.created_at))
    return message


def new_token(request: fleet_pb2.IssueChargingTokenRequest) -> NewToken:
    if not request.idempotency_key:
        raise InvalidArgument.for_field("idempotency_key", "is required")
    return NewToken(
        fleet_id=request.fleet_id,
        sub_fleet_id=request.sub_fleet_id,
        driver_id=request.driver_id,
        vehicle_id=request.vehicle_id,
        id_tag=request.id_tag,
        operator_id=request.operator_id,
        expires_at=optional_datetime(request, "expiry_time", zero="invalid"),
    )


def token_message(token: TokenView) -> fleet_pb2.FleetChargingToken:
    message = fleet_pb2.FleetChargingToken(
        token_id=token.token_id,
        id_tag=token.id_tag,
        operator_id=token.operator_id,
        fleet_id=token.fleet_id,
        sub_fleet_id=token.sub_fleet_id,
        vehicle_id=token.vehicle_id,
        account_id=token.account_id,
        status=token.status,  # type: ignore[arg-type]
    )
    if token.expires_at is not None:
        message.expiry_time.CopyFrom(to_timestamp(token.expires_at))
    return message


def statement_message(done: FleetStatement, next_page_token: str) -> fleet_pb2.GetFleetStatementResponse:
    s, subs = done.statement, done.sub_fleet_of_account
    total = sum(amount for _, amount in s.order_spend.values())
    return fleet_pb2.GetFleetStatementResponse(
        lines=[
            fleet_pb2.FleetStatementLine(
                sub_fleet_id=subs.get(account_id, ""), order_count=count, amount=money_message(amount, s.currency)
            )
            for account_id, (count, amount) in sorted(s.order_spend.items(), key=lambda item: subs.get(item[0], ""))
        ],
        total_amount=money_message(total, s.currency),
        opening_balance=money_message(s.opening_minor, s.currency),
        closing_balance=money_message(s.closing_minor, s.currency),
        total_credits=money_message(s.credits_minor, s.currency),
        total_debits=money_message(s.debits_minor, s.currency),
        entries=[
            fleet_pb2.FleetStatementEntry(
                entry_id=e.entry_id,
                posted_at=to_timestamp(e.posted_at),
                kind=e.kind,
                description=e.description,
                order_id=e.order_id,
                sub_fleet_id=subs.get(e.account_id, ""),
                amount=money_message(e.amount_minor, s.currency),
                balance_after=money_message(e.balance_after_minor, s.currency),
            )
            for e in s.entries
        ],
        next_page_token=next_page_token,
        csv=statements.to_csv(done),
    )


def period(request: fleet_pb2.GetFleetStatementRequest) -> tuple[dt.datetime | None, dt.datetime | None]:
    given: tuple[dt.datetime | None, dt.datetime | None] = (None, None)
    if request.HasField("period"):
        window = request.period
        given = optional_datetime(window, "start", "period.start"), optional_datetime(window, "end", "period.end")
    return statements.statement_period(given, request.month, request.time_zone)


def daily_report_message(report: DailyReport) -> fleet_pb2.GetFleetDailyReportResponse:
    return fleet_pb2.GetFleetDailyReportResponse(
        lines=[
            fleet_pb2.VehicleDayLine(
                vehicle_id=line.vehicle.id,
                sub_fleet_id=line.vehicle.sub_fleet_id or "",
                plate=line.vehicle.plate or "",
                order_count=line.day.orders,
                completed_count=line.day.completed,
                swap_energy_wh=line.day.swap_energy_wh,
                charge_energy_wh=line.day.charge_energy_wh,
                cost=money_message(line.day.cost_minor, report.currency),
                has_telemetry=line.driving is not None,
                distance_m=line.driving.distance_m if line.driving else 0,
                driving=to_duration(line.driving.driving_s if line.driving else 0),
                electric_distance_m=line.carbon.electric_distance_m,
                co2_avoided_g=line.carbon.co2_avoided_g,
            )
            for line in report.lines
        ],
        total_cost=money_message(report.total_cost_minor, report.currency),
        csv=to_csv(report),
        total_co2_avoided_g=report.total_co2_avoided_g,
    )
