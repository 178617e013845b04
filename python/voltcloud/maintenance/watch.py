"""The control centre's live alarm streams (WatchAlarms) of this process.

The hub follows the change feed's "alarm" topic, so an alarm raised, acknowledged or cleared on any replica
reaches every stream here once committed. Per batch of changes it reads the alarms named once (not per stream)
and hands each stream the ones its scope and filters select."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voltcloud.maintenance import alarms
from voltcloud.maintenance.models import Alarm
from voltcloud.platform.db import Database
from voltcloud.platform.feed import Change, ChangeFeed

STREAM_QUEUE_MAX = 10_000  # a stream this far behind is ended (the client reconnects and gets a snapshot)


@dataclass(eq=False)
class Watcher:
    filter: alarms.AlarmFilter
    queue: asyncio.Queue[tuple[int, Alarm] | None] = field(default_factory=asyncio.Queue)

    def wants(self, alarm: Alarm) -> bool:
        f = self.filter
        return (
            (f.operator_id is None or alarm.operator_id == f.operator_id)
            and (not f.station_id or alarm.station_id == f.station_id)
            and alarm.level >= f.min_level
            and (not f.sources or alarm.source in f.sources)
        )


class AlarmHub:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._watchers: set[Watcher] = set()

    def follow(self, changes: ChangeFeed) -> None:
        changes.subscribe(alarms.ALARM_TOPIC, self._on_changes)

    def watch(self, f: alarms.AlarmFilter) -> Watcher:
        watcher = Watcher(f)
        self._watchers.add(watcher)
        return watcher

    def forget(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    async def _on_changes(self, batch: list[Change]) -> None:
        if not self._watchers:
            return
        async with self._db.transaction("maintenance.watch.read") as session:
            rows = {a.id: a for a in await alarms.alarms_by_id(session, sorted({c.key for c in batch}))}
        for change in batch:
            alarm = rows.get(change.key)
            if alarm is None:
                continue
            for watcher in list(self._watchers):
                if not watcher.wants(alarm):
                    continue
                if watcher.queue.qsize() >= STREAM_QUEUE_MAX:
                    watcher.queue.put_nowait(None)  # too far behind: end the stream
                    self._watchers.discard(watcher)
                    continue
                watcher.queue.put_nowait((int(change.payload.get("change", alarms.RAISED)), alarm))
