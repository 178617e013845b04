"""The uplink drill, small: a `voltcloud serve` process killed (SIGKILL) and stopped (SIGTERM) and a gateway
restarted during uplink streaming; every event the gateway accepted is stored once, under its seq, and the
gateway's cursor ends at the last one (bench/drills/drill_uplink_restarts.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "drills"))

from drill_uplink_restarts import drill  # type: ignore[import-not-found]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_restarts_during_uplink_streaming_lose_no_event_and_count_none_twice(
    database: str, postgres_database: str | None
) -> None:
    if database == "postgresql" and postgres_database is None:
        pytest.skip("needs PostgreSQL (set VOLTCLOUD_TEST_POSTGRES_URL)")
    report = await drill(400, 100.0, postgres=database == "postgresql", base_url=postgres_database or "")
    assert report.violations == []
    assert report.events_accepted == report.rows == report.cursor_last_seq == 400
    assert len(report.platform_restarts) == 2 and report.gateway_restarts == 1
