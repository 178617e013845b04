"""Every enum number shared by the proto, Python and the engine, pinned: the generated descriptors are the
reference; `voltcloud.platform.enums` must spell each proto enum exactly, and `_core.ENUM_NUMBERS` must agree
with both (by member name) wherever the engine uses the enum."""

from __future__ import annotations

import enum

import pytest
from google.protobuf.descriptor import EnumDescriptor

from voltcloud import _core, engine, world
from voltcloud.api.v1 import common_pb2, dispatch_pb2, ingest_pb2, maintenance_pb2, ordering_pb2, stations_pb2
from voltcloud.dispatch import tasks
from voltcloud.platform import auth, enums
from voltcloud.stations import tokens, twin

PROTO_ENUMS: dict[type[enum.IntEnum], EnumDescriptor] = {
    enums.StationKind: common_pb2.StationKind.DESCRIPTOR,
    enums.PackState: common_pb2.PackState.DESCRIPTOR,
    enums.ConnectorStandard: common_pb2.ConnectorStandard.DESCRIPTOR,
    enums.ConnectorStatus: common_pb2.ConnectorStatus.DESCRIPTOR,
    enums.PowerUpMode: common_pb2.PowerUpMode.DESCRIPTOR,
    enums.OrderState: common_pb2.OrderState.DESCRIPTOR,
    enums.ResourceKind: ordering_pb2.ResourceKind.DESCRIPTOR,
    enums.ReservationState: ordering_pb2.ReservationState.DESCRIPTOR,
    enums.WorkerStatus: dispatch_pb2.WorkerStatus.DESCRIPTOR,
    enums.StationSessionKind: stations_pb2.StationSessionKind.DESCRIPTOR,
    enums.AlarmLevel: common_pb2.AlarmLevel.DESCRIPTOR,
    enums.AlarmSource: maintenance_pb2.AlarmSource.DESCRIPTOR,
    enums.AlarmState: maintenance_pb2.AlarmState.DESCRIPTOR,
    enums.WorkOrderSource: maintenance_pb2.WorkOrderSource.DESCRIPTOR,
    enums.WorkOrderState: maintenance_pb2.WorkOrderState.DESCRIPTOR,
    enums.TaskKind: dispatch_pb2.TaskKind.DESCRIPTOR,
    enums.TaskState: dispatch_pb2.TaskState.DESCRIPTOR,
    enums.StepKind: dispatch_pb2.StepKind.DESCRIPTOR,
    enums.StepStatus: dispatch_pb2.StepStatus.DESCRIPTOR,
    enums.TagStatus: ingest_pb2.IdTagStatus.DESCRIPTOR,
    enums.Metric: common_pb2.Metric.DESCRIPTOR,
    enums.CommandStatus: stations_pb2.CommandStatus.DESCRIPTOR,
    auth.Role: common_pb2.Role.DESCRIPTOR,
}


def proto_members(descriptor: EnumDescriptor) -> dict[str, int]:
    """NAME → number without the enum's prefix, UNSPECIFIED (0) left out."""
    prefix = descriptor.values[0].name.removesuffix("UNSPECIFIED")
    return {v.name.removeprefix(prefix): v.number for v in descriptor.values if v.number != 0}


def members(e: type[enum.IntEnum]) -> dict[str, int]:
    return {m.name: int(m) for m in e}


@pytest.mark.parametrize("python_enum", list(PROTO_ENUMS), ids=lambda e: e.__name__)
def test_python_enums_spell_the_proto_exactly(python_enum: type[enum.IntEnum]) -> None:
    assert members(python_enum) == proto_members(PROTO_ENUMS[python_enum])


@pytest.mark.parametrize("name", ["StationKind", "PackState", "ConnectorStandard", "ConnectorStatus", "PowerUpMode"])
def test_the_engine_numbers_are_the_proto_numbers(name: str) -> None:
    descriptor = common_pb2.DESCRIPTOR.enum_types_by_name[name]
    assert _core.ENUM_NUMBERS[name] == proto_members(descriptor)
    assert _core.ENUM_NUMBERS[name] == members(getattr(enums, name))


