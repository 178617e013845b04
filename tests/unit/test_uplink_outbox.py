"""The gateway's on-disk outbox: sequence numbers survive restarts, acks trim, the bound holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voltcloud.api.v1 import ingest_pb2
from voltcloud_gateways.uplink import BufferFull, Outbox


def msg() -> ingest_pb2.GatewayToPlatform:
    return ingest_pb2.GatewayToPlatform(event=ingest_pb2.StationEvent(station_id="s", heartbeat=ingest_pb2.Heartbeat()))


def test_seq_survives_restart_and_ack_trims(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_messages=3)
    assert [box.append(msg()) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(BufferFull):
        box.append(msg())
    box.ack(2)
    box.close()
    box = Outbox(tmp_path / "o.db", max_messages=3)
    assert box.acked == 2 and box.count == 1 and [s for s, _ in box.pending(0)] == [3]
    assert box.append(msg()) == 4


def test_adopt_moves_past_the_platform_cursor(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.append(msg())
    box.append(msg())
    box.adopt(100)  # the platform applied up to 100: this gateway lost its state
    assert [s for s, _ in box.pending(100)] == [101, 102]
    assert box.append(msg()) == 103


@given(st.lists(st.one_of(st.just("append"), st.integers(0, 40)), max_size=60))
@settings(max_examples=40, deadline=None)
def test_pending_is_exactly_the_unacked_suffix(tmp_path_factory: pytest.TempPathFactory, ops: list[object]) -> None:
    box = Outbox(tmp_path_factory.mktemp("o") / "o.db", max_messages=1000)
    acked = 0
    for op in ops:
        if op == "append":
            box.append(msg())
        else:
            ack = min(int(str(op)), box.last_seq)
            box.ack(ack)
            acked = max(acked, ack)
    assert [s for s, _ in box.pending(0, 10_000)] == list(range(acked + 1, box.last_seq + 1))
    assert box.count == box.last_seq - acked
