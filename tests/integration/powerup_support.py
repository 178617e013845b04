"""Helpers for the ordering/dispatch tests: funding accounts, picking demo vehicles, and quotes.

`inventory_quote` stores a quote whose option names real, free resources read from the engine's view (the
same shape QuotePowerUp persists). It stands in for the engine's options module in tests of CreateOrder,
dispatch and cancellation, so those rules are tested independently of how candidates are ranked.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from typing import Any

import grpc
from sqlmodel import col, select

from voltcloud.api.v1 import dispatch_pb2, ordering_pb2
from voltcloud.engine import STATION_CHARGING, STATION_SWAP, UNIT_SPECIALIST, UNIT_VAN, EngineOption
from voltcloud.fleet.models import Vehicle
from voltcloud.ordering import payments
from voltcloud.ordering.models import Quote
from voltcloud.ordering.quoting import _quoted
from voltcloud.ordering.states import Mode, ResourceKind
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.ids import new_id
from voltcloud.server import Platform
from voltcloud.settlement import api as settlement


async def fund(platform: Platform, owner_kind: str, owner_id: str, amount_minor: int = 1_000_000) -> str:
    async with platform.db.transaction() as session:
        account = await settlement.ensure_customer_account(session, owner_kind=owner_kind, owner_id=owner_id)
        await settlement.top_up(
            session,
            account_id=account,
            amount_minor=amount_minor,
            currency="CNY",
            provider="simulated",
            provider_token="tok",
            idempotency_key=new_id("topup"),
        )
    return account


async def account_state(platform: Platform, account_id: str) -> tuple[int, int]:
    """(balance, held) of an account."""
    from voltcloud.settlement.models import LedgerAccount

    async with platform.db.transaction() as session:
        account = await session.get(LedgerAccount, account_id)
        assert account is not None
        return account.balance_minor, account.held_minor


async def swappable_vehicle(platform: Platform, *, fleet: bool = False, owner: str | None = None) -> Vehicle:
    """The first vehicle with a swappable pack (a fleet's or a private car). `owner` registers that driver as
    the private car's owner, as RegisterVehicle does: only the owner (or the admin) may order for it."""
    async with platform.db.transaction() as session:
        query = select(Vehicle).where(col(Vehicle.pack_type_id).is_not(None)).order_by(col(Vehicle.id))
        query = query.where(col(Vehicle.fleet_id).is_not(None) if fleet else col(Vehicle.fleet_id).is_(None))
        vehicle = (await session.exec(query)).first()
        assert vehicle is not None
        if owner is not None and not fleet:
            vehicle.owner_driver_id = owner
            session.add(vehicle)
    return vehicle


def _near(platform: Platform) -> tuple[float, float]:
    engine = platform.powerup.engine
    stations = list(engine._maps.station_by_id.values())
    lat = sum(s.lat for s in stations) / len(stations)
    lng = sum(s.lng for s in stations) / len(stations)
    return lat, lng


def candidates(
    platform: Platform, vehicle: Vehicle, mode: Mode, *, skip: frozenset[str] = frozenset()
) -> list[EngineOption]:
    """Free resources of the engine's view that can serve `vehicle` in `mode`, nearest first."""
    engine = platform.powerup.engine
    lat, lng = _near(platform)
    now = dt.datetime.now(dt.UTC)
    found: list[EngineOption] = []

    def option(**kw: Any) -> EngineOption:
        base: dict[str, Any] = dict(
            station_id=None, connector_id=None, pack_id=None, unit_id=None, eta_s=600, wait_s=0,
            service_s=300, finish_at=now + dt.timedelta(seconds=900), energy_wh=40_000, distance_m=3000,
            arrival_soc_permille=150, service_lat=lat, service_lng=lng,
        )  # fmt: skip
        base.update(kw)
        return EngineOption(**base)

    if mode in (Mode.SWAP, Mode.VALET):
        for station, _ in engine.nearest_stations(lat, lng, k=50, radius_m=100_000, kind=STATION_SWAP):
            _, packs = engine.station_resources(station.id)
            for pack in packs:
                if pack["state"] == 3 and pack["pack_type"] == vehicle.pack_type_id and pack["id"] not in skip:
                    if mode is Mode.SWAP:
                        found.append(
                            option(
                                mode=int(mode),
                                resource_kind=int(ResourceKind.SWAP_LANE),
                                resource_id="0",
                                operator_id=station.operator_id,
                                station_id=station.id,
                                pack_id=pack["id"],
                                service_lat=station.lat,
                                service_lng=station.lng,
                            )
                        )
                    else:
                        for unit, _ in engine.nearest_units(lat, lng, k=20, radius_m=100_000, kind=UNIT_SPECIALIST):
                            if unit.operator_id == station.operator_id and unit.id not in skip:
                                found.append(
                                    option(
                                        mode=int(mode),
                                        resource_kind=int(ResourceKind.SPECIALIST),
                                        resource_id=unit.id,
                                        operator_id=unit.operator_id,
                                        station_id=station.id,
                                        pack_id=pack["id"],
                                        unit_id=unit.id,
                                    )
                                )
                                break
    if mode is Mode.CHARGE:
        for station, _ in engine.nearest_stations(lat, lng, k=50, radius_m=100_000, kind=STATION_CHARGING):
            connectors, _ = engine.station_resources(station.id)
            for c in connectors:
                if c["status"] == 1 and vehicle.connector_mask & (1 << int(c["standard"])) and c["id"] not in skip:
                    found.append(
                        option(
                            mode=int(mode),
                            resource_kind=int(ResourceKind.CONNECTOR),
                            resource_id=c["id"],
                            operator_id=station.operator_id,
                            station_id=station.id,
                            connector_id=c["id"],
                            service_lat=station.lat,
                            service_lng=station.lng,
                        )
                    )
    if mode is Mode.MOBILE_VAN:
        for unit, _ in engine.nearest_units(lat, lng, k=20, radius_m=100_000, kind=UNIT_VAN):
            if unit.connector_mask & vehicle.connector_mask and unit.energy_wh >= 40_000 and unit.id not in skip:
                found.append(
                    option(
                        mode=int(mode),
                        resource_kind=int(ResourceKind.VAN),
                        resource_id=unit.id,
                        operator_id=unit.operator_id,
                        unit_id=unit.id,
                    )
                )
    return found


async def inventory_quote(
    platform: Platform,
    subject: str,
    vehicle: Vehicle,
    options: list[EngineOption],
    *,
    ttl_s: float = 120.0,
) -> str:
    """Persists a quote for `options` (ranked in the given order), priced by settlement; returns its id."""
    now = dt.datetime.now(dt.UTC)
    lat, lng = _near(platform)
    quoted = []
    async with platform.db.transaction() as session:
        for i, o in enumerate(options):
            pricing = o.station_id or next(
                s.id for s, _ in platform.powerup.engine.nearest_stations(lat, lng, k=50, radius_m=100_000)
                if s.operator_id == o.operator_id
            )  # fmt: skip
            price = await payments.estimate(
                session,
                station_id=pricing,
                customer_kind="fleet" if vehicle.fleet_id else "driver",
                customer_id=vehicle.fleet_id or subject,
                start=now,
                energy_wh=o.energy_wh,
                duration_s=o.service_s,
            )
            quoted.append(_quoted(f"o{i + 1}", i + 1, 5, o, price, pricing))
        quote_id = new_id("qt")
        session.add(
            Quote(
                id=quote_id,
                requested_by=subject,
                vehicle_id=vehicle.id,
                fleet_id=vehicle.fleet_id,
                lat=lat,
                lng=lng,
                soc_permille=150,
                target_soc_permille=900,
                created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl_s),
                options_json=json.dumps([asdict(q) for q in quoted]),
            )
        )
    return quote_id


