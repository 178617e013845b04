"""The hub shared by IngestService and StationService: live twins, connected gateways, command routing.

One hub per Database (per platform process), created on first use by `hub_for(db)`. Commands go down the
gateway's uplink stream and their results come back on it; a command whose gateway is not connected is
answered OFFLINE at once, one without an answer before its deadline TIMEOUT.

Across replicas (once `follow` has joined the change feed, platform/feed.py), every replica knows which one
holds each gateway's stream ("gateway_link" attach/detach changes, valid while their replica is alive:
"replica" hello/alive/stopping changes), so a command on any replica reaches the gateway: the caller publishes
a "station_command" naming the holding replica, which alone sends it down the stream (exactly once, however
often the change is delivered) and publishes the "station_command_result" that wakes the caller. Twin updates
("twin") keep every replica's cached twins current; see stations/twin.py.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.ingest import convert
from voltcloud.ingest.events import (
    CancelReservationCommand,
    Downlink,
    GatewayCommand,
    RemoteStartCommand,
    ReserveCommand,
)
from voltcloud.platform import feed
from voltcloud.platform.clock import Clock, SystemClock
from voltcloud.platform.db import Database
from voltcloud.platform.enums import CommandStatus
from voltcloud.platform.errors import Aborted, NotFound
from voltcloud.platform.ids import new_id
from voltcloud.stations.api import (
    CommandOutcome,
    CommandResult,
    Connector,
    ConnectorTwin,
    InventoryChange,
    LaneTwin,
    Pack,
    SessionListener,
    SlotTwin,
    Station,
    Twin,
    TwinStore,
)
from voltcloud.stations.api import twin as twin_ops
from voltcloud.telemetry.api import VehicleTelemetry

log = logging.getLogger(__name__)

Outbound = Downlink | BaseException | None
InventoryListener = Callable[[Sequence[InventoryChange]], None]

TOPIC_LINK = "gateway_link"
TOPIC_REPLICA = "replica"
TOPIC_COMMAND = "station_command"
TOPIC_RESULT = "station_command_result"


@dataclass(frozen=True)
class LinkHolder:
    """Which replica holds a gateway's stream, as every replica learns it from the feed."""

    gateway_id: str
    replica: str
    link_id: str
    stations: frozenset[str]


class _Recent:
    """A bounded memory of ids already handled (feed delivery is at least once)."""

    def __init__(self, size: int = 10_000) -> None:
        self._order: collections.deque[object] = collections.deque()
        self._ids: set[object] = set()
        self._size = size

    def add(self, value: object) -> bool:
        """False when `value` was seen before."""
        if value in self._ids:
            return False
        self._ids.add(value)
        self._order.append(value)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        return True


