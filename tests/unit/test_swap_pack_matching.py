"""The swap-pack choice is the engine's battery matching, not the old "highest SOC first" rule."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlmodel import select

from tests.settlement_support import OPERATOR, STATION, T0, migrated
from voltcloud.platform.db import Database
from voltcloud.stations import packs
from voltcloud.stations.models import Pack, PackEvent, PackType


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated(database_url)
    async with database.transaction() as session:
        if await session.get(PackType, 91) is None:
            session.add(PackType(id=91, name="T91", capacity_wh=60_000, chemistry="LFP"))
            await session.flush()
        for pack_id, soc, soh, cycles, state in [
            ("pk-strong", 990, 990, 50, packs.READY),  # the old rule's pick: highest SOC
            ("pk-weak", 950, 850, 1500, packs.READY),
            ("pk-quarantined", 1000, 1000, 0, packs.QUARANTINED),  # best on paper, never handed out
            ("pk-low", 700, 700, 2000, packs.READY),  # below the need SOC
        ]:
            session.add(
                Pack(
                    id=pack_id,
                    pack_type_id=91,
                    station_id=STATION,
                    slot_no=len(pack_id),
                    soc_permille=soc,
                    soh_permille=soh,
                    cycles=cycles,
                    state=state,
                    operator_id=OPERATOR,
                )
            )
    yield database
    await database.dispose()


async def test_short_trip_gets_the_weaker_pack_long_trip_the_stronger(db: Database) -> None:
    async with db.transaction() as session:
        # Unknown trip (the default, 0 km) and a short one: stress balancing hands out the weaker pack,
        # although the old rule (highest SOC, then SOH) would have picked pk-strong.
        default = await packs.choose_swap_pack(session, STATION, 91)
        short = await packs.choose_swap_pack(session, STATION, 91, trip_km=20.0)
        long = await packs.choose_swap_pack(session, STATION, 91, trip_km=390.0)
        strict = await packs.choose_swap_pack(session, STATION, 91, need_soc_permille=960, trip_km=20.0)
        other_type = await packs.choose_swap_pack(session, STATION, 92)
        unknown_type = await packs.choose_swap_pack(session, STATION, None)
    assert default is not None and default.id == "pk-weak"
    assert short is not None and short.id == "pk-weak"
    assert long is not None and long.id == "pk-strong"
    assert strict is not None and strict.id == "pk-strong"  # pk-weak (950) is below the need SOC
    assert other_type is None and unknown_type is None


async def test_reservation_is_version_checked_through_inventory(db: Database) -> None:
    async with db.transaction() as session:
        chosen = await packs.choose_swap_pack(session, STATION, 91)
        assert chosen is not None and chosen.id == "pk-weak"
        stale = Pack(**{**chosen.model_dump(), "version": chosen.version - 1})
        assert not await packs.reserve_for_swap(session, stale, T0, "stale")
        assert await packs.reserve_for_swap(session, chosen, T0, "chosen for v-1")
        assert chosen.state == packs.RESERVED and chosen.version == 2
        assert not await packs.reserve_for_swap(session, chosen, T0, "again")  # no longer READY
        # The reserved pack is out of the matching; next is the only other fitting pack.
        nxt = await packs.choose_swap_pack(session, STATION, 91)
        assert nxt is not None and nxt.id == "pk-strong"
    async with db.transaction() as session:
        reasons = list(await session.exec(select(PackEvent.reason)))
    assert "chosen for v-1" in reasons and "stale" not in reasons and "again" not in reasons
