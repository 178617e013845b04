"""Locust load test: drivers doing one-click power-up quote → order over real gRPC.

Each simulated driver funds its wallet once (directly through settlement's API on the same database), then
repeatedly asks for a quote at a random point of the demo city and orders the best option, cancelling it
right away so the city's resources stay available. See loadtest/README.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from locust import User, between, events, task
from sqlmodel import col, select

from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc
from voltcloud.config import Settings
from voltcloud.fleet.models import Vehicle
from voltcloud.platform.auth import Role
from voltcloud.platform.db import Database
from voltcloud.server import token_service
from voltcloud.settlement import api as settlement

# The demo city (Shanghai centre). Private vehicles (a driver may order for them) are read at start.
CENTRE = (31.2304, 121.4737)
SPREAD = 0.08
VEHICLES: list[str] = []


DRIVERS = [f"load-driver-{i:04d}" for i in range(int(os.environ.get("VOLTCLOUD_LOAD_DRIVERS", "500")))]
_next_driver = iter(DRIVERS)


async def _fund_all(settings: Settings) -> None:
    db = Database(settings.resolved_database_url())
    try:
        async with db.transaction() as session:
            rows = await session.exec(select(Vehicle.id).where(col(Vehicle.fleet_id).is_(None)))
            VEHICLES.extend(rows)
        for driver in DRIVERS:
            async with db.transaction() as session:
                account = await settlement.ensure_customer_account(session, owner_kind="driver", owner_id=driver)
                await settlement.top_up(
                    session, account_id=account, amount_minor=10_000_000, currency="CNY", provider="simulated",
                    provider_token="load", idempotency_key=f"load-topup-{driver}",
                )  # fmt: skip
    finally:
        await db.dispose()


@events.init.add_listener
def _fund_drivers(environment: Any, **_kwargs: Any) -> None:
    """Tops up every simulated driver's wallet once, before any user starts (idempotent across runs)."""
    asyncio.run(_fund_all(Settings()))


class GrpcDriver(User):
    """One driver's app: QuotePowerUp, CreateOrder of the top option, CancelOrder."""

    wait_time = between(0.5, 2.0)
    abstract = False

    def on_start(self) -> None:
        self.driver = next(_next_driver)
        token = token_service(Settings()).mint(self.driver, Role.DRIVER)
        self.metadata = (("authorization", f"Bearer {token}"),)
        host = (self.host or os.environ.get("VOLTCLOUD_TARGET", "127.0.0.1:50051")).removeprefix("grpc://")
        self.channel = grpc.insecure_channel(host)
        self.stub = ordering_pb2_grpc.OrderingServiceStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        error: Exception | None = None
        response = None
        try:
            response = call()
        except grpc.RpcError as exc:
            error = exc
        events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=response.ByteSize() if response is not None else 0,
            exception=error,
            context={},
        )
        return response

    @task
    def quote_and_order(self) -> None:
        position = common_pb2.LatLng(
            lat=CENTRE[0] + random.uniform(-SPREAD, SPREAD), lng=CENTRE[1] + random.uniform(-SPREAD, SPREAD)
        )
        quote = self._call(
            "QuotePowerUp",
            lambda: self.stub.QuotePowerUp(
                ordering_pb2.QuotePowerUpRequest(
                    vehicle_id=random.choice(VEHICLES), position=position, soc_permille=random.randint(100, 500),
                    target_soc_permille=900,
                ),
                metadata=self.metadata,
            ),
        )  # fmt: skip
        if quote is None or not quote.options:
            return
        order = self._call(
            "CreateOrder",
            lambda: self.stub.CreateOrder(
                ordering_pb2.CreateOrderRequest(
                    idempotency_key=uuid.uuid4().hex, quote_id=quote.quote_id,
                    option_id=quote.options[0].option_id, allow_fallback=True,
                ),
                metadata=self.metadata,
            ),
        )  # fmt: skip
        if order is None:
            return
        self._call(
            "CancelOrder",
            lambda: self.stub.CancelOrder(
                ordering_pb2.CancelOrderRequest(idempotency_key=uuid.uuid4().hex, order_id=order.order.order_id),
                metadata=self.metadata,
            ),
        )
