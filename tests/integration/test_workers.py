"""`voltcloud serve --workers 2` as a real process tree: both workers answer on the one port, a worker killed
with SIGKILL is restarted by the supervisor, and SIGTERM to the supervisor stops every worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voltcloud.api.v1 import stations_pb2, stations_pb2_grpc
from voltcloud.platform.auth import Role
from voltcloud.platform.rpc import WORKER_METADATA_KEY
from voltcloud.startup import token_service

from .conftest import platform_settings

READY = re.compile(r"serving gRPC on [\d.]+:(\d+) .*pid ([\d, ]+)\)")


@contextlib.asynccontextmanager
async def supervisor(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, set[int]]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOLTCLOUD_")},
        "VOLTCLOUD_DATA_DIR": str(tmp_path / "data"),
        "VOLTCLOUD_DATABASE_URL": database_url,
        "VOLTCLOUD_JWT_KEY": platform_settings(tmp_path, database_url).jwt_key or "",
        "VOLTCLOUD_GRACE_PERIOD_S": "5",
    }
    argv = ["-m", "voltcloud.cli", "serve", "--workers", "2", "--listen", "127.0.0.1:0", "--seed-demo"]
    process = await asyncio.create_subprocess_exec(sys.executable, *argv, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        found = READY.search(line)
        assert found, f"no ready line: {line!r}"
        yield process, int(found.group(1)), {int(pid) for pid in found.group(2).split(", ")}
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def answering_worker(port: int, metadata: tuple[tuple[str, str], ...]) -> int:
    """The pid of the worker that served one call on a new connection of its own (no shared subchannel)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = stations_pb2_grpc.StationServiceStub(channel).ListStations(
            stations_pb2.ListStationsRequest(), metadata=metadata, timeout=10
        )
        reply = await call
        assert reply.stations
        trailing = dict(await call.trailing_metadata() or ())
        return int(trailing[WORKER_METADATA_KEY])


async def workers_seen(port: int, metadata: tuple[tuple[str, str], ...], until: set[int], tries: int) -> set[int]:
    seen: set[int] = set()
    for _ in range(tries):
        with contextlib.suppress(grpc.aio.AioRpcError):  # a connection to a worker that is just dying
            seen.add(await answering_worker(port, metadata))
        if until <= seen:
            break
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


async def test_workers_share_the_port_restart_when_killed_and_stop_on_sigterm(
    tmp_path: Path, database_url: str
) -> None:
    tokens = token_service(platform_settings(tmp_path, database_url))
    metadata = (("authorization", f"Bearer {tokens.mint('ops', Role.PLATFORM_ADMIN)}"),)
    async with supervisor(tmp_path, database_url) as (process, port, pids):
        assert len(pids) == 2 and process.pid not in pids
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        # The kernel spreads new connections over both listening workers.
        assert await workers_seen(port, metadata, until=pids, tries=60) == pids

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        restarted: set[int] = set()
        while time.monotonic() < deadline and not restarted:
            restarted = await workers_seen(port, metadata, until=set(), tries=8) - pids
            await asyncio.sleep(0.2)
        assert restarted, "the killed worker was not replaced"
        assert not alive(victim)
        workers = await workers_seen(port, metadata, until=(pids - {victim}) | restarted, tries=60)
        assert workers == (pids - {victim}) | restarted  # the survivor kept serving; the new one serves

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert not any(alive(pid) for pid in workers)
