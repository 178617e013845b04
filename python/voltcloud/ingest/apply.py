"""Applies uplink messages: telemetry to the twins (memory only), station events to the database (then the
twins, after commit). Translates messages into calls to the stations domain; holds no rules of its own."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.fleet.api import Vehicle
from voltcloud.ingest import events
from voltcloud.ingest.hub import Hub
from voltcloud.ingest.models import StationEventLog
from voltcloud.maintenance import api as workorders
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import AlarmLevel
from voltcloud.platform.errors import FieldViolation
from voltcloud.platform.ids import new_id
from voltcloud.platform.limits import TIMESTAMP_MAX, TIMESTAMP_MIN
from voltcloud.stations.api import (
    InventoryChange,
    Pack,
    Station,
    StationSession,
    TelemetrySource,
    Twin,
    inventory,
    packs,
    sessions,
    tokens,
)
from voltcloud.stations.api import twin as twin_ops
from voltcloud.telemetry.api import Raw, VehicleAlarm

log = logging.getLogger(__name__)

PostCommit = Callable[[], None]
AfterCommit = Callable[[], Awaitable[None]]
SWAP_RESERVE_TIMEOUT = dt.timedelta(seconds=30)


@dataclass
class EventContext:
    hub: Hub
    gateway_id: str
    stations: frozenset[str] | None  # None: any station (admin / unary push)
    principal: Principal | None = None  # the gateway's (vehicle events are scoped by it)
    post: list[PostCommit] = field(default_factory=list)  # after the commit, after the twin ops
    twins: dict[str, Twin] = field(default_factory=dict)
    ops: dict[str, list[twin_ops.TwinOp]] = field(default_factory=dict)  # station -> twin ops, in order
    after: list[AfterCommit] = field(default_factory=list)  # awaited after the commit (order transitions)
    changes: list[InventoryChange] = field(default_factory=list)  # told to the hub's subscribers after commit

    def changed(self, change: InventoryChange | None) -> None:
        if change is not None:
            self.changes.append(change)

    def op(self, twin: Twin, *op: object) -> None:
        """Queues a twin update, applied here after the commit and by every other replica from the feed."""
        self.twins[twin.station_id] = twin
        self.ops.setdefault(twin.station_id, []).append(list(op))

    async def publish(self, session: AsyncSession) -> None:
        """Announces the queued twin ops in the events' transaction (call last, inside it)."""
        for station_id, ops in self.ops.items():
            await self.hub.publish_twin(session, station_id, ops)

    def committed(self, now: dt.datetime) -> None:
        """Applies what the committed events changed: the twins, then the inventory subscribers (engine)."""
        store = self.hub.twins
        for station_id, ops in self.ops.items():
            for op in ops:
                try:
                    store.apply(self.twins[station_id], op)
                except Exception:
                    log.exception("twin update failed")
        for effect in self.post:
            try:
                effect()
            except Exception:
                log.exception("post-commit effect failed")
        for twin in self.twins.values():
            twin.commit(now)
        self.hub.inventory_changed(self.changes)

    async def run_after(self) -> None:
        for effect in self.after:
            try:
                await effect()
            except Exception:
                log.exception("after-commit effect failed")


# ---- validation (pure) ----


