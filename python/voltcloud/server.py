"""Composition root: builds the database, auth, engine and servicers, and serves them on one port, from one
process or from each of several worker processes sharing the port under a supervisor (`startup.serve_workers`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import os
import re
import signal
from collections.abc import Callable, Sequence
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
from voltcloud.maintenance.background import MaintenanceWorkers
from voltcloud.maintenance.ports import Equipment
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database
from voltcloud.platform.errors import InvalidArgument
from voltcloud.platform.feed import Change, ChangeFeed
from voltcloud.platform.permissions import check_table_covers
from voltcloud.platform.rpc import Admission, PlatformInterceptor
from voltcloud.platform.tracing import configure_tracing
from voltcloud.runtime import PowerUp
from voltcloud.settlement.scheduler import SettlementScheduler
from voltcloud.startup import Serving, prepare_database, split_listen, token_service
from voltcloud.stations.api import inventory

log = logging.getLogger(__name__)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


@dataclass(frozen=True)
class ServiceBinding:
    name: str
    servicer: Any
    register: Callable[[Any, grpc.aio.Server], None]


def _servicer(cls: type, *args: Any) -> Any:
    """Instantiates a servicer. mypy-protobuf marks every RPC abstract; the generated bases answer
    UNIMPLEMENTED for the RPCs a servicer does not override, which is what we want."""
    factory: Any = cls
    return factory(*args)


def vehicle_telemetry(settings: Settings, db: Database, powerup: PowerUp, clock: Any) -> Any:
    """The telemetry room's object, its ports filled: the engine's nearest option, ordering's last facts."""
    from voltcloud.ordering import fleet_reports
    from voltcloud.runtime import EngineFinder
    from voltcloud.telemetry import api as telemetry

    thresholds = telemetry.Thresholds(
        spike_soc_permille=settings.telemetry_spike_soc_permille,
        spike_soc_window=dt.timedelta(seconds=settings.telemetry_spike_soc_window_s),
        spike_position_m=settings.telemetry_spike_position_m,
        spike_position_window=dt.timedelta(seconds=settings.telemetry_spike_position_window_s),
        gap=dt.timedelta(seconds=settings.telemetry_gap_s),
        stuck=dt.timedelta(seconds=settings.telemetry_stuck_s),
        interpolate_max=dt.timedelta(seconds=settings.telemetry_interpolate_max_s),
    )
    limits = telemetry.Limits(
        speed_m_per_h=settings.telemetry_speed_limit_m_per_h,
        fatigue_drive=dt.timedelta(seconds=settings.telemetry_fatigue_drive_s),
        fatigue_rest=dt.timedelta(seconds=settings.telemetry_fatigue_rest_s),
        low_soc_permille=settings.telemetry_low_soc_permille,
    )
    rules = telemetry.Rules(thresholds, limits)
    return telemetry.VehicleTelemetry(db, clock, rules, EngineFinder(powerup.engine), fleet_reports)


def _bindings(
    db: Database, powerup: PowerUp, vehicles: Any, maintenance: MaintenanceWorkers, field_hub: Any = None
) -> list[ServiceBinding]:
    from voltcloud.dispatch.service import DispatchServicer
    from voltcloud.fleet.service import FleetServicer
    from voltcloud.ingest.hub import hub_for
    from voltcloud.ingest.service import IngestServicer
    from voltcloud.maintenance.service import MaintenanceServicer
    from voltcloud.ordering import fleet_reports
    from voltcloud.ordering.service import OrderingServicer
    from voltcloud.settlement import api as settlement
    from voltcloud.settlement.service import SettlementServicer
    from voltcloud.stations.fleet_tokens import FleetTokens
    from voltcloud.stations.service import StationServicer
    from voltcloud.telemetry.service import VehicleTelemetryRpcs

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
            # fleet's ports: ledger, pack types, charging tokens, ordering's facts for reports, the telemetry
            # room's vehicle RPCs and its driving figures for reports
            _servicer(
                FleetServicer,
                db,
                settlement,
                _pack_type_exists,
                FleetTokens(settlement),
                fleet_reports,
                VehicleTelemetryRpcs(vehicles),
                vehicles,
            ),
            fleet_pb2_grpc.add_FleetServiceServicer_to_server,
        ),
        ServiceBinding(
            maintenance_pb2.DESCRIPTOR.services_by_name["MaintenanceService"].full_name,
            # maintenance's ports: stations' equipment (scanned codes); its alarm hub and clock; the field desk
            _with_field(
                _servicer(MaintenanceServicer, db, StationEquipment(), maintenance.hub, maintenance.clock), field_hub
            ),
            maintenance_pb2_grpc.add_MaintenanceServiceServicer_to_server,
        ),
        ServiceBinding(
            ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
            _servicer(IngestServicer, db),
            ingest_pb2_grpc.add_IngestServiceServicer_to_server,
        ),
    ]


