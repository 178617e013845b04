"""The kill drill, small: a `voltcloud serve` process killed with SIGKILL during CreateOrder load on
PostgreSQL and restarted loses no acknowledged order, leaks no reservation, leaves every journal entry
balanced and every hold active for a live order (bench/drills/drill_kill_create_order.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

from drill_kill_create_order import drill  # type: ignore[import-not-found]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_killed_server_loses_no_acknowledged_order_and_leaks_nothing(postgres_database: str | None) -> None:
    if postgres_database is None:
        pytest.skip("needs PostgreSQL (set VOLTCLOUD_TEST_POSTGRES_URL)")
    report = await drill(drivers=60, clients=8, kill_at=20, base_url=postgres_database)
    assert report.violations == []
    assert report.acknowledged_before_kill >= 20  # the kill came during the load, not before it
    assert report.in_flight_at_kill > 0
    assert report.orders == 60  # every retried key got its order, none twice
    assert report.active_reservations == report.live_orders == 60
