"""WatchVehicles' follower of the "vehicle_state" topic: one change carries a batch's vehicles (of any fleets);
each stream gets one update per vehicle its selection matches, and only those."""

from __future__ import annotations

import datetime as dt
import json

from voltcloud.fleet.api import Vehicle
from voltcloud.platform import feed
from voltcloud.telemetry import store
from voltcloud.telemetry.views import Selection
from voltcloud.telemetry.watch import VehicleWatch, Watcher

T = dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)


def state(vehicle_id: str, soc: int) -> store.State:
    return store.State(vehicle_id, T, T, version=1, soc_permille=soc, lat_microdeg=31_230_000, lng_microdeg=121_470_000)


def info(vehicle_id: str, fleet_id: str) -> store.VehicleInfo:
    vehicle = Vehicle(
        id=vehicle_id, fleet_id=fleet_id, vin="V" + vehicle_id, model="M", connector_mask=1,
        usable_capacity_wh=60_000, consumption_wh_per_km=150, max_dc_power_w=100_000,
    )  # fmt: skip
    return store.VehicleInfo(vehicle, None)


def change(payload: dict[str, object]) -> feed.Change:
    """As a follower reads it back: through the outbox's JSON."""
    return feed.Change(1, store.STATE_TOPIC, "k", json.loads(feed.encode(payload)), "elsewhere", T)


def updates(watcher: Watcher) -> list[tuple[str, int]]:
    out = []
    while not watcher.queue.empty():
        payload = watcher.queue.get_nowait().payload
        out.append((payload["vehicle_id"], payload["soc"]))
    return out


def test_a_shared_batch_reaches_each_fleet_alone_one_update_per_vehicle() -> None:
    watch = VehicleWatch()
    fleet_a, fleet_b, both = (
        watch.watch(Selection(fleet_id="fa")),
        watch.watch(Selection(fleet_id="fb")),
        watch.watch(Selection()),
    )
    rows = [
        store.state_row(state(v, soc), info(v, f))
        for v, f, soc in (("a1", "fa", 700), ("b1", "fb", 300), ("a2", "fa", 500))
    ]
    watch._on_states([change(store.states_change(rows))])
    assert updates(fleet_a) == [("a1", 700), ("a2", 500)]
    assert updates(fleet_b) == [("b1", 300)]
    assert updates(both) == [("a1", 700), ("b1", 300), ("a2", 500)]


def test_an_unpacked_state_is_the_vehicles_payload() -> None:
    s, i = state("a1", 700), info("a1", "fa")
    (unpacked,) = store.unpack_states(json.loads(feed.encode(store.states_change([store.state_row(s, i)]))))
    assert unpacked == json.loads(feed.encode(store.state_payload(s, i)))


def test_a_one_vehicle_payload_of_an_earlier_version_still_reaches_its_stream() -> None:
    watch = VehicleWatch()
    mine, theirs = watch.watch(Selection(fleet_id="fa")), watch.watch(Selection(fleet_id="fb"))
    watch._on_states([change(store.state_payload(state("a1", 640), info("a1", "fa")))])
    assert updates(mine) == [("a1", 640)] and updates(theirs) == []