def validate_event(event: events.StationEvent, allowed: frozenset[str] | None) -> FieldViolation | None:
    kind = event.kind
    if not kind:
        return FieldViolation("event.event", "no event kind set")
    if vehicle_alarm(event) is not None:
        return None  # a vehicle's alarm: the telemetry room checks the gateway may report the vehicle
    if not event.station_id and isinstance(event.body, events.AlarmReport) and event.body.resource_id:
        # a GB/T gateway's alarm of a VIN the platform does not know (accept_unknown_vins): no vehicle to raise it on
        return FieldViolation(
            "event.alarm.vehicle_id",
            f"is required without a station_id ({event.body.resource_id[:17]} is no registered vehicle)",
        )
    if not event.station_id:
        return FieldViolation("event.station_id", "is required")
    if allowed is not None and event.station_id not in allowed:
        return FieldViolation("event.station_id", f"station {event.station_id} is not served by this gateway")
    body = event.body
    required: dict[str, tuple[str, ...]] = {
        "connector_status": ("connector_id",),
        "session_started": ("session_id", "connector_id"),
        "session_stopped": ("session_id",),
        "swap_started": ("session_id",),
        "swap_completed": ("session_id",),
        "pack_report": ("pack_id",),
        "inspection_defect": ("pack_id",),
    }
    for name in required.get(kind, ()):
        if not getattr(body, name):
            return FieldViolation(f"event.{kind}.{name}", "is required")
    if kind == "pack_report":
        for name in ("soc_permille", "soh_permille"):
            value = getattr(body, name)
            if not 0 <= value <= 1000:
                return FieldViolation(f"event.pack_report.{name}", f"must be 0..1000, got {value}")
    if isinstance(body, events.InspectionDefect) and not body.defect:  # DEFECT_KIND_UNSPECIFIED
        return FieldViolation("event.inspection_defect.defect", "is required")
    return None


def validate_telemetry(batch: events.TelemetryBatch) -> FieldViolation | None:
    n = len(batch.col_source_index)
    for name in ("col_metric", "col_offset_ms", "col_int_value"):
        if len(getattr(batch, name)) != n:
            return FieldViolation(
                f"telemetry.{name}", f"has {len(getattr(batch, name))} values, col_source_index has {n}"
            )
    return None


# ---- telemetry (fast path, memory only) ----


def apply_telemetry(hub: Hub, batch: events.TelemetryBatch, allowed: frozenset[str] | None) -> int:
    """Applies the latest value per (source, metric) of the batch to the twins. Later readings in a batch
    supersede earlier ones. Returns the number of readings in the batch. A batch of vehicle sources only (a
    GB/T gateway's) touches no twin and skips the work."""
    count = len(batch.readings) + len(batch.col_source_index)
    if not any(s.station_id for s in batch.sources):
        return count
    sources = [
        TelemetrySource(s.station_id if allowed is None or s.station_id in allowed else "", s.resource_id, s.pack_id)
        for s in batch.sources
    ]
    latest: Mapping[tuple[int, int], int]
    if batch.col_source_index:
        latest = dict(zip(zip(batch.col_source_index, batch.col_metric, strict=True), batch.col_int_value, strict=True))
    else:
        latest = {}
    if batch.readings:
        rows: dict[tuple[int, int], int] = dict(latest)
        for source_index, metric, value in batch.readings:
            rows[source_index, metric] = value
        latest = rows
    _, touched = hub.twins.apply_latest(sources, latest)
    now = hub.clock.now()
    for twin in touched:
        twin.last_seen = now
        change = twin.history[-1] if twin.commit(now) else None
        if change is not None:
            hub.telemetry_changed(twin, change.connectors, change.slots)
    return count


# ---- vehicle telemetry (GB/T 32960: persisted by the telemetry room, one transaction per batch) ----


