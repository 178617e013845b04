"""The Rust GB/T 32960 decoder (rust_core/src/gbt32960.rs, the gateway's hot path) against the Python block
decoder (realtime.decode_realtime, kept for tools and tests): every conformance frame, frames built from every
block type of both editions, and thousands of mutated frames (bit flips with length and BCC repaired, so the
data-unit decoders are reached) give the same refusal (reason and offset) or the same readings, alarm summary
and UTC time. `reference_readings` (gbt32960_vectors.py) is the mapping the gateway used before the Rust decoder
(telemetry.py), kept as the oracle."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from tests.conformance.gbt32960_fuzz import corpus, generate, repair
from tests.conformance.gbt32960_vectors import reference_readings
from voltcloud import _core
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960 import telemetry
from voltcloud_gateways.gbt32960.codec import Command, Edition, Encryption, FrameError, encode_frame

DECODER = _core.Gbt32960Telemetry(telemetry.METRICS)
RealtimeSummary = tuple[FrameError | None, int | None, list[tuple[int, int]], tuple[int | None, int, int] | None]


def python_summary(data: bytes, edition: Edition) -> RealtimeSummary:
    decoded = rt.decode_realtime(data, edition)
    if isinstance(decoded, FrameError):
        return decoded, None, [], None
    if decoded.error is not None:
        return decoded.error, None, [], None
    utc = decoded.time.utc()
    ms = None if utc is None else (utc - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    alarms = decoded.first(rt.Alarms)
    alarm = None
    if alarms is not None:
        faults = sum(map(len, (alarms.storage_faults, alarms.motor_faults, alarms.engine_faults, alarms.other_faults)))
        level = alarms.max_level if isinstance(alarms.max_level, int) else None
        alarm = (level, alarms.general_flags, faults)
    return None, ms, reference_readings(decoded), alarm


def rust_summary(raw: bytes) -> RealtimeSummary:
    frame = _core.gbt32960_decode_frame(raw)
    assert isinstance(frame, _core.Gbt32960Frame)
    error, ms, metrics, values, alarm = DECODER.decode(frame)
    return error, ms, list(zip(metrics, values, strict=True)), alarm


def same(raw: bytes) -> bool:
    """Asserts the two decoders agree on a realtime frame; False if `raw` is not one (nothing compared)."""
    frame = _core.gbt32960_decode_frame(raw)
    if not isinstance(frame, _core.Gbt32960Frame) or frame.encryption != Encryption.NONE:
        return False
    if frame.command not in (Command.REALTIME, Command.REISSUE):
        return False
    expected, got = python_summary(frame.data, Edition(frame.edition)), rust_summary(raw)
    if expected[0] is not None or got[0] is not None:
        assert (got[0].reason, got[0].offset) == (expected[0].reason, expected[0].offset), raw.hex()  # type: ignore[union-attr]
    assert got[1:] == expected[1:], raw.hex()
    return True


def test_every_realtime_conformance_frame_and_built_frame_decodes_alike() -> None:
    compared = [raw for raw in corpus() if same(raw)]
    # 2016 and 2025 frames built from every block type, and the conformance set's real-time frames
    assert len(compared) >= 9


def mutate_data_unit(rng: random.Random, frame: bytes) -> bytes:
    """A real-time frame with its data unit bit-flipped, cut or spliced, length and BCC repaired."""
    data = bytearray(frame[24:-1])
    kind = rng.randrange(3)
    if kind == 0:
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(len(data)) :]
    else:
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randrange(1, 8))
    return repair(bytearray(frame[:24] + data + b"\0"))


def test_thirty_thousand_mutated_frames_decode_alike() -> None:
    rng = random.Random(13)
    seeds = corpus()
    realtime = [raw for raw in seeds if same(raw)]
    compared = sum(same(generate(rng, seeds)) for _ in range(10_000))
    compared += sum(same(mutate_data_unit(rng, rng.choice(realtime))) for _ in range(20_000))
    assert compared > 20_000


def test_telemetry_decoder_refuses_frames_it_does_not_cover() -> None:
    login = _core.Gbt32960Frame(2016, 0x01, 0xFE, "VIN", 1, b"")
    with pytest.raises(ValueError, match="frame"):
        DECODER.decode(login)
    with pytest.raises(ValueError, match="frame"):
        DECODER.decode(_core.Gbt32960Frame(2016, 0x02, 0xFE, "VIN", 3, b"\x00" * 16))
    with pytest.raises(ValueError, match="metric_ids"):
        _core.Gbt32960Telemetry([1, 2])


def test_a_frame_whose_bcc_is_a_start_byte_read_on_its_own_leaves_no_garbage() -> None:
    """A frame ending in '#'/'$' (2 in 256 do) read alone used to leave that byte behind as the first half of a
    marker: the next frame then came with a 'garbage' error, and three of them closed the connection."""
    frames = [
        encode_frame(Edition.V2016, Command.HEARTBEAT, 0xFE, "LGHC4V1D3HE202652", bytes((b,))) for b in range(256)
    ]
    ending = [f for f in frames if f[-1] in b"#$"]
    assert ending
    reader = _core.Gbt32960Reader()
    for frame in ending + ending:
        assert reader.feed(frame) == [_core.gbt32960_decode_frame(frame)]
        assert reader.buffered == 0
    assert reader.dropped == 0
