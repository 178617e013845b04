"""A charge order served by a real station session over the gateway uplink (real gRPC), for the care tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc
import sqlalchemy as sa
from sqlmodel import select

from voltcloud.api.v1 import ingest_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.ordering.states import Mode
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.settlement.models import Posting
from voltcloud.stations.models import Connector

from ..stationkit import RawUplink, event, hello, stamp
from .powerup_support import candidates, driver_md, fund, inventory_quote, swappable_vehicle

GW = "gw-care"


@dataclass(frozen=True)
class Served:
    order: ordering_pb2.Order
    account_id: str
    operator_id: str
    station_id: str


def operator_md(platform: Platform, operator_id: str, subject: str = "") -> tuple[tuple[str, str], ...]:
    token = platform.tokens.mint(subject or f"ops-{operator_id}", Role.OPERATOR, Tenant("operator", operator_id))
    return (("authorization", f"Bearer {token}"),)


async def served_charge_order(
    platform: Platform,
    channel: grpc.aio.Channel,
    driver: str,
    *,
    energy_wh: int | None = None,
    minutes: float = 0,
    session_id: str = "tx-care",
    coupon: str = "",
) -> Served:
    """A driver's charge order, started and stopped by the charger's session reports, timed `minutes` apart
    (ending now); `energy_wh` None = a plausible amount for the connector and time."""
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    vehicle = await swappable_vehicle(platform, owner=driver)
    account = await fund(platform, "driver", driver)
    option = candidates(platform, vehicle, Mode.CHARGE)[0]
    if energy_wh is None:  # a plausible session: half the connector's power for the time, at most 12.5 kWh
        energy_wh = min(12_500, int(await connector_power(platform, option.connector_id) * minutes / 120))
    quote_id = await inventory_quote(platform, driver, vehicle, [option])
    md = driver_md(platform, driver)
    created = await ordering.CreateOrder(
        ordering_pb2.CreateOrderRequest(
            idempotency_key=f"k-{session_id}", quote_id=quote_id, option_id="o1", coupon_code=coupon
        ),
        metadata=md,
    )
    order_id = created.order.order_id
    gw_md = (
        ("authorization", f"Bearer {platform.tokens.mint(GW, Role.GATEWAY, Tenant('operator', option.operator_id))}"),
    )
    uplink = RawUplink(channel, gw_md)
    uplink.send(hello(GW, [option.station_id]))
    await uplink.ack_at_least(0)
    stop_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start_at = stop_at - dt.timedelta(minutes=minutes)
    started = ingest_pb2.SessionStarted(session_id=session_id, connector_id=option.connector_id, meter_start_wh=1000)
    stopped = ingest_pb2.SessionStopped(
        session_id=session_id, connector_id=option.connector_id, meter_stop_wh=1000 + energy_wh, reason="Local"
    )
    first, second = (
        event(1, option.station_id, session_started=started),
        event(2, option.station_id, session_stopped=stopped),
    )
    if minutes:
        first.event.time.CopyFrom(stamp(start_at))
        second.event.time.CopyFrom(stamp(stop_at))
    uplink.send(first)
    await uplink.ack_at_least(1)
    uplink.send(second)
    await uplink.ack_at_least(2)
    await uplink.finish()
    got = await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order_id), metadata=md)
    return Served(got.order, account, option.operator_id, option.station_id)


async def connector_power(platform: Platform, connector_id: str) -> int:
    async with platform.db.transaction() as session:
        connector = await session.get(Connector, connector_id)
        assert connector is not None
        return int(connector.max_power_w)


async def journal_balanced(platform: Platform) -> bool:
    """Every journal entry's postings sum to zero."""
    async with platform.db.transaction() as session:
        sums = await session.exec(
            select(Posting.entry_id, sa.func.sum(Posting.amount_minor)).group_by(Posting.entry_id)
        )
        return all(int(total) == 0 for _, total in sums)
