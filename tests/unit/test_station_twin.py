"""The in-memory station twin: revisions, resume windows, telemetry projection, liveness."""

from __future__ import annotations

import datetime as dt

from voltcloud.platform.clock import FrozenClock
from voltcloud.stations.twin import (
    HISTORY,
    METRIC_ENERGY_WH,
    METRIC_POWER_W,
    METRIC_SOC,
    ConnectorTwin,
    SlotTwin,
    TelemetrySource,
    Twin,
    TwinStore,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def store() -> tuple[TwinStore, Twin, FrozenClock]:
    clock = FrozenClock(T0)
    twins = TwinStore(clock, heartbeat_timeout=dt.timedelta(seconds=60))
    twin = twins.put(Twin("st-1", 2, connectors={"c1": ConnectorTwin("c1")}, slots={1: SlotTwin(1, "pk-1")}))
    return twins, twin, clock


def test_telemetry_takes_the_latest_value_and_one_revision_per_batch() -> None:
    twins, twin, _ = store()
    twins.session_started(twin, "c1", "ses-1", 1000, "")
    twin.commit(T0)
    sources = [TelemetrySource("st-1", "c1", ""), TelemetrySource("st-1", "", "pk-1"), TelemetrySource("x", "", "")]
    applied, touched = twins.apply_latest(
        sources,
        {
            (0, METRIC_ENERGY_WH): 1800,
            (0, METRIC_POWER_W): 7000,
            (1, METRIC_SOC): 640,
            (2, METRIC_SOC): 1,
            (9, METRIC_SOC): 5,
        },
    )
    assert applied == 3 and touched == [twin]
    before = twin.revision
    twin.commit(T0)
    assert twin.revision == before + 1
    assert twin.connectors["c1"].session_energy_wh == 800 and twin.slots[1].soc_permille == 640
    change = twin.changes_since(before)
    assert change is not None and change.connectors == {"c1"} and change.slots == {1}


def test_resume_window_and_snapshot_fallback() -> None:
    twins, twin, _ = store()
    for _ in range(HISTORY + 5):
        twins.connector_status(twin, "c1", 1, "")
        twin.commit(T0)
    assert twin.changes_since(twin.revision - 3) is not None
    assert twin.changes_since(1) is None  # fell out of the ring: the watcher gets a snapshot
    assert twin.changes_since(twin.revision) is not None


def test_offline_after_missed_heartbeats() -> None:
    twins, twin, clock = store()
    twins.set_connected(twin, "gw", True)
    assert twin.online
    clock.advance(dt.timedelta(seconds=59))
    twins.refresh_online(twin)
    assert twin.online
    clock.advance(dt.timedelta(seconds=2))
    revision = twin.revision
    twins.refresh_online(twin)
    assert not twin.online and twin.revision == revision + 1
    twins.mark_seen(twin, heartbeat=True)
    twin.commit(clock.now())
    assert twin.online and twin.last_heartbeat == clock.now()
    twins.set_connected(twin, "other-gw", False)  # a gateway that does not own the station changes nothing
    assert twin.online
    twins.set_connected(twin, "gw", False)
    assert not twin.online