def test_the_engine_knows_only_the_enums_pinned_here() -> None:
    engine_only = {"UnitKind", "EngineUnitStatus"}
    assert set(_core.ENUM_NUMBERS) == {"StationKind", "PackState", "ConnectorStandard", "ConnectorStatus",
                                       "PowerUpMode"} | engine_only  # fmt: skip


def test_unit_kinds_are_the_engine_unit_kinds() -> None:
    assert members(enums.UnitKind) == _core.ENUM_NUMBERS["UnitKind"]
    assert (engine.UNIT_VAN, engine.UNIT_SPECIALIST) == (enums.UnitKind.VAN, enums.UnitKind.SPECIALIST)
    assert (engine.STATION_SWAP, engine.STATION_CHARGING) == (enums.StationKind.SWAP, enums.StationKind.CHARGING)


def test_stored_unit_status_maps_to_the_engine_status_of_the_same_meaning() -> None:
    status = _core.ENUM_NUMBERS["EngineUnitStatus"]
    expected = {
        enums.UnitStatus.IDLE: status["AVAILABLE"],
        enums.UnitStatus.BUSY: status["BUSY"],
        enums.UnitStatus.OFF_SHIFT: status["OFF_SHIFT"],
    }
    assert expected == engine._UNIT_STATUS_TO_ENGINE
    # A stored status the engine does not know is never offered and never released into service.
    assert status["OFFLINE"] == engine._UNIT_STATUS_UNKNOWN
    assert status["RESERVED"] not in engine._UNIT_STATUS_TO_ENGINE.values()


@pytest.mark.parametrize(
    ("limit", "name"),
    [
        ("station_kind_max", "StationKind"),
        ("pack_state_max", "PackState"),
        ("connector_standard_max", "ConnectorStandard"),
        ("connector_status_max", "ConnectorStatus"),
        ("unit_kind_max", "UnitKind"),
        ("unit_status_max", "EngineUnitStatus"),
    ],
)
def test_the_range_checks_admit_every_member(limit: str, name: str) -> None:
    assert _core.LIMITS[limit] == max(_core.ENUM_NUMBERS[name].values())


def test_the_generated_world_uses_the_same_enums() -> None:
    assert world.PackState is enums.PackState
    assert world.ConnectorStatus is enums.ConnectorStatus
    assert world.UnitStatus is enums.UnitStatus


def test_the_domains_use_the_one_definition() -> None:
    # A domain that redefines one of these would restate its numbers; it must re-use the neutral module's class.
    assert (tasks.TaskKind, tasks.TaskState, tasks.StepKind, tasks.StepStatus) == (
        enums.TaskKind, enums.TaskState, enums.StepKind, enums.StepStatus)  # fmt: skip
    assert tokens.TagStatus is enums.TagStatus
    projected = {"SOC": "SOC_PERMILLE", "SOH": "SOH_PERMILLE", "TEMPERATURE": "TEMPERATURE_MILLI_C",
                 "POWER_W": "POWER_W", "ENERGY_WH": "ENERGY_WH", "SITE_POWER_W": "SITE_POWER_W"}  # fmt: skip
    for twin_name, proto_name in projected.items():
        assert getattr(twin, f"METRIC_{twin_name}") == common_pb2.Metric.Value(f"METRIC_{proto_name}")
    assert twin.CONNECTOR_STATUS_OFFLINE == common_pb2.CONNECTOR_STATUS_OFFLINE


def test_the_workforce_api_spells_the_stored_unit_numbers() -> None:
    """DispatchService's MobileUnitKind/MobileUnitStatus carry the stored numbers; RETIRED is unknown to the
    engine, so a retired unit loads as OFFLINE and is never offered."""
    assert {k.name: int(k) for k in enums.UnitKind} == {
        n.removeprefix("MOBILE_UNIT_KIND_"): v for n, v in dispatch_pb2.MobileUnitKind.items() if v
    }
    assert {s.name: int(s) for s in enums.UnitStatus} == {
        n.removeprefix("MOBILE_UNIT_STATUS_"): v for n, v in dispatch_pb2.MobileUnitStatus.items() if v
    }
    assert enums.UnitStatus.RETIRED not in engine._UNIT_STATUS_TO_ENGINE