@dataclass
class GatewayLink:
    """One connected gateway stream."""

    gateway_id: str
    stations: frozenset[str]
    outbox: asyncio.Queue[Outbound]
    pending: dict[str, asyncio.Future[CommandResult]] = field(default_factory=dict)
    closed: bool = False
    link_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    announced: bool = False  # its attach change came back from the feed: later ones there are newer streams

    def close(self, reason: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.outbox.put_nowait(reason)
        for command_id, future in self.pending.items():
            if not future.done():
                future.set_result(CommandResult(command_id, CommandStatus.OFFLINE, "gateway disconnected"))
        self.pending.clear()


class Hub:
    def __init__(
        self, db: Database, clock: Clock | None = None, *, alive_every_s: float = 5.0, link_ttl_s: float = 15.0
    ) -> None:
        self.db = db
        # This hub's name on the feed: the process's origin plus a suffix, as one process may run several.
        self.replica = f"{feed.ORIGIN}/{uuid.uuid4().hex[:6]}"
        self.alive_every_s = alive_every_s
        self.link_ttl = dt.timedelta(seconds=link_ttl_s)
        self.following = False
        self.holders: dict[str, LinkHolder] = {}  # gateway id -> its stream's replica (every replica's view)
        self.station_holders: dict[str, LinkHolder] = {}
        self.replicas_seen: dict[str, dt.datetime] = {}  # replica -> time of its latest change
        self.remote_pending: dict[str, tuple[str, asyncio.Future[CommandResult]]] = {}  # command -> replica
        self.executed = _Recent()
        self.twin_changes = _Recent()
        self._telemetry: dict[str, tuple[set[str], set[int]]] = {}  # station -> resources not yet published
        self._alive_task: asyncio.Task[None] | None = None
        self._arriving: dict[str, list[twin_ops.TwinOp]] = {}  # twin ops from the feed for twins being loaded
        self.clock: Clock = clock or SystemClock()
        self.twins = TwinStore(self.clock)
        self.links: dict[str, GatewayLink] = {}
        self.station_links: dict[str, GatewayLink] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.session_listeners: list[SessionListener] = []
        self.inventory_listeners: list[InventoryListener] = []
        self.vehicles: VehicleTelemetry | None = None  # vehicle readings and alarms (wired by server.py)

    def on_session(self, listener: SessionListener) -> None:
        """Subscribes to sessions that start or end (called in the session's transaction; see apply.py)."""
        if listener not in self.session_listeners:
            self.session_listeners.append(listener)

    def on_inventory(self, listener: InventoryListener) -> None:
        """Subscribes to connector and pack changes written by station events (the engine), after commit."""
        if listener not in self.inventory_listeners:
            self.inventory_listeners.append(listener)

    def inventory_changed(self, changes: Sequence[InventoryChange]) -> None:
        """Tells the subscribers of committed changes. A subscriber is a cache that the periodic sync repairs,
        so its failure is logged, never raised into the uplink."""
        if not changes:
            return
        for listener in self.inventory_listeners:
            try:
                listener(changes)
            except Exception:
                log.exception("inventory listener failed")

    # ---- twins ----

    async def twin(self, station_id: str) -> Twin:
        twin = self.twins.get(station_id)
        if twin is not None:
            return twin
        lock = self._loading.setdefault(station_id, asyncio.Lock())
        async with lock:
            twin = self.twins.get(station_id)
            if twin is None:
                self._arriving[station_id] = []
                try:
                    twin = self.twins.put(await self._load(station_id))
                finally:
                    arrived = self._arriving.pop(station_id)
                for op in arrived:  # committed while the rows were read: replaying one already read is harmless
                    self.twins.apply(twin, op)
                twin.commit(self.clock.now())
                holder = self.station_holders.get(station_id)
                if holder is not None and station_id not in self.station_links and self._alive(holder):
                    self.twins.set_connected(twin, holder.gateway_id, True)  # its stream is on another replica
        return twin

    async def _load(self, station_id: str) -> Twin:
        async with self.db.transaction("twin.load") as session:
            station = await session.get(Station, station_id)
            if station is None:
                raise NotFound(f"station {station_id} not found")
            connectors = list(await session.exec(select(Connector).where(Connector.station_id == station_id)))
            packs = list(await session.exec(select(Pack).where(Pack.station_id == station_id)))
        twin = Twin(station_id=station_id, kind=station.kind)
        for c in connectors:
            twin.connectors[c.id] = ConnectorTwin(c.id, status=c.status)
        slots = max([station.slot_count, *(p.slot_no or 0 for p in packs)])
        for n in range(1, slots + 1):
            twin.slots[n] = SlotTwin(n)
        for p in packs:
            if p.slot_no:
                twin.slots[p.slot_no] = SlotTwin(
                    p.slot_no,
                    p.id,
                    p.pack_type_id,
                    p.soc_permille,
                    p.soh_permille,
                    p.temperature_milli_c,
                    p.state,
                )
        for n in range(1, station.lanes + 1):
            twin.lanes[n] = LaneTwin(n)
        twin.update_time = self.clock.now()
        return twin

    def forget(self, station_id: str) -> None:
        """Drops a cached twin so the next read reloads it (after a configuration change)."""
        twin = self.twins.twins.pop(station_id, None)
        if twin is not None:
            twin.changed.set()

    async def publish_twin(self, session: AsyncSession, station_id: str, ops: list[twin_ops.TwinOp]) -> None:
        """Announces twin ops in the caller's transaction (the events' or an operator's change)."""
        await feed.publish(session, twin_ops.TOPIC, station_id, {"ops": ops, "replica": self.replica})

    async def publish_reload(self, session: AsyncSession, station_id: str) -> None:
        """Makes every other replica drop its cached twin of the station (its configuration changed), in the
        caller's transaction; the caller forgets its own after the commit."""
        await feed.publish(session, twin_ops.TOPIC, station_id, {"reload": True, "replica": self.replica})

    def telemetry_changed(self, twin: Twin, connectors: Iterable[str], slots: Iterable[int]) -> None:
        """Telemetry is memory only here (no transaction per reading): its latest values are published for the
        other replicas at most every `alive_every_s / 5` seconds per hub, coalesced per station."""
        if not self.following:
            return
        pending = self._telemetry.get(twin.station_id)
        if pending is None:
            if not self._telemetry:
                self.spawn(self._publish_telemetry_later())
            pending = self._telemetry[twin.station_id] = (set(), set())
        pending[0].update(connectors)
        pending[1].update(slots)

    async def _publish_telemetry_later(self) -> None:
        await asyncio.sleep(self.alive_every_s / 5)
        pending, self._telemetry = self._telemetry, {}
        async with self.db.transaction("hub.telemetry") as session:
            for station_id, (connectors, slots) in pending.items():
                twin = self.twins.get(station_id)
                if twin is not None:
                    ops = [["seen", False], *twin_ops.values_ops(twin, sorted(connectors), sorted(slots))]
                    await self.publish_twin(session, station_id, ops)

    # ---- gateways ----

    def attach(self, link: GatewayLink) -> None:
        previous = self.links.get(link.gateway_id)
        if previous is not None:
            previous.close(Aborted(f"gateway {link.gateway_id} opened a newer uplink stream"))
        self.links[link.gateway_id] = link
        for station_id in link.stations:
            self.station_links[station_id] = link
            twin = self.twins.get(station_id)
            if twin is not None:
                self.twins.set_connected(twin, link.gateway_id, True)
        self._hold(LinkHolder(link.gateway_id, self.replica, link.link_id, link.stations))

    def detach(self, link: GatewayLink) -> None:
        link.close()
        if self.links.get(link.gateway_id) is link:
            del self.links[link.gateway_id]
            if self.following:
                self.spawn(self._announce([link], attached=False))
        for station_id in link.stations:
            if self.station_links.get(station_id) is link:
                del self.station_links[station_id]
                holder = self.station_holders.get(station_id)
                twin = self.twins.get(station_id)
                if twin is not None and (holder is None or holder.replica == self.replica):
                    self.twins.set_connected(twin, link.gateway_id, False)  # not reconnected elsewhere
        self._release(link.gateway_id, self.replica, link.link_id)

    async def announce(self, link: GatewayLink) -> None:
        """Tells every replica that this one now holds `link`'s gateway (call after `attach`)."""
        if self.following:
            await self._announce([link], attached=True)

    async def _announce(self, links: Iterable[GatewayLink], *, attached: bool) -> None:
        async with self.db.transaction("hub.gateway_link") as session:
            for link in links:
                payload = {
                    "gateway_id": link.gateway_id,
                    "replica": self.replica,
                    "link_id": link.link_id,
                    "stations": sorted(link.stations),
                    "attached": attached,
                }
                await feed.publish(session, TOPIC_LINK, link.gateway_id, payload)

    def _hold(self, holder: LinkHolder) -> None:
        old = self.holders.get(holder.gateway_id)
        if old is not None:
            for station_id in old.stations:
                if self.station_holders.get(station_id) is old:
                    del self.station_holders[station_id]
        self.holders[holder.gateway_id] = holder
        for station_id in holder.stations:
            self.station_holders[station_id] = holder

    def _release(self, gateway_id: str, replica: str, link_id: str) -> LinkHolder | None:
        holder = self.holders.get(gateway_id)
        if holder is None or holder.replica != replica or holder.link_id != link_id:
            return None  # a newer stream (here or elsewhere) holds the gateway now
        del self.holders[gateway_id]
        for station_id in holder.stations:
            if self.station_holders.get(station_id) is holder:
                del self.station_holders[station_id]
        return holder

    def _alive(self, holder: LinkHolder) -> bool:
        if holder.replica == self.replica:
            return holder.gateway_id in self.links
        seen = self.replicas_seen.get(holder.replica)
        return seen is not None and self.clock.now() - seen <= self.link_ttl

    # ---- commands ----

    async def send_command(
        self,
        station_id: str,
        command: object,
        answer_within: dt.timedelta,
        command_id: str | None = None,
    ) -> CommandResult:
        """Routes `command` (not read here; see events.GatewayCommand) to the station's gateway, on this
        replica's stream or through the feed to the replica holding it."""
        command_id = command_id or new_id("cmd")
        link = self.station_links.get(station_id)
        holder = self.station_holders.get(station_id)
        if link is not None and not link.closed and (holder is None or holder.replica == self.replica):
            return await self._send_local(link, station_id, command, answer_within, command_id)
        if holder is not None and holder.replica != self.replica and self._alive(holder):
            return await self._send_remote(holder, station_id, command, answer_within, command_id)
        detail = f"no gateway connected for station {station_id}"
        return CommandResult(command_id, CommandStatus.OFFLINE, detail, self.clock.now())

    async def _send_local(
        self, link: GatewayLink, station_id: str, command: object, answer_within: dt.timedelta, command_id: str
    ) -> CommandResult:
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        link.pending[command_id] = future
        deadline = self.clock.now() + answer_within
        link.outbox.put_nowait(GatewayCommand(command_id, station_id, command, deadline))
        try:
            return await asyncio.wait_for(asyncio.shield(future), answer_within.total_seconds())
        except TimeoutError:
            return self._timeout(command_id, answer_within)
        finally:
            link.pending.pop(command_id, None)

    async def _send_remote(
        self, holder: LinkHolder, station_id: str, command: object, answer_within: dt.timedelta, command_id: str
    ) -> CommandResult:
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self.remote_pending[command_id] = (holder.replica, future)
        payload = {
            "command_id": command_id,
            "station_id": station_id,
            "gateway_id": holder.gateway_id,
            "target": holder.replica,
            "caller": self.replica,
            "command": base64.b64encode(convert.command_bytes(command)).decode(),
            "deadline": self.clock.now() + answer_within,
        }
        try:
            async with self.db.transaction("hub.command") as session:
                await feed.publish(session, TOPIC_COMMAND, station_id, payload)
            return await asyncio.wait_for(asyncio.shield(future), answer_within.total_seconds())
        except TimeoutError:
            return self._timeout(command_id, answer_within)
        finally:
            self.remote_pending.pop(command_id, None)

    def _timeout(self, command_id: str, answer_within: dt.timedelta) -> CommandResult:
        detail = f"no answer within {answer_within.total_seconds():g}s"
        return CommandResult(command_id, CommandStatus.TIMEOUT, detail, self.clock.now())

    async def _execute(self, payload: dict[str, Any]) -> None:
        """Sends a command another replica published down this replica's stream, and publishes its result."""
        command_id, station_id = str(payload["command_id"]), str(payload["station_id"])
        remaining = dt.datetime.fromisoformat(payload["deadline"]) - self.clock.now()
        link = self.station_links.get(station_id)
        if link is None or link.closed:
            detail = f"no gateway connected for station {station_id}"
            result = CommandResult(command_id, CommandStatus.OFFLINE, detail, self.clock.now())
        elif remaining <= dt.timedelta(0):
            result = self._timeout(command_id, dt.timedelta(0))
        else:
            command = convert.command_from_bytes(base64.b64decode(payload["command"]))
            result = await self._send_local(link, station_id, command, remaining, command_id)
        answer = {
            "command_id": command_id,
            "caller": payload["caller"],
            "status": int(result.status),
            "detail": result.detail,
            "result_time": result.result_time,
        }
        async with self.db.transaction("hub.command_result") as session:
            await feed.publish(session, TOPIC_RESULT, command_id, answer)

    async def remote_start(
        self, station_id: str, connector_id: str, order_id: str, id_tag: str, answer_within: dt.timedelta
    ) -> CommandOutcome:
        """`stations.commands.StationCommands`: a RemoteStart down the station's gateway stream."""
        command = RemoteStartCommand(connector_id=connector_id, order_id=order_id, id_tag=id_tag)
        return _outcome(await self.send_command(station_id, command, answer_within))

    async def reserve_swap(
        self, station_id: str, lane: int, pack_id: str, reservation_id: str, answer_within: dt.timedelta
    ) -> CommandOutcome:
        """`stations.commands.StationCommands`: a ReserveCommand (this pack on this lane) down the station's
        gateway stream; an accepted one marks the lane reserved in the twin (every replica's)."""
        command = ReserveCommand(reservation_id=reservation_id, lane=lane, pack_id=pack_id)
        outcome = _outcome(await self.send_command(station_id, command, answer_within))
        if outcome.accepted:
            await self._lane_reserved(station_id, lane, reservation_id)
        return outcome

    async def cancel_swap(self, station_id: str, lane: int, reservation_id: str, answer_within: dt.timedelta) -> None:
        """`stations.commands.StationCommands`: voids a ReserveCommand's reservation at the station (best effort:
        the platform has already released the pack) and frees the lane in the twin."""
        await self._lane_reserved(station_id, lane, "")
        result = await self.send_command(station_id, CancelReservationCommand(reservation_id), answer_within)
        if result.status != CommandStatus.ACCEPTED:
            log.warning("station %s did not cancel reservation %s: %s", station_id, reservation_id, result.detail)

    async def _lane_reserved(self, station_id: str, lane: int, reservation_id: str) -> None:
        op: twin_ops.TwinOp = ["lane_reserved", lane, reservation_id]
        twin = await self.twin(station_id)
        async with self.db.transaction("hub.lane") as session:
            await self.publish_twin(session, station_id, [op])
        self.twins.apply(twin, op)
        twin.commit(self.clock.now())

    def deliver_result(self, link: GatewayLink, result: CommandResult) -> bool:
        future = link.pending.get(result.command_id)
        if future is None or future.done():
            return False  # late (after the timeout) or unknown: ignored
        if result.result_time is None:
            result = dataclasses.replace(result, result_time=self.clock.now())
        future.set_result(result)
        return True

    # ---- the feed ----

    async def follow(self, change_feed: feed.ChangeFeed) -> None:
        """Joins the replicas: subscribes to their changes and says hello (they answer with their links).
        Call after `change_feed.start()`."""
        change_feed.subscribe(twin_ops.TOPIC, self._on_twin)
        change_feed.subscribe(TOPIC_LINK, self._on_link)
        change_feed.subscribe(TOPIC_REPLICA, self._on_replica)
        change_feed.subscribe(TOPIC_COMMAND, self._on_command)
        change_feed.subscribe(TOPIC_RESULT, self._on_result)
        self.following = True
        await self._say("hello")
        self._alive_task = asyncio.create_task(self._keep_alive(), name="hub.alive")

    async def stop(self) -> None:
        """Leaves the replicas: the others forget this one's links at once instead of after `link_ttl`."""
        if self._alive_task is not None:
            self._alive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._alive_task
            self._alive_task = None
        if self.following:
            self.following = False
            with contextlib.suppress(Exception):  # a database that is away must not hold up the shutdown
                await asyncio.wait_for(self._say("stopping"), 2.0)
        for task in list(self.background):
            task.cancel()

    async def _say(self, event: str) -> None:
        async with self.db.transaction("hub.replica") as session:
            await feed.publish(session, TOPIC_REPLICA, self.replica, {"replica": self.replica, "event": event})

    async def _keep_alive(self) -> None:
        """While this replica holds streams, the others must hear from it within `link_ttl` (a dead replica's
        links then expire); one that holds none stays silent."""
        while True:
            await asyncio.sleep(self.alive_every_s)
            if self.links:
                try:
                    await self._say("alive")
                except Exception as error:  # the database is away: the next beat tries again
                    log.warning("hub: alive beat failed: %s", error)

    def _seen(self, replica: str, change: feed.Change) -> None:
        if replica != self.replica and change.at > self.replicas_seen.get(replica, change.at - self.link_ttl):
            self.replicas_seen[replica] = change.at

    def _on_replica(self, changes: list[feed.Change]) -> None:
        for change in changes:
            replica, event = str(change.payload["replica"]), change.payload["event"]
            if replica == self.replica:
                continue
            self._seen(replica, change)
            held = [link for link in self.links.values() if self._holds(link)]
            if event == "hello" and held:
                self.spawn(self._announce(held, attached=True))
            elif event == "stopping":
                self._forget_replica(replica)

    def _forget_replica(self, replica: str) -> None:
        self.replicas_seen.pop(replica, None)
        for holder in [h for h in self.holders.values() if h.replica == replica]:
            self._remote_link(holder, attached=False)
        for command_id, (target, future) in list(self.remote_pending.items()):
            if target == replica and not future.done():
                detail = "the replica holding the gateway stopped"
                future.set_result(CommandResult(command_id, CommandStatus.OFFLINE, detail, self.clock.now()))

    def _holds(self, link: GatewayLink) -> bool:
        holder = self.holders.get(link.gateway_id)
        return holder is not None and holder.replica == self.replica and holder.link_id == link.link_id

    def _on_link(self, changes: list[feed.Change]) -> None:
        """Every replica applies the attach/detach changes in feed order, its own included, so all agree on
        which stream of a gateway is the newest."""
        for change in changes:
            p = change.payload
            holder = LinkHolder(str(p["gateway_id"]), str(p["replica"]), str(p["link_id"]), frozenset(p["stations"]))
            if holder.replica == self.replica:
                self._own_link(holder, attached=bool(p["attached"]))
                continue
            self._seen(holder.replica, change)
            self._remote_link(holder, attached=bool(p["attached"]))

    def _own_link(self, holder: LinkHolder, *, attached: bool) -> None:
        link = self.links.get(holder.gateway_id)
        if not attached or link is None or link.link_id != holder.link_id:
            return  # detached here already, or superseded by a newer stream on this replica
        link.announced = True
        self._hold(holder)  # again: another replica's attach that came earlier in the feed arrived after ours

    def _remote_link(self, holder: LinkHolder, *, attached: bool) -> None:
        if attached:
            local = self.links.get(holder.gateway_id)
            if local is not None and local.announced:  # the gateway opened a newer stream on another replica
                local.close(Aborted(f"gateway {holder.gateway_id} opened a newer uplink stream on another replica"))
            self._hold(holder)
        elif self._release(holder.gateway_id, holder.replica, holder.link_id) is None:
            return
        for station_id in holder.stations:
            twin = self.twins.get(station_id)
            if twin is not None and station_id not in self.station_links:
                self.twins.set_connected(twin, holder.gateway_id, attached)

    def _on_command(self, changes: list[feed.Change]) -> None:
        for change in changes:
            if change.payload.get("target") == self.replica and self.executed.add(change.payload["command_id"]):
                self.spawn(self._execute(change.payload))

    def _on_result(self, changes: list[feed.Change]) -> None:
        for change in changes:
            p = change.payload
            pending = self.remote_pending.get(str(p["command_id"]))
            if p.get("caller") != self.replica or pending is None or pending[1].done():
                continue
            when = dt.datetime.fromisoformat(p["result_time"]) if p.get("result_time") else self.clock.now()
            pending[1].set_result(CommandResult(str(p["command_id"]), int(p["status"]), str(p["detail"]), when))

    def _on_twin(self, changes: list[feed.Change]) -> None:
        touched: dict[str, Twin] = {}
        for change in changes:
            if change.payload.get("replica") == self.replica or not self.twin_changes.add(change.id):
                continue  # this replica applied its own after the commit
            if change.payload.get("reload"):
                self.forget(change.key)
                continue
            twin = self.twins.get(change.key)
            if twin is None:
                if change.key in self._arriving:
                    self._arriving[change.key].extend(change.payload.get("ops", ()))
                continue  # not cached here: loaded from the tables when first needed
            for op in change.payload.get("ops", ()):
                try:
                    self.twins.apply(twin, op)
                except Exception:
                    log.exception("twin op %r from the feed failed", op)
            touched[twin.station_id] = twin
        now = self.clock.now()
        for twin in touched.values():
            twin.commit(now)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Runs a side effect (a command sent on the platform's own initiative) without blocking the uplink."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub side effect failed", exc_info=task.exception())


_HUBS: weakref.WeakKeyDictionary[Database, Hub] = weakref.WeakKeyDictionary()


def hub_for(db: Database) -> Hub:
    hub = _HUBS.get(db)
    if hub is None:
        hub = _HUBS[db] = Hub(db)
    return hub


def _outcome(result: CommandResult) -> CommandOutcome:
    known = result.status in CommandStatus._value2member_map_  # a gateway may answer 0 (unspecified)
    name = CommandStatus(result.status).name.lower() if known else "unspecified"
    return CommandOutcome(result.status == CommandStatus.ACCEPTED, name, result.detail)
