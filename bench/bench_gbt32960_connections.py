"""GB/T 32960 gateway memory with many terminals: starts the gateway as its own process (`python -m
voltcloud_gateways.gbt32960`, platform unreachable: the uplink buffers to its outbox), opens --connections TCP
connections from this process, each logs in (its own VIN) and sends one real-time frame, checks every answer,
then holds them all open and reads the gateway's RSS (/proc/<pid>/status VmRSS) before and after.

    python bench/bench_gbt32960_connections.py --connections 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voltcloud_gateways.gbt32960 import realtime as rt
from voltcloud_gateways.gbt32960.codec import (
    Command,
    Edition,
    Flag,
    Frame,
    FrameReader,
    build_vehicle_login,
    encode_frame,
)
from voltcloud_gateways.gbt32960.fields import GbTime

ROOT = Path(__file__).resolve().parent.parent
T = GbTime(26, 12, 3, 20, 0, 0)
BLOCKS: list[rt.Block] = [
    rt.Vehicle(1, 3, 1, 65_400, 12_345_600, 384_500, -12_300, 810, 1, 0x2E, 5000, 12, 0),
    rt.Position(0, 116_397_128, 39_916_527),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def terminal(port: int, index: int, answered: list[int], hold: asyncio.Event) -> None:
    vin = f"LBENCH{index:011d}"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framer = FrameReader()
    data = rt.encode_realtime(T, BLOCKS, Edition.V2016)
    writer.write(build_vehicle_login(Edition.V2016, vin, T, 1, "8986" * 5, ["P1"]))
    writer.write(encode_frame(Edition.V2016, Command.REALTIME, Flag.COMMAND, vin, data))
    answers: list[Frame] = []
    while len(answers) < 2:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError(f"connection {index} closed")
        answers += [f for f in framer.feed(chunk) if isinstance(f, Frame)]
    if any(a.flag != Flag.SUCCESS for a in answers):
        raise RuntimeError(f"connection {index}: {answers}")
    answered[0] += 1
    await hold.wait()
    writer.close()


async def run(port: int, pid: int, count: int, hold_s: float) -> None:
    before = rss_kib(pid)
    hold = asyncio.Event()
    answered = [0]
    started = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, count, 500):  # ramp up in steps, as terminals do after an outage
        tasks += [asyncio.create_task(terminal(port, i, answered, hold)) for i in range(start, min(start + 500, count))]
        await asyncio.sleep(0.05)
    while answered[0] < count:
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} terminals failed, first: {failed[0].exception()!r}")
        await asyncio.sleep(0.2)
    ramp = time.perf_counter() - started
    await asyncio.sleep(hold_s)
    after = rss_kib(pid)
    print(
        f"connections {count}: gateway RSS {before / 1024:.1f} MiB idle -> {after / 1024:.1f} MiB holding them "
        f"({(after - before) / count:.1f} KiB per connection); all logged in and answered in {ramp:.1f} s"
    )
    hold.set()
    await asyncio.gather(*tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=39661)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "gateway_id": "gw-gbt-bench",
            "platform": "127.0.0.1:1",
            "token": "t",
            "listen": f"127.0.0.1:{args.port}",
            "state_dir": tmp,
            "accept_unknown_vins": True,
            "read_timeout_s": 600,
        }
        path = Path(tmp) / "gateway.json"
        path.write_text(json.dumps(config))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
        cmd = [sys.executable, "-m", "voltcloud_gateways.gbt32960", "--config", str(path)]
        gateway = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2.0)
            asyncio.run(run(args.port, gateway.pid, args.connections, args.hold))
        finally:
            gateway.terminate()
            gateway.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
