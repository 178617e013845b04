"""Issue 9, finding 1 over real gRPC: one bad row must never take the platform down.

Values the engine cannot take are refused at the API with the engine's own limits (`_core.LIMITS`), naming the
field; and a bad row that is in the database anyway (written before the checks, or behind the API's back) is
quarantined: the platform starts, syncs and quotes for the rest, and raises one alarm for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlmodel import col, select

from tests.stationkit import CHARGING_STATION, OPERATOR, SWAP_STATION
from voltcloud import _core
from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc, stations_pb2, stations_pb2_grpc
from voltcloud.fleet.models import Driver, Vehicle
from voltcloud.maintenance.models import Alarm
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.stations.models import Pack, PackType, Station

from .conftest import channel_to, serving

OP = Tenant("operator", OPERATOR)
INT32_MAX = 2**31 - 1
# The engine's own limits, read from the engine (not from the platform code under test), and the alarm code.
LIMITS = SimpleNamespace(**_core.LIMITS)
QUARANTINE_ALARM_CODE = "ENGINE_ROW_QUARANTINED"
POWER = common_pb2.CONNECTOR_STANDARD_GBT_DC


@pytest.fixture
async def platform(tmp_path: Path, database_url: str) -> AsyncIterator[Platform]:
    # No background reconciliation: the tests wait for the feed (`feed_settled`) or call Engine.sync themselves,
    # so every assertion sees a settled engine.
    async with serving(tmp_path, database_url, engine_reconcile_interval_s=0) as running:
        yield running


async def feed_settled(platform: Platform) -> None:
    """Every change committed so far delivered by the feed, and any rebuild it asked for done."""
    await platform.feed.catch_up()
    await platform.powerup.engine.settled()


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    fields = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def md(platform: Platform, role: Role, tenant: Tenant | None = None, subject: str = "tester") -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {platform.tokens.mint(subject, role, tenant)}"),)


def swap(**spec: object) -> stations_pb2.Station:
    values: dict[str, object] = {"lane_count": 2, "slot_count": 20, "swap_duration": duration_pb2.Duration(seconds=180)}
    values.update(spec)
    return stations_pb2.Station(
        operator_id=OPERATOR,
        kind=common_pb2.STATION_KIND_SWAP,
        name="Limits swap",
        position=common_pb2.LatLng(lat=31.2, lng=121.5),
        swap=stations_pb2.SwapStationSpec(**values),  # type: ignore[arg-type]
    )


def charging(*chargers: list[stations_pb2.Connector], site_power_cap_w: int = 0) -> stations_pb2.Station:
    return stations_pb2.Station(
        operator_id=OPERATOR,
        kind=common_pb2.STATION_KIND_CHARGING,
        name="Limits charging",
        position=common_pb2.LatLng(lat=31.2, lng=121.5),
        charging=stations_pb2.ChargingStationSpec(
            chargers=[stations_pb2.Charger(connectors=c) for c in chargers], site_power_cap_w=site_power_cap_w
        ),
    )


def plug(max_power_w: int = 120_000, number: int = 0) -> stations_pb2.Connector:
    return stations_pb2.Connector(standard=POWER, max_power_w=max_power_w, ocpp_connector_number=number)


def no_swap_block() -> stations_pb2.Station:
    station = swap()
    station.ClearField("swap")
    return station


def swap_block_on_charging() -> stations_pb2.Station:
    station = charging([plug()])
    station.swap.lane_count = 2
    return station


# (case, station, the field the refusal must name)
BAD_STATIONS = [
    ("lanes int32 max", swap(lane_count=INT32_MAX), "station.swap.lane_count"),
    ("0 lanes", swap(lane_count=0), "station.swap.lane_count"),
    ("lanes above the engine limit", swap(lane_count=LIMITS.max_lanes + 1), "station.swap.lane_count"),
    ("negative lanes", swap(lane_count=-1), "station.swap.lane_count"),
    ("swap station without a swap block", no_swap_block(), "station.swap"),
    ("charging station with a swap block", swap_block_on_charging(), "station.swap"),
    ("no swap time", swap(swap_duration=duration_pb2.Duration(seconds=0)), "station.swap.swap_duration"),
    ("swap time 2^40 s", swap(swap_duration=duration_pb2.Duration(seconds=2**40)), "station.swap.swap_duration"),
    ("slots int32 max", swap(slot_count=INT32_MAX), "station.swap.slot_count"),
    ("negative slots", swap(slot_count=-5), "station.swap.slot_count"),
    ("rack power 2^40 W", swap(charging_power_cap_w=2**40), "station.swap.charging_power_cap_w"),
    ("site power 2^40 W", charging([plug()], site_power_cap_w=2**40), "station.charging.site_power_cap_w"),
    ("connector 2^40 W", charging([plug(2**40)]), "station.charging.chargers[0].connectors[0].max_power_w"),
    (
        "connector above the engine limit",
        charging([plug(), plug(LIMITS.max_connector_power_w + 1)]),
        "station.charging.chargers[0].connectors[1].max_power_w",
    ),
    (
        "OCPP connector number int32 max",
        charging([plug(number=INT32_MAX)]),
        "station.charging.chargers[0].connectors[0].ocpp_connector_number",
    ),
    (
        "negative OCPP connector number",
        charging([plug(number=-1)]),
        "station.charging.chargers[0].connectors[0].ocpp_connector_number",
    ),
    (
        "too many connectors on a charger",
        charging([plug(number=n + 1) for n in range(LIMITS.max_connectors_per_charger + 1)]),
        "station.charging.chargers[0].connectors",
    ),
    (
        "too many chargers",
        charging(*[[plug()] for _ in range(LIMITS.max_chargers + 1)]),
        "station.charging.chargers",
    ),
]


async def station_count(platform: Platform) -> int:
    async with platform.db.transaction() as session:
        return int((await session.exec(select(sa.func.count()).select_from(Station))).one())


async def quote(platform: Platform, channel: grpc.aio.Channel) -> ordering_pb2.QuotePowerUpResponse:
    """A quote for a private car by its own driver, near the middle of the network the engine serves."""
    async with platform.db.transaction() as session:
        query = (
            select(Driver, Vehicle)
            .where(col(Driver.vehicle_id) == col(Vehicle.id), col(Vehicle.fleet_id).is_(None))
            .order_by(col(Driver.id))
        )
        driver, vehicle = (await session.exec(query)).first()  # type: ignore[misc]
    owner = getattr(vehicle, "owner_driver_id", None) or driver.id
    served = list(platform.powerup.engine._maps.station_by_id.values())
    centre = common_pb2.LatLng(
        lat=sum(s.lat for s in served) / len(served), lng=sum(s.lng for s in served) / len(served)
    )
    answer: ordering_pb2.QuotePowerUpResponse = await ordering_pb2_grpc.OrderingServiceStub(channel).QuotePowerUp(
        ordering_pb2.QuotePowerUpRequest(
            vehicle_id=vehicle.id, position=centre, soc_permille=250, target_soc_permille=900
        ),
        metadata=md(platform, Role.DRIVER, subject=owner),
    )
    return answer


async def refused(call: object, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field in violations(err.value), (field, violations(err.value), err.value.details())


async def test_station_values_outside_the_engine_limits_are_refused_naming_the_field(platform: Platform) -> None:
    async with channel_to(platform) as channel:
        stub = stations_pb2_grpc.StationServiceStub(channel)
        operator = md(platform, Role.OPERATOR, OP)
        before = await station_count(platform)
        for case, station, field in BAD_STATIONS:
            request = stations_pb2.CreateStationRequest(idempotency_key=case, station=station)
            await refused(stub.CreateStation(request, metadata=operator), field)
        assert await station_count(platform) == before, "a refused station was stored"
        # The limits themselves are accepted: the checks are the engine's bounds, not tighter.
        edge = swap(lane_count=LIMITS.max_lanes, slot_count=LIMITS.max_slots)
        made = (await stub.CreateStation(stations_pb2.CreateStationRequest(station=edge), metadata=operator)).station
        assert made.swap.lane_count == LIMITS.max_lanes
        await feed_settled(platform)  # the feed brings the new station: no rebuild, nothing left to repair
        assert platform.powerup.engine.station(made.station_id) is not None
        assert await platform.powerup.engine.sync(platform.db) == 0
        assert platform.powerup.engine.quarantined() == []
        assert (await quote(platform, channel)).options


async def test_updates_and_packs_outside_the_engine_limits_are_refused(platform: Platform) -> None:
    async with channel_to(platform) as channel:
        stub = stations_pb2_grpc.StationServiceStub(channel)
        operator = md(platform, Role.OPERATOR, OP)
        current = await stub.GetStation(stations_pb2.GetStationRequest(station_id=SWAP_STATION), metadata=operator)
        station = current.station
        for paths, spec, field in [
            (["lane_count"], {"lane_count": INT32_MAX}, "station.swap.lane_count"),
            (["lane_count"], {"lane_count": 0}, "station.swap.lane_count"),
            (["slot_count"], {"slot_count": INT32_MAX}, "station.swap.slot_count"),
            (["power_cap_w"], {"charging_power_cap_w": 2**40}, "station.swap.charging_power_cap_w"),
            ([], {}, "station.swap.lane_count"),  # every path, no swap block: lanes would become 0
        ]:
            changed = stations_pb2.Station(station_id=SWAP_STATION, version=station.version, name=station.name)
            if spec:
                changed.swap.CopyFrom(stations_pb2.SwapStationSpec(**spec))  # type: ignore[arg-type]
            request = stations_pb2.UpdateStationRequest(station=changed, update_paths=paths)
            await refused(stub.UpdateStation(request, metadata=operator), field)
        after = await stub.GetStation(stations_pb2.GetStationRequest(station_id=SWAP_STATION), metadata=operator)
        assert after.station == station, "a refused update changed the station"

        async with platform.db.transaction() as session:
            pack_type = (await session.exec(select(PackType.id))).first()
        for pack, field in [
            ({"cycle_count": LIMITS.max_pack_cycles + 1}, "pack.cycle_count"),
            ({"pack_type_id": "99999999999999999999"}, "pack.pack_type_id"),
            ({"slot": INT32_MAX}, "pack.location.station_slot.slot"),
            ({"slot": -1}, "pack.location.station_slot.slot"),
            ({"station_id": CHARGING_STATION}, "pack.location.station_slot.station_id"),
        ]:
            slot = stations_pb2.StationSlot(
                station_id=str(pack.pop("station_id", SWAP_STATION)), slot=int(pack.pop("slot", 1))
            )
            message = stations_pb2.Pack(
                pack_id=f"pk-limits-{field}",
                pack_type_id=str(pack.pop("pack_type_id", pack_type)),
                soc_permille=900,
                soh_permille=950,
                location=stations_pb2.PackLocation(station_slot=slot),
                **pack,
            )
            register = stub.RegisterPack(stations_pb2.RegisterPackRequest(pack=message), metadata=operator)
            await refused(register, field)
        async with platform.db.transaction() as session:
            stored = (await session.exec(select(Pack).where(col(Pack.id).startswith("pk-limits-")))).all()
        assert stored == []
        assert await platform.powerup.engine.sync(platform.db) >= 0, "nothing new reached the engine"
        assert platform.powerup.engine.quarantined() == []
        assert (await quote(platform, channel)).options


# ---- rows the engine cannot take, written behind the API's back -------------------------------------------


async def write_bad_rows(platform: Platform) -> dict[str, str]:
    """Bad rows as an old version (or a hand edit) would have stored them; returns {id: what is wrong}."""
    async with platform.db.transaction() as session:
        pack_type = (await session.exec(select(PackType.id))).first()
        for sid, lanes in (("st-bad-lanes", INT32_MAX), ("st-bad-nolanes", 0)):
            session.add(
                Station(
                    id=sid,
                    operator_id=OPERATOR,
                    kind=1,
                    name=sid,
                    lat=31.2,
                    lng=121.5,
                    power_cap_w=100_000,
                    lanes=lanes,
                    swap_time_s=180,
                    slot_count=10,
                )
            )
        await session.flush()
        session.add(
            Pack(
                id="pk-bad-at-charger",
                pack_type_id=int(pack_type or 1),
                station_id=CHARGING_STATION,
                slot_no=1,
                soc_permille=900,
                soh_permille=950,
                cycles=1,
                state=3,
                operator_id=OPERATOR,
            )
        )
    return {"st-bad-lanes": "lanes", "st-bad-nolanes": "lanes", "pk-bad-at-charger": "not a swap station"}


async def quarantine_alarms(platform: Platform) -> dict[str, list[int]]:
    """resource id → states of its quarantine alarms."""
    async with platform.db.transaction() as session:
        rows = (await session.exec(select(Alarm).where(col(Alarm.code) == QUARANTINE_ALARM_CODE))).all()
    found: dict[str, list[int]] = {}
    for alarm in rows:
        found.setdefault(str(alarm.resource_id), []).append(alarm.state)
    return found


def assert_quarantined(platform: Platform, bad: dict[str, str]) -> None:
    held = {q.id: q.reason for q in platform.powerup.engine.quarantined()}
    assert set(held) == set(bad), held
    for rid, why in bad.items():
        assert why in held[rid], (rid, held[rid])
        assert platform.powerup.engine.station(rid) is None


async def test_a_bad_row_in_the_database_does_not_stop_a_restart(tmp_path: Path, database_url: str) -> None:
    async with serving(tmp_path, database_url, engine_reconcile_interval_s=0) as first:
        bad = await write_bad_rows(first)
    # Before the fix this start failed (OverflowError building the engine) and never came back.
    async with (
        serving(tmp_path, database_url, engine_reconcile_interval_s=0) as platform,
        channel_to(platform) as channel,
    ):
        assert_quarantined(platform, bad)
        assert await quarantine_alarms(platform) == {rid: [1] for rid in bad}
        async with platform.db.transaction() as session:
            alarm = (await session.exec(select(Alarm).where(col(Alarm.resource_id) == "st-bad-lanes"))).one()
        assert alarm.station_id == "st-bad-lanes" and alarm.operator_id == OPERATOR and "lanes" in alarm.message
        listed = await stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(page_size=1000), metadata=md(platform, Role.OPERATOR, OP)
        )
        assert SWAP_STATION in {s.station_id for s in listed.stations}
        answer = await quote(platform, channel)
        assert answer.options
        assert not {o.resource_id for o in answer.options} & set(bad)
        # The sync loop neither rebuilds every period for the quarantined rows nor alarms again.
        for _ in range(3):
            assert await platform.powerup.engine.sync(platform.db) >= 0
        assert await quarantine_alarms(platform) == {rid: [1] for rid in bad}
    # And a third start does not write the alarms a second time.
    async with serving(tmp_path, database_url, engine_reconcile_interval_s=0) as platform:
        assert_quarantined(platform, bad)
        assert await quarantine_alarms(platform) == {rid: [1] for rid in bad}


async def test_a_bad_row_appearing_while_running_does_not_break_sync(platform: Platform) -> None:
    engine = platform.powerup.engine
    async with channel_to(platform) as channel:
        bad = await write_bad_rows(platform)
        # Before the fix this sync raised, and so did every later one.
        assert await engine.sync(platform.db) == -1
        assert_quarantined(platform, bad)
        assert await quarantine_alarms(platform) == {rid: [1] for rid in bad}
        assert (await quote(platform, channel)).options
        assert await engine.sync(platform.db) >= 0
        # The operator repairs one station through the API: it is served again and its alarm clears.
        stub = stations_pb2_grpc.StationServiceStub(channel)
        operator = md(platform, Role.OPERATOR, OP)
        got = await stub.GetStation(stations_pb2.GetStationRequest(station_id="st-bad-nolanes"), metadata=operator)
        fixed = stations_pb2.Station(
            station_id="st-bad-nolanes", version=got.station.version, swap=stations_pb2.SwapStationSpec(lane_count=2)
        )
        request = stations_pb2.UpdateStationRequest(station=fixed, update_paths=["lane_count"])
        rebuilds = engine.rebuilds
        await stub.UpdateStation(request, metadata=operator)
        await feed_settled(platform)  # the update reaches the engine through the feed: a (debounced) rebuild
        assert engine.rebuilds == rebuilds + 1
        info = engine.station("st-bad-nolanes")
        assert info is not None and info.lanes == 2
        del bad["st-bad-nolanes"]
        assert {q.id for q in engine.quarantined()} == set(bad)
        alarms = await quarantine_alarms(platform)
        assert alarms["st-bad-nolanes"] == [3] and alarms["st-bad-lanes"] == [1]


def test_rows_the_python_checks_miss_are_still_quarantined_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine is the last word: with the Python checks switched off, the batch the engine (or numpy) refuses
    is loaded row by row, and only the rows it refuses are left out, with the engine's own reason."""
    from voltcloud import engine as engine_module

    monkeypatch.setattr(engine_module, "station_problems", lambda **_: [], raising=False)
    rows = [
        Station(
            id=sid,
            operator_id=OPERATOR,
            kind=1,
            name=sid,
            lat=31.2,
            lng=121.5,
            power_cap_w=0,
            lanes=lanes,
            swap_time_s=180,
            slot_count=0,
        )
        for sid, lanes in (("st-a", 2), ("st-overflow", INT32_MAX), ("st-b", 1), ("st-nolanes", 0))
    ]
    engine = engine_module.Engine()
    engine._build(rows, [], [], [], [])
    assert engine.station("st-a") is not None and engine.station("st-b") is not None
    held = {q.id: q.reason for q in engine.quarantined()}
    assert set(held) == {"st-overflow", "st-nolanes"}
    assert "out of bounds for uint16" in held["st-overflow"]
    assert "a swap station needs lanes" in held["st-nolanes"]
    assert engine.counts()[0] == 2
