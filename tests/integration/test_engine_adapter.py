"""The engine adapter against a real seeded database: build, options with platform ids, apply after commit,
sync of other writers' commits, inventory's version checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from voltcloud import _core
from voltcloud.engine import Engine, OptionRequest, VehicleProfile
from voltcloud.fleet.models import Vehicle
from voltcloud.platform.db import Database, upgrade_database_async
from voltcloud.platform.enums import UnitStatus
from voltcloud.platform.errors import Aborted, NotFound
from voltcloud.seed import seed_demo_if_empty
from voltcloud.stations import inventory
from voltcloud.stations.models import Connector, MobileUnit, Pack


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_database_async(database_url)
    database = Database(database_url)
    await seed_demo_if_empty(database, 7)
    try:
        yield database
    finally:
        await database.dispose()


async def test_engine_is_built_from_the_database_and_follows_commits(db: Database) -> None:
    engine = Engine()
    counts = await engine.load(db)
    assert counts["stations"] > 0 and counts["connectors"] > 0 and counts["units"] > 0
    assert engine.counts()[0] == counts["stations"]

    async with db.transaction() as session:
        connector = (
            await session.exec(select(Connector).where(Connector.status == 1).order_by(col(Connector.id)))
        ).first()
        assert connector is not None
        change = await inventory.reserve_connector(session, connector.id)
    engine.apply([change])  # after the commit
    station = engine.connector_station(connector.id)
    assert station is not None
    live = {c["id"]: c for c in engine.station_resources(station)[0]}
    assert live[connector.id]["status"] == inventory.CONNECTOR_RESERVED

    # A second writer loses the race on the same row.
    async with db.transaction() as session:
        with pytest.raises(Aborted):
            await inventory.reserve_connector(session, connector.id)

    # Another replica's commit reaches this engine through sync().
    async with db.transaction() as session:
        unit = (
            await session.exec(select(MobileUnit).where(MobileUnit.status == 1).order_by(col(MobileUnit.id)))
        ).first()
        assert unit is not None
        await (await session.connection()).execute(
            sa.update(MobileUnit).where(col(MobileUnit.id) == unit.id).values(status=2, version=unit.version + 1)
        )
    assert await engine.sync(db) >= 1
    info = engine.unit(unit.id)
    assert info is not None and info.status == 2


async def test_options_name_real_free_resources_also_for_ac_only_cars(db: Database) -> None:
    engine = Engine()
    await engine.load(db)
    async with db.transaction() as session:
        vehicles = list(await session.exec(select(Vehicle).order_by(col(Vehicle.id))))
    stations = list(engine._maps.station_by_id.values())
    lat, lng = sum(s.lat for s in stations) / len(stations), sum(s.lng for s in stations) / len(stations)
    now = dt.datetime.now(dt.UTC)
    for vehicle in vehicles[:10]:
        profile = VehicleProfile(
            vehicle.id, vehicle.pack_type_id, vehicle.connector_mask, vehicle.usable_capacity_wh,
            vehicle.consumption_wh_per_km, vehicle.max_dc_power_w,
        )  # fmt: skip
        options = engine.options(OptionRequest(profile, lat, lng, 300, 900, frozenset(), now, max_options=3))
        assert options, vehicle.id
        for o in options:
            assert o.finish_at >= now - dt.timedelta(seconds=1)
            if o.connector_id:
                assert engine.connector_station(o.connector_id) == o.station_id
            if o.unit_id:
                unit = engine.unit(o.unit_id)
                assert unit is not None and unit.status == 1
            if o.mode == 1:
                assert vehicle.pack_type_id is not None and o.pack_id


async def test_an_off_shift_unit_stays_off_shift_in_the_engine(db: Database) -> None:
    """A unit going off shift must not land on the engine's RESERVED: releasing it would put it back in service."""
    engine = Engine()
    await engine.load(db)
    async with db.transaction() as session:
        unit = (
            await session.exec(
                select(MobileUnit).where(MobileUnit.status == UnitStatus.IDLE).order_by(col(MobileUnit.id))
            )
        ).first()
        assert unit is not None
        change = await inventory.set_unit_availability(session, unit.id, False)
    assert change is not None
    engine.apply([change])
    info = engine.unit(unit.id)
    assert info is not None
    engine_status = _core.ENUM_NUMBERS["EngineUnitStatus"]
    assert engine.index.unit(info.idx)["status"] == engine_status["OFF_SHIFT"]
    with pytest.raises(_core.ConflictError):
        engine.index.release_unit(info.idx)
    # The same on a full build from the database.
    rebuilt = Engine()
    await rebuilt.load(db)
    with pytest.raises(_core.ConflictError):
        rebuilt.index.release_unit(info.idx)


