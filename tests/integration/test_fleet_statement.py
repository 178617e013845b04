"""GetFleetStatement over real gRPC: a new fleet's statement from settlement's journal — every posting on the
fleet's and its sub-fleets' accounts in the period, opening and closing balances, money in and out, paging."""

from __future__ import annotations

import csv
import datetime as dt
import io

import grpc
import pytest

from voltcloud.api.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc

from .conftest import RunningPlatform, field_violations
from .fleet_support import OTHER_VIN, Metadata, onboard


def _window(start: dt.datetime, end: dt.datetime) -> common_pb2.TimeWindow:
    window = common_pb2.TimeWindow()
    window.start.FromDatetime(start)
    window.end.FromDatetime(end)
    return window


async def test_statement_of_a_new_fleet(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    onboarded = await onboard(running, channel, funded=50_000, allocated=20_000)
    fleet, sub, manager = onboarded.fleet, onboarded.sub_fleet, onboarded.manager
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    now = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)

    async def statement(
        period: common_pb2.TimeWindow, who: Metadata = manager, **fields: object
    ) -> fleet_pb2.GetFleetStatementResponse:
        request = fleet_pb2.GetFleetStatementRequest(fleet_id=fleet.fleet_id, period=period, **fields)  # type: ignore[arg-type]
        return await fleets.GetFleetStatement(request, metadata=who)

    whole = await statement(_window(now - hour, now + hour))
    assert [(e.kind, e.sub_fleet_id, e.amount.amount_minor, e.balance_after.amount_minor) for e in whole.entries] == [
        ("top_up", "", 50_000, 50_000),
        ("allocation", "", -20_000, 30_000),
        ("allocation", sub.sub_fleet_id, 20_000, 50_000),  # inside the fleet, an allocation nets to zero
    ]
    assert (whole.opening_balance.amount_minor, whole.closing_balance.amount_minor) == (0, 50_000)
    assert (whole.total_credits.amount_minor, whole.total_debits.amount_minor) == (70_000, 20_000)
    assert whole.total_amount.amount_minor == 0 and not whole.lines  # no order settled yet
    assert not whole.next_page_token

    # Paged: the second page's running balance continues from the first's.
    first = await statement(_window(now - hour, now + hour), page_size=2)
    assert len(first.entries) == 2 and first.next_page_token
    second = await statement(_window(now - hour, now + hour), page_size=2, page_token=first.next_page_token)
    assert [e.balance_after.amount_minor for e in second.entries] == [50_000]
    # One sub-fleet alone: its allocation only.
    alone = await statement(_window(now - hour, now + hour), sub_fleet_id=sub.sub_fleet_id)
    assert [e.amount.amount_minor for e in alone.entries] == [20_000]
    assert alone.closing_balance.amount_minor == 20_000
    # A period after everything: the balance carries over, no entries.
    later = await statement(_window(now + hour, now + 2 * hour))
    assert (later.opening_balance.amount_minor, later.closing_balance.amount_minor, len(later.entries)) == (
        50_000,
        50_000,
        0,
    )

    with pytest.raises(grpc.aio.AioRpcError) as backwards:
        await statement(_window(now, now - hour))
    assert field_violations(backwards.value) == ["period"]
    theirs = await onboard(running, channel, funded=0, allocated=0, tag="b", vin=OTHER_VIN)
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await statement(_window(now - hour, now + hour), who=theirs.manager)
    assert other.value.code() == grpc.StatusCode.NOT_FOUND


async def test_monthly_statement_with_csv(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    """The month "YYYY-MM" in the fleet's zone is the period; the page's entries come as CSV too."""
    onboarded = await onboard(running, channel, funded=50_000, allocated=20_000)
    fleets = fleet_pb2_grpc.FleetServiceStub(channel)
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")

    def monthly(**fields: object) -> fleet_pb2.GetFleetStatementRequest:
        return fleet_pb2.GetFleetStatementRequest(fleet_id=onboarded.fleet.fleet_id, **fields)  # type: ignore[arg-type]

    this_month = await fleets.GetFleetStatement(monthly(month=month, time_zone="UTC"), metadata=onboarded.manager)
    assert [e.amount.amount_minor for e in this_month.entries] == [50_000, -20_000, 20_000]
    rows = list(csv.DictReader(io.StringIO(this_month.csv)))
    assert [(r["kind"], r["amount_minor"], r["sub_fleet_id"]) for r in rows] == [
        ("top_up", "50000", ""),
        ("allocation", "-20000", ""),
        ("allocation", "20000", onboarded.sub_fleet.sub_fleet_id),
    ]
    assert rows[-1]["balance_after_minor"] == "50000" and rows[0]["currency"] == "CNY"
    last_year = await fleets.GetFleetStatement(monthly(month="2001-02"), metadata=onboarded.manager)
    assert not last_year.entries and last_year.closing_balance.amount_minor == 0
    for bad, field in (
        (monthly(month="2026-13"), "month"),
        (monthly(month=month, time_zone="Mars/Base"), "time_zone"),
        (monthly(month=month, period=_window(dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC))), "month"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await fleets.GetFleetStatement(bad, metadata=onboarded.manager)
        assert field_violations(refused.value) == [field]
