"""Shared parts of the open-loop benchmarks (`bench_overload.py`, `bench_load.py`): starting and stopping a
`voltcloud serve` process, the open-loop schedule, and the statistics of a run.

Open loop: call i of a run at rate R is scheduled at t0 + i/R and sent at that time whatever happened to the
earlier calls, with a deadline `deadline_s` after its scheduled time; its latency is measured from the scheduled
time, never from the send, so queueing anywhere (server or client) counts and a slow server cannot slow the
offered load down (no coordinated omission). The client's own lateness (send lag) is reported beside it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEADLINE_S = 2.0
READY_LINE = re.compile(r"serving gRPC on (\S+:\d+)(?:.*pid ([\d, ]+)\))?")

# (status name, latency from the scheduled time in s, send lag in s)
Outcome = tuple[str, float, float]


@dataclass
class Server:
    name: str
    process: asyncio.subprocess.Process
    target: str
    data_dir: Path
    ready_s: float = 0.0  # process start -> health SERVING
    pids: list[int] = field(default_factory=list)


def server_env(jwt_key: str, extra: dict[str, str], source: Path | None = None) -> dict[str, str]:
    """The environment of a server process: nothing VOLTCLOUD_ inherited, the given settings, and the code of
    `source` (a checkout) instead of this one when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLTCLOUD_")}
    env.update(VOLTCLOUD_JWT_KEY=jwt_key, VOLTCLOUD_LOG_LEVEL="WARNING", **extra)
    if source is not None:
        env["PYTHONPATH"] = str(source / "python")
    return env


async def start_server(
    name: str, data_dir: Path, env: dict[str, str], extra_args: Sequence[str] = (), ready_timeout_s: float = 300
) -> Server:
    """`python -m voltcloud.cli serve` on an ephemeral port; returns once health answers SERVING."""
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (once, before the server exists)
    argv = [sys.executable, "-m", "voltcloud.cli", "serve", "--listen", "127.0.0.1:0", *extra_args]
    started = time.monotonic()
    with (data_dir / "server.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *argv, "--data-dir", str(data_dir), env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), ready_timeout_s)).decode()
        found = READY_LINE.search(line)
        if found is None:
            raise RuntimeError(f"{name}: server did not start ({line!r}); see {data_dir / 'server.log'}")
        await wait_serving(found.group(1))
    except BaseException:
        process.kill()
        raise
    pids = [int(p) for p in found.group(2).split(", ")] if found.group(2) else [process.pid]
    return Server(name, process, found.group(1), data_dir, time.monotonic() - started, pids)


async def wait_serving(target: str, timeout_s: float = 300) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{target} never reported SERVING")


async def stop_server(server: Server) -> None:
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.process.wait(), 60)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()


async def open_loop(
    call: Callable[[int, float], Awaitable[str]],
    rate: float,
    seconds: float,
    t0: float,
    indices: Sequence[int] | None = None,
) -> list[Outcome]:
    """Sends call i at loop time t0 + i/rate, for each i of `indices` (default every call of the run),
    whatever happened to earlier calls. `call(i, scheduled)` returns the status name of its answer."""
    loop = asyncio.get_running_loop()
    lags: dict[int, float] = {}

    async def one(i: int, scheduled: float) -> Outcome:
        code = await call(i, scheduled)
        return code, loop.time() - scheduled, lags[i]

    tasks: list[asyncio.Task[Outcome]] = []
    for i in indices if indices is not None else range(int(rate * seconds)):
        scheduled = t0 + i / rate
        if (delay := scheduled - loop.time()) > 0:
            await asyncio.sleep(delay)
        lags[i] = loop.time() - scheduled
        tasks.append(asyncio.create_task(one(i, scheduled)))
    return list(await asyncio.gather(*tasks))


def timeout_for(scheduled: float, deadline_s: float = DEADLINE_S) -> float:
    """The gRPC timeout of a call scheduled at `scheduled` (loop time): its deadline counts from the schedule."""
    return max(0.001, scheduled + deadline_s - asyncio.get_running_loop().time())


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


@dataclass
class Run:
    server: str
    offered_per_s: float
    seconds: float
    calls: int
    goodput_per_s: float
    ok_p50_ms: float | None
    ok_p99_ms: float | None
    exhausted_p50_ms: float | None
    send_lag_p99_ms: float
    by_status: dict[str, int] = field(default_factory=dict)


def run_of(server: str, rate: float, seconds: float, outcomes: Sequence[Outcome]) -> Run:
    """A run's figures: goodput (OK answers per second of offered load), OK and RESOURCE_EXHAUSTED latencies,
    the client's send lag, and the answers by status."""
    ok = [latency for code, latency, _ in outcomes if code == "OK"]
    exhausted = [latency for code, latency, _ in outcomes if code == "RESOURCE_EXHAUSTED"]
    return Run(
        server=server,
        offered_per_s=rate,
        seconds=seconds,
        calls=len(outcomes),
        goodput_per_s=round(len(ok) / seconds, 1),
        ok_p50_ms=ms(percentile(ok, 0.5)),
        ok_p99_ms=ms(percentile(ok, 0.99)),
        exhausted_p50_ms=ms(percentile(exhausted, 0.5)),
        send_lag_p99_ms=ms(percentile([lag for _, _, lag in outcomes], 0.99)) or 0.0,
        by_status=dict(collections.Counter(code for code, _, _ in outcomes).most_common()),
    )
