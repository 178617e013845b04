"""The hub shared by IngestService and StationService: live twins, connected gateways, command routing.

One hub per Database (per platform process), created on first use by `hub_for(db)`. Commands go down the
gateway's uplink stream and their results come back on it; a command whose gateway is not connected is
answered OFFLINE at once, one without an answer before its deadline TIMEOUT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from voltcloud.ingest.events import Downlink, GatewayCommand, RemoteStartCommand
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

log = logging.getLogger(__name__)

Outbound = Downlink | BaseException | None
InventoryListener = Callable[[Sequence[InventoryChange]], None]


@dataclass
class GatewayLink:
    """One connected gateway stream."""

    gateway_id: str
    stations: frozenset[str]
    outbox: asyncio.Queue[Outbound]
    pending: dict[str, asyncio.Future[CommandResult]] = field(default_factory=dict)
    closed: bool = False

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
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.twins = TwinStore(self.clock)
        self.links: dict[str, GatewayLink] = {}
        self.station_links: dict[str, GatewayLink] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.session_listeners: list[SessionListener] = []
        self.inventory_listeners: list[InventoryListener] = []

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
                twin = self.twins.put(await self._load(station_id))
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

    def detach(self, link: GatewayLink) -> None:
        link.close()
        if self.links.get(link.gateway_id) is link:
            del self.links[link.gateway_id]
        for station_id in link.stations:
            if self.station_links.get(station_id) is link:
                del self.station_links[station_id]
                twin = self.twins.get(station_id)
                if twin is not None:
                    self.twins.set_connected(twin, link.gateway_id, False)

    async def send_command(
        self,
        station_id: str,
        command: object,
        answer_within: dt.timedelta,
        command_id: str | None = None,
    ) -> CommandResult:
        """Routes `command` (not read here; see events.GatewayCommand) to the station's gateway."""
        command_id = command_id or new_id("cmd")
        link = self.station_links.get(station_id)
        if link is None or link.closed:
            detail = f"no gateway connected for station {station_id}"
            return CommandResult(command_id, CommandStatus.OFFLINE, detail, self.clock.now())
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        link.pending[command_id] = future
        deadline = self.clock.now() + answer_within
        link.outbox.put_nowait(GatewayCommand(command_id, station_id, command, deadline))
        try:
            return await asyncio.wait_for(asyncio.shield(future), answer_within.total_seconds())
        except TimeoutError:
            detail = f"no answer within {answer_within.total_seconds():g}s"
            return CommandResult(command_id, CommandStatus.TIMEOUT, detail, self.clock.now())
        finally:
            link.pending.pop(command_id, None)

    async def remote_start(
        self, station_id: str, connector_id: str, order_id: str, id_tag: str, answer_within: dt.timedelta
    ) -> CommandOutcome:
        """`stations.commands.StationCommands`: a RemoteStart down the station's gateway stream."""
        command = RemoteStartCommand(connector_id=connector_id, order_id=order_id, id_tag=id_tag)
        result = await self.send_command(station_id, command, answer_within)
        known = result.status in CommandStatus._value2member_map_  # a gateway may answer 0 (unspecified)
        name = CommandStatus(result.status).name.lower() if known else "unspecified"
        return CommandOutcome(result.status == CommandStatus.ACCEPTED, name, result.detail)

    def deliver_result(self, link: GatewayLink, result: CommandResult) -> bool:
        future = link.pending.get(result.command_id)
        if future is None or future.done():
            return False  # late (after the timeout) or unknown: ignored
        if result.result_time is None:
            result = dataclasses.replace(result, result_time=self.clock.now())
        future.set_result(result)
        return True

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
