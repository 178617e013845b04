"""Property tests of the sans-IO OCPP 1.6J codec: any input is answered, never crashes the gateway."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from voltcloud_gateways.ocpp import codec

CODEC = codec.Codec(max_frame_bytes=4096)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def check_answer(frame: codec.Frame) -> None:
    assert isinstance(frame, codec.Call | codec.CallResult | codec.CallError | codec.FrameError)
    if isinstance(frame, codec.FrameError):
        assert frame.code in codec.ERROR_CODES
        encoded = json.loads(frame.encode())
        assert encoded[0] == 4 and encoded[1] == frame.unique_id and encoded[2] == frame.code
        assert isinstance(encoded[3], str) and encoded[4] == {}


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_text_or_bytes_is_answered(data: str | bytes) -> None:
    check_answer(CODEC.parse(data))


@given(json_values)
def test_any_json_is_answered(value: Any) -> None:
    check_answer(CODEC.parse(json.dumps(value)))


@given(
    st.sampled_from(sorted(codec.KNOWN_ACTIONS | {"Foo", ""})),
    st.dictionaries(st.text(max_size=12), json_values, max_size=5),
    st.text(min_size=1, max_size=40),
)
@settings(max_examples=300)
def test_calls_with_any_payload(action: str, payload: dict[str, Any], unique_id: str) -> None:
    frame = CODEC.parse(json.dumps([2, unique_id, action, payload]))
    check_answer(frame)
    if isinstance(frame, codec.Call):
        assert frame.action in codec.CHARGE_POINT_ACTIONS
        assert codec.schema_violation(action, payload) is None
    elif isinstance(frame, codec.FrameError) and len(unique_id) <= 36:
        assert frame.unique_id == unique_id
        if action not in codec.KNOWN_ACTIONS:
            assert frame.code == codec.NOT_IMPLEMENTED
        elif action not in codec.CHARGE_POINT_ACTIONS:
            assert frame.code == codec.NOT_SUPPORTED


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from(["Available", "Charging", "Faulted"]))
def test_valid_status_notifications_parse(connector: int, status: str) -> None:
    payload = {"connectorId": connector, "errorCode": "NoError", "status": status}
    frame = CODEC.parse(json.dumps([2, "id-1", "StatusNotification", payload]))
    assert frame == codec.Call("id-1", "StatusNotification", payload)


def test_error_codes_of_typical_mistakes() -> None:
    cases = {
        '[2, 1, "Heartbeat", {}]': codec.PROTOCOL_ERROR,
        '[2, "a", "Heartbeat"]': codec.PROTOCOL_ERROR,
        '[2, "a", "Heartbeat", []]': codec.FORMATION_VIOLATION,
        '[2, "a", "Authorize", {"idTag": "' + "x" * 21 + '"}]': codec.TYPE_CONSTRAINT_VIOLATION,
        '[2, "a", "Authorize", {}]': codec.PROTOCOL_ERROR,
        '["2", "a", "Heartbeat", {}]': codec.TYPE_CONSTRAINT_VIOLATION,
        '[2, "a", "Heartbeat", {"v": NaN}]': codec.FORMATION_VIOLATION,
        "[" * 5000 + "]" * 5000: codec.FORMATION_VIOLATION,
        " " * 5000: codec.FORMATION_VIOLATION,
    }
    for text, code in cases.items():
        frame = CODEC.parse(text)
        assert isinstance(frame, codec.FrameError) and frame.code == code, text[:60]


def test_results_and_errors_parse() -> None:
    assert CODEC.parse('[3, "x", {"status": "Accepted"}]') == codec.CallResult("x", {"status": "Accepted"})
    assert CODEC.parse('[4, "x", "GenericError", "boom", {}]') == codec.CallError("x", "GenericError", "boom", {})
    assert CODEC.validate_result("RemoteStartTransaction", {"status": "Maybe"}) is not None
    assert CODEC.validate_result("RemoteStartTransaction", {"status": "Accepted"}) is None
