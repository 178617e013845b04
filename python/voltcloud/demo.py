"""`voltcloud demo`: one whole one-click power-up on the embedded default, over real gRPC.

Starts the platform (SQLite in the data directory, demo city seeded when empty), tops up a driver's wallet,
asks for a quote, orders the valet option, plays the specialist's app (accept, steps with proof photos) and
prints what the driver's WatchOrder stream shows, then the order with its history.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from sqlmodel import col, select

from voltcloud.api.v1 import common_pb2, dispatch_pb2, dispatch_pb2_grpc, ordering_pb2, ordering_pb2_grpc
from voltcloud.config import Settings
from voltcloud.fleet.api import Vehicle
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.ids import new_id
from voltcloud.server import Platform
from voltcloud.settlement import api as settlement

MODES = {1: "swap", 2: "charge", 3: "valet", 4: "mobile van"}
STATES = {s: common_pb2.OrderState.Name(s).removeprefix("ORDER_STATE_").lower() for s in common_pb2.OrderState.values()}
STEPS = [
    ("arrived at the car", ["demo://photos/arrived.jpg"]),
    ("car picked up", ["demo://photos/keys.jpg"]),
    ("at the station", []),
    ("swapped", ["demo://photos/swap-receipt.jpg"]),
    ("car returned", []),
    ("handed over", ["demo://photos/handover.jpg"]),
]


async def run(settings: Settings, say: Callable[[str], None] = print) -> int:
    platform = Platform(settings.model_copy(update={"seed_demo": True, "listen": "127.0.0.1:0"}))
    await platform.start()
    try:
        return await _flow(platform, say)
    finally:
        await platform.stop(grace=0)


async def _flow(platform: Platform, say: Callable[[str], None]) -> int:
    async with platform.db.transaction("demo.setup") as session:
        # The car's registered owner drives: only the owner may order for a private car.
        query = select(Vehicle).where(
            col(Vehicle.pack_type_id).is_not(None),
            col(Vehicle.fleet_id).is_(None),
            col(Vehicle.owner_driver_id).is_not(None),
        )
        vehicle = (await session.exec(query.order_by(col(Vehicle.id)))).first()
        if vehicle is None or vehicle.owner_driver_id is None:
            say("no swappable private vehicle in the database; run on an empty data directory")
            return 1
        driver = vehicle.owner_driver_id
        account = await settlement.ensure_customer_account(session, owner_kind="driver", owner_id=driver)
        await settlement.top_up(
            session, account_id=account, amount_minor=50_000, currency="CNY", provider="simulated",
            provider_token="demo", idempotency_key=new_id("demo-topup"),
        )  # fmt: skip
    stations = list(platform.powerup.engine._maps.station_by_id.values())
    here = common_pb2.LatLng(
        lat=sum(s.lat for s in stations) / len(stations), lng=sum(s.lng for s in stations) / len(stations)
    )
    say(f"VoltCloud demo on {platform.db.dialect}, gRPC 127.0.0.1:{platform.port}")
    say(f"driver {driver} with vehicle {vehicle.id} ({vehicle.model}) at ({here.lat:.4f}, {here.lng:.4f}), SOC 22%")
    md = (("authorization", f"Bearer {platform.tokens.mint(driver, Role.DRIVER)}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.port}") as channel:
        ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
        dispatch = dispatch_pb2_grpc.DispatchServiceStub(channel)
        started = dt.datetime.now(dt.UTC)
        quote = await ordering.QuotePowerUp(
            ordering_pb2.QuotePowerUpRequest(
                vehicle_id=vehicle.id, position=here, soc_permille=220, target_soc_permille=900
            ),
            metadata=md,
        )
        took = (dt.datetime.now(dt.UTC) - started).total_seconds() * 1000
        say(f"\n1. QuotePowerUp → quote {quote.quote_id} ({took:.0f} ms), {len(quote.options)} options:")
        for o in quote.options:
            reason = ordering_pb2.RankReason.Name(o.rank_reason).removeprefix("RANK_REASON_").lower()
            where = o.station_id or o.resource_id
            say(
                f"   #{o.rank} {MODES.get(o.mode, '?'):10s} {where:12s} eta {o.eta.seconds // 60:3d} min, "
                f"done {o.finish_time.ToDatetime(tzinfo=dt.UTC):%H:%M}, {o.energy_wh / 1000:5.1f} kWh, "
                f"{o.price_estimate.amount_minor / 100:7.2f} {o.price_estimate.currency}  ({reason})"
            )
        valet = next((o for o in quote.options if o.mode == common_pb2.POWER_UP_MODE_VALET), None)
        if valet is None:
            say("no valet option right now; try again in a moment")
            return 1
        unit = platform.powerup.engine.unit(valet.resource_id)
        assert unit is not None
        app_md = (
            (
                "authorization",
                f"Bearer {platform.tokens.mint(unit.id, Role.SPECIALIST, Tenant('operator', unit.operator_id))}",
            ),
        )
        outgoing: asyncio.Queue[dispatch_pb2.ConnectRequest | None] = asyncio.Queue()

        async def app_requests() -> AsyncIterator[dispatch_pb2.ConnectRequest]:
            seq = 0
            while (message := await outgoing.get()) is not None:
                seq += 1
                message.seq = seq
                yield message

        outgoing.put_nowait(dispatch_pb2.ConnectRequest(hello=dispatch_pb2.AppHello(specialist_id=unit.id)))
        app = dispatch.Connect(app_requests(), metadata=app_md)

        order = (
            await ordering.CreateOrder(
                ordering_pb2.CreateOrderRequest(
                    idempotency_key=new_id("demo"), quote_id=quote.quote_id, option_id=valet.option_id
                ),
                metadata=md,
            )
        ).order
        say(f"\n2. CreateOrder → order {order.order_id}: hold {order.hold_id} placed, specialist {unit.id} offered")
        say("\n3. WatchOrder (what the driver sees):")
        watch = asyncio.create_task(_watch(ordering, order.order_id, md, say))

        offer = await _next(app, "offer")
        task = offer.offer.task
        outgoing.put_nowait(dispatch_pb2.ConnectRequest(accept=dispatch_pb2.AcceptTask(task_id=task.task_id)))
        outgoing.put_nowait(_step(task.task_id, 0, dispatch_pb2.STEP_STATUS_STARTED, []))
        for index, (_label, photos) in enumerate(STEPS):
            await asyncio.sleep(0.05)
            energy = valet.energy_wh if index == 3 else 0
            outgoing.put_nowait(_step(task.task_id, index, dispatch_pb2.STEP_STATUS_DONE, photos, energy))
        await asyncio.wait_for(watch, 30)
        outgoing.put_nowait(None)
        app.cancel()

        final = (await ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=order.order_id), metadata=md)).order
        say(
            f"\n4. GetOrder → {STATES[final.state]}: {final.energy_wh / 1000:.1f} kWh, "
            f"charged {final.final_price.amount_minor / 100:.2f} {final.final_price.currency}, "
            f"pack in {final.pack_in_id or '-'}, pack out {final.pack_out_id or '-'}, {len(final.events)} events"
        )
    return 0 if final.state == common_pb2.ORDER_STATE_COMPLETED else 1


def _step(task_id: str, index: int, status: int, photos: list[str], energy_wh: int = 0) -> dispatch_pb2.ConnectRequest:
    return dispatch_pb2.ConnectRequest(
        step=dispatch_pb2.StepUpdate(
            task_id=task_id,
            step_index=index,
            status=status,  # type: ignore[arg-type]
            photo_uris=photos,
            energy_wh=energy_wh,
        )
    )


async def _next(call: Any, kind: str) -> dispatch_pb2.ConnectResponse:
    while True:
        message = await asyncio.wait_for(call.read(), 15)
        if message is grpc.aio.EOF:
            raise RuntimeError("the dispatch stream ended")
        if message.WhichOneof("msg") == kind:
            return message  # type: ignore[no-any-return]


async def _watch(stub: Any, order_id: str, md: Any, say: Callable[[str], None]) -> None:
    async for response in stub.WatchOrder(ordering_pb2.WatchOrderRequest(order_id=order_id), metadata=md):
        e = response.event
        if e.seq == 0:
            continue
        change = STATES[e.to_state] if e.to_state != e.from_state else "·"
        money = f" [{e.amount.amount_minor / 100:.2f} {e.amount.currency}]" if e.HasField("amount") else ""
        say(f"   {e.seq:2d} {e.time.ToDatetime(tzinfo=dt.UTC):%H:%M:%S} {change:10s} {e.reason}{money}")
