"""SettlementService over real gRPC: accounts, top-up, hold → capture → refund, idempotency, tariffs and
pricing, bills, reconciliation and tracing, with tenant checks."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from voltcloud.api.v1 import common_pb2, settlement_pb2, settlement_pb2_grpc, stations_pb2, stations_pb2_grpc
from voltcloud.platform.auth import Role, Tenant

from .conftest import RunningPlatform


def _md(
    running: RunningPlatform, subject: str, role: Role, tenant: Tenant | None = None
) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {running.platform.tokens.mint(subject, role, tenant)}"),)


def _cny(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="CNY")


async def test_money_flows_end_to_end_over_grpc(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    driver = _md(running, "drv-1", Role.DRIVER)
    stations = await stations_pb2_grpc.StationServiceStub(channel).ListStations(
        stations_pb2.ListStationsRequest(page_size=1), metadata=admin
    )
    station = stations.stations[0]
    operator = _md(running, "op-user", Role.OPERATOR, Tenant("operator", station.operator_id))

    wallet = (
        await stub.CreateAccount(
            settlement_pb2.CreateAccountRequest(
                kind=settlement_pb2.ACCOUNT_KIND_CUSTOMER, owner_id="drv-1", currency="CNY"
            ),
            metadata=admin,
        )
    ).account
    op_account = (
        await stub.CreateAccount(
            settlement_pb2.CreateAccountRequest(kind=settlement_pb2.ACCOUNT_KIND_OPERATOR, currency="CNY"),
            metadata=operator,
        )
    ).account
    assert op_account.owner_id == station.operator_id

    top = settlement_pb2.TopUpRequest(
        idempotency_key="t1",
        account_id=wallet.account_id,
        amount=_cny(10_000),
        provider="simulated",
        provider_token="tok",
    )
    first = await stub.TopUp(top, metadata=driver)
    again = await stub.TopUp(top, metadata=driver)
    assert first.payment.payment_id == again.payment.payment_id
    assert again.account.balance.amount_minor == 10_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        top.amount.amount_minor = 20_000
        await stub.TopUp(top, metadata=driver)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "idempotency_key"

    other = _md(running, "drv-2", Role.DRIVER)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetAccount(settlement_pb2.GetAccountRequest(account_id=wallet.account_id), metadata=other)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    hold = (
        await stub.PlaceHold(
            settlement_pb2.PlaceHoldRequest(
                idempotency_key="h1",
                account_id=wallet.account_id,
                amount=_cny(6_000),
                order_id="ord-1",
                ttl=duration_pb2.Duration(seconds=600),
            ),
            metadata=admin,
        )
    ).hold
    assert hold.state == settlement_pb2.HOLD_STATE_ACTIVE
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PlaceHold(
            settlement_pb2.PlaceHoldRequest(idempotency_key="h2", account_id=wallet.account_id, amount=_cny(4_001)),
            metadata=admin,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient funds" in (err.value.details() or "")

    captured = await stub.CaptureHold(
        settlement_pb2.CaptureHoldRequest(
            idempotency_key="c1",
            hold_id=hold.hold_id,
            amount=_cny(5_000),
            operator_account_id=op_account.account_id,
            platform_fee_basis_points=1000,
        ),
        metadata=admin,
    )
    assert captured.hold.state == settlement_pb2.HOLD_STATE_CAPTURED
    amounts = {p.account_id: p.amount.amount_minor for p in captured.entry.postings}
    assert amounts[wallet.account_id] == -5_000 and amounts[op_account.account_id] == 4_500
    assert sum(amounts.values()) == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CaptureHold(
            settlement_pb2.CaptureHoldRequest(
                idempotency_key="c2", hold_id=hold.hold_id, amount=_cny(10), operator_account_id=op_account.account_id
            ),
            metadata=admin,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    refund = await stub.Refund(
        settlement_pb2.RefundRequest(idempotency_key="r1", order_id="ord-1", amount=_cny(1_000), reason="short charge"),
        metadata=operator,
    )
    assert refund.amount.amount_minor == 1_000
    account = (
        await stub.GetAccount(settlement_pb2.GetAccountRequest(account_id=wallet.account_id), metadata=driver)
    ).account
    assert (account.balance.amount_minor, account.held.amount_minor, account.available.amount_minor) == (
        6_000,
        0,
        6_000,
    )

    entries = await stub.ListJournalEntries(
        settlement_pb2.ListJournalEntriesRequest(account_id=wallet.account_id), metadata=admin
    )
    assert [e.kind for e in entries.entries] == [
        settlement_pb2.JOURNAL_ENTRY_KIND_TOP_UP,
        settlement_pb2.JOURNAL_ENTRY_KIND_ORDER_SETTLEMENT,
        settlement_pb2.JOURNAL_ENTRY_KIND_REFUND,
    ]
    trace = await stub.TraceFunds(settlement_pb2.TraceFundsRequest(order_id="ord-1"), metadata=admin)
    assert sum(f.amount.amount_minor for f in trace.flows if f.from_account_id == wallet.account_id) == 5_000

    now = dt.datetime.now(dt.UTC)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(now - dt.timedelta(hours=1))
    end.FromDatetime(now + dt.timedelta(hours=1))
    bill = (
        await stub.GenerateBill(
            settlement_pb2.GenerateBillRequest(
                idempotency_key="b1", account_id=wallet.account_id, period=common_pb2.TimeWindow(start=start, end=end)
            ),
            metadata=admin,
        )
    ).bill
    assert bill.total.amount_minor == 4_000 and len(bill.lines) == 2
    listed = await stub.ListBills(settlement_pb2.ListBillsRequest(account_id=wallet.account_id), metadata=admin)
    assert [b.bill_id for b in listed.bills] == [bill.bill_id]

    csv = (
        "reference,amount_minor,currency,value_time,description\n"
        f"{first.payment.provider_reference},10000,CNY,{now.isoformat()},top-up\n"
        f"{first.payment.provider_reference},10000,CNY,{now.isoformat()},again\n"
        f"ghost-1,500,CNY,{now.isoformat()},unknown\n"
        "broken,abc,CNY,x,\n"
    ).encode()
    imported = await stub.ImportStatement(
        settlement_pb2.ImportStatementRequest(
            idempotency_key="s1", provider="simulated", csv=csv, period=common_pb2.TimeWindow(start=start, end=end)
        ),
        metadata=admin,
    )
    assert imported.statement.line_count == 3 and list(imported.errors) == [4]
    reconciled = await stub.ReconcileStatement(
        settlement_pb2.ReconcileStatementRequest(statement_id=imported.statement.statement_id), metadata=admin
    )
    statuses = [line.match_status for line in reconciled.lines]
    assert statuses == [
        settlement_pb2.MATCH_STATUS_MATCHED,
        settlement_pb2.MATCH_STATUS_DUPLICATE,
        settlement_pb2.MATCH_STATUS_MISSING_IN_LEDGER,
    ]
    assert reconciled.matched == 1

    payouts = await stub.RunPayouts(settlement_pb2.RunPayoutsRequest(idempotency_key="p1"), metadata=admin)
    assert list(payouts.payouts) == []  # the revenue is younger than T+3


async def test_rate_models_and_price_estimate_over_grpc(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    station = (
        await stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(page_size=1), metadata=admin
        )
    ).stations[0]
    operator = _md(running, "op-user", Role.OPERATOR, Tenant("operator", station.operator_id))
    driver = _md(running, "drv-9", Role.DRIVER)

    def energy(micros: int, label: str) -> common_pb2.PriceComponent:
        return common_pb2.PriceComponent(
            type=common_pb2.PRICE_COMPONENT_TYPE_ENERGY, unit_price_micros=micros, step_size=1, label=label
        )

    model = common_pb2.RateModel(
        name="TOU",
        currency="CNY",
        time_zone="Asia/Shanghai",
        elements=[
            common_pb2.TariffElement(
                price_components=[energy(1_004_400, "electricity")],
                restrictions=common_pb2.TariffRestrictions(start_time="10:00", end_time="15:00"),
            ),
            common_pb2.TariffElement(price_components=[energy(695_000, "electricity")]),
            common_pb2.TariffElement(price_components=[energy(800_000, "service_fee")]),
        ],
    )
    created = (
        await stub.CreateRateModel(
            settlement_pb2.CreateRateModelRequest(idempotency_key="rm1", rate_model=model, operator_default=True),
            metadata=operator,
        )
    ).rate_model
    assert created.version == 1 and created.operator_id == station.operator_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        bad = common_pb2.RateModel(name="x", currency="CNY", elements=[common_pb2.TariffElement()])
        await stub.CreateRateModel(
            settlement_pb2.CreateRateModelRequest(idempotency_key="rm2", rate_model=bad), metadata=operator
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # 14:15 local tomorrow for 90 minutes, 45 kWh: 22.5 kWh peak (2260) + 22.5 kWh flat (1564) + service 3600.
    local = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).replace(hour=14, minute=15, second=0, microsecond=0)
    start = timestamp_pb2.Timestamp()
    start.FromDatetime((local + dt.timedelta(days=1)).astimezone(dt.UTC))
    estimate = await stub.PriceEstimate(
        settlement_pb2.PriceEstimateRequest(
            station_id=station.station_id,
            start_time=start,
            energy_wh=45_000,
            duration=duration_pb2.Duration(seconds=5_400),
        ),
        metadata=driver,
    )
    assert estimate.rate_model_id == created.rate_model_id
    assert [line.amount.amount_minor for line in estimate.lines] == [2260, 1564, 3600]
    assert estimate.total.amount_minor == 7424
    listed = await stub.ListRateModels(settlement_pb2.ListRateModelsRequest(), metadata=operator)
    assert [m.rate_model_id for m in listed.rate_models] == [created.rate_model_id]
