"""Seeds the database with a generated world (the demo city by default)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel, select

from voltcloud.fleet.models import Driver, Fleet, SubFleet, Vehicle
from voltcloud.platform.db import Database
from voltcloud.stations.models import Connector, MobileUnit, Operator, Pack, PackType, Station
from voltcloud.world import World, generate_world
from voltcloud.world.model import PACK_CAPACITY_WH

_PACK_TYPE_NAMES = {
    1: ("Standard 75 kWh", "LFP"),
    2: ("Long range 100 kWh", "NCM"),
    3: ("Ultra 150 kWh", "NCM"),
}


def world_rows(world: World, now: dt.datetime) -> list[tuple[type[SQLModel], list[dict[str, Any]]]]:
    """The world as table rows, parents before children (foreign keys)."""
    st, pk, cn, un, vh, dr = (
        world.stations,
        world.packs,
        world.connectors,
        world.units,
        world.vehicles,
        world.drivers,
    )
    vehicle_ids = [f"vh-{int(h):06d}" for h in vh.handle]

    def fleet_of(idx: int) -> tuple[str | None, str | None]:
        if idx < 0:
            return None, None
        fleet = world.fleets[idx]
        if fleet.parent_idx >= 0:
            return world.fleets[fleet.parent_idx].id, fleet.id
        return fleet.id, None

    operators = [{"id": o.id, "name": o.name, "created_at": now} for o in world.operators]
    pack_types = [
        {"id": t, "name": _PACK_TYPE_NAMES[t][0], "capacity_wh": wh, "chemistry": _PACK_TYPE_NAMES[t][1]}
        for t, wh in PACK_CAPACITY_WH.items()
    ]
    fleets = [{"id": f.id, "name": f.name} for f in world.fleets if f.parent_idx < 0]
    sub_fleets = [
        {"id": f.id, "name": f.name, "fleet_id": world.fleets[f.parent_idx].id}
        for f in world.fleets
        if f.parent_idx >= 0
    ]
    stations = [
        {
            "id": st.id[i],
            "operator_id": world.operators[int(st.operator_idx[i])].id,
            "kind": int(st.kind[i]),
            "name": st.name[i],
            "lat": float(st.lat[i]),
            "lng": float(st.lng[i]),
            "power_cap_w": int(st.power_cap_w[i]),
            "lanes": int(st.lanes[i]),
            "swap_time_s": int(st.swap_time_s[i]),
        }
        for i in range(len(st))
    ]
    connectors = [
        {
            "id": cn.id[i],
            "station_id": st.id[int(cn.station_idx[i])],
            "charger_no": int(cn.charger_no[i]),
            "connector_no": int(cn.connector_no[i]),
            "standard": int(cn.standard[i]),
            "max_power_w": int(cn.max_power_w[i]),
            "status": int(cn.status[i]),
        }
        for i in range(len(cn))
    ]
    # A private car's owner is its (only) driver: the generator gives every vehicle a first driver.
    owners: dict[int, str] = {}
    for i in range(len(dr)):
        if dr.fleet_idx[i] < 0 and dr.vehicle_idx[i] >= 0:
            owners.setdefault(int(dr.vehicle_idx[i]), dr.id[i])
    vehicles = []
    for i in range(len(vh)):
        fleet_id, sub_fleet_id = fleet_of(int(vh.fleet_idx[i]))
        vehicles.append(
            {
                "id": vehicle_ids[i],
                "vin": vh.vin[i],
                "model": vh.model[i],
                "fleet_id": fleet_id,
                "sub_fleet_id": sub_fleet_id,
                "owner_driver_id": owners.get(i) if fleet_id is None else None,
                "pack_type_id": int(vh.pack_type[i]) or None,
                "connector_mask": int(vh.connector_mask[i]),
                "usable_capacity_wh": int(vh.usable_capacity_wh[i]),
                "consumption_wh_per_km": int(vh.consumption_wh_per_km[i]),
                "max_dc_power_w": max(int(vh.max_dc_power_w[i]), 1),
            }
        )
    packs = [
        {
            "id": pk.id[i],
            "pack_type_id": int(pk.pack_type[i]),
            "station_id": st.id[int(pk.station_idx[i])] if pk.station_idx[i] >= 0 else None,
            "slot_no": int(pk.slot[i]) or None,
            "vehicle_id": vehicle_ids[int(pk.vehicle_idx[i])] if pk.vehicle_idx[i] >= 0 else None,
            "soc_permille": int(pk.soc_permille[i]),
            "soh_permille": int(pk.soh_permille[i]),
            "cycles": int(pk.cycles[i]),
            "state": int(pk.state[i]),
        }
        for i in range(len(pk))
    ]
    units = [
        {
            "id": un.id[i],
            "operator_id": world.operators[int(un.operator_idx[i])].id,
            "kind": int(un.kind[i]),
            "name": f"{('Van', 'Valet', 'Engineer')[int(un.kind[i]) - 1]} {un.id[i]}",
            "lat": float(un.lat[i]),
            "lng": float(un.lng[i]),
            "energy_wh": int(un.energy_wh[i]),
            "connector_mask": int(un.connector_mask[i]),
            "skills": int(un.skills[i]),
            "shift_start_s": int(un.shift_start_s[i]),
            "shift_end_s": int(un.shift_end_s[i]),
            "status": int(un.status[i]),
        }
        for i in range(len(un))
    ]
    drivers = [
        {
            "id": dr.id[i],
            "name": dr.name[i],
            "fleet_id": fleet_of(int(dr.fleet_idx[i]))[0],
            "vehicle_id": vehicle_ids[int(dr.vehicle_idx[i])] if dr.vehicle_idx[i] >= 0 else None,
        }
        for i in range(len(dr))
    ]
    return [
        (Operator, operators),
        (PackType, pack_types),
        (Fleet, fleets),
        (SubFleet, sub_fleets),
        (Station, stations),
        (Connector, connectors),
        (Vehicle, vehicles),
        (Pack, packs),
        (MobileUnit, units),
        (Driver, drivers),
    ]


async def seed_world(db: Database, world: World) -> dict[str, int]:
    """Inserts every row of the world in one transaction; returns the row count per table."""
    now = dt.datetime.now(dt.UTC)
    counts: dict[str, int] = {}
    async with db.transaction("db.seed") as session:
        connection = await session.connection()
        for table, rows in world_rows(world, now):
            if rows:
                await connection.execute(sa.insert(table), rows)
            counts[str(table.__tablename__)] = len(rows)
    return counts


async def seed_demo_if_empty(db: Database, seed: int) -> dict[str, int] | None:
    """Seeds the demo city unless the registry already holds an operator."""
    async with db.transaction("db.seed.check") as session:
        existing = (await session.exec(select(Operator.id).limit(1))).first()
    if existing is not None:
        return None
    return await seed_world(db, generate_world("demo", seed=seed))
