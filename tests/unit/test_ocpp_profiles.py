"""RemoteTrigger / LocalAuthListManagement / configuration frames: whatever the gateway builds is valid
against the `ocpp` package's v16 schemas (or refused before sending), and the charge point's answers map to
command statuses."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voltcloud.api.v1 import stations_pb2
from voltcloud_gateways.ocpp import codec
from voltcloud_gateways.ocpp.central import (
    AUTH_STATUSES,
    TRIGGERABLE,
    CommandError,
    LocalAuth,
    OcppState,
    result_status,
    send_local_list,
    trigger_message,
)

CSMS_ACTIONS = ["TriggerMessage", "SendLocalList", "GetLocalListVersion", "GetConfiguration", "ChangeConfiguration"]


@given(st.text(max_size=40) | st.sampled_from(sorted(TRIGGERABLE)), st.none() | st.integers(-3, 10))
def test_trigger_message_is_valid_or_refused(requested: str, connector: int | None) -> None:
    try:
        payload = trigger_message(requested, connector)
    except CommandError as error:
        assert error.status == stations_pb2.COMMAND_STATUS_REJECTED and error.detail
        return
    frame = json.loads(codec.encode_call("t1", "TriggerMessage", payload))
    assert frame == [2, "t1", "TriggerMessage", payload]


auths = st.none() | st.builds(
    LocalAuth,
    st.sampled_from(sorted(AUTH_STATUSES | {"Bogus"})),
    st.none() | st.datetimes(timezones=st.just(dt.UTC)),
    st.text(alphabet="ABC123", max_size=25),
)


@given(
    st.integers(-1, 10**6),
    st.dictionaries(st.text(alphabet="ABCDEF0123456789-", max_size=24), auths, max_size=6),
    st.booleans(),
)
def test_local_list_is_valid_or_refused(version: int, entries: dict[str, LocalAuth | None], full: bool) -> None:
    try:
        payload = send_local_list(version, entries, full=full)
    except CommandError as error:
        assert error.detail
        return
    sent = json.loads(codec.encode_call("l1", "SendLocalList", payload))[3]
    assert sent["updateType"] == ("Full" if full else "Differential") and len(sent["localAuthorizationList"]) == len(
        entries
    )


@pytest.mark.parametrize("action", [*CSMS_ACTIONS, "Reset", "ClearCache"])
def test_charge_point_cannot_send_csms_actions(action: str) -> None:
    frame = codec.Codec().parse(json.dumps([2, "x", action, {}]))
    assert isinstance(frame, codec.FrameError) and frame.code == codec.NOT_SUPPORTED


@pytest.mark.parametrize(
    ("action", "answer", "status"),
    [
        ("TriggerMessage", {"status": "Accepted"}, stations_pb2.COMMAND_STATUS_ACCEPTED),
        ("TriggerMessage", {"status": "NotImplemented"}, stations_pb2.COMMAND_STATUS_NOT_SUPPORTED),
        ("TriggerMessage", {"status": "Rejected"}, stations_pb2.COMMAND_STATUS_REJECTED),
        ("SendLocalList", {"status": "VersionMismatch"}, stations_pb2.COMMAND_STATUS_REJECTED),
        ("SendLocalList", {"status": "Failed"}, stations_pb2.COMMAND_STATUS_REJECTED),
        ("SendLocalList", {"status": "NotSupported"}, stations_pb2.COMMAND_STATUS_NOT_SUPPORTED),
        ("ChangeConfiguration", {"status": "RebootRequired"}, stations_pb2.COMMAND_STATUS_ACCEPTED),
        ("Reset", {"status": "Rejected"}, stations_pb2.COMMAND_STATUS_REJECTED),
    ],
)
def test_answers_map_to_statuses(action: str, answer: dict[str, str], status: int) -> None:
    assert codec.Codec().validate_result(action, answer) is None
    assert result_status(answer)[0] == status


def test_answers_are_schema_checked() -> None:
    c = codec.Codec()
    assert c.validate_result("GetLocalListVersion", {"listVersion": 3}) is None
    assert c.validate_result("GetLocalListVersion", {"listVersion": "3"}) is not None
    assert c.validate_result("TriggerMessage", {"status": "Maybe"}) is not None
    assert c.validate_result("GetConfiguration", {"configurationKey": [{"key": "K", "readonly": True}]}) is None


def test_local_list_version_is_durable(tmp_path: object) -> None:
    path = f"{tmp_path}/ocpp.db"
    state = OcppState(path)
    assert state.local_list_version("cp") == 0
    state.set_local_list_version("cp", 4)
    state.close()
    assert OcppState(path).local_list_version("cp") == 4