def _with_field(servicer: Any, field_hub: Any) -> Any:
    if field_hub is not None:
        servicer.attach_field(field_hub)  # maint-field's desk: engineer hub, stations and travel ports
    return servicer


def field_hub(settings: Settings, db: Database, powerup: PowerUp, clock: Clock) -> Any:
    """Maintenance's engineer hub with its ports: stations' rows and commands, the engine's travel and solver."""
    from voltcloud.ingest.hub import hub_for
    from voltcloud.maintenance.engineer_hub import EngineerHub
    from voltcloud.maintenance.fielddispatch import Desk

    desk = Desk(
        MaintenanceStations(hub_for(db)),
        EngineTravel(powerup.engine),
        dt.timedelta(seconds=settings.engineer_offer_timeout_s),
    )
    return EngineerHub(
        db,
        clock,
        desk,
        interval_s=settings.maintenance_field_sweep_s,
        idle_s=settings.sweep_idle_s,
        autodispatch_s=settings.engineer_autodispatch_s,
    )


def _packs_only(handler: Callable[[Sequence[Change]], None]) -> Callable[[Sequence[Change]], None]:
    """The inventory's pack changes only (a connector's or a unit's change brings no SOH sample)."""

    def packs(changes: Sequence[Change]) -> None:
        mine = [c for c in changes if c.payload.get("kind") == "pack"]
        if mine:
            handler(mine)

    return packs


def admission(settings: Settings) -> Admission:
    overrides = {name: (m.max_running, m.max_queued) for name, m in settings.rpc_method_admission.items()}
    return Admission(settings.rpc_max_running, settings.rpc_max_queued, overrides)


async def _reading_partitions(db: Database, now: dt.datetime) -> None:
    """PostgreSQL: the reading history's monthly partitions a few months ahead (a no-op on SQLite)."""
    from voltcloud.telemetry.api import ensure_partitions

    try:
        async with db.transaction("telemetry.partitions") as session:
            created = await ensure_partitions(session, now)
    except Exception:  # another worker created them at the same moment; the DEFAULT partition takes any reading
        log.warning("vehicle_frame partitions not created by this worker", exc_info=True)
        return
    if created:
        log.info("vehicle_frame: %d monthly partitions created", created)


async def _pack_type_exists(session: AsyncSession, pack_type_id: int) -> bool:
    """Fleet's `PackTypes` port: pack types are stations' rows, and fleet sits below stations."""
    from voltcloud.stations.models import PackType

    return await session.get(PackType, pack_type_id) is not None


_EQUIPMENT_CODE = re.compile(
    r"^voltcloud://(?:(?P<kind>[cl])/(?P<station>[A-Za-z0-9_.:-]{1,64})/(?P<target>[A-Za-z0-9_.:-]{1,64})"
    r"|s/(?P<only_station>[A-Za-z0-9_.:-]{1,64})|p/(?P<pack>[A-Za-z0-9_.:-]{1,64}))$"
)


class StationEquipment:
    """Maintenance's `EquipmentDirectory` port: scanned codes name stations' rows (the StartByScan codes for
    connectors and lanes, plus stations and packs); maintenance sits below stations."""

    async def station_operator(self, session: AsyncSession, station_id: str) -> str | None:
        from voltcloud.stations.api import Station

        station = await session.get(Station, station_id)
        return station.operator_id if station else None

    async def resolve(self, session: AsyncSession, code: str) -> Equipment | None:
        from voltcloud.stations.api import Connector, Pack, Station

        match = _EQUIPMENT_CODE.match(code)
        if match is None:
            raise InvalidArgument.for_field(
                "equipment_code", "expected voltcloud://s/<station>, voltcloud://c/<station>/<connector>, "
                "voltcloud://l/<station>/<lane> or voltcloud://p/<pack>",
            )  # fmt: skip
        if match["pack"]:
            pack = await session.get(Pack, match["pack"])
            station_id = pack.station_id if pack else None
            operator = await self.station_operator(session, station_id) if station_id else None
            return Equipment("pack", operator, station_id, pack_id=pack.id) if pack and operator else None
        station = await session.get(Station, match["only_station"] or match["station"])
        if station is None:
            return None
        if match["only_station"]:
            return Equipment("station", station.operator_id, station.id)
        if match["kind"] == "c":
            connector = await session.get(Connector, match["target"])
            if connector is None or connector.station_id != station.id:
                return None
            return Equipment("connector", station.operator_id, station.id, resource_id=connector.id)
        lane = match["target"]
        if not lane.isdigit() or not 1 <= int(lane) <= max(station.lanes, 0):
            return None
        return Equipment("lane", station.operator_id, station.id, resource_id=f"{station.id}/lane/{lane}")


