"""Orders for sessions a charger started with an RFID card or other idTag (no app, no quote beforehand).

When a charge session is reported with an idTag the station's operator accepts (`stations.tokens`), ordering
opens a CHARGE order for the token's vehicle, priced with the rate model in force at the session's start and
held on the token's account, exactly like a StartByScan order; `station_sessions.advance` then moves it to
IN_SERVICE and, when the session ends, COMPLETED: repriced with that pinned version and captured. The hold is
the estimate for a full charge of the vehicle; a longer session's excess is captured from the wallet (then
arrears), as for every order. A payer without funds gets no order: the session is flagged abnormal at its end.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Vehicle
from voltcloud.ordering import payments
from voltcloud.ordering.lifecycle import Actor, Effects, Facts, record
from voltcloud.ordering.models import Order, Quote
from voltcloud.ordering.scan import ChargePlace, walk_up_charge
from voltcloud.ordering.states import Mode, OrderState
from voltcloud.platform.auth import Role
from voltcloud.platform.clock import Clock
from voltcloud.platform.enums import TagStatus
from voltcloud.platform.errors import FailedPrecondition
from voltcloud.platform.ids import new_id
from voltcloud.stations.api import ChargingToken, Connector, SessionReport, Station, tokens

HOLD_TTL = dt.timedelta(hours=30)  # a session may run long; the hold must outlive it


def customer(token: ChargingToken) -> tuple[str, str, str | None]:
    """(tariff customer kind, customer id, fleet id of the order) of a token's sessions."""
    if token.owner_kind == "fleet":
        return "fleet", token.owner_id, token.owner_id
    return "driver", token.owner_id, None


async def open_order(
    session: AsyncSession, effects: Effects, clock: Clock, report: SessionReport, token: ChargingToken
) -> Order:
    """A CREATED order (with its quote, hold and first event) for the session `report` describes."""
    # The token was accepted when the session was reported, but bill nobody for a holder out of standing: a
    # suspended driver's card started offline (a charger's stale local list) is flagged abnormal instead.
    refusal = await tokens.standing(session, token)
    if refusal is not TagStatus.ACCEPTED:
        raise FailedPrecondition(f"token {token.id} is {refusal.name.lower()}: its driver or vehicle left the fleet")
    station = await session.get(Station, report.station_id)
    vehicle = await session.get(Vehicle, token.vehicle_id)
    if station is None or vehicle is None:
        raise FailedPrecondition(f"token {token.id}: station or vehicle is gone")
    connector = await session.get(Connector, report.connector_id) if report.connector_id else None
    kind, customer_id, fleet_id = customer(token)
    power = connector.max_power_w if connector else 0
    place = ChargePlace(station.id, station.operator_id, station.lat, station.lng, report.connector_id, power)
    # The hold is the estimate for a full charge: how far the driver will charge is not known at the start.
    option = await walk_up_charge(
        session, place, vehicle, target_soc_permille=1000, customer=(kind, customer_id), start=report.started_at
    )
    start = report.started_at
    now = clock.now()
    # A driver sees his token's orders as his own; a fleet's are seen through the order's fleet.
    created_by = token.owner_id if token.owner_kind == "driver" else f"token:{token.id}"
    quote = Quote(
        id=new_id("qt"), requested_by=created_by, vehicle_id=vehicle.id, fleet_id=fleet_id, lat=station.lat,
        lng=station.lng, soc_permille=0, target_soc_permille=1000, created_at=now, expires_at=now,
        options_json=json.dumps([asdict(option)]),
    )  # fmt: skip
    session.add(quote)
    order_id = new_id("ord")
    key = f"session:{report.session_id}"
    order = Order(
        id=order_id, quote_id=quote.id, option_id="o1", option_json=json.dumps(asdict(option)),
        created_by=created_by, creator_role=int(Role.GATEWAY), creator_tenant=f"operator:{station.operator_id}",
        idempotency_key=key, request_hash="", mode=int(Mode.CHARGE), state=int(OrderState.CREATED),
        vehicle_id=vehicle.id, driver_id=token.owner_id if token.owner_kind == "driver" else None,
        fleet_id=fleet_id, operator_id=station.operator_id, station_id=station.id,
        connector_id=report.connector_id, payer_account_id=token.account_id, hold_id="",
        hold_amount_minor=max(option.price_minor, 1), currency=option.currency, rate_model_id=option.rate_model_id,
        rate_model_version=option.rate_model_version, service_by=start + HOLD_TTL, created_at=now, updated_at=now,
    )  # fmt: skip
    order.hold_id = await payments.hold(
        session,
        account_id=token.account_id,
        amount_minor=order.hold_amount_minor,
        currency=option.currency,
        reference=f"order:{order_id}",
        idempotency_key=f"order-hold:{key}",
        expires_at=start + HOLD_TTL,
        clock=clock,
    )
    session.add(order)
    await session.flush()
    actor = Actor(report.gateway_id or f"station:{station.id}", int(Role.GATEWAY), f"operator:{station.operator_id}")
    reason = (
        f"order opened for idTag {token.id_tag} (token {token.id}) on charging session {report.external_id}; "
        f"hold of {order.hold_amount_minor / 100:.2f} {option.currency} on account {token.account_id}"
    )
    await record(
        session, effects, order, None, actor, start, Facts(reason=reason, amount_minor=order.hold_amount_minor)
    )
    return order
