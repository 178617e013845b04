"""Composition root: builds the database, auth, engine and servicers, and serves them on one port."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import (
    dispatch_pb2,
    dispatch_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    maintenance_pb2,
    maintenance_pb2_grpc,
    ordering_pb2,
    ordering_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.config import Settings
from voltcloud.platform.auth import TokenService, load_or_create_dev_key
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.platform.feed import ChangeFeed
from voltcloud.platform.permissions import check_table_covers
from voltcloud.platform.rpc import Admission, PlatformInterceptor
from voltcloud.platform.tracing import configure_tracing
from voltcloud.runtime import PowerUp
from voltcloud.settlement.scheduler import SettlementScheduler

log = logging.getLogger(__name__)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


@dataclass(frozen=True)
class ServiceBinding:
    name: str
    servicer: Any
    register: Callable[[Any, grpc.aio.Server], None]


def token_service(settings: Settings) -> TokenService:
    key = settings.jwt_key or load_or_create_dev_key(settings.data_dir)
    return TokenService(key, settings.jwt_issuer, dt.timedelta(seconds=settings.token_ttl_s))


def _servicer(cls: type, *args: Any) -> Any:
    """Instantiates a servicer. mypy-protobuf marks every RPC abstract; the generated bases answer
    UNIMPLEMENTED for the RPCs a servicer does not override, which is what we want."""
    factory: Any = cls
    return factory(*args)


def _bindings(db: Database, powerup: PowerUp) -> list[ServiceBinding]:
    from voltcloud.dispatch.service import DispatchServicer
    from voltcloud.fleet.service import FleetServicer
    from voltcloud.ingest.hub import hub_for
    from voltcloud.ingest.service import IngestServicer
    from voltcloud.ordering.service import OrderingServicer
    from voltcloud.settlement import api as settlement
    from voltcloud.settlement.service import SettlementServicer
    from voltcloud.stations.service import StationServicer

    # Services whose domain is not built yet are the generated base classes: they answer UNIMPLEMENTED.
    return [
        ServiceBinding(
            stations_pb2.DESCRIPTOR.services_by_name["StationService"].full_name,
            _servicer(StationServicer, db, hub_for(db), settlement),  # stations' ports: live twins, settlement
            stations_pb2_grpc.add_StationServiceServicer_to_server,
        ),
        ServiceBinding(
            ordering_pb2.DESCRIPTOR.services_by_name["OrderingService"].full_name,
            _servicer(OrderingServicer, powerup),
            ordering_pb2_grpc.add_OrderingServiceServicer_to_server,
        ),
        ServiceBinding(
            dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name,
            _servicer(DispatchServicer, powerup),
            dispatch_pb2_grpc.add_DispatchServiceServicer_to_server,
        ),
        ServiceBinding(
            settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"].full_name,
            _servicer(SettlementServicer, db),
            settlement_pb2_grpc.add_SettlementServiceServicer_to_server,
        ),
        ServiceBinding(
            fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
            _servicer(FleetServicer, db, settlement, _pack_type_exists),  # fleet's ports: ledger, pack types
            fleet_pb2_grpc.add_FleetServiceServicer_to_server,
        ),
        ServiceBinding(
            maintenance_pb2.DESCRIPTOR.services_by_name["MaintenanceService"].full_name,
            _servicer(maintenance_pb2_grpc.MaintenanceServiceServicer),
            maintenance_pb2_grpc.add_MaintenanceServiceServicer_to_server,
        ),
        ServiceBinding(
            ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
            _servicer(IngestServicer, db),
            ingest_pb2_grpc.add_IngestServiceServicer_to_server,
        ),
    ]


async def _pack_type_exists(session: AsyncSession, pack_type_id: int) -> bool:
    """Fleet's `PackTypes` port: pack types are stations' rows, and fleet sits below stations."""
    from voltcloud.stations.models import PackType

    return await session.get(PackType, pack_type_id) is not None


class Platform:
    """A running platform: the gRPC server and what it owns."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url(), pool_size=settings.db_pool_size)
        self.tokens = token_service(settings)
        self.health = health.aio.HealthServicer()
        self.interceptor = PlatformInterceptor(
            self.tokens,
            Admission(settings.rpc_max_running, settings.rpc_max_queued),
            deadline_floor_s=settings.rpc_deadline_floor_s,
        )
        self.server = grpc.aio.server(
            interceptors=[self.interceptor],
            options=[("grpc.max_receive_message_length", settings.max_receive_message_bytes)],
        )
        self.port = 0
        self.feed = ChangeFeed(self.db)  # this replica's follower of the change feed (platform/feed.py)
        self.powerup = PowerUp(settings, self.db, feed=self.feed)
        self.settlement_scheduler = SettlementScheduler(
            self.db, interval_s=settings.settlement_scheduler_interval_s, default_tz=settings.settlement_timezone
        )

    async def start(self) -> int:
        configure_tracing(self.settings)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade_database_async(self.db.url)
        if self.settings.seed_demo:
            from voltcloud.seed import seed_demo_if_empty

            await seed_demo_if_empty(self.db, self.settings.demo_seed)

        await self.feed.start()  # before any state is loaded from the tables, so nothing falls between
        await self.powerup.start()
        from voltcloud.ingest.hub import hub_for

        # Station sessions reported by gateways move self-service orders (same transaction as the session).
        hub = hub_for(self.db)
        hub.on_session(self.powerup.station_session)
        hub.on_inventory(self.powerup.engine.apply)  # the engine learns station-reported changes at once
        self.powerup.station_commands = hub  # StartByScan's remote start goes down the gateway stream
        self.settlement_scheduler.start()
        bindings = _bindings(self.db, self.powerup)
        check_table_covers([b.name for b in bindings])
        for binding in bindings:
            binding.register(binding.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        service_names = [b.name for b in bindings]
        reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.port = self.server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise OSError(f"could not bind {self.settings.listen}")
        await self.server.start()
        for name in ["", *service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Turns health NOT_SERVING, drains what is already on the wire, lets in-flight calls finish within
        the grace period, then closes the database."""
        await self.health.enter_graceful_shutdown()
        grace = self.settings.grace_period_s if grace is None else grace
        started = loop_time()
        if grace > 0:
            # Serve what is already on the wire (at most half the grace period), then stop accepting.
            await self.interceptor.activity.wait_quiet(self.settings.drain_s, grace / 2)
        await self.server.stop(max(grace - (loop_time() - started), 0.0))
        await self.settlement_scheduler.stop()
        await self.powerup.stop()
        await self.feed.stop()
        await self.db.dispose()


async def serve(settings: Settings, on_ready: Callable[[Platform], None] | None = None) -> None:
    platform = Platform(settings)
    await platform.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready:
        on_ready(platform)
    await stop.wait()
    log.info("shutting down, grace period %.1fs", settings.grace_period_s)
    await platform.stop()
