"""Locust load test of the platform over real gRPC: the four kinds of clients of issue 11.

- `Driver`: QuotePowerUp at a random point near a station (or near a connected specialist, asking for a valet),
  CreateOrder of the best option (or of that specialist's valet option), WatchOrder until its first event,
  and sometimes CancelOrder (valet orders taken by a connected specialist are left to complete).
- `Specialist`: one long-lived DispatchService/Connect stream per user (hello, AVAILABLE, positions); every
  offer is accepted and its steps reported done, one by one.
- `Gateway`: IngestService/Uplink streams of a simulated station gateway: hello for its operator's stations,
  heartbeats, connector status and pack reports, and columnar telemetry, each batch until it is acked.
- `FleetManager`: a fleet manager's console, the reads that answer today: GetFleet, ListVehicles, ListDrivers
  (FleetService), ListOrders, and the fleet's money: ListAccounts, GetAccount, ListJournalEntries, ListBills,
  ListRateModels.

Setup reads the world from the same database as the server (VOLTCLOUD_DATABASE_URL, or the data directory) and
funds every simulated driver's wallet once; tokens are minted with the server's key (VOLTCLOUD_JWT_KEY or the
dev key of the data directory). `loadtest/run.py` starts a country-scale server and runs this headless; see
loadtest/README.md. Each RPC is reported under its own name; streams are reported by what a client waits for
(`Connect offer->accept ack`, `Uplink batch acked`, `WatchOrder first event`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from gevent.queue import Queue
from google.protobuf.timestamp_pb2 import Timestamp
from locust import User, between, events, task

from voltcloud.api.v1 import (
    common_pb2,
    dispatch_pb2,
    dispatch_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    ordering_pb2,
    ordering_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from voltcloud.config import Settings
from voltcloud.platform.auth import Role, Tenant
from voltcloud.platform.db import Database
from voltcloud.server import token_service
from voltcloud.settlement import api as settlement

grpc_gevent.init_gevent()  # gRPC's blocking calls yield to other simulated users

DRIVERS = int(os.environ.get("VOLTCLOUD_LOAD_DRIVERS", "500"))
SPECIALISTS = int(os.environ.get("VOLTCLOUD_LOAD_SPECIALISTS", "200"))
GATEWAY_STATIONS = 20  # stations per simulated gateway
CANCEL_SHARE = 0.7


@dataclass
class World:
    """What the simulated clients are made of, read once from the server's database."""

    drivers: list[tuple[str, str]] = field(default_factory=list)  # (driver id, their private vehicle)
    stations: list[tuple[str, str, float, float]] = field(default_factory=list)  # (id, operator, lat, lng)
    connectors: dict[str, list[str]] = field(default_factory=dict)  # station id -> connector ids
    units: list[tuple[str, str, float, float]] = field(default_factory=list)  # valet specialists
    fleets: list[str] = field(default_factory=list)
    connected: dict[str, tuple[float, float]] = field(default_factory=dict)  # specialists online now

    def position_near_station(self) -> common_pb2.LatLng:
        _, _, lat, lng = random.choice(self.stations)
        return common_pb2.LatLng(lat=lat + random.uniform(-0.01, 0.01), lng=lng + random.uniform(-0.01, 0.01))


WORLD = World()
_serial = iter(range(10**9))


async def _read_world(settings: Settings) -> None:
    import sqlalchemy as sa

    db = Database(settings.resolved_database_url())
    try:
        async with db.transaction() as session:
            connection = await session.connection()

            async def rows(query: str) -> list[Any]:
                return list((await connection.execute(sa.text(query))).all())

            WORLD.drivers = [
                (str(d), str(v))
                for v, d in await rows(
                    "SELECT id, owner_driver_id FROM vehicle WHERE fleet_id IS NULL AND owner_driver_id IS NOT NULL "
                    f"ORDER BY id LIMIT {DRIVERS}"
                )
            ]
            WORLD.stations = [(str(i), str(o), float(a), float(b)) for i, o, a, b in await rows(
                "SELECT id, operator_id, lat, lng FROM station ORDER BY id")]  # fmt: skip
            for station, connector in await rows("SELECT station_id, id FROM connector ORDER BY id"):
                WORLD.connectors.setdefault(str(station), []).append(str(connector))
            valets = f"SELECT id, operator_id, lat, lng FROM mobileunit WHERE kind = 2 ORDER BY id LIMIT {SPECIALISTS}"
            WORLD.units = [(str(i), str(o), float(a), float(b)) for i, o, a, b in await rows(valets)]
            WORLD.fleets = [str(f) for (f,) in await rows("SELECT id FROM fleet ORDER BY id")]
            for driver, _ in WORLD.drivers:  # one transaction: idempotent across runs
                account = await settlement.ensure_customer_account(session, owner_kind="driver", owner_id=driver)
                await settlement.top_up(
                    session, account_id=account, amount_minor=10_000_000, currency="CNY", provider="simulated",
                    provider_token="load", idempotency_key=f"load-topup-{driver}",
                )  # fmt: skip
    finally:
        await db.dispose()


