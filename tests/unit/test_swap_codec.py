"""Property tests of the swap-station MQTT codec: any topic/payload decodes or is refused with a field."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from voltcloud.api.v1 import ingest_pb2, stations_pb2
from voltcloud_gateways.swap import codec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
channels = st.sampled_from(
    [
        "evt/heartbeat",
        "evt/vehicle_arrived",
        "evt/swap_started",
        "evt/swap_completed",
        "evt/pack_report",
        "evt/inspection",
        "evt/alarm",
        "evt/nope",
        "telemetry",
        "cmd_result",
        "x/y/z",
    ]
)


@given(st.text(max_size=80), st.binary(max_size=300))
def test_any_topic_and_bytes(topic: str, payload: bytes) -> None:
    try:
        codec.decode(topic, payload)
    except codec.SwapError as error:
        assert error.field and error.description


@given(
    channels,
    st.dictionaries(
        st.sampled_from(
            [
                "msg_id",
                "lane",
                "vehicle_id",
                "pack_id",
                "session_id",
                "soc_permille",
                "defect",
                "sources",
                "readings",
                "command_id",
                "status",
                "time",
                "slot",
                "code",
                "level",
                "success",
            ]
        ),
        json_values,
        max_size=8,
    ),
)
def test_any_json_object_on_any_channel(channel: str, body: dict[str, Any]) -> None:
    try:
        decoded = codec.decode(f"{codec.PREFIX}/st-1/{channel}", json.dumps(body).encode())
    except codec.SwapError as error:
        assert error.field and error.description
        return
    for event in decoded.events:
        assert event.station_id == "st-1" and event.WhichOneof("event")
        event.SerializeToString()


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(sorted(codec.METRICS)),
            st.integers(-1000, 1000),
            st.integers(-(10**9), 10**9),
        ),
        max_size=50,
    )
)
def test_valid_telemetry_round_trips(readings: list[tuple[int, str, int, int]]) -> None:
    body = {"msg_id": "m", "sources": [{"pack_id": "a"}, {"resource_id": "slot:2"}, {}], "readings": readings}
    decoded = codec.decode(f"{codec.PREFIX}/st-1/telemetry", json.dumps(body).encode())
    assert decoded.telemetry is not None
    assert list(decoded.telemetry.col_int_value) == [r[3] for r in readings]


def test_commands_encode() -> None:
    command = ingest_pb2.Command(
        command_id="c1",
        station_id="st-1",
        command=stations_pb2.StationCommand(
            reserve=stations_pb2.ReserveCommand(reservation_id="r", lane=2, pack_id="p")
        ),
    )
    topic, body = codec.encode_command(command)
    assert topic == f"{codec.PREFIX}/st-1/cmd"
    assert json.loads(body) == {"command_id": "c1", "type": "reserve", "reservation_id": "r", "lane": 2, "pack_id": "p"}
    remote = ingest_pb2.Command(
        command_id="c2",
        station_id="st-1",
        command=stations_pb2.StationCommand(remote_start=stations_pb2.RemoteStartCommand(connector_id="x")),
    )
    try:
        codec.encode_command(remote)
    except codec.SwapError as error:
        assert error.field == "command"
    else:
        raise AssertionError("remote_start is not a swap command")
