"""A fleet's daily operation report: one line per vehicle of the fleet (or one sub-fleet), with ordering's
facts for the day (`OrderFacts` port), telemetry's distance and driving time where the vehicle sent telemetry
(`DrivingFacts` port), and its CSV export. The day is a local calendar day (default Asia/Shanghai), turned
into a UTC window. Each line's carbon reduction is computed from the energy taken on (`carbon.py`)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.access import managed_fleet, sub_fleet_of
from voltcloud.fleet.carbon import Carbon, carbon_of
from voltcloud.fleet.models import Vehicle
from voltcloud.fleet.ports import DrivingDay, DrivingFacts, OrderFacts, VehicleDay
from voltcloud.platform.auth import Principal
from voltcloud.platform.errors import InvalidArgument

DEFAULT_TZ = "Asia/Shanghai"
MAX_VEHICLES = 5_000  # one report is one answer; larger fleets ask per sub-fleet


@dataclass(frozen=True)
class ReportLine:
    vehicle: Vehicle
    day: VehicleDay
    driving: DrivingDay | None = None  # None: no telemetry that day

    @property
    def carbon(self) -> Carbon:
        energy = self.day.swap_energy_wh + self.day.charge_energy_wh
        return carbon_of(energy, self.vehicle.consumption_wh_per_km)


@dataclass(frozen=True)
class DailyReport:
    currency: str
    lines: list[ReportLine]

    @property
    def total_cost_minor(self) -> int:
        return sum(line.day.cost_minor for line in self.lines)

    @property
    def total_co2_avoided_g(self) -> int:
        return sum(line.carbon.co2_avoided_g for line in self.lines)


def day_window(date: str, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise InvalidArgument.for_field("date", f"must be YYYY-MM-DD, got {date!r}") from None
    try:
        zone = ZoneInfo(time_zone or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument.for_field("time_zone", f"unknown IANA time zone {time_zone!r}") from None
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


async def daily_report(
    session: AsyncSession,
    facts: OrderFacts,
    driving: DrivingFacts,
    principal: Principal,
    *,
    fleet_id: str,
    sub_fleet_id: str,
    window: tuple[dt.datetime, dt.datetime],
) -> DailyReport:
    fleet = await managed_fleet(session, principal, fleet_id)
    query = select(Vehicle).where(Vehicle.fleet_id == fleet.id)
    if sub_fleet_id:
        await sub_fleet_of(session, fleet, sub_fleet_id, field="sub_fleet_id")
        query = query.where(Vehicle.sub_fleet_id == sub_fleet_id)
    vehicles = list(await session.exec(query.order_by(col(Vehicle.id)).limit(MAX_VEHICLES + 1)))
    if len(vehicles) > MAX_VEHICLES:
        raise InvalidArgument.for_field("sub_fleet_id", f"over {MAX_VEHICLES} vehicles: ask per sub-fleet")
    start, end = window
    days = await facts.vehicle_days(
        session, fleet_id=fleet.id, vehicle_ids=[v.id for v in vehicles], start=start, end=end
    )
    by_vehicle = {d.vehicle_id: d for d in days}
    driven = {
        d.vehicle_id: d
        for d in await driving.driving_days(session, vehicle_ids=[v.id for v in vehicles], start=start, end=end)
    }
    lines = [
        ReportLine(v, by_vehicle.get(v.id) or VehicleDay(v.id, 0, 0, 0, 0, 0, fleet.currency), driven.get(v.id))
        for v in vehicles
    ]
    return DailyReport(fleet.currency, lines)


CSV_HEADER = [
    "vehicle_id",
    "plate",
    "sub_fleet_id",
    "orders",
    "completed",
    "swap_energy_wh",
    "charge_energy_wh",
    "cost_minor",
    "currency",
    "distance_m",
    "driving_s",
    "electric_distance_m",
    "co2_avoided_g",
]


def to_csv(report: DailyReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for line in report.lines:
        v, d = line.vehicle, line.day
        writer.writerow(
            [
                v.id,
                v.plate or "",
                v.sub_fleet_id or "",
                d.orders,
                d.completed,
                d.swap_energy_wh,
                d.charge_energy_wh,
                d.cost_minor,
                report.currency,
                line.driving.distance_m if line.driving else "",
                line.driving.driving_s if line.driving else "",
                line.carbon.electric_distance_m,
                line.carbon.co2_avoided_g,
            ]
        )
    return out.getvalue()
