"""Issue 9: every served unary RPC fuzzed over real gRPC, as the platform admin and as an operator, with
messages generated from the request descriptors (extreme integers, timestamps and durations, huge and odd
strings, long lists, unknown enum numbers, non-finite floats) and raw bytes. No call may answer UNKNOWN or
INTERNAL (UNIMPLEMENTED only from the services not built yet) and the server must serve normally afterwards.

Bounded for CI (`FUZZ_EXAMPLES` per database, a few seconds each); `bench/fuzz_rpcs.py` runs the same
strategies longer and prints counts by status (docs/benchmarks.md)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security import fuzzkit
from voltcloud.api.v1 import stations_pb2, stations_pb2_grpc

from .conftest import platform_settings

FUZZ_EXAMPLES = 400


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[fuzzkit.ThreadedPlatform]:
    with fuzzkit.ThreadedPlatform(platform_settings(tmp_path, database_url)) as running:
        yield running


def test_no_rpc_answers_unknown_or_internal_and_the_server_stays_healthy(server: fuzzkit.ThreadedPlatform) -> None:
    seen: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(server.target) as channel:

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,  # the same bounded run every time in CI; the bench explores further
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(call=fuzzkit.calls())
        def one(call: fuzzkit.Call) -> None:
            code = fuzzkit.send(channel, server, call)
            seen[code.name] += 1
            assert fuzzkit.allowed(call.method, code), (code, call)

        one()
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listed = stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(page_size=1), metadata=server.metadata("admin"), timeout=5
        )
        assert len(listed.stations) == 1
    assert seen["INVALID_ARGUMENT"] > 0 and sum(seen.values()) >= FUZZ_EXAMPLES, seen


FLEET_EXAMPLES = 300


@st.composite
def _fleet_calls(draw: st.DrawFn) -> fuzzkit.Call:
    """FleetService alone, as the roles it serves (the general run sends it mostly admin and operator calls)."""
    methods = [m for m in fuzzkit.unary_methods() if m.service == "voltcloud.v1.FleetService"]
    call = draw(fuzzkit.calls(methods))
    return fuzzkit.Call(call.method, call.body, draw(st.sampled_from(["admin", "fleet", "driver"])))


def test_fleet_service_fuzzed_as_its_own_roles(server: fuzzkit.ThreadedPlatform) -> None:
    seen: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(server.target) as channel:

        @settings(
            max_examples=FLEET_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(call=_fleet_calls())
        def one(call: fuzzkit.Call) -> None:
            code = fuzzkit.send(channel, server, call)
            seen[code.name] += 1
            assert fuzzkit.allowed(call.method, code), (code, call)

        one()
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"FleetService fuzz: {dict(seen)}")
    assert seen["INVALID_ARGUMENT"] > 0 and "UNIMPLEMENTED" not in seen, seen


MAINTENANCE_EXAMPLES = 300


@st.composite
def _maintenance_calls(draw: st.DrawFn) -> fuzzkit.Call:
    """MaintenanceService alone (its server stream too), as the roles it serves: admin, operator, engineer."""
    service = "voltcloud.v1.MaintenanceService"
    methods = [m for m in fuzzkit.unary_methods() + fuzzkit.stream_methods() if m.service == service]
    call = draw(fuzzkit.calls(methods))
    return fuzzkit.Call(call.method, call.body, draw(st.sampled_from(["admin", "operator", "engineer"])))


def test_maintenance_service_fuzzed_as_its_own_roles(server: fuzzkit.ThreadedPlatform) -> None:
    seen: collections.Counter[str] = collections.Counter()
    streams = {m.path for m in fuzzkit.stream_methods()}
    with grpc.insecure_channel(server.target) as channel:

        @settings(
            max_examples=MAINTENANCE_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(call=_maintenance_calls())
        def one(call: fuzzkit.Call) -> None:
            send = fuzzkit.send_stream if call.method.path in streams else fuzzkit.send
            code = send(channel, server, call)
            seen[f"{call.method.name}:{code.name}" if call.method.path in streams else code.name] += 1
            assert fuzzkit.allowed(call.method, code), (code, call)

        one()
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"MaintenanceService fuzz: {dict(seen)}")
    assert seen["INVALID_ARGUMENT"] > 0 and any(k.startswith("WatchAlarms:") for k in seen), seen


FIELD_EXAMPLES = 300


def test_maintenance_field_rpcs_fuzzed(server: fuzzkit.ThreadedPlatform) -> None:
    """maint-field's unary MaintenanceService RPCs (engineers, certificates, dispatch, inspections, safety,
    battery health, withdrawal) alone: never UNKNOWN, INTERNAL or UNIMPLEMENTED."""
    from . import tenant_matrix  # noqa: F401  (loads the field rows after the helpers they use)
    from .tenant_matrix_field import FIELD_METHODS

    methods = [
        m for m in fuzzkit.unary_methods() if m.service == "voltcloud.v1.MaintenanceService" and m.name in FIELD_METHODS
    ]
    assert len(methods) == len(FIELD_METHODS) - 1  # all but the EngineerConnect stream
    seen: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(server.target) as channel:

        @settings(
            max_examples=FIELD_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(call=fuzzkit.calls(methods))
        def one(call: fuzzkit.Call) -> None:
            code = fuzzkit.send(channel, server, call)
            seen[code.name] += 1
            assert code not in fuzzkit.NEVER and code is not grpc.StatusCode.UNIMPLEMENTED, (code, call)

        one()
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"maintenance field fuzz: {dict(seen)}")
    assert seen["INVALID_ARGUMENT"] > 0, seen
