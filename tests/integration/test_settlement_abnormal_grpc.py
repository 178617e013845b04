"""Abnormal orders, difference refunds and offline-payment verification over real gRPC (with the permission
table and tenant checks), and the settlement scheduler started and stopped by the platform."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from voltcloud.api.v1 import common_pb2, settlement_pb2, settlement_pb2_grpc, stations_pb2, stations_pb2_grpc
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform

from .conftest import RunningPlatform, platform_settings


def _md(running: RunningPlatform, subject: str, role: Role, tenant: Tenant | None = None) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {running.platform.tokens.mint(subject, role, tenant)}"),)


def _cny(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="CNY")


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def test_abnormal_order_and_offline_payment_over_grpc(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    admin = _md(running, "admin", Role.PLATFORM_ADMIN)
    driver = _md(running, "drv-7", Role.DRIVER)
    station = (
        await stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(page_size=1), metadata=admin
        )
    ).stations[0]
    operator = _md(running, "op-user", Role.OPERATOR, Tenant("operator", station.operator_id))
    stranger = _md(running, "op-other", Role.OPERATOR, Tenant("operator", "op-nobody"))
    wallet = (
        await stub.CreateAccount(
            settlement_pb2.CreateAccountRequest(kind=settlement_pb2.ACCOUNT_KIND_CUSTOMER, owner_id="drv-7"),
            metadata=admin,
        )
    ).account
    op_account = (
        await stub.CreateAccount(
            settlement_pb2.CreateAccountRequest(kind=settlement_pb2.ACCOUNT_KIND_OPERATOR), metadata=operator
        )
    ).account

    # Offline transfer: declared by the driver (pending), verified once by the admin.
    declared = (
        await stub.TopUp(
            settlement_pb2.TopUpRequest(
                idempotency_key="off-1",
                account_id=wallet.account_id,
                amount=_cny(10_000),
                provider="offline",
                provider_token="BANK-77",
            ),
            metadata=driver,
        )
    ).payment
    assert declared.state == settlement_pb2.PAYMENT_STATE_PENDING
    verify = settlement_pb2.VerifyOfflinePaymentRequest(idempotency_key="v1", payment_id=declared.payment_id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyOfflinePayment(verify, metadata=driver)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyOfflinePayment(verify, metadata=stranger)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    verified = await stub.VerifyOfflinePayment(verify, metadata=admin)
    assert verified.payment.state == settlement_pb2.PAYMENT_STATE_SUCCEEDED
    assert verified.account.balance.amount_minor == 10_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyOfflinePayment(
            settlement_pb2.VerifyOfflinePaymentRequest(idempotency_key="v2", payment_id=declared.payment_id),
            metadata=admin,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # An order charged 3 600 for 20 kWh delivered in 10 minutes by a 60 kW charger.
    hold = (
        await stub.PlaceHold(
            settlement_pb2.PlaceHoldRequest(
                idempotency_key="h", account_id=wallet.account_id, amount=_cny(5_000), order_id="ord-x"
            ),
            metadata=admin,
        )
    ).hold
    await stub.CaptureHold(
        settlement_pb2.CaptureHoldRequest(
            idempotency_key="c", hold_id=hold.hold_id, amount=_cny(3_600), operator_account_id=op_account.account_id
        ),
        metadata=admin,
    )
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    detect = settlement_pb2.DetectAbnormalOrderRequest(
        order_id="ord-x",
        station_id=station.station_id,
        start_time=_ts(start),
        end_time=_ts(start + dt.timedelta(minutes=10)),
        energy_wh=20_000,
        amount=_cny(3_600),
        max_power_w=60_000,
        rate_model_id="builtin-default",
        rate_model_version=0,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DetectAbnormalOrder(detect, metadata=stranger)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    report = await stub.DetectAbnormalOrder(detect, metadata=operator)
    assert list(report.flags) == [settlement_pb2.ABNORMAL_FLAG_ENERGY_EXCEEDS_POWER]
    assert (report.expected.amount_minor, report.fair.amount_minor) == (3_600, 1_800)

    refund = settlement_pb2.RefundOrderDifferenceRequest(idempotency_key="rd", order_id="ord-x")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RefundOrderDifference(refund, metadata=stranger)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    first = await stub.RefundOrderDifference(refund, metadata=operator)
    again = await stub.RefundOrderDifference(refund, metadata=operator)
    assert first.amount.amount_minor == 1_800 and first.entry.kind == settlement_pb2.JOURNAL_ENTRY_KIND_REFUND
    assert again.entry.entry_id == first.entry.entry_id
    account = (
        await stub.GetAccount(settlement_pb2.GetAccountRequest(account_id=wallet.account_id), metadata=driver)
    ).account
    assert account.balance.amount_minor == 10_000 - 3_600 + 1_800


async def test_platform_runs_the_settlement_scheduler(tmp_path: Path, database_url: str) -> None:
    platform = Platform(
        platform_settings(tmp_path, database_url, seed_demo=False, settlement_scheduler_interval_s=0.05)
    )
    await platform.start()
    try:
        for _ in range(100):
            if platform.settlement_scheduler.ticks:
                break
            await asyncio.sleep(0.05)
        assert platform.settlement_scheduler.ticks >= 1 and platform.settlement_scheduler.running
    finally:
        await platform.stop(grace=0)
    assert not platform.settlement_scheduler.running