def driver_md(platform: Platform, subject: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {platform.tokens.mint(subject, Role.DRIVER)}"),)


def admin_md(platform: Platform, subject: str) -> tuple[tuple[str, str], ...]:
    """The platform admin as `subject`: may order for any vehicle (paying from `subject`'s own wallet)."""
    return (("authorization", f"Bearer {platform.tokens.mint(subject, Role.PLATFORM_ADMIN)}"),)


def specialist_md(platform: Platform, unit_id: str, operator_id: str) -> tuple[tuple[str, str], ...]:
    token = platform.tokens.mint(unit_id, Role.SPECIALIST, Tenant("operator", operator_id))
    return (("authorization", f"Bearer {token}"),)


def code_of(error: grpc.aio.AioRpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


class AppStream:
    """A specialist's Connect stream driven by a test: send messages, read what the platform sends."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...], unit_id: str) -> None:
        import asyncio

        self._out: asyncio.Queue[dispatch_pb2.ConnectRequest | None] = asyncio.Queue()
        self.seq = 0
        self.unit_id = unit_id
        self.call = stub.Connect(self._requests(), metadata=metadata)
        self.send(dispatch_pb2.ConnectRequest(hello=dispatch_pb2.AppHello(specialist_id=unit_id)))

    async def _requests(self) -> Any:
        while True:
            message = await self._out.get()
            if message is None:
                return
            yield message

    def send(self, message: dispatch_pb2.ConnectRequest) -> None:
        self.seq += 1
        message.seq = self.seq
        self._out.put_nowait(message)

    async def next(self, kind: str, wait_s: float = 10.0) -> dispatch_pb2.ConnectResponse:
        """The next message of `kind` (offer, update, cancellation), skipping acks and other kinds."""
        import asyncio

        async def read() -> dispatch_pb2.ConnectResponse:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    raise AssertionError("stream ended")
                if message.WhichOneof("msg") == kind:
                    return message  # type: ignore[no-any-return]

        return await asyncio.wait_for(read(), wait_s)

    def close(self) -> None:
        self._out.put_nowait(None)


def step(task_id: str, index: int, status: int, **kw: Any) -> dispatch_pb2.ConnectRequest:
    return dispatch_pb2.ConnectRequest(
        step=dispatch_pb2.StepUpdate(task_id=task_id, step_index=index, status=status, **kw)  # type: ignore[arg-type]
    )


async def collect_watch(
    stub: Any, order_id: str, metadata: Any, after: int = 0
) -> list[ordering_pb2.WatchOrderResponse]:
    responses = []
    async for response in stub.WatchOrder(
        ordering_pb2.WatchOrderRequest(order_id=order_id, after_event_seq=after), metadata=metadata
    ):
        responses.append(response)
    return responses