class MaintenanceStations:
    """Maintenance's `ports.Stations`: stations' rows, pack withdrawal and the withdraw command (maintenance sits
    below stations, so the composition root serves what it needs)."""

    def __init__(self, commands: Any) -> None:
        self._commands = commands  # the gateway hub (`ingest.hub.Hub.send_command`)

    async def site(self, session: AsyncSession, station_id: str) -> Any:
        from voltcloud.maintenance.ports import Site
        from voltcloud.stations.api import Station

        station = await session.get(Station, station_id) if station_id else None
        return None if station is None else Site(station.id, station.operator_id, station.lat, station.lng)

    async def pack(self, session: AsyncSession, pack_id: str) -> Any:
        from voltcloud.stations.api import Pack

        pack = await session.get(Pack, pack_id) if pack_id else None
        return None if pack is None else await self._facts(session, pack)

    async def _facts(self, session: AsyncSession, pack: Any) -> Any:
        from voltcloud.maintenance.ports import PackFacts
        from voltcloud.stations.api import PackType, packs

        pack_type = await session.get(PackType, pack.pack_type_id)
        return PackFacts(
            pack.id, await packs.operator_of(session, pack), pack.station_id, pack.state, pack.soh_permille,
            pack.cycles, pack_type.capacity_wh if pack_type else 0,
        )  # fmt: skip

    async def pack_samples(
        self,
        session: AsyncSession,
        pack_id: str,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        after_seq: int,
        limit: int,
    ) -> list[Any]:
        from sqlmodel import col, select

        from voltcloud.maintenance.ports import PackSample
        from voltcloud.stations.models import PackEvent

        query = select(PackEvent).where(PackEvent.pack_id == pack_id, col(PackEvent.soh_permille) > 0)
        if start is not None:
            query = query.where(col(PackEvent.time) >= start)
        if end is not None:
            query = query.where(col(PackEvent.time) < end)
        if after_seq:
            query = query.where(col(PackEvent.id) > after_seq)
        rows = await session.exec(query.order_by(col(PackEvent.id)).limit(limit))
        return [PackSample(e.id or 0, e.time, e.soh_permille, e.cycles, e.temperature_milli_c, e.power_w) for e in rows]

    async def packs_sampled_after(self, session: AsyncSession, after_seq: int, *, limit: int) -> list[Any]:
        from sqlmodel import col, select

        from voltcloud.stations.models import PackEvent

        query = select(PackEvent.id, PackEvent.pack_id).where(col(PackEvent.soh_permille) > 0)
        rows = await session.exec(query.where(col(PackEvent.id) > after_seq).order_by(col(PackEvent.id)).limit(limit))
        return [(seq or 0, pack_id) for seq, pack_id in rows]

    async def withdraw_pack(
        self, session: AsyncSession, pack_id: str, *, now: dt.datetime, actor: str, actor_role: int, reason: str
    ) -> Any:
        from voltcloud.stations.api import packs

        pack = await packs.load_pack(session, None, pack_id, lock=True)
        await packs.withdraw(session, pack, now, reason, packs.ActorRef(actor, actor_role))
        return await self._facts(session, pack)

    async def send_withdraw(self, station_id: str, pack_id: str, reason: str, answer_within: dt.timedelta) -> str:
        from voltcloud.platform.enums import CommandStatus

        command = stations_pb2.StationCommand(
            withdraw_pack=stations_pb2.WithdrawPackCommand(pack_id=pack_id, reason=reason[:200])
        )
        answer = await self._commands.send_command(station_id, command, answer_within)
        return CommandStatus(answer.status).name


