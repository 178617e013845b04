"""Risk rules (issue 14): a fault that keeps coming back on the same equipment opens ONE preventive work order,
even though every one of its alarms cleared itself; another equipment's faults do not count. SQLite and
PostgreSQL (the raise path's lock and the preventive de-duplication are per dialect)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlmodel import select

from tests.integration.conftest import RunningPlatform, serving
from tests.stationkit import CHARGING_STATION, CONNECTOR
from voltcloud.maintenance import api as maintenance
from voltcloud.maintenance import risk
from voltcloud.maintenance.models import WorkOrder
from voltcloud.platform.clock import FrozenClock
from voltcloud.server import MaintenanceStations
from voltcloud.stations import packs

from .maintenance_support import OP1, maintenance_platform
from .test_maintenance_battery import READINGS, T0, _swap_pack


def test_months_until_reads_the_battery_model_month() -> None:
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    assert [risk.months_until(m, now) for m in ("now", "2026-12", "2027-02", "2027-04", "")] == [0, 0, 2, 4, None]


async def test_a_recurring_fault_opens_one_preventive_work_order(tmp_path: Path, database_url: str) -> None:
    async with maintenance_platform(tmp_path, database_url, maintenance_risk_recurrence_count=3) as (platform, _):
        now = dt.datetime.now(dt.UTC)

        async def flicker(resource: str, at: dt.datetime) -> None:
            async with platform.db.transaction() as session:
                await maintenance.raise_alarm(
                    session, now=at, source=maintenance.ALARM_SOURCE_STATION, level=2, code="GROUND_FAULT",
                    message="ground fault", operator_id=OP1, station_id=CHARGING_STATION, resource_id=resource,
                    open_work_order=False,
                )  # fmt: skip
                await maintenance.clear_alarms(session, now=at, code="GROUND_FAULT", resource_ids=[resource])

        async def preventive() -> list[WorkOrder]:
            async with platform.db.transaction() as session:
                rows = await session.exec(
                    select(WorkOrder).where(WorkOrder.source == risk.WORK_ORDER_SOURCE_PREVENTIVE)
                )
                return list(rows)

        for hours in (0, 30):
            await flicker(CONNECTOR, now + dt.timedelta(hours=hours))
        await flicker("other-connector", now + dt.timedelta(hours=31))
        assert await preventive() == []  # twice here, once there: not yet a pattern
        await flicker(CONNECTOR, now + dt.timedelta(hours=60))
        [order] = await preventive()
        assert (order.fault_code, order.resource_id, order.station_id) == (risk.RECURRING, CONNECTOR, CHARGING_STATION)
        assert order.operator_id == OP1 and "3 times" in order.description
        await flicker(CONNECTOR, now + dt.timedelta(hours=61))
        assert [o.id for o in await preventive()] == [order.id]  # joins the open one
        # Outside the window the old ones no longer count.
        await flicker("third", now + dt.timedelta(days=20))
        assert len(await preventive()) == 1


async def test_a_pack_nearing_retirement_soh_opens_one_preventive_work_order(running: RunningPlatform) -> None:
    """The battery-health readings (retirement threshold 800 reached on 2032-03-26 by the fit) swept with the
    real stations port: 14 months ahead nothing; 2 months ahead one work order, and a second pass adds none."""
    platform = running.platform
    pack, capacity = await _swap_pack(running)
    for day, soh, cycles, temp, c_rate in READINGS:
        async with platform.db.transaction() as session:
            await packs.apply_report(
                session, T0 + dt.timedelta(days=day), pack_id=pack.id, station_id=pack.station_id or "", slot_no=None,
                soc_permille=900, soh_permille=soh, temperature_milli_c=temp, cycles=pack.cycles + cycles, state=None,
                power_w=int(capacity * c_rate),
            )  # fmt: skip
    port = MaintenanceStations(None)

    async def sweep(now: dt.datetime, after: int = 0) -> tuple[int, list[WorkOrder]]:
        async with platform.db.transaction() as session:
            cursor, _ = await risk.sweep_packs(session, port, now, after)
            rows = await session.exec(select(WorkOrder).where(WorkOrder.pack_id == pack.id))
            return cursor, [o for o in rows if o.source == risk.WORK_ORDER_SOURCE_PREVENTIVE]

    assert (await sweep(T0 + dt.timedelta(days=90)))[1] == []
    cursor, [order] = await sweep(dt.datetime(2032, 1, 20, tzinfo=dt.UTC))
    assert (order.fault_code, order.equipment_kind, order.station_id) == (risk.SOH_RETIREMENT, "pack", pack.station_id)
    assert "2032-03" in order.description and cursor > 0
    assert [o.id for o in (await sweep(dt.datetime(2032, 1, 21, tzinfo=dt.UTC)))[1]] == [order.id]
    assert (await sweep(dt.datetime(2032, 1, 21, tzinfo=dt.UTC), cursor))[0] == cursor  # nothing new sampled


async def test_a_station_condition_report_wakes_the_risk_rules_without_a_timer(
    tmp_path: Path, database_url: str
) -> None:
    """The field sweep's safety net is an hour away and no offer or certificate is due: only the inventory's
    pack changes (each report in its own transaction) can wake it, and the preventive work order opens."""
    quiet = {"maintenance_field_sweep_s": 0.05, "sweep_idle_s": 3600.0}
    async with serving(tmp_path, database_url, **quiet) as platform:
        platform.field_hub.clock = FrozenClock(dt.datetime(2032, 1, 20, tzinfo=dt.UTC))
        pack, capacity = await _swap_pack(RunningPlatform(platform, f"127.0.0.1:{platform.port}"))
        await asyncio.sleep(0.5)  # the start-up passes are over: the sweep now sleeps
        for day, soh, cycles, temp, c_rate in READINGS:
            async with platform.db.transaction() as session:
                await packs.apply_report(
                    session, T0 + dt.timedelta(days=day), pack_id=pack.id, station_id=pack.station_id or "",
                    slot_no=None, soc_permille=900, soh_permille=soh, temperature_milli_c=temp,
                    cycles=pack.cycles + cycles, state=None, power_w=int(capacity * c_rate),
                )  # fmt: skip

        async def preventive() -> list[WorkOrder]:
            async with platform.db.transaction() as session:
                rows = await session.exec(select(WorkOrder).where(WorkOrder.pack_id == pack.id))
                return [o for o in rows if o.source == risk.WORK_ORDER_SOURCE_PREVENTIVE]

        for _ in range(100):
            if await preventive():
                break
            await asyncio.sleep(0.1)
        assert [o.fault_code for o in await preventive()] == [risk.SOH_RETIREMENT]
