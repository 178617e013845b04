"""The live digital twin of each station: an in-memory projection of gateway events and telemetry.

Telemetry is applied here only (the fast path: no database write per reading). Each change bumps the twin's
revision and wakes its watchers; a short ring of recent revisions lets a watcher resume after a reconnect.
Pure Python, no I/O: the ingest layer loads rows and feeds events; the service layer renders messages.

Metric numbers are those of `voltcloud.v1.Metric`; statuses those of `ConnectorStatus` / `PackState`.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from voltcloud.platform.clock import Clock
from voltcloud.platform.enums import ConnectorStatus, Metric
from voltcloud.stations.inventory import PACK_READY

# The voltcloud.v1.Metric numbers the twin projects.
METRIC_SOC = int(Metric.SOC_PERMILLE)
METRIC_SOH = int(Metric.SOH_PERMILLE)
METRIC_TEMPERATURE = int(Metric.TEMPERATURE_MILLI_C)
METRIC_POWER_W = int(Metric.POWER_W)
METRIC_ENERGY_WH = int(Metric.ENERGY_WH)
METRIC_SITE_POWER_W = int(Metric.SITE_POWER_W)

CONNECTOR_STATUS_OFFLINE = int(ConnectorStatus.OFFLINE)

HISTORY = 256  # revisions kept for resume

# The change feed's topic of twin updates (platform/feed.py): payload {"ops": [op, ...], "replica": writer} or
# {"reload": true}. An op is a list [name, *arguments] naming a TwinStore method below (`TwinStore.apply`), so
# every replica replays on its cached twin what the writer's replica applied to its own.
TOPIC = "twin"
TwinOp = list[object]


@dataclass
class ConnectorTwin:
    connector_id: str
    status: int = 0
    session_id: str = ""
    reservation_id: str = ""
    power_w: int = 0
    meter_wh: int = 0
    meter_start_wh: int = 0
    session_energy_wh: int = 0
    error_code: str = ""
    status_time: dt.datetime | None = None


@dataclass
class SlotTwin:
    slot: int
    pack_id: str = ""
    pack_type_id: int = 0
    soc_permille: int = 0
    soh_permille: int = 0
    temperature_milli_c: int = 0
    pack_state: int = 0
    power_w: int = 0


@dataclass
class LaneTwin:
    lane: int
    busy: bool = False
    session_id: str = ""
    vehicle_id: str = ""
    reservation_id: str = ""


@dataclass(frozen=True)
class Change:
    revision: int
    connectors: frozenset[str]
    slots: frozenset[int]


@dataclass
class Twin:
    station_id: str
    kind: int
    connectors: dict[str, ConnectorTwin] = field(default_factory=dict)
    slots: dict[int, SlotTwin] = field(default_factory=dict)
    lanes: dict[int, LaneTwin] = field(default_factory=dict)
    site_power_w: int = 0
    queue_length: int = 0
    gateway_id: str = ""
    connected: bool = False
    last_seen: dt.datetime | None = None
    last_heartbeat: dt.datetime | None = None
    online: bool = False
    revision: int = 0
    update_time: dt.datetime | None = None
    history: collections.deque[Change] = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Pending change marks, folded into one revision by `commit`.
    _dirty: bool = False
    _dirty_connectors: set[str] = field(default_factory=set)
    _dirty_slots: set[int] = field(default_factory=set)

    def slot_of_pack(self, pack_id: str) -> SlotTwin | None:
        for slot in self.slots.values():
            if slot.pack_id == pack_id:
                return slot
        return None

    def ready_packs_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for slot in self.slots.values():
            if slot.pack_id and slot.pack_state == PACK_READY:
                key = str(slot.pack_type_id)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def touch(self, connectors: Iterable[str] = (), slots: Iterable[int] = ()) -> None:
        self._dirty = True
        self._dirty_connectors.update(connectors)
        self._dirty_slots.update(slots)

    def commit(self, now: dt.datetime) -> bool:
        """Folds pending changes into one new revision and wakes the watchers; False when nothing changed."""
        if not self._dirty:
            return False
        self.revision += 1
        self.update_time = now
        self.history.append(Change(self.revision, frozenset(self._dirty_connectors), frozenset(self._dirty_slots)))
        self._dirty = False
        self._dirty_connectors.clear()
        self._dirty_slots.clear()
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()
        return True

    def changes_since(self, revision: int) -> Change | None:
        """The union of the changes after `revision`, or None when the ring no longer reaches back that far."""
        if revision >= self.revision:
            return Change(self.revision, frozenset(), frozenset())
        if not self.history or self.history[0].revision > revision + 1:
            return None
        connectors: set[str] = set()
        slots: set[int] = set()
        for change in self.history:
            if change.revision > revision:
                connectors |= change.connectors
                slots |= change.slots
        return Change(self.revision, frozenset(connectors), frozenset(slots))


@dataclass(frozen=True)
class TelemetrySource:
    station_id: str
    resource_id: str
    pack_id: str


class TwinStore:
    """Every loaded twin, keyed by station id. Offline detection: a station is online while its gateway is
    connected and it was heard from (hello, heartbeat, event, telemetry) within `heartbeat_timeout`."""

    def __init__(self, clock: Clock, heartbeat_timeout: dt.timedelta = dt.timedelta(seconds=90)) -> None:
        self.clock = clock
        self.heartbeat_timeout = heartbeat_timeout
        self.twins: dict[str, Twin] = {}

    def get(self, station_id: str) -> Twin | None:
        return self.twins.get(station_id)

    def put(self, twin: Twin) -> Twin:
        """Installs a freshly loaded twin unless another task loaded it first."""
        return self.twins.setdefault(twin.station_id, twin)

    # ---- liveness ----

    def refresh_online(self, twin: Twin) -> None:
        now = self.clock.now()
        online = twin.connected and twin.last_seen is not None and now - twin.last_seen <= self.heartbeat_timeout
        if online != twin.online:
            twin.online = online
            twin.touch()
            twin.commit(now)

    def seconds_until_stale(self, twin: Twin) -> float | None:
        if not twin.online or twin.last_seen is None:
            return None
        remaining = (twin.last_seen + self.heartbeat_timeout - self.clock.now()).total_seconds()
        return max(remaining, 0.0) + 0.01

    def mark_seen(self, twin: Twin, *, heartbeat: bool = False) -> None:
        now = self.clock.now()
        twin.last_seen = now
        if heartbeat:
            twin.last_heartbeat = now
            twin.touch()
        if not twin.online and twin.connected:
            twin.online = True
            twin.touch()

    def set_connected(self, twin: Twin, gateway_id: str, connected: bool) -> None:
        if connected:
            twin.gateway_id = gateway_id
        elif twin.gateway_id != gateway_id:
            return  # another gateway took the station over
        twin.connected = connected
        if connected:
            self.mark_seen(twin)
        else:
            twin.online = False
            twin.touch()
        twin.commit(self.clock.now())

    # ---- events ----

    def connector_status(self, twin: Twin, connector_id: str, status: int, error_code: str) -> None:
        c = twin.connectors.setdefault(connector_id, ConnectorTwin(connector_id))
        c.status, c.error_code, c.status_time = status, error_code, self.clock.now()
        twin.touch(connectors=[connector_id])

    def session_started(
        self, twin: Twin, connector_id: str, session_id: str, meter_start_wh: int, reservation_id: str
    ) -> None:
        c = twin.connectors.setdefault(connector_id, ConnectorTwin(connector_id))
        c.session_id, c.meter_start_wh, c.meter_wh, c.session_energy_wh = session_id, meter_start_wh, meter_start_wh, 0
        if reservation_id and c.reservation_id == reservation_id:
            c.reservation_id = ""
        twin.touch(connectors=[connector_id])

    def session_stopped(self, twin: Twin, connector_id: str, session_id: str) -> None:
        c = twin.connectors.get(connector_id)
        if c is not None and c.session_id in (session_id, ""):
            c.session_id, c.power_w, c.session_energy_wh = "", 0, 0
            twin.touch(connectors=[connector_id])

    def session_energy(self, twin: Twin, connector_id: str) -> int:
        c = twin.connectors.get(connector_id)
        return c.session_energy_wh if c is not None else 0

    def reservation(self, twin: Twin, connector_id: str, reservation_id: str) -> None:
        c = twin.connectors.setdefault(connector_id, ConnectorTwin(connector_id))
        c.reservation_id = reservation_id
        twin.touch(connectors=[connector_id])

    def lane(self, twin: Twin, lane: int, *, busy: bool, session_id: str = "", vehicle_id: str = "") -> None:
        state = twin.lanes.setdefault(lane, LaneTwin(lane))
        state.busy, state.session_id, state.vehicle_id = busy, session_id, vehicle_id
        if not busy:
            state.reservation_id = ""
        twin.touch()

    def lane_reserved(self, twin: Twin, lane: int, reservation_id: str) -> None:
        twin.lanes.setdefault(lane, LaneTwin(lane)).reservation_id = reservation_id
        twin.touch()

    def place_pack(
        self,
        twin: Twin,
        slot_no: int,
        pack_id: str,
        *,
        pack_type_id: int,
        state: int,
        soc_permille: int,
        soh_permille: int,
        temperature_milli_c: int,
    ) -> None:
        old = twin.slot_of_pack(pack_id)
        if old is not None and old.slot != slot_no:
            twin.slots[old.slot] = SlotTwin(old.slot)
            twin.touch(slots=[old.slot])
        twin.slots[slot_no] = SlotTwin(
            slot_no, pack_id, pack_type_id, soc_permille, soh_permille, temperature_milli_c, state, 0
        )
        twin.touch(slots=[slot_no])

    def remove_pack(self, twin: Twin, pack_id: str) -> None:
        slot = twin.slot_of_pack(pack_id)
        if slot is not None:
            twin.slots[slot.slot] = SlotTwin(slot.slot)
            twin.touch(slots=[slot.slot])

    def pack_state(self, twin: Twin, pack_id: str, state: int) -> None:
        slot = twin.slot_of_pack(pack_id)
        if slot is not None and slot.pack_state != state:
            slot.pack_state = state
            twin.touch(slots=[slot.slot])

    # ---- replicated updates ----

    def apply(self, twin: Twin, op: TwinOp) -> None:
        """Replays one op of a "twin" change (see TOPIC). Unknown ops are skipped: a newer replica may send
        ops an older one does not know, which then shows its twin slightly behind rather than failing."""
        name, args = op[0], op[1:]
        method = _OPS.get(str(name))
        if method is not None:
            method(self, twin, *args)

    def seen(self, twin: Twin, heartbeat: bool) -> None:
        self.mark_seen(twin, heartbeat=heartbeat)

    def connector_values(self, twin: Twin, connector_id: str, power_w: int, meter_wh: int, energy_wh: int) -> None:
        c = twin.connectors.get(connector_id)
        if c is not None:
            c.power_w, c.meter_wh, c.session_energy_wh = power_w, meter_wh, energy_wh
            twin.touch(connectors=[connector_id])

    def slot_values(self, twin: Twin, slot_no: int, soc: int, soh: int, temperature: int, power_w: int) -> None:
        slot = twin.slots.get(slot_no)
        if slot is not None:
            slot.soc_permille, slot.soh_permille, slot.temperature_milli_c, slot.power_w = (
                soc,
                soh,
                temperature,
                power_w,
            )
            twin.touch(slots=[slot_no])

    def site_power(self, twin: Twin, power_w: int) -> None:
        twin.site_power_w = power_w
        twin.touch()

    # ---- telemetry (fast path) ----

    def apply_latest(
        self, sources: list[TelemetrySource], latest: Mapping[tuple[int, int], int]
    ) -> tuple[int, list[Twin]]:
        """Applies the latest value per (source index, metric). Returns the number of values applied and the
        twins touched (the caller commits them). Unknown stations/resources are skipped."""
        applied = 0
        touched: dict[str, Twin] = {}
        resolved: dict[int, tuple[Twin, ConnectorTwin | SlotTwin | None] | None] = {}
        for (index, metric), value in latest.items():
            target = resolved.get(index, ...)
            if target is ...:
                target = resolved[index] = self._resolve(sources[index]) if index < len(sources) else None
            if target is None:
                continue
            twin, resource = target
            if self._apply(twin, resource, metric, value):
                applied += 1
                touched[twin.station_id] = twin
        return applied, list(touched.values())

    def _resolve(self, source: TelemetrySource) -> tuple[Twin, ConnectorTwin | SlotTwin | None] | None:
        twin = self.twins.get(source.station_id)
        if twin is None:
            return None
        if source.pack_id:
            return twin, twin.slot_of_pack(source.pack_id)
        rid = source.resource_id
        if not rid:
            return twin, None
        if rid.startswith("slot:"):
            try:
                return twin, twin.slots.get(int(rid[5:]))
            except ValueError:
                return None
        return twin, twin.connectors.get(rid)

    @staticmethod
    def _apply(twin: Twin, resource: ConnectorTwin | SlotTwin | None, metric: int, value: int) -> bool:
        if resource is None:
            if metric in (METRIC_SITE_POWER_W, METRIC_POWER_W):
                twin.site_power_w = value
                twin.touch()
                return True
            return False
        if isinstance(resource, ConnectorTwin):
            if metric == METRIC_POWER_W:
                resource.power_w = value
            elif metric == METRIC_ENERGY_WH:
                resource.meter_wh = value
                if resource.session_id:
                    resource.session_energy_wh = max(value - resource.meter_start_wh, 0)
            else:
                return False
            twin.touch(connectors=[resource.connector_id])
            return True
        if metric == METRIC_SOC:
            resource.soc_permille = value
        elif metric == METRIC_SOH:
            resource.soh_permille = value
        elif metric == METRIC_TEMPERATURE:
            resource.temperature_milli_c = value
        elif metric == METRIC_POWER_W:
            resource.power_w = value
        else:
            return False
        twin.touch(slots=[resource.slot])
        return True


def lane_op(lane: int, busy: bool, session_id: str = "", vehicle_id: str = "") -> TwinOp:
    return ["lane", lane, busy, session_id, vehicle_id]


def place_pack_op(slot_no: int, pack_id: str, type_id: int, state: int, soc: int, soh: int, temp: int) -> TwinOp:
    return ["place_pack", slot_no, pack_id, type_id, state, soc, soh, temp]


def values_ops(twin: Twin, connectors: Iterable[str], slots: Iterable[int]) -> list[TwinOp]:
    """The current telemetry values of the given resources, as ops (a follower's twin takes them as they are)."""
    ops: list[TwinOp] = [["site_power", twin.site_power_w]]
    for connector_id in connectors:
        c = twin.connectors.get(connector_id)
        if c is not None:
            ops.append(["connector_values", connector_id, c.power_w, c.meter_wh, c.session_energy_wh])
    for slot_no in slots:
        s = twin.slots.get(slot_no)
        if s is not None:
            ops.append(["slot_values", slot_no, s.soc_permille, s.soh_permille, s.temperature_milli_c, s.power_w])
    return ops


def _lane(store: TwinStore, twin: Twin, lane: int, busy: bool, session_id: str, vehicle_id: str) -> None:
    store.lane(twin, lane, busy=busy, session_id=session_id, vehicle_id=vehicle_id)


def _place_pack(
    store: TwinStore, twin: Twin, slot_no: int, pack_id: str, type_id: int, state: int, soc: int, soh: int, temp: int
) -> None:
    store.place_pack(
        twin, slot_no, pack_id, pack_type_id=type_id, state=state, soc_permille=soc, soh_permille=soh,
        temperature_milli_c=temp,
    )  # fmt: skip


_OPS: dict[str, Callable[..., None]] = {
    "seen": TwinStore.seen,
    "connector_status": TwinStore.connector_status,
    "session_started": TwinStore.session_started,
    "session_stopped": TwinStore.session_stopped,
    "reservation": TwinStore.reservation,
    "lane": _lane,
    "lane_reserved": TwinStore.lane_reserved,
    "place_pack": _place_pack,
    "remove_pack": TwinStore.remove_pack,
    "pack_state": TwinStore.pack_state,
    "connector_values": TwinStore.connector_values,
    "slot_values": TwinStore.slot_values,
    "site_power": TwinStore.site_power,
}
