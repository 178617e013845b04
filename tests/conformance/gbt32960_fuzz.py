"""GB/T 32960 codec fuzzing shared by the test suite (a seeded slice) and bench/fuzz_gbt32960.py (>= 1M).

Inputs: random bytes (bare or behind a start marker), truncations of real and built frames, bit flips of
them (half with BCC and length repaired so the data-unit decoders are reached, not just the BCC check), and
structurally valid frames around random data units. Each input goes through `decode_frame` +
`decode_message` (+ the Rust real-time decoder, `_core.Gbt32960Telemetry`, for real-time frames) and through a
`FrameReader` (Rust) in random chunks; any exception is a crash (a Rust panic would surface as one).
"""

from __future__ import annotations

import random
import traceback
from collections import Counter
from dataclasses import dataclass, field

from tests.conformance.gbt32960_vectors import VIN, T, blocks_2016, blocks_2025, load_vectors
from voltcloud import _core
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.codec import (
    Command,
    Edition,
    Flag,
    Frame,
    FrameReader,
    build_platform_login,
    build_vehicle_login,
    decode_frame,
    decode_message,
    encode_frame,
)
from voltcloud_gateways.gbt32960.frame import bcc
from voltcloud_gateways.gbt32960.telemetry import METRICS

MAX_BUFFER = 24 + 65_535 + 1
TELEMETRY = _core.Gbt32960Telemetry(METRICS)  # the gateway's real-time decoder (Rust)


def decode(frame: Frame, outcome: Outcome | None = None) -> None:
    """Both decoders of a frame's data unit: the Python typed one and, for real-time data, the Rust one
    (counted in `outcome.messages` when given)."""
    kind = type(decode_message(frame)).__name__
    if frame.command in (Command.REALTIME, Command.REISSUE) and not frame.encrypted:
        kind += ", rust " + ("refused" if TELEMETRY.decode(frame)[0] else "decoded")
    if outcome is not None:
        outcome.messages[kind] += 1


def corpus() -> list[bytes]:
    frames = [v.raw for v in load_vectors()]
    for edition, blocks in ((Edition.V2016, blocks_2016()), (Edition.V2025, blocks_2025())):
        sig = rt.Signature(1, b"r" * 32, b"s" * 32) if edition is Edition.V2025 else None
        data = rt.encode_realtime(T, blocks, edition, sig)
        frames.append(encode_frame(edition, Command.REALTIME, Flag.COMMAND, VIN, data))
        frames.append(build_vehicle_login(edition, VIN, T, 1, "8986" * 5, ["A1", "B2"]))
        frames.append(build_platform_login(edition, VIN, T, 1, "用户", "pw"))
    return frames


def repair(frame: bytearray) -> bytes:
    """Fixes the length field and BCC of a mutated frame so the decoders behind them are exercised."""
    if len(frame) < 25:
        return bytes(frame)
    frame[22:24] = (len(frame) - 25).to_bytes(2, "big")
    frame[-1] = bcc(bytes(frame[2:-1]))
    return bytes(frame)


def generate(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        prefix = rng.choice((b"", b"##", b"$$"))
        return prefix + rng.randbytes(rng.randrange(0, 300))
    base = bytearray(rng.choice(seeds))
    if kind == 1:
        return bytes(base[: rng.randrange(len(base) + 1)])
    if kind in (2, 3):
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(base))
            base[i] ^= 1 << rng.randrange(8)
        return repair(base) if kind == 3 else bytes(base)
    start = rng.choice((b"##", b"$$"))
    body = bytearray(start + bytes((rng.randint(1, 8), 0xFE)) + VIN.encode().ljust(17, b"\0") + b"\x01\x00\x00")
    body += rng.randbytes(rng.randrange(0, 200)) + b"\0"
    return repair(body)


@dataclass
class Outcome:
    inputs: int = 0
    crashes: int = 0
    frames: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    first_crash: str = ""


def exercise(data: bytes, rng: random.Random, outcome: Outcome) -> None:
    outcome.inputs += 1
    try:
        whole = decode_frame(data)
        if isinstance(whole, Frame):
            decode(whole, outcome)
        reader = FrameReader()
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 64)
            for item in reader.feed(data[pos : pos + step]):
                if isinstance(item, Frame):
                    outcome.frames += 1
                    decode(item)
            assert reader.buffered <= MAX_BUFFER
            pos += step
        reader.finish()
    except Exception:
        outcome.crashes += 1
        if not outcome.first_crash:
            outcome.first_crash = f"{data.hex()}\n{traceback.format_exc()}"


def run(count: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    seeds = corpus()
    outcome = Outcome()
    for _ in range(count):
        exercise(generate(rng, seeds), rng, outcome)
    return outcome
