#!/usr/bin/env python3
"""The GB/T 32960 gateway's own CPU per frame, without the platform: the gateway (its real asyncio TCP server,
telemetry batcher and alarm path) runs in a child process behind an uplink sink that takes the built batches
and drops them, so its cost does not depend on how fast a platform acknowledges. This process plays the
terminals: --terminals TCP connections log in, then write typical 2016 real-time frames (vehicle, motor,
position, extremes, alarms, 96 cells, 32 probes: bench_gbt32960_decode.typical_frame, fresh data time per
frame) at --rate frames/s spread over the terminals, open loop, and wait for every answer. Measured: the
gateway process's CPU seconds (time.process_time in the child) over the frames / frames.

Each run starts a fresh gateway from one of the --roots checkouts (e.g. this tree and ../main before a change);
the roots alternate run by run, --pairs times, so both see the same machine.

    python bench/bench_gbt32960_gateway.py --terminals 200 --rate 2000 --seconds 10 --roots . ../main --pairs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VIN_PREFIX = "LBENCHGW"


def vin(i: int) -> str:
    return f"{VIN_PREFIX}{i:09d}"


class DropSink:
    """Takes what the gateway publishes (the batch is built: that is gateway work) and keeps only counts."""

    def __init__(self) -> None:
        self.batches = self.events = 0

    def publish_event(self, event: Any) -> int:
        self.events += 1
        return self.events

    def publish_telemetry(self, batch: Any) -> int:
        self.batches += 1
        return self.batches


async def serve(terminals: int, profile: str) -> None:
    """Child: the gateway of the checkout on PYTHONPATH; prints its port, then answers 'cpu' lines on stdin
    (with `profile`, cProfile runs between the first and the second and its stats are written there)."""
    import cProfile

    profiler = cProfile.Profile() if profile else None
    asked = 0
    from voltcloud_gateways.gbt32960.config import GatewayConfig
    from voltcloud_gateways.gbt32960.server import DictDirectory, Gbt32960Gateway

    config = GatewayConfig.from_dict(
        {"gateway_id": "bench-gw", "platform": "127.0.0.1:1", "token": "t", "listen": "127.0.0.1:0"}
    )
    sink = DropSink()
    gateway = Gbt32960Gateway(sink, DictDirectory({vin(i): f"vh-{i}" for i in range(terminals)}), config)
    port = await gateway.start()
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "cpu":
            asked += 1
            if profiler is not None and asked == 1:
                profiler.enable()
            elif profiler is not None and asked == 2:
                profiler.disable()
                profiler.dump_stats(profile)
            print(f"{time.process_time()} {sink.batches} {gateway.stats['realtime']}", flush=True)
            print(json.dumps({"gateway_stats": dict(gateway.stats)}), file=sys.stderr, flush=True)
    await gateway.stop()


class Terminal:
    def __init__(self, index: int) -> None:
        self.vin = vin(index)
        self.answered = 0
        self.success = 0
        self.expected = -1
        self.all_answered = asyncio.Event()

    async def login(self, port: int) -> None:
        from voltcloud_gateways.gbt32960.codec import Edition, Frame, FrameReader, build_vehicle_login
        from voltcloud_gateways.gbt32960.fields import GbTime

        self.framer = FrameReader()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        now = GbTime.from_utc(dt.datetime.now(dt.UTC))
        self.writer.write(build_vehicle_login(Edition.V2016, self.vin, now, 1, "8986" * 5, ["P1"]))
        while not [f for f in self.framer.feed(await self.reader.read(4096)) if isinstance(f, Frame)]:
            pass

    async def read_answers(self) -> None:
        from voltcloud_gateways.gbt32960.codec import Flag, Frame

        with contextlib.suppress(ConnectionError):  # the gateway closed this connection
            while chunk := await self.reader.read(65536):
                for f in self.framer.feed(chunk):
                    if isinstance(f, Frame):
                        self.answered += 1
                        self.success += f.flag == Flag.SUCCESS
                if self.answered == self.expected:
                    self.all_answered.set()


def frames_for(terminal: Terminal, count: int, start: dt.datetime) -> list[bytes]:
    from bench_gbt32960_decode import typical_frame

    from voltcloud_gateways.gbt32960.codec import Edition
    from voltcloud_gateways.gbt32960.frame import bcc

    base = typical_frame(Edition.V2016)  # its time sits at bytes 24..30; the VIN at 4..21
    out = []
    for k in range(count):
        at = (start + dt.timedelta(seconds=k)).astimezone(dt.timezone(dt.timedelta(hours=8)))
        raw = bytearray(base)
        raw[4:21] = terminal.vin.encode()
        raw[24:30] = bytes((at.year - 2000, at.month, at.day, at.hour, at.minute, at.second))
        raw[-1] = bcc(bytes(raw[2:-1]))
        out.append(bytes(raw))
    return out


async def drive(port: int, child: subprocess.Popen[str], args: argparse.Namespace) -> dict[str, float]:
    terminals = [Terminal(i) for i in range(args.terminals)]
    for i in range(0, len(terminals), 200):
        await asyncio.gather(*(t.login(port) for t in terminals[i : i + 200]))
    per = int(args.rate * args.seconds) // len(terminals)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    payload = {t.vin: frames_for(t, per, start) for t in terminals}
    readers = [asyncio.create_task(t.read_answers()) for t in terminals]
    await asyncio.sleep(0.5)

    def cpu() -> tuple[float, int]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("cpu\n")
        child.stdin.flush()
        seconds, batches, _ = child.stdout.readline().split()
        return float(seconds), int(batches)

    cpu0, batches0 = cpu()
    started = time.perf_counter()
    total = per * len(terminals)
    step = 1 / args.rate
    for n in range(total):
        terminal, k = terminals[n % len(terminals)], n // len(terminals)
        if (pause := started + n * step - time.perf_counter()) > 0:
            await asyncio.sleep(pause)
        terminal.writer.write(payload[terminal.vin][k])
    for terminal in terminals:
        terminal.expected = per
        if terminal.answered >= per:
            terminal.all_answered.set()
    # a connection the gateway closed leaves frames unanswered: reported, not waited for
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(t.all_answered.wait() for t in terminals)), args.drain_timeout)
    elapsed = time.perf_counter() - started
    cpu1, batches1 = cpu()
    success = sum(t.success for t in terminals)
    unanswered = total - sum(t.answered for t in terminals)
    for t in terminals:
        t.writer.close()
    for task in readers:
        task.cancel()
    return {"frames": total, "success": success, "unanswered": unanswered, "cpu_s": cpu1 - cpu0,
            "elapsed_s": elapsed, "batches": batches1 - batches0}  # fmt: skip


def run_once(root: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{root / 'python'}:{root / 'gateways'}:{Path(__file__).resolve().parent}"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--terminals", str(args.terminals)]
    cmd += ["--profile", args.profile] if args.profile else []
    child = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        return asyncio.run(drive(port, child, args))
    finally:
        child.terminate()
        child.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2000.0, help="frames/s offered, over all terminals")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--roots", type=Path, nargs="+", default=[Path(__file__).resolve().parent.parent])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="s to wait for the last answers")
    parser.add_argument("--profile", default="", help="cProfile stats of the (last) gateway run to this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.terminals, args.profile))
        return 0
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()}")
    per_frame: dict[Path, list[float]] = {root.resolve(): [] for root in args.roots}
    for _ in range(args.pairs):
        for root in per_frame:
            result = run_once(root, args)
            us = 1e6 * result["cpu_s"] / result["frames"]
            per_frame[root].append(us)
            print(json.dumps({"root": str(root), **result, "us_cpu_per_frame": round(us, 1)}), flush=True)
    for root, values in per_frame.items():
        print(f"{root}: {statistics.median(values):.1f} µs gateway CPU per frame (median of {len(values)})")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
