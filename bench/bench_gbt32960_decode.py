"""GB/T 32960 decoding throughput on one core: a stream of typical 2016 real-time frames (vehicle, one motor,
position, extremes, alarms, 96 cell voltages, 32 probe temperatures: 342 bytes) cut by `FrameReader` (Rust)
from 64 KiB chunks and reduced to platform readings; also the 2025 edition (the same content in its layout).
Two paths, alternated run by run in this process:
  rust    the gateway's: `_core.Gbt32960Telemetry.decode(frame)` -> metrics, values, alarm, UTC ms;
  python  the typed Python decoder (`decode_message`) + the readings mapping the gateway used before the Rust
          decoder (`reference_readings`, tests/conformance/gbt32960_vectors.py).
Median of --runs runs of --frames frames each, in frames per CPU-second of this process (time.process_time:
what one core does, whatever else the machine runs) and per wall-clock second.

    python bench/bench_gbt32960_decode.py --frames 30000 --runs 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.conformance

from tests.conformance.gbt32960_vectors import reference_readings
from voltcloud import _core
from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960 import telemetry
from voltcloud_gateways.gbt32960.codec import Command, Edition, Flag, Frame, FrameReader, decode_message, encode_frame
from voltcloud_gateways.gbt32960.fields import GbTime


def typical_frame(edition: Edition) -> bytes:
    blocks: list[rt.Block] = [
        rt.Vehicle(1, 3, 1, 65_400, 12_345_600, 384_500, -12_300, 810, 1, 0x2E, 5000)
        if edition is Edition.V2025
        else rt.Vehicle(1, 3, 1, 65_400, 12_345_600, 384_500, -12_300, 810, 1, 0x2E, 5000, 12, 0),
        rt.Motors(
            (rt.Motor(1, 1, 45_000, 3200, -1234, 60_000, *((380_000, 55_500) if edition is Edition.V2016 else ())),)
        ),
        rt.Position(0, 116_397_128, 39_916_527, 1 if edition is Edition.V2025 else None),
        rt.Alarms(0, 0, (), (), (), (), () if edition is Edition.V2025 else None),
        rt.CellVoltages((rt.CellPack(1, 384_500, -12_300, 96, 1, tuple(3_990 + i % 20 for i in range(96))),)),
        rt.ProbeTemperatures((rt.ProbePack(1, tuple(25_000 + 1000 * (i % 5) for i in range(32))),)),
    ]
    if edition is Edition.V2016:
        blocks.insert(3, rt.Extremes(1, 12, 4_009, 1, 40, 3_990, 1, 3, 29_000, 1, 7, 25_000))
    data = rt.encode_realtime(GbTime(26, 12, 3, 20, 15, 30), blocks, edition)
    return encode_frame(edition, Command.REALTIME, Flag.COMMAND, "LGHC4V1D3HE202652", data)


TELEMETRY = _core.Gbt32960Telemetry(telemetry.METRICS)


def rust_readings(frame: Frame) -> int:
    error, at_ms, metrics, _values, _alarm = TELEMETRY.decode(frame)
    assert error is None and at_ms is not None
    return len(metrics)


def python_readings(frame: Frame) -> int:
    message = decode_message(frame)
    assert isinstance(message, rt.RealtimeData) and message.error is None and message.time.utc() is not None
    return len(reference_readings(message))


PATHS = {"rust": rust_readings, "python": python_readings}


def run_once(stream: bytes, chunk: int, readings_of: Callable[[Frame], int]) -> tuple[float, float, int, int]:
    reader = FrameReader()
    frames = readings = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for pos in range(0, len(stream), chunk):
        for item in reader.feed(stream[pos : pos + chunk]):
            assert isinstance(item, Frame)
            readings += readings_of(item)
            frames += 1
    return time.perf_counter() - started, time.process_time() - cpu_started, frames, readings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}")
    for edition in Edition:
        frame = typical_frame(edition)
        stream = frame * args.frames
        rates: dict[str, list[float]] = {path: [] for path in PATHS}
        cpu_rates: dict[str, list[float]] = {path: [] for path in PATHS}
        readings_per_frame = {}
        for _ in range(args.runs):
            for path, readings_of in PATHS.items():  # alternated: both see the same machine
                elapsed, cpu, frames, readings = run_once(stream, 64 * 1024, readings_of)
                assert frames == args.frames
                rates[path].append(frames / elapsed)
                cpu_rates[path].append(frames / cpu)
                readings_per_frame[path] = readings // frames
        assert readings_per_frame["rust"] == readings_per_frame["python"]
        for path in PATHS:
            cpu_median = statistics.median(cpu_rates[path])
            print(
                f"{edition.value} {path:>6}: frame {len(frame)} B, {readings_per_frame[path]} readings/frame: "
                f"{cpu_median:,.0f} frames per CPU-second (median; min {min(cpu_rates[path]):,.0f}, "
                f"max {max(cpu_rates[path]):,.0f}) = {cpu_median * len(frame) / 1e6:.1f} MB/s; "
                f"wall clock median {statistics.median(rates[path]):,.0f} frames/s"
            )
        ratio = statistics.median(cpu_rates["rust"]) / statistics.median(cpu_rates["python"])
        print(f"{edition.value}: rust / python = {ratio:.1f}x frames per CPU-second")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
