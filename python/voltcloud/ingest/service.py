"""IngestService: the gateways' bidirectional uplink (seq, ack, de-duplication, commands) and PushTelemetry.

Per stream: the first message is a Hello; the platform answers Ack(last applied seq) so the gateway replays
what follows; the protocol's rules (duplicates, gaps, acks, the cursor) are in `ingest.uplink`, the I/O here.
Telemetry goes to the twins in memory. Events are written, together with the new cursor, in
one transaction per drained group of messages, then acked: an acked event is durable and is applied once,
across platform restarts too (the cursor lives in `gatewaycursor`; the event log is unique per seq).
A message that cannot be applied is acknowledged and answered with an UplinkRejection naming the field,
so a bad message is never replayed forever and never blocks the events behind it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.api.v1 import ingest_pb2, ingest_pb2_grpc
from voltcloud.ingest import apply, convert, uplink
from voltcloud.ingest.events import Ack, Rejection, StationEvent, TelemetryBatch
from voltcloud.ingest.hub import GatewayLink, Hub, Outbound, hub_for
from voltcloud.ingest.models import GatewayCursor
from voltcloud.platform import idempotency
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.db import Database
from voltcloud.platform.errors import (
    Aborted,
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from voltcloud.platform.limits import optional_datetime, to_timestamp
from voltcloud.platform.rpc import current_principal
from voltcloud.settlement import api as settlement
from voltcloud.stations.api import ChargingToken, tokens
from voltcloud.telemetry import api as telemetry

log = logging.getLogger(__name__)

MAX_GROUP = 512  # messages folded into one transaction


def _check_gateway(principal: Principal, gateway_id: str, field: str) -> None:
    if not gateway_id:
        raise InvalidArgument.for_field(field, "is required")
    if principal.role is Role.GATEWAY and principal.subject != gateway_id:
        raise PermissionDenied(f"{field}: token is for gateway {principal.subject}, not {gateway_id}")


async def _read_cursor(db: Database, gateway_id: str, now: dt.datetime) -> int:
    async with db.transaction("ingest.cursor.read") as session:
        row = await session.get(GatewayCursor, gateway_id)
        if row is not None:
            return row.last_seq
    try:
        async with db.transaction("ingest.cursor.create") as session:
            session.add(GatewayCursor(gateway_id=gateway_id, last_seq=0, updated_at=now))
    except IntegrityError:
        return await _read_cursor(db, gateway_id, now)
    return 0


async def _advance_cursor(session: AsyncSession, gateway_id: str, old: int, new: int, now: dt.datetime) -> None:
    """Compare-and-set: a concurrent stream of the same gateway (a second replica) loses with ABORTED."""
    if new == old:
        return
    result = await session.exec(
        sa.update(GatewayCursor)
        .where(sa.column("gateway_id") == gateway_id, sa.column("last_seq") == old)
        .values(last_seq=new, updated_at=now)
    )
    if result.rowcount != 1:
        raise Aborted(f"gateway {gateway_id}: another stream advanced the uplink cursor past {old}")


class UplinkStream:
    def __init__(self, hub: Hub, principal: Principal, outbox: asyncio.Queue[Outbound]) -> None:
        self.hub = hub
        self.db = hub.db
        self.principal = principal
        self.outbox = outbox
        self.link: GatewayLink | None = None
        self.gateway_id = ""
        self.protocol = uplink.UplinkCursor(flushed_at=time.monotonic())
        self.readings = 0

    # ---- hello ----

    async def hello(self, message: ingest_pb2.GatewayToPlatform) -> None:
        if message.WhichOneof("msg") != "hello":
            raise InvalidArgument.for_field("msg", "the first uplink message must be a hello")
        hello = message.hello
        _check_gateway(self.principal, hello.gateway_id, "hello.gateway_id")
        ids = list(dict.fromkeys(hello.station_ids))
        async with self.db.transaction("ingest.hello") as session:
            known = await apply.station_ids_known(session, ids)
        for i, station_id in enumerate(ids):
            if station_id not in known:
                raise InvalidArgument.for_field(f"hello.station_ids[{i}]", f"unknown station {station_id}")
            tenant = self.principal.tenant
            if self.principal.role is not Role.PLATFORM_ADMIN and (
                tenant is None or tenant.kind != "operator" or tenant.id != known[station_id]
            ):
                raise PermissionDenied(f"hello.station_ids[{i}]: station {station_id} belongs to another operator")
        self.gateway_id = hello.gateway_id
        now = self.hub.clock.now()
        stored = await _read_cursor(self.db, self.gateway_id, now)
        self.protocol = uplink.UplinkCursor.resume(stored, hello.last_acked_seq, time.monotonic())
        for station_id in ids:
            await self.hub.twin(station_id)
        self.link = GatewayLink(self.gateway_id, frozenset(ids), self.outbox)
        self.hub.attach(self.link)
        await self.hub.announce(self.link)  # before the ack: a command from any replica can reach it now
        cursor = self.protocol.cursor
        self.outbox.put_nowait(Ack(cursor))
        log.info("gateway %s connected: %d stations, cursor %d", self.gateway_id, len(ids), cursor)

    # ---- message loop ----

    async def run(self, requests: AsyncIterator[ingest_pb2.GatewayToPlatform]) -> None:
        inbox: asyncio.Queue[ingest_pb2.GatewayToPlatform | None] = asyncio.Queue(maxsize=4 * MAX_GROUP)
        iterator = requests.__aiter__()
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            return
        await self.hello(first)

        async def pump() -> None:
            async for item in iterator:
                await inbox.put(item)
            await inbox.put(None)

        reader = asyncio.create_task(pump())
        try:
            done = False
            while not done:
                group = [await inbox.get()]
                while len(group) < MAX_GROUP and not inbox.empty():
                    group.append(inbox.get_nowait())
                if group[-1] is None:
                    done = True
                await self.process([m for m in group if m is not None])
                if reader.done() and reader.exception() is not None and inbox.empty():
                    raise reader.exception()  # type: ignore[misc]
        except DomainError:
            await self.flush_cursor(force=True)
            raise
        finally:
            reader.cancel()  # never awaited here: on cancellation (server stopping) no more I/O is started
        await self.flush_cursor(force=True)

    async def process(self, group: list[ingest_pb2.GatewayToPlatform]) -> None:
        queued: list[tuple[int, StationEvent]] = []
        protocol = self.protocol
        start_cursor = protocol.cursor
        allowed = self.link.stations if self.link else frozenset()
        error: DomainError | None = None
        for message in group:
            seq = message.seq
            verdict = protocol.admit(seq)
            if verdict is uplink.Verdict.DUPLICATE:
                continue
            if verdict is uplink.Verdict.GAP:
                error = protocol.gap(seq)
                break
            kind = message.WhichOneof("msg")
            if kind == "telemetry":
                if queued:
                    await self.commit_events(queued)
                    queued = []
                violation = await self.telemetry(message.telemetry, allowed)
                if violation is not None:
                    self.reject(seq, violation)
            elif kind == "event":
                decoded = _decode_event(message.event, allowed)
                if isinstance(decoded, FieldViolation):
                    self.reject(seq, decoded)
                else:
                    queued.append((seq, decoded))
            elif kind == "command_result":
                if self.link is not None:
                    self.hub.deliver_result(self.link, convert.command_result(message.command_result))
            elif kind == "hello":
                self.reject(seq, FieldViolation("msg", "hello is only valid as the first message"))
            else:
                self.reject(seq, FieldViolation("msg", "no payload set"))
            protocol.applied(seq)
        if queued:
            await self.commit_events(queued)
        await self.flush_cursor()
        if protocol.ack_due(start_cursor):
            self.outbox.put_nowait(Ack(protocol.cursor))
        if error is not None:
            raise error

    async def telemetry(self, message: ingest_pb2.TelemetryBatch, allowed: frozenset[str]) -> FieldViolation | None:
        """Station readings to the twins (memory); vehicle readings to the telemetry store, one transaction."""
        try:
            batch = convert.telemetry(message)
        except InvalidArgument as error:
            return error.violations[0] if error.violations else FieldViolation("telemetry", str(error))
        violation = apply.validate_telemetry(batch)
        if violation is not None:
            return violation
        self.readings += apply.apply_telemetry(self.hub, batch, allowed)
        return await apply_vehicles(self.hub, self.principal, batch)

    def reject(self, seq: int, violation: FieldViolation) -> None:
        log.warning("gateway %s seq %d rejected: %s: %s", self.gateway_id, seq, violation.field, violation.description)
        self.outbox.put_nowait(Rejection(seq, violation.field, violation.description))

    async def commit_events(self, events: list[tuple[int, StationEvent]]) -> None:
        """Writes the events and the cursor in one transaction, then applies their twin changes. When the
        group fails, each event is retried alone so one bad event is rejected and the rest still apply."""
        last_seq = events[-1][0]
        try:
            await self._commit(events, last_seq)
        except Aborted:
            raise
        except Exception as error:
            if len(events) == 1:
                seq = events[0][0]
                if isinstance(error, apply.VehicleRefused):
                    self.reject(seq, error.violation)
                else:
                    log.exception("gateway %s seq %d could not be applied", self.gateway_id, seq)
                    self.reject(seq, FieldViolation("event", "could not be applied; see the platform log"))
                async with self.db.transaction("ingest.cursor") as session:
                    await _advance_cursor(session, self.gateway_id, self.protocol.persisted, seq, self.hub.clock.now())
                self.protocol.persisted_up_to(seq)
                return
            for single in events:
                await self.commit_events([single])

    async def _commit(self, events: list[tuple[int, StationEvent]], last_seq: int) -> None:
        ctx = apply.EventContext(
            self.hub, self.gateway_id, self.link.stations if self.link else frozenset(), self.principal
        )
        now = self.hub.clock.now()
        async with self.db.transaction("ingest.events") as session:
            for seq, event in events:
                await apply.apply_event(session, ctx, seq, event, now)
            await _advance_cursor(session, self.gateway_id, self.protocol.persisted, last_seq, now)
            await ctx.publish(session)
        self.protocol.persisted_up_to(last_seq, time.monotonic())
        ctx.committed(now)
        await ctx.run_after()

    async def flush_cursor(self, *, force: bool = False) -> None:
        protocol = self.protocol
        if not self.gateway_id or not protocol.flush_due(time.monotonic(), force=force):
            return
        cursor = protocol.cursor
        try:
            async with self.db.transaction("ingest.cursor") as session:
                await _advance_cursor(session, self.gateway_id, protocol.persisted, cursor, self.hub.clock.now())
        except Aborted:
            if not force:
                raise
            return
        except Exception:
            if force:
                log.warning("gateway %s: cursor not persisted at stream end", self.gateway_id)
                return
            raise
        protocol.persisted_up_to(cursor, time.monotonic())

    def close(self) -> None:
        if self.link is not None:
            self.hub.detach(self.link)


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db
        self.hub = hub_for(db)

    async def Uplink(
        self, request_iterator: AsyncIterator[ingest_pb2.GatewayToPlatform], context: Any
    ) -> AsyncIterator[ingest_pb2.PlatformToGateway]:
        outbox: asyncio.Queue[Outbound] = asyncio.Queue()
        stream = UplinkStream(self.hub, current_principal(), outbox)

        async def run() -> None:
            try:
                await stream.run(request_iterator)
                outbox.put_nowait(None)
            except BaseException as error:  # delivered to the response side, which raises it
                outbox.put_nowait(error)

        task = asyncio.create_task(run())
        try:
            while True:
                item = await outbox.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        break
                    raise item
                yield convert.downlink(item)
        finally:
            stream.close()
            task.cancel()
            task.add_done_callback(_retrieve)

    async def PushTelemetry(
        self, request: ingest_pb2.PushTelemetryRequest, context: Any
    ) -> ingest_pb2.PushTelemetryResponse:
        principal = current_principal()
        _check_gateway(principal, request.gateway_id, "gateway_id")
        batch = convert.telemetry(request.telemetry)
        violation = apply.validate_telemetry(batch)
        if violation is not None:
            raise InvalidArgument.for_fields([violation])
        decoded = [convert.station_event(e) for e in request.events]
        for i, event in enumerate(decoded):
            violation = apply.validate_event(event, None)
            if violation is not None:
                raise InvalidArgument.for_fields(
                    [FieldViolation(violation.field.replace("event.", f"events[{i}].", 1), violation.description)]
                )
        station_ids = sorted({e.station_id for e in request.events} | {x.station_id for x in request.telemetry.sources})
        station_ids = [sid for sid in station_ids if sid]
        async with self._db.transaction("ingest.push.check") as session:
            known = await apply.station_ids_known(session, station_ids)
        for sid in station_ids:
            if sid not in known:
                raise NotFound(f"station {sid} not found")
            if principal.role is not Role.PLATFORM_ADMIN:
                principal.require_tenant("operator", known[sid])
        now = self.hub.clock.now()
        ctx = apply.EventContext(self.hub, request.gateway_id, None, principal)
        stored = await _read_cursor(self._db, request.gateway_id, now) if request.seq else 0
        if uplink.push_is_replay(request.seq, stored):
            return ingest_pb2.PushTelemetryResponse(duplicate=True)
        async with self._db.transaction("ingest.push") as session:
            for event in decoded:
                await apply.apply_event(session, ctx, None, event, now)
            if request.seq:
                await _advance_cursor(session, request.gateway_id, stored, request.seq, now)
            await ctx.publish(session)
        ctx.committed(now)
        await ctx.run_after()
        for sid in known:
            await self.hub.twin(sid)
        readings = apply.apply_telemetry(self.hub, batch, None)
        violation = await apply_vehicles(self.hub, principal, batch)
        if violation is not None:
            raise InvalidArgument.for_fields([violation])
        return ingest_pb2.PushTelemetryResponse(readings_accepted=readings, events_accepted=len(request.events))

    async def ResolveVehicles(
        self, request: ingest_pb2.ResolveVehiclesRequest, context: Any
    ) -> ingest_pb2.ResolveVehiclesResponse:
        principal = current_principal()
        _check_gateway(principal, request.gateway_id, "gateway_id")
        async with self._db.transaction("ingest.resolve_vehicles") as session:
            found = await telemetry.resolve_vins(session, principal, list(request.vins))
        return ingest_pb2.ResolveVehiclesResponse(
            vehicles=[ingest_pb2.ResolvedVehicle(vin=vin, vehicle_id=vid) for vin, vid in found]
        )

    # ---- charging tokens (issue 9 finding 4: no free energy over OCPP) ----

    async def AuthorizeIdTag(
        self, request: ingest_pb2.AuthorizeIdTagRequest, context: Any
    ) -> ingest_pb2.AuthorizeIdTagResponse:
        principal = current_principal()
        _check_gateway(principal, request.gateway_id, "gateway_id")
        tokens.check_id_tag(request.id_tag)
        now = self.hub.clock.now()
        async with self._db.transaction("ingest.authorize") as session:
            operator_id = await tokens.station_operator(session, principal, request.station_id)
            auth = await tokens.authorize(session, operator_id, request.id_tag, now)
        response = ingest_pb2.AuthorizeIdTagResponse(status=int(auth.status))  # type: ignore[arg-type]
        if auth.expires_at is not None:
            response.expiry_time.CopyFrom(to_timestamp(auth.expires_at))
        response.cache_until.CopyFrom(to_timestamp(auth.cache_until))
        return response

    async def RegisterChargingToken(
        self, request: ingest_pb2.RegisterChargingTokenRequest, context: Any
    ) -> ingest_pb2.RegisterChargingTokenResponse:
        principal = current_principal()
        if not request.idempotency_key:
            raise InvalidArgument.for_field("idempotency_key", "is required")
        inp = tokens.TokenInput(
            id_tag=tokens.check_id_tag(request.id_tag),
            operator_id=request.operator_id,
            owner_kind=request.owner_kind,
            owner_id=request.owner_id,
            sub_fleet_id=request.sub_fleet_id,
            vehicle_id=request.vehicle_id,
            expires_at=optional_datetime(request, "expiry_time", zero="invalid"),
        )
        now = self.hub.clock.now()
        async with self._db.transaction("ingest.tokens.register") as session:
            claim = await idempotency.claim_request(
                session, "RegisterChargingToken", principal.subject, request, now=now
            )
            if (replay := idempotency.replayed(claim, ingest_pb2.RegisterChargingTokenResponse.FromString)) is not None:
                return replay
            token = await tokens.register(session, principal, now, inp, settlement)
            response = ingest_pb2.RegisterChargingTokenResponse(token=_token_message(token, now))
            await idempotency.complete(session, claim, response.SerializeToString())
        return response

    async def SetChargingTokenStatus(
        self, request: ingest_pb2.SetChargingTokenStatusRequest, context: Any
    ) -> ingest_pb2.SetChargingTokenStatusResponse:
        principal = current_principal()
        if not request.token_id:
            raise InvalidArgument.for_field("token_id", "is required")
        now = self.hub.clock.now()
        async with self._db.transaction("ingest.tokens.status") as session:
            token = await tokens.set_blocked(session, principal, now, request.token_id, request.blocked)
            return ingest_pb2.SetChargingTokenStatusResponse(token=_token_message(token, now))


def _token_message(token: ChargingToken, now: dt.datetime) -> ingest_pb2.ChargingToken:
    message = ingest_pb2.ChargingToken(
        token_id=token.id,
        id_tag=token.id_tag,
        operator_id=token.operator_id,
        owner_kind=token.owner_kind,
        owner_id=token.owner_id,
        sub_fleet_id=token.sub_fleet_id or "",
        vehicle_id=token.vehicle_id,
        account_id=token.account_id,
        status=int(tokens.verdict(token, now)),  # type: ignore[arg-type]
    )
    if token.expires_at is not None:
        message.expiry_time.CopyFrom(to_timestamp(token.expires_at))
    return message


async def apply_vehicles(hub: Hub, principal: Principal, batch: TelemetryBatch) -> FieldViolation | None:
    """The batch's vehicle readings, in one transaction of the telemetry store; a violation names the vehicles
    the gateway may not report (their readings are not stored) or readings out of the time range."""
    readings, violation = apply.vehicle_readings(batch, hub.clock.now())
    if not readings:
        return violation
    if hub.vehicles is None:
        return FieldViolation("telemetry.sources", "vehicle telemetry is not served by this platform")
    _, refused = await hub.vehicles.ingest(principal, readings)
    if refused:
        shown = ", ".join(refused[:5])
        return FieldViolation("telemetry.sources.vehicle_id", f"not this gateway's vehicles: {shown}")
    return violation


def _decode_event(message: ingest_pb2.StationEvent, allowed: frozenset[str]) -> StationEvent | FieldViolation:
    """The event, or why it is rejected. An invalid time is found while decoding (named `event.time`), before
    the event reaches its transaction."""
    try:
        event = convert.station_event(message)
    except InvalidArgument as error:
        return error.violations[0] if error.violations else FieldViolation("event", str(error))
    return apply.validate_event(event, allowed) or event


def _retrieve(task: asyncio.Task[None]) -> None:
    """Marks a finished stream task's exception as seen (it was already delivered to the response side)."""
    if not task.cancelled():
        task.exception()