class EngineTravel:
    """Maintenance's `ports.Travel`: road times from the engine's travel model (live congestion included) and
    the assignment from its route solver (`_core.solve_routes`, one work order per engineer)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def durations(
        self, origins: Sequence[tuple[float, float]], targets: Sequence[tuple[float, float]], at: dt.datetime
    ) -> list[list[float]]:
        """Only the origin -> target pairs (not the square matrix over both): one `travel_many` call."""
        import numpy as np

        n, m = len(origins), len(targets)
        if not n or not m:
            return [[] for _ in range(n)]
        lat1 = np.repeat(np.array([o[0] for o in origins], dtype=np.float64), m)
        lng1 = np.repeat(np.array([o[1] for o in origins], dtype=np.float64), m)
        lat2 = np.tile(np.array([t[0] for t in targets], dtype=np.float64), n)
        lng2 = np.tile(np.array([t[1] for t in targets], dtype=np.float64), n)
        _dist, dur = self._engine.travel_model.travel_many(lat1, lng1, lat2, lng2, int(at.timestamp()))
        flat = np.asarray(dur, dtype=np.float64).reshape(n, m)
        return [[float(x) for x in row] for row in flat]

    def assign(
        self, cost: Sequence[Sequence[float]], allowed: Sequence[Sequence[bool]], time_limit_ms: int
    ) -> dict[int, int]:
        """Each work order j carries skill bit j; an engineer holds the bits of the orders it may take, so the
        solver only pairs allowed ones (at most 63 orders per call: the caller batches)."""
        import numpy as np

        from voltcloud import _core

        core: Any = _core
        n, m = len(cost), len(cost[0]) if cost else 0
        if not n or not m:
            return {}
        if m == 1:  # one work order: the nearest allowed engineer is the optimum, no search needed
            allowed_i = [i for i in range(n) if allowed[i][0]]
            return {0: min(allowed_i, key=lambda i: cost[i][0])} if allowed_i else {}
        size = n + m
        matrix = np.full((size, size), 1e7, dtype=np.float64)
        np.fill_diagonal(matrix, 0.0)
        for i in range(n):
            for j in range(m):
                matrix[i, n + j] = cost[i][j]
                matrix[n + j, i] = 0.0  # nobody has to drive home inside the plan
        skills = [sum(1 << j for j in range(m) if allowed[i][j]) for i in range(n)]
        vehicles = [core.Vehicle(i, i, shift_start=0.0, shift_end=1e7, capacity=1, skills=skills[i]) for i in range(n)]
        tasks = [core.Task(j, n + j, ready=0.0, due=1e6, service=0.0, demand=1, skills=1 << j) for j in range(m)]
        solution = core.solve_routes(vehicles, tasks, matrix, time_limit_ms=time_limit_ms, seed=0)
        chosen: dict[int, int] = {}
        for route in solution.routes:
            for task_no in route.task_ids:
                chosen[int(task_no)] = int(route.vehicle_id)
        return chosen


class Platform:
    """A running platform: the gRPC server and what it owns.

    `worker` names a worker process of `serve_workers`: its supervisor has migrated and seeded the database,
    the port is shared with the other workers (SO_REUSEPORT), and each unary answer names the worker."""

    def __init__(self, settings: Settings, worker: str | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.db = Database(settings.resolved_database_url(), pool_size=settings.db_pool_size)
        self.tokens = token_service(settings)
        self.health = health.aio.HealthServicer()
        self.interceptor = PlatformInterceptor(
            self.tokens, admission(settings), deadline_floor_s=settings.rpc_deadline_floor_s, worker=worker
        )
        # Each gRPC server accepts one call of a method at a time, several event-loop turns apart: a worker
        # runs `rpc_accept_servers` of them on its shared port so calls reach admission quickly under load.
        accept_servers = settings.rpc_accept_servers if worker else 1
        self.servers = [self._grpc_server(settings, worker, accept_servers) for _ in range(accept_servers)]
        self.server = self.servers[0]
        self.port = 0
        self.feed = ChangeFeed(self.db)  # this replica's follower of the change feed (platform/feed.py)
        self.powerup = PowerUp(settings, self.db, feed=self.feed)
        self.maintenance = MaintenanceWorkers(settings, self.db, clock or SystemClock())
        self.field_hub = field_hub(settings, self.db, self.powerup, self.maintenance.clock)
        self.field_hub.follow(self.feed)  # offers decided on any replica reach the engineer streams held here
        self.feed.subscribe(inventory.INVENTORY_TOPIC, _packs_only(self.field_hub.packs_changed))  # SOH samples
        self.settlement_scheduler = SettlementScheduler(
            self.db, interval_s=settings.settlement_scheduler_interval_s, default_tz=settings.settlement_timezone
        )

    def _grpc_server(self, settings: Settings, worker: str | None, of: int) -> grpc.aio.Server:
        return grpc.aio.server(
            interceptors=[self.interceptor],
            maximum_concurrent_rpcs=max(1, settings.rpc_max_concurrent // of),  # the worker's bound, shared out
            options=[
                ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
                # A call that waited this long in gRPC's queue is dropped there, before any Python runs for it:
                # under overload that queue is first in, first out, and serving its oldest calls serves the dead.
                ("grpc.server_max_unrequested_time_in_server", settings.rpc_max_unrequested_s),
                # Only workers share their port; a lone server must fail on a port another process holds.
                ("grpc.so_reuseport", 1 if worker else 0),
            ],
        )

    async def start(self) -> int:
        configure_tracing(self.settings)
        if self.worker is None:  # a worker's supervisor has prepared the database once for all workers
            await prepare_database(self.settings, self.db)

        await self.feed.start()  # before any state is loaded from the tables, so nothing falls between
        await self.powerup.start()
        from voltcloud.ingest.hub import hub_for

        # Station sessions reported by gateways move self-service orders (same transaction as the session).
        hub = hub_for(self.db)
        hub.on_session(self.powerup.station_session)
        hub.on_inventory(self.powerup.engine.apply)  # the engine learns station-reported changes at once
        self.powerup.station_commands = hub  # StartByScan's remote start goes down the gateway stream
        await hub.follow(self.feed)  # twins, gateway links and commands across replicas
        # Vehicle telemetry: the uplink's vehicle readings and alarms; WatchVehicles follows the feed.
        self.vehicles = vehicle_telemetry(self.settings, self.db, self.powerup, hub.clock)
        self.vehicles.watch.follow(self.feed)
        hub.vehicles = self.vehicles
        await _reading_partitions(self.db, hub.clock.now())
        self.settlement_scheduler.start()
        self.maintenance.follow(self.feed)
        self.maintenance.start()
        self.field_hub.start()
        bindings = _bindings(self.db, self.powerup, self.vehicles, self.maintenance, self.field_hub)
        check_table_covers([b.name for b in bindings])
        service_names = [b.name for b in bindings]
        for server in self.servers:
            for binding in bindings:
                binding.register(binding.servicer, server)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        self.port = self.server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise OSError(f"could not bind {self.settings.listen}")
        for server in self.servers[1:]:
            if server.add_insecure_port(f"{split_listen(self.settings.listen)[0]}:{self.port}") != self.port:
                raise OSError(f"could not bind {self.settings.listen} again")
        for server in self.servers:
            await server.start()
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
        left = max(grace - (loop_time() - started), 0.0)
        await asyncio.gather(*(server.stop(left) for server in self.servers))
        await self.settlement_scheduler.stop()
        await self.maintenance.stop()
        await self.field_hub.stop()
        from voltcloud.ingest.hub import hub_for

        await hub_for(self.db).stop()
        await self.powerup.stop()
        await self.feed.stop()
        await self.db.dispose()


async def serve(
    settings: Settings, on_ready: Callable[[Serving], None] | None = None, *, worker: str | None = None
) -> None:
    """Serves from this process until SIGTERM or SIGINT, then stops gracefully."""
    platform = Platform(settings, worker=worker)
    await platform.start()
    # What start-up built (the engine's maps, the price book, caches: hundreds of thousands of objects at country
    # scale) lives as long as the process: out of the collector's reach, a full collection takes ~0 ms instead
    # of ~80 ms, a pause that every call in flight waited out (the quote p99 at 500/s, docs/benchmarks.md).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready:
        on_ready(Serving(platform.port, platform.db.dialect, platform.tokens, [os.getpid()]))
    await stop.wait()
    log.info("shutting down, grace period %.1fs", settings.grace_period_s)
    await platform.stop()


def serve_here(settings: Settings, on_ready: Callable[[Serving], None] | None, worker: str | None) -> None:
    """`startup.ServeHere`: what a worker process (or a lone server) runs."""
    asyncio.run(serve(settings, on_ready, worker=worker))
