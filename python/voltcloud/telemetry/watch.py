"""This process's WatchVehicles streams, fed by the change feed's "vehicle_state" and "vehicle_alert" topics
(every replica's commits, this one's included): no table is polled. A state change carries a whole batch's
vehicles, unpacked here into one update per vehicle. Each stream has a bounded queue; a stream too slow to
drain it loses the oldest updates (the map shows the newest state; the next update of a vehicle carries its
whole state)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voltcloud.platform.feed import Change, ChangeFeed
from voltcloud.telemetry.alerts import ALERT_TOPIC
from voltcloud.telemetry.store import STATE_TOPIC, unpack_states
from voltcloud.telemetry.views import Selection

log = logging.getLogger(__name__)

QUEUE_MAX = 4096


@dataclass(frozen=True)
class Update:
    kind: str  # "state" or "alert"
    payload: dict[str, Any]


@dataclass(eq=False)
class Watcher:
    selection: Selection
    queue: asyncio.Queue[Update] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: int = 0

    def offer(self, update: Update) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(update)


class VehicleWatch:
    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()

    def follow(self, changes: ChangeFeed) -> None:
        changes.subscribe(STATE_TOPIC, self._on_states)
        changes.subscribe(ALERT_TOPIC, self._on_alerts)

    def watch(self, selection: Selection) -> Watcher:
        """Registers a stream before its snapshot is read, so nothing committed in between is missed (an update
        both in the snapshot and queued is sent twice; its version tells)."""
        watcher = Watcher(selection)
        self._watchers.add(watcher)
        return watcher

    def forget(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    @property
    def count(self) -> int:
        return len(self._watchers)

    def _on_states(self, changes: Sequence[Change]) -> None:
        """A change carries a batch's vehicles (of any tenants): each vehicle's state goes only to the streams
        whose selection it matches, as its own update."""
        if not self._watchers:
            return
        for change in changes:
            for payload in unpack_states(change.payload):
                for watcher in self._watchers:
                    if watcher.selection.matches(payload):
                        watcher.offer(Update("state", payload))

    def _on_alerts(self, changes: Sequence[Change]) -> None:
        for change in changes:
            for watcher in self._watchers:
                if watcher.selection.matches_alert(change.payload):
                    watcher.offer(Update("alert", change.payload))