@events.init.add_listener
def _setup(environment: Any, **_kwargs: Any) -> None:
    """Reads the world and funds every simulated driver's wallet, before any user starts."""
    asyncio.run(_read_world(Settings()))


class GrpcUser(User):
    """A gRPC client: a channel to the target, a token, and every call reported to locust by name."""

    abstract = True

    def on_start(self) -> None:
        host = (self.host or os.environ.get("VOLTCLOUD_TARGET", "127.0.0.1:50051")).removeprefix("grpc://")
        # A connection per user, as real apps have: spread over the server's workers (SO_REUSEPORT).
        self.channel = grpc.insecure_channel(host, options=[("grpc.use_local_subchannel_pool", 1)])
        self.tokens = token_service(Settings())

    def on_stop(self) -> None:
        self.channel.close()

    def bearer(self, subject: str, role: Role, tenant: Tenant | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens.mint(subject, role, tenant)}"),)

    def report(self, name: str, started: float, error: Exception | None = None, size: int = 0) -> None:
        events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size,
            exception=error,
            context={},
        )

    def call(self, name: str, rpc: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            response = rpc()
        except grpc.RpcError as error:
            self.report(name, started, error)
            return None
        self.report(name, started, size=response.ByteSize())
        return response


class Driver(GrpcUser):
    """A driver's app: quote, order, watch, sometimes cancel."""

    weight = 10
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        super().on_start()
        self.driver, self.vehicle = WORLD.drivers[next(_serial) % len(WORLD.drivers)]
        self.metadata = self.bearer(self.driver, Role.DRIVER)
        self.stub = ordering_pb2_grpc.OrderingServiceStub(self.channel)

    @task
    def power_up(self) -> None:
        valet_for = random.choice(list(WORLD.connected)) if WORLD.connected and random.random() < 0.5 else None
        if valet_for:
            lat, lng = WORLD.connected[valet_for]
            position = common_pb2.LatLng(
                lat=lat + random.uniform(-0.005, 0.005), lng=lng + random.uniform(-0.005, 0.005)
            )
            modes = [common_pb2.POWER_UP_MODE_VALET]
        else:
            position, modes = WORLD.position_near_station(), []
        request = ordering_pb2.QuotePowerUpRequest(
            vehicle_id=self.vehicle, position=position, soc_permille=random.randint(100, 500),
            target_soc_permille=900, allowed_modes=modes,
        )  # fmt: skip
        quote = self.call("QuotePowerUp", lambda: self.stub.QuotePowerUp(request, metadata=self.metadata, timeout=10))
        if quote is None or not quote.options:
            return
        option = next((o for o in quote.options if o.resource_id in WORLD.connected), quote.options[0])
        create = ordering_pb2.CreateOrderRequest(
            idempotency_key=uuid.uuid4().hex, quote_id=quote.quote_id, option_id=option.option_id, allow_fallback=True
        )
        reply = self.call("CreateOrder", lambda: self.stub.CreateOrder(create, metadata=self.metadata, timeout=10))
        if reply is None:
            return
        order_id = reply.order.order_id
        self._watch_first_event(order_id)
        if option.resource_id in WORLD.connected or random.random() >= CANCEL_SHARE:
            return  # a specialist of ours completes it, or the driver goes through with it
        cancel = ordering_pb2.CancelOrderRequest(idempotency_key=uuid.uuid4().hex, order_id=order_id)
        self.call("CancelOrder", lambda: self.stub.CancelOrder(cancel, metadata=self.metadata, timeout=10))

    def _watch_first_event(self, order_id: str) -> None:
        started = time.perf_counter()
        stream = self.stub.WatchOrder(
            ordering_pb2.WatchOrderRequest(order_id=order_id), metadata=self.metadata, timeout=10
        )
        try:
            next(iter(stream))
            self.report("WatchOrder first event", started)
        except (grpc.RpcError, StopIteration) as error:
            self.report("WatchOrder first event", started, error if isinstance(error, Exception) else None)
        finally:
            stream.cancel()


class Specialist(GrpcUser):
    """A valet specialist's app: one Connect stream; accepts every offer and reports its steps."""

    weight = 2
    wait_time = between(5.0, 10.0)

    def on_start(self) -> None:
        super().on_start()
        unit, operator, self.lat, self.lng = WORLD.units[next(_serial) % len(WORLD.units)]
        self.unit = unit
        self.outgoing: Queue[dispatch_pb2.ConnectRequest | None] = Queue()
        self.accepted: dict[str, float] = {}
        stub = dispatch_pb2_grpc.DispatchServiceStub(self.channel)
        metadata = self.bearer(unit, Role.SPECIALIST, Tenant("operator", operator))
        self.send(hello=dispatch_pb2.AppHello(specialist_id=unit))
        self.send(status=dispatch_pb2.StatusUpdate(status=dispatch_pb2.WORKER_STATUS_AVAILABLE))
        self.stream = stub.Connect(self._requests(), metadata=metadata)
        self.reader = gevent.spawn(self._read)
        WORLD.connected[unit] = (self.lat, self.lng)

    def on_stop(self) -> None:
        WORLD.connected.pop(self.unit, None)
        self.outgoing.put(None)
        self.stream.cancel()
        self.reader.kill()
        super().on_stop()

    def send(self, **message: Any) -> None:
        self.outgoing.put(dispatch_pb2.ConnectRequest(**message))

    def _requests(self) -> Iterator[dispatch_pb2.ConnectRequest]:
        seq = 0
        while (message := self.outgoing.get()) is not None:
            seq += 1
            message.seq = seq
            yield message

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for message in self.stream:
                kind = message.WhichOneof("msg")
                if kind == "offer":
                    gevent.spawn(self._work, message.offer.task)
                elif kind == "update" and message.update.task.task_id in self.accepted:
                    started = self.accepted.pop(message.update.task.task_id)
                    self.report("Connect offer->accepted update", started)

    def _work(self, offered: dispatch_pb2.Task) -> None:
        self.accepted[offered.task_id] = time.perf_counter()
        self.send(accept=dispatch_pb2.AcceptTask(task_id=offered.task_id))
        for step in offered.steps:
            gevent.sleep(random.uniform(0.2, 1.0))
            energy = offered.energy_wh if step.kind == dispatch_pb2.STEP_KIND_POWER_UP else 0
            update = dispatch_pb2.StepUpdate(
                task_id=offered.task_id, step_index=step.index, status=dispatch_pb2.STEP_STATUS_DONE, energy_wh=energy
            )
            self.send(step=update)

    @task
    def move(self) -> None:
        self.lat += random.uniform(-0.002, 0.002)
        self.lng += random.uniform(-0.002, 0.002)
        WORLD.connected[self.unit] = (self.lat, self.lng)
        self.send(position=dispatch_pb2.PositionUpdate(position=common_pb2.LatLng(lat=self.lat, lng=self.lng)))


class Gateway(GrpcUser):
    """A station gateway: batches of station events and telemetry, each on an Uplink stream until acked."""

    weight = 2
    wait_time = between(1.0, 2.0)

    def on_start(self) -> None:
        super().on_start()
        n = next(_serial)
        self.gateway = f"load-gw-{n:05d}-{uuid.uuid4().hex[:6]}"
        first = (n * GATEWAY_STATIONS) % max(1, len(WORLD.stations) - GATEWAY_STATIONS)
        operator = WORLD.stations[first][1]
        self.stations = [s for s in WORLD.stations[first : first + GATEWAY_STATIONS] if s[1] == operator]
        self.metadata = self.bearer(self.gateway, Role.GATEWAY, Tenant("operator", operator))
        self.stub = ingest_pb2_grpc.IngestServiceStub(self.channel)
        self.seq = 0

    def _batch(self) -> list[ingest_pb2.GatewayToPlatform]:
        now = now_stamp()
        messages = []
        for station_id, _, _, _ in random.sample(self.stations, min(5, len(self.stations))):
            self.seq += 1
            messages.append(
                ingest_pb2.GatewayToPlatform(
                    seq=self.seq,
                    event=ingest_pb2.StationEvent(station_id=station_id, time=now, heartbeat=ingest_pb2.Heartbeat()),
                )
            )
            connectors = WORLD.connectors.get(station_id, [])
            if connectors:
                self.seq += 1
                messages.append(self._telemetry(station_id, connectors))
        return messages

    def _telemetry(self, station_id: str, connectors: list[str]) -> ingest_pb2.GatewayToPlatform:
        sources = [ingest_pb2.TelemetrySource(station_id=station_id, resource_id=c) for c in connectors]
        n = len(sources) * 10
        return ingest_pb2.GatewayToPlatform(
            seq=self.seq,
            telemetry=ingest_pb2.TelemetryBatch(
                base_time=now_stamp(),
                sources=sources,
                col_source_index=[i % len(sources) for i in range(n)],
                col_metric=[common_pb2.METRIC_POWER_W] * n,
                col_offset_ms=[100 * i for i in range(n)],
                col_int_value=[random.randint(0, 120_000) for _ in range(n)],
            ),
        )

    @task
    def uplink(self) -> None:
        hello = ingest_pb2.GatewayToPlatform(
            hello=ingest_pb2.Hello(
                gateway_id=self.gateway, kind=ingest_pb2.GATEWAY_KIND_OCPP, last_acked_seq=self.seq,
                station_ids=[s[0] for s in self.stations],
            )
        )  # fmt: skip
        messages = self._batch()
        started = time.perf_counter()
        acked = 0
        # The platform keeps the stream open for commands after the gateway's last message: read until acked.
        stream = self.stub.Uplink(iter([hello, *messages]), metadata=self.metadata, timeout=15)
        error: Exception | None = None
        try:
            for reply in stream:
                if reply.WhichOneof("msg") == "ack":
                    acked = max(acked, reply.ack.acked_seq)
                    if acked >= self.seq:
                        break
            else:
                error = RuntimeError(f"the stream ended with {acked} of {self.seq} acked")
        except grpc.RpcError as failure:
            error = failure
        finally:
            stream.cancel()
        self.report("Uplink batch acked", started, error)


def now_stamp() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class FleetManager(GrpcUser):
    """A fleet manager's console: the fleet, its vehicles and drivers, its orders, accounts, journal, bills and
    rate models."""

    weight = 1
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        super().on_start()
        fleet = WORLD.fleets[next(_serial) % len(WORLD.fleets)]
        self.metadata = self.bearer(f"load-fm-{fleet}", Role.FLEET_MANAGER, Tenant("fleet", fleet))
        self.ordering = ordering_pb2_grpc.OrderingServiceStub(self.channel)
        self.settlement = settlement_pb2_grpc.SettlementServiceStub(self.channel)
        self.fleets = fleet_pb2_grpc.FleetServiceStub(self.channel)
        self.fleet = fleet
        self.account_id = ""

    @task(3)
    def orders(self) -> None:
        request = ordering_pb2.ListOrdersRequest(page_size=50)
        self.call("ListOrders", lambda: self.ordering.ListOrders(request, metadata=self.metadata, timeout=10))

    @task(2)
    def accounts(self) -> None:
        request = settlement_pb2.ListAccountsRequest(page_size=20)
        reply = self.call(
            "ListAccounts", lambda: self.settlement.ListAccounts(request, metadata=self.metadata, timeout=10)
        )
        if reply is not None and reply.accounts:
            self.account_id = reply.accounts[0].account_id
        if self.account_id:
            get = settlement_pb2.GetAccountRequest(account_id=self.account_id)
            self.call("GetAccount", lambda: self.settlement.GetAccount(get, metadata=self.metadata, timeout=10))

    @task(2)
    def journal(self) -> None:
        if not self.account_id:
            return
        request = settlement_pb2.ListJournalEntriesRequest(page_size=50, account_id=self.account_id)
        self.call(
            "ListJournalEntries",
            lambda: self.settlement.ListJournalEntries(request, metadata=self.metadata, timeout=10),
        )

    @task(1)
    def bills_and_rates(self) -> None:
        bills = settlement_pb2.ListBillsRequest(page_size=20, account_id=self.account_id)
        self.call("ListBills", lambda: self.settlement.ListBills(bills, metadata=self.metadata, timeout=10))
        rates = settlement_pb2.ListRateModelsRequest(page_size=20)
        self.call("ListRateModels", lambda: self.settlement.ListRateModels(rates, metadata=self.metadata, timeout=10))

    @task(3)
    def fleet(self) -> None:
        get = fleet_pb2.GetFleetRequest(fleet_id=self.fleet)
        self.call("GetFleet", lambda: self.fleets.GetFleet(get, metadata=self.metadata, timeout=10))
        vehicles = fleet_pb2.ListVehiclesRequest(page_size=50)
        self.call("ListVehicles", lambda: self.fleets.ListVehicles(vehicles, metadata=self.metadata, timeout=10))

    @task(1)
    def drivers(self) -> None:
        # GetFleetStatement and GetVehicleState answer FAILED_PRECONDITION ("not built yet") today: left out.
        drivers = fleet_pb2.ListDriversRequest(page_size=50)
        self.call("ListDrivers", lambda: self.fleets.ListDrivers(drivers, metadata=self.metadata, timeout=10))
