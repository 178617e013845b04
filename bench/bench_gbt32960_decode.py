"""GB/T 32960 decoding throughput on one core: a stream of typical 2016 real-time frames (vehicle, one motor,
position, extremes, alarms, 96 cell voltages, 32 probe temperatures: 342 bytes) cut by `FrameReader` from
64 KiB chunks, decoded by `decode_message`, and mapped to platform readings (`telemetry.readings`); also the
2025 edition (the same content in its layout). Median of --runs runs of --frames frames each, in frames per
CPU-second of this process (time.process_time: what one core does, whatever else the machine runs) and per
wall-clock second.

    python bench/bench_gbt32960_decode.py --frames 30000 --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def run_once(stream: bytes, chunk: int) -> tuple[float, float, int, int]:
    reader = FrameReader()
    frames = readings = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for pos in range(0, len(stream), chunk):
        for item in reader.feed(stream[pos : pos + chunk]):
            assert isinstance(item, Frame)
            message = decode_message(item)
            assert isinstance(message, rt.RealtimeData) and message.error is None
            readings += len(telemetry.readings(message))
            frames += 1
    return time.perf_counter() - started, time.process_time() - cpu_started, frames, readings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for edition in Edition:
        frame = typical_frame(edition)
        stream = frame * args.frames
        rates, cpu_rates = [], []
        for _ in range(args.runs):
            elapsed, cpu, frames, readings = run_once(stream, 64 * 1024)
            assert frames == args.frames
            rates.append(frames / elapsed)
            cpu_rates.append(frames / cpu)
        cpu_median = statistics.median(cpu_rates)
        print(
            f"{edition.value}: frame {len(frame)} B, {readings // frames} readings/frame: "
            f"{cpu_median:,.0f} frames per CPU-second (median; min {min(cpu_rates):,.0f}, max {max(cpu_rates):,.0f}) "
            f"= {cpu_median * len(frame) / 1e6:.1f} MB/s; wall clock median {statistics.median(rates):,.0f} frames/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
