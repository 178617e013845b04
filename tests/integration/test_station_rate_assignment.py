"""StationService.AssignRateModel over real gRPC (SQLite + PostgreSQL): assigns through settlement, tenant-checked."""

from __future__ import annotations

import grpc
import pytest

from voltcloud.api.v1 import (
    common_pb2,
    settlement_pb2,
    settlement_pb2_grpc,
    stations_pb2,
    stations_pb2_grpc,
)
from voltcloud.platform.auth import Role, Tenant

from ..stationkit import CHARGING_STATION, OPERATOR, OTHER_OPERATOR, OTHER_STATION
from .conftest import RunningPlatform


async def test_assign_rate_model_to_own_station_only(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    stations = stations_pb2_grpc.StationServiceStub(channel)
    settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
    operator = running.metadata(Role.OPERATOR, Tenant("operator", OPERATOR))
    flat = common_pb2.PriceComponent(
        type=common_pb2.PRICE_COMPONENT_TYPE_ENERGY, unit_price_micros=2_000_000, step_size=1
    )
    model = common_pb2.RateModel(
        name="flat 2", currency="CNY", time_zone="Asia/Shanghai",
        elements=[common_pb2.TariffElement(price_components=[flat])],
    )  # fmt: skip
    created = await settlement.CreateRateModel(
        settlement_pb2.CreateRateModelRequest(idempotency_key="rm", rate_model=model), metadata=operator
    )
    rate_model_id = created.rate_model.rate_model_id
    request = stations_pb2.AssignRateModelRequest(
        idempotency_key="a1", station_id=CHARGING_STATION, rate_model_id=rate_model_id
    )
    assigned = await stations.AssignRateModel(request, metadata=operator)
    assert assigned.assignment_id and assigned.station_id == CHARGING_STATION
    assert (await stations.AssignRateModel(request, metadata=operator)).assignment_id == assigned.assignment_id
    # The station's price now comes from the assigned model: 10 kWh at 2.00/kWh.
    estimate = await settlement.PriceEstimate(
        settlement_pb2.PriceEstimateRequest(station_id=CHARGING_STATION, energy_wh=10_000), metadata=operator
    )
    assert (estimate.rate_model_id, estimate.total.amount_minor) == (rate_model_id, 2000)

    for station_id, md, code in (
        (OTHER_STATION, operator, grpc.StatusCode.NOT_FOUND),
        (
            CHARGING_STATION,
            running.metadata(Role.OPERATOR, Tenant("operator", OTHER_OPERATOR)),
            grpc.StatusCode.NOT_FOUND,
        ),
        (CHARGING_STATION, running.metadata(Role.DRIVER), grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stations.AssignRateModel(
                stations_pb2.AssignRateModelRequest(
                    idempotency_key="x", station_id=station_id, rate_model_id=rate_model_id
                ),
                metadata=md,
            )
        assert err.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stations.AssignRateModel(
            stations_pb2.AssignRateModelRequest(
                idempotency_key="y", station_id=CHARGING_STATION, rate_model_id="rm-none"
            ),
            metadata=operator,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
