"""Issue 9, findings 7 and 8 over real gRPC: bad bytes, out-of-range times, durations and integers, oversized
strings and lists are INVALID_ARGUMENT naming the field (never UNKNOWN), nothing is stored and no money moves;
the server's receive limit is set deliberately."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.stationkit import CHARGING_STATION, OPERATOR, RawUplink, event, hello
from voltcloud.api.v1 import (
    common_pb2,
    ingest_pb2,
    ordering_pb2,
    ordering_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.ordering.models import Quote
from voltcloud.platform.auth import Role, Tenant
from voltcloud.stations.models import Station

from .conftest import RunningPlatform

OP = Tenant("operator", OPERATOR)
YEAR_9999 = 253_402_300_799  # 9999-12-31T23:59:59Z, the largest Timestamp
GARBAGE = [
    b"\x0a\xff\xff",  # field 1, length 32767, then nothing: truncated
    b"\x0f\x00",  # wire type 7 does not exist
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint tag that never ends
]


def bad_fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    fields: list[str] = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


async def refused(call: Any, *, field: str | None) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail INVALID_ARGUMENT, with a BadRequest violation on `field` when given."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    if field is not None:
        assert field in bad_fields(err.value), (field, err.value.details())
    return err.value


async def count(running: RunningPlatform, table: type) -> int:
    async with running.platform.db.transaction() as session:
        return int((await session.exec(sa.select(sa.func.count()).select_from(table))).one()[0])  # type: ignore[call-overload]


def quote_request(**fields: Any) -> ordering_pb2.QuotePowerUpRequest:
    return ordering_pb2.QuotePowerUpRequest(
        vehicle_id="vh-000001", position=common_pb2.LatLng(lat=31.23, lng=121.47), **fields
    )


# ---- finding 7: bytes, times, durations, integers ----


@pytest.mark.parametrize(
    ("method", "streaming"),
    [
        ("/voltcloud.v1.StationService/GetStation", False),
        ("/voltcloud.v1.OrderingService/QuotePowerUp", False),
        ("/voltcloud.v1.SettlementService/TopUp", False),
        ("/voltcloud.v1.DispatchService/ListTasks", False),
        ("/voltcloud.v1.StationService/WatchStation", True),
    ],
)
async def test_undecodable_bytes_are_invalid_argument(
    running: RunningPlatform, channel: grpc.aio.Channel, method: str, streaming: bool
) -> None:
    admin = running.metadata(Role.PLATFORM_ADMIN)
    for body in GARBAGE:
        if streaming:
            call: Any = channel.unary_stream(method)(body, metadata=admin)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in call:
                    pass
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (body, err.value.details())
        else:
            await refused(channel.unary_unary(method)(body, metadata=admin), field=None)


async def test_out_of_range_timestamps_name_the_field(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    admin = running.metadata(Role.PLATFORM_ADMIN)
    quotes = await count(running, Quote)
    far = quote_request()
    far.deadline.seconds = YEAR_9999
    await refused(ordering.QuotePowerUp(far, metadata=admin), field="deadline")
    negative = quote_request()
    negative.deadline.seconds, negative.deadline.nanos = 1_900_000_000, -1
    await refused(ordering.QuotePowerUp(negative, metadata=admin), field="deadline.nanos")
    listing = ordering_pb2.ListOrdersRequest()
    listing.create_time_from.seconds = -(2**62)
    await refused(ordering.ListOrders(listing, metadata=admin), field="create_time_from")
    history = stations_pb2.GetPackHistoryRequest(pack_id="pk-000001")
    history.start_time.seconds = 2**62
    await refused(
        stations_pb2_grpc.StationServiceStub(channel).GetPackHistory(history, metadata=admin), field="start_time"
    )
    assert await count(running, Quote) == quotes


async def test_huge_durations_are_refused_and_no_money_moves(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
    admin = running.metadata(Role.PLATFORM_ADMIN)
    money = common_pb2.Money(amount_minor=5_000, currency="CNY")
    wallet = (
        await settlement.CreateAccount(
            settlement_pb2.CreateAccountRequest(
                kind=settlement_pb2.ACCOUNT_KIND_CUSTOMER, owner_id="dr-000001", currency="CNY"
            ),
            metadata=admin,
        )
    ).account
    await settlement.TopUp(
        settlement_pb2.TopUpRequest(
            idempotency_key="t", account_id=wallet.account_id, amount=money, provider="simulated", provider_token="x"
        ),
        metadata=admin,
    )
    before = (
        await settlement.GetAccount(settlement_pb2.GetAccountRequest(account_id=wallet.account_id), metadata=admin)
    ).account
    hold = settlement_pb2.PlaceHoldRequest(idempotency_key="h", account_id=wallet.account_id, amount=money)
    hold.ttl.seconds = 2**62
    await refused(settlement.PlaceHold(hold, metadata=admin), field="ttl")
    hold.ttl.seconds, hold.ttl.nanos = 60, -5
    await refused(settlement.PlaceHold(hold, metadata=admin), field="ttl.nanos")
    huge = settlement_pb2.TopUpRequest(
        idempotency_key="t2",
        account_id=wallet.account_id,
        amount=common_pb2.Money(amount_minor=2**63 - 1, currency="CNY"),
        provider="simulated",
        provider_token="x",
    )
    await refused(settlement.TopUp(huge, metadata=admin), field="amount.amount_minor")
    after = (
        await settlement.GetAccount(settlement_pb2.GetAccountRequest(account_id=wallet.account_id), metadata=admin)
    ).account
    assert (after.balance.amount_minor, after.held.amount_minor) == (5_000, 0)
    assert (after.balance, after.held, after.available) == (before.balance, before.held, before.available)

    command = stations_pb2.SendStationCommandRequest(idempotency_key="c", station_id=CHARGING_STATION)
    command.command.unlock_connector.connector_id = "cn-0000001"
    command.timeout.seconds = 2**62
    stations = stations_pb2_grpc.StationServiceStub(channel)
    await refused(stations.SendStationCommand(command, metadata=admin), field="timeout")


def gateway_metadata(running: RunningPlatform) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {running.platform.tokens.mint('gw-edge', Role.GATEWAY, OP)}"),)


@pytest.mark.parametrize("case", ["hello", "event"])
async def test_uplink_seq_beyond_bigint_ends_the_stream_invalid(
    running: RunningPlatform, channel: grpc.aio.Channel, case: str
) -> None:
    uplink = RawUplink(channel, gateway_metadata(running))
    if case == "hello":
        uplink.send(hello("gw-edge", [CHARGING_STATION], last_acked=2**64 - 1))
    else:
        uplink.send(hello("gw-edge", [CHARGING_STATION]))
        assert (await uplink.read()).WhichOneof("msg") == "ack"
        uplink.send(event(2**64 - 1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            await uplink.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert any("seq" in f for f in bad_fields(err.value)), bad_fields(err.value)


# ---- finding 8: sizes ----


def station(**fields: Any) -> stations_pb2.Station:
    fields.setdefault("name", "Depot")
    return stations_pb2.Station(
        operator_id=OPERATOR,
        kind=common_pb2.STATION_KIND_CHARGING,
        position=common_pb2.LatLng(lat=31.2, lng=121.5),
        charging=stations_pb2.ChargingStationSpec(
            chargers=[
                stations_pb2.Charger(
                    connectors=[
                        stations_pb2.Connector(standard=common_pb2.CONNECTOR_STANDARD_GBT_DC, max_power_w=120_000)
                    ]
                )
            ]
        ),
        **fields,
    )


async def test_oversized_strings_and_lists_are_refused_and_not_stored(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    stub = stations_pb2_grpc.StationServiceStub(channel)
    operator = running.metadata(Role.OPERATOR, OP)
    stations = await count(running, Station)
    megabyte = "x" * (1024 * 1024)
    cases: list[tuple[stations_pb2.Station, str]] = [
        (station(name=megabyte), "station.name"),
        (station(address=megabyte), "station.address"),
        (
            station(opening_hours=[stations_pb2.OpeningHours(open="08:00", close="20:00")] * 10_000),
            "station.opening_hours",
        ),
        (station(name="a\x00b"), "station.name"),
    ]
    for body, field in cases:
        await refused(
            stub.CreateStation(stations_pb2.CreateStationRequest(station=body), metadata=operator), field=field
        )
    assert await count(running, Station) == stations
    # The limits are not tighter than the columns: a 200-character name is fine.
    made = await stub.CreateStation(
        stations_pb2.CreateStationRequest(station=station(name="n" * 200)), metadata=operator
    )
    assert made.station.name == "n" * 200

    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    admin = running.metadata(Role.PLATFORM_ADMIN)
    await refused(
        ordering.QuotePowerUp(quote_request(station_ids=["st-000001"] * 10_000), metadata=admin), field="station_ids"
    )
    inspection = stations_pb2.ReportInspectionRequest(
        idempotency_key="i", pack_id="pk-000001", notes="n", attachment_uris=["https://x/y.jpg"] * 10_000
    )
    await refused(stub.ReportInspection(inspection, metadata=admin), field="attachment_uris")


async def test_receive_limit_is_deliberate(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    """6 MiB reaches the platform (gRPC's default 4 MiB would refuse it) and meets the field's own limit;
    beyond the configured 8 MiB gRPC refuses the message before any code runs."""
    settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
    admin = running.metadata(Role.PLATFORM_ADMIN)
    request = settlement_pb2.ImportStatementRequest(idempotency_key="s", provider="simulated", csv=b"x" * (6 << 20))
    await refused(settlement.ImportStatement(request, metadata=admin), field="csv")
    request.csv = b"x" * (9 << 20)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await settlement.ImportStatement(request, metadata=admin)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_columnar_telemetry_within_limits_still_flows(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    """The edge does not stand in the ingest fast path: a 100,000-reading columnar batch is accepted."""
    from voltcloud.api.v1 import ingest_pb2_grpc

    batch = ingest_pb2.TelemetryBatch(sources=[ingest_pb2.TelemetrySource(station_id=CHARGING_STATION)])
    batch.base_time.seconds = 1_800_000_000
    n = 100_000
    batch.col_source_index.extend([0] * n)
    batch.col_metric.extend([common_pb2.METRIC_SOC_PERMILLE] * n)
    batch.col_offset_ms.extend(range(n))
    batch.col_int_value.extend(range(n))
    reply = await ingest_pb2_grpc.IngestServiceStub(channel).PushTelemetry(
        ingest_pb2.PushTelemetryRequest(gateway_id="gw-edge", telemetry=batch), metadata=gateway_metadata(running)
    )
    assert reply.readings_accepted == n