def vehicle_readings(
    batch: events.TelemetryBatch, now: dt.datetime
) -> tuple[dict[str, list[Raw]], FieldViolation | None]:
    """The batch's readings of vehicle sources, per vehicle, each at base_time + offset (`now` when the batch
    has no base time). Readings whose time falls outside the API's window are left out and named."""
    vehicle_of = {i: s.vehicle_id for i, s in enumerate(batch.sources) if s.vehicle_id and not s.station_id}
    nameless = _nameless_sources(batch)
    if not vehicle_of:
        return {}, nameless
    base = batch.base_time or now
    out: dict[str, list[Raw]] = {}
    bad: str | None = None
    at_offset: dict[int, dt.datetime | None] = {}  # a frame's readings share an offset: one datetime each
    columns = zip(batch.col_source_index, batch.col_metric, batch.col_offset_ms, batch.col_int_value, strict=True)
    rows = zip(batch.readings, batch.reading_offsets_ms or [0] * len(batch.readings), strict=True)
    for index, metric, offset, value in itertools.chain(columns, ((r[0], r[1], o, r[2]) for r, o in rows)):
        vehicle_id = vehicle_of.get(index)
        if vehicle_id is None:
            continue
        at = at_offset.get(offset, ...)
        if at is ...:
            at = at_offset[offset] = _reading_time(base, offset)
        if at is None:
            bad = f"a reading of vehicle {vehicle_id} is at {offset} ms from base_time, outside the API's time range"
            continue
        out.setdefault(vehicle_id, []).append(Raw(at, metric, value))
    return out, (FieldViolation("telemetry.col_offset_ms", bad) if bad else nameless)


def _nameless_sources(batch: events.TelemetryBatch) -> FieldViolation | None:
    """Sources naming neither a station nor a vehicle (a GB/T gateway's `accept_unknown_vins`: the VIN only, as
    resource_id): their readings cannot be stored anywhere; named so the gateway's operator sees why."""
    vins = [s.resource_id or "?" for s in batch.sources if not (s.station_id or s.vehicle_id or s.pack_id)]
    if not vins:
        return None
    shown = ", ".join(vins[:5])
    return FieldViolation(
        "telemetry.sources.vehicle_id", f"is required: readings of unregistered VINs not stored ({shown})"
    )


def _reading_time(base: dt.datetime, offset_ms: int) -> dt.datetime | None:
    """base + offset, or None outside the API's time range (offsets are not range-checked at the edge)."""
    try:
        at = base + dt.timedelta(milliseconds=offset_ms)
    except OverflowError:
        return None
    return at if TIMESTAMP_MIN <= at < TIMESTAMP_MAX else None


def vehicle_alarm(event: events.StationEvent) -> VehicleAlarm | None:
    """A vehicle's GB/T alarm (an alarm event naming a vehicle and no station), else None."""
    body = event.body
    if event.station_id or not isinstance(body, events.AlarmReport) or not body.vehicle_id:
        return None
    return VehicleAlarm(body.vehicle_id, body.code[:64], body.level, body.message[:200], body.cleared)


# ---- events (persisted) ----


async def apply_event(
    session: AsyncSession, ctx: EventContext, seq: int | None, event: events.StationEvent, now: dt.datetime
) -> None:
    """Persists one validated event in the caller's transaction; twin changes are queued in ctx.post.
    `seq` is the uplink seq for the event log (None for unary pushes, which are not logged)."""
    kind = event.kind
    when = event.time or now
    alarm = vehicle_alarm(event)
    if alarm is not None:
        await _vehicle_alarm(session, ctx, alarm, when)
        return
    if seq is not None:
        session.add(
            StationEventLog(
                gateway_id=ctx.gateway_id,
                seq=seq,
                station_id=event.station_id,
                kind=kind,
                event_time=when,
                received_at=now,
                payload=event.payload,
            )
        )
    twin = await ctx.hub.twin(event.station_id)
    ctx.op(twin, "seen", kind == "heartbeat")
    handler = _HANDLERS.get(kind)
    if handler is not None:
        await handler(session, ctx, twin, event.body, when, now)


