"""Ordering's facts for fleet reports (fleet's `OrderFacts` port, wired by `server.py`): per vehicle, the
orders created in a window, how many completed, the energy they delivered by swap and by charging, and what
they cost. Also telemetry's `VehicleFacts` port: a vehicle's last known position and SOC, from its latest
quote, for GetVehicleState when the vehicle sends no telemetry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import VehicleDay
from voltcloud.ordering.models import Order, Quote
from voltcloud.ordering.states import Mode, OrderState
from voltcloud.telemetry.api import LastKnown


async def vehicle_days(
    session: AsyncSession, *, fleet_id: str, vehicle_ids: Sequence[str], start: dt.datetime, end: dt.datetime
) -> list[VehicleDay]:
    query = select(Order).where(
        Order.fleet_id == fleet_id,
        col(Order.vehicle_id).in_(list(vehicle_ids)),
        col(Order.created_at) >= start,
        col(Order.created_at) < end,
    )
    days: dict[str, VehicleDay] = {}
    for order in await session.exec(query):
        day = days.get(order.vehicle_id) or VehicleDay(order.vehicle_id, 0, 0, 0, 0, 0, order.currency)
        swap = order.mode == Mode.SWAP
        days[order.vehicle_id] = VehicleDay(
            vehicle_id=order.vehicle_id,
            orders=day.orders + 1,
            completed=day.completed + (order.state == OrderState.COMPLETED),
            swap_energy_wh=day.swap_energy_wh + (order.energy_wh if swap else 0),
            charge_energy_wh=day.charge_energy_wh + (0 if swap else order.energy_wh),
            cost_minor=day.cost_minor + (order.final_amount_minor or 0) + order.cancellation_fee_minor,
            currency=order.currency,
        )
    return [days[v] for v in sorted(days)]


async def last_known(session: AsyncSession, vehicle_id: str) -> LastKnown | None:
    """Where and at what SOC the vehicle last asked for a power-up (its latest quote)."""
    query = select(Quote).where(Quote.vehicle_id == vehicle_id).order_by(col(Quote.created_at).desc()).limit(1)
    quote = (await session.exec(query)).first()
    if quote is None:
        return None
    return LastKnown(quote.lat, quote.lng, quote.soc_permille, quote.created_at)