async def test_a_reservation_is_one_conditional_update_and_a_lost_one_says_why(db: Database) -> None:
    """inventory's reserve: one UPDATE ... RETURNING when it wins; when it loses, the reason (gone, moved to
    another station, changed since the caller read it, no longer free) from one read of the row."""
    async with db.transaction() as session:
        pack = (
            await session.exec(select(Pack).where(Pack.state == inventory.PACK_READY).order_by(col(Pack.id)))
        ).first()
        assert pack is not None and pack.station_id is not None
    pack_id, station_id, version = pack.id, pack.station_id, pack.version
    async with db.transaction() as session:
        with pytest.raises(NotFound):
            await inventory.reserve_pack(session, "pk-missing")
        with pytest.raises(Aborted, match=f"pack {pack_id} is no longer at station st-elsewhere"):
            await inventory.reserve_pack(session, pack_id, station_id="st-elsewhere")
        with pytest.raises(Aborted, match="changed meanwhile"):
            await inventory.reserve_pack(session, pack_id, expected_version=version + 1)
    async with db.transaction() as session:
        change = await inventory.reserve_pack(session, pack_id, station_id=station_id, expected_version=version)
    assert (change.status, change.version, change.station_id) == (inventory.PACK_RESERVED, version + 1, station_id)
    async with db.transaction() as session:
        with pytest.raises(Aborted, match="is no longer free"):
            await inventory.reserve_pack(session, pack_id, station_id=station_id)
        assert await inventory.release_pack(session, pack_id) is not None
        assert (await session.get(Pack, pack_id, populate_existing=True)).version == version + 2  # type: ignore[union-attr]


async def test_a_bad_row_among_the_rows_read_by_columns_is_quarantined_alone(db: Database) -> None:
    """Connectors and packs are read by the driver and loaded by columns: a row outside the engine's limits among
    them goes the row-by-row way (quarantined and explained), every other row still loads."""
    async with db.transaction() as session:
        connectors = list(await session.exec(select(Connector).order_by(col(Connector.id))))
        packs = list(await session.exec(select(Pack).where(col(Pack.station_id).is_not(None)).order_by(col(Pack.id))))
        assert len(connectors) >= 64 and len(packs) >= 64  # enough for the columnar way
        bad_connector, bad_pack = connectors[len(connectors) // 2], packs[len(packs) // 2]
        conn = await session.connection()
        await conn.execute(sa.update(Connector).where(col(Connector.id) == bad_connector.id).values(status=200))
        await conn.execute(sa.update(Pack).where(col(Pack.id) == bad_pack.id).values(soc_permille=5000))
    engine = Engine()
    counts = await engine.load(db)
    assert (counts["connectors"], counts["packs"]) == (len(connectors) - 1, len(packs) - 1)
    held = {q.id: q for q in engine.quarantined()}
    assert set(held) == {bad_connector.id, bad_pack.id}
    assert "status" in held[bad_connector.id].reason and "soc_permille" in held[bad_pack.id].reason
    assert held[bad_pack.id].station_id == bad_pack.station_id
    assert engine.connector_station(bad_connector.id) is None
    good = connectors[len(connectors) // 2 + 1]
    assert engine.connector_station(good.id) == good.station_id
    assert {c["id"] for c in engine.station_resources(good.station_id)[0]} >= {good.id}