async def _connector_status(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.ConnectorStatusChanged,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    ctx.changed(await inventory.set_connector_status(session, body.connector_id, twin.station_id, body.status))
    ctx.op(twin, "connector_status", body.connector_id, body.status, body.error_code)


async def _session_started(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.SessionStarted,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    row, created = await sessions.start_charge(
        session,
        station_id=twin.station_id,
        external_id=body.session_id,
        connector_id=body.connector_id,
        meter_start_wh=body.meter_start_wh,
        id_tag=body.id_tag,
        reservation_id=body.reservation_id,
        order_id=body.order_id,
        started_at=when,
        gateway_id=ctx.gateway_id,
    )
    if created:
        await _tell(session, ctx, row, sessions.STARTED)
    if row.ended_at is None:
        ctx.op(twin, "session_started", body.connector_id, row.id, body.meter_start_wh, body.reservation_id)


async def _session_stopped(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.SessionStopped,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    energy = body.energy_wh
    if not energy and not body.meter_stop_wh and body.connector_id:
        energy = ctx.hub.twins.session_energy(twin, body.connector_id)
    row, changed = await sessions.stop_charge(
        session,
        station_id=twin.station_id,
        external_id=body.session_id,
        connector_id=body.connector_id,
        meter_stop_wh=body.meter_stop_wh,
        energy_wh=energy,
        reason=body.reason,
        ended_at=when,
        gateway_id=ctx.gateway_id,
        id_tag=body.id_tag[:64],
    )
    if changed:
        settled = await _tell(session, ctx, row, sessions.ENDED)
        if row.energy_wh > 0 and not settled:
            await tokens.flag_unpaid(session, now, row)  # no free energy: an operator must resolve it
    ctx.op(twin, "session_stopped", body.connector_id or (row.connector_id or ""), row.id)


async def _swap_started(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.SwapStarted,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    row, started = await sessions.swap(
        session,
        station_id=twin.station_id,
        external_id=body.session_id,
        lane=body.lane,
        vehicle_id=body.vehicle_id,
        order_id=body.order_id,
        pack_out_id=body.pack_out_id,
        pack_in_id=body.pack_in_id,
        energy_wh=0,
        at=when,
        ended=False,
        success=True,
        reason="",
        gateway_id=ctx.gateway_id,
    )
    if started:
        await _tell(session, ctx, row, sessions.STARTED)
    if body.lane:
        ctx.op(twin, *twin_ops.lane_op(body.lane, True, row.id, body.vehicle_id))


async def _swap_completed(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.SwapCompleted,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    row, changed = await sessions.swap(
        session,
        station_id=twin.station_id,
        external_id=body.session_id,
        lane=body.lane,
        vehicle_id=body.vehicle_id,
        order_id="",
        pack_out_id=body.pack_out_id,
        pack_in_id=body.pack_in_id,
        energy_wh=body.energy_wh,
        at=when,
        ended=True,
        success=body.success,
        reason=body.failure_reason,
        gateway_id=ctx.gateway_id,
    )
    if body.lane:
        ctx.op(twin, *twin_ops.lane_op(body.lane, False))
    if not changed or not body.success:
        if not body.success and body.pack_in_id:
            released = await packs.release_swap_reservation(session, body.pack_in_id, now)
            ctx.changed(inventory.pack_change(released) if released is not None else None)
        if changed:
            await _tell(session, ctx, row, sessions.ENDED, success=False)
        return
    out_pack, in_pack = await packs.swap_moves(
        session,
        now,
        station_id=twin.station_id,
        session_id=row.id,
        vehicle_id=body.vehicle_id or None,
        pack_out_id=body.pack_out_id or None,
        pack_in_id=body.pack_in_id or None,
        pack_out_slot=body.pack_out_slot or None,
        pack_out_soc=body.pack_out_soc_permille,
        pack_in_soc=body.pack_in_soc_permille,
    )
    await _tell(session, ctx, row, sessions.ENDED)
    for moved in (in_pack, out_pack):
        ctx.changed(inventory.pack_change(moved) if moved is not None else None)
    if in_pack is not None:
        ctx.op(twin, "remove_pack", in_pack.id)
        if in_pack.state in packs.STICKY:
            await _station_alarm(
                session,
                twin,
                now,
                _Alarm(4, "QUARANTINED_PACK_INSTALLED", vehicle_id=body.vehicle_id or None, pack_id=in_pack.id),
                f"station {twin.station_id} installed quarantined pack {in_pack.id} in {body.vehicle_id}",
            )
    if out_pack is not None:
        _place(ctx, twin, out_pack)


def _place(ctx: EventContext, twin: Twin, pack: Pack) -> None:
    """Queues the twin's view of a pack that now sits in one of this station's slots (values read now: the
    row may change again before the commit)."""
    if pack.station_id != twin.station_id or not pack.slot_no:
        return
    op = twin_ops.place_pack_op(
        pack.slot_no, pack.id, pack.pack_type_id, pack.state, pack.soc_permille, pack.soh_permille,
        pack.temperature_milli_c,
    )  # fmt: skip
    ctx.op(twin, *op)


async def _tell(
    session: AsyncSession, ctx: EventContext, row: StationSession, phase: str, *, success: bool = True
) -> bool:
    """Tells the session's subscribers (ordering) in this transaction; links the session to their order.
    True when a subscriber reports the session's order priced and settled."""
    settled = False
    for listener in ctx.hub.session_listeners:
        link = await listener(session, sessions.report_of(row, phase, success=success))
        if link is not None:
            sessions.link_order(session, row, link.order_id)
            settled = settled or link.settled
            if link.after_commit is not None:
                ctx.after.append(link.after_commit)
    return settled


async def _pack_report(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.PackReport,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    pack = await packs.apply_report(
        session,
        now,
        pack_id=body.pack_id,
        station_id=twin.station_id,
        slot_no=body.slot or None,
        soc_permille=body.soc_permille,
        soh_permille=body.soh_permille or None,
        temperature_milli_c=body.temperature_milli_c or None,
        cycles=body.cycle_count or None,
        state=body.state or None,
        power_w=body.power_w,
    )
    if pack is not None:
        ctx.changed(inventory.pack_change(pack))
        _place(ctx, twin, pack)


async def _inspection_defect(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.InspectionDefect,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    pack = await session.get(Pack, body.pack_id)
    if pack is None:
        log.warning("inspection for unknown pack %s from gateway %s", body.pack_id, ctx.gateway_id)
        return
    outcome = await packs.report_inspection(
        session,
        now,
        pack=pack,
        station_id=twin.station_id,
        defect=body.defect,
        level=body.level or AlarmLevel.MAJOR,
        notes=body.notes,
        attachment_uris=[],
        inspected_at=when,
        actor=packs.ActorRef(ctx.gateway_id, Role.GATEWAY),
    )
    ctx.changed(inventory.pack_change(outcome.pack))
    ctx.op(twin, "pack_state", outcome.pack.id, outcome.pack.state)


async def _alarm(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.AlarmReport,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    if body.cleared:  # the station says the fault is gone: its open alarm clears (unless flapping)
        await workorders.clear_equipment_alarm(
            session,
            now=now,
            code=body.code,
            station_id=twin.station_id,
            resource_id=body.resource_id or None,
            vehicle_id=body.vehicle_id or None,
            pack_id=body.pack_id or None,
        )
        return
    alarm = _Alarm(
        body.level or AlarmLevel.WARNING,
        body.code,
        resource_id=body.resource_id or None,
        vehicle_id=body.vehicle_id or None,
        pack_id=body.pack_id or None,
        open_work_order=None,  # the operator's rules decide (by default MAJOR and above)
    )
    await _station_alarm(session, twin, now, alarm, body.message)


async def _vehicle_alarm(session: AsyncSession, ctx: EventContext, alarm: VehicleAlarm, when: dt.datetime) -> None:
    vehicles = ctx.hub.vehicles
    if vehicles is None or ctx.principal is None:
        raise ValueError("vehicle telemetry is not wired")  # the event is then rejected, never half-applied
    violation = await vehicles.alarm(session, ctx.principal, alarm, when)
    if violation is not None:
        raise VehicleRefused(violation)


class VehicleRefused(Exception):
    """A vehicle event the gateway may not report: the event is rejected with this violation."""

    def __init__(self, violation: FieldViolation) -> None:
        super().__init__(violation.description)
        self.violation = violation


@dataclass(frozen=True)
class _Alarm:
    level: int
    code: str
    resource_id: str | None = None
    vehicle_id: str | None = None
    pack_id: str | None = None
    open_work_order: bool | None = True  # None: the operator's rules (maintenance's SLA policy) decide


async def _station_alarm(session: AsyncSession, twin: Twin, now: dt.datetime, alarm: _Alarm, message: str) -> None:
    """An alarm raised by (or about) a station, for the station's operator."""
    station = await session.get(Station, twin.station_id)
    await workorders.raise_alarm(
        session,
        now=now,
        source=workorders.ALARM_SOURCE_STATION,
        level=alarm.level,
        code=alarm.code,
        message=message,
        operator_id=station.operator_id if station else None,
        station_id=twin.station_id,
        resource_id=alarm.resource_id,
        vehicle_id=alarm.vehicle_id,
        pack_id=alarm.pack_id,
        open_work_order=alarm.open_work_order,
    )


async def _vehicle_arrived(
    session: AsyncSession,
    ctx: EventContext,
    twin: Twin,
    body: events.VehicleArrived,
    when: dt.datetime,
    now: dt.datetime,
) -> None:
    """Chooses the pack to install with the engine's battery matching (packs.choose_swap_pack), reserves it
    with a version check and tells the station which pack to hand out (a ReserveCommand on the lane). The
    pack type is the outgoing pack's, else the registered vehicle's; the need SOC and trip length are the
    documented defaults (the event carries neither)."""
    pack_type_id = None
    if body.pack_out_id:
        out = await session.get(Pack, body.pack_out_id)
        pack_type_id = out.pack_type_id if out is not None else None
    if pack_type_id is None and body.vehicle_id:
        vehicle = await session.get(Vehicle, body.vehicle_id)
        pack_type_id = vehicle.pack_type_id if vehicle is not None else None
    for _ in range(3):
        chosen = await packs.choose_swap_pack(session, twin.station_id, pack_type_id)
        if chosen is None:
            break
        if await packs.reserve_for_swap(session, chosen, now, f"chosen for {body.vehicle_id or 'vehicle'}"):
            ctx.changed(inventory.pack_change(chosen))
            reservation_id = new_id("rsv")
            command = events.ReserveCommand(reservation_id=reservation_id, lane=body.lane, pack_id=chosen.id)
            ctx.op(twin, "pack_state", chosen.id, packs.RESERVED)
            if command.lane:
                ctx.op(twin, "lane_reserved", command.lane, reservation_id)
            ctx.post.append(functools.partial(_after_reserve, ctx.hub, twin, command))
            return
    alarm = _Alarm(AlarmLevel.WARNING, "NO_READY_PACK", vehicle_id=body.vehicle_id or None, open_work_order=False)
    await _station_alarm(
        session, twin, now, alarm, f"no ready pack for {body.vehicle_id or 'vehicle'} in lane {body.lane}"
    )


def _after_reserve(hub: Hub, twin: Twin, command: events.ReserveCommand) -> None:
    hub.spawn(hub.send_command(twin.station_id, command, SWAP_RESERVE_TIMEOUT))


_HANDLERS: dict[str, Callable[..., Awaitable[None]]] = {
    "connector_status": _connector_status,
    "session_started": _session_started,
    "session_stopped": _session_stopped,
    "swap_started": _swap_started,
    "swap_completed": _swap_completed,
    "pack_report": _pack_report,
    "inspection_defect": _inspection_defect,
    "alarm": _alarm,
    "vehicle_arrived": _vehicle_arrived,
}


async def station_ids_known(session: AsyncSession, ids: list[str]) -> dict[str, str]:
    """station id -> operator id for the ids that exist."""
    rows = await session.exec(select(Station.id, Station.operator_id).where(Station.id.in_(ids)))  # type: ignore[attr-defined]
    return {sid: op for sid, op in rows}
